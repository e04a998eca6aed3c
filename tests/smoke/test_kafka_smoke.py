"""Kafka smoke tests with the raw aiokafka client: no binder code involved."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.kafka

DEADLINE_S = 30.0


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def new_topic(
    admin: AIOKafkaAdminClient, unique_name: Callable[[str], str]
) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Create single-partition topics through the admin protocol; delete them afterwards."""
    created: list[str] = []

    async def create(prefix: str) -> str:
        topic = unique_name(prefix)
        response = await admin.create_topics(
            [NewTopic(name=topic, num_partitions=1, replication_factor=1)]
        )
        for topic_error in response.topic_errors:
            assert topic_error[1] == 0, f"CreateTopics failed: {topic_error}"
        created.append(topic)
        return topic

    yield create
    if created:
        await admin.delete_topics(created)


async def consume_until_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> list[bytes]:
    """Read tp until the consumer's position reaches the end offset its isolation level sees
    (the last stable offset for read_committed), within a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    end = (await consumer.end_offsets([tp]))[tp]
    values: list[bytes] = []
    while await consumer.position(tp) < end:
        remaining = deadline - loop.time()
        if remaining <= 0:
            pytest.fail(f"{tp}: position {await consumer.position(tp)} never reached end {end}")
        batch = await consumer.getmany(tp, timeout_ms=int(min(remaining, 1.0) * 1000))
        values.extend(record.value for records in batch.values() for record in records)
    return values


async def test_kafka_produce_consume_commit(
    kafka_bootstrap: str,
    new_topic: Callable[[str], Awaitable[str]],
    unique_name: Callable[[str], str],
) -> None:
    topic = await new_topic("smoke")
    group = unique_name("smoke-group")
    payload = f"kafka-smoke-{uuid.uuid4().hex}".encode()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, payload, key=b"k")
    finally:
        await producer.stop()
    assert metadata.offset == 0

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        records: list[ConsumerRecord] = []
        while not records:
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"no record from {topic} within {DEADLINE_S}s")
            batch = await consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            records = [record for partition in batch.values() for record in partition]
        assert [(r.key, r.value) for r in records] == [(b"k", payload)]

        tp = TopicPartition(topic, 0)
        await consumer.commit()
        assert await consumer.committed(tp) == 1
        assert await consumer.end_offsets([tp]) == {tp: 1}
    finally:
        await consumer.stop()


async def test_kafka_transaction_consume_process_produce(
    kafka_bootstrap: str,
    new_topic: Callable[[str], Awaitable[str]],
    unique_name: Callable[[str], str],
) -> None:
    """Exactly-once building blocks: a transactional producer, offsets committed inside the
    transaction, and a read_committed consumer that never sees an aborted write."""
    source, sink = await new_topic("tx-in"), await new_topic("tx-out")
    group = unique_name("tx-group")
    payload = f"kafka-tx-{uuid.uuid4().hex}".encode()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(source, payload)
    finally:
        await producer.stop()

    source_tp, sink_tp = TopicPartition(source, 0), TopicPartition(sink, 0)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    transactional = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("tx")
    )
    await consumer.start()
    await transactional.start()
    try:
        assert await consume_until_end(consumer, source_tp) == [payload]
        async with transactional.transaction():
            await transactional.send(sink, payload.upper())
            await transactional.send_offsets_to_transaction({source_tp: 1}, group)
        with pytest.raises(RuntimeError, match="abort this one"):
            async with transactional.transaction():
                await transactional.send(sink, b"aborted")
                raise RuntimeError("abort this one")
        assert await consumer.committed(source_tp) == 1
    finally:
        await transactional.stop()
        await consumer.stop()

    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        reader.assign([sink_tp])
        assert await consume_until_end(reader, sink_tp) == [payload.upper()]
    finally:
        await reader.stop()
