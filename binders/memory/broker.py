"""In-process destinations: what the memory binder moves messages through.

A destination fans each message out to one queue per group (so every group gets every
message); the members of a group compete for that queue. A group queue is bounded: when it
is full, producers wait, which is the back-pressure that keeps a fast supplier from growing
memory without bound. On a partitioned destination a partition is handed to one consumer at
a time, which keeps order per partition while partitions are processed in parallel.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence

from binder_core.message import Message

log = logging.getLogger(__name__)


class GroupQueue:
    """The messages one group has yet to process, per partition."""

    def __init__(self, name: str, capacity: int, partitions: int) -> None:
        self.name = name
        self.capacity = capacity
        self.parts: list[deque[Message[bytes]]] = [deque() for _ in range(partitions)]
        self.size = 0
        self._busy: set[int] = set()  # partitions with a batch in flight
        self._readers: list[asyncio.Future[None]] = []
        self._writers: list[asyncio.Future[None]] = []
        self._start = 0
        #: Consumers reading this queue now; a full queue nobody reads stalls its producers,
        #: which is said once (a required group whose consumer runs in no process).
        self.consumers = 0
        self._stall_reported = False

    @property
    def ordered(self) -> bool:
        """Order is kept per partition of a partitioned destination; an unpartitioned one
        is a plain work queue whose consumers compete, as with RabbitMQ."""
        return len(self.parts) > 1

    def grow(self, partitions: int) -> None:
        """Add partitions (a producer declared a larger partition-count)."""
        while len(self.parts) < partitions:
            self.parts.append(deque())

    async def put(self, by_partition: dict[int, list[Message[bytes]]], count: int) -> None:
        """Add messages, waiting first while the queue is full."""
        while self.size >= self.capacity:
            if not self.consumers and not self._stall_reported:
                self._stall_reported = True
                log.warning(
                    "memory group '%s' is full (%d messages) and has no consumer in this "
                    "process: its producers wait until one reads it (a required group with "
                    "no consumer stalls the pipeline)",
                    self.name,
                    self.size,
                )
            await _wait(self._writers)
        for partition, messages in by_partition.items():
            self.parts[partition].extend(messages)
        self.size += count
        _wake(self._readers)

    async def take(
        self, allowed: Callable[[int], bool], max_n: int, paused: Callable[[], bool]
    ) -> tuple[int, list[Message[bytes]]]:
        """Wait for messages in an allowed partition; take up to ``max_n`` of them."""
        while True:
            if not paused():
                got = self._grab(allowed, max_n)
                if got is not None:
                    return got
            await _wait(self._readers)

    def take_now(
        self, allowed: Callable[[int], bool], max_n: int
    ) -> tuple[int, list[Message[bytes]]] | None:
        """What ``take`` would return, without waiting: ``None`` when nothing is there."""
        return self._grab(allowed, max_n)

    async def arrival(self) -> None:
        """Wait until messages arrive, a partition is released, or ``wake`` is called."""
        await _wait(self._readers)

    def _grab(
        self, allowed: Callable[[int], bool], max_n: int
    ) -> tuple[int, list[Message[bytes]]] | None:
        n = len(self.parts)
        for i in range(n):
            p = (self._start + i) % n
            part = self.parts[p]
            if not part or (p in self._busy) or not allowed(p):
                continue
            if len(part) <= max_n:
                batch = list(part)
                part.clear()
            else:
                batch = [part.popleft() for _ in range(max_n)]
            if n > 1:
                self._busy.add(p)
                self._start = p + 1  # fairness: the next take starts after this one
            self.size -= len(batch)
            _wake(self._writers)
            return p, batch
        return None

    def done(self, partition: int) -> None:
        """The batch taken from ``partition`` is finished (acknowledged)."""
        self._busy.discard(partition)
        _wake(self._readers)

    def requeue(self, partition: int, batch: Sequence[Message[bytes]]) -> None:
        """Put an unacknowledged batch back at the head of its partition, in order."""
        self.parts[partition].extendleft(reversed(batch))
        self.size += len(batch)
        self.done(partition)

    def wake(self) -> None:
        """Make waiting consumers look again (after pause/resume)."""
        _wake(self._readers)


async def _wait(waiters: list[asyncio.Future[None]]) -> None:
    fut = asyncio.get_running_loop().create_future()
    waiters.append(fut)
    try:
        await fut
    finally:
        if not fut.done():
            fut.cancel()
            waiters.remove(fut)


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    if waiters:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()


class Destination:
    """One named destination and the groups subscribed to it."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.partitions = 1
        self.groups: dict[str, GroupQueue] = {}
        self._rr = itertools.count()

    def grow(self, partitions: int) -> None:
        """Make sure the destination has at least ``partitions`` partitions."""
        if partitions > self.partitions:
            self.partitions = partitions
            for group in self.groups.values():
                group.grow(partitions)

    def group(self, name: str) -> GroupQueue:
        """The queue of group ``name``, created on first use."""
        queue = self.groups.get(name)
        if queue is None:
            queue = self.groups[name] = GroupQueue(name, self.capacity, self.partitions)
        return queue

    async def publish(self, messages: Sequence[Message[bytes]]) -> None:
        """Deliver to every group; wait while any of them is full."""
        if not self.groups or not messages:
            return  # like a topic with no subscriptions: nobody asked to keep them
        n = self.partitions
        if n == 1:
            by_partition = {0: list(messages)}
        else:
            by_partition = {}
            for msg in messages:
                p = msg.partition
                p = next(self._rr) % n if p is None else p % n
                by_partition.setdefault(p, []).append(msg)
        for queue in list(self.groups.values()):
            await queue.put(by_partition, len(messages))


class Broker:
    """All destinations of one memory binder instance."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.destinations: dict[str, Destination] = {}

    def destination(self, name: str) -> Destination:
        """Destination ``name``, created on first use."""
        dest = self.destinations.get(name)
        if dest is None:
            dest = self.destinations[name] = Destination(name, self.capacity)
        return dest
