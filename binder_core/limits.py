"""The framework's limits, each defined once.

A limit exists so that one hostile or broken message, name or destination costs a bounded
amount of memory and time, and never stops a stream. Each constant says what it bounds
and what happens at the limit; the guide's docs/security.md lists them for users.
Where a limit is configurable, the constant is the default of its setting.
"""

from __future__ import annotations

#: Levels of nesting in one header value (an AMQP table inside a table, a typed JSON
#: header on Kafka, a structured Redis field). Real headers nest two or three levels; a
#: message whose header goes deeper is a conversion failure of that one message and is
#: dead-lettered with the reason (client libraries read nesting recursively, so an
#: unbounded depth would exhaust the stack).
HEADER_NESTING_DEPTH = 32

#: Headers on one incoming message. A message with more is a conversion failure of that
#: one message and is dead-lettered with the reason.
HEADER_COUNT = 1000

#: Levels of nesting in a JSON payload. pydantic-core's parser, which reads every JSON
#: payload, refuses deeper documents (it accepts a level or two more); the message is a
#: conversion failure and is dead-lettered.
JSON_NESTING_DEPTH = 200

#: Characters of ``x-exception-message`` in a dead letter. A longer reason is cut and ends
#: with a marker saying how many characters were left out.
EXCEPTION_MESSAGE_LENGTH = 4096

#: Characters of ``x-exception-stacktrace`` in a dead letter (brokers bound header sizes,
#: RabbitMQ to one frame; the head of a trace is what matters). Longer traces are cut with
#: the same marker.
STACK_TRACE_LENGTH = 8000

#: Dead letters a memory binder's dead-letter destination keeps until something reads
#: them (``stream.memory.binder.dlq-capacity``). Past it the oldest are dropped, with one
#: warning per burst of drops rather than one per message.
MEMORY_DLQ_CAPACITY = 10_000

#: Destinations with no subscription that a memory binder remembers
#: (``stream.memory.binder.idle-destinations``): a destination only StreamBridge sent to
#: holds no messages, but each name used to stay forever. Past the limit the oldest idle,
#: unpartitioned one is forgotten; sending to it again simply creates it again.
MEMORY_IDLE_DESTINATIONS = 1000

#: UTF-8 bytes of a destination name that StreamBridge accepts (the strictest common
#: broker rule, AMQP's 255, so a name works on every binder). Longer names, empty names
#: and names with control characters are refused before anything is created; the binder
#: type's own naming rules (``BinderType.check_name``) apply on top.
DESTINATION_NAME_BYTES = 255

#: Producers StreamBridge keeps open for dynamic destinations
#: (``stream.dynamic-destination-cache-size``); the least recently used is closed when a
#: new one would pass the limit.
DYNAMIC_DESTINATION_CACHE_SIZE = 10
