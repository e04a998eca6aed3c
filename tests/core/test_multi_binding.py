"""Functions with several outputs (a returned tuple, ``fn-out-0``, ``fn-out-1``) and stream
functions over several inputs (``fn-in-0``, ``fn-in-1``), as Spring names them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import BaseModel

from binder_core.functions import inspect_function
from binder_core.testing import TestApp


class Order(BaseModel):
    id: int
    amount: float


def test_signatures_give_the_binding_counts() -> None:
    def split(order: Order) -> tuple[Order | None, str | None]:
        return None, None

    async def join(a: AsyncIterator[int], b: AsyncIterator[str]) -> AsyncIterator[str]:
        yield ""

    assert inspect_function("split", split).outputs == 2
    info = inspect_function("join", join)
    assert (info.inputs, info.outputs, info.input_types) == (2, 1, (int, str))


async def test_a_returned_tuple_goes_to_each_output_and_none_sends_nothing() -> None:
    def split(order: Order) -> tuple[Order | None, str | None]:
        if order.amount >= 100:
            return order, f"big order {order.id}"
        return order, None

    tree = {
        "stream": {
            "bindings": {
                "split-in-0": {"destination": "orders", "group": "g"},
                "split-out-0": {"destination": "accepted"},
                "split-out-1": {"destination": "alerts", "content-type": "text/plain"},
            }
        }
    }
    async with TestApp({"split": split}, properties=tree) as app:
        for i, amount in enumerate((5, 150, 20, 300)):
            await app.send("orders", {"id": i, "amount": amount})
        accepted = await app.receive_all("accepted", 4)
        alerts = await app.receive_all("alerts", 2)
        assert [Order.model_validate_json(m.payload).id for m in accepted] == [0, 1, 2, 3]
        assert [m.payload for m in alerts] == [b"big order 1", b"big order 3"]
        assert app.pending("alerts") == 0


async def test_a_wrong_shape_is_dead_lettered_with_the_reason() -> None:
    def split(n: int) -> tuple[int, int]:
        return (n, n) if n else n  # type: ignore[return-value]

    tree = {"stream": {"bindings": {"split-in-0": {"destination": "ns", "group": "g"}}}}
    async with TestApp({"split": split}, properties=tree) as app:
        await app.send("ns", 0)
        await app.send("ns", 1)
        [dead] = await app.receive_all(app.dead_letter_destination("split-in-0"), 1)
        assert dead.payload == b"0"
        assert "tuple of 2" in dead.headers["x-exception-message"]
        assert [m.payload for m in await app.receive_all("split-out-1", 1)] == [b"1"]


async def test_a_stream_function_reads_several_inputs() -> None:
    async def pair(orders: AsyncIterator[Order], notes: AsyncIterator[str]) -> AsyncIterator[str]:
        async for order in orders:
            note = await anext(notes)
            yield f"{order.id}:{note}"

    tree = {
        "stream": {
            "bindings": {
                "pair-in-0": {"destination": "orders", "group": "g"},
                "pair-in-1": {"destination": "notes", "group": "g", "content-type": "text/plain"},
                "pair-out-0": {"destination": "pairs", "content-type": "text/plain"},
            }
        }
    }
    async with TestApp({"pair": pair}, properties=tree) as app:
        for i in range(3):
            await app.send("orders", {"id": i, "amount": 1})
        await asyncio.sleep(0.05)  # the orders wait for their notes
        assert app.pending("pairs") == 0
        for word in ("a", "b", "c"):
            await app.send("notes", word)
        got = await app.receive_all("pairs", 3)
        assert [m.payload for m in got] == [b"0:a", b"1:b", b"2:c"]


async def test_a_supplier_or_batch_function_returning_a_tuple_is_refused_at_start_up() -> None:
    import pytest

    from binder_core.errors import ConfigError

    def pair() -> tuple[int, int]:
        return 1, 2

    def totals(orders: list[Order]) -> tuple[float, float]:
        return 0.0, 0.0

    for name, fn, what in (("pair", pair, "a supplier"), ("totals", totals, "a batch function")):
        with pytest.raises(ConfigError) as caught:
            async with TestApp({name: fn}):
                pass
        message = str(caught.value)
        assert f"'{name}' is {what} returning a tuple of 2 outputs" in message, message
        assert "return a list" in message
