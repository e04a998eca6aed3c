"""The RabbitMQ binder against a plain pika loop with the same guarantees.

Both sides: persistent messages (``delivery_mode=2``) published ``mandatory`` to a durable
topic exchange with routing key = destination, ``content_type`` application/json, publisher
confirms pipelined (never one round trip per message), manual acknowledgements with
``multiple=True``, the binder's default prefetch (250), one connection for consuming and
one for publishing (as the binder does). An input is acknowledged only once the output it
caused is confirmed.

- produce: ``n`` documents encoded and published until all are confirmed (the baseline
  keeps at most 512 unconfirmed, the framework's supplier two batches of 256);
- consume: ``n`` messages waiting in the group's queue, decoded by ``sink``;
- process: ``uppercase`` from that queue to another exchange (and its queue);
- latency: ``ticker`` -> ``uppercase`` -> ``sink`` through two exchanges at a fixed rate.

Consume-process-produce also runs against a limit anchor (``bench.anchors``): the same
loop written with RabbitMQ's own Java client (``amqp-client``), with the same prefetch,
persistence, mandatory publishing and ack-after-confirm.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pydantic_core
from pika.adapters.asyncio_connection import AsyncioConnection

from bench import anchors
from bench.app import PROBES, SOURCE, Doc, sink, uppercase
from bench.common import (
    RUN_TIMEOUT,
    Measure,
    Stopwatch,
    Unavailable,
    done,
    latency_measure,
    make_app,
    probed,
    running,
    since_source,
    until,
)
from bench.workload import CONTENT_TYPE, encoded, pool

URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PREFETCH = 250  # the binder's default
WINDOW = 512  # most unconfirmed publishes of the baseline's producer
PROPS = pika.BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2)

to_json = pydantic_core.to_json
from_json = Doc.model_validate_json


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


class Amqp:
    """One pika connection on the running loop, with awaitable calls."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls) -> Amqp:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[Any] = loop.create_future()

        def failed(_conn: Any, exc: BaseException) -> None:
            if not opened.done():
                opened.set_exception(ConnectionError(str(exc)))

        AsyncioConnection(
            pika.URLParameters(URL),
            on_open_callback=opened.set_result,
            on_open_error_callback=failed,
            custom_ioloop=loop,
        )
        return cls(await asyncio.wait_for(opened, 10))

    async def channel(self) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.conn.channel(on_open_callback=fut.set_result)
        return await asyncio.wait_for(fut, 10)

    @staticmethod
    async def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A pika channel method that takes ``callback``, awaited."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        method(*args, callback=lambda frame: _settle(fut, frame), **kwargs)
        return await asyncio.wait_for(fut, 10)

    async def close(self) -> None:
        if self.conn.is_open:
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.conn.add_on_close_callback(lambda *_: _settle(closed, None))
            self.conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed, 10)


