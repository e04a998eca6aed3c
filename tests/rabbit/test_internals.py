"""What the RabbitMQ binder overrides or reads below pika's public API
(``binders/rabbit/internals.py``) is still there: when a pika release renames or drops it,
this fails and names the attribute, instead of the binder failing somewhere at run time."""

from __future__ import annotations

import asyncio
from typing import Any

import pika
import pytest
from pika.adapters.asyncio_connection import AsyncioConnection

from binders.rabbit.internals import CoalescingConnection

pytestmark = pytest.mark.rabbit

#: Methods of pika's connection that CoalescingConnection overrides: pika must still call
#: them by these names, or our overrides silently stop taking effect.
OVERRIDDEN = ("_adapter_emit_data", "_read_frame")
#: Attributes of a live connection that the overrides read.
READ = ("_frame_buffer", "_transport")


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_pika_still_has_the_methods_we_override(name: str) -> None:
    assert callable(getattr(AsyncioConnection, name, None)), (
        f"pika's AsyncioConnection has no method {name!r} any more: "
        "binders/rabbit/internals.py overrides it"
    )
    assert getattr(CoalescingConnection, name) is not getattr(AsyncioConnection, name)


async def test_a_live_connection_has_the_attributes_we_read(rabbit_url: str) -> None:
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[Any] = loop.create_future()
    conn = CoalescingConnection(
        pika.URLParameters(rabbit_url),
        on_open_callback=lambda c: opened.set_result(c),
        on_open_error_callback=lambda c, e: opened.set_exception(RuntimeError(str(e))),
        custom_ioloop=loop,
    )
    await asyncio.wait_for(opened, 10)
    try:
        for name in READ:
            assert hasattr(conn, name), (
                f"a live pika connection has no attribute {name!r} any more: "
                "binders/rabbit/internals.py reads it"
            )
        # And the overrides really carry the connection: a channel opens through them.
        channel_open: asyncio.Future[Any] = loop.create_future()
        conn.channel(on_open_callback=lambda ch: channel_open.set_result(ch))
        await asyncio.wait_for(channel_open, 10)
    finally:
        closed: asyncio.Future[None] = loop.create_future()
        conn.add_on_close_callback(lambda *_: closed.done() or closed.set_result(None))
        conn.close()
        await asyncio.wait_for(closed, 10)
