"""Throughput of a consume-process-produce uppercase pipeline: through the Kafka binder vs a
hand-written aiokafka loop with the same guarantees (acks=all, idempotent producer, offsets
committed once per poll after the outputs of that poll were confirmed).

Not a test: ``.venv/bin/python -m tests.kafka.bench_uppercase [N]`` against the local broker.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import types
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from binder_core.config import load_config
from binder_core.plugins import load_plugins
from binder_core.runtime import App

BOOTSTRAP = "127.0.0.1:9092"
PARTITIONS = 4
ROUNDS = 3
PAYLOAD = b"the quick brown fox jumps over the lazy dog " * 2 + b"0123456789"


async def fill(topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(n):
            futures.append(await producer.send(topic, PAYLOAD, partition=i % PARTITIONS))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_loop(source: str, sink: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    done = 0
    start = None
    try:
        while done < n:
            data = await consumer.getmany(timeout_ms=1000, max_records=500)
            if start is None and data:
                start = time.perf_counter()
            futures = []
            for records in data.values():
                for r in records:
                    futures.append(
                        await producer.send(
                            sink,
                            r.value.decode().upper().encode(),
                            headers=[("contentType", b'"text/plain"')],
                        )
                    )
            await asyncio.gather(*futures)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in data.items()})
            done += sum(len(r) for r in data.values())
        assert start is not None
        return time.perf_counter() - start
    finally:
        await consumer.stop()
        await producer.stop()


async def through_binder(source: str, sink: str, n: int) -> float:
    state: dict[str, Any] = {"count": 0, "start": None}
    finished = asyncio.Event()

    def uppercase(word: str) -> str:
        if state["start"] is None:
            state["start"] = time.perf_counter()
        state["count"] += 1
        if state["count"] >= n:
            finished.set()
        return word.upper()

    module = types.ModuleType("bench_app")
    module.uppercase = uppercase  # type: ignore[attr-defined]
    tree = {
        "stream": {
            "function": {"definition": "uppercase"},
            "default-binder": "kafka",
            "binders": {
                "kafka": {"type": "kafka", "environment": {"bootstrap-servers": BOOTSTRAP}}
            },
            "bindings": {
                "uppercase-in-0": {
                    "destination": source,
                    "group": f"binder-{uuid.uuid4().hex[:6]}",
                    "content-type": "text/plain",
                },
                "uppercase-out-0": {"destination": sink, "content-type": "text/plain"},
            },
        }
    }
    registry = load_plugins()
    config = load_config(
        None, [], [], registry.binder_types, environ={}, properties=tree, read_files=False
    )
    app = App(module, config, registry)
    await app.start()
    try:
        await finished.wait()
        binding = app.bindings["uppercase-in-0"]
        # The last batch is done once its worker is idle (its commit is part of the batch).
        for worker in binding._workers:  # type: ignore[attr-defined]
            await worker.idle.wait()
            assert not worker.pending
        end = time.perf_counter()
    finally:
        await app.stop()
    return end - float(state["start"])


async def main(n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    source = f"bench-in-{uuid.uuid4().hex[:8]}"
    topics = [source, f"bench-raw-{uuid.uuid4().hex[:8]}", f"bench-binder-{uuid.uuid4().hex[:8]}"]
    await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    try:
        await fill(source, n)
        results: dict[str, list[float]] = {"raw": [], "binder": []}
        for _ in range(ROUNDS):  # alternating, so background load hits both alike
            results["raw"].append(n / await raw_loop(source, topics[1], n))
            results["binder"].append(n / await through_binder(source, topics[2], n))
        for name, rates in results.items():
            print(
                f"{name:7s} median {statistics.median(rates):>9,.0f} msg/s   runs: "
                + "  ".join(f"{r:,.0f}" for r in rates)
            )
        ratio = statistics.median(results["binder"]) / statistics.median(results["raw"])
        print(f"binder / raw (medians): {ratio:.2f}")
    finally:
        await admin.delete_topics(topics)
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
