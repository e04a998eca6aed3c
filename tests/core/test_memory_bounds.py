"""The memory binder keeps bounded what nobody reads: dead letters, and destinations that
no one subscribes to."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from binder_core.bridge import StreamBridge
from binder_core.limits import MEMORY_IDLE_DESTINATIONS
from binder_core.message import Message
from binder_core.testing import TestApp
from binders.memory.broker import Broker, GroupQueue

WARNINGS = "binders.memory.broker"


def messages(start: int, stop: int) -> dict[int, list[Message[bytes]]]:
    return {0: [Message(str(i).encode()) for i in range(start, stop)]}


async def test_a_dead_letter_keeper_drops_the_oldest_past_its_capacity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keeper = GroupQueue("dlq", 1024, 1, "error.orders.billing")
    keeper.keep_latest(10)
    caplog.set_level(logging.WARNING, WARNINGS)
    for start in range(0, 25, 5):  # never waits, although it is full from the second put
        await keeper.put(messages(start, start + 5), 5)
    assert keeper.size == 10
    assert [m.payload for m in keeper.parts[0]] == [str(i).encode() for i in range(15, 25)]
    # One warning for the burst, naming the destination, not one per dropped message.
    warnings = [r.getMessage() for r in caplog.records if r.name == WARNINGS]
    assert len(warnings) == 1
    assert "error.orders.billing" in warnings[0] and "limit of 10" in warnings[0]


async def test_the_next_warning_reports_every_drop_since_the_last(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import binders.memory.broker as broker

    keeper = GroupQueue("dlq", 1024, 1, "dead")
    keeper.keep_latest(2)
    caplog.set_level(logging.WARNING, WARNINGS)
    await keeper.put(messages(0, 5), 5)  # 3 dropped, warned
    await keeper.put(messages(5, 9), 4)  # 4 more, within the interval: counted only
    monkeypatch.setattr(broker, "DROP_WARNING_INTERVAL", 0.0)
    await keeper.put(messages(9, 10), 1)  # 1 more: warned with the 5 since the last
    warnings = [r.getMessage() for r in caplog.records if r.name == WARNINGS]
    assert len(warnings) == 2
    assert "dropped the 5 oldest (8 in all" in warnings[1]


async def test_an_ordinary_group_still_makes_producers_wait() -> None:
    queue = GroupQueue("g", 2, 1)
    await queue.put(messages(0, 2), 2)
    blocked = asyncio.ensure_future(queue.put(messages(2, 3), 1))
    await asyncio.sleep(0)
    assert not blocked.done() and queue.size == 2
    partition, _ = await queue.take(lambda p: True, 10, lambda: False)
    queue.done(partition)
    await blocked
    assert queue.size == 1


def test_the_broker_forgets_the_oldest_destinations_nobody_subscribes_to() -> None:
    broker = Broker(8, idle_destinations=10)
    broker.destination("orders").group("billing")  # subscribed: kept
    broker.destination("prices").grow(4)  # partitioned: its partition count is kept
    first = broker.destination("dynamic-0")
    for i in range(1, 1000):
        broker.destination(f"dynamic-{i}")
        idle = [d for d in broker.destinations.values() if d.idle]
        assert len(idle) <= 10
    assert "orders" in broker.destinations and "prices" in broker.destinations
    assert broker.destinations["prices"].partitions == 4
    assert "dynamic-999" in broker.destinations
    assert first.retired and "dynamic-0" not in broker.destinations


async def test_a_forgotten_destination_still_reaches_later_subscribers() -> None:
    broker = Broker(8, idle_destinations=2)
    held = broker.destination("audit")  # a producer keeps this object
    for i in range(10):
        broker.destination(f"other-{i}")
    assert held.retired
    queue = broker.destination("audit").group("readers")  # subscribes afterwards
    await held.publish([Message(b"late")])
    _, batch = await queue.take(lambda p: True, 10, lambda: False)
    assert [m.payload for m in batch] == [b"late"]
    assert held.group("readers") is queue


async def test_stream_bridge_to_many_names_keeps_destinations_bounded() -> None:
    def noop(value: Any) -> None:
        return None

    async with TestApp({"noop": noop}) as app:
        bridge = StreamBridge.current()
        for i in range(MEMORY_IDLE_DESTINATIONS + 1500):
            await bridge.send(f"event-{i}", {"i": i})
        assert app.app is not None
        broker = app.app.binders["memory"].broker  # type: ignore[attr-defined]
        idle = [d for d in broker.destinations.values() if d.idle]
        assert len(idle) <= MEMORY_IDLE_DESTINATIONS
        assert len(broker.destinations) <= MEMORY_IDLE_DESTINATIONS + 10


async def test_an_app_whose_dead_letters_nobody_reads_keeps_dlq_capacity_of_them() -> None:
    def fail(value: Any) -> None:
        raise ValueError("no")

    tree = {
        "stream": {
            "default": {"consumer": {"max-attempts": 1}},
            "memory": {"binder": {"dlq-capacity": 5}},
        }
    }
    async with TestApp({"fail": fail}, properties=tree) as app:
        dlq = app.dead_letter_destination("fail-in-0")
        for i in range(20):
            await app.send("fail-in-0", {"i": i})
        await app.receive_all(dlq, 20)  # the test's own probe sees them all
        assert app.app is not None
        broker = app.app.binders["memory"].broker  # type: ignore[attr-defined]
        keeper = broker.destination(dlq).groups["dlq"]
        assert keeper.size == 5
        assert [m.payload for m in keeper.parts[0]] == [
            f'{{"i":{i}}}'.encode() for i in range(15, 20)
        ]


async def test_the_idle_destination_limit_is_configurable() -> None:
    def noop(value: Any) -> None:
        return None

    tree = {"stream": {"memory": {"binder": {"idle-destinations": 50}}}}
    async with TestApp({"noop": noop}, properties=tree) as app:
        for i in range(200):
            await StreamBridge.current().send(f"event-{i}", i)
        assert app.app is not None
        broker = app.app.binders["memory"].broker  # type: ignore[attr-defined]
        assert len([d for d in broker.destinations.values() if d.idle]) <= 50
