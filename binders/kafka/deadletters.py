"""Dead-letter access for ``binder dlq`` on Kafka: the dead-letter topics
(``error.<destination>.<group>``, or a binding's ``dlq-name``), read and acknowledged
through a consumer group of their own, ``binder.dead-letters``.

Kafka cannot remove one record: what has been dealt with is marked by that group's
committed offset on the dead-letter topic, and only what lies after it counts as waiting.
A replay commits a partition's offset past a replayed record once its copy is confirmed.
A record read and left (not selected, or its replay refused) that lies before a later
replayed one is first appended again at the end of the topic, its headers, key and time
unchanged, since the commit passes over it; one after the last replayed record simply
stays. A purge deletes the records (``DeleteRecords``) and commits past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from binder_core.dlq.letters import KAFKA_ORIGINAL_TOPIC, text
from binder_core.dlq.spi import DeadLetter, NoDeadLetterQueue
from binder_core.errors import DeliveryError
from binder_core.message import Message
from binder_core.spi import ConsumerSpec
from binders.kafka.headers import UnreadableHeaders, decode_headers, encode_headers
from binders.kafka.settings import KafkaConsumerProperties

if TYPE_CHECKING:
    from binders.kafka.binder import KafkaBinder

log = logging.getLogger(__name__)

#: The consumer group whose committed offsets mark what was dealt with on a DLQ topic.
ADMIN_GROUP = "binder.dead-letters"
#: Seconds a read waits for records it knows are there before it gives up on them.
READ_PATIENCE = 30.0

_ORIGINAL_PARTITION = "kafka_dlt-original-partition"
_X_ORIGINAL_PARTITION = "x-original-partition"
_X_ORIGINAL_TOPIC = "x-original-topic"


class KafkaDeadLetters:
    """The dead-letter topics of one Kafka binder."""

    def __init__(self, binder: KafkaBinder) -> None:
        self._binder = binder

    def locate(self, spec: ConsumerSpec) -> str | None:
        ext = spec.extension if isinstance(spec.extension, KafkaConsumerProperties) else None
        ext = ext or KafkaConsumerProperties()
        if not ext.enable_dlq:
            return None
        return ext.dlq_name or f"error.{spec.destination}.{spec.group or 'anonymous'}"

    async def discover(self) -> Sequence[str]:
        admin = await self._admin()
        try:
            topics = await asyncio.wait_for(admin.list_topics(), self._timeout)
        finally:
            await admin.close()
        return sorted(t for t in topics if t.startswith("error."))

    async def open(self, name: str) -> KafkaDeadLetterQueue:
        count = await self._binder.provisioner.partitions(name)
        if count is None:
            raise NoDeadLetterQueue(
                f"topic '{name}' does not exist on kafka binder '{self._binder.name}'"
            )
        queue = KafkaDeadLetterQueue(self._binder, name, count, self)
        await queue.start()
        return queue

    @property
    def _timeout(self) -> float:
        return self._binder.environment.health_timeout

    async def _admin(self) -> Any:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self._binder.clients.kwargs("admin"))
        await asyncio.wait_for(admin.start(), self._timeout)
        return admin


class KafkaDeadLetterQueue:
    """One dead-letter topic, read from the admin group's committed offsets to the end
    offsets it had when opened."""

    def __init__(
        self, binder: KafkaBinder, name: str, partitions: int, owner: KafkaDeadLetters
    ) -> None:
        self.name = name
        self._binder = binder
        self._owner = owner
        self._count = partitions
        self._consumer: Any = None
        self._tps: list[Any] = []
        #: Per partition: the committed position, and the end offset when opened.
        self._committed: dict[Any, int] = {}
        self._end: dict[Any, int] = {}
        #: Records read and not acknowledged, per partition, by offset (oldest first).
        self._pending: dict[Any, dict[int, Any]] = {}
        self._done: dict[Any, int] = {}  # next offset to read per partition
        self._partitions_of: dict[str, int | None] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        kwargs = self._binder.clients.kwargs(
            "consumer",
            {
                "group_id": ADMIN_GROUP,
                "enable_auto_commit": False,
                "auto_offset_reset": "earliest",
                "isolation_level": "read_committed",
            },
        )
        consumer = AIOKafkaConsumer(**kwargs)
        timeout = self._binder.environment.health_timeout
        await asyncio.wait_for(consumer.start(), timeout)
        self._consumer = consumer
        try:
            self._tps = [TopicPartition(self.name, p) for p in range(self._count)]
            consumer.assign(self._tps)
            begin = await consumer.beginning_offsets(self._tps)
            end = await consumer.end_offsets(self._tps)
            for tp in self._tps:
                committed = await consumer.committed(tp)
                start = max(committed if committed is not None else 0, begin[tp])
                self._committed[tp] = start
                self._end[tp] = end[tp]
                self._done[tp] = start
                self._pending[tp] = {}
                consumer.seek(tp, start)
        except BaseException:
            await self.close()
            raise

    async def size(self) -> int | None:
        end: dict[Any, int] = await self._consumer.end_offsets(self._tps)
        return sum(max(end[tp] - self._committed[tp], 0) for tp in self._tps)

    def _left(self) -> list[Any]:
        return [tp for tp in self._tps if self._done[tp] < self._end[tp]]

    async def read(self, limit: int) -> Sequence[DeadLetter]:
        consumer = self._consumer
        out: list[DeadLetter] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_PATIENCE
        behind: set[Any] = set()  # partitions with records fetched past ``limit``
        while not out:
            left = self._left()
            if not left:
                return out
            if loop.time() > deadline:
                raise NoDeadLetterQueue(
                    f"topic '{self.name}': records up to the end offsets could not be read "
                    f"within {READ_PATIENCE:g} s (deleted by retention meanwhile?)"
                )
            got = await consumer.getmany(*left, timeout_ms=500, max_records=limit)
            for tp, records in got.items():
                for record in records:
                    if record.offset >= self._end[tp]:
                        continue
                    if len(out) >= limit:
                        behind.add(tp)
                        continue
                    self._done[tp] = record.offset + 1
                    self._pending[tp][record.offset] = record
                    out.append(_letter(record))
            # Transaction markers and compacted gaps: the position moves past them too.
            for tp in left:
                position = await consumer.position(tp)
                if not got.get(tp) and position >= self._end[tp]:
                    self._done[tp] = self._end[tp]
            if len(out) >= limit:
                break
        # What was fetched past ``limit`` is read again: back to what was handed out.
        for tp in behind:
            consumer.seek(tp, self._done[tp])
        return out

    async def ack(self, letters: Sequence[DeadLetter]) -> None:
        from aiokafka import TopicPartition
        from aiokafka.structs import OffsetAndMetadata

        acked: dict[Any, set[int]] = {}
        for letter in letters:
            record = letter.handle
            acked.setdefault(TopicPartition(record.topic, record.partition), set()).add(
                record.offset
            )
        kept: list[Any] = []
        commits: dict[Any, int] = {}
        for tp, offsets in acked.items():
            pending = self._pending[tp]
            last = max(offsets)
            for offset in sorted(pending):
                if offset > last:
                    break
                if offset not in offsets:
                    kept.append(pending[offset])
            commits[tp] = last + 1
        if kept:
            # The commit passes over these: keep them by appending them again first.
            results = await self._send(
                [
                    (self.name, r.value, r.key, list(r.headers or ()), None, r.timestamp)
                    for r in kept
                ]
            )
            refused = [e for e in results if e is not None]
            if refused:
                raise DeliveryError(
                    f"topic '{self.name}': {len(refused)} letter(s) to keep could not be "
                    f"appended again ({refused[0]}); nothing was acknowledged"
                )
        await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in commits.items()})
        for tp, offset in commits.items():
            self._committed[tp] = offset
            pending = self._pending[tp]
            for old in [o for o in pending if o < offset]:
                del pending[old]

    def target(self, letter: DeadLetter, to: str | None) -> str | None:
        headers = letter.message.headers
        return to or text(headers.get(KAFKA_ORIGINAL_TOPIC)) or text(headers.get(_X_ORIGINAL_TOPIC))

    async def replay(
        self, messages: Sequence[tuple[DeadLetter, Message[bytes]]], to: str | None
    ) -> Sequence[Exception | None]:
        sends: list[tuple[str, bytes, Any, Any, int | None, int | None]] = []
        results: list[Exception | None] = [None] * len(messages)
        where: list[int] = []
        for i, (letter, msg) in enumerate(messages):
            headers = letter.message.headers
            topic = self.target(letter, to)
            if not topic:
                results[i] = DeliveryError(
                    "the letter does not say which topic it came from: replay it with --to"
                )
                continue
            partitions = await self._partitions(topic)
            if partitions is None:
                results[i] = DeliveryError(f"topic '{topic}' does not exist")
                continue
            partition = None if to else _original_partition(headers)
            if partition is not None and partition >= partitions:
                partition = None
            sends.append(
                (topic, msg.payload, msg.key, encode_headers(msg.headers), partition, None)
            )
            where.append(i)
        for i, result in zip(where, await self._send(sends), strict=True):
            results[i] = result
        return results

    async def append(self, messages: Sequence[Message[bytes]]) -> Sequence[Exception | None]:
        return await self._send(
            [
                (
                    self.name,
                    m.payload,
                    m.key,
                    encode_headers(m.headers),
                    m.partition if m.partition is not None and m.partition < self._count else None,
                    None,
                )
                for m in messages
            ]
        )

    async def purge(self) -> int:
        from aiokafka.admin.records_to_delete import RecordsToDelete
        from aiokafka.structs import OffsetAndMetadata

        end: dict[Any, int] = await self._consumer.end_offsets(self._tps)
        removed = sum(max(end[tp] - self._committed[tp], 0) for tp in self._tps)
        admin = await self._owner._admin()
        try:
            await admin.delete_records({tp: RecordsToDelete(end[tp]) for tp in self._tps})
        finally:
            await admin.close()
        await self._consumer.commit({tp: OffsetAndMetadata(end[tp], "") for tp in self._tps})
        for tp in self._tps:
            self._committed[tp] = self._done[tp] = self._end[tp] = end[tp]
            self._pending[tp].clear()
        return removed

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _partitions(self, topic: str) -> int | None:
        if topic not in self._partitions_of:
            self._partitions_of[topic] = await self._binder.provisioner.partitions(topic)
        return self._partitions_of[topic]

    async def _send(
        self, records: Sequence[tuple[str, bytes, Any, Any, int | None, int | None]]
    ) -> list[Exception | None]:
        """Send and wait for every confirmation; one result per record."""
        if not records:
            return []
        slot = await self._binder.dead_letter_slot()
        client = slot.client
        futures: list[Any] = []
        errors: dict[int, Exception] = {}
        for i, (topic, value, key, headers, partition, timestamp) in enumerate(records):
            try:
                futures.append(
                    await client.send(
                        topic,
                        value,
                        key=key,
                        headers=headers,
                        partition=partition,
                        timestamp_ms=timestamp,
                    )
                )
            except Exception as exc:
                errors[i] = exc
                futures.append(None)
        out: list[Exception | None] = []
        for i, future in enumerate(futures):
            if future is None:
                out.append(errors[i])
                continue
            try:
                await future
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out


def _letter(record: Any) -> DeadLetter:
    raw = list(record.headers or ())
    try:
        headers = decode_headers(raw)
    except UnreadableHeaders:
        headers = {name: bytes(value or b"") for name, value in raw}
    message = Message(record.value or b"", headers, record.key, record.partition)
    when = record.timestamp / 1000 if record.timestamp and record.timestamp > 0 else None
    return DeadLetter(f"{record.partition}@{record.offset}", message, when, record)


def _original_partition(headers: dict[str, Any]) -> int | None:
    raw = headers.get(_ORIGINAL_PARTITION)
    if isinstance(raw, bytes) and len(raw) == 4:
        return int(struct.unpack(">i", raw)[0])
    value = headers.get(_X_ORIGINAL_PARTITION)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(text(value) or "")
    except ValueError:
        return None
