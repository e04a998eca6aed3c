"""Transactions: a consumer batch's outputs, dead letters and input offsets are committed
in one Kafka transaction; what a failed attempt sent is never visible to read_committed
readers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from binder_core import StreamBridge
from binder_core.message import Message
from binder_core.properties import ConsumerProperties, ProducerProperties
from binder_core.spi import ConsumerSpec, Outcome, ProducerSpec
from binder_core.testing.driver import BinderDriver
from binders.kafka.binder import KafkaBinder
from binders.kafka.settings import KafkaEnvironment
from tests.kafka.conftest import Kit, binder_tree, running_app

pytestmark = pytest.mark.kafka


@pytest.fixture
async def binder(kit: Kit) -> AsyncIterator[KafkaBinder]:
    env = KafkaEnvironment.model_validate(
        {
            "bootstrap-servers": kit.bootstrap,
            "health-timeout": 20,
            "transaction": {"transaction-id-prefix": kit.name("tx") + "-"},
        }
    )
    b = BinderDriver(KafkaBinder("kafka", env))
    await b.start()
    try:
        yield b
    finally:
        await b.close()


async def test_a_failed_record_leaves_no_output_and_the_others_commit_once(
    binder: KafkaBinder, kit: Kit
) -> None:
    source, out, group = kit.name("src"), kit.name("out"), kit.name("g")
    await kit.create(source)
    await kit.produce(source, [b"a", b"poison", b"b"])
    producer = await binder.producer(ProducerSpec("out", out))
    handled: list[bytes] = []

    async def handle(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        outcomes: list[Outcome] = []
        for m in batch:
            handled.append(m.payload)
            await producer.send([Message(m.payload.upper())])  # goes out inside the transaction
            outcomes.append(ValueError("poison") if m.payload == b"poison" else None)
        return outcomes

    await binder.consumer(ConsumerSpec("in", source, group, ConsumerProperties()), handle)
    [dead] = await kit.read(f"error.{source}.{group}", 1, committed_only=True)
    assert dead.value == b"poison"
    visible = await kit.read(out, 2, committed_only=True)
    assert sorted(r.value for r in visible) == [b"A", b"B"]
    # The attempt that included the poison record did write it; only the abort hid it.
    everything = await kit.read(out, 3)
    assert b"POISON" in [r.value for r in everything]
    assert handled.count(b"poison") == 1  # not processed again: it failed for good


async def test_a_raising_handle_aborts_and_the_retry_is_visible_once(
    binder: KafkaBinder, kit: Kit
) -> None:
    source, out, group = kit.name("src"), kit.name("out"), kit.name("g")
    producer = await binder.producer(ProducerSpec("out", out))
    calls = 0

    async def handle(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        nonlocal calls
        calls += 1
        await producer.send([Message(m.payload.upper()) for m in batch])
        if calls == 1:
            raise ConnectionError("the app fell over after sending")
        return [None] * len(batch)

    binding = await binder.consumer(ConsumerSpec("in", source, group, ConsumerProperties()), handle)
    await kit.produce(source, [b"x", b"y"])
    visible = await kit.read(out, 2, committed_only=True)
    assert sorted(r.value for r in visible) == [b"X", b"Y"]
    # Offsets were committed in the transaction: a restart does not deliver them again.
    await binding.stop()
    before = calls
    await binding.start()
    await kit.produce(source, [b"z"])
    visible = await kit.read(out, 3, committed_only=True)
    assert sorted(r.value for r in visible) == [b"X", b"Y", b"Z"]
    assert calls == before + 1


async def test_app_outputs_and_stream_bridge_sends_share_the_transaction(kit: Kit) -> None:
    source, out, side = kit.name("src"), kit.name("out"), kit.name("side")
    group = kit.name("g")

    async def shout(word: str) -> str:
        await StreamBridge.current().send(side, word)
        if word == "poison":
            raise ValueError("no poison")
        return word.upper()

    stream: dict[str, Any] = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "shout"},
        "bindings": {
            "shout-in-0": {
                "destination": source,
                "group": group,
                "content-type": "text/plain",
                "consumer": {"max-attempts": 2, "back-off-initial-interval": 1},
            },
            "shout-out-0": {"destination": out, "content-type": "text/plain"},
        },
    }
    stream["binders"]["kafka"]["environment"]["transaction"] = {
        "transaction-id-prefix": kit.name("tx") + "-"
    }
    async with running_app({"shout": shout}, stream):
        await kit.produce(source, [b"one", b"poison", b"two"])
        await kit.read(f"error.{source}.{group}", 1, committed_only=True)
        outputs = await kit.read(out, 2, committed_only=True)
        sides = await kit.read(side, 2, committed_only=True)
    assert sorted(r.value for r in outputs) == [b"ONE", b"TWO"]
    assert sorted(r.value for r in sides) == [b"one", b"two"]


async def test_without_a_transaction_other_producers_are_plain(
    binder: KafkaBinder, kit: Kit
) -> None:
    """Outside a consumer batch (a supplier, ``binder send``) a send is an ordinary
    confirmed send, visible to read_committed readers at once."""
    out = kit.name("plain")
    producer = await binder.producer(ProducerSpec("out", out, ProducerProperties()))
    await producer.send([Message(b"hello")])
    [record] = await kit.read(out, 1, committed_only=True)
    assert record.value == b"hello"


async def test_concurrent_consumers_each_commit_their_own_transactions(
    binder: KafkaBinder, kit: Kit
) -> None:
    source, out, group = kit.name("src"), kit.name("out"), kit.name("g")
    await kit.create(source, 2)
    producer = await binder.producer(ProducerSpec("out", out))

    async def handle(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        await producer.send([Message(m.payload.upper(), key=m.key) for m in batch])
        return [None] * len(batch)

    props = ConsumerProperties(concurrency=2)
    await binder.consumer(ConsumerSpec("in", source, group, props), handle)
    words = [f"w{i}".encode() for i in range(200)]
    await kit.produce(source, words, keys=[str(i % 7).encode() for i in range(200)])
    visible = await kit.read(out, 200, committed_only=True)
    assert sorted(r.value for r in visible) == sorted(w.upper() for w in words)
