"""Sending batches to Kafka: records appended to aiokafka batch builders, each builder
handed over whole as soon as it is full, confirmations awaited together.

``Batches`` is the one send path (outputs, dead letters, transactions): records are
partitioned here (``Message.partition`` if the core chose one, else Kafka's murmur2 hash of
the key, the Java client's default, so a Spring producer and we put a key on the same
partition; records without a key fill one partition's batch, then the next partition's,
as Kafka's uniform sticky partitioner does), appended to one builder per partition, and
each full builder goes to the producer at once, one future per batch. ``publish`` sends a
whole batch of records and waits; a ``KafkaOutbox`` takes the outputs of one input batch in
slices while the core is still making them, so the broker round trips overlap the
processing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from binder_core.errors import DeliveryError, ProducerClosedError
from binder_core.message import Message
from binders.kafka.headers import encode_headers
from binders.kafka.provisioning import describe

log = logging.getLogger(__name__)

#: (key bytes, value, record headers, partition or None): one record to send.
Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]], int | None]

_PERMANENT = frozenset(
    {
        "MessageSizeTooLargeError",
        "RecordTooLargeHere",
        "RecordTooLargeError",
        "RecordListTooLargeError",
        "InvalidTopicError",
        "TopicAuthorizationFailedError",
        "CorruptRecordException",
        "InvalidTimestampError",
        "UnsupportedForMessageFormatError",
        "PolicyViolationError",
        "InvalidRequestError",
        # UNKNOWN_SERVER_ERROR, which the Java producer does not retry either; aiokafka also
        # reports broker codes it does not know this way (INVALID_RECORD, for one: a record
        # without a key sent to a compacted topic).
        "UnknownError",
    }
)

#: Answers meaning the idempotent producer's sequence numbers for a partition no longer
#: match the broker's (after a refused batch left a gap): every later batch of that
#: partition fails the same way until a new producer (a new producer id) takes over.
_SEQUENCE_LOST = frozenset(
    {"OutOfOrderSequenceNumber", "UnknownProducerId", "InvalidProducerEpoch"}
)

#: Called with the client a batch failed on when that client must be replaced.
Renew = Callable[[Any], Awaitable[None]]


class RecordTooLargeHere(Exception):
    """A record refused before it was sent, for a size Kafka would refuse: the producer
    never saw it, so its sequence numbers are intact."""


def breaks_producer(exc: BaseException) -> bool:
    """Whether the client a batch failed on can no longer be trusted with its partition:
    a batch the broker refused leaves a gap in the partition's sequence numbers."""
    name = type(exc).__name__
    return name in _SEQUENCE_LOST or (name in _PERMANENT and name != "RecordTooLargeHere")


#: aiokafka's defaults for ``max_request_size`` and ``max_batch_size``.
_MAX_REQUEST = 1048576
_BATCH_SIZE = 16384


@dataclass(frozen=True, slots=True)
class Limits:
    """What a producer client was configured with: the largest request it sends
    (``max_request_size``) and the bytes a batch builder takes (``max_batch_size``)."""

    max_request: int = _MAX_REQUEST
    batch_size: int = _BATCH_SIZE

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> Limits:
        """From the keyword arguments the client was built with (aiokafka's defaults
        where they do not say)."""
        return cls(
            int(kwargs.get("max_request_size", _MAX_REQUEST)),
            int(kwargs.get("max_batch_size", _BATCH_SIZE)),
        )


@dataclass(frozen=True, slots=True)
class KafkaTransaction:
    """The Kafka transaction a consumer batch runs in (``Source.begin``). Outputs sent
    through this binder's sinks with it go through its producer, so they commit or abort
    with the input offsets; outputs on other binders are not part of it."""

    owner: object  # the KafkaBinder that opened it
    producer: Any  # a transactional AIOKafkaProducer
    limits: Limits = Limits()


