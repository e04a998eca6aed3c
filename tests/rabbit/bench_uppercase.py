"""Throughput of a consume-process-produce uppercase pipeline: through the rabbit binder (the
real app runtime, in-process) vs a hand-written pika loop with the same guarantees
(persistent messages, mandatory publishes, pipelined publisher confirms, inputs acknowledged
with one multiple-ack once their outputs are confirmed, the same prefetch).

Not a test: ``.venv/bin/python -m tests.rabbit.bench_uppercase [N] [ROUNDS] [PREFETCH]``
against the local broker. Both runs start with N messages waiting in the input queue and end
when N outputs sit in the output queue.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import sys
import time
import types
import uuid
from typing import Any

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from binder_core import app_config
from binder_core.config import load_config
from binder_core.message import Message
from binder_core.plugins import load_plugins
from binder_core.properties import ProducerProperties
from binder_core.runtime import App
from binder_core.spi import ProducerSpec
from binders.rabbit.binder import RabbitBinder
from binders.rabbit.settings import RabbitEnvironment

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PAYLOAD = b"the quick brown fox jumps over the lazy dog " * 2 + b"0123456789"  # 98 bytes


def depth(queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


def delete(names: list[str]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        ch = conn.channel()
        for name in names:
            ch.queue_delete(f"{name}.bench")
            ch.queue_delete(f"{name}.bench.dlq")
            ch.exchange_delete(name)
    finally:
        conn.close()


async def fill(source: str, sink: str, n: int) -> None:
    """N messages in <source>.bench; an empty <sink>.bench bound to the sink exchange."""
    binder = RabbitBinder("fill", RabbitEnvironment.model_validate({"uri": URL}))
    await binder.start()
    try:
        await binder.producer(
            ProducerSpec("o", sink, ProducerProperties(required_groups=["bench"]))
        )
        producer = await binder.producer(
            ProducerSpec("i", source, ProducerProperties(required_groups=["bench"]))
        )
        for start in range(0, n, 1000):
            await producer.send(
                [
                    Message(PAYLOAD, {"contentType": "text/plain"})
                    for _ in range(min(1000, n - start))
                ]
            )
    finally:
        await binder.close()


async def until_depth(queue: str, n: int) -> float:
    while await asyncio.to_thread(depth, queue) < n:
        await asyncio.sleep(0.02)
    return time.perf_counter()


def uppercase(word: str) -> str:
    return word.upper()


async def binder_run(
    source: str, sink: str, n: int, prefetch: int, batch: int | None = None
) -> float:
    module = types.ModuleType("bench_app")
    module.uppercase = uppercase  # type: ignore[attr-defined]
    tree = {
        "stream": {
            "function": {"definition": "uppercase"},
            "default-binder": "rabbit",
            "binders": {"rabbit": {"type": "rabbit", "environment": {"uri": URL}}},
            "bindings": {
                "uppercase-in-0": {
                    "destination": source,
                    "group": "bench",
                    "content-type": "text/plain",
                },
                "uppercase-out-0": {"destination": sink, "content-type": "text/plain"},
            },
            "rabbit": {
                "bindings": {
                    "uppercase-in-0": {"consumer": {"prefetch": prefetch, "batch-size": batch}}
                }
            },
        }
    }
    registry = load_plugins()
    config = load_config(
        None, [], [], registry.binder_types, environ={}, properties=tree, read_files=False
    )
    app_config.use(config.layered)
    app = App(module, config, registry)
    t0 = time.perf_counter()
    await app.start()
    try:
        t1 = await until_depth(f"{sink}.bench", n)
    finally:
        await app.stop()
        app_config.use(None)
    return t1 - t0


async def raw_run(source: str, sink: str, n: int, prefetch: int, batch: int | None = None) -> float:
    """The hand-written loop: one connection consuming, one publishing, as the binder does."""
    loop = asyncio.get_running_loop()
    params = pika.URLParameters(URL)

    async def connect() -> Any:
        fut: asyncio.Future[Any] = loop.create_future()
        AsyncioConnection(
            params,
            on_open_callback=fut.set_result,
            on_open_error_callback=lambda c, e: fut.set_exception(e),
            custom_ioloop=loop,
        )
        return await fut

    async def channel(conn: Any) -> Any:
        fut: asyncio.Future[Any] = loop.create_future()
        conn.channel(on_open_callback=fut.set_result)
        return await fut

    t0 = time.perf_counter()
    cons_conn, pub_conn = await connect(), await connect()
    cons, pub = await channel(cons_conn), await channel(pub_conn)
    pending: collections.deque[tuple[int, int]] = collections.deque()  # (publish seq, in tag)
    seq = 0

    def on_confirm(frame: Any) -> None:
        m = frame.method
        top = None
        while pending and pending[0][0] <= m.delivery_tag:
            top = pending.popleft()[1]
            if not m.multiple:
                break
        if top is not None:
            cons.basic_ack(top, multiple=True)

    def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
        nonlocal seq
        out = body.decode().upper().encode()
        pub.basic_publish(
            sink,
            sink,
            out,
            pika.BasicProperties(
                content_type=props.content_type, delivery_mode=2, headers=props.headers
            ),
            mandatory=True,
        )
        seq += 1
        pending.append((seq, method.delivery_tag))

    ready: asyncio.Future[Any] = loop.create_future()
    pub.confirm_delivery(on_confirm, callback=ready.set_result)
    await ready
    qos: asyncio.Future[Any] = loop.create_future()
    cons.basic_qos(prefetch_count=prefetch, callback=qos.set_result)
    await qos
    cons.basic_consume(f"{source}.bench", on_message)
    t1 = await until_depth(f"{sink}.bench", n)
    cons_conn.close()
    pub_conn.close()
    return t1 - t0


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    prefetch = int(sys.argv[3]) if len(sys.argv) > 3 else 250
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else None
    results: dict[str, list[float]] = {"raw pika loop": [], "rabbit binder": []}
    cpus: dict[str, list[float]] = {"raw pika loop": [], "rabbit binder": []}
    for r in range(rounds):
        for label, run in (("raw pika loop", raw_run), ("rabbit binder", binder_run)):
            tag = uuid.uuid4().hex[:8]
            source, sink = f"bench-in-{tag}", f"bench-out-{tag}"
            await fill(source, sink, n)
            cpu = time.process_time()
            try:
                seconds = await run(source, sink, n, prefetch, batch)
            finally:
                cpu = time.process_time() - cpu
                await asyncio.to_thread(delete, [source, sink])
            results[label].append(n / seconds)
            cpus[label].append(cpu / n * 1e6)
            print(
                f"round {r + 1}: {label:14} {n / seconds:10,.0f} msg/s "
                f"{cpu / n * 1e6:6.1f} us CPU/msg",
                flush=True,
            )
    raw = statistics.median(results["raw pika loop"])
    ours = statistics.median(results["rabbit binder"])
    print(
        f"median over {rounds} rounds, {n} messages of {len(PAYLOAD)} bytes, "
        f"prefetch {prefetch}, batch-size {batch or prefetch // 2}:"
    )
    raw_cpu = statistics.median(cpus["raw pika loop"])
    our_cpu = statistics.median(cpus["rabbit binder"])
    print(f"  raw pika loop {raw:10,.0f} msg/s {raw_cpu:6.1f} us CPU/msg")
    print(f"  rabbit binder {ours:10,.0f} msg/s {our_cpu:6.1f} us CPU/msg  ({ours / raw:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
