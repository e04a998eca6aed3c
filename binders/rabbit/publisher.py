"""Publishing with pipelined publisher confirms.

A batch is written to the channel in one go; the broker's confirmations (acks, nacks, and
``multiple`` ranges of them) are matched to it by delivery tag, and the caller awaits one
future for the whole batch. That is what keeps publishing at the speed of the socket rather
than one round trip per message.

Failures are of two kinds. A nack, or a mandatory message returned as unroutable, is
permanent: it is reported for that message and never retried. A channel lost with its
connection leaves messages unconfirmed: those are published again on the recovered
connection, so ``publish`` returns only once every message has an answer (at-least-once:
a message that reached the broker just before the cut may arrive twice). Publishing again
waits a growing pause first, so a failure that repeats at once cannot spin; a closed
publisher raises ``ProducerClosedError`` at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from pika import BasicProperties
from pika import exceptions as pika_exc

from binder_core.errors import ProducerClosedError
from binders.rabbit.connection import Backoff, Chan, ChannelLost, Connection

log = logging.getLogger(__name__)

#: One message to publish: routing key, body, properties.
Item = tuple[str, bytes, BasicProperties]

_UNCONFIRMED, _ACKED, _FAILED, _RETURNED = 0, 1, 2, 3
_SETTLED = (_ACKED, _FAILED)


class _Batch:
    """Confirmation state of one batch on one channel: tags ``first .. first+n-1``."""

    __slots__ = ("first", "future", "items", "left", "lo", "origin", "reasons", "status")

    def __init__(
        self,
        first: int,
        items: Sequence[Item],
        future: asyncio.Future[None],
        origin: list[int] | None = None,
    ) -> None:
        self.first = first
        self.items = items
        #: Position of each item in what the caller passed, when some were left out.
        self.origin = origin
        self.status = bytearray(len(items))
        self.left = len(items)
        self.lo = 0  # every index below lo is settled
        self.reasons: dict[int, str] = {}
        self.future = future

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1

    def settle_upto(self, tag: int, ok: bool, why: str) -> bool:
        """Settle every open message with a tag up to ``tag``; True when the batch is done."""
        upto = min(tag - self.first + 1, len(self.items))
        status, lo = self.status, self.lo
        if upto > lo:
            opened = status.count(_UNCONFIRMED, lo, upto)
            returned = status.count(_RETURNED, lo, upto)
            if not ok:
                for i in range(lo, upto):
                    if status[i] == _UNCONFIRMED:
                        self.reasons[i] = why
            self.left -= opened + returned
            self.lo = upto
        return self.left == 0

    def settle_one(self, tag: int, ok: bool, why: str) -> bool:
        """Settle the message with ``tag``; True when the batch is done."""
        i = tag - self.first
        state = self.status[i] if i >= self.lo else _ACKED
        if state == _UNCONFIRMED:
            self.status[i] = _ACKED if ok else _FAILED
            if not ok:
                self.reasons[i] = why
            self.left -= 1
        elif state == _RETURNED:
            self.status[i] = _FAILED  # the ack of a returned message: it still went nowhere
            self.left -= 1
        # Advance past settled messages only: a returned one still awaits its ack.
        while self.lo < len(self.status) and self.status[self.lo] in _SETTLED:
            self.lo += 1
        return self.left == 0

    def mark_returned(
        self, routing_key: str, body: bytes, headers: Any, why: str, exact: bool
    ) -> bool:
        """Match a returned message to the oldest open message with the same routing key
        and body (and, when ``exact``, the same headers, which a headers exchange routes
        on). Among identical messages the match is still right: they are routed alike."""
        status, items = self.status, self.items
        for i in range(self.lo, len(items)):
            if status[i] == _UNCONFIRMED:
                rk, payload, props = items[i]
                if (
                    rk == routing_key
                    and payload == body
                    and (not exact or (props.headers or None) == (headers or None))
                ):
                    status[i] = _RETURNED
                    self.reasons[i] = why
                    return True
        return False

    def unconfirmed(self) -> list[int]:
        """Indices never confirmed (what to publish again after a lost channel)."""
        status = self.status
        return [i for i in range(self.lo, len(status)) if status[i] == _UNCONFIRMED]


class ConfirmChannel:
    """A channel in confirm mode and the batches awaiting its confirmations."""

    def __init__(self, chan: Chan) -> None:
        self.chan = chan
        #: Set when pika said the channel is closing before its close callback came: the
        #: channel takes nothing more, whatever ``chan.closed`` says yet.
        self.closing = False
        self._next = 1
        self._open: deque[_Batch] = deque()
        chan.raw.add_on_return_callback(self._on_return)
        chan.on_close(self._on_closed)

    @classmethod
    async def open(cls, connection: Connection) -> ConfirmChannel:
        """A new confirm channel on ``connection`` (waits while it is down)."""
        chan = await connection.channel()
        self = cls(chan)
        await chan.rpc(chan.raw.confirm_delivery, self._on_confirm)
        return self

    def publish(
        self, exchange: str, items: Sequence[Item], mandatory: bool
    ) -> tuple[_Batch, dict[int, str]]:
        """Write every item now; the batch's future resolves when all are answered. Items
        pika cannot encode (a header value AMQP has no type for, an over-long routing key)
        are not sent and come back as ``{index: reason}``: pika encodes a message whole
        before writing any of it, so they use no delivery tag."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.chan.closed is not None:
            future.set_exception(self.chan.closed)
            return _Batch(self._next, items, future), {}
        publish = self.chan.raw.basic_publish
        refused: dict[int, str] = {}
        for j, (rk, body, props) in enumerate(items):
            try:
                publish(exchange, rk, body, props, mandatory)
            except (pika_exc.ChannelWrongStateError, pika_exc.ConnectionWrongStateError) as exc:
                # The channel is closing under us: none of this batch counts as sent, and
                # the channel is not used again (publishing on it would fail at once).
                self.closing = True
                future.set_exception(ChannelLost(str(exc) or "channel closing"))
                return _Batch(self._next, items, future), refused
            except Exception as exc:
                refused[j] = f"cannot be encoded for AMQP: {type(exc).__name__}: {exc}"
        if refused:
            kept = [j for j in range(len(items)) if j not in refused]
            batch = _Batch(self._next, [items[j] for j in kept], future, kept)
        else:
            batch = _Batch(self._next, items, future)
        self._next += len(batch.items)
        if batch.items:
            self._open.append(batch)
        else:
            future.set_result(None)
        return batch, refused

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag: int = method.delivery_tag
        ok = method.NAME == "Basic.Ack"
        why = "" if ok else "the broker refused it (nack)"
        batches = self._open
        if method.multiple:
            while batches and batches[0].first <= tag:
                batch = batches[0]
                if batch.settle_upto(tag, ok, why):
                    batches.popleft()
                    _finish(batch)
                if batch.last > tag:
                    break
        else:
            for batch in batches:
                if batch.first <= tag <= batch.last:
                    if batch.settle_one(tag, ok, why):
                        batches.remove(batch)
                        _finish(batch)
                    break

    def _on_return(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        why = (
            f"unroutable: no queue is bound to exchange '{method.exchange}' for routing key "
            f"'{method.routing_key}' ({method.reply_code} {method.reply_text})"
        )
        for exact in (True, False):
            for batch in self._open:
                if batch.mark_returned(method.routing_key, body, props.headers, why, exact):
                    return
        log.warning("rabbit: a returned message matched no unconfirmed publish: %s", why)

    def _on_closed(self, lost: ChannelLost) -> None:
        batches, self._open = self._open, deque()
        for batch in batches:
            if not batch.future.done():
                batch.future.set_exception(lost)


def _finish(batch: _Batch) -> None:
    if not batch.future.done():
        batch.future.set_result(None)


class Publisher:
    """Publishes batches with confirms on its own channel, across reconnects."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._channel: ConfirmChannel | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        #: Callers queued for ``_opening``: while there are any, newcomers queue too.
        self._queued = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (or the connection closed for good)."""
        return self._closed or self._connection.closed

    def _check_open(self, exchange: str) -> None:
        if self.closed:
            raise ProducerClosedError(
                f"cannot publish to exchange '{exchange}': its producer is closed"
            )

    async def _current(self, exchange: str) -> ConfirmChannel:
        """The open channel, opened if need be. Callers get it in the order they asked
        (the lock is fair, and nobody overtakes the queue while a channel opens), and each
        writes at once when it returns: publishes go out in call order."""
        channel = self._channel
        if channel is not None and _usable(channel) and not self._queued:
            return channel
        self._queued += 1
        try:
            async with self._opening:
                self._check_open(exchange)
                channel = self._channel
                if channel is None or not _usable(channel):
                    channel = await ConfirmChannel.open(self._connection)
                    if self._closed:  # closed while the channel opened
                        await channel.chan.close()
                        self._check_open(exchange)
                    self._channel = channel
                return channel
        finally:
            self._queued -= 1

    async def publish(
        self, exchange: str, items: Sequence[Item], mandatory: bool
    ) -> dict[int, str]:
        """Publish ``items`` to ``exchange``; return ``{index: reason}`` for the messages
        the broker refused or could not route. Returns only when every message has an
        answer, publishing again (after a growing pause) what a lost connection left
        unconfirmed. Raises ``ProducerClosedError`` at once when the publisher is closed,
        also while it waits: nothing unconfirmed is reported as sent."""
        failures: dict[int, str] = {}
        todo: list[int] | None = None  # indices into items still to publish; None = all
        backoff: Backoff | None = None
        while True:
            self._check_open(exchange)
            batch_items = items if todo is None else [items[i] for i in todo]
            if not batch_items:
                return failures
            try:
                channel = await self._current(exchange)
            except ChannelLost as exc:
                self._check_open(exchange)
                if exc.permanent:
                    for i in range(len(items)) if todo is None else todo:
                        failures[i] = str(exc)
                    return failures
                backoff = backoff or Backoff()
                await backoff.wait()
                continue
            batch, refused = channel.publish(exchange, batch_items, mandatory)
            lost: ChannelLost | None = None
            try:
                await batch.future
            except ChannelLost as exc:
                lost = exc
            # batch index -> position in batch_items -> position in items
            sent: Sequence[int] = range(len(batch_items)) if batch.origin is None else batch.origin
            where: Sequence[int] = range(len(items)) if todo is None else todo

            def index(j: int, sent: Sequence[int] = sent, where: Sequence[int] = where) -> int:
                return where[sent[j]]

            for k, why in refused.items():
                failures[where[k]] = why
            for j, why in batch.reasons.items():
                failures[index(j)] = why
            if lost is None:
                return failures
            left = [index(j) for j in batch.unconfirmed()]
            if lost.permanent:
                # The broker closed the channel over this publish (a missing exchange): it
                # would fail the same way again.
                for i in left:
                    failures[i] = f"channel closed by the broker: {lost}"
                return failures
            todo = left
            if todo:
                self._check_open(exchange)
                log.debug(
                    "rabbit: %d messages unconfirmed at a lost channel; publishing again",
                    len(todo),
                )
                backoff = backoff or Backoff()
                await backoff.wait()

    async def close(self) -> None:
        """Close the channel; every publish, waiting or new, raises
        ``ProducerClosedError`` from now on."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.chan.close()


def _usable(channel: ConfirmChannel) -> bool:
    return channel.chan.closed is None and not channel.closing
