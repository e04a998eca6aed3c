"""How fast a store is restored from its Kafka changelog, next to a plain aiokafka reader
of the same topic.

The changelog holds ``records`` changes of ``keys`` keys over four partitions (JSON
values, as the core writes them). The framework side is what an instance does when it is
assigned partitions: the binder replays the changelog (read_committed, from the
beginning to the end it had when it began) into the store, in memory or in an SQLite file
(``stream.state.backend``), which keeps each value's bytes until it is read. The
baseline reads the same records with a plain consumer to the same end and keeps the last
value per key as bytes: the client's own limit.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel, TypeAdapter

from bench.common import Unavailable
from bench.kafka import BOOTSTRAP
from binder_core.committed import InSqlite
from binder_core.keepers import StateKeeper
from binder_core.state import Store

PARTITIONS = 4


class Position(BaseModel):
    """What a store keeps per key in the benchmark: a small record."""

    symbol: str
    price: float
    count: int


async def measure(records: int, keys: int, repeats: int) -> dict[str, Any]:
    """Records per second of each side, per repeat, and their medians."""
    from binders.kafka.binder import KafkaBinder
    from binders.kafka.settings import KafkaEnvironment

    topic = f"bench-changelog-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        await admin.start()
    except Exception as exc:
        raise Unavailable(f"Kafka at {BOOTSTRAP}: {exc}") from None
    try:
        await admin.create_topics(
            [NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})]
        )
        await _fill(topic, records, keys)
        env = KafkaEnvironment.model_validate({"bootstrap-servers": BOOTSTRAP})
        binder = KafkaBinder("bench", env)
        await binder.start()
        framework: list[float] = []
        sqlite: list[float] = []
        baseline: list[float] = []
        try:
            with tempfile.TemporaryDirectory(prefix="bench-state-") as directory:
                for _ in range(repeats):
                    framework.append(await _restore(binder, topic, records, keys, None))
                    on_disk = InSqlite(Path(directory) / "s.sqlite", _encode)
                    sqlite.append(await _restore(binder, topic, records, keys, on_disk))
                    baseline.append(await _plain(topic, records))
        finally:
            await binder.close()
        return {
            "records": records,
            "keys": keys,
            "partitions": PARTITIONS,
            "framework_records_per_s": framework,
            "sqlite_records_per_s": sqlite,
            "baseline_records_per_s": baseline,
            "framework_median": _median(framework),
            "sqlite_median": _median(sqlite),
            "baseline_median": _median(baseline),
        }
    finally:
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()


_encode = TypeAdapter(Position).dump_json


async def _restore(
    binder: Any, topic: str, records: int, keys: int, committed: InSqlite | None
) -> float:
    """One restore of every partition into a new store (in memory, or in ``committed``)."""
    store: Store[Position] = Store("bench.positions", Position, committed)
    keeper = StateKeeper("bench", binder, {store.name: (store, topic)})
    try:
        done = await keeper.restore(range(PARTITIONS))
        assert done.records == records, (done.records, records)
        assert store.size() == keys
        return done.rate
    finally:
        store.close()


async def _fill(topic: str, records: int, keys: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for i in range(records):
            key = f"S{i % keys}"
            value = Position(symbol=key, price=100.0 + i % 97, count=i).model_dump_json()
            pending.append(
                await producer.send(
                    topic, value.encode(), key=key.encode(), partition=i % PARTITIONS
                )
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _plain(topic: str, records: int) -> float:
    """A plain consumer reading the topic to its end, last value per key as bytes."""
    started = time.perf_counter()  # from the client's start, as a restore is timed
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[bytes, bytes] = {}
        count = 0
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True)):
                break
            data = await consumer.getmany(timeout_ms=200, max_records=2000)
            for batch in data.values():
                for r in batch:
                    latest[r.key] = r.value
                count += len(batch)
        took = time.perf_counter() - started
        assert count == records, (count, records)
        return count / took
    finally:
        await consumer.stop()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0
