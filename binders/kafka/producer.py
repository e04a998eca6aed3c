"""Sending batches to Kafka: one record batch per partition, sent together, confirmed
together.

``publish`` is the one send path (outputs, dead letters, transactions): records are
partitioned here (``Message.partition`` if the core chose one, else Kafka's murmur2 hash of
the key, the Java client's default, so a Spring producer and we put a key on the same
partition; records without a key stick to one partition per call, as Kafka's sticky
partitioner does), appended to aiokafka batch builders, handed over without waiting, and
only then are their confirmations awaited.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from binder_core.errors import DeliveryError
from binder_core.message import Message
from binders.kafka.headers import encode_headers
from binders.kafka.provisioning import describe

log = logging.getLogger(__name__)

#: (key bytes, value, record headers, partition or None): one record to send.
Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]], int | None]

_PERMANENT = frozenset(
    {
        "MessageSizeTooLargeError",
        "RecordTooLargeError",
        "RecordListTooLargeError",
        "InvalidTopicError",
        "TopicAuthorizationFailedError",
        "CorruptRecordException",
        "InvalidTimestampError",
        "UnsupportedForMessageFormatError",
        "PolicyViolationError",
        "InvalidRequestError",
    }
)


@dataclass(frozen=True, slots=True)
class Transaction:
    """The Kafka transaction a consumer batch runs in. Outputs sent through this binder
    while it is current go through its producer, so they commit or abort with the input
    offsets; outputs on other binders are not part of it."""

    owner: object  # the KafkaBinder that opened it
    producer: Any  # a transactional AIOKafkaProducer


#: Set by a transactional consumer around the core's handle call; read by ``send``.
CURRENT: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "kafka_transaction", default=None
)


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


async def publish(client: Any, topic: str, records: Sequence[Record], sync: bool = False) -> None:
    """Send ``records`` to ``topic`` and return once Kafka confirmed every one.

    Each partition's records go into one record batch built here and handed over whole
    (no per-record hand-over); what does not fit that batch goes through the producer's own
    accumulator, which queues further batches without waiting for the first to drain.

    Raises ``DeliveryError`` when Kafka refuses a record for good (too large, topic not
    allowed); anything else (a timeout, a lost connection) propagates as it is, which the
    core treats as "not confirmed, deliver the input again".
    """
    if not records:
        return
    cluster = client.client.cluster
    parts = cluster.partitions_for_topic(topic)
    if not parts:
        parts = await client.partitions_for(topic)
    count = len(parts)
    sticky: int | None = None
    builders: dict[int, Any] = {}
    overflow: set[int] = set()  # partitions whose batch is full and handed over
    futures: list[asyncio.Future[Any]] = []
    try:
        for key, value, headers, partition in records:
            if partition is None:
                if key is not None:
                    partition = _keyed(key, count)
                else:
                    if sticky is None:
                        sticky = next(_sticky) % count
                    partition = sticky
            elif partition not in parts:
                raise DeliveryError(
                    f"topic {topic} has no partition {partition} (it has {count}); "
                    "check partition-count against the topic"
                )
            if partition in overflow:
                futures.append(
                    await client.send(topic, value, key=key, partition=partition, headers=headers)
                )
                continue
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = client.create_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                futures.append(await client.send_batch(builder, topic, partition=partition))
                del builders[partition]
                overflow.add(partition)
                futures.append(
                    await client.send(topic, value, key=key, partition=partition, headers=headers)
                )
            elif sync:
                futures.append(
                    await client.send_batch(builders.pop(partition), topic, partition=partition)
                )
                await _confirmed(futures, topic)
                futures = []
        for partition, builder in builders.items():
            futures.append(await client.send_batch(builder, topic, partition=partition))
    except BaseException:
        # Leaving early: whatever was handed over is still awaited, so no confirmation is
        # left dangling and unobserved.
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)
        raise
    await _confirmed(futures, topic)


async def _confirmed(futures: list[asyncio.Future[Any]], topic: str) -> None:
    if not futures:
        return
    results = await asyncio.gather(*futures, return_exceptions=True)
    failure: BaseException | None = None
    for result in results:
        if isinstance(result, BaseException):
            if _refused(result):
                raise DeliveryError(f"Kafka refused records for {topic}: {describe(result)}")
            failure = failure or result
    if failure is not None:
        raise failure


class KafkaProducer:
    """The SPI producer of one output binding."""

    def __init__(
        self, binder: Any, topic: str, client: Any, sync: bool, release: Any = None
    ) -> None:
        self._binder = binder
        self.topic = topic
        self._client = client
        self._sync = sync
        self._release = release

    async def send(self, messages: Sequence[Message[bytes]]) -> None:
        """Send a batch; inside a consumer transaction of this binder, as part of it."""
        txn = CURRENT.get()
        client = txn.producer if txn is not None and txn.owner is self._binder else self._client
        records = [
            (encode_key(m.key), m.payload, encode_headers(m.headers), m.partition) for m in messages
        ]
        await publish(client, self.topic, records, self._sync)

    async def close(self) -> None:
        """Release this binding's hold on the shared client (the binder closes it)."""
        release, self._release = self._release, None
        if release is not None:
            await release()
