"""The memory binder: the Binder SPI over in-process destinations (``broker.py``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from binder_core.deadletter import ORIGINAL_GROUP, ORIGINAL_TOPIC, exception_headers
from binder_core.errors import ProducerClosedError
from binder_core.message import Message
from binder_core.spi import (
    Batch,
    Capability,
    ConsumerSpec,
    Health,
    ProducerSpec,
)
from binders.memory.broker import Broker, Destination, GroupQueue
from binders.memory.settings import MemoryConsumerProperties, MemoryEnvironment

if TYPE_CHECKING:
    from binders.memory.deadletters import MemoryDeadLetters

log = logging.getLogger(__name__)

#: The group of a dead-letter destination that keeps dead letters until they are read.
DLQ_GROUP = "dlq"


class MemoryOutbox:
    """Outputs of one batch: handed to every group at once (a put waits while a group is
    full: that is the back-pressure), confirmed by being there."""

    __slots__ = ("_count", "_destination", "_sink")

    def __init__(self, sink: MemorySink) -> None:
        self._sink = sink
        self._destination = sink.destination
        self._count = 0

    async def add(self, messages: Sequence[Message[bytes]]) -> int | None:
        if self._sink.closed:
            raise ProducerClosedError(f"producer for '{self._destination.name}' is closed")
        await self._destination.publish(messages)
        self._count += len(messages)
        return None

    async def confirm(self) -> Sequence[Exception | None]:
        return [None] * self._count


class MemorySink:
    """Publishes to one destination."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.closed = False

    def outbox(self, transaction: Any = None) -> MemoryOutbox:
        if self.closed:
            raise ProducerClosedError(f"producer for '{self.destination.name}' is closed")
        return MemoryOutbox(self)

    async def close(self) -> None:
        self.closed = True


class MemorySource:
    """One consumer of a group queue. A partitioned destination hands a partition to one
    consumer at a time, which keeps order per partition."""

    overlap = False  # nothing to wait for: outputs are confirmed when handed over

    def __init__(self, subscription: MemorySubscription) -> None:
        self._sub = subscription
        self._queue = subscription.queue
        self._max = subscription.max_batch
        self._allowed = subscription.allowed
        self._interrupted = False
        self._open = False
        #: Batches fetched and not settled: (partition, messages), oldest first.
        self._held: list[tuple[int, Sequence[Message[bytes]]]] = []

    async def open(self) -> None:
        if not self._open:
            self._open = True
            self._queue.consumers += 1

    async def fetch(self, wait: bool) -> Batch | None:
        queue = self._queue
        while True:
            if self._interrupted:
                self._interrupted = False
                return None
            got = queue.take_now(self._allowed, self._max)
            if got is not None:
                partition, messages = got
                self._held.append(got)
                return Batch(messages, partition)
            if not wait:
                return None
            await queue.arrival()

    def interrupt(self) -> None:
        self._interrupted = True
        self._queue.wake()

    async def settle(
        self, batch: Batch, failed: Sequence[tuple[int, Exception]], transaction: Any = None
    ) -> None:
        if failed:
            await self._sub.dead_letter(batch, failed)
        self._held.pop(0)
        self._queue.done(batch.token)

    async def redeliver(self, batches: Sequence[Batch]) -> None:
        self._give_back()

    def _give_back(self) -> None:
        # Newest first, each to the head of its partition: the oldest ends up first.
        held, self._held = self._held, []
        for partition, messages in reversed(held):
            self._queue.requeue(partition, messages)

    async def pause(self) -> None:
        return None

    async def resume(self) -> None:
        self._queue.wake()

    async def close(self) -> None:
        # Memory cannot hand messages back to a broker: what this consumer held goes back
        # to its group, for another consumer or the next start.
        self._give_back()
        if self._open:
            self._open = False
            self._queue.consumers -= 1


