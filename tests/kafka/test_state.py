"""Durable state on real Kafka: a store's changes go to a compacted changelog with the
batch, an app that starts again restores them, an instance that gets a partition at a
rebalance restores its state before it processes its records; tables read a topic whole
(GlobalTable) or by the input's partitions (Table)."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import BaseModel

from binder_core.state import GlobalTable, Table
from binder_core.stateful import changelog_name
from binders.kafka.internals import config_entries
from tests.core.test_state import Tick, counter
from tests.kafka.conftest import Kit, binder_tree, running_app
from tests.support import eventually

pytestmark = pytest.mark.kafka


class Limit(BaseModel):
    below: float


def _ticks(symbols: list[str]) -> list[bytes]:
    return [Tick(symbol=s, price=1.0).model_dump_json().encode() for s in symbols]


def _stream(kit: Kit, ticks: str, out: str, group: str, **more: Any) -> dict[str, Any]:
    return {
        **binder_tree(kit.bootstrap, **more),
        "function": {"definition": "counter"},
        "bindings": {
            "counter-in-0": {"destination": ticks, "group": group},
            "counter-out-0": {"destination": out, "content-type": "text/plain"},
        },
    }


def _latest(records: list[Any]) -> dict[str, int]:
    """Each symbol's highest count in the output."""
    best: dict[str, int] = {}
    for r in records:
        symbol, _, n = r.value.decode().partition("=")
        best[symbol] = max(best.get(symbol, 0), int(n))
    return best


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_restarted_app_restores_its_store_from_the_changelog(
    kit: Kit, backend: str
) -> None:
    ticks, out, group = kit.name("ticks"), kit.name("counts"), kit.name("g")
    await kit.create(ticks, 2)
    symbols = ["A", "B", "C", "D"]
    stream = {**_stream(kit, ticks, out, group), "state": {"backend": backend}}
    first = [s for _ in range(5) for s in symbols]
    await kit.produce(ticks, _ticks(first), keys=[s.encode() for s in first])
    async with running_app({"counter": counter}, stream) as app:
        await kit.read(out, len(first))
        changelog = changelog_name(group, "counter", "counts")
        assert await kit.partitions(changelog) == 2
        keeper = app.state.keepers[0]
        assert sum(r.records for r in keeper.restores) == 0
    resource = ConfigResource(ConfigResourceType.TOPIC, changelog, {"cleanup.policy": None})
    entries = dict(config_entries(await kit.admin.describe_configs([resource])))
    assert entries["cleanup.policy"] == "compact"

    second = [s for _ in range(3) for s in symbols]
    await kit.produce(ticks, _ticks(second), keys=[s.encode() for s in second])
    async with running_app({"counter": counter}, stream) as app:
        records = await kit.read(out, len(first) + len(second))
        keeper = app.state.keepers[0]
        assert sum(r.records for r in keeper.restores) >= len(symbols)
    # Counting went on from the restored state: 8 ticks per symbol in all.
    assert _latest(records) == {s: 8 for s in symbols}
    assert len(records) == len(first) + len(second)


async def test_an_instance_restores_the_partitions_it_takes_over(kit: Kit) -> None:
    ticks, out, group = kit.name("ticks"), kit.name("counts"), kit.name("g")
    await kit.create(ticks, 4)
    symbols = [f"S{i}" for i in range(12)]
    stream = _stream(kit, ticks, out, group)
    async with running_app({"counter": counter}, stream) as one:
        async with running_app({"counter": counter}, stream) as two:
            # Both hold partitions before the first ticks arrive.
            await eventually(
                lambda: (
                    all(b.bindings["counter-in-0"].ready for b in (one, two))
                    and len(one.state.keepers[0]._owned) + len(two.state.keepers[0]._owned) == 4
                ),
                "two instances sharing four partitions",
                60,
            )
            batch = [s for _ in range(4) for s in symbols]
            await kit.produce(ticks, _ticks(batch), keys=[s.encode() for s in batch])
            await kit.read(out, len(batch))
        # two stopped: one takes over its partitions, restoring their state first.
        await eventually(
            lambda: len(one.state.keepers[0]._owned) == 4, "one instance owning all", 60
        )
        more = [s for _ in range(2) for s in symbols]
        await kit.produce(ticks, _ticks(more), keys=[s.encode() for s in more])
        records = await kit.read(out, len(batch) + len(more))
    assert _latest(records) == {s: 6 for s in symbols}
    counts = collections.Counter(r.value.decode() for r in records)
    assert all(v == 1 for v in counts.values()), "no count twice"


