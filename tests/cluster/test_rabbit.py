"""The RabbitMQ binder on a three-node cluster, its group queues quorum queues: a node
killed mid-stream (the one the apps are connected to) and a queue's leader killed
mid-stream lose nothing; a partitioned app of three instances keeps each key's order.

Numbered messages go in through the binder's own producer in the test (confirms awaited,
what was unconfirmed at a cut published again), two or three ``binder run`` processes of
``tests/cluster/apps.py`` pass them on, and the outputs wait in a quorum queue until the
end, when a plain pika client takes them all and they are counted. Nothing may be
missing; duplicates (at-least-once) are counted and printed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from binder_core.message import Message
from binder_core.output import Output
from binder_core.properties import ProducerProperties
from binder_core.spi import ProducerSpec
from binder_core.testing.driver import BinderDriver
from binders.rabbit.binder import RabbitBinder
from binders.rabbit.settings import RabbitEnvironment, RabbitProducerProperties
from tests.cluster.conftest import RabbitCluster, quiet, write_config
from tests.cluster.feed import Feed
from tests.support import AppProcess, Apps, eventually

pytestmark = pytest.mark.cluster

BATCH = 200
QUORUM = {"quorum": {"enabled": True}, "dlq-quorum": {"enabled": True}}


def relay_config(folder: Path, addresses: str, source: str, target: str) -> Path:
    """``relay`` on the cluster: every group queue (and its dead-letter queue) a quorum
    queue, by the type-wide defaults, for consumers and for producers' required groups."""
    return write_config(
        folder,
        f"""\
stream:
  function: {{definition: relay}}
  default-binder: rabbit
  binders:
    rabbit: {{type: rabbit, environment: {{addresses: "{addresses}"}}}}
  bindings:
    relay-in-0: {{destination: {source}, group: relay}}
    relay-out-0: {{destination: {target}, producer: {{required-groups: [check]}}}}
  rabbit:
    default:
      consumer: {{quorum: {{enabled: true}}, dlq-quorum: {{enabled: true}}}}
      producer: {{quorum: {{enabled: true}}, dlq-quorum: {{enabled: true}}}}
""",
    )


@contextlib.asynccontextmanager
async def producer(addresses: str, destination: str, **common: object) -> AsyncIterator[Output]:
    """The binder's producer to ``destination``, its required group ``relay`` a quorum
    queue (as the apps declare it)."""
    env = RabbitEnvironment.model_validate({"addresses": addresses})
    driver = BinderDriver(RabbitBinder("feed", env))
    await driver.start()
    try:
        spec = ProducerSpec(
            "feed-out-0",
            destination,
            ProducerProperties.model_validate({"required-groups": ["relay"], **common}),
            RabbitProducerProperties.model_validate(QUORUM),
        )
        yield await driver.producer(spec)
    finally:
        await driver.close()


async def waiting(cluster: RabbitCluster, queue: str, via: int) -> int:
    """Messages ready in ``queue``; -1 while it cannot be known (its leader moving)."""
    try:
        return await asyncio.to_thread(cluster.ready, queue, via)
    except Exception:  # asked during an election
        return -1


def feed(output: Output, cluster: RabbitCluster, check: str, total: int, limit: int) -> Feed:
    """Numbered messages through the binder's ``output``, paced by what waits in
    ``check`` (asked of node 3, which the tests never kill)."""

    async def send(numbers: range) -> None:
        await output.send([Message(str(i).encode()) for i in numbers])

    return Feed(send, lambda: waiting(cluster, check, 3), total, limit)


def start_relays(apps: Apps, config: Path, instances: list[str], *sets: str) -> list[AppProcess]:
    started = []
    for index, name in enumerate(instances):
        extra = [arg for s in sets for arg in ("--set", s.format(index=index))]
        args = ["run", "tests.cluster.apps", "--config", str(config), *extra]
        started.append(apps(*args, env={"CLUSTER_APP_INSTANCE": name}))
    return started


async def consumers(cluster: RabbitCluster, queue: str, via: int) -> int:
    def count() -> int:
        out = cluster.ctl(via, "list_queues", "name", "consumers", "--formatter", "json")
        return next((int(q["consumers"]) for q in json.loads(out) if q["name"] == queue), 0)

    return await asyncio.to_thread(count)


