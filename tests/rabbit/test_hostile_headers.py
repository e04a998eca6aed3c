"""Crafted header tables against the real broker: a message pika cannot read (a table nested
thousands deep, one with thousands of values) arrives with the ``unreadable`` marker in
place of its table, its body intact, and the connection carries on with the messages
around it. Before, pika's recursive reader raised in the middle of the connection's input:
the connection closed, and the same message came back after every reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pika
import pytest

from binders.rabbit.connection import Connection
from binders.rabbit.headers import MAX_DEPTH, MAX_HEADERS, TableProperties, unreadable
from binders.rabbit.settings import RabbitEnvironment
from tests.rabbit.conftest import Admin
from tests.rabbit.frames import RawProperties, nested, properties, wide
from tests.support import eventually

pytestmark = pytest.mark.rabbit


def _publish(url: str, queue: str, messages: list[tuple[bytes, pika.BasicProperties]]) -> None:
    """Publish with confirms through a plain blocking pika client; ``RawProperties`` go on
    the wire exactly as crafted."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for body, props in messages:
            ch.basic_publish("", queue, body, props)
    finally:
        conn.close()


async def test_unreadable_header_tables_arrive_marked_and_the_connection_stays(
    rabbit_env: RabbitEnvironment, rabbit_url: str, admin: Admin, unique_name: Callable[[str], str]
) -> None:
    queue = unique_name("hostile")
    admin.queues.add(queue)
    conn = Connection(rabbit_env, "rabbit", "test")
    await conn.start()
    got: list[tuple[Any, bytes]] = []
    try:
        chan = await conn.channel()
        await chan.rpc(chan.raw.queue_declare, queue)

        def deliver(ch: Any, method: Any, props: Any, body: bytes) -> None:
            got.append((props, body))
            ch.basic_ack(method.delivery_tag)

        await chan.rpc(chan.raw.basic_consume, queue, deliver)
        good = {"n": 1, "ratio": 0.25, "x-death": [{"count": 2, "routing-keys": ["a"]}]}
        messages = [
            (b"before", TableProperties(content_type="text/plain", headers=good)),
            (b"deep", RawProperties(properties(nested(3000), message_id="m-deep"))),
            (b"wide", RawProperties(properties(wide(MAX_HEADERS + 1), message_id="m-wide"))),
            (b"limit", RawProperties(properties(nested(MAX_DEPTH)))),
            (b"after", TableProperties(content_type="text/plain", headers=good)),
        ]
        await asyncio.to_thread(_publish, rabbit_url, queue, messages)
        await eventually(lambda: len(got) >= len(messages), "every message", 20)

        assert [body for _, body in got] == [b"before", b"deep", b"wide", b"limit", b"after"]
        before, deep, many, limit, after = (props for props, _ in got)
        assert before.headers == good and after.headers == good
        assert unreadable(before.headers) is None and unreadable(limit.headers) is None
        assert unreadable(deep.headers) == f"header table nested deeper than {MAX_DEPTH} levels"
        assert unreadable(many.headers) == f"header table holds more than {MAX_HEADERS} headers"
        # The properties around the table are kept: the message can be traced.
        assert (deep.content_type, deep.message_id, deep.delivery_mode) == (
            "text/plain",
            "m-deep",
            2,
        )
        assert many.message_id == "m-wide"
        # One connection all along: no reconnect, no redelivery loop.
        assert conn.is_up and conn.generation == 1 and chan.closed is None
    finally:
        await conn.close()


async def test_a_forged_marker_is_an_ordinary_header(
    rabbit_env: RabbitEnvironment, rabbit_url: str, admin: Admin, unique_name: Callable[[str], str]
) -> None:
    """The marker is a type, not a name: a publisher writing the marker's header name gets
    an ordinary header, never a dead-lettered message."""
    from binders.rabbit.headers import UNREADABLE

    queue = unique_name("forged")
    admin.queues.add(queue)
    conn = Connection(rabbit_env, "rabbit", "test")
    await conn.start()
    got: list[Any] = []
    try:
        chan = await conn.channel()
        await chan.rpc(chan.raw.queue_declare, queue)
        await chan.rpc(
            chan.raw.basic_consume,
            queue,
            lambda _ch, _m, props, _b: got.append(props),
            auto_ack=True,
        )
        forged = TableProperties(headers={UNREADABLE: "made up"})
        await asyncio.to_thread(_publish, rabbit_url, queue, [(b"x", forged)])
        await eventually(lambda: got, "the message", 20)
        assert got[0].headers == {UNREADABLE: "made up"}
        assert unreadable(got[0].headers) is None
    finally:
        await conn.close()
