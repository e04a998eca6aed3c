"""The Redis Streams binder through the SPI, on the real Redis: wire layout, groups,
anonymous and required groups, pause/resume, dead letters, redelivery, graceful stop,
partitions, claims of a dead consumer's entries, reconnection. Counts are exact."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from binder_core.errors import ConfigError
from binder_core.message import Message
from binder_core.properties import ConsumerProperties, ProducerProperties
from binder_core.spi import BindingState, Capability, ConsumerSpec, ProducerSpec
from tests.plugins.conftest import PREFIX, Admin
from tests.support import Collector, eventually

pytestmark = pytest.mark.redis

Namer = Callable[[str], str]
NewBinder = Callable[..., Awaitable[Any]]


def consumer_ext(**props: Any) -> Any:
    from binder_redis.settings import RedisConsumerProperties

    return RedisConsumerProperties.model_validate(props)


def texts(n: int, start: int = 0) -> list[Message[bytes]]:
    return [Message(f"m{i}".encode(), {"contentType": "text/plain"}) for i in range(start, n)]


async def test_plugin_declares_its_capabilities(binder: Any) -> None:
    assert binder.capabilities == {
        Capability.GROUPS,
        Capability.ORDERING,
        Capability.PARTITIONS,
        Capability.DEAD_LETTER,
        Capability.PAUSE,
        Capability.PERSISTENCE,
        Capability.CROSS_PROCESS,
        Capability.REQUIRED_GROUPS,
    }


async def test_payload_and_header_types_round_trip(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("types")
    admin.track(dest)
    out = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "g"), out)
    headers = {
        "contentType": "application/json",
        "text": "héllo",
        "blob": b"\x00\xff",
        "count": 2**40,
        "ratio": 0.1,
        "ok": True,
        "off": False,
        "tags": ["a", 1],
        "meta": {"k": "v"},
    }
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send([Message(b'{"n": 1}', headers), Message(b"", {})])
    await out.wait_for(2)
    got = out.messages[0]
    assert got.payload == b'{"n": 1}'
    assert got.headers == headers
    assert {k: type(v) for k, v in got.headers.items()} == {k: type(v) for k, v in headers.items()}
    assert out.messages[1].payload == b"" and out.messages[1].headers == {}
    # The documented wire layout, readable by any client.
    (_, fields), _ = await admin.entries(dest)
    assert fields[b"payload"] == b'{"n": 1}'
    assert fields[b"s:contentType"] == b"application/json"
    assert fields[b"i:count"] == str(2**40).encode()
    assert fields[b"t:ok"] == b"true"
    assert fields[b"b:blob"] == b"\x00\xff"


async def test_entries_written_by_other_clients_are_read(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("foreign")
    admin.track(dest)
    out = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "g"), out)
    await admin.client.xadd(PREFIX + dest, {b"payload": b"p", b"s:contentType": b"text/plain"})
    await admin.client.xadd(PREFIX + dest, {b"note": b"no payload field"})
    await out.wait_for(2)
    assert out.messages[0].payload == b"p"
    assert out.messages[0].headers == {"contentType": "text/plain"}
    assert out.messages[1].payload == b""
    assert out.messages[1].headers == {"note": b"no payload field"}


async def test_groups_each_get_everything_and_members_of_a_group_share(
    new_binder: NewBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("groups")
    admin.track(dest)
    one, two = await new_binder(), await new_binder()
    first = Collector(gate=asyncio.Event())  # holds its first batch until told
    second, audit = Collector(), Collector()
    await two.consumer(ConsumerSpec("c", dest, "audit"), audit)
    await one.consumer(ConsumerSpec("a", dest, "work"), first)
    assert first.gate is not None
    try:
        producer = await one.producer(ProducerSpec("out", dest))
        await producer.send(texts(10))
        await first.entered.wait()  # member one holds its batch, unacknowledged
        held = first.batches[0]
        await two.consumer(ConsumerSpec("b", dest, "work"), second)
        await producer.send(texts(300, 10))
        await second.wait_for(300 - held)
        await audit.wait_for(300)
    finally:
        first.gate.set()
    await first.wait_for(held)
    assert sorted(first.payloads + second.payloads) == sorted(m.payload for m in texts(300))
    assert len(first.payloads) == held and len(second.payloads) == 300 - held
    assert sorted(audit.payloads) == sorted(m.payload for m in texts(300))
    await eventually(lambda: _pending_is(admin, dest, "work", 0), "work acknowledged")
    assert await admin.pending(dest, "audit") == 0


async def _pending_is(admin: Admin, dest: str, group: str, n: int) -> bool:
    return await admin.pending(dest, group) == n


async def test_anonymous_subscription_sees_new_messages_and_ends_with_its_binding(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("anon")
    admin.track(dest)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(5))
    out = Collector()
    binding = await binder.consumer(ConsumerSpec("in", dest, None), out)
    (group,) = await admin.groups(dest)
    assert group.startswith("anonymous.")
    await producer.send(texts(8, 5))
    await out.wait_for(3)
    assert out.payloads == [b"m5", b"m6", b"m7"]
    await binding.stop()
    assert await admin.groups(dest) == {}, "an anonymous group is deleted on stop"
    await producer.send(texts(10, 8))
    await binding.start()  # a new anonymous subscription, from now on
    await producer.send(texts(11, 10))
    await out.wait_for(4)
    assert out.payloads == [b"m5", b"m6", b"m7", b"m10"]


async def test_required_groups_keep_what_is_sent_before_their_consumer(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("required")
    admin.track(dest)
    producer = await binder.producer(
        ProducerSpec("out", dest, ProducerProperties(required_groups=["late", "later"]))
    )
    assert set(await admin.groups(dest)) == {"late", "later"}
    await producer.send(texts(20))
    out = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "late"), out)
    await out.wait_for(20)
    assert out.payloads == [m.payload for m in texts(20)]


async def test_a_new_group_starts_at_the_beginning_unless_told_latest(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("start")
    admin.track(dest)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(3))
    latest, earliest = Collector(), Collector()
    await binder.consumer(
        ConsumerSpec("a", dest, "latest", extension=consumer_ext(start_offset="latest")), latest
    )
    await binder.consumer(ConsumerSpec("b", dest, "earliest"), earliest)
    await producer.send(texts(5, 3))
    await earliest.wait_for(5)
    await latest.wait_for(2)
    assert latest.payloads == [b"m3", b"m4"]
    assert earliest.payloads == [m.payload for m in texts(5)]


async def test_consumers_follow_partitions_a_producer_declares_later(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("later-parts")
    admin.track(dest)
    ext = consumer_ext(claim_interval=50)  # also how often partitions are looked up
    out = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "g", extension=ext), out)
    plain = await binder.producer(ProducerSpec("plain", dest))
    await plain.send(texts(2))
    await out.wait_for(2)
    parted = await binder.producer(ProducerSpec("out", dest, ProducerProperties(partition_count=3)))
    await parted.send([Message(f"p{i}".encode(), {}, i, i % 3) for i in range(30)])
    await out.wait_for(32)
    assert sorted(out.payloads) == sorted([b"m0", b"m1", *(f"p{i}".encode() for i in range(30))])
    assert {m.partition for m in out.messages[2:]} == {0, 1, 2}


async def test_pause_stops_fetching_until_resume(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("pause")
    admin.track(dest)
    paused, witness = Collector(), Collector()
    binding = await binder.consumer(ConsumerSpec("a", dest, "paused"), paused)
    await binder.consumer(ConsumerSpec("b", dest, "witness"), witness)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(2))
    await paused.wait_for(2)
    await binding.pause()
    assert binding.state is BindingState.PAUSED
    await producer.send(texts(12, 2))
    await witness.wait_for(12)  # the entries are there for anyone reading
    info = (await admin.groups(dest))["paused"]
    assert len(paused.messages) == 2 and info["pending"] == 0
    await binding.resume()
    assert binding.state is BindingState.RUNNING
    await paused.wait_for(12)
    assert paused.payloads == [m.payload for m in texts(12)]


async def test_failures_are_dead_lettered_with_reason_and_origin(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("dlq")
    admin.track(dest)

    def fail(m: Message[bytes]) -> Exception | None:
        return ValueError(f"bad {m.payload.decode()}") if m.payload in (b"m1", b"m3") else None

    out = Collector(fail=fail)
    binding = await binder.consumer(ConsumerSpec("in", dest, "shop"), out)
    assert binding.subscription.dlq_name == f"{dest}.shop.dlq"
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(
        [Message(f"m{i}".encode(), {"contentType": "text/plain", "n": i}) for i in range(5)]
    )
    await out.wait_for(3)
    await eventually(lambda: _length_is(admin, f"{dest}.shop.dlq", 2), "2 dead letters")
    source = {fields[b"payload"]: entry_id for entry_id, fields in await admin.entries(dest)}
    dead = [fields for _, fields in await admin.entries(f"{dest}.shop.dlq")]
    assert [d[b"payload"] for d in dead] == [b"m1", b"m3"]
    first = dead[0]
    assert first[b"s:contentType"] == b"text/plain" and first[b"i:n"] == b"1"
    assert first[b"s:x-exception-message"] == b"bad m1"
    assert first[b"s:x-exception-fqcn"] == b"builtins.ValueError"
    assert b"ValueError: bad m1" in first[b"s:x-exception-stacktrace"]
    assert first[b"s:x-original-topic"] == dest.encode()
    assert first[b"s:x-original-group"] == b"shop"
    assert first[b"s:x-original-stream"] == (PREFIX + dest).encode()
    assert first[b"s:x-original-id"] == source[b"m1"]
    assert out.payloads == [b"m0", b"m2", b"m4"]
    await eventually(lambda: _pending_is(admin, dest, "shop", 0), "everything acknowledged")


async def test_dead_letters_can_be_turned_off_and_named(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest, named = unique_name("dlqoff"), unique_name("named-dlq")
    admin.track(dest, named)
    boom = Collector(fail=lambda m: RuntimeError("boom"))
    quiet = Collector(fail=lambda m: RuntimeError("boom"))
    await binder.consumer(
        ConsumerSpec("a", dest, "named", extension=consumer_ext(dlq_name=named)), boom
    )
    await binder.consumer(
        ConsumerSpec("b", dest, "off", extension=consumer_ext(enable_dlq=False)), quiet
    )
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(3))
    await eventually(lambda: _length_is(admin, named, 3), "3 dead letters in the named DLQ")
    await eventually(lambda: _pending_is(admin, dest, "off", 0), "failures dropped and acked")
    assert await admin.length(f"{dest}.off.dlq") == 0


async def _length_is(admin: Admin, dest: str, n: int) -> bool:
    return await admin.length(dest) == n


async def test_a_batch_the_core_could_not_finish_is_delivered_again(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("redeliver")
    admin.track(dest)
    seen: list[bytes] = []
    calls = 0

    async def flaky(batch: Any) -> list[None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("output not confirmed")
        seen.extend(m.payload for m in batch)
        return [None] * len(batch)

    producer = await binder.producer(
        ProducerSpec("out", dest, ProducerProperties(required_groups=["g"]))
    )
    await producer.send(texts(50))
    await binder.consumer(ConsumerSpec("in", dest, "g"), flaky)
    await eventually(lambda: len(seen) >= 50, "redelivery")
    assert seen == [m.payload for m in texts(50)], "redelivered in order, each once"
    await eventually(lambda: _pending_is(admin, dest, "g", 0), "everything acknowledged")


async def test_stop_finishes_and_acknowledges_the_batch_in_flight(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("graceful")
    admin.track(dest)
    out = Collector(gate=asyncio.Event())
    binding = await binder.consumer(ConsumerSpec("in", dest, "g"), out)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(7))
    await out.entered.wait()
    assert out.gate is not None
    stopping = asyncio.ensure_future(binding.stop())
    try:
        await eventually(lambda: binding.state is BindingState.STOPPED, "stop to begin")
        assert not stopping.done(), "stop waits for the batch in flight"
    finally:
        out.gate.set()
    await stopping
    held = out.batches[0]
    assert len(out.messages) == held, "the batch in flight was finished, nothing more taken"
    assert await admin.pending(dest, "g") == 0, "and acknowledged"
    groups = await admin.groups(dest)
    assert groups["g"]["consumers"] == 0, "a consumer that holds nothing is removed"
    await binding.start()
    await out.wait_for(7)
    assert out.payloads == [m.payload for m in texts(7)]


async def test_stop_of_an_idle_binding_is_immediate(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("idle")
    admin.track(dest)
    binding = await binder.consumer(
        ConsumerSpec("in", dest, "g", extension=consumer_ext(block=60_000)), Collector()
    )
    await eventually(lambda: _blocked_clients(admin, 1), "the consumer to block in XREADGROUP")
    await asyncio.wait_for(binding.stop(), 5)  # CLIENT UNBLOCK, not a 60 s wait


async def _blocked_clients(admin: Admin, n: int) -> bool:
    info = await admin.client.info("clients")
    return int(info["blocked_clients"]) >= n


async def test_partitions_route_by_the_core_partition_and_keep_order(
    new_binder: NewBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("parts")
    admin.track(dest)
    binder = await new_binder()
    producer = await binder.producer(
        ProducerSpec("out", dest, ProducerProperties(partition_count=2, required_groups=["g"]))
    )
    sent = [Message(f"k{i % 2}-{i}".encode(), {}, f"k{i % 2}", i % 2) for i in range(100)]
    await producer.send(sent)
    assert await admin.length(f"{dest}-0") == 50 and await admin.length(f"{dest}-1") == 50
    outs = [Collector(), Collector()]
    for index in (0, 1):
        props = ConsumerProperties(
            partitioned=True, instance_index=index, instance_count=2, concurrency=3
        )
        other = await new_binder()
        await other.consumer(ConsumerSpec("in", dest, "g", props), outs[index])
    for index, out in enumerate(outs):
        await out.wait_for(50)
        assert out.payloads == [m.payload for m in sent if m.partition == index], "in order"
        assert {m.partition for m in out.messages} == {index}


async def test_pending_entries_of_a_dead_consumer_are_claimed(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("claim")
    admin.track(dest)
    producer = await binder.producer(
        ProducerSpec("out", dest, ProducerProperties(required_groups=["g"]))
    )
    await producer.send(texts(30))
    # A consumer that read 20 entries and died before acknowledging them.
    await admin.client.xreadgroup("g", "ghost", {PREFIX + dest: ">"}, count=20)
    assert await admin.pending(dest, "g") == 20
    out = Collector()
    ext = consumer_ext(claim_idle=300, claim_interval=100)
    await binder.consumer(ConsumerSpec("in", dest, "g", extension=ext), out)
    await out.wait_for(30)
    assert sorted(out.payloads) == sorted(m.payload for m in texts(30))
    assert len(out.payloads) == 30
    await eventually(lambda: _pending_is(admin, dest, "g", 0), "everything acknowledged")


async def test_consumers_and_producers_survive_killed_connections(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("reconnect")
    admin.track(dest)
    out = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "g", extension=consumer_ext(block=500)), out)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(100))
    await out.wait_for(100)
    killed = await _kill_clients(admin, f"binder:{binder.name}")
    assert killed >= 2, "the control, consumer and producer connections"
    await producer.send(texts(200, 100))  # reconnects
    await out.wait_for(200)
    assert sorted(out.payloads) == sorted(m.payload for m in texts(200))
    assert len(set(out.payloads)) == 200


async def _kill_clients(admin: Admin, name: str) -> int:
    clients = await admin.client.client_list()
    ids = [c["id"] for c in clients if c.get("name") == name]
    for client_id in ids:
        await admin.client.execute_command("CLIENT", "KILL", "ID", client_id)
    return len(ids)


async def test_a_stream_deleted_under_a_consumer_is_provisioned_again(
    binder: Any, admin: Admin, unique_name: Namer
) -> None:
    """What a Redis restart without persistence looks like to a running binding."""
    dest = unique_name("gone")
    admin.track(dest)
    out = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "g", extension=consumer_ext(block=200)), out)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(5))
    await out.wait_for(5)
    await admin.client.delete(PREFIX + dest)
    await eventually(lambda: _has_group(admin, dest, "g"), "the group to be created again")
    await producer.send(texts(8, 5))
    await out.wait_for(8)
    assert out.payloads == [m.payload for m in texts(8)]


async def _has_group(admin: Admin, dest: str, group: str) -> bool:
    return group in await admin.groups(dest)


async def test_start_fails_clearly_when_redis_is_unreachable(new_binder: NewBinder) -> None:
    from binder_redis.client import RedisUnavailableError

    with pytest.raises(RedisUnavailableError, match=r"cannot reach Redis at 127\.0\.0\.1:1\b"):
        await new_binder(url=None, host="127.0.0.1", port=1, connection_timeout=1.0)


def test_binder_properties_are_validated_by_the_core() -> None:
    from binder_core.config import load_config
    from binder_core.plugins import load_plugins

    tree = {
        "stream": {
            "binders": {"r": {"type": "redis", "environment": {"prot": 6379}}},
            "redis": {"bindings": {"x-in-0": {"consumer": {"claim-idel": 5}}}},
        }
    }
    registry = load_plugins()
    with pytest.raises(ConfigError) as err:
        load_config(
            None, [], [], registry.binder_types, environ={}, properties=tree, read_files=False
        )
    text = str(err.value)
    assert "stream.binders.r.environment.prot: unknown key (did you mean 'port'?)" in text
    assert (
        "stream.redis.bindings.x-in-0.consumer.claim-idel: unknown key (did you mean 'claim-idle'?)"
        in text
    )
