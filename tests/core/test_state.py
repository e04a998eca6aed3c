"""Stores and tables on the memory binder: a function keeps keyed state in a parameter, a
failed attempt's writes are forgotten, a batch given back forgets what it wrote, tables
follow their destination; signatures that cannot keep state are refused at start-up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from binder_core.consumer import ConsumerBinding
from binder_core.errors import ConfigError
from binder_core.functions import inspect_function
from binder_core.state import GlobalTable, Store, Table
from binder_core.testing import TestApp
from tests.support import eventually


class Tick(BaseModel):
    symbol: str
    price: float


class Count(BaseModel):
    n: int


class Limit(BaseModel):
    drop: float


def counter(tick: Tick, counts: Store[Count]) -> str:
    seen = counts.get(tick.symbol) or Count(n=0)
    counts[tick.symbol] = Count(n=seen.n + 1)
    return f"{tick.symbol}={seen.n + 1}"


def _props(**extra: Any) -> dict[str, Any]:
    bindings: dict[str, Any] = {
        "counter-in-0": {"destination": "ticks", "group": "g"},
        "counter-out-0": {"destination": "counts", "content-type": "text/plain"},
    }
    bindings.update(extra)
    return {"stream": {"bindings": bindings}}


async def test_a_store_keeps_state_per_key_across_messages() -> None:
    async with TestApp({"counter": counter}, properties=_props()) as app:
        for symbol in ("A", "B", "A", "A", "B"):
            await app.send("ticks", {"symbol": symbol, "price": 1.0})
        got = [m.payload.decode() for m in await app.receive_all("counts", 5)]
        assert got == ["A=1", "B=1", "A=2", "A=3", "B=2"]
        assert app.app is not None
        store = app.app.state.find("counts")
        assert store is not None and store is app.app.state.find("counter.counts")
        assert {k: v.n for k, v in store.snapshot().items()} == {"A": 3, "B": 2}


async def test_a_failed_attempt_forgets_what_it_wrote() -> None:
    attempts: list[int] = []

    def flaky(tick: Tick, counts: Store[Count]) -> str:
        seen = counts.get(tick.symbol) or Count(n=0)
        counts[tick.symbol] = Count(n=seen.n + 1)
        attempts.append(seen.n)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails after writing")
        return f"{tick.symbol}={seen.n + 1}"

    props = {
        "stream": {
            "bindings": {
                "flaky-in-0": {
                    "destination": "ticks",
                    "group": "g",
                    "consumer": {"max-attempts": 3, "back-off-initial-interval": 1},
                },
                "flaky-out-0": {"destination": "counts", "content-type": "text/plain"},
            }
        }
    }
    async with TestApp({"flaky": flaky}, properties=props) as app:
        await app.send("ticks", {"symbol": "A", "price": 1.0})
        await app.send("ticks", {"symbol": "A", "price": 1.0})
        got = [m.payload.decode() for m in await app.receive_all("counts", 2)]
    # The second attempt saw the state as it was before the first: no double count.
    assert attempts == [0, 0, 1]
    assert got == ["A=1", "A=2"]


async def test_a_message_that_fails_for_good_changes_nothing() -> None:
    def picky(tick: Tick, counts: Store[Count]) -> str:
        counts[tick.symbol] = Count(n=(counts.get(tick.symbol) or Count(n=0)).n + 1)
        if tick.price < 0:
            raise ValueError("negative price")
        return f"{tick.symbol}={counts[tick.symbol].n}"

    props = {
        "stream": {
            "bindings": {
                "picky-in-0": {
                    "destination": "ticks",
                    "group": "g",
                    "consumer": {"max-attempts": 1},
                },
                "picky-out-0": {"destination": "counts", "content-type": "text/plain"},
            }
        }
    }
    async with TestApp({"picky": picky}, properties=props) as app:
        await app.send("ticks", {"symbol": "A", "price": 1.0})
        await app.send("ticks", {"symbol": "A", "price": -1.0})
        await app.send("ticks", {"symbol": "A", "price": 2.0})
        got = [m.payload.decode() for m in await app.receive_all("counts", 2)]
        dead = await app.receive(app.dead_letter_destination("picky-in-0"))
    assert got == ["A=1", "A=2"]
    assert json.loads(dead.payload)["price"] == -1.0


async def test_a_batch_given_back_forgets_its_writes_and_is_counted_once() -> None:
    """The consumer loop gives a batch back when its outputs cannot be confirmed: what the
    batch wrote is forgotten, and the redelivered batch counts from the state before it."""
    async with TestApp({"counter": counter}, properties=_props()) as app:
        assert app.app is not None
        binding: ConsumerBinding = app.app.bindings["counter-in-0"]
        output = app.app.outputs["counter"]
        real = output.sink
        refusals = 0

        class Flaky:
            """The sink refuses the first batch's outputs as a broker outage would."""

            def outbox(self, transaction: Any = None) -> Any:
                box = real.outbox(transaction)

                class Box:
                    async def add(self, messages: Any) -> None:
                        await box.add(messages)

                    async def confirm(self) -> Any:
                        nonlocal refusals
                        results = await box.confirm()
                        if refusals == 0:
                            refusals += 1
                            raise ConnectionError("broker went away")
                        return results

                return Box()

            async def close(self) -> None:
                await real.close()

        output.sink = Flaky()
        await app.send("ticks", {"symbol": "A", "price": 1.0})
        got = [m.payload.decode() for m in await app.receive_all("counts", 2, timeout=10)]
        store = app.app.state.find("counts")
        assert store is not None
        # The first delivery's output went out before its confirmation failed (a
        # duplicate, as at-least-once allows); its state change did not stay.
        assert got == ["A=1", "A=1"]
        assert store.snapshot()["A"].n == 1
        assert binding.stats.redelivered == 1
        output.sink = real