async def settled(cluster: RabbitCluster, queue: str, via: int) -> bool:
    """Nothing ready nor unacknowledged in ``queue``: every input was processed."""

    def empty() -> bool:
        out = cluster.ctl(
            via, "list_queues", "name", "messages_ready", "messages_unacknowledged",
            "--formatter", "json",
        )  # fmt: skip
        found = [q for q in json.loads(out) if q["name"] == queue]
        return (
            bool(found)
            and found[0]["messages_ready"] == 0
            and (found[0]["messages_unacknowledged"] == 0)
        )

    try:
        return await asyncio.to_thread(empty)
    except AssertionError:  # rabbitmqctl during an election
        return False


async def run_through_a_kill(
    cluster: RabbitCluster,
    names: Callable[[str], str],
    apps: Apps,
    tmp_path: Path,
    victim: int,
    what: str,
    report: Callable[[str], None],
) -> None:
    """Queues led by node 1, apps and producer connected to node 2 first; ``victim`` is
    killed after 3,000 messages and started again after 6,000; 10,000 in all."""
    source, target = names("in"), names("out")
    first, rest = cluster.addresses[1], cluster.list(2, 3, 1)
    # The app run once through node 1 alone declares the queues there, so node 1 leads
    # them (RabbitMQ places a new quorum queue's leader on the node the client is on).
    config = relay_config(tmp_path / "provision", first, source, target)
    provision = apps("run", "tests.cluster.apps", "--config", str(config), "--run-for", "0.5")
    assert await provision.wait(60) == 0, provision.output[-3000:]
    queues = [f"{source}.relay", f"{target}.check"]
    for queue in queues:
        assert await asyncio.to_thread(cluster.leader, queue, 3) == 1
        assert await asyncio.to_thread(lambda q=queue: cluster.queues(3)[q]["type"]) == "quorum"
    config = relay_config(tmp_path / "config", rest, source, target)
    relays = start_relays(apps, config, ["a", "b"])
    await eventually(
        lambda: consumers(cluster, f"{source}.relay", 3), "the relays to subscribe", 60
    )
    with quiet("pika", "binders.rabbit"):
        async with producer(rest, source) as out:
            stream = feed(out, cluster, queues[1], total=10_000, limit=7000)
            stream.start()
            try:
                await stream.reached(3000, "before the kill")
                await cluster.kill(victim)  # the feed going on meanwhile
                if victim == 1:

                    async def elected() -> bool:
                        try:
                            return await asyncio.to_thread(cluster.leader, queues[0], 3) != 1
                        except (AssertionError, KeyError):  # asked during the election
                            return False

                    await eventually(elected, f"a new leader of {queues[0]}", 60)
                await stream.reached(6000, "with the node down")
                await cluster.start(victim)
                await stream.finish()  # the last 3,000 and more go in once it is back
            finally:
                await stream.stop()
    await eventually(lambda: settled(cluster, f"{source}.relay", 3), "every input processed", 120)
    for relay in relays:
        assert relay.running(), relay.output[-3000:]
    if victim != 1:
        assert await asyncio.to_thread(cluster.leader, f"{source}.relay", 3) == 1
    outputs = await asyncio.to_thread(cluster.drain, f"{target}.check", 3)
    counts = Counter(int(body) for _, body in outputs)
    missing = set(range(stream.sent)) - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    report(
        f"RabbitMQ, {what}: {stream.sent} messages in, {len(outputs)} out, "
        f"{len(missing)} missing, {duplicates} duplicates"
    )
    assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:10]}"
    assert stream.sent == 10_000
    for relay in relays:
        log = relay.output
        # The log names the node each connection is on: node 2, then the next address.
        assert f"connected to {rest} as guest, on {cluster.addresses[2]}" in log, log[-3000:]
        if victim == 2:
            assert f"recovered, on {cluster.addresses[3]}" in log, log[-3000:]


