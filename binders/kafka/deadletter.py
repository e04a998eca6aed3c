"""Dead-letter records, shaped as Spring's ``DeadLetterPublishingRecoverer`` shapes them.

The record keeps the original key, value and headers and goes to the same partition
number when the dead-letter topic has it. Spring's reason headers are added with Spring's
encodings (raw UTF-8 strings, the partition as a 4-byte and offset and timestamp as 8-byte
big-endian integers); the core's ``x-`` headers are added too, typed through
``spring_json_header_types`` like any header we write, so a dead letter from any binder is
read the same way. Earlier exception headers are replaced, earlier "original" headers kept
(Spring's defaults: strip previous exception headers, append original headers).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from binder_core.deadletter import (
    EXCEPTION_FQCN,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    ORIGINAL_GROUP,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    exception_headers,
)
from binders.kafka.headers import JSON_TYPES, merge_types

DLT_ORIGINAL_TOPIC = "kafka_dlt-original-topic"
DLT_ORIGINAL_PARTITION = "kafka_dlt-original-partition"
DLT_ORIGINAL_OFFSET = "kafka_dlt-original-offset"
DLT_ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
DLT_ORIGINAL_TIMESTAMP_TYPE = "kafka_dlt-original-timestamp-type"
DLT_ORIGINAL_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
DLT_EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
DLT_EXCEPTION_CAUSE_FQCN = "kafka_dlt-exception-cause-fqcn"
DLT_EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
DLT_EXCEPTION_STACKTRACE = "kafka_dlt-exception-stacktrace"

_TIMESTAMP_TYPES = {0: b"CreateTime", 1: b"LogAppendTime"}

#: Replaced, not appended, when a dead letter fails again.
_EXCEPTION_HEADERS = frozenset(
    {
        DLT_EXCEPTION_FQCN,
        DLT_EXCEPTION_CAUSE_FQCN,
        DLT_EXCEPTION_MESSAGE,
        DLT_EXCEPTION_STACKTRACE,
        EXCEPTION_MESSAGE,
        EXCEPTION_FQCN,
        EXCEPTION_STACKTRACE,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_GROUP,
        JSON_TYPES,
    }
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record for the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None


def _fqcn(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def dead_letter(
    record: Any, exc: BaseException, group: str | None, dlq_partitions: int, brief: bool = False
) -> DeadLetter:
    """The dead letter for ``record`` (an aiokafka ``ConsumerRecord``) that failed with
    ``exc``. ``brief`` leaves the stack traces out, for a broker that refused the full one."""
    raw = list(record.headers or ())
    headers = [(k, v) for k, v in raw if k not in _EXCEPTION_HEADERS]
    reason = exception_headers(exc)
    headers += [
        (DLT_ORIGINAL_TOPIC, record.topic.encode()),
        (DLT_ORIGINAL_PARTITION, struct.pack(">i", record.partition)),
        (DLT_ORIGINAL_OFFSET, struct.pack(">q", record.offset)),
        (DLT_ORIGINAL_TIMESTAMP, struct.pack(">q", record.timestamp or 0)),
        (DLT_ORIGINAL_TIMESTAMP_TYPE, _TIMESTAMP_TYPES.get(record.timestamp_type, b"CreateTime")),
    ]
    if group:
        headers.append((DLT_ORIGINAL_CONSUMER_GROUP, group.encode()))
    headers.append((DLT_EXCEPTION_FQCN, _fqcn(exc).encode()))
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        headers.append((DLT_EXCEPTION_CAUSE_FQCN, _fqcn(cause).encode()))
    headers.append((DLT_EXCEPTION_MESSAGE, reason[EXCEPTION_MESSAGE].encode()))
    if not brief:
        headers.append((DLT_EXCEPTION_STACKTRACE, reason[EXCEPTION_STACKTRACE].encode()))
    types: dict[str, str] = {}
    for name, value in reason.items():
        if brief and name == EXCEPTION_STACKTRACE:
            continue
        headers.append((name, value.encode()))
        types[name] = "java.lang.String"
    headers += [
        (ORIGINAL_TOPIC, record.topic.encode()),
        (ORIGINAL_PARTITION, str(record.partition).encode()),
        (ORIGINAL_OFFSET, str(record.offset).encode()),
    ]
    types[ORIGINAL_TOPIC] = "java.lang.String"
    types[ORIGINAL_PARTITION] = "java.lang.Integer"
    types[ORIGINAL_OFFSET] = "java.lang.Long"
    if group:
        headers.append((ORIGINAL_GROUP, group.encode()))
        types[ORIGINAL_GROUP] = "java.lang.String"
    headers.append((JSON_TYPES, merge_types(raw, types)))
    partition = record.partition if record.partition < dlq_partitions else None
    return DeadLetter(record.key, record.value, headers, partition)
