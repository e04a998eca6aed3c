"""Consuming from RabbitMQ: a ``Subscription`` per binding (its queue, dead-letter queue
and dead-lettering) and a ``Source`` per consumer (``concurrency``), driven by the core's
consumer loop.

Each source has its own channel, QoS window (``prefetch``) and subscription, so the
consumers of a binding compete for the queue like any RabbitMQ consumers. Deliveries land
in the source's buffer from pika's callback; a fetch takes what is buffered (up to
``batch-size``); settling a batch dead-letters its failures and acknowledges the rest with
one ``basic.ack(multiple=True)``: one channel, one subscription, so a batch's tags are
contiguous and nothing else is covered. Batches may overlap (the next is processed while the
previous one's outputs wait for their confirms): acknowledgements still go out in delivery
order, because the core settles in order.

Acknowledgements belong to the channel that delivered: if the channel (or the connection)
went while a batch was processed, its acknowledgement is dropped and RabbitMQ delivers those
messages again. Giving batches back is closing the channel, which requeues every
unacknowledged delivery in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pika import exceptions as pika_exc

from binder_core.message import CONTENT_TYPE, Message
from binder_core.spi import Batch, ConsumerSpec, Disconnected, Permanent
from binders.rabbit.connection import Chan, ChannelLost, Connection
from binders.rabbit.deadletter import DeadLetters
from binders.rabbit.headers import HeaderTableError, unreadable
from binders.rabbit.provisioning import ConsumerQueue, Topology
from binders.rabbit.settings import RabbitConsumerProperties

log = logging.getLogger(__name__)

_RPC_TIMEOUT = 10.0


@dataclass(slots=True)
class Deliveries:
    """A batch's RabbitMQ side: the channel that delivered it, and each delivery's method
    frame and properties (the dead letters need both)."""

    chan: Chan
    methods: list[Any]
    props: list[Any]


class RabbitSubscription:
    """A consumer binding's queue (declared at provision), its dead letters and tags."""

    def __init__(
        self,
        spec: ConsumerSpec,
        ext: RabbitConsumerProperties,
        connection: Connection,
        topology: Topology,
        queue: ConsumerQueue,
        dead_letters: DeadLetters,
        drain_timeout: float,
    ) -> None:
        self.name = spec.binding
        self.spec = spec
        self.ext = ext
        self.connection = connection
        self.topology = topology
        self.queue = queue
        self.dead_letters = dead_letters
        self.drain_timeout = drain_timeout
        props = spec.properties
        self.partition = (props.instance_index or 0) if props.partitioned and spec.group else None
        # Half the window by default: while one batch is processed and its outputs are
        # confirmed, RabbitMQ can already deliver the next one into the other half.
        self.batch_size = ext.batch_size or max(1, ext.prefetch // 2)
        self.concurrency = props.concurrency
        self._tags = itertools.count(1)

    @property
    def queue_name(self) -> str:
        return self.queue.queue

    @property
    def dlq_name(self) -> str | None:
        """The dead-letter queue of this binding, if it has one."""
        q = self.queue
        if q.anonymous or not self.ext.auto_bind_dlq:
            return None
        if self.ext.dead_letter_queue_name:
            return self.ext.dead_letter_queue_name
        base = q.queue if self.partition is None else q.queue.rsplit("-", 1)[0]
        return f"{base}.dlq"

    def consumer_tag(self) -> str | None:
        """Spring's ``<consumer-tag-prefix>#<n>``, or a broker-chosen tag."""
        prefix = self.ext.consumer_tag_prefix
        return None if prefix is None else f"{prefix}#{next(self._tags)}"

    def source(self, index: int) -> RabbitSource:
        return RabbitSource(self, index)

    async def backlog(self) -> dict[str, int]:
        """Messages ready in the queue (a passive declare on a channel of its own, so a
        queue that went missing cannot close a consumer's channel)."""
        chan = await self.connection.open_channel()
        try:
            frame = await chan.rpc(chan.raw.queue_declare, queue=self.queue_name, passive=True)
        except ChannelLost:
            return {}
        finally:
            await chan.close()
        return {self.queue_name: int(frame.method.message_count)}

    async def close(self) -> None:
        await self.dead_letters.close()
        if self.queue.anonymous:
            # An anonymous subscription ends with its binding, as in Spring.
            with contextlib.suppress(Exception):
                await self.topology.delete_queue(self.queue.queue)


class RabbitSource:
    """One channel, one subscription, and the deliveries it buffered."""

    overlap = True

    def __init__(self, subscription: RabbitSubscription, index: int) -> None:
        self.sub = subscription
        self.label = (
            subscription.name if subscription.concurrency == 1 else f"{subscription.name}#{index}"
        )
        self.chan: Chan | None = None
        self.tag: str | None = None
        self._messages: list[Message[bytes]] = []
        self._methods: list[Any] = []
        self._props: list[Any] = []
        self._unreadable: dict[int, Exception] = {}  # index in the buffer -> why
        self._wake: asyncio.Future[None] | None = None
        self._interrupted = False
        self._given_back = False  # the channel was closed to give batches back

    # -- channel and subscription ----------------------------------------------------------

    async def open(self) -> None:
        await self._subscribe()

    async def _subscribe(self) -> None:
        sub = self.sub
        try:
            chan = await sub.connection.channel()
            self._forget()
            self.chan = chan
            chan.on_close(lambda _lost: self._closed(chan))
            chan.raw.add_on_cancel_callback(lambda frame: self._cancelled_by_broker(chan, frame))
            await chan.rpc(chan.raw.basic_qos, prefetch_count=sub.ext.prefetch)
            await self._consume(chan)
        except ChannelLost as exc:
            if exc.code == 404:
                # The queue is gone (deleted, or an auto-delete queue whose last consumer
                # left): declare the topology again; the next attempt subscribes anew.
                log.warning(
                    "binding %s: queue '%s' is missing; declaring it again",
                    self.label,
                    sub.queue_name,
                )
                with contextlib.suppress(Exception):
                    await sub.topology.redeclare()
                raise Disconnected(f"queue '{sub.queue_name}' was missing") from exc
            if exc.permanent:
                raise Permanent(f"cannot consume from '{sub.queue_name}': {exc}") from exc
            raise Disconnected(f"cannot consume from '{sub.queue_name}': {exc}") from exc

    async def _consume(self, chan: Chan) -> None:
        sub = self.sub
        kwargs: dict[str, Any] = {"exclusive": sub.ext.exclusive}
        tag = sub.consumer_tag()
        if tag is not None:
            kwargs["consumer_tag"] = tag
        frame = await chan.rpc(
            chan.raw.basic_consume, sub.queue_name, self._deliver, auto_ack=False, **kwargs
        )
        self.tag = frame.method.consumer_tag

    def _deliver(self, ch: Any, method: Any, properties: Any, body: bytes) -> None:
        current = self.chan
        if current is None or ch is not current.raw:
            return  # a channel being closed: RabbitMQ delivers it again elsewhere
        # The header table, plus contentType from the content_type property (Spring's
        # place for it) unless the table has its own.
        table = properties.headers
        if table:
            headers = dict(table)
            why = unreadable(table)
            if why is not None:
                self._unreadable[len(self._messages)] = HeaderTableError(why)
                headers = {}
        else:
            headers = {}
        content_type = properties.content_type
        if content_type is not None and CONTENT_TYPE not in headers:
            headers[CONTENT_TYPE] = content_type
        self._messages.append(Message(body, headers, None, self.sub.partition))
        self._methods.append(method)
        self._props.append(properties)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _closed(self, chan: Chan) -> None:
        if chan is self.chan:
            self._forget()
            self._poke()

    def _cancelled_by_broker(self, chan: Chan, frame: Any) -> None:
        """RabbitMQ ended the subscription (queue deleted, or a node of a quorum queue
        went): the next fetch reports it and the core subscribes again."""
        if chan is self.chan and frame.method.consumer_tag == self.tag:
            log.warning(
                "binding %s: RabbitMQ cancelled the subscription to '%s'",
                self.label,
                self.sub.queue_name,
            )
            self.tag = None
            self._poke()

    def _forget(self) -> None:
        """Drop buffered deliveries: their channel is gone and RabbitMQ redelivers them."""
        self._messages, self._methods, self._props = [], [], []
        self._unreadable = {}

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- fetching --------------------------------------------------------------------------

    async def fetch(self, wait: bool) -> Batch | None:
        while True:
            if self._interrupted:
                self._interrupted = False
                return None
            chan = self.chan
            if self._given_back:
                self._given_back = False
                await self._subscribe()
                continue
            if chan is None or chan.closed is not None:
                raise Disconnected(
                    f"channel closed ({chan.closed if chan is not None else 'not open'})"
                )
            if self.tag is None:
                raise Disconnected("the subscription was cancelled")
            if self._messages:
                return self._take()
            if not wait:
                return None
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None

    def _take(self) -> Batch:
        chan = self.chan
        assert chan is not None
        n = self.sub.batch_size
        unreadable = self._unreadable
        if len(self._messages) <= n:
            messages, methods, props = self._messages, self._methods, self._props
            self._messages, self._methods, self._props = [], [], []
            self._unreadable = {}
            found = unreadable or None
        else:
            messages, methods, props = self._messages[:n], self._methods[:n], self._props[:n]
            del self._messages[:n], self._methods[:n], self._props[:n]
            found = None
            if unreadable:
                found = {i: e for i, e in unreadable.items() if i < n} or None
                self._unreadable = {i - n: e for i, e in unreadable.items() if i >= n}
        return Batch(messages, Deliveries(chan, methods, props), found)

    def interrupt(self) -> None:
        self._interrupted = True
        self._poke()

    # -- settling --------------------------------------------------------------------------

    async def settle(
        self, batch: Batch, failed: Sequence[tuple[int, Exception]], transaction: Any = None
    ) -> None:
        """Dead-letter the failures, then acknowledge the batch once."""
        deliveries: Deliveries = batch.token
        chan, methods = deliveries.chan, deliveries.methods
        rejected: list[int] = []
        if failed:
            rejected = await self.sub.dead_letters.handle(
                batch.messages, methods, deliveries.props, failed
            )
        if chan.closed is not None or chan is not self.chan:
            log.debug(
                "binding %s: channel gone before the ack; %d message(s) will be redelivered",
                self.label,
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
            log.debug("binding %s: ack not sent (%s); redelivery follows", self.label, exc)

    async def redeliver(self, batches: Sequence[Batch]) -> None:
        """Close the channel: RabbitMQ requeues every unacknowledged delivery, in order, and
        the next fetch subscribes on a new channel."""
        chan, self.chan = self.chan, None
        self.tag = None
        self._forget()
        if chan is not None:
            await chan.close()
        self._given_back = True

    # -- pause -----------------------------------------------------------------------------

    async def pause(self) -> None:
        """Cancel the subscription and give back what was buffered (nothing is in flight)."""
        await self._unsubscribe()
        chan = self.chan
        if self._methods and chan is not None and chan.closed is None:
            with contextlib.suppress(pika_exc.AMQPError):
                chan.raw.basic_nack(self._methods[-1].delivery_tag, multiple=True, requeue=True)
        self._forget()

    async def resume(self) -> None:
        chan = self.chan
        if chan is None or chan.closed is not None:
            self._given_back = True  # subscribe on a new channel at the next fetch
            return
        try:
            await self._consume(chan)
        except ChannelLost:
            self._given_back = True

    async def _unsubscribe(self) -> None:
        chan, tag = self.chan, self.tag
        self.tag = None
        if chan is None or tag is None or chan.closed is not None:
            return
        if tag not in chan.raw.consumer_tags:
            return  # the broker cancelled it already (its queue was deleted)
        with contextlib.suppress(ChannelLost, TimeoutError):
            await asyncio.wait_for(chan.rpc(chan.raw.basic_cancel, tag), _RPC_TIMEOUT)

    async def close(self) -> None:
        """Cancel the subscription and close the channel: RabbitMQ requeues whatever it
        still had unacknowledged."""
        await self._unsubscribe()
        chan, self.chan = self.chan, None
        self._forget()
        if chan is not None:
            await chan.close()
