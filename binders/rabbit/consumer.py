"""Consumer bindings: deliveries gathered into batches, one acknowledgement per batch.

Each of a binding's ``concurrency`` consumers has its own channel, QoS window (``prefetch``)
and subscription, so they compete for the queue like any RabbitMQ consumers. Deliveries
land in the consumer's buffer from pika's callback; the consumer's task hands the core
whatever is buffered (up to ``batch-size``), and once the core returned it dead-letters the
failures and acknowledges the rest with a single ``basic.ack(multiple=True)``: one channel,
one subscription, so the batch's tags are contiguous and nothing else is covered.

Acknowledgements belong to the channel that delivered: if the channel (or the connection)
went while a batch was being processed, its acknowledgement is dropped and RabbitMQ
delivers those messages again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pika import exceptions as pika_exc

from binder_core.message import CONTENT_TYPE, Message
from binder_core.spi import PROCESSED, BindingState, ConsumerSpec, Handle, Outcome
from binders.rabbit.connection import Chan, ChannelLost
from binders.rabbit.deadletter import DeadLetters
from binders.rabbit.provisioning import ConsumerQueue
from binders.rabbit.settings import RabbitConsumerProperties

if TYPE_CHECKING:
    from binders.rabbit.binder import RabbitBinder

log = logging.getLogger(__name__)

_RPC_TIMEOUT = 10.0


def _pause(failures: int) -> float:
    return min(0.1 * float(2 ** min(failures, 7)), 10.0)


class RabbitBinding:
    """A consumer binding on one queue: ``concurrency`` competing consumers."""

    def __init__(
        self,
        binder: RabbitBinder,
        spec: ConsumerSpec,
        ext: RabbitConsumerProperties,
        handle: Handle,
    ) -> None:
        self.name = spec.binding
        self._binder = binder
        self._spec = spec
        self.ext = ext
        self.handle = handle
        props = spec.properties
        self.partition = (props.instance_index or 0) if props.partitioned and spec.group else None
        # Half the window by default: while one batch is processed and its outputs are
        # confirmed, RabbitMQ can already deliver the next one into the other half.
        self.batch_size = ext.batch_size or max(1, ext.prefetch // 2)
        self.queue: ConsumerQueue | None = None
        self._state = BindingState.STOPPED
        self._resumed = asyncio.Event()
        self._consumers: list[_Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._dead_letters = DeadLetters(binder, self)
        self._tags = itertools.count(1)

    @property
    def state(self) -> BindingState:
        return self._state

    @property
    def queue_name(self) -> str:
        """The queue this binding consumes from."""
        assert self.queue is not None, "binding not provisioned"
        return self.queue.queue

    @property
    def dlq_name(self) -> str | None:
        """The dead-letter queue of this binding, if it has one."""
        q = self.queue
        if q is None or q.anonymous or not self.ext.auto_bind_dlq:
            return None
        ext = self.ext
        if ext.dead_letter_queue_name:
            return ext.dead_letter_queue_name
        base = q.queue if self.partition is None else q.queue.rsplit("-", 1)[0]
        return f"{base}.dlq"

    async def provision(self) -> None:
        """Declare exchange, queue, bindings and DLQ (once; anonymous queues per start)."""
        if self.queue is None:
            spec = self._spec
            self.queue = await self._binder.topology.provision_consumer(
                spec.destination,
                spec.group,
                self.ext,
                spec.properties.partitioned,
                spec.properties.instance_index or 0,
            )

    async def redeclare(self) -> None:
        """Declare the binder's topology again (this binding's queue went missing)."""
        await self._binder.topology.redeclare()

    def consumer_tag(self) -> str | None:
        """Spring's ``<consumer-tag-prefix>#<n>``, or a broker-chosen tag."""
        prefix = self.ext.consumer_tag_prefix
        return None if prefix is None else f"{prefix}#{next(self._tags)}"

    @property
    def stopped(self) -> bool:
        """Whether the binding is stopped (or stopping)."""
        return self._state is BindingState.STOPPED

    @property
    def paused(self) -> bool:
        """Whether intake is paused."""
        return self._state is BindingState.PAUSED

    async def wait_resumed(self) -> None:
        """Until ``resume`` or ``stop``."""
        await self._resumed.wait()

    async def start(self) -> None:
        if self._state is not BindingState.STOPPED:
            return
        await self.provision()
        self._state = BindingState.RUNNING
        self._resumed.set()
        loop = asyncio.get_running_loop()
        self._consumers = [_Consumer(self, i) for i in range(self._spec.properties.concurrency)]
        self._tasks = [
            loop.create_task(c.run(), name=f"rabbit:{self.name}:{c.index}") for c in self._consumers
        ]
        # Return once subscribed, so the binding is live when start() returns; a consumer
        # that cannot subscribe yet keeps trying on its own.
        waits = [loop.create_task(c.subscribed.wait()) for c in self._consumers]
        _, pending = await asyncio.wait(waits, timeout=_RPC_TIMEOUT)
        for w in pending:
            w.cancel()
        if pending:
            log.warning(
                "binding %s: not subscribed yet after %.0fs; still trying", self.name, _RPC_TIMEOUT
            )

    async def pause(self) -> None:
        if self._state is not BindingState.RUNNING:
            return
        self._state = BindingState.PAUSED
        self._resumed.clear()
        for consumer in self._consumers:
            await consumer.unsubscribe()
            consumer.poke()

    async def resume(self) -> None:
        if self._state is not BindingState.PAUSED:
            return
        self._state = BindingState.RUNNING
        self._resumed.set()
        for consumer in self._consumers:
            consumer.poke()

    async def stop(self) -> None:
        if self._state is BindingState.STOPPED:
            return
        self._state = BindingState.STOPPED
        self._resumed.set()
        for consumer in self._consumers:
            await consumer.unsubscribe()
        for consumer, task in zip(self._consumers, self._tasks, strict=True):
            if consumer.busy:
                consumer.poke()  # finishes and acknowledges its batch, then sees STOPPED
            else:
                task.cancel()  # idle: what it buffered goes back when its channel closes
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for consumer in self._consumers:
            await consumer.close()
        self._consumers, self._tasks = [], []
        await self._dead_letters.close()
        queue = self.queue
        if queue is not None and queue.anonymous:
            # An anonymous subscription ends with its binding, as in Spring.
            await self._binder.topology.delete_queue(queue.queue)
            self.queue = None

    async def settle(
        self,
        chan: Chan,
        current: Chan | None,
        batch: list[Message[bytes]],
        methods: list[Any],
        props: list[Any],
        outcomes: Sequence[Outcome],
    ) -> None:
        """Dead-letter the failures and acknowledge the batch once."""
        rejected: list[int] = []
        if outcomes.count(None) != len(outcomes):
            rejected = await self._dead_letters.handle(batch, methods, props, outcomes)
        if chan.closed is not None or chan is not current:
            log.debug(
                "binding %s: channel gone before the ack; %d message(s) will be redelivered",
                self.name,
                len(methods),
            )
            return
        raw = chan.raw
        try:
            if not rejected:
                raw.basic_ack(methods[-1].delivery_tag, multiple=True)
                return
            for tag in rejected:
                raw.basic_nack(tag, multiple=False, requeue=False)
            done = {*rejected}
            top = next(
                (m.delivery_tag for m in reversed(methods) if m.delivery_tag not in done), None
            )
            if top is not None:
                raw.basic_ack(top, multiple=True)
        except pika_exc.AMQPError as exc:
            log.debug("binding %s: ack not sent (%s); redelivery follows", self.name, exc)


