"""Polled consumers (Spring's PollableMessageSource) on the memory binder: the app pulls
messages when it wants, acknowledging them itself or through poll(handler)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from binder_core import Message, pollable
from binder_core.deadletter import EXCEPTION_MESSAGE
from binder_core.polling import PollingError
from binder_core.testing import TestApp


class Order(BaseModel):
    id: int


def _tree(**binding: Any) -> dict[str, Any]:
    return {
        "stream": {
            "pollable-source": "orders",
            "bindings": {
                "orders-in-0": {"destination": "orders", "group": "g"} | binding,
            },
            "default": {"consumer": {"max-attempts": 2, "back-off-initial-interval": 1}},
        }
    }


async def test_receive_converts_and_acknowledges_in_order() -> None:
    async with TestApp({}, properties=_tree()) as app:
        source = pollable("orders-in-0")
        assert await source.receive(Order) is None  # nothing there yet
        for i in range(3):
            await app.send("orders", {"id": i})
        got = []
        for _ in range(3):
            received = await source.receive(Order, timeout=1)
            assert received is not None
            got.append(received.value.id)
            await received.ack()
        assert got == [0, 1, 2]
        assert await source.receive(Order) is None


async def test_poll_runs_a_handler_with_retries_and_dead_letters_failures() -> None:
    async with TestApp({}, properties=_tree()) as app:
        source = pollable("orders-in-0")
        calls: list[int] = []

        def handle(order: Order) -> None:
            calls.append(order.id)
            if order.id == 1:
                raise ValueError("no")

        await app.send("orders", {"id": 0})
        await app.send("orders", {"id": 1})
        await app.send("orders", b"not json")
        assert await source.poll(handle, Order)
        assert await source.poll(handle, Order)
        assert not await source.poll(handle, Order)  # the third cannot be converted
        assert calls == [0, 1, 1]
        dead = await app.receive_all(app.dead_letter_destination("orders-in-0"), 2)
        assert [m.payload for m in dead] == [b'{"id":1}', b"not json"]
        assert "ValueError" not in dead[1].headers[EXCEPTION_MESSAGE]


async def test_rejected_messages_are_dead_lettered_and_raw_messages_are_available() -> None:
    async with TestApp({}, properties=_tree()) as app:
        source = pollable("orders-in-0")
        await app.send("orders", {"id": 5}, headers={"x": "y"})
        received = await source.receive(Message, timeout=1)
        assert received is not None
        assert received.value.headers["x"] == "y"
        await received.reject(ValueError("not today"))
        with pytest.raises(PollingError, match="decided already"):
            await received.ack()
        [dead] = await app.receive_all(app.dead_letter_destination("orders-in-0"), 1)
        assert dead.headers[EXCEPTION_MESSAGE] == "not today"


async def test_an_unknown_pollable_source_says_what_exists() -> None:
    async with TestApp({}, properties=_tree()):
        with pytest.raises(Exception, match="did you mean 'orders-in-0'"):
            pollable("order-in-0")


def _handler(failed: Any) -> None:
    pass


async def test_an_error_handler_on_a_polled_source_stops_start_up() -> None:
    from binder_core.errors import ConfigError

    tree = _tree(**{"error-handler-definition": "on_error"})
    with pytest.raises(ConfigError, match="a polled source has no error handler"):
        async with TestApp({"on_error": _handler}, properties=tree):
            pass
    # One for every binding (stream.default) passes a polled source by.
    tree = _tree()
    tree["stream"]["default"]["error-handler-definition"] = "on_error"
    async with TestApp({"on_error": _handler}, properties=tree):
        pass
