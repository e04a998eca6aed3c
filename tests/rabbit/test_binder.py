"""The rabbit binder through the plain SPI, against the real broker: topology, groups,
partitions, required groups, routing, confirms, pause/resume and the binding lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pika
import pytest

from binder_core.errors import DeliveryError
from binder_core.message import Message
from binder_core.properties import ConsumerProperties, ProducerProperties
from binder_core.spi import BindingState, Capability, ConsumerSpec, ProducerSpec
from binder_core.testing.driver import BinderDriver
from binders.rabbit.binder import RabbitBinder
from binders.rabbit.producer import RabbitSink
from binders.rabbit.settings import (
    RabbitConsumerProperties,
    RabbitEnvironment,
    RabbitProducerProperties,
)
from tests.rabbit.conftest import Admin
from tests.support import Collector, eventually

pytestmark = pytest.mark.rabbit

Namer = Callable[[str], str]
MakeBinder = Callable[[], Awaitable[RabbitBinder]]


def texts(n: int, prefix: str = "m") -> list[Message[bytes]]:
    return [Message(f"{prefix}{i}".encode(), {"contentType": "text/plain"}) for i in range(n)]


def test_capabilities_and_lazy_import() -> None:
    import subprocess
    import sys

    code = "import sys, binders.rabbit.plugin; print('pika' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing the plugin must not import pika"
    assert {
        Capability.GROUPS,
        Capability.PARTITIONS,
        Capability.DEAD_LETTER,
        Capability.PAUSE,
        Capability.PERSISTENCE,
        Capability.CROSS_PROCESS,
        Capability.REQUIRED_GROUPS,
    } <= RabbitBinder.capabilities


async def test_round_trip_keeps_order_headers_and_content_type(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("words")
    admin.track(dest, "g")
    collector = Collector()
    binding = await binder.consumer(ConsumerSpec("in", dest, "g"), collector)
    producer = await binder.producer(ProducerSpec("out", dest))
    sent = [
        Message(
            f"w{i}".encode(),
            {
                "contentType": "text/plain",
                "x-n": i,
                "x-f": 1.5,
                "x-big": 2**40,
                "x-dec": Decimal("1.25"),
                "x-nested": {"a": [1, "b", 2.5]},
            },
        )
        for i in range(500)
    ]
    await producer.send(sent)
    await collector.wait_for(500)
    assert collector.payloads == [m.payload for m in sent]  # one consumer: in order
    first = collector.messages[0]
    assert first.headers["contentType"] == "text/plain"
    assert first.headers["x-n"] == 0
    assert first.headers["x-f"] == 1.5  # a double ('d'), as Spring AMQP writes them
    assert first.headers["x-nested"] == {"a": [1, "b", 2.5]}
    assert type(first.headers["x-big"]) is int and first.headers["x-big"] == 2**40
    assert first.headers["x-dec"] == Decimal("1.25")
    assert max(collector.batches) > 1, "deliveries should be handed over in batches"
    await binding.stop()
    assert await admin.state(f"{dest}.g") == (0, 0), "everything acknowledged, consumer gone"


async def test_spring_topology(binder: RabbitBinder, admin: Admin, unique_name: Namer) -> None:
    """Exchange <dest>, durable queue <dest>.<group> dead-lettering to DLX -> <queue>.dlq."""
    dest = unique_name("topo")
    admin.track(dest, "g")
    await binder.consumer(ConsumerSpec("in", dest, "g"), Collector())

    def check(ch: Any) -> None:
        ch.exchange_declare(dest, "topic", passive=True)
        ch.exchange_declare("DLX", "direct", passive=True)
        # Declaring with Spring's exact arguments succeeds only if they match.
        ch.queue_declare(
            f"{dest}.g",
            durable=True,
            arguments={"x-dead-letter-exchange": "DLX", "x-dead-letter-routing-key": f"{dest}.g"},
        )
        ch.queue_declare(f"{dest}.g.dlq", durable=True)

    await asyncio.to_thread(admin._run, check)


async def test_groups_compete_and_each_group_gets_everything(
    binder: RabbitBinder, new_binder: MakeBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("orders")
    admin.track(dest, "workers", "audit")
    other = await new_binder()
    small = RabbitConsumerProperties(prefetch=5)
    w1, w2, audit, anon = Collector(), Collector(), Collector(), Collector()
    await binder.consumer(ConsumerSpec("w1", dest, "workers", extension=small), w1)
    await other.consumer(ConsumerSpec("w2", dest, "workers", extension=small), w2)
    await binder.consumer(ConsumerSpec("audit", dest, "audit"), audit)
    await other.consumer(ConsumerSpec("tail", dest, None), anon)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(300))
    await eventually(lambda: len(w1.messages) + len(w2.messages) == 300, "300 across the group")
    await audit.wait_for(300)
    await anon.wait_for(300)
    shared = w1.payloads + w2.payloads
    assert sorted(shared) == sorted(m.payload for m in texts(300)), "each message exactly once"
    assert w1.messages and w2.messages, "members of a group compete"
    assert len(audit.messages) == 300 and len(anon.messages) == 300


async def test_anonymous_queue_is_exclusive_and_goes_with_its_binding(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("anon")
    admin.track(dest)
    binding = await binder.consumer(ConsumerSpec("tail", dest, None), Collector())
    queue = binding.subscription.queue_name  # type: ignore[attr-defined]
    assert queue.startswith(f"{dest}.anonymous.")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="RESOURCE_LOCKED"):
        await admin.state(queue)  # exclusive to the binder's connection
    await binding.stop()
    assert await admin.state(queue) is None, "an anonymous queue ends with its binding"


async def test_required_groups_keep_what_is_sent_before_the_first_consumer(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("early")
    admin.track(dest, "late")
    producer = await binder.producer(
        ProducerSpec("out", dest, ProducerProperties(required_groups=["late"]))
    )
    await producer.send(texts(50))
    assert await admin.depth(f"{dest}.late") == 50
    collector = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "late"), collector)
    await collector.wait_for(50)
    assert collector.payloads == [m.payload for m in texts(50)]


async def test_unroutable_publish_is_a_delivery_error(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("nowhere")
    admin.track(dest)
    producer = await binder.producer(ProducerSpec("out", dest))
    with pytest.raises(DeliveryError, match="unroutable"):
        await producer.send(texts(3))


async def test_only_the_unroutable_messages_of_a_batch_fail(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("routed")
    admin.track(dest, "good")
    collector = Collector()
    await binder.consumer(
        ConsumerSpec(
            "in",
            dest,
            "good",
            extension=RabbitConsumerProperties(exchange_type="direct", binding_routing_key="good"),
        ),
        collector,
    )
    producer = await binder.producer(
        ProducerSpec(
            "out",
            dest,
            extension=RabbitProducerProperties(
                exchange_type="direct", routing_key_expression="headers['rk']"
            ),
        )
    )
    batch = [
        Message(f"{rk}{i}".encode(), {"rk": rk})
        for i, rk in enumerate(["good", "bad", "good", "bad", "good"])
    ]
    with pytest.raises(DeliveryError, match="2 of 5"):
        await producer.send(batch)
    await collector.wait_for(3)
    assert collector.payloads == [b"good0", b"good2", b"good4"]


async def test_routing_key_expression_on_json_payload(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("kinds")
    admin.track(dest, "big")
    big = Collector()
    await binder.consumer(
        ConsumerSpec(
            "in", dest, "big", extension=RabbitConsumerProperties(binding_routing_key="size.big")
        ),
        big,
    )
    producer = await binder.producer(
        ProducerSpec(
            "out",
            dest,
            ProducerProperties(required_groups=[]),
            RabbitProducerProperties(routing_key_expression="payload.kind", mandatory=False),
        )
    )
    await producer.send(
        [
            Message(b'{"kind": "size.big", "n": 1}'),
            Message(b'{"kind": "size.small", "n": 2}'),
            Message(b'{"kind": "size.big", "n": 3}'),
        ]
    )
    await big.wait_for(2)
    assert [m.payload for m in big.messages] == [
        b'{"kind": "size.big", "n": 1}',
        b'{"kind": "size.big", "n": 3}',
    ]


async def test_partitions_route_to_their_instance(
    binder: RabbitBinder, new_binder: MakeBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("parts")
    admin.track(dest)
    admin.queues.update({f"{dest}.p-0", f"{dest}.p-1", f"{dest}.p.dlq"})
    other = await new_binder()
    c0, c1 = Collector(), Collector()
    for b, index, c in ((binder, 0, c0), (other, 1, c1)):
        props = ConsumerProperties(partitioned=True, instance_index=index, instance_count=2)
        await b.consumer(ConsumerSpec("in", dest, "p", props), c)
    producer = await binder.producer(
        ProducerSpec("out", dest, ProducerProperties(partition_count=2))
    )
    sent = [Message(f"k{i}".encode(), {}, f"k{i}", i % 2) for i in range(100)]
    await producer.send(sent)
    await c0.wait_for(50)
    await c1.wait_for(50)
    assert c0.payloads == [m.payload for m in sent if m.partition == 0]  # in order, too
    assert c1.payloads == [m.payload for m in sent if m.partition == 1]
    assert {m.partition for m in c0.messages} == {0}


async def test_pause_resume_stop_start(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("pausing")
    admin.track(dest, "g")
    collector = Collector()
    binding = await binder.consumer(ConsumerSpec("in", dest, "g"), collector)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(10, "a"))
    await collector.wait_for(10)

    await binding.pause()
    assert binding.state is BindingState.PAUSED
    await producer.send(texts(10, "b"))
    # Paused: the messages wait in the queue and no consumer is subscribed.
    await eventually(lambda: _is(admin, f"{dest}.g", (10, 0)), "10 ready, no consumer")
    assert len(collector.messages) == 10
    await binding.resume()
    await collector.wait_for(20)

    await binding.stop()
    assert binding.state is BindingState.STOPPED
    await producer.send(texts(5, "c"))
    assert await admin.state(f"{dest}.g") == (5, 0), "a group keeps messages while stopped"
    await binding.start()
    await collector.wait_for(25)
    assert collector.payloads[-5:] == [m.payload for m in texts(5, "c")]


async def _is(admin: Admin, queue: str, expected: tuple[int, int]) -> bool:
    return await admin.state(queue) == expected


async def test_stop_finishes_the_batch_in_flight_and_acknowledges_it(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("graceful")
    admin.track(dest, "g")
    entered, release = asyncio.Event(), asyncio.Event()
    done: list[bytes] = []

    async def slow(batch: list[Message[bytes]]) -> list[None]:
        entered.set()
        await release.wait()
        done.extend(m.payload for m in batch)
        return [None] * len(batch)

    binding = await binder.consumer(ConsumerSpec("in", dest, "g"), slow)  # type: ignore[arg-type]
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(1))
    await asyncio.wait_for(entered.wait(), 10)
    stopping = asyncio.ensure_future(binding.stop())
    await asyncio.sleep(0)
    assert not stopping.done(), "stop waits for the batch in flight"
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert done == [b"m0"]
    assert await admin.state(f"{dest}.g") == (0, 0), "the finished batch was acknowledged"


async def test_a_batch_the_core_could_not_finish_is_redelivered(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("again")
    admin.track(dest, "g")
    calls = 0
    seen: list[bytes] = []

    async def flaky(batch: list[Message[bytes]]) -> list[None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DeliveryError("output not confirmed")
        seen.extend(m.payload for m in batch)
        return [None] * len(batch)

    await binder.consumer(ConsumerSpec("in", dest, "g"), flaky)  # type: ignore[arg-type]
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(20))
    await eventually(lambda: len(seen) >= 20, "20 messages after the failed batch")
    assert seen == [m.payload for m in texts(20)], "redelivered in order, none lost"


async def test_concurrency_consumers_share_the_queue(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("conc")
    admin.track(dest, "g")
    collector = Collector()
    binding = await binder.consumer(
        ConsumerSpec(
            "in",
            dest,
            "g",
            ConsumerProperties(concurrency=3),
            RabbitConsumerProperties(prefetch=10),
        ),
        collector,
    )
    assert await admin.state(f"{dest}.g") == (0, 3)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(200))
    await collector.wait_for(200)
    assert sorted(collector.payloads) == sorted(m.payload for m in texts(200))
    await binding.stop()


async def test_addresses_are_tried_in_order(rabbit_env: RabbitEnvironment, rabbit_url: str) -> None:
    import pika

    params = pika.URLParameters(rabbit_url)
    env = RabbitEnvironment.model_validate(
        {
            "addresses": f"127.0.0.1:1, {params.host}:{params.port}",
            "username": params.credentials.username,
            "password": params.credentials.password,
            "virtual-host": params.virtual_host,
        }
    )
    b = BinderDriver(RabbitBinder("multi", env))
    await b.start()
    try:
        assert b.connection.is_up
    finally:
        await b.close()


async def test_unreachable_broker_fails_start_after_startup_timeout_with_a_clear_message() -> None:
    from binders.rabbit.connection import ConnectError

    env = RabbitEnvironment.model_validate(
        {"host": "127.0.0.1", "port": 1, "password": "hunter2-secret", "startup-timeout": 1.5}
    )
    b = BinderDriver(RabbitBinder("down", env))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(ConnectError) as info:
        await b.start()
    took = loop.time() - began
    assert 1.5 <= took < 10, f"gave up after {took:.1f} s"
    assert "127.0.0.1:1" in str(info.value)
    assert "startup-timeout" in str(info.value)
    assert "hunter2-secret" not in str(info.value)
    await b.close()


async def test_start_waits_for_a_broker_that_comes_up_late(
    rabbit_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A relay on a free loopback port opens in front of the real broker only after
    start-up has failed to connect twice: it must keep trying and then connect through it."""
    params = pika.URLParameters(rabbit_url)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(params.host, params.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    probe = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # the port is free again: connecting is refused until it opens
    env = RabbitEnvironment.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "username": params.credentials.username,
            "password": params.credentials.password,
            "virtual-host": params.virtual_host,
            "startup-timeout": 30,
        }
    )
    b = BinderDriver(RabbitBinder("late", env))
    starting = asyncio.ensure_future(b.start())
    await eventually(
        lambda: sum("retrying in" in r.getMessage() for r in caplog.records) >= 2,
        "start-up to retry twice",
    )
    assert not starting.done(), "start() returned before any broker listened"
    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        await asyncio.wait_for(starting, 20)
        assert b.connection.is_up
    finally:
        await b.close()
        server.close()


