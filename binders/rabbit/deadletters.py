"""Dead-letter access for ``binder dlq`` on RabbitMQ: the queues ``<queue>.dlq`` (or a
binding's ``dead-letter-queue-name``).

Letters are read one by one (``basic.get``) and held unacknowledged on the reading
channel: a letter is acknowledged only once its replayed copy was confirmed; whatever is
still held when the channel closes (the run ends, or the process is killed) goes back to
its place in the queue. A replay without ``--to`` goes to the queue the message failed in
(``<queue>`` for ``<queue>.dlq``), through the default exchange, so that only the group
that failed gets it again, as Spring's guide recovers dead letters; when that queue is not
known, to ``x-original-exchange`` with ``x-original-routingKey``. ``--to`` names an
exchange, published to with the original routing key.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from binder_core.dlq.letters import RABBIT_ORIGINAL_EXCHANGE, RABBIT_ORIGINAL_ROUTING_KEY, text
from binder_core.dlq.spi import DeadLetter, NoDeadLetterQueue
from binder_core.errors import DeliveryError
from binder_core.message import CONTENT_TYPE, Message
from binder_core.spi import ConsumerSpec
from binders.rabbit.connection import Chan, ChannelLost
from binders.rabbit.headers import TableProperties
from binders.rabbit.publisher import Item, Publisher
from binders.rabbit.settings import RabbitConsumerProperties

if TYPE_CHECKING:
    from binders.rabbit.binder import RabbitBinder

_DLQ_SUFFIX = ".dlq"


class RabbitDeadLetters:
    """The dead-letter queues of one RabbitMQ binder."""

    def __init__(self, binder: RabbitBinder) -> None:
        self._binder = binder

    def locate(self, spec: ConsumerSpec) -> str | None:
        ext = spec.extension if isinstance(spec.extension, RabbitConsumerProperties) else None
        ext = ext or RabbitConsumerProperties()
        if not spec.group or not ext.auto_bind_dlq:
            return None
        if ext.dead_letter_queue_name:
            return ext.dead_letter_queue_name
        base = spec.group if ext.queue_name_group_only else f"{spec.destination}.{spec.group}"
        return f"{ext.prefix}{base}{_DLQ_SUFFIX}"

    async def discover(self) -> Sequence[str]:
        return []  # AMQP cannot list queues: they are found through the app's bindings

    async def open(self, name: str) -> RabbitDeadLetterQueue:
        count = await self._count(name)
        if count is None:
            raise NoDeadLetterQueue(
                f"queue '{name}' does not exist on rabbit binder '{self._binder.name}'"
            )
        queue = RabbitDeadLetterQueue(self, name, count)
        await queue.start()
        return queue

    async def _count(self, name: str) -> int | None:
        """Messages ready in queue ``name``; ``None`` when it does not exist. A channel
        of its own: a refused passive declare closes the channel it was made on."""
        chan = await self._binder.connection.channel()
        try:
            frame = await chan.rpc(chan.raw.queue_declare, queue=name, passive=True)
        except ChannelLost as exc:
            if exc.code == 404:
                return None
            raise
        finally:
            await chan.close()
        return int(frame.method.message_count)

    async def publisher(self) -> Publisher:
        return Publisher(await self._binder.publisher_connection())


class RabbitDeadLetterQueue:
    """One dead-letter queue, read with ``basic.get`` on a channel of its own."""

    def __init__(self, owner: RabbitDeadLetters, name: str, count: int) -> None:
        self.name = name
        self._owner = owner
        self._left = count  # letters there when opened, not read yet
        self._read = 0
        self._chan: Chan | None = None
        self._waiting: asyncio.Future[Any] | None = None
        self._publisher: Publisher | None = None
        self._queues: dict[str, bool] = {}

    async def start(self) -> None:
        from pika import spec

        if self.name.endswith(_DLQ_SUFFIX):
            queue = self.name[: -len(_DLQ_SUFFIX)]
            self._queues[queue] = await self._owner._count(queue) is not None
        self._chan = await self._owner._binder.connection.channel()
        self._chan.raw.add_callback(self._empty, [spec.Basic.GetEmpty], one_shot=False)
        self._chan.on_close(self._lost)

    def _empty(self, _frame: Any) -> None:
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _lost(self, lost: ChannelLost) -> None:
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_exception(lost)

    def _got(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_result((method, props, body))

    async def _get(self) -> tuple[Any, Any, bytes] | None:
        chan = self._chan
        assert chan is not None
        if chan.closed is not None:
            raise chan.closed
        self._waiting = asyncio.get_running_loop().create_future()
        chan.raw.basic_get(self.name, self._got, auto_ack=False)
        try:
            result: tuple[Any, Any, bytes] | None = await self._waiting
        finally:
            self._waiting = None
        return result

    async def size(self) -> int | None:
        return await self._owner._count(self.name)

    async def read(self, limit: int) -> Sequence[DeadLetter]:
        out: list[DeadLetter] = []
        while self._left > 0 and len(out) < limit:
            got = await self._get()
            if got is None:
                self._left = 0
                break
            self._left -= 1
            self._read += 1
            method, props, body = got
            out.append(_letter(self._read, method, props, body))
        return out

    async def ack(self, letters: Sequence[DeadLetter]) -> None:
        chan = self._chan
        assert chan is not None
        if chan.closed is not None:
            raise chan.closed
        for letter in letters:
            chan.raw.basic_ack(delivery_tag=letter.handle[0].delivery_tag)

    def target(self, letter: DeadLetter, to: str | None) -> str | None:
        headers = letter.message.headers
        if to is not None:
            return f"exchange {to}"
        if self.name.endswith(_DLQ_SUFFIX) and self._queues.get(self.name[: -len(_DLQ_SUFFIX)]):
            return f"queue {self.name[: -len(_DLQ_SUFFIX)]}"
        exchange = text(headers.get(RABBIT_ORIGINAL_EXCHANGE))
        return f"exchange {exchange}" if exchange else None

    async def _route(self, letter: DeadLetter, to: str | None) -> tuple[str, str] | None:
        """(exchange, routing key) of a replay of ``letter``."""
        headers = letter.message.headers
        key = text(headers.get(RABBIT_ORIGINAL_ROUTING_KEY))
        if to is not None:
            return to, key if key is not None else to
        if self.name.endswith(_DLQ_SUFFIX) and self._queues.get(self.name[: -len(_DLQ_SUFFIX)]):
            return "", self.name[: -len(_DLQ_SUFFIX)]
        exchange = text(headers.get(RABBIT_ORIGINAL_EXCHANGE))
        if exchange is None:
            return None
        return exchange, key or ""

    async def replay(
        self, messages: Sequence[tuple[DeadLetter, Message[bytes]]], to: str | None
    ) -> Sequence[Exception | None]:
        results: list[Exception | None] = [None] * len(messages)
        by_exchange: dict[str, list[tuple[int, Item]]] = {}
        for i, (letter, msg) in enumerate(messages):
            route = await self._route(letter, to)
            if route is None:
                results[i] = DeliveryError(
                    "the letter does not say where it came from: replay it with --to"
                )
                continue
            exchange, key = route
            by_exchange.setdefault(exchange, []).append((i, _item(key, letter, msg)))
        for exchange, items in by_exchange.items():
            await self._publish(exchange, items, results)
        return results

    async def append(self, messages: Sequence[Message[bytes]]) -> Sequence[Exception | None]:
        results: list[Exception | None] = [None] * len(messages)
        items = [
            (i, (self.name, m.payload, _properties(m.headers, None)))
            for i, m in enumerate(messages)
        ]
        await self._publish("", items, results)
        return results

    async def _publish(
        self, exchange: str, items: list[tuple[int, Item]], results: list[Exception | None]
    ) -> None:
        if self._publisher is None:
            self._publisher = await self._owner.publisher()
        refused = await self._publisher.publish(exchange, [item for _, item in items], True)
        for j, why in refused.items():
            results[items[j][0]] = DeliveryError(why)

    async def purge(self) -> int:
        chan = self._chan
        assert chan is not None
        frame = await chan.rpc(chan.raw.queue_purge, queue=self.name)
        self._left = 0
        return int(frame.method.message_count)

    async def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()
        chan, self._chan = self._chan, None
        if chan is not None:
            await chan.close()  # what is held unacknowledged goes back to the queue


def _letter(position: int, method: Any, props: Any, body: bytes) -> DeadLetter:
    headers = dict(props.headers or {})
    if props.content_type is not None and CONTENT_TYPE not in headers:
        headers[CONTENT_TYPE] = props.content_type
    return DeadLetter(
        f"#{position}",
        Message(body, headers),
        _when(headers, props),
        (method, props),
    )


def _when(headers: dict[str, Any], props: Any) -> float | None:
    """When the letter was dead-lettered: RabbitMQ's ``x-death`` time when it did it
    itself, else the message's timestamp property, if any."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        time = deaths[0].get("time")
        if isinstance(time, datetime.datetime):
            if time.tzinfo is None:
                time = time.replace(tzinfo=datetime.UTC)
            return time.timestamp()
    stamp = props.timestamp
    return float(stamp) if isinstance(stamp, int) and stamp > 0 else None


def _properties(headers: dict[str, Any], original: Any) -> TableProperties:
    table = dict(headers)
    content_type = table.pop(CONTENT_TYPE, None)
    if original is not None and original.headers and CONTENT_TYPE in original.headers:
        table[CONTENT_TYPE] = content_type  # the table had its own: it keeps it
    p = original
    return TableProperties(
        content_type=text(content_type) if content_type is not None else None,
        content_encoding=getattr(p, "content_encoding", None),
        headers=table,
        delivery_mode=getattr(p, "delivery_mode", None) or 2,
        priority=getattr(p, "priority", None),
        correlation_id=getattr(p, "correlation_id", None),
        reply_to=getattr(p, "reply_to", None),
        message_id=getattr(p, "message_id", None),
        timestamp=getattr(p, "timestamp", None),
        type=getattr(p, "type", None),
        app_id=getattr(p, "app_id", None),
    )


def _item(key: str, letter: DeadLetter, msg: Message[bytes]) -> Item:
    return (key, msg.payload, _properties(msg.headers, letter.handle[1]))
