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

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
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
from binder_core.errors import DeliveryError
from binders.kafka.headers import JSON_TYPES, merge_types
from binders.kafka.producer import KafkaTransaction, ProducerSlot, publish
from binders.kafka.provisioning import Provisioner
from binders.kafka.settings import KafkaConsumerProperties

log = logging.getLogger(__name__)

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


class DeadLetters:
    """The dead-letter topic of one consumer binding, and sending to it.

    The topic is created at bind time for a named group, at the first dead letter for an
    anonymous one. ``send`` raises (the batch is then delivered again) only when the dead
    letters could not be confirmed for a reason that may pass; a dead letter Kafka refuses
    for good is tried alone, then without its stack traces, then logged and skipped: a
    poison record must not stop its partition forever.
    """

    def __init__(
        self,
        provisioner: Provisioner,
        slot: Callable[[], Awaitable[ProducerSlot]],
        binding: str,
        destination: str,
        group: str | None,
        consumer_group: str,
        ext: KafkaConsumerProperties,
        partitions: int,
    ) -> None:
        self._provisioner = provisioner
        self._slot = slot
        self._binding = binding
        self._group = consumer_group
        self._ext = ext
        self._partitions = partitions
        self.topic = ext.dlq_name or f"error.{destination}.{group or 'anonymous'}"
        self._count: int | None = None
        self._limit: int | None = None  # the dead-letter topic's max.message.bytes
        self._lock = asyncio.Lock()

    async def provision(self) -> int:
        """Create the dead-letter topic if needed; return its partition count."""
        if self._count is None:
            async with self._lock:
                if self._count is None:
                    wanted = self._ext.dlq_partitions or self._partitions
                    count = await self._provisioner.ensure_topic(
                        self.topic,
                        wanted,
                        fewer="accept",
                        purpose=f"dead letters of binding {self._binding}",
                    )
                    self._limit = await self._provisioner.max_message_bytes(self.topic)
                    acks = self._provisioner.env.required_acks
                    await self._provisioner.warn_if_fragile(self.topic, acks, self._binding)
                    self._count = count
        return self._count

    async def send(
        self,
        records: Sequence[Any],
        errors: Sequence[Exception],
        transaction: KafkaTransaction | None = None,
    ) -> None:
        """Dead-letter ``records`` (inside ``transaction`` when given, else through the
        binder's dead-letter producer), or log and skip them when ``enable-dlq`` is false."""
        if not self._ext.enable_dlq:
            for record, exc in zip(records, errors, strict=True):
                log.error(
                    "binding %s: skipping record %s-%d@%d, its retries ran out "
                    "(enable-dlq is false): %s",
                    self._binding,
                    record.topic,
                    record.partition,
                    record.offset,
                    type(exc).__name__,
                )
            return
        count = await self.provision()
        # Inside a transaction its producer, else the binder's dead-letter producer, which
        # is replaced when a refusal broke it (read afresh for every send).
        slot = None if transaction is not None else await self._slot()
        letters = [
            dead_letter(r, e, self._group, count) for r, e in zip(records, errors, strict=True)
        ]
        try:
            await self._publish(letters, transaction, slot)
        except DeliveryError:
            await self._one_by_one(records, errors, count, transaction, slot)
        log.info(
            "binding %s: dead-lettered %d record%s to %s",
            self._binding,
            len(letters),
            "" if len(letters) == 1 else "s",
            self.topic,
        )

    async def _publish(
        self,
        letters: Sequence[DeadLetter],
        transaction: KafkaTransaction | None,
        slot: ProducerSlot | None,
    ) -> None:
        records = [(d.key, d.value, d.headers, d.partition) for d in letters]
        if slot is not None:
            await publish(
                slot.client,
                self.topic,
                records,
                limit=self._limit,
                renew=slot.renew,
                limits=slot.limits,
            )
        else:
            assert transaction is not None
            await publish(
                transaction.producer,
                self.topic,
                records,
                limit=self._limit,
                limits=transaction.limits,
            )

    async def _one_by_one(
        self,
        records: Sequence[Any],
        errors: Sequence[Exception],
        count: int,
        transaction: KafkaTransaction | None,
        slot: ProducerSlot | None,
    ) -> None:
        for record, exc in zip(records, errors, strict=True):
            for brief in (False, True):
                letter = dead_letter(record, exc, self._group, count, brief=brief)
                try:
                    await self._publish([letter], transaction, slot)
                    break
                except DeliveryError as refused:
                    if brief:
                        log.error(
                            "binding %s: %s refused the dead letter of %s-%d@%d (%s); "
                            "skipping it. It failed with: %s",
                            self._binding,
                            self.topic,
                            record.topic,
                            record.partition,
                            record.offset,
                            refused,
                            type(exc).__name__,
                        )
