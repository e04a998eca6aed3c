"""The Kafka binder against a plain aiokafka loop with the same guarantees.

Both sides use the binder's default client settings: ``acks=all`` with the idempotent
producer, 16 KiB batches, no linger, 500 records per poll, offsets committed by hand once
per poll after the outputs of that poll were confirmed. Topics have one partition, so the
partitioner plays no part. The baseline writes the same record headers the binder writes
(``contentType`` and Spring's ``spring_json_header_types``), so both put the same bytes on
the wire.

- produce: ``n`` documents encoded and sent, until Kafka confirmed all (framework: a
  generator supplier; baseline: ``send`` each, then await every future);
- consume: ``n`` records waiting in a topic, decoded by ``sink`` (fresh group each run);
- process: ``uppercase`` from that topic to a new one; the baseline is getmany, decode,
  call, encode, send, await the futures, commit;
- latency: ``ticker`` -> ``uppercase`` -> ``sink`` over two topics at a fixed rate.

Consume-process-produce also runs with input and output topics of 4 and 8 partitions
(``--partitions``), and against the limit anchors (``bench.anchors``): the same loop
written with Kafka's own Java client, and Kafka's own producer and consumer perf tools.
Every record of a run's input carries its own ``id`` (0 .. n-1) and was written to
partition ``id % partitions``; after each consume-process-produce run, on every side, the
output topic is read back and must hold each id exactly once, and within each output
partition the ids of one input partition must come in their input order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic_core
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

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
from bench.workload import payload_bytes, pool

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")

#: What the Kafka binder writes for ``contentType: application/json`` (Spring's mapping).
HEADERS = [
    ("contentType", b'"application/json"'),
    ("spring_json_header_types", b'{"contentType":"java.lang.String"}'),
]

#: The binder's producer defaults, given to the baseline's producer too.
PRODUCER = {"acks": "all", "enable_idempotence": True, "max_batch_size": 16384, "linger_ms": 0}
MAX_RECORDS = 500  # the binder's max-poll-records default

#: The limit anchors run for consume-process-produce: the Java client's loop, and Kafka's
#: own producer and consumer perf tools.
ANCHORS = ("java", "perf-produce", "perf-consume")

to_json = pydantic_core.to_json
from_json = Doc.model_validate_json


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _broker_version() -> str:
    """Kafka's version, from the jars the project's broker script installed."""
    root = Path(__file__).resolve().parent.parent / ".brokers" / "kafka"
    found = sorted(root.glob("libs-*")) if root.is_dir() else []
    return found[-1].name.removeprefix("libs-") if found else "unknown"


class KafkaSuite:
    """Benchmark cases of the Kafka binder."""

    name = "kafka"

    def __init__(self) -> None:
        self._admin: Any = None
        self._offsets: Any = None  # a group-less consumer that reads end offsets
        self._topics: list[str] = []
        self._inputs: dict[tuple[str, int, int], str] = {}
        self._counts: dict[str, int] = {}  # partitions of the topics created here

    async def open(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 10)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await admin.close()
            raise Unavailable(
                f"Kafka at {BOOTSTRAP} does not answer ({type(exc).__name__}); "
                "start it with scripts/brokers up kafka"
            ) from None
        self._admin = admin
        self._offsets = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
        await self._offsets.start()

    async def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                # The framework's consumer bindings also made dead-letter topics
                # (error.<destination>.<group>) for the bench's topics: delete those too.
                ours = tuple(f"error.{t}." for t in self._topics)
                dead = [t for t in await self._admin.list_topics() if t.startswith(ours)]
                if self._topics or dead:
                    await self._admin.delete_topics([*self._topics, *dead])
            await self._admin.close()
        if self._offsets is not None:
            await self._offsets.stop()

    def versions(self) -> dict[str, str]:
        return {"kafka broker": _broker_version()}

    # -- helpers ---------------------------------------------------------------------------

    def _new_topic(self, kind: str) -> str:
        name = f"bench-kafka-{kind}-{_tag()}"
        self._topics.append(name)
        return name

    async def _create(self, *topics: str, partitions: int = 1) -> None:
        await self._admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
        for t in topics:
            self._counts[t] = partitions

    async def _end(self, topic: str) -> int:
        """Records in ``topic``, over all its partitions."""
        parts = await self._partitions(topic)
        offsets = await self._offsets.end_offsets(parts)
        return sum(int(offsets[tp]) for tp in parts)

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        """The partitions of a topic the bench created (one for those the binder made)."""
        return [TopicPartition(topic, p) for p in range(self._counts.get(topic, 1))]

    async def _expect(self, topic: str, n: int, what: str) -> None:
        async def complete() -> bool:
            return await self._end(topic) >= n

        await until(complete, f"{n} records in {topic} ({what})", timeout=30, every=0.05)
        found = await self._end(topic)
        if found != n:
            raise AssertionError(f"{what}: {found} records in {topic}, expected {n}")

    async def _input(self, size: str, n: int, partitions: int = 1) -> str:
        """A topic of ``partitions`` partitions holding ``n`` records of ``size``, filled
        once and read by every run (each in a fresh consumer group). Record ``i`` is the
        pool's document with ``id`` i, on partition ``i % partitions``."""
        topic = self._inputs.get((size, n, partitions))
        if topic is None:
            topic = self._new_topic(f"in-{size}")
            await self._create(topic, partitions=partitions)
            producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **PRODUCER)
            await producer.start()
            try:
                docs = pool(size)
                futures = [
                    await producer.send(
                        topic,
                        to_json(docs[i % len(docs)].model_copy(update={"id": i})),
                        headers=HEADERS,
                        partition=i % partitions,
                    )
                    for i in range(n)
                ]
                await asyncio.gather(*futures)
            finally:
                await producer.stop()
            self._inputs[(size, n, partitions)] = topic
        return topic

    async def _check_output(self, topic: str, n: int, partitions: int, what: str) -> None:
        """The output of a consume-process-produce run over the input ``_input`` made:
        exactly ``n`` records, each id once, and per output partition the ids of each
        input partition in their input order (per-partition order kept end to end)."""
        await self._expect(topic, n, what)
        parts = await self._partitions(topic)
        reader = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
        await reader.start()
        try:
            reader.assign(parts)
            await reader.seek_to_beginning(*parts)
            ends = await reader.end_offsets(parts)
            seen = bytearray(n)
            last: dict[tuple[int, int], int] = {}
            left = {tp for tp in parts if ends[tp] > 0}
            deadline = time.monotonic() + 60
            while left and time.monotonic() < deadline:
                data = await reader.getmany(timeout_ms=500, max_records=5000)
                for tp, records in data.items():
                    for record in records:
                        ident = int(json.loads(record.value)["id"])
                        if not 0 <= ident < n or seen[ident]:
                            raise AssertionError(f"{what}: id {ident} unexpected or repeated")
                        seen[ident] = 1
                        lane = (tp.partition, ident % partitions)
                        if last.get(lane, -1) > ident:
                            raise AssertionError(
                                f"{what}: input partition {ident % partitions} out of order "
                                f"in output partition {tp.partition} ({last[lane]} before "
                                f"{ident})"
                            )
                        last[lane] = ident
                    if records and records[-1].offset + 1 >= ends[tp]:
                        left.discard(tp)
        finally:
            await reader.stop()
        if seen.count(1) != n:
            raise AssertionError(f"{what}: {seen.count(1)} distinct ids read back, expected {n}")

    @staticmethod
    def _stream(definition: str, bindings: dict[str, Any]) -> dict[str, Any]:
        return {
            "function": {"definition": definition},
            "default-binder": "kafka",
            "binders": {
                "kafka": {"type": "kafka", "environment": {"bootstrap-servers": BOOTSTRAP}}
            },
            "bindings": bindings,
        }

    # -- through the framework -------------------------------------------------------------

    def partition_counts(self, scenario: str, wanted: Sequence[int]) -> list[int]:
        """Consume-process-produce runs once per partition count; the rest on one."""
        return list(wanted) if scenario == "process" else [1]

    def anchors(self, scenario: str) -> tuple[str, ...]:
        return ANCHORS if scenario == "process" else ()

    async def framework(
        self, scenario: str, size: str, n: int, rate: int, partitions: int = 1
    ) -> Measure:
        if scenario == "produce":
            out = self._new_topic("out")
            app = make_app(self._stream("source", {"source-out-0": {"destination": out}}))
            SOURCE.set(pool(size), n)
            async with running(app):
                await asyncio.wait_for(app.suppliers_done(), RUN_TIMEOUT)
                measure = since_source(n)
            await self._expect(out, n, "framework produce")
            return measure
        if scenario == "consume":
            source = await self._input(size, n)
            group = f"bench-{_tag()}"
            app = make_app(
                self._stream("sink", {"sink-in-0": {"destination": source, "group": group}})
            )
            probe = PROBES["sink"]
            probe.reset(n)
            async with running(app):
                await done(probe.done, f"{n} records consumed")
            return probed(probe)
        if scenario == "process":
            source, out = await self._input(size, n, partitions), self._new_topic("out")
            await self._create(out, partitions=partitions)
            app = make_app(
                self._stream(
                    "uppercase",
                    {
                        "uppercase-in-0": {"destination": source, "group": f"bench-{_tag()}"},
                        "uppercase-out-0": {"destination": out},
                    },
                )
            )
            probe = PROBES["uppercase"]
            probe.reset(n)
            async with running(app):
                await done(probe.done, f"{n} records processed")
            await self._check_output(out, n, partitions, "framework process")
            return probed(probe)
        first, second = self._new_topic("a"), self._new_topic("b")
        app = make_app(
            self._stream(
                "ticker;uppercase;sink",
                {
                    "ticker-out-0": {"destination": first},
                    "uppercase-in-0": {"destination": first, "group": f"bench-{_tag()}"},
                    "uppercase-out-0": {"destination": second},
                    "sink-in-0": {"destination": second, "group": f"bench-{_tag()}"},
                },
            )
        )
        probe = PROBES["sink"]
        probe.reset(n, timed=True)
        PROBES["uppercase"].reset(n)
        SOURCE.set(pool(size), n, rate)
        async with running(app):
            await done(probe.done, f"{n} records through the pipeline")
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
            return await self._raw_process(size, n, partitions)
        return await self._raw_latency(size, n, rate)

    # -- the limit anchors -----------------------------------------------------------------

    async def anchor(self, name: str, size: str, n: int, partitions: int = 1) -> Measure:
        """One run of a limit anchor (``bench.anchors``) over this case's input."""
        source = await self._input(size, n, partitions)
        if name == "java":
            out, warm = self._new_topic("java-out"), self._new_topic("java-warmup")
            await self._create(out, warm, partitions=partitions)
            group, warmup = f"bench-java-{_tag()}", min(n, anchors.WARMUP)
            measure = await anchors.kafka_loop(BOOTSTRAP, source, out, group, n, warm, warmup)
            await self._check_output(out, n, partitions, "Java client process")
            return measure
        if name == "perf-produce":
            out = self._new_topic("perf-out")
            await self._create(out, partitions=partitions)
            measure = await anchors.producer_performance(BOOTSTRAP, out, n, payload_bytes(size))
            await self._expect(out, n, "ProducerPerformance")
            return measure
        if name == "perf-consume":
            return await anchors.consumer_performance(BOOTSTRAP, source, n)
        raise ValueError(f"no anchor {name!r}")

    async def _raw_produce(self, size: str, n: int) -> Measure:
        out = self._new_topic("raw-out")
        await self._create(out)
        docs = pool(size)
        count = len(docs)
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **PRODUCER)
        await producer.start()
        try:
            await producer.partitions_for(out)
            watch = Stopwatch()
            send = producer.send
            futures = [await send(out, to_json(docs[i % count]), headers=HEADERS) for i in range(n)]
            await asyncio.gather(*futures)
            measure = watch.measure(n)
        finally:
            await producer.stop()
        await self._expect(out, n, "raw produce")
        return measure

    def _consumer(self, topic: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=BOOTSTRAP,
            group_id=f"bench-raw-{_tag()}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    async def _raw_consume(self, size: str, n: int) -> Measure:
        source = await self._input(size, n)
        probe = PROBES["sink"]
        probe.reset(n)
        consumer = self._consumer(source)
        await consumer.start()
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            while not probe.done.is_set() and time.monotonic() < deadline:
                data = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
                if not data:
                    continue
                for records in data.values():
                    for record in records:
                        sink(from_json(record.value))
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in data.items()})
        finally:
            await consumer.stop()
        await done(probe.done, "raw consume", timeout=0.1)
        return probed(probe)

    async def _process_loop(self, consumer: Any, producer: Any, out: str, stop: Any) -> None:
        send = producer.send
        while not stop():
            data = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            if not data:
                continue
            futures = []
            for records in data.values():
                for record in records:
                    doc = uppercase(from_json(record.value))
                    futures.append(await send(out, to_json(doc), headers=HEADERS))
            await asyncio.gather(*futures)
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in data.items()})

    async def _raw_process(self, size: str, n: int, partitions: int = 1) -> Measure:
        source, out = await self._input(size, n, partitions), self._new_topic("raw-out")
        await self._create(out, partitions=partitions)
        probe = PROBES["uppercase"]
        probe.reset(n)
        consumer = self._consumer(source)
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **PRODUCER)
        await consumer.start()
        await producer.start()
        try:
            await producer.partitions_for(out)
            await asyncio.wait_for(
                self._process_loop(consumer, producer, out, probe.done.is_set), RUN_TIMEOUT
            )
        finally:
            await consumer.stop()
            await producer.stop()
        await self._check_output(out, n, partitions, "raw process")
        return probed(probe)

    async def _raw_latency(self, size: str, n: int, rate: int) -> Measure:
        first, second = self._new_topic("raw-a"), self._new_topic("raw-b")
        await self._create(first, second)
        probe = PROBES["sink"]
        probe.reset(n, timed=True)
        PROBES["uppercase"].reset(n)
        middle, last = self._consumer(first), self._consumer(second)
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, **PRODUCER)
        for client in (middle, last, producer):
            await client.start()
        stopped = probe.done.is_set

        async def consume() -> None:
            while not stopped():
                data = await last.getmany(timeout_ms=200, max_records=MAX_RECORDS)
                if data:
                    for records in data.values():
                        for record in records:
                            sink(from_json(record.value))
                    await last.commit({tp: rs[-1].offset + 1 for tp, rs in data.items()})

        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._process_loop(middle, producer, second, stopped)),
            loop.create_task(consume()),
        ]
        try:
            # As the framework's bindings do before its supplier starts: join the groups.
            await until(lambda: bool(middle.assignment()) and bool(last.assignment()), "joins")
            docs = pool(size)
            count = len(docs)
            interval = 1.0 / rate
            futures = []
            started = time.perf_counter()
            for i in range(n):
                delay = started + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                doc = docs[i % count].model_copy(update={"id": i, "ts": time.perf_counter()})
                futures.append(await producer.send(first, to_json(doc), headers=HEADERS))
            await asyncio.gather(*futures)
            await done(probe.done, f"{n} records through the raw pipeline")
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in (middle, last, producer):
                await client.stop()
        return latency_measure(probe)
