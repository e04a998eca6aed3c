"""What a dead letter says about itself, read from the headers every binder writes: the
reason (``x-exception-*``, Spring's ``kafka_dlt-*``, RabbitMQ's ``x-death``), where it came
from, how often it was replayed; and the copies a replay sends.

Header values arrive as the binder decoded them: text, numbers, or raw bytes (a Kafka
header nobody typed), so every reader here takes all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from binder_core.deadletter import (
    EXCEPTION_FQCN,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    ORIGINAL_GROUP,
    ORIGINAL_OFFSET,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
)
from binder_core.dlq.spi import DeadLetter
from binder_core.message import Message

#: How often a message was replayed from a dead-letter queue (the core adds one per replay).
REPLAY_COUNT = "x-replay-count"
#: Why a replay put a letter back instead of replaying it.
REPLAY_REFUSED = "x-replay-refused"

KAFKA_EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
KAFKA_EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
KAFKA_ORIGINAL_TOPIC = "kafka_dlt-original-topic"
RABBIT_ORIGINAL_EXCHANGE = "x-original-exchange"
RABBIT_ORIGINAL_ROUTING_KEY = "x-original-routingKey"
X_DEATH = "x-death"
REDIS_ORIGINAL_STREAM = "x-original-stream"

#: Headers that describe one dead-lettering: a replayed copy goes without them (if it
#: fails again, the new dead letter says why afresh).
_REASON_HEADERS = frozenset(
    {
        EXCEPTION_MESSAGE,
        EXCEPTION_FQCN,
        EXCEPTION_STACKTRACE,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_GROUP,
        RABBIT_ORIGINAL_EXCHANGE,
        RABBIT_ORIGINAL_ROUTING_KEY,
        REDIS_ORIGINAL_STREAM,
        "x-original-id",
        "x-original-fields",
        X_DEATH,
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        REPLAY_REFUSED,
    }
)
_REASON_PREFIXES = ("kafka_dlt-",)

#: Characters of a reason kept for grouping in ``binder dlq list``.
SHORT_REASON = 80


def text(value: Any) -> str | None:
    """A header value as text (bytes decoded as UTF-8, undecodable bytes replaced)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    deaths = headers.get(X_DEATH)
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return None


def reason(headers: Mapping[str, Any]) -> str:
    """Why the message was dead-lettered, in full: ``<exception class>: <message>``, or
    what RabbitMQ recorded when it dead-lettered the message itself."""
    message = text(headers.get(EXCEPTION_MESSAGE)) or text(headers.get(KAFKA_EXCEPTION_MESSAGE))
    fqcn = text(headers.get(EXCEPTION_FQCN)) or text(headers.get(KAFKA_EXCEPTION_FQCN))
    if message or fqcn:
        name = (fqcn or "").rsplit(".", 1)[-1]
        return f"{name}: {message}" if name and message else (message or name)
    death = _death(headers)
    if death is not None:
        why = text(death.get("reason")) or "dead-lettered"
        queue = text(death.get("queue"))
        return f"{why} by RabbitMQ" + (f" (queue {queue})" if queue else "")
    return "(no reason recorded)"


def short_reason(headers: Mapping[str, Any]) -> str:
    """The reason's first line, cut to ``SHORT_REASON`` characters: what ``list`` groups
    by (validation errors of one kind differ only in their later lines)."""
    first = reason(headers).splitlines()[0] if reason(headers) else ""
    return first if len(first) <= SHORT_REASON else first[: SHORT_REASON - 3] + "..."


def origin(headers: Mapping[str, Any]) -> str | None:
    """Where the message was consumed from when it failed: a topic, an exchange (with its
    routing key), a stream; ``None`` when the headers do not say."""
    exchange = text(headers.get(RABBIT_ORIGINAL_EXCHANGE))
    if exchange is not None:
        key = text(headers.get(RABBIT_ORIGINAL_ROUTING_KEY))
        return f"{exchange} (routing key {key})" if key is not None else exchange
    for name in (ORIGINAL_TOPIC, KAFKA_ORIGINAL_TOPIC):
        topic = text(headers.get(name))
        if topic:
            return topic
    death = _death(headers)
    if death is not None:
        return text(death.get("exchange")) or text(death.get("queue"))
    return None


def original_destination(headers: Mapping[str, Any]) -> str | None:
    """The destination a replay goes back to when not told: the original topic (Spring's
    Kafka header first, then ours), the original exchange."""
    for name in (KAFKA_ORIGINAL_TOPIC, ORIGINAL_TOPIC, RABBIT_ORIGINAL_EXCHANGE):
        value = text(headers.get(name))
        if value:
            return value
    death = _death(headers)
    return text(death.get("exchange")) if death is not None else None


def replay_count(headers: Mapping[str, Any]) -> int:
    """How often the message was replayed already (0 when never, or unreadable)."""
    value = headers.get(REPLAY_COUNT)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    raw = text(value)
    try:
        return max(int(raw), 0) if raw is not None else 0
    except ValueError:
        return 0


def is_reason_header(name: str) -> bool:
    """Whether a header describes a dead-lettering (left out of a replayed copy)."""
    return name in _REASON_HEADERS or name.startswith(_REASON_PREFIXES)


def replay_copy(letter: DeadLetter) -> Message[bytes]:
    """What a replay sends for ``letter``: its payload, key and headers without the
    dead-lettering's, and the replay count one higher."""
    msg = letter.message
    headers = {k: v for k, v in msg.headers.items() if not is_reason_header(k)}
    headers[REPLAY_COUNT] = replay_count(msg.headers) + 1
    return Message(msg.payload, headers, msg.key, None)


def refused_copy(letter: DeadLetter, max_replays: int) -> Message[bytes]:
    """What goes back to the dead-letter queue for a letter replayed too often: the letter
    as it is, with why it was not replayed."""
    msg = letter.message
    headers = dict(msg.headers)
    count = replay_count(msg.headers)
    headers[REPLAY_REFUSED] = (
        f"replayed {count} time{'s' if count != 1 else ''} already, the most --max-replays "
        f"({max_replays}) allows: fix the cause, then replay with a higher --max-replays "
        "or purge it"
    )
    return Message(msg.payload, headers, msg.key, msg.partition)
