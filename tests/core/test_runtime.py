"""Apps on the memory binder, end to end through the core: conversion, composition,
retries, dead letters, batches, stream functions, suppliers, StreamBridge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from binder_core import Message, StreamBridge
from binder_core.deadletter import EXCEPTION_FQCN, EXCEPTION_MESSAGE, ORIGINAL_TOPIC
from binder_core.errors import ConfigError
from binder_core.testing import TestApp
from tests.support import eventually

FAST_RETRY = {"default": {"consumer": {"back-off-initial-interval": 1, "back-off-max-interval": 5}}}


def props(bindings: dict[str, Any] | None = None, **stream: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {**FAST_RETRY, **stream}
    if bindings:
        tree["bindings"] = bindings
    return {"stream": tree}


class Tick(BaseModel):
    symbol: str
    price: float


@dataclass
class Point:
    x: int
    y: int


async def test_text_function_round_trip() -> None:
    def uppercase(word: str) -> str:
        return word.upper()

    async with TestApp({"uppercase": uppercase}, properties=props()) as app:
        await app.send("uppercase-in-0", b"hello")
        out = await app.receive("uppercase-out-0")
        assert out.payload == b"HELLO"
        # Sent as it is, as Spring does, but not labelled JSON: it is not JSON.
        assert out.headers["contentType"] == "text/plain"


async def test_pydantic_dataclass_dict_and_headers() -> None:
    def tick(t: Tick) -> dict[str, Any]:
        return {"symbol": t.symbol, "double": t.price * 2}

    def point(p: Point) -> Point:
        return Point(p.y, p.x)

    def headers(m: Message[dict[str, int]]) -> Message[int]:
        return Message(m.payload["n"] + 1, {"seen": m.headers["trace"]})

    fns = {"tick": tick, "point": point, "headers": headers}
    async with TestApp(fns, properties=props()) as app:
        await app.send("tick-in-0", {"symbol": "A", "price": 1.5})
        assert json.loads((await app.receive("tick-out-0")).payload) == {
            "symbol": "A",
            "double": 3.0,
        }
        await app.send("point-in-0", {"x": 1, "y": 2})
        assert json.loads((await app.receive("point-out-0")).payload) == {"x": 2, "y": 1}
        await app.send("headers-in-0", {"n": 41}, headers={"trace": "t-1"})
        out = await app.receive("headers-out-0")
        assert (out.payload, out.headers["seen"]) == (b"42", "t-1")


async def test_composition_filter_and_fan_out() -> None:
    def parse(line: str) -> Iterator[str]:
        yield from line.split()

    def keep_long(word: str) -> str | None:
        return word if len(word) > 2 else None

    async def shout(word: str) -> str:
        return word.upper()

    fns = {"parse": parse, "keep_long": keep_long, "shout": shout}
    async with TestApp(
        fns, properties=props(function={"definition": "parse|keep_long|shout"})
    ) as app:
        await app.send("parsekeep_longshout-in-0", "a quick brown ox jumps")
        got = [m.payload for m in await app.receive_all("parsekeep_longshout-out-0", 3)]
        assert got == [b"QUICK", b"BROWN", b"JUMPS"]
        with pytest.raises(TimeoutError):
            await app.receive("parsekeep_longshout-out-0", timeout=0.1)


async def test_renamed_bindings_and_destinations() -> None:
    def echo(x: str) -> str:
        return x

    tree = props(
        {"in": {"destination": "source"}, "out": {"destination": "sink"}},
        function={"bindings": {"echo-in-0": "in", "echo-out-0": "out"}},
    )
    async with TestApp({"echo": echo}, properties=tree) as app:
        await app.send("source", "x")
        assert (await app.receive("sink")).payload == b"x"


async def test_retry_then_success_counts_attempts() -> None:
    attempts: dict[str, int] = {}

    def flaky(word: str) -> str:
        attempts[word] = attempts.get(word, 0) + 1
        if attempts[word] < 3:
            raise RuntimeError("not yet")
        return word

    async with TestApp({"flaky": flaky}, properties=props()) as app:
        for w in ("a", "b"):
            await app.send("flaky-in-0", w)
        got = await app.receive_all("flaky-out-0", 2)
        assert [m.payload for m in got] == [b"a", b"b"]
        assert attempts == {"a": 3, "b": 3}
        assert app.pending(app.dead_letter_destination("flaky-in-0")) == 0


async def test_exhausted_retries_dead_letter_with_reason_and_stream_goes_on() -> None:
    calls: list[str] = []

    def picky(word: str) -> str:
        calls.append(word)
        if word == "bad":
            raise ValueError("bad word")
        return word

    tree = props({"picky-in-0": {"destination": "words", "group": "g"}})
    async with TestApp({"picky": picky}, properties=tree) as app:
        for w in ("ok1", "bad", "ok2"):
            await app.send("words", w, headers={"origin": "test"})
        got = await app.receive_all("picky-out-0", 2)
        assert [m.payload for m in got] == [b"ok1", b"ok2"]
        dlq = app.dead_letter_destination("picky-in-0")
        assert dlq == "error.words.g"
        dead = await app.receive(dlq)
        assert dead.payload == b"bad"
        assert dead.headers["origin"] == "test"
        assert dead.headers[EXCEPTION_MESSAGE] == "bad word"
        assert dead.headers[EXCEPTION_FQCN] == "builtins.ValueError"
        assert dead.headers[ORIGINAL_TOPIC] == "words"
        assert calls.count("bad") == 3


async def test_conversion_error_is_dead_lettered_without_retry() -> None:
    calls = 0

    def typed(t: Tick) -> str:
        nonlocal calls
        calls += 1
        return t.symbol

    async with TestApp({"typed": typed}, properties=props()) as app:
        await app.send("typed-in-0", b"{not json")
        await app.send("typed-in-0", {"symbol": "OK", "price": 1})
        assert (await app.receive("typed-out-0")).payload == b"OK"
        dead = await app.receive(app.dead_letter_destination("typed-in-0"))
        assert dead.payload == b"{not json"
        assert "ConversionError" in dead.headers[EXCEPTION_FQCN]
        assert calls == 1


async def test_retryable_exceptions_by_name() -> None:
    calls = 0

    def fails(x: str) -> str:
        nonlocal calls
        calls += 1
        raise KeyError(x)

    tree = props({"fails-in-0": {"consumer": {"retryable-exceptions": {"LookupError": False}}}})
    async with TestApp({"fails": fails}, properties=tree) as app:
        await app.send("fails-in-0", "k")
        await app.receive(app.dead_letter_destination("fails-in-0"))
        assert calls == 1


async def test_batch_mode_delivers_lists_and_fails_as_a_whole() -> None:
    sizes: list[int] = []

    def total(values: list[int]) -> int:
        sizes.append(len(values))
        if 13 in values:
            raise ValueError("unlucky")
        return sum(values)

    tree = props({"total-in-0": {"consumer": {"batch-mode": True, "max-attempts": 1}}})
    async with TestApp({"total": total}, properties=tree) as app:
        for i in range(1, 6):
            await app.send("total-in-0", i)
        # The batch holds whatever was waiting when the consumer took it.
        got = 0
        while got < 15:
            got += int((await app.receive("total-out-0")).payload)
        assert got == 15 and sum(sizes) == 5
        await app.send("total-in-0", 13)
        dead = await app.receive(app.dead_letter_destination("total-in-0"))
        assert dead.payload == b"13"


async def test_stream_function_keeps_state_and_restarts_after_failure() -> None:
    starts = 0

    async def running_total(values: AsyncIterator[int]) -> AsyncIterator[int]:
        nonlocal starts
        starts += 1
        total = 0
        async for v in values:
            if v < 0:
                raise ValueError("negative")
            total += v
            yield total

    tree = props({"running_total-in-0": {"consumer": {"max-attempts": 2}}})
    async with TestApp({"running_total": running_total}, properties=tree) as app:
        for v in (1, 2, 3):
            await app.send("running_total-in-0", v)
        got = [int(m.payload) for m in await app.receive_all("running_total-out-0", 3)]
        assert got == [1, 3, 6]
        await app.send("running_total-in-0", -1)
        dead = await app.receive(app.dead_letter_destination("running_total-in-0"))
        assert dead.payload == b"-1"
        assert starts == 2  # the first run, then a fresh start for the second attempt
        await app.send("running_total-in-0", 5)
        assert int((await app.receive("running_total-out-0")).payload) == 5  # state is new
        assert starts == 3


async def test_generator_supplier_runs_to_exhaustion() -> None:
    def numbers() -> Iterator[int]:
        yield from range(1000)

    async with TestApp({"numbers": numbers}, properties=props()) as app:
        got = await app.receive_all("numbers-out-0", 1000)
        assert [int(m.payload) for m in got] == list(range(1000))


async def test_polled_supplier_uses_fixed_delay() -> None:
    count = 0

    async def poll() -> int | None:
        nonlocal count
        count += 1
        return count if count % 2 else None  # None sends nothing

    async with TestApp({"poll": poll}, properties=props(poller={"fixed-delay": 1})) as app:
        got = await app.receive_all("poll-out-0", 3)
        assert [int(m.payload) for m in got] == [1, 3, 5]


async def test_two_groups_each_get_everything_members_compete() -> None:
    seen: dict[str, list[int]] = {"a1": [], "a2": [], "b": []}

    def make(name: str) -> Any:
        async def consume(n: int) -> None:
            seen[name].append(n)
            await asyncio.sleep(0)

        return consume

    tree = props(
        {
            "a1-in-0": {"destination": "d", "group": "a"},
            "a2-in-0": {"destination": "d", "group": "a"},
            "b-in-0": {"destination": "d", "group": "b"},
        }
    )
    async with TestApp({k: make(k) for k in seen}, properties=tree) as app:
        for i in range(500):
            await app.send("d", i)
        await eventually(
            lambda: len(seen["a1"]) + len(seen["a2"]) == 500 and len(seen["b"]) == 500,
            "every group to get all 500",
        )
        assert sorted(seen["a1"] + seen["a2"]) == list(range(500))
        assert seen["b"] == list(range(500))


async def test_partitions_route_by_key_and_instance_index() -> None:
    got: dict[str, list[str]] = {"p0": [], "p1": []}

    def emit(symbol: str) -> dict[str, str]:
        return {"symbol": symbol}

    def make(name: str) -> Any:
        def consume(m: Message[dict[str, str]]) -> None:
            got[name].append(m.payload["symbol"])

        return consume

    partitioned = {"partitioned": True, "instance-count": 2}
    tree = props(
        {
            "emit-out-0": {
                "destination": "ticks",
                "producer": {"partition-key-expression": "payload.symbol", "partition-count": 2},
            },
            "p0-in-0": {"destination": "ticks", "group": "g",
                        "consumer": {**partitioned, "instance-index": 0}},
            "p1-in-0": {"destination": "ticks", "group": "g",
                        "consumer": {**partitioned, "instance-index": 1}},
        }
    )  # fmt: skip
    fns = {"emit": emit, "p0": make("p0"), "p1": make("p1")}
    async with TestApp(fns, properties=tree) as app:
        symbols = [f"S{i}" for i in range(20)] * 5
        for s in symbols:
            await app.send("emit-in-0", s)
        await eventually(lambda: len(got["p0"]) + len(got["p1"]) == 100, "100 across partitions")
    from binder_core.expression import select_partition

    for name, index in (("p0", 0), ("p1", 1)):
        assert got[name], "both partitions should get some keys"
        assert all(select_partition(s, 2) == index for s in got[name])
        # order per key is kept
        for s in set(got[name]):
            assert got[name].count(s) == 5


async def test_back_pressure_bounds_the_queue_of_a_slow_consumer() -> None:
    release = asyncio.Event()
    consumed = 0

    def fast() -> Iterator[int]:
        yield from range(5000)

    async def slow(n: int) -> None:
        nonlocal consumed
        await release.wait()
        consumed += 1

    tree = props(
        {
            "fast-out-0": {"destination": "d", "producer": {"required-groups": ["g"]}},
            "slow-in-0": {"destination": "d", "group": "g"},
        },
        function={"definition": "fast;slow"},
    )
    tree["stream"]["memory"] = {"binder": {"buffer-size": 100, "max-batch": 10}}
    async with TestApp({"fast": fast, "slow": slow}, properties=tree) as app:
        queue = app._broker.destination("d").groups["g"]
        await eventually(lambda: queue.size >= 100, "the queue to fill")
        for _ in range(20):  # the supplier is blocked, not buffering more
            await asyncio.sleep(0)
        assert queue.size <= 100 + 256
        release.set()
        await eventually(lambda: consumed == 5000, "all 5000 consumed", 10)


async def test_stream_bridge_to_binding_and_dynamic_destinations() -> None:
    def sink(x: str) -> None:
        pass

    tree = props({"bridge-out-0": {"destination": "bridged"}},
                 **{"dynamic-destination-cache-size": 2})  # fmt: skip
    async with TestApp({"sink": sink}, properties=tree) as app:
        bridge = StreamBridge.current()
        app._tap("dyn-1")
        await bridge.send("bridge-out-0", {"a": 1})
        assert json.loads((await app.receive("bridged")).payload) == {"a": 1}
        await bridge.send("dyn-1", "hello", headers={"h": "v"})
        msg = await app.receive("dyn-1")
        assert (msg.payload, msg.headers["h"]) == (b"hello", "v")
        for i in range(2, 6):
            await bridge.send(f"dyn-{i}", "x")
        assert len(bridge._dynamic) == 2  # bounded cache


async def test_unknown_function_and_bad_expression_fail_before_start() -> None:
    def echo(x: str) -> str:
        return x

    tree = props(
        {"echo-out-0": {"producer": {"partition-key-expression": "payload.a()"}}},
        function={"definition": "echo;ecoh"},
    )
    with pytest.raises(ConfigError) as exc:
        await TestApp({"echo": echo}, properties=tree).start()
    text = exc.value.render()
    assert "no function 'ecoh'" in text and "did you mean 'echo'?" in text
    assert "partition-key-expression" in text


async def test_graceful_stop_finishes_in_flight_batch() -> None:
    started = asyncio.Event()
    gate = asyncio.Event()
    finished: list[int] = []

    async def slow(n: int) -> int:
        started.set()
        await gate.wait()
        finished.append(n)
        return n

    app = await TestApp({"slow": slow}, properties=props()).start()
    for i in range(3):
        await app.send("slow-in-0", i)
    await started.wait()
    stopping = asyncio.ensure_future(app.stop())
    await asyncio.sleep(0)  # one turn of the loop: stop() is now under way
    assert not stopping.done(), "stop() returned with a batch in flight"
    gate.set()
    await stopping
    assert finished == [0, 1, 2]
