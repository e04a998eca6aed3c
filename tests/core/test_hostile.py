"""Hostile input on the memory binder, through a real app: one bad message never stops a
stream, batch mode fails only the bad messages, stopping waits once for all bindings, and a
required group nobody reads is reported instead of stalling silently."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from pydantic import BaseModel

from binder_core.deadletter import EXCEPTION_FQCN, EXCEPTION_MESSAGE
from binder_core.testing import TestApp


class Order(BaseModel):
    id: int


POISON: list[tuple[str, Any, dict[str, Any]]] = [
    ("not JSON", b"{nope", {}),
    ("JSON nested far too deep", b"[" * 50_000 + b"]" * 50_000, {}),
    ("not an order", b'{"id": "seven"}', {}),
    ("a contentType header that is a map", b'{"id": 1}', {"contentType": {"a": 1}}),
    ("a contentType header that is a number", b'{"id": 2}', {"contentType": 7}),
]


async def test_poison_messages_are_dead_lettered_and_the_stream_goes_on() -> None:
    seen: list[int] = []

    def take(order: Order) -> None:
        seen.append(order.id)

    tree = {"stream": {"bindings": {"take-in-0": {"destination": "orders", "group": "g"}}}}
    async with TestApp({"take": take}, properties=tree) as app:
        for i, (_, payload, headers) in enumerate(POISON):
            await app.send("orders", {"id": 100 + i})
            await app.send("orders", payload, headers=headers)
        await app.send("orders", {"id": 999})
        dead = await app.receive_all(app.dead_letter_destination("take-in-0"), len(POISON))
        for _ in range(100):
            if 999 in seen:
                break
            await asyncio.sleep(0.01)
        assert seen == [100 + i for i in range(len(POISON))] + [999]
        for (what, payload, _), letter in zip(POISON, dead, strict=True):
            assert letter.payload == payload, what
            assert letter.headers[EXCEPTION_FQCN].endswith("ConversionError"), what
            assert letter.headers[EXCEPTION_MESSAGE], what
        assert app.app is not None
        binding = app.app.bindings["take-in-0"]
        assert binding.ready and binding.stats.restarts == 0


async def test_an_output_that_is_not_json_is_dead_lettered_not_sent() -> None:
    def ratio(n: int) -> float:
        return float("nan") if n == 0 else 1 / n

    tree = {
        "stream": {
            "bindings": {
                "ratio-in-0": {"destination": "ns", "group": "g"},
                "ratio-out-0": {"destination": "ratios"},
            }
        }
    }
    async with TestApp({"ratio": ratio}, properties=tree) as app:
        for n in (2, 0, 4):
            await app.send("ns", n)
        outputs = await app.receive_all("ratios", 2)
        assert [m.payload for m in outputs] == [b"0.5", b"0.25"]
        [dead] = await app.receive_all(app.dead_letter_destination("ratio-in-0"), 1)
        assert dead.payload == b"0"
        assert (
            "NaN" in dead.headers[EXCEPTION_MESSAGE]
            or "nan" in dead.headers[EXCEPTION_MESSAGE].lower()
        )


async def test_batch_mode_dead_letters_only_the_messages_it_cannot_convert() -> None:
    batches: list[list[int]] = []

    def total(orders: list[Order]) -> None:
        batches.append([o.id for o in orders])

    tree = {
        "stream": {
            "bindings": {
                "total-in-0": {
                    "destination": "orders",
                    "group": "g",
                    "consumer": {"batch-mode": True},
                }
            }
        }
    }
    async with TestApp({"total": total}, properties=tree) as app:
        assert app.app is not None
        await app.app.bindings["total-in-0"].pause()  # gather all ten into one batch
        for i in range(10):
            await app.send("orders", b"{broken" if i == 4 else {"id": i})
        await app.app.bindings["total-in-0"].resume()
        [dead] = await app.receive_all(app.dead_letter_destination("total-in-0"), 1)
        assert dead.payload == b"{broken"
        for _ in range(100):
            if batches:
                break
            await asyncio.sleep(0.01)
        assert [i for b in batches for i in b] == [0, 1, 2, 3, 5, 6, 7, 8, 9]


async def test_stopping_waits_the_drain_timeout_once_for_all_bindings() -> None:
    """Three bindings each holding a message that never finishes: stop gives up after one
    drain-timeout in total, not one per binding."""
    gate = asyncio.Event()

    async def slow(word: str) -> None:
        await gate.wait()

    fns = {"a": slow, "b": slow, "c": slow}
    tree = {
        "stream": {
            "function": {"definition": "a;b;c"},
            "memory": {"binder": {"drain-timeout": 600}},
            "bindings": {
                f"{n}-in-0": {"destination": n, "group": "g", "content-type": "text/plain"}
                for n in fns
            },
        }
    }
    app = TestApp(fns, properties=tree)
    await app.__aenter__()
    try:
        for n in fns:
            await app.send(n, "x")
        await asyncio.sleep(0.05)  # each binding takes its message
    finally:
        started = time.monotonic()
        await app.__aexit__(None, None, None)
        took = time.monotonic() - started
        gate.set()
    assert took < 2.0, f"stopping took {took:.1f} s: the drain timeout was waited per binding"


async def test_a_full_required_group_nobody_reads_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def tick() -> int:
        return 1

    tree = {
        "stream": {
            "poller": {"fixed-delay": 0},
            "memory": {"binder": {"buffer-size": 5}},
            "bindings": {
                "tick-out-0": {"destination": "ticks", "producer": {"required-groups": ["audit"]}}
            },
        }
    }
    with caplog.at_level(logging.WARNING, logger="binders.memory.broker"):
        async with TestApp({"tick": tick}, properties=tree):
            for _ in range(200):
                if "audit" in caplog.text:
                    break
                await asyncio.sleep(0.01)
    warnings = [r for r in caplog.records if "has no consumer" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "'audit'" in warnings[0].getMessage()
