"""The memory binder: the Binder SPI over in-process destinations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import Sequence

from binder_core.deadletter import ORIGINAL_GROUP, ORIGINAL_TOPIC, exception_headers
from binder_core.message import Message
from binder_core.spi import (
    Binding,
    BindingState,
    Capability,
    ConsumerSpec,
    Handle,
    Producer,
    ProducerSpec,
)
from binders.memory.broker import Broker, Destination, GroupQueue
from binders.memory.settings import MemoryConsumerProperties, MemoryEnvironment

log = logging.getLogger(__name__)

#: The group of a dead-letter destination that keeps dead letters until they are read.
DLQ_GROUP = "dlq"


class MemoryProducer:
    """Publishes to one destination; returns once every group holds the messages."""

    def __init__(self, destination: Destination) -> None:
        self._destination = destination

    async def send(self, messages: Sequence[Message[bytes]]) -> None:
        await self._destination.publish(messages)

    async def close(self) -> None:
        return None


class MemoryBinding:
    """A consumer binding: ``concurrency`` workers taking batches from a group queue."""

    def __init__(self, binder: MemoryBinder, spec: ConsumerSpec, handle: Handle) -> None:
        self.name = spec.binding
        self._binder = binder
        self._spec = spec
        self._handle = handle
        self._dest = binder.broker.destination(spec.destination)
        ext = spec.extension
        self._ext = ext if isinstance(ext, MemoryConsumerProperties) else MemoryConsumerProperties()
        self._group_name = spec.group
        self._queue: GroupQueue | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._processing: set[asyncio.Task[None]] = set()
        self._state = BindingState.STOPPED
        self._paused = False
        self._resumed = asyncio.Event()
        props = spec.properties
        if props.partitioned:
            index = props.instance_index or 0
            count = props.instance_count or 1
            self._allowed = lambda p: p % count == index
        else:
            self._allowed = lambda p: True
        self.dlq_name = self._ext.dlq_name or (
            f"error.{spec.destination}.{spec.group or 'anonymous'}"
        )

    @property
    def state(self) -> BindingState:
        return self._state

    def subscribe(self) -> None:
        """Create the group queue now, so nothing sent from here on is missed."""
        if self._queue is None:
            name = self._group_name or f"anonymous.{uuid.uuid4().hex[:12]}"
            self._queue = self._dest.group(name)
        if self._ext.enable_dlq:
            # Dead letters are kept (in group DLQ_GROUP of the dead-letter destination) until
            # something reads them; unbounded, so a full dead-letter queue never stalls the
            # binding that feeds it.
            keeper = self._binder.broker.destination(self.dlq_name).group(DLQ_GROUP)
            keeper.capacity = sys.maxsize

    async def start(self) -> None:
        if self._state is not BindingState.STOPPED:
            return
        self.subscribe()
        self._paused = False
        self._state = BindingState.RUNNING
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(), name=f"memory:{self.name}:{i}")
            for i in range(self._spec.properties.concurrency)
        ]

    @property
    def busy(self) -> bool:
        """Whether this binding holds work: a batch in process, or messages waiting for it."""
        if self._state is not BindingState.RUNNING:
            return False
        return bool(self._processing) or (self._queue is not None and self._queue.size > 0)

    async def stop(self) -> None:
        if self._state is BindingState.STOPPED:
            return
        # Memory cannot keep messages past the process: drain what the app's running
        # bindings still hold (their outputs included) before stopping.
        await self._binder.quiesce()
        self._state = BindingState.STOPPED
        for task in self._workers:
            if task not in self._processing:
                task.cancel()  # idle: waiting for messages, holds none
        self._resumed.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._group_name is None and self._queue is not None:
            # An anonymous subscription ends with its binding, as in Spring.
            self._dest.groups.pop(self._queue.name, None)
            self._queue = None

    async def pause(self) -> None:
        if self._state is BindingState.RUNNING:
            self._paused = True
            self._resumed.clear()
            self._state = BindingState.PAUSED

    async def resume(self) -> None:
        if self._state is BindingState.PAUSED:
            self._paused = False
            self._state = BindingState.RUNNING
            self._resumed.set()
            if self._queue is not None:
                self._queue.wake()

    def _is_paused(self) -> bool:
        return self._paused

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        task = asyncio.current_task()
        assert task is not None
        max_n = self._binder.environment.max_batch
        failures = 0
        while self._state is not BindingState.STOPPED:
            if self._paused:
                await self._resumed.wait()
                continue
            partition, batch = await queue.take(self._allowed, max_n, self._is_paused)
            self._processing.add(task)
            try:
                outcomes = await self._handle(batch)
            except asyncio.CancelledError:
                queue.requeue(partition, batch)
                raise
            except Exception as exc:
                # The core could not finish the batch (an output was not confirmed): nothing
                # is acknowledged, the batch is delivered again after a pause.
                queue.requeue(partition, batch)
                failures += 1
                delay = min(0.1 * 2 ** min(failures, 7), 10.0)
                log.error("binding %s: batch not processed (%s); redelivering", self.name, exc)
                self._processing.discard(task)
                await asyncio.sleep(delay)
                continue
            else:
                failures = 0
                try:
                    await self._dead_letter(batch, outcomes)
                finally:
                    queue.done(partition)
                    self._processing.discard(task)
                # Let the other members of the group have a turn: a handler that never
                # awaits would otherwise take every batch while they wait.
                await asyncio.sleep(0)

    async def _dead_letter(
        self, batch: Sequence[Message[bytes]], outcomes: Sequence[Exception | None]
    ) -> None:
        if outcomes.count(None) == len(outcomes):
            return  # the usual case, decided without a Python loop over the batch
        failed = [(m, e) for m, e in zip(batch, outcomes, strict=True) if e is not None]
        if not self._ext.enable_dlq:
            for _, exc in failed:
                log.error(
                    "binding %s: dropping a failed message (enable-dlq is false): %s",
                    self.name,
                    exc,
                )
            return
        dead = []
        for msg, exc in failed:
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
        self.broker = Broker(self.environment.buffer_size)
        self._bindings: list[MemoryBinding] = []

    async def start(self) -> None:
        return None

    async def producer(self, spec: ProducerSpec) -> Producer:
        dest = self.broker.destination(spec.destination)
        dest.grow(spec.properties.partition_count)
        for group in spec.properties.required_groups:
            dest.group(group)
        return MemoryProducer(dest)

    async def consumer(self, spec: ConsumerSpec, handle: Handle) -> Binding:
        binding = MemoryBinding(self, spec, handle)
        binding.subscribe()
        self._bindings.append(binding)
        if spec.properties.auto_startup:
            await binding.start()
        return binding

    async def quiesce(self) -> None:
        """Wait until no running binding has work left, up to ``drain-timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.environment.drain_timeout / 1000
        while any(b.busy for b in self._bindings):
            if loop.time() > deadline:
                left = sum(b._queue.size for b in self._bindings if b.busy and b._queue)
                log.warning(
                    "memory binder %s: stopping with %d messages undelivered", self.name, left
                )
                return
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        for binding in self._bindings:
            with contextlib.suppress(Exception):
                await binding.stop()
        self._bindings.clear()