def encode_key(key: Any) -> bytes | None:
    """A record key from ``Message.key``: bytes as they are, text as UTF-8, anything else
    (numbers) by its text; None means no key."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    if isinstance(key, bool):
        return b"true" if key else b"false"
    return str(key).encode("utf-8")


#: Bytes of a record batch's own header (Kafka's v2 format), before its records.
_BATCH_HEADER = 61
#: A partly filled batch of at most this many records is given to the producer record by
#: record (``send``), which adds them to a batch it still holds for the partition rather
#: than waiting until that batch is in a request: at low rates, the difference between one
#: broker round trip and two.
_SEND_ALONE = 8

_hash_cache: dict[tuple[bytes, int], int] = {}
_sticky = itertools.count()


def _keyed(key: bytes, count: int) -> int:
    found = _hash_cache.get((key, count))
    if found is None:
        from aiokafka.partitioner import murmur2

        found = (murmur2(key) & 0x7FFFFFFF) % count
        if len(_hash_cache) > 65536:
            _hash_cache.clear()
        _hash_cache[(key, count)] = found
    return found


def _refused(exc: BaseException) -> bool:
    return type(exc).__name__ in _PERMANENT


async def partitions_of(client: Any, topic: str) -> Collection[int]:
    """The partitions of ``topic`` from the client's metadata (fetched if not known yet)."""
    return await client.partitions_for(topic)  # type: ignore[no-any-return]


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A batch's outcome is always read by ``Batches.wait``, unless its sender gave up
    # (cancelled): then this keeps asyncio from logging "exception never retrieved".
    if not future.cancelled():
        future.exception()