class Confirms:
    """A publishing channel in confirm mode: tracks unconfirmed publishes, and calls
    ``on_progress(tag)`` with the highest tag below which everything is confirmed."""

    def __init__(self, chan: Any) -> None:
        self.chan = chan
        self.seq = 0
        self.open: collections.deque[int] = collections.deque()
        self._singles: set[int] = set()
        self.failed: list[str] = []
        self.progress = asyncio.Event()
        self.on_progress: Callable[[int], None] | None = None

    @classmethod
    async def open_on(cls, amqp: Amqp) -> Confirms:
        self = cls(await amqp.channel())
        self.chan.add_on_return_callback(self._returned)
        await Amqp.call(self.chan.confirm_delivery, self._confirmed)
        return self

    def publish(self, exchange: str, key: str, body: bytes) -> int:
        self.chan.basic_publish(exchange, key, body, PROPS, mandatory=True)
        self.seq += 1
        self.open.append(self.seq)
        return self.seq

    def _returned(self, _ch: Any, method: Any, _props: Any, _body: bytes) -> None:
        self.failed.append(f"returned: {method.reply_text}")

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        if method.NAME != "Basic.Ack":
            self.failed.append("nacked")
        tag, open_ = method.delivery_tag, self.open
        if not method.multiple:
            self._singles.add(tag)
        top = 0
        while open_ and (open_[0] <= tag if method.multiple else open_[0] in self._singles):
            top = open_.popleft()
            self._singles.discard(top)
        if top:
            if self.on_progress is not None:
                self.on_progress(top)
            self.progress.set()

    async def below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` publishes are unconfirmed."""
        while len(self.open) >= limit:
            self.progress.clear()
            await asyncio.wait_for(self.progress.wait(), 30)

    def check(self) -> None:
        if self.failed:
            raise AssertionError(f"baseline publish failed: {self.failed[0]}")


class RabbitSuite:
    """Benchmark cases of the RabbitMQ binder."""

    name = "rabbit"

    def __init__(self) -> None:
        self._admin: Amqp | None = None
        self._chan: Any = None
        self._exchanges: list[str] = []
        self._queues: list[str] = []
        self._version = "unknown"

    async def open(self) -> None:
        try:
            self._admin = await Amqp.connect()
        except Exception as exc:
            raise Unavailable(
                f"RabbitMQ at 127.0.0.1:5672 does not answer ({type(exc).__name__}); "
                "start it with scripts/brokers up rabbit"
            ) from None
        self._chan = await self._admin.channel()
        props = self._admin.conn.server_properties or {}
        version = props.get("version", b"unknown")
        self._version = version.decode() if isinstance(version, bytes) else str(version)

    async def close(self) -> None:
        if self._admin is None:
            return
        for queue in self._queues:
            with contextlib.suppress(Exception):
                await Amqp.call(self._chan.queue_delete, queue)
        for exchange in self._exchanges:
            with contextlib.suppress(Exception):
                await Amqp.call(self._chan.exchange_delete, exchange)
        await self._admin.close()

    def versions(self) -> dict[str, str]:
        return {"rabbitmq broker": self._version}

    # -- helpers ---------------------------------------------------------------------------

    def _names(self, kind: str, group: str = "bench") -> tuple[str, str]:
        """A fresh destination and its group's queue (Spring's ``<destination>.<group>``)."""
        exchange = f"bench-rabbit-{kind}-{_tag()}"
        queue = f"{exchange}.{group}"
        self._exchanges.append(exchange)
        self._queues += [queue, f"{queue}.dlq"]
        return exchange, queue

    async def _declare(self, exchange: str, queue: str) -> None:
        """The baseline's own topology: a durable topic exchange and a bound durable queue."""
        await Amqp.call(self._chan.exchange_declare, exchange, "topic", durable=True)
        await Amqp.call(self._chan.queue_declare, queue, durable=True)
        await Amqp.call(self._chan.queue_bind, queue, exchange, routing_key="#")

    async def _depth(self, queue: str) -> int:
        frame = await Amqp.call(self._chan.queue_declare, queue, passive=True)
        return int(frame.method.message_count)

    async def _expect(self, queue: str, n: int, what: str) -> None:
        async def complete() -> bool:
            return await self._depth(queue) >= n

        await until(complete, f"{n} messages in {queue} ({what})", timeout=30, every=0.05)
        found = await self._depth(queue)
        if found != n:
            raise AssertionError(f"{what}: {found} messages in {queue}, expected {n}")

    async def _fill(self, exchange: str, queue: str, size: str, n: int) -> None:
        """``n`` messages into ``queue`` through ``exchange`` (not timed)."""
        amqp = await Amqp.connect()
        try:
            pub = await Confirms.open_on(amqp)
            data = encoded(size)
            for i in range(n):
                pub.publish(exchange, exchange, data[i % len(data)])
                if len(pub.open) >= 2000:
                    await pub.below(1000)
            await pub.below(1)
            pub.check()
        finally:
            await amqp.close()
        await self._expect(queue, n, "fill")

    @staticmethod
    def _stream(definition: str, bindings: dict[str, Any]) -> dict[str, Any]:
        return {
            "function": {"definition": definition},
            "default-binder": "rabbit",
            "binders": {"rabbit": {"type": "rabbit", "environment": {"uri": URL}}},
            "bindings": bindings,
        }

    # -- through the framework -------------------------------------------------------------

    def partition_counts(self, scenario: str, wanted: Sequence[int]) -> list[int]:
        return [1]  # a queue has no partitions

    def anchors(self, scenario: str) -> tuple[str, ...]:
        return ("java",) if scenario == "process" else ()

    async def framework(
        self, scenario: str, size: str, n: int, rate: int, partitions: int = 1
    ) -> Measure:
        if scenario == "produce":
            out, kept = self._names("out")
            producer = {"required-groups": ["bench"]}
            app = make_app(
                self._stream("source", {"source-out-0": {"destination": out, "producer": producer}})
            )
            SOURCE.set(pool(size), n)
            async with running(app):
                await asyncio.wait_for(app.suppliers_done(), RUN_TIMEOUT)
                measure = since_source(n)
            await self._expect(kept, n, "framework produce")
            return measure
        if scenario in ("consume", "process"):
            source, queue = self._names("in")
            fn = "sink" if scenario == "consume" else "uppercase"
            bindings: dict[str, Any] = {
                f"{fn}-in-0": {
                    "destination": source,
                    "group": "bench",
                    "consumer": {"auto-startup": False},
                }
            }
            kept = ""
            if scenario == "process":
                out, kept = self._names("out")
                bindings["uppercase-out-0"] = {
                    "destination": out,
                    "producer": {"required-groups": ["bench"]},
                }
            app = make_app(self._stream(fn, bindings))
            probe = PROBES[fn]
            probe.reset(n)
            async with running(app):
                await self._fill(source, queue, size, n)
                await app.bindings[f"{fn}-in-0"].start()
                await done(probe.done, f"{n} messages through {fn}")
            if kept:
                await self._expect(kept, n, "framework process")
            return probed(probe)
        first, _ = self._names("a")
        second, _ = self._names("b")
        app = make_app(
            self._stream(
                "ticker;uppercase;sink",
                {
                    "ticker-out-0": {"destination": first},
                    "uppercase-in-0": {"destination": first, "group": "bench"},
                    "uppercase-out-0": {"destination": second},
                    "sink-in-0": {"destination": second, "group": "bench"},
                },
            )
        )
        probe = PROBES["sink"]
        probe.reset(n, timed=True)
        PROBES["uppercase"].reset(n)
        SOURCE.set(pool(size), n, rate)
        async with running(app):
            await done(probe.done, f"{n} messages through the pipeline")
        return latency_measure(probe)

    # -- the hand-written loops ------------------------------------------------------------

    async def baseline(
        self, scenario: str, size: str, n: int, rate: int, partitions: int = 1
    ) -> Measure:
        if scenario == "produce":
            return await self._raw_produce(size, n)
        if scenario == "consume":
            return await self._raw_consume(size, n)
        if scenario == "process":
            return await self._raw_process(size, n)
        return await self._raw_latency(size, n, rate)

    async def anchor(self, name: str, size: str, n: int, partitions: int = 1) -> Measure:
        """The Java client's consume-process-produce loop (``bench.anchors``)."""
        if name != "java":
            raise ValueError(f"no anchor {name!r}")
        source, queue = self._names("java-in")
        out, kept = self._names("java-out")
        warm_in, warm_queue = self._names("java-warmup-in")
        warm_out, warm_kept = self._names("java-warmup-out")
        for exchange, bound in ((source, queue), (out, kept), (warm_in, warm_queue)):
            await self._declare(exchange, bound)
        await self._declare(warm_out, warm_kept)
        warmup = min(n, anchors.WARMUP // 2)
        await self._fill(warm_in, warm_queue, size, warmup)
        await self._fill(source, queue, size, n)
        measure = await anchors.rabbit_loop(
            URL, queue, out, PREFETCH, n, warm_queue, warm_out, warmup
        )
        await self._expect(kept, n, "Java client process")
        left = await self._depth(queue)
        if left:
            raise AssertionError(f"Java client process: {left} inputs not acknowledged")
        return measure

    async def _raw_produce(self, size: str, n: int) -> Measure:
        out, kept = self._names("raw-out")
        await self._declare(out, kept)
        docs = pool(size)
        count = len(docs)
        amqp = await Amqp.connect()
        try:
            pub = await Confirms.open_on(amqp)
            watch = Stopwatch()
            for i in range(n):
                pub.publish(out, out, to_json(docs[i % count]))
                if len(pub.open) >= WINDOW:
                    await pub.below(WINDOW)
            await pub.below(1)
            measure = watch.measure(n)
            pub.check()
        finally:
            await amqp.close()
        await self._expect(kept, n, "raw produce")
        return measure

    async def _subscribe(self, amqp: Amqp, queue: str, on_message: Callable[..., None]) -> Any:
        chan = await amqp.channel()
        await Amqp.call(chan.basic_qos, prefetch_count=PREFETCH)
        chan.basic_consume(queue, on_message, auto_ack=False)
        return chan

    async def _raw_consume(self, size: str, n: int) -> Measure:
        source, queue = self._names("raw-in")
        await self._declare(source, queue)
        await self._fill(source, queue, size, n)
        probe = PROBES["sink"]
        probe.reset(n)
        every = PREFETCH // 2
        amqp = await Amqp.connect()
        try:
            count = 0

            def on_message(chan: Any, method: Any, _props: Any, body: bytes) -> None:
                nonlocal count
                sink(from_json(body))
                count += 1
                if count % every == 0 or count == n:
                    chan.basic_ack(method.delivery_tag, multiple=True)

            await self._subscribe(amqp, queue, on_message)
            await done(probe.done, f"{n} messages consumed")
        finally:
            await amqp.close()
        return probed(probe)

    async def _processor(
        self, source_queue: str, out: str, consumer: Amqp, publisher: Amqp
    ) -> None:
        """Consume, uppercase, publish; acknowledge inputs up to the last confirmed output."""
        pub = await Confirms.open_on(publisher)
        pending: collections.deque[tuple[int, int]] = collections.deque()  # (publish, delivery)
        chan: Any = None

        def on_progress(confirmed: int) -> None:
            top = 0
            while pending and pending[0][0] <= confirmed:
                top = pending.popleft()[1]
            if top and chan.is_open:
                chan.basic_ack(top, multiple=True)

        pub.on_progress = on_progress

        def on_message(_chan: Any, method: Any, _props: Any, body: bytes) -> None:
            seq = pub.publish(out, out, to_json(uppercase(from_json(body))))
            pending.append((seq, method.delivery_tag))

        chan = await self._subscribe(consumer, source_queue, on_message)

    async def _raw_process(self, size: str, n: int) -> Measure:
        source, queue = self._names("raw-in")
        out, kept = self._names("raw-out")
        await self._declare(source, queue)
        await self._declare(out, kept)
        await self._fill(source, queue, size, n)
        probe = PROBES["uppercase"]
        probe.reset(n)
        consumer, publisher = await Amqp.connect(), await Amqp.connect()
        try:
            await self._processor(queue, out, consumer, publisher)
            await done(probe.done, f"{n} messages processed")
            await self._expect(kept, n, "raw process")
        finally:
            await publisher.close()
            await consumer.close()
        return probed(probe)

    async def _raw_latency(self, size: str, n: int, rate: int) -> Measure:
        first, q1 = self._names("raw-a")
        second, q2 = self._names("raw-b")
        await self._declare(first, q1)
        await self._declare(second, q2)
        probe = PROBES["sink"]
        probe.reset(n, timed=True)
        PROBES["uppercase"].reset(n)
        consumer, publisher = await Amqp.connect(), await Amqp.connect()
        try:
            await self._processor(q1, second, consumer, publisher)

            def on_message(chan: Any, method: Any, _props: Any, body: bytes) -> None:
                sink(from_json(body))
                chan.basic_ack(method.delivery_tag)

            await self._subscribe(consumer, q2, on_message)
            pub = await Confirms.open_on(publisher)
            docs = pool(size)
            count = len(docs)
            interval = 1.0 / rate
            started = time.perf_counter()
            for i in range(n):
                delay = started + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                doc = docs[i % count].model_copy(update={"id": i, "ts": time.perf_counter()})
                pub.publish(first, first, to_json(doc))
                if len(pub.open) >= WINDOW:
                    await pub.below(WINDOW)
            await pub.below(1)
            pub.check()
            await done(probe.done, f"{n} messages through the raw pipeline")
        finally:
            await publisher.close()
            await consumer.close()
        return latency_measure(probe)
