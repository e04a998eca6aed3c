"""Payloads, sizes and the shape of one benchmark run."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pydantic_core

from bench.app import Doc, Item

#: Distinct documents cycled through; enough that nothing is a cache hit by accident.
POOL = 256

SIZES = ("small", "medium")

SCENARIOS = ("produce", "consume", "process", "latency")
TITLES = {
    "produce": "produce-only",
    "consume": "consume-only",
    "process": "consume-process-produce",
    "latency": "end-to-end latency",
}

#: Spring's header for the payload's type, as the framework writes it on every output.
CONTENT_TYPE = "application/json"


_NOTE = (
    "gift wrap; leave at the back door if nobody answers; fragile, this side up; "
    "call ahead on weekdays between nine and five, never on Sundays; thanks!"
)


@cache
def pool(size: str) -> list[Doc]:
    """``POOL`` documents of about 100 bytes (small) or 4 KiB (medium) of JSON."""
    lines = 20 if size == "medium" else 0
    return [
        Doc(
            id=10_000 + i,
            ts=0.0,
            symbol=("ACME", "GLOBEX", "INITECH", "UMBRELLA")[i % 4],
            text="the quick brown fox jumps over a lazy dog",
            items=[
                Item(sku=f"SKU-{i * 100 + j:06d}", qty=j % 9 + 1, price=12.5 + j, note=_NOTE)
                for j in range(lines)
            ],
        )
        for i in range(POOL)
    ]


@cache
def encoded(size: str) -> list[bytes]:
    """The same pool as JSON bytes (what producers put on the wire)."""
    return [pydantic_core.to_json(d) for d in pool(size)]


def payload_bytes(size: str) -> int:
    """Average encoded size of a document of ``size``."""
    data = encoded(size)
    return round(sum(map(len, data)) / len(data))


@dataclass(frozen=True)
class Plan:
    """How much one measured run moves."""

    messages: dict[str, dict[str, int]]  # binder -> size -> messages per throughput run
    repeats: int
    rate: int  # messages per second in the latency runs
    latency_seconds: float
    #: Changelog records a store restores from in the state part (Kafka).
    state_records: int = 200_000
    #: Partitions of the input and output topics of Kafka's consume-process-produce runs.
    partitions: tuple[int, ...] = (1, 4, 8)

    def count(self, binder: str, size: str) -> int:
        """Messages per throughput run for ``binder`` and ``size``."""
        return self.messages[binder][size]


FULL = Plan(
    messages={
        "memory": {"small": 100_000, "medium": 20_000},
        # Enough that the Java anchors run a few seconds with their JIT warmed up.
        "kafka": {"small": 60_000, "medium": 10_000},
        "rabbit": {"small": 20_000, "medium": 5_000},
    },
    repeats=3,
    rate=1000,
    latency_seconds=3.0,
)

QUICK = Plan(
    messages={
        "memory": {"small": 30_000, "medium": 5_000},
        "kafka": {"small": 10_000, "medium": 3_000},
        "rabbit": {"small": 5_000, "medium": 2_000},
    },
    repeats=2,
    rate=1000,
    latency_seconds=1.0,
    state_records=50_000,
)

#: For the smoke test: proves every path runs, measures nothing worth keeping.
TINY = Plan(
    messages={
        "memory": {"small": 500, "medium": 100},
        "kafka": {"small": 300, "medium": 100},
        "rabbit": {"small": 300, "medium": 100},
    },
    repeats=1,
    rate=500,
    latency_seconds=0.2,
    state_records=2_000,
    partitions=(1,),
)
