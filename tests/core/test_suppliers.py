"""A supplier goes on whatever one value does: the functions composed after it are retried
per value and the value is then given up and logged; a value that cannot be encoded is
logged and skipped; a supplier that raises is polled again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import binder_core.suppliers as suppliers
from binder_core.conversion import to_json
from binder_core.output import Output
from binder_core.properties import ProducerProperties
from binder_core.retry import RetryPolicy
from binder_core.testing import TestApp

FAST = RetryPolicy(max_attempts=3, initial_ms=1, multiplier=1.0, max_ms=1)
SECRET = "card 4111-1111"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suppliers, "SUPPLIER_RETRY", FAST)


@dataclass
class Unencodable:
    """Not JSON: pydantic-core cannot write an arbitrary object holding one."""

    inner: object


def polled(definition: str, **bindings: Any) -> dict[str, Any]:
    return {
        "stream": {
            "function": {"definition": definition},
            "poller": {"fixed-delay": 1},
            "bindings": bindings,
        }
    }


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_composed_function_that_fails_or_returns_the_unsendable_does_not_stop_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = iter(range(1, 1_000_000))
    attempts: dict[int, int] = {}

    def tick() -> int:
        return next(counter)

    def check(n: int) -> Any:
        attempts[n] = attempts.get(n, 0) + 1
        if n == 2:
            raise ValueError(f"rejected {SECRET}")
        if n == 3 and attempts[n] == 1:
            raise ConnectionError("flaky, once")
        if n == 4:
            return Unencodable(object())
        return {"n": n}

    caplog.set_level(logging.DEBUG, "binder_core.suppliers")
    async with TestApp({"tick": tick, "check": check}, properties=polled("tick|check")) as app:
        got = await app.receive_all("tickcheck-out-0", 4)
        assert [m.payload for m in got] == [b'{"n":1}', b'{"n":3}', b'{"n":5}', b'{"n":6}']
    assert attempts[2] == FAST.max_attempts  # retried, then given up
    assert attempts[3] == 2  # a transient failure retried into success
    assert attempts[4] == 1  # an encoding failure is not retried
    lines = errors(caplog)
    given_up = [line for line in lines if "was given up" in line]
    assert len(given_up) == 1 and "tickcheck-out-0" in given_up[0]
    assert "after 3 attempts (ValueError)" in given_up[0]
    unsendable = [line for line in lines if "cannot be sent" in line]
    assert len(unsendable) == 1 and "ConversionError" in unsendable[0]
    # The value's words only at DEBUG.
    assert all(SECRET not in line for line in lines)
    assert any(SECRET in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


async def test_a_supplier_that_raises_by_itself_is_polled_again_and_logged_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    def source() -> str:
        nonlocal calls
        calls += 1
        if calls in (2, 3):
            raise RuntimeError(f"upstream said {SECRET}")
        return f"v{calls}"

    caplog.set_level(logging.WARNING, "binder_core.suppliers")
    tree = polled("source", **{"source-out-0": {"content-type": "text/plain"}})
    async with TestApp({"source": source}, properties=tree) as app:
        got = await app.receive_all("source-out-0", 2)
        assert [m.payload for m in got] == [b"v1", b"v4"]
    lines = errors(caplog)
    assert len([line for line in lines if "raised RuntimeError" in line]) == 2
    assert all(SECRET not in line for line in lines)


async def test_a_generator_supplier_goes_on_past_values_its_function_fails_on() -> None:
    def numbers() -> Iterator[int]:
        yield from range(10)

    def odd_only(n: int) -> int:
        if n % 2 == 0:
            raise ValueError("even")
        return n

    tree = polled("numbers|odd_only")
    async with TestApp({"numbers": numbers, "odd_only": odd_only}, properties=tree) as app:
        got = await app.receive_all("numbersodd_only-out-0", 5)
        assert [int(m.payload) for m in got] == [1, 3, 5, 7, 9]


async def test_a_value_a_text_binding_cannot_carry_is_skipped_not_fatal() -> None:
    def shapes() -> Iterator[Any]:
        yield "circle"
        yield {"not": "text"}
        yield "square"

    tree = polled("shapes", **{"shapes-out-0": {"content-type": "text/plain"}})
    async with TestApp({"shapes": shapes}, properties=tree) as app:
        got = await app.receive_all("shapes-out-0", 2)
        assert [m.payload for m in got] == [b"circle", b"square"]


async def test_an_async_generator_supplier_goes_on_past_a_failing_value() -> None:
    async def words() -> Any:
        for word in ("a", "boom", "c"):
            yield word

    def shout(word: str) -> str:
        if word == "boom":
            raise RuntimeError("no")
        return word.upper()

    tree = polled("words|shout")
    async with TestApp({"words": words, "shout": shout}, properties=tree) as app:
        got = await app.receive_all("wordsshout-out-0", 2)
        assert [m.payload for m in got] == [b"A", b"C"]


class _SlowConfirms:
    """A sink whose confirmations come only when the test says so: what reaches the
    client, and when, is what the sender is judged on."""

    def __init__(self) -> None:
        self.handed: list[bytes] = []
        self.release = asyncio.Event()

    def outbox(self, transaction: Any = None) -> Any:
        sink = self

        class Box:
            count = 0

            async def add(self, messages: Any) -> None:
                sink.handed.extend(m.payload for m in messages)
                self.count += len(messages)

            async def confirm(self) -> list[None]:
                await sink.release.wait()
                return [None] * self.count

        return Box()

    async def close(self) -> None:
        pass


def _sender(sink: _SlowConfirms, window: int = 4) -> suppliers.BatchingSender:
    out = Output("tick-out-0", "ticks", sink, to_json, "application/json", ProducerProperties())
    return suppliers.BatchingSender(out, max_batch=2, window=window)


async def test_a_value_is_handed_over_while_earlier_ones_wait_for_their_confirmation() -> None:
    sink = _SlowConfirms()
    sender = _sender(sink)
    await sender.add([1])
    await asyncio.sleep(0)  # the first flush hands its batch over, then waits
    await sender.add([2])
    await asyncio.sleep(0)
    assert sink.handed == [b"1", b"2"]  # not held back behind the first confirmation
    sink.release.set()
    await sender.drain()
    assert sender.lost == 0


async def test_batches_are_handed_over_in_order_and_a_full_window_holds_the_producer() -> None:
    sink = _SlowConfirms()
    sender = _sender(sink, window=2)
    await sender.add([1, 2])
    await sender.add([3, 4])
    adding = asyncio.ensure_future(sender.add([5, 6]))  # two batches out, the buffer full
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.handed == [b"1", b"2", b"3", b"4"]
    assert not adding.done()  # back-pressure: nothing more until a confirmation
    sink.release.set()
    await adding
    await sender.drain()
    assert sink.handed == [b"1", b"2", b"3", b"4", b"5", b"6"]


async def test_what_waited_for_a_full_window_goes_as_soon_as_there_is_room() -> None:
    sink = _SlowConfirms()
    sender = _sender(sink, window=1)
    await sender.add([1, 2])
    await sender.add([3])  # the window is full: 3 waits, and nothing more comes
    for _ in range(3):
        await asyncio.sleep(0)
    assert sink.handed == [b"1", b"2"]
    sink.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.handed == [b"1", b"2", b"3"]  # without another add or a drain
    await sender.drain()
