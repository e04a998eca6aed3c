"""A Kafka restart in the middle of a stream: the running app rides through it and loses
nothing; an app told to stop while the broker is down still exits cleanly, in bounded time.

Restarts whatever Kafka listens on the local bootstrap port, whoever started it, by its
pid (``tests/restart.py``; about 15-20 s here)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.kafka.conftest import Kit, start_binder, wait_exit
from tests.restart import require_restartable, restart_kafka
from tests.support import eventually

pytestmark = pytest.mark.kafka

BATCH = 100
WINDOW = 500  # words sent ahead of the outputs seen
FAULT_AFTER = 600  # outputs seen before the broker restarts
AFTER_FAULT = 1000  # words sent once it is back


def uppercase(kit: Kit, words: str, shouted: str, group: str, log: Path) -> subprocess.Popen[bytes]:
    sets = {
        "stream.binders.kafka.environment.bootstrap-servers": kit.bootstrap,
        "stream.bindings.uppercase-in-0.destination": words,
        "stream.bindings.uppercase-in-0.group": group,
        "stream.bindings.uppercase-out-0.destination": shouted,
    }
    args = ["run", "apps.uppercase", "--config", "config/uppercase", "--profile", "kafka"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return start_binder(args, log)


class Outputs:
    """Reads a topic from the beginning for as long as the test runs, across the outage."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.values: list[bytes] = []
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._topic = topic
        self._task: asyncio.Task[None] | None = None

    async def start(self, partitions: Sequence[int]) -> None:
        await self._consumer.start()
        tps = [TopicPartition(self._topic, p) for p in partitions]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the broker is away for a while
                batch = await self._consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    self.values.extend(r.value for r in records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


class Stream:
    """Numbered words in acknowledged batches, before, through and after the fault; a batch
    the broker did not acknowledge is sent again (so inputs are at-least-once too)."""

    def __init__(self, bootstrap: str, topic: str, outputs: Outputs) -> None:
        self.bootstrap = bootstrap
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.topic = topic
        self.outputs = outputs
        self.sent = 0
        self.fault_done = asyncio.Event()

    async def run(self) -> None:
        await self.producer.start()
        after = 0
        try:
            while after < AFTER_FAULT:
                await eventually(
                    lambda: len(self.outputs.values) >= self.sent - WINDOW,
                    timeout=120,
                    what="the pipeline to keep up",
                )
                words = [f"w{i}".encode() for i in range(self.sent, self.sent + BATCH)]
                while True:
                    try:
                        futures = [await self.producer.send(self.topic, w) for w in words]
                        await asyncio.gather(*futures)
                        break
                    except Exception:
                        # The broker is away: send the batch again once it answers.
                        await eventually(self._broker_back, "the broker to come back", 120)
                self.sent += BATCH
                if self.fault_done.is_set():
                    after += BATCH
        finally:
            await self.producer.stop()

    async def _broker_back(self) -> bool:
        return not await broker_down(self.bootstrap)


async def broker_down(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 0.5)
    except (OSError, TimeoutError):
        return True
    writer.close()
    return False


async def test_broker_restart_mid_stream_loses_nothing(kit: Kit, tmp_path: Path) -> None:
    require_restartable("kafka")
    words, shouted, idle_out = kit.name("words"), kit.name("shouted"), kit.name("idle")
    await kit.create(words, 2)
    await kit.create(shouted, 1)
    worker = uppercase(kit, words, shouted, kit.name("shouters"), tmp_path / "worker.log")
    bystander = uppercase(kit, words, idle_out, kit.name("idle"), tmp_path / "bystander.log")
    outputs = Outputs(kit.bootstrap, shouted)
    await outputs.start([0])
    stream = Stream(kit.bootstrap, words, outputs)
    sender = asyncio.ensure_future(stream.run())
    try:
        await eventually(lambda: len(outputs.values) >= FAULT_AFTER, "the stream to flow", 60)
        restart = asyncio.ensure_future(restart_kafka(kit.bootstrap))
        await eventually(lambda: broker_down(kit.bootstrap), "the broker to go down", 60)
        # Stopping while the broker is away: graceful, and bounded.
        loop = asyncio.get_running_loop()
        asked = loop.time()
        bystander.send_signal(signal.SIGTERM)
        assert await wait_exit(bystander, 45) == 0, (tmp_path / "bystander.log").read_text()
        stop_took = loop.time() - asked
        await restart
        stream.fault_done.set()
        await asyncio.wait_for(sender, 180)
        await eventually(
            lambda: len(set(outputs.values)) >= stream.sent, "every word after the restart", 90
        )
    finally:
        sender.cancel()
        await outputs.stop()
        for process in (worker, bystander):
            if process.poll() is None and process is bystander:
                process.kill()
    counts = Counter(outputs.values)
    expected = {f"W{i}".encode() for i in range(stream.sent)}
    missing = expected - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    print(
        f"\nbroker restart: {len(outputs.values)} outputs for {stream.sent} words, "
        f"{len(missing)} missing, {duplicates} duplicates; stop during the outage took "
        f"{stop_took:.1f} s"
    )
    assert not missing, f"{len(missing)} words lost, e.g. {sorted(missing)[:5]}"
    assert set(counts) == expected
    assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    # The binder's health probe notices the return on its next round, which can come after
    # the stream has already caught up: wait for the line rather than racing the probe.
    worker_log = tmp_path / "worker.log"
    with contextlib.suppress(AssertionError):
        await eventually(lambda: "reachable again" in worker_log.read_text(), "the log line", 60)
    worker.send_signal(signal.SIGTERM)
    assert await wait_exit(worker, 30) == 0
    log = worker_log.read_text()
    assert "lost the brokers" in log and "reachable again" in log, log[-3000:]
