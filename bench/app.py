"""The benchmark's user app: plain functions, bound by configuration like any app.

The functions take and return a pydantic model, so every message is really decoded from
JSON, validated, changed and encoded again; the hand-written baselines call the very same
``uppercase`` and the same pydantic calls, so both sides do the same work per message.

``PROBES`` is how the harness learns when the first and the last message passed a point of
the pipeline; both sides count through it, at the same place, at the same cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

from pydantic import BaseModel


class Item(BaseModel):
    """One line of an order."""

    sku: str
    qty: int
    price: float
    note: str


class Doc(BaseModel):
    """The payload: about 100 bytes of JSON without items, about 4 KiB with 20 of them."""

    id: int
    ts: float
    symbol: str
    text: str
    items: list[Item]


class Probe:
    """Counts messages passing one point, and remembers when the first and the
    ``target``-th passed; optionally their end-to-end latency (``ts`` is a
    ``time.perf_counter`` reading: producer and consumer share the process)."""

    __slots__ = (
        "count",
        "done",
        "first",
        "first_cpu",
        "last",
        "last_cpu",
        "latencies",
        "target",
        "timed",
    )

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, target: int, timed: bool = False) -> None:
        """Start counting afresh towards ``target``."""
        self.count = 0
        self.target = target
        self.first = self.first_cpu = 0.0
        self.last = self.last_cpu = 0.0
        self.timed = timed
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    def hit(self, doc: Doc) -> None:
        """One more message passed."""
        n = self.count = self.count + 1
        if n == 1:
            self.first, self.first_cpu = time.perf_counter(), time.process_time()
        if self.timed:
            self.latencies.append(time.perf_counter() - doc.ts)
        if n == self.target:
            self.last, self.last_cpu = time.perf_counter(), time.process_time()
            self.done.set()


class Source:
    """What the suppliers emit: ``count`` documents from a pool, or a fixed rate."""

    def __init__(self) -> None:
        self.pool: list[Doc] = []
        self.count = 0
        self.rate = 0.0
        self.started = self.started_cpu = 0.0

    def set(self, pool: list[Doc], count: int, rate: float = 0.0) -> None:
        """Emit ``count`` documents taken round-robin from ``pool`` (at ``rate`` per
        second, for ``ticker``)."""
        self.pool, self.count, self.rate = pool, count, rate
        self.started = self.started_cpu = 0.0

    def start(self) -> float:
        """Note the start (wall clock and process CPU); returns the wall clock."""
        self.started, self.started_cpu = time.perf_counter(), time.process_time()
        return self.started


PROBES = {"uppercase": Probe(), "sink": Probe()}
SOURCE = Source()


def source() -> Iterator[Doc]:
    """A generator supplier: emits ``SOURCE.count`` documents as fast as they are taken."""
    pool, n = SOURCE.pool, len(SOURCE.pool)
    SOURCE.start()
    for i in range(SOURCE.count):
        yield pool[i % n]


async def ticker() -> AsyncIterator[Doc]:
    """An async generator supplier: emits at a fixed rate, each document stamped with the
    time it was due."""
    pool, n = SOURCE.pool, len(SOURCE.pool)
    interval = 1.0 / SOURCE.rate
    start = SOURCE.start()
    for i in range(SOURCE.count):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield pool[i % n].model_copy(update={"id": i, "ts": time.perf_counter()})


def uppercase(doc: Doc) -> Doc:
    """The processor: shout the text."""
    doc.text = doc.text.upper()
    PROBES["uppercase"].hit(doc)
    return doc


def sink(doc: Doc) -> None:
    """The consumer at the end of a pipeline."""
    PROBES["sink"].hit(doc)
