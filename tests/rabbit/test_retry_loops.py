"""Retry loops that cannot spin, and producers that refuse once closed, on the real broker.

A destination name over AMQP's 255 bytes made pika raise before sending anything; the
declare loop took that for a lost connection and tried again at once, forever, without
yielding: 100% CPU and Ctrl-C ignored. A publisher whose channel was closing (or that was
closed) looped the same way. Errors raised before anything is sent are now final, every
loop that retries waits a growing pause, and a closed publisher raises at once.

The tests that would spin on the old code carry a short ``timeout`` mark: pytest-timeout's
alarm interrupts even a loop that never yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pytest

from binder_core.errors import ProducerClosedError
from binders.rabbit.connection import Connection
from binders.rabbit.provisioning import ProvisioningError, Topology
from binders.rabbit.publisher import Item, Publisher
from binders.rabbit.settings import RabbitEnvironment
from tests.rabbit.conftest import Admin
from tests.support import REPO, eventually

pytestmark = pytest.mark.rabbit

Namer = Callable[[str], str]


async def _connection(env: RabbitEnvironment) -> Connection:
    conn = Connection(env, "rabbit", "test")
    await conn.start()
    return conn


def _items(n: int, routing_key: str) -> list[Item]:
    props = pika.BasicProperties(delivery_mode=2)
    return [(routing_key, f"m{i}".encode(), props) for i in range(n)]


@pytest.mark.timeout(60)
def test_binder_send_to_an_over_long_destination_fails_at_once_with_a_clear_error(
    rabbit_url: str,
) -> None:
    argv = [str(Path(sys.executable).with_name("binder")), "send", "d" * 300, "x"]
    argv += ["--binder", "rabbit", "--profile", "rabbit"]
    if os.environ.get("RABBITMQ_URL"):
        argv += ["--set", f"stream.binders.rabbit.environment.uri={rabbit_url}"]
    started = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=45)
    spent = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert spent < 30, f"took {spent:.1f}s"
    assert "255" in output and "Traceback" not in output, output


@pytest.mark.timeout(30)
async def test_a_name_amqp_cannot_carry_is_refused_before_anything_is_sent(
    rabbit_env: RabbitEnvironment,
) -> None:
    conn = await _connection(rabbit_env)
    topology = Topology(conn)
    try:
        with pytest.raises(ProvisioningError) as caught:
            await topology.exchange("d" * 300, "topic", True, False)
        text = str(caught.value)
        assert "300 bytes" in text and "at most 255" in text and "d" * 41 not in text
        with pytest.raises(ProvisioningError, match="routing key is 256 bytes"):
            await topology.bind("q", "x", "é" * 128)
    finally:
        await topology.close()
        await conn.close()


@pytest.mark.timeout(30)
async def test_an_error_pika_raises_before_sending_is_final_not_retried(
    rabbit_env: RabbitEnvironment, admin: Admin, unique_name: Namer
) -> None:
    """Anything pika refuses locally (here a queue argument of no AMQP type) is raised at
    once as a provisioning error; the loop used to retry it without ever yielding."""
    conn = await _connection(rabbit_env)
    topology = Topology(conn)
    queue = unique_name("q")
    admin.queues.add(queue)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ProvisioningError, match=f"declaring queue '{queue}'"):
            await topology.queue(queue, arguments={"x-whatever": object()})
        assert asyncio.get_running_loop().time() - started < 5
        # The admin channel is still usable afterwards.
        await topology.queue(queue)
        assert await admin.state(queue) == (0, 0)
    finally:
        await topology.close()
        await conn.close()


@pytest.mark.timeout(30)
async def test_a_closed_publisher_raises_at_once(
    rabbit_env: RabbitEnvironment, admin: Admin, unique_name: Namer
) -> None:
    conn = await _connection(rabbit_env)
    queue = unique_name("q")
    admin.queues.add(queue)
    publisher = Publisher(conn)
    try:
        await admin.state(queue)
        chan = await conn.channel()
        await chan.rpc(chan.raw.queue_declare, queue)
        assert await publisher.publish("", _items(3, queue), False) == {}
        await publisher.close()
        for _ in range(3):  # every time, without waiting
            with pytest.raises(ProducerClosedError, match="exchange '': its producer is closed"):
                await publisher.publish("", _items(1, queue), False)
        assert await admin.depth(queue) == 3
    finally:
        await conn.close()
    # A publisher whose connection was closed is closed too.
    with pytest.raises(ProducerClosedError):
        await Publisher(conn).publish("", _items(1, queue), False)


@pytest.mark.timeout(30)
async def test_closing_a_publisher_ends_a_publish_that_waits_for_its_confirms(
    rabbit_env: RabbitEnvironment, admin: Admin, unique_name: Namer
) -> None:
    """A publish waiting for confirms when its publisher closes either got all of them
    before the channel closed, or raises: it never opens another channel to publish the
    rest (it used to, through a publisher that was closed)."""
    conn = await _connection(rabbit_env)
    publisher = Publisher(conn)
    try:
        queue = unique_name("q")
        admin.queues.add(queue)
        chan = await conn.channel()
        await chan.rpc(chan.raw.queue_declare, queue)
        assert await publisher.publish("", _items(1, queue), False) == {}  # channel open
        pending = asyncio.ensure_future(publisher.publish("", _items(20_000, queue), False))
        await asyncio.sleep(0)  # the batch is written; its confirms are outstanding
        assert not pending.done()
        await publisher.close()
        with contextlib.suppress(ProducerClosedError):
            assert await asyncio.wait_for(pending, 10) == {}  # every confirm came first
        assert publisher._channel is None
    finally:
        await conn.close()


@pytest.mark.timeout(30)
async def test_a_publish_on_a_closing_channel_waits_for_a_new_one_instead_of_spinning(
    rabbit_env: RabbitEnvironment, admin: Admin, unique_name: Namer
) -> None:
    """pika refuses a publish on a channel that is closing before the close is confirmed;
    until then the channel still looked open, and the publish loop retried on it without
    yielding, so the confirmation that would have ended it never arrived."""
    conn = await _connection(rabbit_env)
    publisher = Publisher(conn)
    queue = unique_name("q")
    admin.queues.add(queue)
    try:
        chan = await conn.channel()
        await chan.rpc(chan.raw.queue_declare, queue)
        assert await publisher.publish("", _items(1, queue), False) == {}
        current: Any = publisher._channel
        current.chan.raw.close()  # closing: CloseOk not back yet
        assert current.chan.closed is None
        assert await asyncio.wait_for(publisher.publish("", _items(5, queue), False), 10) == {}
        assert publisher._channel is not current

        async def six() -> bool:
            return await admin.depth(queue) == 6

        await eventually(six, "all six messages", 10)
    finally:
        await publisher.close()
        await conn.close()