async def test_a_table_follows_its_destination_by_key() -> None:
    seen: list[str] = []

    def alerts(tick: Tick, limits: Table[Limit]) -> str | None:
        limit = limits.get(tick.symbol)
        seen.append(tick.symbol)
        if limit is None or tick.price > limit.drop:
            return None
        return f"{tick.symbol} below {limit.drop}"

    props = {
        "stream": {
            "bindings": {
                "alerts-in-0": {"destination": "ticks", "group": "g"},
                "alerts-in-1": {"destination": "limits"},
                "alerts-out-0": {"destination": "alerts", "content-type": "text/plain"},
            }
        }
    }
    async with TestApp({"alerts": alerts}, properties=props) as app:
        assert app.app is not None
        table = app.app.state.find("limits")
        assert isinstance(table, Table)
        await app.send("limits", {"drop": 10.0}, key="A")
        await app.send("limits", {"drop": 5.0}, key="B")
        await eventually(lambda: len(table) == 2, "both limits in the table")
        await app.send("ticks", {"symbol": "A", "price": 9.0})
        await app.send("ticks", {"symbol": "B", "price": 9.0})
        await app.send("ticks", {"symbol": "C", "price": 1.0})
        assert (await app.receive("alerts")).payload == b"A below 10.0"
        await app.send("limits", b"", key="A")  # no payload: the key is removed
        await eventually(lambda: "A" not in table, "A's limit removed")
        await app.send("ticks", {"symbol": "A", "price": 1.0})
        await app.send("ticks", {"symbol": "B", "price": 1.0})
        assert (await app.receive("alerts")).payload == b"B below 5.0"
        assert app.pending("alerts") == 0


async def test_table_bindings_are_planned_as_the_next_inputs() -> None:
    def both(tick: Tick, counts: Store[Count], a: Table[Limit], b: GlobalTable[Limit]) -> str:
        return tick.symbol

    async with TestApp({"both": both}) as app:
        assert app.app is not None
        tables = {p: plan.name for p, plan in app.app.plan.tables["both"]}
        assert tables == {"both.a": "both-in-1", "both.b": "both-in-2"}
        assert isinstance(app.app.state.find("b"), GlobalTable)


async def test_a_typo_in_a_table_binding_is_found() -> None:
    def alerts(tick: Tick, limits: Table[Limit]) -> str:
        return tick.symbol

    props = {"stream": {"bindings": {"alert-in-1": {"destination": "limits"}}}}
    with pytest.raises(ConfigError) as caught:
        async with TestApp({"alerts": alerts}, properties=props):
            pass
    assert "alerts-in-1" in str(caught.value)


def test_signatures_that_cannot_keep_state_are_refused() -> None:
    def first(counts: Store[Count], tick: Tick) -> str:
        return ""

    def batch(ticks: list[Tick], counts: Store[Count]) -> str:
        return ""

    with pytest.raises(TypeError, match="must come after the input"):
        inspect_function("first", first)

    def two(tick: Tick, counts: Store[Count]) -> tuple[str, str]:
        return "", ""

    with pytest.raises(TypeError, match="one message at a time"):
        inspect_function("batch", batch)
    with pytest.raises(TypeError, match="not a tuple of outputs"):
        inspect_function("two", two)


def test_a_store_is_written_only_while_its_function_runs() -> None:
    store: Store[int] = Store("f.s", int)
    with pytest.raises(RuntimeError, match="while it processes a message"):
        store["k"] = 1
    assert store.get("k") is None


