"""Poison messages among good ones, on the real broker: every good message is processed,
every poison message reaches the dead-letter queue with its reason, and the consumer is
still running afterwards: no restart, no reconnect loop, an idle process."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import pika
import pytest
from pydantic import BaseModel

from binders.rabbit.headers import MAX_HEADERS
from tests.kafka.conftest import running_app
from tests.rabbit.conftest import Admin
from tests.rabbit.frames import RawProperties, nested, properties, wide
from tests.support import eventually

pytestmark = pytest.mark.rabbit


class Order(BaseModel):
    id: int


def _json(text: str) -> pika.BasicProperties:
    return pika.BasicProperties(content_type="application/json", delivery_mode=2)


#: (what it is, body, properties): each must fail alone, as a conversion failure.
POISON: list[tuple[str, bytes, Any]] = [
    ("not JSON", b"{nope", _json("")),
    ("JSON nested far too deep", b"[" * 50_000 + b"]" * 50_000, _json("")),
    ("not an order", b'{"id": "seven"}', _json("")),
    (
        "a header table nested 3,000 deep",
        b'{"id": 1}',
        RawProperties(properties(nested(3000), content_type="application/json")),
    ),
    (
        "a header table with too many headers",
        b'{"id": 2}',
        RawProperties(properties(wide(MAX_HEADERS + 1), content_type="application/json")),
    ),
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_poison_messages_are_dead_lettered_and_the_stream_goes_on(
    rabbit_url: str, admin: Admin, unique_name: Any
) -> None:
    dest, group = unique_name("orders"), "g"
    admin.track(dest, group)
    seen: list[int] = []

    def take(order: Order) -> None:
        seen.append(order.id)

    stream: dict[str, Any] = {
        "default-binder": "rabbit",
        "binders": {"rabbit": {"type": "rabbit", "environment": {"uri": rabbit_url}}},
        "default": {"consumer": {"back-off-initial-interval": 1, "back-off-max-interval": 5}},
        "function": {"definition": "take"},
        "bindings": {"take-in-0": {"destination": dest, "group": group}},
    }
    async with running_app({"take": take}, stream) as app:
        binding = app.bindings["take-in-0"]
        for i, (_, body, props) in enumerate(POISON):
            await asyncio.to_thread(
                admin.publish, dest, "k", f'{{"id": {100 + i}}}'.encode(), _json("")
            )
            await asyncio.to_thread(admin.publish, dest, "k", body, props)
        await asyncio.to_thread(admin.publish, dest, "k", b'{"id": 999}', _json(""))
        await eventually(lambda: 999 in seen, "the good message after the poison", 60)
        assert seen == [100 + i for i in range(len(POISON))] + [999], "every good one, in order"

        async def all_dead() -> bool:
            return await admin.depth(f"{dest}.{group}.dlq") >= len(POISON)

        await eventually(all_dead, "every poison message in the DLQ", 30)
        dead = await asyncio.to_thread(admin.drain, f"{dest}.{group}.dlq")
        assert [body for _, _, body in dead] == [p[1] for p in POISON]
        for (what, _, _), (_, props, _) in zip(POISON, dead, strict=True):
            headers = props.headers or {}
            assert headers.get("x-exception-message"), f"{what}: no reason given"
            fqcn = headers["x-exception-fqcn"]
            assert fqcn.endswith(("ConversionError", "HeaderTableError")), (what, fqcn)
        # Still running, never restarted or redelivered; one connection all along.
        assert binding.ready and binding.stats.restarts == 0 and binding.stats.redelivered == 0
        health = await app.binders["rabbit"].health()
        assert health.up and health.reconnects == 0
        before = _cpu()
        await asyncio.sleep(1.0)
        assert _cpu() - before < 0.3, "the process is not idle after the poison"
