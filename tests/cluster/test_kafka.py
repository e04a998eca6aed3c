"""The Kafka binder on a three-node cluster (replication factor 3, min.insync.replicas 2):
three instances of one app share six partitions and take over from one killed with
SIGKILL; a broker node killed mid-stream and brought back loses nothing.

Numbered records go in through a plain aiokafka producer (acks=all, idempotent), the app
(``tests/cluster/apps.py``, as ``binder run`` processes) passes each on, and a plain
aiokafka reader collects the outputs from the beginning of the topic, across the outage.
Nothing may be missing; duplicates (at-least-once) are counted and printed."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from binders.rabbit.connection import Backoff
from tests.cluster.conftest import KafkaCluster, quiet, write_config
from tests.cluster.feed import Feed
from tests.support import AppProcess, Apps, eventually

pytestmark = pytest.mark.cluster

PARTITIONS = 6


def relay_config(folder: Path, bootstrap: str, source: str, target: str, group: str) -> Path:
    """``relay`` on the cluster: topics made by the binder with three replicas and six
    partitions; a dead consumer leaves its group after 6 s rather than Kafka's 45 s."""
    return write_config(
        folder,
        f"""\
stream:
  function: {{definition: relay}}
  default-binder: kafka
  binders:
    kafka: {{type: kafka, environment: {{bootstrap-servers: "{bootstrap}"}}}}
  bindings:
    relay-in-0: {{destination: {source}, group: {group}}}
    relay-out-0: {{destination: {target}}}
  kafka:
    binder:
      replication-factor: 3
      min-partition-count: {PARTITIONS}
      consumer-properties: {{session_timeout_ms: 6000, heartbeat_interval_ms: 1000}}
""",
    )


@dataclass
class Output:
    """One output record: the input's number, who relayed it, from which partition."""

    seq: int
    instance: str
    partition: int


class Pipeline:
    """Numbered records into ``source`` (partition = number % 6) by a plain aiokafka
    producer, fed in the background (``feed``); ``target`` read from the beginning as it
    fills, across any outage."""

    def __init__(self, bootstrap: str, source: str, target: str, total: int, limit: int) -> None:
        self.source, self.target = source, target
        self.outputs: list[Output] = []
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
        )
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.feed = Feed(self._send, self._distinct, total, limit)
        self._reader: asyncio.Task[None] | None = None

    async def _distinct(self) -> int:
        return len({o.seq for o in self.outputs})

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        tps = [TopicPartition(self.target, p) for p in range(PARTITIONS)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._reader = asyncio.ensure_future(self._read())
        self.feed.start()

    async def _read(self) -> None:
        backoff = Backoff(0.05, 1.0)
        while True:
            try:
                batch = await self.consumer.getmany(timeout_ms=500)
            except Exception:  # a node away: the client finds the new leaders by itself
                await backoff.wait()
                continue
            backoff.reset()
            for records in batch.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    self.outputs.append(
                        Output(
                            int(record.value or b"-1"),
                            headers.get("instance", "?"),
                            int(headers.get("from-partition", "-1")),
                        )
                    )

    async def _send(self, numbers: range) -> None:
        """One batch, sent again until Kafka acknowledged all of it (at-least-once)."""
        backoff = Backoff(0.05, 1.0)
        while True:
            try:
                futures = [
                    await self.producer.send(self.source, str(i).encode(), partition=i % PARTITIONS)
                    for i in numbers
                ]
                await asyncio.gather(*futures)
                return
            except Exception:  # not acknowledged: again
                await backoff.wait()

    async def all_out(self, timeout: float = 120) -> None:
        await self.feed.finish()
        await self.feed.reached(self.feed.total, "every record out", timeout)

    async def stop(self) -> None:
        await self.feed.stop()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for client in (self.producer, self.consumer):
            try:
                await client.stop()
            except asyncio.CancelledError:
                # aiokafka lets the cancellation of a fetch to a dead node escape stop()
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except Exception:  # a node away while closing: nothing left to check
                pass

    def missing(self, what: str, report: Callable[[str], None]) -> set[int]:
        """The numbers that never came out; the count of each kind reported."""
        counts = Counter(o.seq for o in self.outputs)
        sent = self.feed.sent
        missing = set(range(sent)) - set(counts)
        duplicates = sum(n - 1 for n in counts.values())
        report(
            f"{what}: {sent} records in, {len(self.outputs)} out, "
            f"{len(missing)} missing, {duplicates} duplicates"
        )
        return missing


def start_relays(apps: Apps, config: Path, instances: list[str]) -> dict[str, AppProcess]:
    return {
        name: apps(
            "run", "tests.cluster.apps", "--config", str(config), env={"CLUSTER_APP_INSTANCE": name}
        )
        for name in instances
    }


async def group_members(cluster: KafkaCluster, group: str) -> tuple[str, int]:
    """(state, member count) of a consumer group, as its coordinator tells it."""
    admin = await cluster.admin()
    try:
        found = (await admin.describe_consumer_groups([group]))[0].to_object()["groups"][0]
    except Exception:  # the coordinator moving: not known yet
        return "unknown", 0
    finally:
        await admin.close()
    return str(found["state"]), len(found["members"])


async def wait_group(cluster: KafkaCluster, group: str, members: int) -> None:
    async def stable() -> bool:
        state, count = await group_members(cluster, group)
        return state == "Stable" and count == members

    await eventually(stable, f"group {group} stable with {members} members", 90)


def alive(processes: dict[str, AppProcess]) -> Callable[[], None]:
    def check() -> None:
        for name, process in processes.items():
            assert process.running(), f"instance {name} exited:\n{process.output[-3000:]}"

    return check


async def test_three_instances_share_six_partitions_and_survive_a_sigkill(
    kafka_cluster: KafkaCluster,
    names: Callable[[str], str],
    apps: Apps,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    source, target, group = names("in"), names("out"), names("relays")
    config = relay_config(tmp_path / "config", kafka_cluster.bootstrap, source, target, group)
    relays = start_relays(apps, config, ["a", "b", "c"])
    await wait_group(kafka_cluster, group, 3)
    for topic in (source, target):
        replicas = await kafka_cluster.replicas(topic)
        assert len(replicas) == PARTITIONS, (topic, replicas)
        assert all(len(r) == 3 for _, r, _ in replicas.values()), (topic, replicas)
    pipeline = Pipeline(kafka_cluster.bootstrap, source, target, total=6000, limit=6000)
    with quiet("aiokafka"):
        await pipeline.start()
        try:
            await pipeline.feed.reached(3000, "before the kill")
            # Mid-stream: the feed goes on, up to WINDOW records are inside the instances.
            before = list(pipeline.outputs)
            relays["b"].kill()
            await pipeline.all_out()
        finally:
            await pipeline.stop()
    alive({k: v for k, v in relays.items() if k != "b"})()

    # Before the kill: each instance had two partitions of its own, all six covered.
    held: dict[str, set[int]] = defaultdict(set)
    for output in before:
        held[output.instance].add(output.partition)
    assert set(held) == {"a", "b", "c"}, held
    assert all(len(p) == 2 for p in held.values()), held
    assert set().union(*held.values()) == set(range(PARTITIONS)), held
    # After it: what b held was taken over by the two others.
    after = pipeline.outputs[len(before) :]
    taken = {o.partition for o in after if o.instance in ("a", "c")}
    assert held["b"] <= taken, (held, taken)
    missing = pipeline.missing("Kafka, instance killed with SIGKILL", report)
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:10]}"
    # Duplicates come only from what the killed instance had processed but not committed.
    counts = Counter(o.seq for o in pipeline.outputs)
    twice = {seq for seq, n in counts.items() if n > 1}
    assert {seq % PARTITIONS for seq in twice} <= held["b"], sorted(twice)[:20]