async def test_tables_on_kafka_global_and_by_partition(kit: Kit) -> None:
    ticks, out, group = kit.name("ticks"), kit.name("alerts"), kit.name("g")
    everywhere, mine = kit.name("limits"), kit.name("mylimits")
    await kit.create(ticks, 2)
    await kit.create(everywhere, 3, {"cleanup.policy": "compact"})
    await kit.create(mine, 2)

    def alerts(tick: Tick, shared: GlobalTable[Limit], own: Table[Limit]) -> str | None:
        limit = own.get(tick.symbol) or shared.get(tick.symbol)
        if limit is None or tick.price >= limit.below:
            return None
        return f"{tick.symbol}<{limit.below}"

    await kit.produce(everywhere, [b'{"below": 5}', b'{"below": 7}'], keys=[b"A", b"B"])
    # Keyed alike: the default partitioner puts "B" where the tick "B" goes.
    await kit.produce(mine, [b'{"below": 3}'], key=b"B")
    stream = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "alerts"},
        "bindings": {
            "alerts-in-0": {"destination": ticks, "group": group},
            "alerts-in-1": {"destination": everywhere},
            "alerts-in-2": {"destination": mine},
            "alerts-out-0": {"destination": out, "content-type": "text/plain"},
        },
    }
    async with running_app({"alerts": alerts}, stream) as app:
        shared = app.state.find("shared")
        assert shared is not None and len(shared) == 2  # read before the app started
        prices = {"A": 4.0, "B": 4.0, "C": 1.0}
        await kit.produce(
            ticks,
            [Tick(symbol=s, price=p).model_dump_json().encode() for s, p in prices.items()],
            keys=[s.encode() for s in prices],
        )
        # A is below its shared limit; B's own limit (3) wins over the shared one (7).
        got = await kit.read(out, 1)
        assert [r.value for r in got] == [b"A<5.0"]
        await kit.produce(everywhere, [b'{"below": 2}'], key=b"C")
        await eventually(lambda: "C" in shared, "the global table following its topic", 30)
        await kit.produce(ticks, _ticks(["C"]), key=b"C")
        got = await kit.read(out, 2)
        assert [r.value for r in got] == [b"A<5.0", b"C<2.0"]


async def test_a_table_partitioned_unlike_the_input_stops_start_up(kit: Kit) -> None:
    ticks, other = kit.name("ticks"), kit.name("limits")
    await kit.create(ticks, 2)
    await kit.create(other, 3)

    def alerts(tick: Tick, own: Table[Limit]) -> None:
        return None

    stream = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "alerts"},
        "bindings": {
            "alerts-in-0": {"destination": ticks, "group": kit.name("g")},
            "alerts-in-1": {"destination": other},
        },
    }
    with pytest.raises(Exception, match=r"3 partition\(s\) and input .* 2"):
        async with running_app({"alerts": alerts}, stream):
            pass


async def test_a_store_on_kafka_needs_a_group(kit: Kit) -> None:
    ticks = kit.name("ticks")
    await kit.create(ticks, 1)
    stream = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "counter"},
        "bindings": {"counter-in-0": {"destination": ticks}},
    }
    with pytest.raises(Exception, match=r"stream\.bindings\.counter-in-0\.group"):
        async with running_app({"counter": counter}, stream):
            pass
