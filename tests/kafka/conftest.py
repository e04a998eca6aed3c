"""Fixtures for the Kafka binder's integration tests: a real broker, unique topics per test
(deleted afterwards, dead-letter topics included), a raw aiokafka toolkit to produce and
read what the binder wrote, and apps run in-process on the Kafka binder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from binder_core import app_config
from binder_core.config import load_config
from binder_core.plugins import load_plugins
from binder_core.runtime import App
from tests.support import (
    apps,  # noqa: F401  (the apps fixture)
    eventually,
)

DEADLINE = 30.0
ROOT = Path(__file__).resolve().parents[2]
BINDER = str(Path(sys.executable).with_name("binder"))

Headers = Sequence[tuple[str, bytes]]


class Kit:
    """Raw aiokafka access to the broker, independent of the binder under test."""

    def __init__(self, bootstrap: str, namer: Callable[[str], str]) -> None:
        self.bootstrap = bootstrap
        self._namer = namer
        self.names: list[str] = []
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._producer: AIOKafkaProducer | None = None

    def name(self, prefix: str) -> str:
        """A unique topic/group name; topics containing it are deleted after the test."""
        name = self._namer(prefix)
        self.names.append(name)
        return name

    async def create(
        self, topic: str, partitions: int = 1, configs: dict[str, str] | None = None
    ) -> None:
        response = await self.admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs=configs or {})]
        )
        for entry in response.topic_errors:
            assert entry[1] == 0, entry

        async def led() -> bool:
            found = await self.admin.describe_topics([topic])
            parts = found[0].get("partitions") or []
            return len(parts) == partitions and all(p["leader"] >= 0 for p in parts)

        await eventually(led, f"leaders for every partition of {topic}", DEADLINE)

    async def partitions(self, topic: str) -> int:
        found = await self.admin.describe_topics([topic])
        return len(found[0].get("partitions") or [])

    async def topics(self) -> set[str]:
        return set(await self.admin.list_topics())

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await self._producer.start()
        return self._producer

    async def produce(
        self,
        topic: str,
        values: Iterable[bytes],
        *,
        key: bytes | None = None,
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Send and wait for every acknowledgement."""
        producer = await self.producer()
        futures = []
        for i, value in enumerate(values):
            k = keys[i] if keys is not None else key
            futures.append(
                await producer.send(
                    topic, value, key=k, partition=partition, headers=list(headers or [])
                )
            )
        await asyncio.gather(*futures)

    async def read(
        self,
        topic: str,
        count: int,
        *,
        timeout: float = DEADLINE,
        committed_only: bool = False,
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Exactly the first ``count`` records of ``topic`` (all partitions, from the
        beginning); fails when fewer arrive within ``timeout``, returns what else is
        already there too so a test can see surplus records."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed" if committed_only else "read_uncommitted",
        )
        await consumer.start()
        try:
            parts = await _partitions_for(consumer, topic)
            tps = [TopicPartition(topic, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[ConsumerRecord[bytes, bytes]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(out) < count:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AssertionError(f"read {len(out)} of {count} records from {topic}")
                batch = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
                for records in batch.values():
                    out.extend(records)
            # Whatever else is already there (duplicates, surplus): read up to the end.
            ends = await consumer.end_offsets(tps)
            while True:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind:
                    return out
                batch = await consumer.getmany(*behind, timeout_ms=500)
                for records in batch.values():
                    out.extend(records)
        finally:
            await consumer.stop()

    async def count(self, topic: str, committed_only: bool = False) -> int:
        """Records in ``topic`` now (end minus beginning offsets, all partitions); with
        ``committed_only``, records a read_committed reader sees (reads them)."""
        if committed_only:
            return len(await self.read(topic, 0, committed_only=True))
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            parts = await _partitions_for(consumer, topic)
            tps = [TopicPartition(topic, p) for p in parts]
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            return sum(ends[tp] - starts[tp] for tp in tps)
        finally:
            await consumer.stop()

    async def cleanup(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        try:
            existing = await self.topics()
            doomed = [t for t in existing if any(n in t for n in self.names)]
            if doomed:
                await self.admin.delete_topics(doomed)
        finally:
            await self.admin.close()


async def _partitions_for(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    async def known() -> bool:
        if consumer.partitions_for_topic(topic):
            return True
        await consumer._client.force_metadata_update()
        return False

    await eventually(known, f"metadata of topic {topic}", DEADLINE)
    return sorted(consumer.partitions_for_topic(topic))


@pytest.fixture
async def kit(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> AsyncIterator[Kit]:
    toolkit = Kit(kafka_bootstrap, unique_name)
    await toolkit.admin.start()
    try:
        yield toolkit
    finally:
        await toolkit.cleanup()


def binder_tree(bootstrap: str, **environment: Any) -> dict[str, Any]:
    """``stream.binders.kafka`` for the test broker, fast retries for every binding."""
    return {
        "default-binder": "kafka",
        "binders": {
            "kafka": {
                "type": "kafka",
                "environment": {
                    "bootstrap-servers": bootstrap,
                    "health-timeout": 20,
                    **environment,
                },
            }
        },
        "default": {"consumer": {"back-off-initial-interval": 1, "back-off-max-interval": 5}},
    }


@contextlib.asynccontextmanager
async def running_app(
    module: types.ModuleType | Mapping[str, Callable[..., Any]],
    stream: Mapping[str, Any] | None = None,
    *,
    config_dir: Path | None = None,
    profiles: Sequence[str] = (),
    overrides: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> AsyncIterator[App]:
    """An app started in-process through the core's runtime, stopped gracefully after."""
    if not isinstance(module, types.ModuleType):
        fns = module
        module = types.ModuleType("kafka_test_app")
        for name, fn in fns.items():
            setattr(module, name, fn)
    tree: dict[str, Any] = {"stream": dict(stream or {}), **(extra or {})}
    registry = load_plugins()
    config = load_config(
        config_dir,
        profiles,
        overrides,
        registry.binder_types,
        environ={},
        properties=tree,
        read_files=config_dir is not None,
    )
    app_config.use(config.layered)
    app = App(module, config, registry)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
        app_config.use(None)


def start_binder(
    args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``binder <args>`` in the repository, its log appended to ``log``."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [BINDER, *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


async def wait_exit(process: subprocess.Popen[bytes], seconds: float) -> int:
    """The process's exit code; fails if it is still running after ``seconds``."""
    await eventually(lambda: process.poll() is not None, f"process {process.pid} to exit", seconds)
    return process.returncode