async def test_stores_and_tables_are_read_on_the_management_endpoint() -> None:
    import subprocess
    import sys
    from pathlib import Path

    from binder_core.remote import RemoteError, call

    def alerts(tick: Tick, counts: Store[Count], limits: Table[Limit]) -> str:
        counts[tick.symbol] = Count(n=(counts.get(tick.symbol) or Count(n=0)).n + 1)
        return tick.symbol

    props = {
        "stream": {
            "bindings": {
                "alerts-in-0": {"destination": "ticks", "group": "g"},
                "alerts-in-1": {"destination": "limits"},
                "alerts-out-0": {"destination": "out", "content-type": "text/plain"},
            },
            "management": {"port": 0},
        }
    }
    async with TestApp({"alerts": alerts}, properties=props) as app:
        assert app.app is not None
        await app.app.start_management()
        assert app.app.management is not None
        url = app.app.management.url
        await app.send("limits", {"drop": 3.0}, key="A/1")
        for symbol in ("A/1", "B", "A/1"):
            await app.send("ticks", {"symbol": symbol, "price": 1.0})
        await app.receive_all("out", 3)

        def get(path: str) -> Any:
            return call(url, path, "UNSET_TOKEN_ENV")[1]

        listed = await asyncio.to_thread(get, "/state")
        assert listed == [
            {"name": "alerts.counts", "kind": "store", "keys": 2, "durable": False},
            {"name": "alerts.limits", "kind": "table", "keys": 1, "updates": 1},
        ]
        shown = await asyncio.to_thread(get, "/state/counts")
        assert shown["entries"] == {"A/1": {"n": 2}, "B": {"n": 1}}
        assert shown["truncated"] is False
        one = await asyncio.to_thread(get, "/state/alerts.limits/A%2F1")
        assert one == {"name": "alerts.limits", "key": "A/1", "value": {"drop": 3.0}}
        with pytest.raises(RemoteError, match="has no value for key 'C'"):
            await asyncio.to_thread(get, "/state/counts/C")
        with pytest.raises(RemoteError, match="did you mean 'counts'"):
            await asyncio.to_thread(get, "/state/count")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(Path(sys.executable).with_name("binder")), "state", *args, "--url", url],
                capture_output=True,
                text=True,
                timeout=60,
            )

        got = await asyncio.to_thread(cli, "get", "counts", "A/1")
        assert (got.returncode, got.stdout.strip()) == (0, '{"n": 2}'), got.stderr
        got = await asyncio.to_thread(cli, "get", "counts", "nope")
        assert got.returncode == 1 and "no value for key 'nope'" in got.stderr
        got = await asyncio.to_thread(cli, "list")
        assert got.returncode == 0, got.stderr
        rows = [line.split() for line in got.stdout.splitlines()]
        assert rows[1][:3] == ["alerts.counts", "store", "2"]
        assert "in this process only" in got.stdout


async def test_an_sqlite_backed_store_keeps_state_beyond_its_cache(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from binder_core import committed

    monkeypatch.setattr(committed, "CACHE_ENTRIES", 3)  # most values only in the file
    props = _props()
    props["stream"]["state"] = {"backend": "sqlite", "directory": str(tmp_path)}
    symbols = [f"S{i}" for i in range(20)]
    async with TestApp({"counter": counter}, properties=props) as app:
        for _ in range(2):
            for symbol in symbols:
                await app.send("ticks", {"symbol": symbol, "price": 1.0})
        got = [m.payload.decode() for m in await app.receive_all("counts", 40)]
        assert got[20:] == [f"{s}=2" for s in symbols]
        files = list(tmp_path.glob("counter.counts-*.sqlite"))
        assert len(files) == 1
        assert app.app is not None
        store = app.app.state.find("counts")
        assert store is not None and store.size() == 20
        assert {k: v.n for k, v in store.snapshot().items()} == {s: 2 for s in symbols}
    assert not list(tmp_path.glob("*.sqlite")), "the file is removed when the app stops"


def test_sqlite_state_applies_a_batch_in_order_and_drops_partitions(tmp_path: Any) -> None:
    from binder_core.committed import Encoded, InSqlite

    db = InSqlite(tmp_path / "s.sqlite", lambda v: json.dumps(v).encode())
    db.apply([("a", (0, 1)), ("b", (1, 2)), ("a", None), ("c", (1, 3)), ("a", (0, 4))])
    assert db.get("a") == (0, 4) and db.get("b") == (1, 2)
    db.apply([("b", None)])
    assert db.get("b") is None
    db.restore([("d", 0, b"5"), ("c", 1, None), ("e", 1, b"6")])
    found = db.get("d")
    assert found is not None and isinstance(found[1], Encoded) and found[1].raw == b"5"
    assert sorted(k for k, _ in db.items()) == ["a", "d", "e"]
    db.drop([1])
    assert sorted(k for k, _ in db.items()) == ["a", "d"] and len(db) == 2
    db.close()
    assert not (tmp_path / "s.sqlite").exists()


def test_a_store_type_that_cannot_be_read_is_named() -> None:
    def keep(word: str, seen: Store[Missing]) -> str:  # type: ignore[name-defined]  # noqa: F821
        return word

    with pytest.raises(TypeError, match=r"parameter 'seen' \(Store\[Missing\]\) cannot be read"):
        inspect_function("keep", keep)
