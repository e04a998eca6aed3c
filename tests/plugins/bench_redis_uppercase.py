"""Throughput of a consume-process-produce uppercase pipeline on Redis Streams: through the
redis binder (the real app runtime, in-process) vs a hand-written redis-py loop with the
same guarantees (XREADGROUP batches of the same size, outputs XADDed in one pipeline and
confirmed before the input batch is acknowledged with one XACK).

Not a test: ``.venv/bin/python -m tests.plugins.bench_redis_uppercase [N] [ROUNDS] [BATCH]``
against the local Redis. Both runs start with N entries waiting in the input stream and end
when N outputs are in the output stream.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import types
import uuid

import redis.asyncio as aioredis

from binder_core import app_config
from binder_core.config import load_config
from binder_core.plugins import load_plugins
from binder_core.runtime import App

URL = "redis://127.0.0.1:6379/0"
PREFIX = "bench:"
PAYLOAD = b"the quick brown fox jumps over the lazy dog " * 2 + b"0123456789"  # 98 bytes


async def fill(client: aioredis.Redis, source: str, n: int) -> None:
    """N entries in the source stream, group ``bench`` reading from the start."""
    await client.xgroup_create(PREFIX + source, "bench", id="0", mkstream=True)
    for i in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, n - i)):
            pipe.xadd(PREFIX + source, {b"payload": PAYLOAD, b"s:contentType": b"text/plain"})
        await pipe.execute()


async def until_length(client: aioredis.Redis, sink: str, n: int) -> float:
    while await client.xlen(PREFIX + sink) < n:
        await asyncio.sleep(0.01)
    return time.perf_counter()


def uppercase(word: str) -> str:
    return word.upper()


async def binder_run(client: aioredis.Redis, source: str, sink: str, n: int, batch: int) -> float:
    module = types.ModuleType("bench_app")
    module.uppercase = uppercase  # type: ignore[attr-defined]
    tree = {
        "stream": {
            "function": {"definition": "uppercase"},
            "default-binder": "redis",
            "binders": {
                "redis": {"type": "redis", "environment": {"url": URL, "key-prefix": PREFIX}}
            },
            "bindings": {
                "uppercase-in-0": {
                    "destination": source,
                    "group": "bench",
                    "content-type": "text/plain",
                },
                "uppercase-out-0": {"destination": sink, "content-type": "text/plain"},
            },
            "redis": {"bindings": {"uppercase-in-0": {"consumer": {"batch-size": batch}}}},
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
        t1 = await until_length(client, sink, n)
    finally:
        await app.stop()
        app_config.use(None)
    return t1 - t0


async def raw_run(client: aioredis.Redis, source: str, sink: str, n: int, batch: int) -> float:
    """The hand-written loop: read a batch, XADD its outputs in one pipeline, XACK."""
    t0 = time.perf_counter()
    reader = aioredis.Redis.from_url(URL, protocol=2)
    writer = aioredis.Redis.from_url(URL, protocol=2)
    done = 0
    while done < n:
        reply = await reader.xreadgroup(
            "bench", "raw", {PREFIX + source: ">"}, count=batch, block=1000
        )
        for _stream, entries in reply:
            pipe = writer.pipeline(transaction=False)
            for _id, fields in entries:
                out = fields[b"payload"].decode().upper().encode()
                pipe.xadd(PREFIX + sink, {b"payload": out, b"s:contentType": b"text/plain"})
            await pipe.execute()
            await reader.xack(PREFIX + source, "bench", *[e[0] for e in entries])
            done += len(entries)
    t1 = await until_length(client, sink, n)
    await reader.aclose()
    await writer.aclose()
    return t1 - t0


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    client = aioredis.Redis.from_url(URL, protocol=2)
    labels = ("raw redis-py loop", "redis binder")
    results: dict[str, list[float]] = {label: [] for label in labels}
    cpus: dict[str, list[float]] = {label: [] for label in labels}
    try:
        for r in range(rounds):
            for label, run in zip(labels, (raw_run, binder_run), strict=True):
                tag = uuid.uuid4().hex[:8]
                source, sink = f"in-{tag}", f"out-{tag}"
                await fill(client, source, n)
                cpu = time.process_time()
                try:
                    seconds = await run(client, source, sink, n, batch)
                finally:
                    cpu = time.process_time() - cpu
                    await client.delete(PREFIX + source, PREFIX + sink)
                results[label].append(n / seconds)
                cpus[label].append(cpu / n * 1e6)
                print(
                    f"round {r + 1}: {label:17} {n / seconds:10,.0f} msg/s "
                    f"{cpu / n * 1e6:6.1f} us CPU/msg",
                    flush=True,
                )
    finally:
        await client.aclose()
    raw, ours = (statistics.median(results[label]) for label in labels)
    raw_cpu, our_cpu = (statistics.median(cpus[label]) for label in labels)
    print(f"median over {rounds} rounds, {n} messages of {len(PAYLOAD)} bytes, batch {batch}:")
    print(f"  raw redis-py loop {raw:10,.0f} msg/s {raw_cpu:6.1f} us CPU/msg")
    print(f"  redis binder      {ours:10,.0f} msg/s {our_cpu:6.1f} us CPU/msg  ({ours / raw:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