async def _all_of(futures: list[asyncio.Future[Any]]) -> None:
    """Every record's confirmation; the first failure raises (every one is retrieved)."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed


class Batches:
    """Records for one topic, appended to one aiokafka batch builder per partition.

    A builder is handed over (``send_batch``) the moment it is full, so records reach the
    producer a whole batch at a time: one hand-over and one future per batch, none per
    record. ``flush`` hands over the partly filled builders, ``wait`` collects every
    confirmation. Handing a batch over may wait while the producer still holds an earlier
    batch of the same partition that it has not put into a request yet (aiokafka keeps
    one per partition queued): that is the back-pressure that paces a fast caller to
    the broker, exactly as aiokafka's own ``send`` does.

    Order is kept per partition: batches of a partition are handed over in the order they
    were filled, and the idempotent producer keeps them in that order through retries.

    No batch is sent that Kafka would refuse for its size (above ``max_request_size`` or
    the topic's ``max.message.bytes``): a record too large for either is refused here,
    alone in its batch, without being sent. That matters beyond saving a round trip: a
    batch the broker refuses leaves a gap in the idempotent producer's sequence numbers,
    and every later batch of that partition would then fail (OutOfOrderSequenceNumber).

    Each record comes with a tag (the caller's number for the call it came in, rising);
    every batch remembers the tags it holds, so a refused batch can be traced to the calls
    whose records it carried.
    """

    __slots__ = (
        "_client",
        "_count",
        "_fill",
        "_max",
        "_open",
        "_parts",
        "_sticky",
        "_tight",
        "_topic",
        "handed",
    )

    def __init__(
        self,
        client: Any,
        topic: str,
        parts: Collection[int],
        limit: int | None = None,
        limits: Limits = Limits(),
    ) -> None:
        self._client = client
        self._topic = topic
        self._parts = parts
        self._count = len(parts)
        self._sticky: int | None = None
        # What aiokafka's own send checks (max_request_size), and the topic's limit.
        largest = limits.max_request
        self._max = largest if limit is None else min(largest, limit)
        # Bytes a builder takes before it is full (max_batch_size).
        fill = limits.batch_size
        # A limit below the batch size (unusual) is checked record by record; otherwise
        # only a lone record can exceed it, which the hand-over checks.
        self._tight = self._max < fill
        self._fill = min(fill, self._max)
        #: partition -> [builder, first tag in it, its records while they are few, or None]
        self._open: dict[int, list[Any]] = {}
        #: (confirmation, first tag, last tag) of each batch handed over
        self.handed: list[tuple[asyncio.Future[Any], int, int]] = []

    def _partition(self, key: bytes | None, partition: int | None) -> int:
        if partition is not None:
            if partition not in self._parts:
                raise DeliveryError(
                    f"topic {self._topic} has no partition {partition} (it has "
                    f"{self._count}); check partition-count against the topic"
                )
            return partition
        if key is not None:
            return _keyed(key, self._count)
        if self._sticky is None:
            self._sticky = next(_sticky) % self._count
        return self._sticky

    async def add(self, records: Sequence[Record], tag: int = 0) -> int:
        """Append ``records``; return how many full batches were handed over meanwhile."""
        if self._tight:
            return await self._add_checked(records, tag)
        handed = 0
        builders = self._open
        parts = self._parts
        create = self._client.create_batch
        for key, value, headers, partition in records:
            # The partition choice of ``_partition``, inline: this runs for every record.
            sticky = False
            if partition is None:
                if key is not None:
                    partition = _keyed(key, self._count)
                else:
                    if self._sticky is None:
                        self._sticky = next(_sticky) % self._count
                    partition, sticky = self._sticky, True
            elif partition not in parts:
                partition = self._partition(key, partition)  # raises
            while True:
                entry = builders.get(partition)
                if entry is None:
                    # A fresh builder takes any first record.
                    entry = builders[partition] = [create(), tag, [(key, value, headers)]]
                    entry[0].append(timestamp=None, key=key, value=value, headers=headers)
                    break
                if (
                    entry[0].append(timestamp=None, key=key, value=value, headers=headers)
                    is not None
                ):
                    few = entry[2]
                    if few is not None:
                        if len(few) < _SEND_ALONE:
                            few.append((key, value, headers))
                        else:
                            entry[2] = None
                    break
                # Full: hand it over. Records without a key then move on to the next
                # partition (Kafka's uniform sticky partitioner does the same), so the
                # batches of one call spread over the partitions and one produce request
                # carries several of them: aiokafka keeps one request in flight per
                # broker, with one batch per partition.
                del builders[partition]
                await self._hand_over(partition, entry[0], entry[1], tag)
                handed += 1
                if sticky:
                    partition = self._sticky = (partition + 1) % self._count
        return handed

    async def _add_checked(self, records: Sequence[Record], tag: int) -> int:
        """``add`` when a batch may hold less than ``max_batch_size``: a record that would
        take its builder past the limit starts a new one."""
        from aiokafka.record.default_records import DefaultRecordBatchBuilder

        size_of = DefaultRecordBatchBuilder.size_of
        handed = 0
        builders = self._open
        for key, value, headers, partition in records:
            partition = self._partition(key, partition)
            entry = builders.get(partition)
            if entry is not None and entry[0].size() + size_of(key, value, headers) > self._max:
                del builders[partition]
                await self._hand_over(partition, entry[0], entry[1], tag)
                handed += 1
                entry = None
            if entry is None:
                entry = builders[partition] = [self._client.create_batch(), tag, None]
            if entry[0].append(timestamp=None, key=key, value=value, headers=headers) is None:
                del builders[partition]
                await self._hand_over(partition, entry[0], entry[1], tag)
                handed += 1
                entry = builders[partition] = [self._client.create_batch(), tag, None]
                entry[0].append(timestamp=None, key=key, value=value, headers=headers)
        return handed

    def wanted(self) -> int:
        """About how many more records fill the first open builder: what a caller that
        hands records over in slices can gather before its next ``add``."""
        builders = self._open
        if not builders:
            return 1
        room = None
        for builder, *_ in builders.values():
            count = builder.record_count()
            if count:
                size = builder.size()
                left = (self._fill - size) * count // max(1, size - _BATCH_HEADER)
                room = left if room is None or left < room else room
        return max(1, (room or 0) * len(builders) + 1)

    async def flush(self) -> None:
        """Hand over the partly filled builders."""
        builders, self._open = self._open, {}
        for partition, (builder, first, few) in builders.items():
            if few is not None and builder.size() <= self._max:
                await self._send_alone(partition, few, first)
            else:
                await self._hand_over(partition, builder, first, -1)

    async def _send_alone(self, partition: int, records: list[Any], first: int) -> None:
        """A few records, given to the producer one by one: they join the batch it holds
        for the partition, if any (``send_batch`` would wait until that batch is sent)."""
        send, topic = self._client.send, self._topic
        futures = [
            await send(topic, value, key=key, partition=partition, headers=headers)
            for key, value, headers in records
        ]
        future = asyncio.ensure_future(_all_of(futures))
        future.add_done_callback(_retrieve)
        self.handed.append((future, first, -1))

    async def _hand_over(self, partition: int, builder: Any, first: int, last: int) -> None:
        size = builder.size()
        if size > self._max:
            # A lone record too large for Kafka (a batch of several never grows past
            # the limit): refused here, as aiokafka's send would, and never sent.
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(
                RecordTooLargeHere(
                    f"a record of {size} bytes with its batch header is larger than "
                    f"{self._topic} takes ({self._max} bytes: max_request_size, and the "
                    "topic's max.message.bytes)"
                )
            )
        else:
            future = await self._client.send_batch(builder, self._topic, partition=partition)
            future.add_done_callback(_retrieve)
        self.handed.append((future, first, last))

    async def wait(self) -> list[tuple[BaseException, int, int]]:
        """Await every batch handed over; return the failed ones with their tag ranges
        (last tag -1: up to the last call)."""
        handed, self.handed = self.handed, []
        if not handed:
            return []
        results = await asyncio.gather(*(f for f, _, _ in handed), return_exceptions=True)
        return [
            (result, first, last)
            for result, (_, first, last) in zip(results, handed, strict=True)
            if isinstance(result, BaseException)
        ]


async def publish(
    client: Any,
    topic: str,
    records: Sequence[Record],
    sync: bool = False,
    limit: int | None = None,
    renew: Renew | None = None,
    limits: Limits = Limits(),
) -> None:
    """Send ``records`` to ``topic`` and return once Kafka confirmed every one.

    Records go into one batch builder per partition, each handed over as soon as it is
    full (see ``Batches``); only then are the confirmations awaited. With ``sync`` every
    record is its own batch, confirmed before the next is sent.

    Raises ``DeliveryError`` when Kafka refuses a record for good (too large, topic not
    allowed); anything else (a timeout, a lost connection) propagates as it is, which the
    core treats as "not confirmed, deliver the input again". ``limit`` is the topic's
    ``max.message.bytes`` when known. ``renew`` is called with ``client`` when an answer
    means the client must be replaced (``breaks_producer``), before the error is raised.
    """
    if not records:
        return
    batches = Batches(client, topic, await partitions_of(client, topic), limit, limits)
    step = 1 if sync else len(records)
    for start in range(0, len(records), step):
        try:
            await batches.add(records[start : start + step])
            await batches.flush()
        except BaseException:
            # Leaving early: whatever was handed over is still awaited, so no
            # confirmation is left dangling.
            await batches.wait()
            raise
        failures = await batches.wait()
        if renew is not None and any(breaks_producer(exc) for exc, _, _ in failures):
            await renew(client)
        _raise_for(failures, topic)


def _raise_for(failures: Sequence[tuple[BaseException, int, int]], topic: str) -> None:
    transient: BaseException | None = None
    for exc, _, _ in failures:
        if _refused(exc):
            raise DeliveryError(f"Kafka refused records for {topic}: {describe(exc)}")
        transient = transient or exc
    if transient is not None:
        raise transient


def to_records(messages: Sequence[Message[bytes]]) -> list[Record]:
    """Records for messages. The outputs of a batch mostly carry equal headers, so each
    message's headers are compared with the previous message's and, when equal, the
    encoded record headers are reused (no cache key built and hashed per message)."""
    out: list[Record] = []
    add = out.append
    last: Any = None
    encoded: Sequence[tuple[str, bytes]] = []
    for m in messages:
        headers = m.headers
        if headers is not last and headers != last:
            encoded, last = encode_headers(headers), headers
        key = m.key
        add((None if key is None else encode_key(key), m.payload, encoded, m.partition))
    return out


class KafkaOutbox:
    """The outputs of one input batch for one topic (the SPI's ``Outbox``): each slice is
    appended to the batch builders at once and full batches go to the producer straight
    away, so the broker round trips of a poll's outputs overlap with the processing of the
    rest of the poll instead of following it.

    The last, partly filled builders of an outbox are handed over by its ``confirm``, or
    earlier, by the first ``add`` of any later outbox of the same sink: the core processes
    the next poll before it confirms the previous one, and a full batch of the next poll
    must not reach a partition before the previous poll's last records there (order per
    partition), nor should those wait unsent while the next poll is processed."""

    __slots__ = (
        "_batches",
        "_client",
        "_limit",
        "_limits",
        "_lost",
        "_refused",
        "_renew",
        "_sink",
        "_sizes",
        "_topic",
    )

    def __init__(
        self,
        sink: KafkaSink,
        client: Any,
        renew: Renew | None,
        limits: Limits,
    ) -> None:
        self._sink = sink
        self._client = client
        self._topic = sink.topic
        self._limit = sink.limit
        self._limits = limits
        self._renew = renew
        self._batches: Batches | None = None
        self._sizes: list[int] = []  # messages per slice handed over
        self._refused: dict[int, DeliveryError] = {}  # slices refused before sending
        self._lost: BaseException | None = None  # a hand-over failed: records not sent

    async def add(self, messages: Sequence[Message[bytes]]) -> int | None:
        """Append a slice; hands over (and may wait to hand over) the batches it fills.
        Returns about how many more messages fill the batch being built, so the core's
        next slice ends about when that batch is full."""
        if self._sink.closed:
            raise ProducerClosedError(
                f"cannot send to topic '{self._topic}': its producer is closed"
            )
        tag = len(self._sizes)
        self._sizes.append(len(messages))
        batches = self._batches
        if batches is None:
            # Inside a transaction (no ``renew``) batches never overlap, and what an aborted
            # attempt left unsent must stay unsent: no other outbox hands it over.
            shared = self._renew is not None
            if shared:
                await self._sink.hand_over_before(self)
            parts = await partitions_of(self._client, self._topic)
            batches = self._batches = Batches(
                self._client, self._topic, parts, self._limit, self._limits
            )
            if shared:
                self._sink.open_outboxes.append(self)
        # No extra yield after a batch was handed over: the sender picks it up at the next
        # wait (measured: yielding here at once was no faster, slightly slower).
        try:
            await batches.add(to_records(messages), tag)
        except DeliveryError as exc:  # a partition the topic does not have
            self._refused[tag] = exc
        return batches.wanted()

    async def hand_over(self) -> None:
        """Hand the partly filled builders to the producer (the rest is still confirmed
        by ``confirm``)."""
        opened = self._sink.open_outboxes
        if self in opened:
            opened.remove(self)
        if self._batches is not None:
            try:
                await self._batches.flush()
            except BaseException as exc:
                # Builders not handed over are gone: ``confirm`` must not report their
                # records as sent, whoever called this.
                self._lost = exc
                raise

    async def confirm(self) -> list[Exception | None]:
        """Hand over the rest and wait for every confirmation: per message, None when its
        batch was confirmed, or the ``DeliveryError`` of a batch Kafka refused that held
        it. Anything else (a timeout, a lost connection) is raised."""
        sizes = self._sizes
        per_slice: list[Exception | None] = [None] * len(sizes)
        for tag, refusal in self._refused.items():
            per_slice[tag] = refusal
        batches = self._batches
        if batches is not None:
            try:
                await self.hand_over()
                if self._lost is not None:
                    raise self._lost
            finally:
                failures = await batches.wait()
                if self._renew is not None and any(breaks_producer(e) for e, _, _ in failures):
                    await self._renew(self._client)
            transient: BaseException | None = None
            for exc, first, last in failures:
                if not _refused(exc):
                    transient = transient or exc
                    continue
                refused = DeliveryError(f"Kafka refused records for {self._topic}: {describe(exc)}")
                for tag in range(first, len(sizes) if last < 0 else last + 1):
                    per_slice[tag] = per_slice[tag] or refused
            if transient is not None:
                raise transient
        if per_slice.count(None) == len(per_slice):
            return [None] * sum(sizes)
        out: list[Exception | None] = []
        for size, result in zip(sizes, per_slice, strict=True):
            out.extend([result] * size)
        return out


class KafkaSyncOutbox:
    """``sync: true``: every record is its own batch, confirmed before the next is sent."""

    __slots__ = ("_client", "_results", "_sink")

    def __init__(self, sink: KafkaSink, client: Any) -> None:
        self._sink = sink
        self._client = client
        self._results: list[Exception | None] = []

    async def add(self, messages: Sequence[Message[bytes]]) -> int | None:
        sink = self._sink
        if sink.closed:
            raise ProducerClosedError(
                f"cannot send to topic '{sink.topic}': its producer is closed"
            )
        for record in to_records(messages):
            try:
                await publish(
                    self._client, sink.topic, [record], True, sink.limit, sink.slot.renew,
                    sink.slot.limits,
                )  # fmt: skip
                self._results.append(None)
            except DeliveryError as exc:
                self._results.append(exc)
        return None

    async def confirm(self) -> list[Exception | None]:
        return self._results


class KafkaSink:
    """The SPI sink of one output binding, over a producer client shared by the binder."""

    def __init__(
        self,
        owner: object,
        topic: str,
        slot: ProducerSlot,
        sync: bool,
        release: Callable[[], Awaitable[None]] | None = None,
        limit: int | None = None,
    ) -> None:
        self._owner = owner
        self.topic = topic
        self.slot = slot
        self._sync = sync
        self._release = release
        self.limit = limit  # the topic's max.message.bytes, when known
        self.closed = False
        #: Outboxes that may hold partly filled builders, oldest first.
        self.open_outboxes: list[KafkaOutbox] = []

    async def hand_over_before(self, outbox: KafkaOutbox) -> None:
        """Before ``outbox`` appends its first record: hand over what every earlier outbox
        of this sink still holds, so records reach each partition in the order they were
        added."""
        while self.open_outboxes:
            earlier = self.open_outboxes[0]
            if earlier is outbox:
                return
            await earlier.hand_over()

    def outbox(self, transaction: Any = None) -> KafkaOutbox | KafkaSyncOutbox:
        """An outbox for one batch of outputs; inside a consumer transaction of this
        binder, its records go through the transaction's producer (and a refusal aborts
        the transaction instead of replacing the producer)."""
        if self.closed:
            raise ProducerClosedError(
                f"cannot send to topic '{self.topic}': its producer is closed"
            )
        if isinstance(transaction, KafkaTransaction) and transaction.owner is self._owner:
            return KafkaOutbox(self, transaction.producer, None, transaction.limits)
        slot = self.slot
        if self._sync:
            return KafkaSyncOutbox(self, slot.client)
        return KafkaOutbox(self, slot.client, slot.renew, slot.limits)

    async def close(self) -> None:
        """Release this binding's hold on the shared client (the binder closes it)."""
        self.closed = True
        release, self._release = self._release, None
        if release is not None:
            await release()


class ProducerSlot:
    """A shared producer client that can be replaced while bindings use it.

    After Kafka refuses a batch, the idempotent producer's sequence numbers for that
    partition have a gap and every later batch there is refused as out of order: one bad
    record would jam the partition for good. ``renew`` swaps in a new client (a new
    producer id starts the sequences afresh) and closes the broken one; sends in flight on
    it fail and their inputs are delivered again, so nothing is lost.
    """

    def __init__(
        self,
        client: Any,
        start: Callable[[], Awaitable[Any]],
        close_timeout: float,
        limits: Limits = Limits(),
    ):
        self.client = client
        self.limits = limits
        self.users = 0
        self.close_timeout = close_timeout
        self.renewals = 0
        self._start = start
        self._lock = asyncio.Lock()

    async def renew(self, broken: Any) -> None:
        """Replace ``broken`` unless another caller already did."""
        async with self._lock:
            if self.client is not broken:
                return
            log.warning(
                "kafka producer: a batch was refused, which breaks the producer's sequence "
                "numbers for its partition; replacing the producer so later batches go through"
            )
            self.client = await self._start()
            self.renewals += 1
        await stop_client(broken, self.close_timeout)


async def stop_client(client: Any, seconds: float) -> None:
    """Flush and close a producer, giving up after ``seconds`` (an unreachable
    broker must not hold the app's shutdown)."""
    try:
        await asyncio.wait_for(client.stop(), max(seconds, 0.1))
    except Exception as exc:
        log.warning("kafka producer did not close cleanly: %s", describe(exc))