async def test_a_broker_node_killed_mid_stream_and_brought_back_loses_nothing(
    kafka_cluster: KafkaCluster,
    names: Callable[[str], str],
    apps: Apps,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    source, target, group = names("in"), names("out"), names("relays")
    config = relay_config(tmp_path / "config", kafka_cluster.bootstrap, source, target, group)
    relays = start_relays(apps, config, ["a", "b"])
    await wait_group(kafka_cluster, group, 2)
    # The node that coordinates the group (and leads some partitions) goes: the group
    # moves to another coordinator, and those partitions to new leaders.
    admin = await kafka_cluster.admin()
    try:
        victim = await admin.find_coordinator(group)
    finally:
        await admin.close()
    pipeline = Pipeline(kafka_cluster.bootstrap, source, target, total=10_000, limit=7000)
    with quiet("aiokafka"):
        await pipeline.start()
        try:
            await pipeline.feed.reached(3000, "before the kill")
            await kafka_cluster.kill(victim)  # the feed going on meanwhile

            async def moved() -> bool:
                led = await kafka_cluster.replicas(source)
                return bool(led) and all(leader != victim for leader, _, _ in led.values())

            # Once the controller fenced the node (its session timed out), every partition
            # it led has a new leader among the two others.
            await eventually(moved, f"new leaders for what node {victim} led", 60)
            await pipeline.feed.reached(6000, "with the node down")
            await kafka_cluster.start(victim)
            await pipeline.all_out()  # the last 3,000 and more go in once it is back
        finally:
            await pipeline.stop()
    alive(relays)()

    async def in_sync() -> bool:
        return all(len(isr) == 3 for _, _, isr in (await kafka_cluster.replicas(source)).values())

    await eventually(in_sync, "the node back in every partition's in-sync replicas", 60)
    missing = pipeline.missing(f"Kafka, node {victim} killed and brought back", report)
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:10]}"
    assert pipeline.feed.sent == 10_000
