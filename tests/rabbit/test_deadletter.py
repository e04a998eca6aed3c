"""Dead-lettering on the real broker: what reaches the DLQ, header by header, with and
without republishing; delayed redelivery through the DLQ's TTL; anonymous subscriptions."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from binder_core.message import Message
from binder_core.spi import ConsumerSpec, ProducerSpec
from binders.rabbit.binder import RabbitBinder
from binders.rabbit.settings import RabbitConsumerProperties
from tests.rabbit.conftest import Admin
from tests.support import Collector, eventually

pytestmark = pytest.mark.rabbit

Namer = Callable[[str], str]


def bad_ones(m: Message[bytes]) -> Exception | None:
    return (
        ValueError(f"cannot handle {m.payload.decode()}") if m.payload.startswith(b"bad") else None
    )


def mixed() -> list[Message[bytes]]:
    out = []
    for i in range(10):
        name = f"bad{i}" if i % 3 == 0 else f"good{i}"
        out.append(Message(name.encode(), {"contentType": "text/plain", "x-trace": f"t{i}"}))
    return out


async def test_republished_dead_letters_carry_the_exception_and_the_origin(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("dl")
    admin.track(dest, "g")
    collector = Collector(fail=bad_ones)
    await binder.consumer(ConsumerSpec("in", dest, "g"), collector)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(mixed())
    await collector.wait_for(6)
    await eventually(lambda: _depth_is(admin, f"{dest}.g.dlq", 4), "4 dead letters")
    dead = admin.drain(f"{dest}.g.dlq")
    assert [body for _, _, body in dead] == [b"bad0", b"bad3", b"bad6", b"bad9"]
    for (method, props, body), i in zip(dead, (0, 3, 6, 9), strict=True):
        h = props.headers
        assert method.exchange == "DLX"
        assert method.routing_key == f"{dest}.g"  # Spring: the queue name
        assert h["x-exception-message"] == f"cannot handle {body.decode()}"
        assert h["x-exception-fqcn"] == "builtins.ValueError"
        assert "ValueError: cannot handle" in h["x-exception-stacktrace"]
        assert h["x-original-exchange"] == dest
        assert h["x-original-routingKey"] == dest
        assert h["x-trace"] == f"t{i}", "the message's own headers are kept"
        assert props.content_type == "text/plain"
        assert props.delivery_mode == 2
        assert "x-death" not in h, "republished, not rejected"
    assert await admin.state(f"{dest}.g") == (0, 1), "the whole batch was acknowledged"
    assert collector.payloads == [m.payload for m in mixed() if m.payload.startswith(b"good")]


async def test_without_republish_the_broker_dead_letters_rejected_messages(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    dest = unique_name("rej")
    admin.track(dest, "g")
    collector = Collector(fail=bad_ones)
    ext = RabbitConsumerProperties(republish_to_dlq=False)
    await binder.consumer(ConsumerSpec("in", dest, "g", extension=ext), collector)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send(mixed())
    await eventually(lambda: _depth_is(admin, f"{dest}.g.dlq", 4), "4 dead letters")
    dead = admin.drain(f"{dest}.g.dlq")
    assert [body for _, _, body in dead] == [b"bad0", b"bad3", b"bad6", b"bad9"]
    for _, props, _ in dead:
        death = props.headers["x-death"][0]
        assert death["reason"] == "rejected"
        assert death["queue"] == f"{dest}.g"
        assert death["exchange"] == dest
        assert "x-exception-message" not in props.headers
    assert await admin.state(f"{dest}.g") == (0, 1)
    assert len(collector.messages) == 6


async def test_dlq_ttl_sends_dead_letters_back_for_a_later_attempt(
    binder: RabbitBinder, admin: Admin, unique_name: Namer
) -> None:
    """Spring's documented delayed retry: the DLQ's TTL expires a dead letter into the
    default exchange, which routes it (by the queue name) back to the group's queue."""
    dest = unique_name("later")
    admin.track(dest, "g")
    attempts: dict[bytes, int] = {}

    def first_time_fails(m: Message[bytes]) -> Exception | None:
        attempts[m.payload] = attempts.get(m.payload, 0) + 1
        return RuntimeError("not yet") if attempts[m.payload] == 1 else None

    collector = Collector(fail=first_time_fails)
    ext = RabbitConsumerProperties(dlq_ttl=200, dlq_dead_letter_exchange="")
    await binder.consumer(ConsumerSpec("in", dest, "g", extension=ext), collector)
    producer = await binder.producer(ProducerSpec("out", dest))
    await producer.send([Message(b"job1"), Message(b"job2")])
    await collector.wait_for(2)
    assert sorted(collector.payloads) == [b"job1", b"job2"]
    assert attempts == {b"job1": 2, b"job2": 2}
    assert await admin.depth(f"{dest}.g.dlq") == 0


async def test_anonymous_failures_are_logged_and_dropped(
    binder: RabbitBinder, admin: Admin, unique_name: Namer, caplog: pytest.LogCaptureFixture
) -> None:
    dest = unique_name("anonfail")
    admin.track(dest)
    collector = Collector(fail=bad_ones)
    await binder.consumer(ConsumerSpec("tail", dest, None), collector)
    producer = await binder.producer(ProducerSpec("out", dest))
    with caplog.at_level(logging.ERROR, logger="binders.rabbit"):
        await producer.send(mixed())
        await collector.wait_for(6)
        await eventually(lambda: "anonymous subscription" in caplog.text, "an error log")
    # The exception's type is named; its text (which may quote the payload) stays out of
    # logs above DEBUG.
    assert "ValueError" in caplog.text
    assert "cannot handle bad" not in caplog.text


async def _depth_is(admin: Admin, queue: str, n: int) -> bool:
    state = await admin.state(queue)
    return state is not None and state[0] == n
