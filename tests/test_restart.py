"""The tests' broker restarts work on whatever broker listens on the port, without any
state of ``scripts/brokers``: each test finds the broker by its port, restarts it, and
checks it is the same broker (same command line, or the same RabbitMQ node) answering
again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pika
import pytest

from tests.brokers import broker_address
from tests.restart import (
    Launch,
    RestartError,
    _local_address,
    listening_pid,
    require_restartable,
    restart_kafka,
    restart_rabbit,
)


def test_proc_net_addresses_are_read_in_host_byte_order() -> None:
    assert _local_address("0100007F:2384") == ("127.0.0.1", 9092)
    assert _local_address("00000000:1628") == ("0.0.0.0", 5672)
    assert _local_address("0000000000000000FFFF00000100007F:2384") == ("127.0.0.1", 9092)
    assert _local_address("00000000000000000000000001000000:1628") == ("::1", 5672)


def test_a_port_nobody_listens_on_is_a_clear_error() -> None:
    with pytest.raises(RestartError, match=r"nothing listens on 127\.0\.0\.1:1$"):
        listening_pid(1)


async def test_only_loopback_brokers_are_restarted() -> None:
    with pytest.raises(RestartError, match="not on this machine's loopback"):
        await restart_kafka("192.0.2.1:9092")
    with pytest.raises(RestartError, match="not on this machine's loopback"):
        await restart_rabbit("amqp://guest:guest@192.0.2.1:5672/%2F")


def _files_naming(directory: str, pid: int) -> list[Path]:
    return [p for p in Path(directory).glob("*.pid") if p.read_text().strip() == str(pid)]


@pytest.mark.kafka
@pytest.mark.timeout(400)
async def test_kafka_is_restarted_by_the_pid_on_its_port(kafka_bootstrap: str) -> None:
    require_restartable("kafka")
    port = int(kafka_bootstrap.split(",")[0].rpartition(":")[2])
    old = listening_pid(port)
    before = Launch.of(old)
    pid_files = _files_naming(before.cwd, old)
    await restart_kafka(kafka_bootstrap)
    new = listening_pid(port)
    assert new != old
    after = Launch.of(new)
    assert (after.argv, after.cwd, after.uid, after.output) == (
        before.argv,
        before.cwd,
        before.uid,
        before.output,
    )
    for pid_file in pid_files:  # whoever tracked the old process now tracks the new one
        assert pid_file.read_text().strip() == str(new)


@pytest.mark.rabbit
@pytest.mark.timeout(300)
async def test_rabbitmq_is_bounced_on_the_node_behind_its_port(rabbit_url: str) -> None:
    require_restartable("rabbit")
    connection = await asyncio.to_thread(pika.BlockingConnection, pika.URLParameters(rabbit_url))
    node = listening_pid(pika.URLParameters(rabbit_url).port)
    try:
        await restart_rabbit(rabbit_url)
        # The connection made before is gone (stop_app drops every connection) ...
        with pytest.raises(pika.exceptions.AMQPError):
            await asyncio.to_thread(connection.channel)
    finally:
        if connection.is_open:
            connection.close()
    # ... the node process stayed, and it answers again.
    assert listening_pid(pika.URLParameters(broker_address("rabbit")).port) == node