async def test_the_node_the_apps_use_killed_mid_stream_loses_nothing(
    rabbit_cluster: RabbitCluster,
    names: Callable[[str], str],
    apps: Apps,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    await run_through_a_kill(
        rabbit_cluster, names, apps, tmp_path, 2, "node 2 (the apps' connection) killed", report
    )


async def test_a_quorum_queue_leader_killed_mid_stream_loses_nothing(
    rabbit_cluster: RabbitCluster,
    names: Callable[[str], str],
    apps: Apps,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    await run_through_a_kill(
        rabbit_cluster, names, apps, tmp_path, 1, "node 1 (every queue's leader) killed", report
    )


async def test_a_partitioned_app_of_three_instances_keeps_each_keys_order(
    rabbit_cluster: RabbitCluster, names: Callable[[str], str], apps: Apps, tmp_path: Path
) -> None:
    source, target = names("in"), names("out")
    keys, total = 12, 3000
    config = relay_config(tmp_path / "config", rabbit_cluster.list(), source, target)
    relays = start_relays(
        apps,
        config,
        ["i0", "i1", "i2"],
        "stream.bindings.relay-in-0.consumer.partitioned=true",
        "stream.bindings.relay-in-0.consumer.instance-count=3",
        "stream.bindings.relay-in-0.consumer.instance-index={index}",
    )
    for index in range(3):
        await eventually(
            lambda i=index: consumers(rabbit_cluster, f"{source}.relay-{i}", 1),
            f"instance {index} to subscribe",
            60,
        )
    partitioned = {"partition-key-expression": "headers['key']", "partition-count": 3}
    with quiet("pika", "binders.rabbit"):
        async with producer(rabbit_cluster.list(3, 1, 2), source, **partitioned) as out:
            for start in range(0, total, BATCH):
                batch = [
                    Message(f"k{i % keys}:{i}".encode(), {"key": f"k{i % keys}"})
                    for i in range(start, start + BATCH)
                ]
                await out.send(batch)
    for index in range(3):
        await eventually(
            lambda i=index: settled(rabbit_cluster, f"{source}.relay-{i}", 1),
            f"partition {index} processed",
            120,
        )
    outputs = await asyncio.to_thread(rabbit_cluster.drain, f"{target}.check", 1)
    for relay in relays:
        assert relay.running(), relay.output[-3000:]
    seen: dict[str, list[int]] = defaultdict(list)
    by: dict[str, set[str]] = defaultdict(set)
    for headers, body in outputs:
        key, seq = body.decode().split(":")
        seen[key].append(int(seq))
        instance = headers.get("instance")
        by[key].add(instance.decode() if isinstance(instance, bytes) else str(instance))
    assert sum(len(s) for s in seen.values()) == total, len(outputs)
    for key, seqs in seen.items():
        assert seqs == sorted(seqs), f"{key} out of order: {seqs[:20]}"
        assert len(by[key]) == 1, f"{key} handled by {by[key]}"
    assert {i for found in by.values() for i in found} == {"i0", "i1", "i2"}, by


async def test_quorum_queues_by_default_leave_anonymous_subscriptions_classic(
    rabbit_cluster: RabbitCluster, names: Callable[[str], str], tmp_path: Path
) -> None:
    """``stream.rabbit.default.consumer.quorum`` makes every group's queue a quorum queue;
    an anonymous subscription's queue, exclusive to its connection, cannot be one (RabbitMQ
    refuses an exclusive quorum queue) and stays a classic queue, so an app with both
    starts."""
    from binder_core.properties import ConsumerProperties
    from binder_core.spi import ConsumerSpec
    from binders.rabbit.settings import RabbitConsumerProperties
    from tests.support import Collector

    source = names("in")
    env = RabbitEnvironment.model_validate({"addresses": rabbit_cluster.list()})
    driver = BinderDriver(RabbitBinder("rabbit", env))
    await driver.start()
    try:
        extension = RabbitConsumerProperties.model_validate(QUORUM)
        for group in ("relay", None):
            spec = ConsumerSpec("relay-in-0", source, group, ConsumerProperties(), extension)
            await driver.consumer(spec, Collector())
        queues = await asyncio.to_thread(rabbit_cluster.queues, 1)
        mine = {name: q["type"] for name, q in queues.items() if name.startswith(source)}
        assert mine[f"{source}.relay"] == "quorum", mine
        assert mine[f"{source}.relay.dlq"] == "quorum", mine
        [anonymous] = [n for n in mine if ".anonymous." in n]
        assert mine[anonymous] == "classic", mine
    finally:
        await driver.close()
