"""In-process destinations: what the memory binder moves messages through.

A destination fans each message out to one queue per group (so every group gets every
message); the members of a group compete for that queue. A group queue is bounded: when it
is full, producers wait, which is the back-pressure that keeps a fast supplier from growing
memory without bound. On a partitioned destination a partition is handed to one consumer at
a time, which keeps order per partition while partitions are processed in parallel.

Two things nobody reads are bounded too (``binder_core.limits``): a dead-letter keeper holds
at most its capacity and drops the oldest beyond it (``GroupQueue.keep_latest``), and the
broker forgets the oldest destinations nobody subscribes to once there are too many.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from binder_core.limits import MEMORY_DLQ_CAPACITY, MEMORY_IDLE_DESTINATIONS
from binder_core.message import Message

log = logging.getLogger(__name__)

#: Seconds between two warnings about dropped dead letters of one destination.
DROP_WARNING_INTERVAL = 60.0


class GroupQueue:
    """The messages one group has yet to process, per partition."""

    def __init__(self, name: str, capacity: int, partitions: int, destination: str = "") -> None:
        self.name = name
        self.destination = destination
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
        self._drops: DropCounter | None = None  # set by keep_latest

    def keep_latest(self, capacity: int = MEMORY_DLQ_CAPACITY) -> None:
        """Hold at most ``capacity`` messages and never make a producer wait: past it the
        oldest are dropped, with a counted warning. For a dead-letter keeper, which must
        neither stall the binding that feeds it nor grow without bound when nobody reads
        the dead letters."""
        self.capacity = capacity
        self._drops = DropCounter(self.destination or self.name, capacity)

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
        """Add messages, waiting first while the queue is full (or, after ``keep_latest``,
        dropping the oldest instead)."""
        while self._drops is None and self.size >= self.capacity:
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
        if self._drops is not None and self.size > self.capacity:
            self._drop_oldest(self.size - self.capacity)
        _wake(self._readers)

    def _drop_oldest(self, excess: int) -> None:
        dropped = 0
        while dropped < excess:
            # Order is kept per partition only: the head of the longest is the best guess.
            part = max(self.parts, key=len)
            if not part:
                break
            n = min(excess - dropped, len(part))
            for _ in range(n):
                part.popleft()
            dropped += n
        self.size -= dropped
        assert self._drops is not None
        self._drops.dropped(dropped)

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


class DropCounter:
    """Counts messages dropped at a bound and says so in one warning per burst (at most one
    per ``DROP_WARNING_INTERVAL``), never one line per message."""

    def __init__(self, what: str, capacity: int) -> None:
        self.what = what
        self.capacity = capacity
        self.total = 0
        self._unreported = 0
        self._warned_at: float | None = None

    def dropped(self, n: int) -> None:
        """``n`` more messages were dropped."""
        if n <= 0:
            return
        self.total += n
        self._unreported += n
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= DROP_WARNING_INTERVAL:
            log.warning(
                "memory binder: dead-letter destination %s holds its limit of %d dead letters; "
                "dropped the %d oldest (%d in all; read them, or raise dlq-capacity)",
                self.what,
                self.capacity,
                self._unreported,
                self.total,
            )
            self._unreported = 0
            self._warned_at = now


class Destination:
    """One named destination and the groups subscribed to it."""

    def __init__(self, name: str, capacity: int, broker: Broker | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self.partitions = 1
        self.groups: dict[str, GroupQueue] = {}
        self._rr = itertools.count()
        self._broker = broker
        #: Set when the broker forgot this destination (idle, see ``Broker``) while some
        #: producer or binding still holds it: from then on it stands for the broker's
        #: current destination of the same name.
        self.retired = False

    @property
    def idle(self) -> bool:
        """Nobody subscribes and nothing but the name would be lost by forgetting it."""
        return not self.groups and self.partitions == 1

    def _current(self) -> Destination:
        assert self._broker is not None
        return self._broker.destination(self.name)

    def grow(self, partitions: int) -> None:
        """Make sure the destination has at least ``partitions`` partitions."""
        if self.retired:
            self._current().grow(partitions)
            return
        if partitions > self.partitions:
            self.partitions = partitions
            for group in self.groups.values():
                group.grow(partitions)

    def group(self, name: str) -> GroupQueue:
        """The queue of group ``name``, created on first use."""
        if self.retired:
            return self._current().group(name)
        queue = self.groups.get(name)
        if queue is None:
            queue = GroupQueue(name, self.capacity, self.partitions, self.name)
            self.groups[name] = queue
        return queue

    async def publish(self, messages: Sequence[Message[bytes]]) -> None:
        """Deliver to every group; wait while any of them is full."""
        if self.retired:
            await self._current().publish(messages)
            return
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
    """All destinations of one memory binder instance.

    A destination nobody subscribes to holds no messages (what is sent to it is dropped,
    as on a topic without subscriptions) but used to be kept forever, so a StreamBridge
    sending to ever new names grew without bound. Past ``idle_destinations`` such idle,
    unpartitioned destinations are forgotten, oldest first, down to half the limit (so the
    sweep runs once per many new names); a producer that still holds one keeps working
    through the broker's current destination of that name.
    """

    def __init__(self, capacity: int, idle_destinations: int = MEMORY_IDLE_DESTINATIONS) -> None:
        self.capacity = capacity
        self.idle_destinations = idle_destinations
        self.destinations: dict[str, Destination] = {}
        self._sweep_above = idle_destinations

    def destination(self, name: str) -> Destination:
        """Destination ``name``, created on first use."""
        dest = self.destinations.get(name)
        if dest is None:
            dest = self.destinations[name] = Destination(name, self.capacity, self)
            if len(self.destinations) > self._sweep_above:
                self._forget_idle(keep=name)
        return dest

    def _forget_idle(self, keep: str) -> None:
        idle = [d for d in self.destinations.values() if d.idle and d.name != keep]
        forget = idle[: max(len(idle) - self.idle_destinations // 2, 0)]
        for dest in forget:
            del self.destinations[dest.name]
            dest.retired = True
        # Next sweep once the idle ones could pass the limit again.
        busy = len(self.destinations) - (len(idle) - len(forget)) - 1
        self._sweep_above = busy + self.idle_destinations