class _Consumer:
    """One channel, one subscription, one task turning deliveries into batches."""

    def __init__(self, binding: RabbitBinding, index: int) -> None:
        self.binding = binding
        self.index = index
        self._partition = binding.partition
        self.chan: Chan | None = None
        self.tag: str | None = None
        self.messages: list[Message[bytes]] = []
        self.methods: list[Any] = []
        self.props: list[Any] = []
        self.subscribed = asyncio.Event()
        self._wake: asyncio.Future[None] | None = None
        #: The newest batch being processed or confirmed and acknowledged (it awaits the
        #: one before it, so acknowledgements go out in delivery order).
        self._inflight: asyncio.Task[None] | None = None
        self._failures = 0

    @property
    def busy(self) -> bool:
        """Whether a batch is being processed, confirmed or acknowledged."""
        task = self._inflight
        return task is not None and not task.done()

    async def _drain(self) -> None:
        """Wait until every batch taken so far is settled (acknowledged or given back)."""
        task = self._inflight
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def _deliver(self, ch: Any, method: Any, properties: Any, body: bytes) -> None:
        current = self.chan
        if current is None or ch is not current.raw:
            return  # a channel being closed: RabbitMQ delivers it again elsewhere
        # The header table, plus contentType from the content_type property (Spring's
        # place for it) unless the table has its own.
        table = properties.headers
        headers = dict(table) if table else {}
        content_type = properties.content_type
        if content_type is not None and CONTENT_TYPE not in headers:
            headers[CONTENT_TYPE] = content_type
        self.messages.append(Message(body, headers, None, self._partition))
        self.methods.append(method)
        self.props.append(properties)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def poke(self) -> None:
        """Make the task look at the binding's state again."""
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _sleep(self) -> None:
        self._wake = asyncio.get_running_loop().create_future()
        try:
            await self._wake
        finally:
            self._wake = None

    def _forget(self) -> None:
        """Drop buffered deliveries: their channel is gone and RabbitMQ redelivers them."""
        self.messages, self.methods, self.props = [], [], []
        self.tag = None

    def _closed(self, chan: Chan) -> None:
        if chan is self.chan:
            self._forget()
            self.poke()

    async def _open(self) -> Chan:
        b = self.binding
        chan = await b._binder.connection.channel()
        self._forget()
        self.chan = chan
        chan.on_close(lambda _lost: self._closed(chan))
        chan.raw.add_on_cancel_callback(lambda frame: self._cancelled_by_broker(chan, frame))
        await chan.rpc(chan.raw.basic_qos, prefetch_count=b.ext.prefetch)
        return chan

    def _cancelled_by_broker(self, chan: Chan, frame: Any) -> None:
        """RabbitMQ ended the subscription (queue deleted, or a node of a quorum queue
        went): subscribe again, which either works or says why it cannot."""
        if chan is self.chan and frame.method.consumer_tag == self.tag:
            log.warning(
                "binding %s: RabbitMQ cancelled the subscription to '%s'",
                self.binding.name,
                self.binding.queue_name,
            )
            self.tag = None
            self.poke()

    async def _subscribe(self, chan: Chan) -> None:
        b = self.binding
        kwargs: dict[str, Any] = {"exclusive": b.ext.exclusive}
        tag = b.consumer_tag()
        if tag is not None:
            kwargs["consumer_tag"] = tag
        frame = await chan.rpc(
            chan.raw.basic_consume, b.queue_name, self._deliver, auto_ack=False, **kwargs
        )
        self.tag = frame.method.consumer_tag
        self.subscribed.set()

    async def unsubscribe(self) -> None:
        """Cancel the subscription (deliveries stop); buffered messages stay unacked."""
        chan, tag = self.chan, self.tag
        self.tag = None
        if chan is None or tag is None or chan.closed is not None:
            return
        if tag not in chan.raw.consumer_tags:
            return  # the broker cancelled it already (its queue was deleted)
        with contextlib.suppress(ChannelLost, TimeoutError):
            await asyncio.wait_for(chan.rpc(chan.raw.basic_cancel, tag), _RPC_TIMEOUT)

    def _requeue_buffered(self, chan: Chan) -> None:
        """Give back what arrived but was not processed (pause), for other consumers."""
        if self.methods and chan.closed is None:
            with contextlib.suppress(pika_exc.AMQPError):
                chan.raw.basic_nack(self.methods[-1].delivery_tag, multiple=True, requeue=True)
        self.messages, self.methods, self.props = [], [], []

    async def close(self) -> None:
        """Close the channel: RabbitMQ requeues whatever it still had unacknowledged."""
        chan, self.chan = self.chan, None
        if chan is not None:
            await chan.close()
        self._forget()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            task = self._inflight
            if task is not None and not task.done():
                # Cancelled with a batch unsettled: it is given back when its channel closes.
                task.cancel()

    async def _run(self) -> None:
        b = self.binding
        failures = 0
        while b.state is not BindingState.STOPPED:
            chan = self.chan
            if chan is None or chan.closed is not None:
                await self._drain()  # a failed batch backs off before the channel reopens
                try:
                    chan = await self._open()
                except ChannelLost as exc:
                    if b.stopped:
                        return
                    failures += 1
                    log.error("binding %s: cannot open a channel: %s", b.name, exc)
                    await asyncio.sleep(_pause(failures))
                continue
            if b.paused:
                await self._drain()  # settle before giving back what is buffered behind
                self._requeue_buffered(chan)
                await b.wait_resumed()
                continue
            if self.tag is None:
                try:
                    await self._subscribe(chan)
                except ChannelLost as exc:
                    if exc.code == 404:
                        # The queue is gone (deleted, or an auto-delete queue whose last
                        # consumer left): declare the topology again and subscribe anew.
                        log.warning(
                            "binding %s: queue '%s' is missing; declaring it again",
                            b.name,
                            b.queue_name,
                        )
                        with contextlib.suppress(Exception):
                            await b.redeclare()
                    if exc.permanent:
                        failures += 1
                        if exc.code != 404 or failures > 1:
                            log.error(
                                "binding %s: cannot consume from '%s': %s",
                                b.name,
                                b.queue_name,
                                exc,
                            )
                        await asyncio.sleep(_pause(failures))
                continue
            if not self.messages:
                await self._sleep()
                continue
            n = b.batch_size
            if len(self.messages) <= n:
                batch, methods, props = self.messages, self.methods, self.props
                self.messages, self.methods, self.props = [], [], []
            else:
                batch, methods, props = self.messages[:n], self.methods[:n], self.props[:n]
                del self.messages[:n], self.methods[:n], self.props[:n]
            # The batch runs as its own task; the next one is taken as soon as this one
            # is processed and only its outputs' confirmations are pending (the core says
            # so through PROCESSED), so waiting for the broker overlaps the next batch's
            # processing. Each batch acknowledges only after the one before it settled.
            processed = asyncio.Event()
            task = asyncio.get_running_loop().create_task(
                self._process(chan, batch, methods, props, self._inflight, processed),
                name=f"rabbit:{b.name}:{self.index}:batch",
            )
            self._inflight = task
            signalled = asyncio.ensure_future(processed.wait())
            try:
                await asyncio.wait((task, signalled), return_when=asyncio.FIRST_COMPLETED)
            finally:
                signalled.cancel()
        await self._drain()

    async def _process(
        self,
        chan: Chan,
        batch: list[Message[bytes]],
        methods: list[Any],
        props: list[Any],
        previous: asyncio.Task[None] | None,
        processed: asyncio.Event,
    ) -> None:
        """Run one batch through the core, then (after the batch before it) settle it."""
        b = self.binding
        PROCESSED.set(processed.set)  # this task's own context
        try:
            outcomes = await b.handle(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The core could not finish the batch (an output was not confirmed):
            # acknowledge nothing; closing the channel gives back this batch and
            # everything delivered after it, in order.
            processed.set()
            await _settled(previous)
            self._failures += 1
            log.error("binding %s: batch not processed (%s); redelivering", b.name, exc)
            if self.chan is chan:
                self.chan = None
            await chan.close()
            if self.chan is None:
                self._forget()
            await asyncio.sleep(_pause(self._failures))
            return
        processed.set()
        await _settled(previous)
        self._failures = 0
        await b.settle(chan, self.chan, batch, methods, props, outcomes)


async def _settled(batch: asyncio.Task[None] | None) -> None:
    """Wait for the batch before (acknowledgements go out in delivery order); how it ended
    is its own business."""
    if batch is not None:
        with contextlib.suppress(Exception):
            await batch
