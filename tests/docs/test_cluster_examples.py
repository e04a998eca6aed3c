"""The YAML of the guide's page on clusters (docs/clusters.md), started on the three-node
clusters of ``scripts/brokers up --cluster`` and checked to do what the page says: Kafka
topics with three replicas and no durability warning, RabbitMQ group and dead-letter
queues that are quorum queues on every node; a message goes through each.

Only what cannot be the same here changes (the page says so): the addresses point at the
local clusters, RabbitMQ's user is guest, and destinations and groups get names of their
own."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import pika
import pytest

import apps.uppercase
from tests.cluster.conftest import (  # noqa: F401  (fixtures)
    RABBIT_NAMES,
    KafkaCluster,
    RabbitCluster,
    kafka_cluster,
    kafka_cluster_session,
    names,
    quiet,
    rabbit_cluster,
    rabbit_cluster_session,
)
from tests.docs.blocks import by_id
from tests.docs.test_broker_examples import running, tree_of
from tests.support import eventually

pytestmark = pytest.mark.cluster


async def test_the_kafka_cluster_example_replicates_every_topic(
    kafka_cluster: KafkaCluster,  # noqa: F811  (the fixture imported above)
    names: Callable[[str], str],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    tree = tree_of(by_id("cluster-kafka"))
    stream = tree["stream"]
    assert stream["kafka"]["binder"]["replication-factor"] == 3
    words, shouted, group = names("words"), names("shouted"), names("shouters")
    stream["binders"]["kafka"]["environment"]["bootstrap-servers"] = kafka_cluster.bootstrap
    stream["bindings"]["uppercase-in-0"].update(destination=words, group=group)
    stream["bindings"]["uppercase-out-0"]["destination"] = shouted
    producer = AIOKafkaProducer(bootstrap_servers=kafka_cluster.bootstrap, acks="all")
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_cluster.bootstrap)
    with caplog.at_level(logging.WARNING, logger="binders.kafka"), quiet("aiokafka"):
        async with running(apps.uppercase, tree):
            for topic in (words, shouted, f"error.{words}.{group}"):
                replicas = await kafka_cluster.replicas(topic)
                assert len(replicas) == 6, (topic, replicas)  # min-partition-count
                assert all(len(r) == 3 for _, r, _ in replicas.values()), (topic, replicas)
            await producer.start()
            await reader.start()
            try:
                await producer.send_and_wait(words, b'"hello"')
                tps = [TopicPartition(shouted, p) for p in range(6)]
                reader.assign(tps)
                await reader.seek_to_beginning(*tps)
                got: list[bytes] = []

                async def read() -> bool:
                    batch = await reader.getmany(timeout_ms=200)
                    got.extend(r.value or b"" for rs in batch.values() for r in rs)
                    return bool(got)

                await eventually(read, "the shouted word", 30)
            finally:
                await producer.stop()
                await reader.stop()
    assert got == [b'"HELLO"']
    warned = [r.getMessage() for r in caplog.records if "can be lost" in r.getMessage()]
    assert not warned


async def test_the_rabbit_cluster_example_makes_quorum_queues_on_every_node(
    rabbit_cluster: RabbitCluster,  # noqa: F811  (the fixture imported above)
    names: Callable[[str], str],  # noqa: F811
) -> None:
    tree = tree_of(by_id("cluster-rabbit"))
    stream = tree["stream"]
    words, shouted = names("words"), names("shouted")
    environment = stream["binders"]["rabbit"]["environment"]
    assert len(environment["addresses"].split(",")) == 3
    environment.update(addresses=rabbit_cluster.list(), username="guest", password="guest")
    stream["bindings"]["uppercase-in-0"]["destination"] = words
    stream["bindings"]["uppercase-out-0"]["destination"] = shouted
    with quiet("pika"):
        async with running(apps.uppercase, tree):
            queues = await asyncio.to_thread(rabbit_cluster.queues, 1)
            for queue in (f"{words}.shouters", f"{shouted}.loud"):
                for name in (queue, f"{queue}.dlq"):
                    assert queues[name]["type"] == "quorum", (name, queues[name])
                    assert set(queues[name]["members"]) == set(RABBIT_NAMES.values())

            def publish() -> None:
                host, _, port = rabbit_cluster.addresses[3].rpartition(":")
                connection = pika.BlockingConnection(pika.ConnectionParameters(host, int(port)))
                try:
                    channel = connection.channel()
                    channel.confirm_delivery()
                    properties = pika.BasicProperties(
                        content_type="application/json", delivery_mode=2
                    )
                    channel.basic_publish(words, words, b'"hello"', properties, mandatory=True)
                finally:
                    connection.close()

            await asyncio.to_thread(publish)

            async def arrived() -> bool:
                return await asyncio.to_thread(rabbit_cluster.ready, f"{shouted}.loud", 2) > 0

            await eventually(arrived, "the shouted word", 30)
    got = await asyncio.to_thread(rabbit_cluster.drain, f"{shouted}.loud", 2, 0.5)
    assert [json.loads(body) for _, body in got] == ["HELLO"]