class MemorySubscription:
    """A group's queue on one destination, and its dead letters."""

    def __init__(self, binder: MemoryBinder, spec: ConsumerSpec) -> None:
        self.name = spec.binding
        self._binder = binder
        self._spec = spec
        ext = spec.extension
        self._ext = ext if isinstance(ext, MemoryConsumerProperties) else MemoryConsumerProperties()
        self._dest = binder.broker.destination(spec.destination)
        self._anonymous = spec.group is None
        group = spec.group or f"anonymous.{uuid.uuid4().hex[:12]}"
        # Created now, so nothing sent from here on is missed.
        self.queue: GroupQueue = self._dest.group(group)
        self.max_batch = binder.environment.max_batch
        self.drain_timeout = binder.environment.drain_timeout / 1000
        props = spec.properties
        if props.partitioned:
            index = props.instance_index or 0
            count = props.instance_count or 1
            self.allowed = lambda p: p % count == index
        else:
            self.allowed = lambda p: True
        self.dlq_name = self._ext.dlq_name or (
            f"error.{spec.destination}.{spec.group or 'anonymous'}"
        )
        if self._ext.enable_dlq:
            # Dead letters are kept (in group DLQ_GROUP of the dead-letter destination)
            # until something reads them, up to dlq-capacity (the oldest dropped past it,
            # counted): a dead-letter queue never stalls the binding that feeds it.
            keeper = binder.broker.destination(self.dlq_name).group(DLQ_GROUP)
            keeper.keep_latest(binder.environment.dlq_capacity)

    def source(self, index: int) -> MemorySource:
        return MemorySource(self)

    def waiting(self) -> int:
        """Messages waiting in the group's queue."""
        return self.queue.size

    async def backlog(self) -> dict[str, int]:
        """Messages waiting in the group's queue."""
        return {self.queue.name: self.queue.size}

    async def close(self) -> None:
        if self._anonymous and not self.queue.consumers:
            # An anonymous subscription ends with its binding, as in Spring.
            self._dest.groups.pop(self.queue.name, None)

    async def dead_letter(self, batch: Batch, failed: Sequence[tuple[int, Exception]]) -> None:
        if not self._ext.enable_dlq:
            for _, exc in failed:
                log.error(
                    "binding %s: dropping a failed message (enable-dlq is false): %s",
                    self.name,
                    type(exc).__name__,
                )
            return
        dead = []
        messages = batch.messages
        for i, exc in failed:
            msg = messages[i]
            headers = dict(msg.headers)
            headers.update(exception_headers(exc))
            headers[ORIGINAL_TOPIC] = self._spec.destination
            if self._spec.group:
                headers[ORIGINAL_GROUP] = self._spec.group
            dead.append(Message(msg.payload, headers, msg.key, None))
        await self._binder.broker.destination(self.dlq_name).publish(dead)


class MemoryBinder:
    """In-process destinations, groups, partitions and dead-letter destinations."""

    capabilities = frozenset(
        {
            Capability.GROUPS,
            Capability.ORDERING,
            Capability.PARTITIONS,
            Capability.DEAD_LETTER,
            Capability.PAUSE,
            Capability.REQUIRED_GROUPS,
        }
    )

    def __init__(self, name: str, environment: MemoryEnvironment | None = None) -> None:
        self.name = name
        self.environment = environment or MemoryEnvironment()
        self.broker = Broker(self.environment.buffer_size, self.environment.idle_destinations)

    async def start(self) -> None:
        return None

    async def provision_producer(self, spec: ProducerSpec) -> MemorySink:
        dest = self.broker.destination(spec.destination)
        dest.grow(spec.properties.partition_count)
        for group in spec.properties.required_groups:
            dest.group(group)
        return MemorySink(dest)

    async def provision_consumer(self, spec: ConsumerSpec) -> MemorySubscription:
        return MemorySubscription(self, spec)

    def dead_letters(self) -> MemoryDeadLetters:
        """Dead-letter access for ``binder dlq`` (through the app's management endpoint)."""
        from binders.memory.deadletters import MemoryDeadLetters

        return MemoryDeadLetters(self)

    async def health(self) -> Health:
        return Health(True, "in process")

    async def close(self) -> None:
        return None
