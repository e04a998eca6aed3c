"""The memory binder against a hand-written ``asyncio.Queue`` pipeline.

The baseline moves one message at a time, as such a pipeline is usually written: bytes go
through bounded queues (1024, the memory binder's default ``buffer-size``) between tasks.
Per message, both sides do the same work: encode a ``Doc`` to JSON where a message is
produced, decode and validate it where one is consumed, and run the same user function.

- produce: a generator supplier (framework) / a loop putting encoded documents on an
  unbounded queue (baseline), ``n`` messages, until all are stored;
- consume: ``n`` messages already waiting, consumed by ``sink`` (decode, count);
- process: three stages, ``source`` -> ``uppercase`` -> ``sink``, measured from the first
  message produced to the last one consumed;
- latency: the same three stages fed at a fixed rate.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pydantic_core

from bench.app import PROBES, SOURCE, Doc, sink, uppercase
from bench.common import (
    Measure,
    Stopwatch,
    done,
    latency_measure,
    make_app,
    probed,
    running,
    since_source,
    sourced,
)
from bench.workload import CONTENT_TYPE, encoded, pool
from binder_core.kit import bind_producer
from binder_core.message import Message
from binder_core.spi import ProducerSpec

#: The memory binder's default buffer-size, and the baseline's queue bound.
BOUND = 1024

to_json = pydantic_core.to_json
from_json = Doc.model_validate_json


def _name(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


class MemorySuite:
    """Benchmark cases of the memory binder."""

    name = "memory"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def versions(self) -> dict[str, str]:
        return {}

    # -- through the framework -------------------------------------------------------------

    def partition_counts(self, scenario: str, wanted: Sequence[int]) -> list[int]:
        return [1]

    def anchors(self, scenario: str) -> tuple[str, ...]:
        return ()

    async def anchor(self, name: str, size: str, n: int, partitions: int = 1) -> Measure:
        raise ValueError(f"no anchor {name!r}")

    async def framework(
        self, scenario: str, size: str, n: int, rate: int, partitions: int = 1
    ) -> Measure:
        if scenario == "produce":
            return await self._produce(size, n)
        if scenario == "consume":
            return await self._consume(size, n)
        return await self._pipeline(size, n, rate if scenario == "latency" else 0)

    async def _produce(self, size: str, n: int) -> Measure:
        dest = _name("out")
        app = make_app(
            {
                "function": {"definition": "source"},
                "memory": {"binder": {"buffer-size": n + 1}},
                "bindings": {
                    "source-out-0": {"destination": dest, "producer": {"required-groups": ["k"]}}
                },
            }
        )
        SOURCE.set(pool(size), n)
        async with running(app):
            await asyncio.wait_for(app.suppliers_done(), 120)
            measure = since_source(n)
            kept = app.binders["memory"].broker.destination(dest).groups["k"].size  # type: ignore[attr-defined]
        if kept != n:
            raise AssertionError(f"memory produce: {kept} of {n} messages stored")
        return measure

    async def _consume(self, size: str, n: int) -> Measure:
        dest = _name("in")
        app = make_app(
            {
                "function": {"definition": "sink"},
                "memory": {"binder": {"buffer-size": n + 1}},
                "bindings": {
                    "sink-in-0": {
                        "destination": dest,
                        "group": "bench",
                        "consumer": {"auto-startup": False},
                    }
                },
            }
        )
        probe = PROBES["sink"]
        probe.reset(n)
        data = encoded(size)
        async with running(app):
            producer = await bind_producer(app.binders["memory"], ProducerSpec("fill", dest))
            for start in range(0, n, 1000):
                await producer.send(
                    [
                        Message(data[i % len(data)], {"contentType": CONTENT_TYPE})
                        for i in range(start, min(n, start + 1000))
                    ]
                )
            await app.bindings["sink-in-0"].start()
            await done(probe.done, f"{n} messages consumed")
        return probed(probe)

    async def _pipeline(self, size: str, n: int, rate: int) -> Measure:
        first, middle, last = _name("a"), _name("b"), "bench"
        app = make_app(
            {
                "function": {"definition": f"{'ticker' if rate else 'source'};uppercase;sink"},
                "bindings": {
                    f"{'ticker' if rate else 'source'}-out-0": {"destination": first},
                    "uppercase-in-0": {"destination": first, "group": last},
                    "uppercase-out-0": {"destination": middle},
                    "sink-in-0": {"destination": middle, "group": last},
                },
            }
        )
        probe = PROBES["sink"]
        probe.reset(n, timed=bool(rate))
        PROBES["uppercase"].reset(n)
        SOURCE.set(pool(size), n, rate)
        async with running(app):
            await done(probe.done, f"{n} messages through the pipeline")
        return latency_measure(probe) if rate else sourced(probe)

    # -- the hand-written pipeline ---------------------------------------------------------

    async def baseline(
        self, scenario: str, size: str, n: int, rate: int, partitions: int = 1
    ) -> Measure:
        if scenario == "produce":
            return await self._raw_produce(size, n)
        if scenario == "consume":
            return await self._raw_consume(size, n)
        return await self._raw_pipeline(size, n, rate if scenario == "latency" else 0)

    async def _raw_produce(self, size: str, n: int) -> Measure:
        docs, queue = pool(size), asyncio.Queue[bytes]()
        count = len(docs)
        watch = Stopwatch()
        for i in range(n):
            await queue.put(to_json(docs[i % count]))
        measure = watch.measure(n)
        if queue.qsize() != n:
            raise AssertionError(f"raw produce: {queue.qsize()} of {n} stored")
        return measure

    async def _raw_consume(self, size: str, n: int) -> Measure:
        data, queue = encoded(size), asyncio.Queue[bytes]()
        for i in range(n):
            queue.put_nowait(data[i % len(data)])
        probe = PROBES["sink"]
        probe.reset(n)

        async def consume() -> None:
            get = queue.get
            while True:
                sink(from_json(await get()))

        task = asyncio.get_running_loop().create_task(consume())
        try:
            await done(probe.done, f"{n} messages consumed")
        finally:
            task.cancel()
        return probed(probe)

    async def _raw_pipeline(self, size: str, n: int, rate: int) -> Measure:
        docs = pool(size)
        count = len(docs)
        first: asyncio.Queue[bytes] = asyncio.Queue(BOUND)
        second: asyncio.Queue[bytes] = asyncio.Queue(BOUND)
        probe = PROBES["sink"]
        probe.reset(n, timed=bool(rate))
        PROBES["uppercase"].reset(n)
        started = SOURCE.start()

        async def produce() -> None:
            put = first.put
            if not rate:
                for i in range(n):
                    await put(to_json(docs[i % count]))
                return
            interval = 1.0 / rate
            for i in range(n):
                delay = started + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                doc = docs[i % count].model_copy(update={"id": i, "ts": time.perf_counter()})
                await put(to_json(doc))

        async def process() -> None:
            get, put = first.get, second.put
            while True:
                await put(to_json(uppercase(from_json(await get()))))

        async def consume() -> None:
            get = second.get
            while True:
                sink(from_json(await get()))

        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[Any]] = [
            loop.create_task(produce()),
            loop.create_task(process()),
            loop.create_task(consume()),
        ]
        try:
            await done(probe.done, f"{n} messages through the raw pipeline")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return latency_measure(probe) if rate else sourced(probe)