async def test_wrong_password_is_reported_without_the_password(rabbit_url: str) -> None:
    import pika

    from binders.rabbit.connection import ConnectError

    params = pika.URLParameters(rabbit_url)
    env = RabbitEnvironment.model_validate(
        {
            "host": params.host,
            "port": params.port,
            "username": "guest",
            "password": "not-the-password-42",
        }
    )
    b = BinderDriver(RabbitBinder("badlogin", env))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(ConnectError) as info:
        await b.start()
    took = loop.time() - began
    assert took < 10, f"a refused login is final, yet start-up retried for {took:.1f} s"
    assert "not-the-password-42" not in str(info.value)
    assert "login refused" in str(info.value) or "ACCESS_REFUSED" in str(info.value)
    await b.close()


async def test_redeclaring_with_other_arguments_names_the_queue_and_the_fix(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    from binders.rabbit.provisioning import ProvisioningError

    dest = unique_name("clash")
    admin.track(dest, "g")
    await binder.consumer(ConsumerSpec("in", dest, "g"), Collector())
    strict = RabbitConsumerProperties(auto_bind_dlq=False, declare_mode="strict")
    with pytest.raises(ProvisioningError, match=rf"queue '{dest}.g'.*other settings"):
        await binder.consumer(ConsumerSpec("in2", dest, "g", extension=strict), Collector())


async def declare_like_spring(admin: Admin, dest: str, group: str) -> None:
    """``<dest>.<group>`` as a Spring app with its defaults declares it: no dead-letter
    exchange (``autoBindDlq`` false)."""

    def spring_like(ch: Any) -> None:
        ch.exchange_declare(dest, "topic", durable=True)
        ch.queue_declare(f"{dest}.{group}", durable=True)
        ch.queue_bind(f"{dest}.{group}", dest, "#")

    await asyncio.to_thread(admin._run, spring_like)


async def test_a_queue_declared_with_springs_defaults_is_adopted_with_one_warning(
    binder: RabbitBinder,
    admin: Admin,
    unique_name: Namer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Spring app with its defaults (autoBindDlq false) declared <dest>.<group> without a
    dead-letter exchange: we join it as it is, and our failures still reach our DLQ (we
    republish them ourselves)."""
    dest = unique_name("spring")
    admin.track(dest, "g")
    await declare_like_spring(admin, dest, "g")
    got = Collector(fail=lambda m: ValueError("no") if m.payload == b"bad" else None)
    with caplog.at_level(logging.WARNING, logger="binders.rabbit"):
        await binder.consumer(ConsumerSpec("in", dest, "g"), got)
    adopted = [r for r in caplog.records if "exists with other settings" in r.getMessage()]
    assert len(adopted) == 1 and f"{dest}.g" in adopted[0].getMessage()
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send([Message(b"good"), Message(b"bad")])
    await got.wait_for(1)
    assert got.payloads == [b"good"]

    async def dead_lettered() -> bool:
        return await admin.depth(f"{dest}.g.dlq") == 1

    await eventually(dead_lettered, "the failure in our DLQ", 20)


async def test_an_adopted_queue_without_a_dlx_still_dead_letters_with_republish_off(
    binder: RabbitBinder,
    admin: Admin,
    unique_name: Namer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """republish-to-dlq: false relies on the queue's x-dead-letter-exchange; an adopted queue
    has none, and rejecting would drop the failure. We republish it instead, and say so."""
    dest = unique_name("noreject")
    admin.track(dest, "g")
    await declare_like_spring(admin, dest, "g")
    got = Collector(fail=lambda m: ValueError("no") if m.payload == b"bad" else None)
    ext = RabbitConsumerProperties(republish_to_dlq=False)
    with caplog.at_level(logging.WARNING, logger="binders.rabbit"):
        await binder.consumer(ConsumerSpec("in", dest, "g", extension=ext), got)
    assert any("republish-to-dlq: false" in r.getMessage() for r in caplog.records)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send([Message(b"good"), Message(b"bad")])
    await got.wait_for(1)

    async def dead_lettered() -> bool:
        return await admin.depth(f"{dest}.g.dlq") == 1

    await eventually(dead_lettered, "the failure in our DLQ, not dropped", 20)
    assert await admin.depth(f"{dest}.g") == 0


async def test_a_message_amqp_cannot_carry_fails_alone(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    """An over-long routing key is refused before anything is written, so the delivery
    tags of the rest of the batch (and of later batches) still match their confirms."""
    dest = unique_name("encode")
    admin.track(dest, "g")
    collector = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "g"), collector)
    producer = await binder.producer(
        ProducerSpec(
            "out", dest, extension=RabbitProducerProperties(routing_key_expression="headers['rk']")
        )
    )
    batch = [
        Message(b"a", {"rk": "ok"}),
        Message(b"b", {"rk": "x" * 300}),
        Message(b"c", {"rk": "ok"}),
    ]
    with pytest.raises(DeliveryError, match=r"1 of 3.*cannot be encoded"):
        await producer.send(batch)
    await producer.send([Message(b"d", {"rk": "ok"})])
    await collector.wait_for(3)
    assert collector.payloads == [b"a", b"c", b"d"]


async def test_a_nacked_publish_is_a_delivery_error(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    """A full queue with x-overflow reject-publish makes RabbitMQ nack what does not fit."""
    dest = unique_name("full")
    admin.track(dest, "small")
    ext = RabbitProducerProperties(max_length=2, overflow_behavior="reject-publish")
    producer = await binder.producer(
        ProducerSpec("out", dest, ProducerProperties(required_groups=["small"]), ext)
    )
    with pytest.raises(DeliveryError, match=r"3 of 5.*nack"):
        await producer.send(texts(5))
    kept = admin.drain(f"{dest}.small")
    assert [body for _, _, body in kept] == [b"m0", b"m1"]
    assert all(props.delivery_mode == 2 for _, props, _ in kept), "persistent by default"


async def test_quorum_queue(binder: RabbitBinder, admin: Admin, unique_name: Namer) -> None:
    dest = unique_name("quorum")
    admin.track(dest, "q")
    ext = RabbitConsumerProperties.model_validate({"quorum": {"enabled": True}})
    collector = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "q", extension=ext), collector)

    def check(ch: Any) -> None:  # redeclaring with the same arguments succeeds
        ch.queue_declare(f"{dest}.q", durable=True, arguments={
            "x-queue-type": "quorum", "x-dead-letter-exchange": "DLX",
            "x-dead-letter-routing-key": f"{dest}.q"})  # fmt: skip

    await asyncio.to_thread(admin._run, check)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(20))
    await collector.wait_for(20)


async def test_prefix_applies_to_exchange_queues_and_dlx(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("pfx")
    admin.track(f"env1.{dest}", "g")
    admin.exchanges.add("env1.DLX")
    collector = Collector(fail=lambda m: ValueError("no") if m.payload == b"m1" else None)
    await binder.consumer(
        ConsumerSpec("in", dest, "g", extension=RabbitConsumerProperties(prefix="env1.")),
        collector,
    )
    producer = await binder.producer(
        ProducerSpec("out", dest, extension=RabbitProducerProperties(prefix="env1."))
    )
    await producer.send(texts(3))
    await collector.wait_for(2)
    await eventually(lambda: _is(admin, f"env1.{dest}.g.dlq", (1, 0)), "the dead letter")
    ((method, props, _),) = admin.drain(f"env1.{dest}.g.dlq")
    assert method.exchange == "env1.DLX"
    assert props.headers["x-original-exchange"] == f"env1.{dest}"
    assert props.headers["x-original-routingKey"] == dest  # Spring: without the prefix


async def test_a_deleted_queue_is_declared_again_and_consumed(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("gone")
    admin.track(dest, "g")
    collector = Collector()
    await binder.consumer(ConsumerSpec("in", dest, "g"), collector)
    await asyncio.to_thread(admin._run, lambda ch: ch.queue_delete(f"{dest}.g"))
    await eventually(lambda: _is(admin, f"{dest}.g", (0, 1)), "the queue back, subscribed")
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(texts(5))
    await collector.wait_for(5)


async def test_returns_on_a_headers_exchange_blame_the_right_message(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    """Identical bodies and routing keys, different headers: only the message no binding
    matches is reported, and the other one arrives."""
    dest = unique_name("hdrs")
    admin.track(dest, "a")
    got = Collector()
    await binder.consumer(
        ConsumerSpec("in", dest, "a", extension=RabbitConsumerProperties(
            exchange_type="headers", queue_binding_arguments={"x-match": "all", "kind": "a"})),
        got,
    )  # fmt: skip
    producer = await binder.producer(
        ProducerSpec("out", dest, extension=RabbitProducerProperties(exchange_type="headers"))
    )
    batch = [Message(b"same", {"kind": "a"}), Message(b"same", {"kind": "b"})]
    with pytest.raises(DeliveryError, match="1 of 2"):
        await producer.send(batch)
    await got.wait_for(1)
    assert got.messages[0].headers["kind"] == "a"
    # Which one was blamed: the publisher reports failures by position.
    rabbit = producer.sink
    assert isinstance(rabbit, RabbitSink)
    items = [(dest, m.payload, rabbit.properties(m.headers)) for m in batch]
    failures = await rabbit.publisher.publish(rabbit.exchange, items, mandatory=True)
    assert list(failures) == [1], failures


async def test_a_queue_refused_for_its_own_arguments_is_not_called_existing(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    """RabbitMQ's 406 also refuses arguments that are wrong in themselves (here an
    exclusive quorum queue): that queue does not exist, so it is neither adopted nor
    blamed on one that does."""
    from binders.rabbit.provisioning import ProvisioningError

    name = unique_name("refused")
    await binder.consumer(ConsumerSpec("in", unique_name("warm"), None), Collector())
    kwargs = {"queue": name, "durable": True, "exclusive": True}
    kwargs["arguments"] = {"x-queue-type": "quorum"}
    with pytest.raises(ProvisioningError) as info:
        await binder.topology._declare(("queue", name), "queue_declare", kwargs, adopt=True)
    text = str(info.value)
    assert "refused its arguments or properties" in text, text
    assert "other settings" not in text
