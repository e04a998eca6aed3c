"""Poison entries among good ones, on the real Redis: every good entry is processed, every
poison entry reaches the dead-letter stream with its reason, and the consumer is still
running afterwards (no restart, an idle process)."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Any

import pytest
from binder_redis.fields import MAX_DEPTH, MAX_HEADERS
from pydantic import BaseModel

from tests.kafka.conftest import running_app
from tests.plugins.conftest import PREFIX, Admin
from tests.support import eventually

pytestmark = pytest.mark.redis


class Order(BaseModel):
    id: int


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


POISON: list[tuple[str, dict[bytes, bytes]]] = [
    ("not JSON", {b"payload": b"{nope"}),
    ("JSON nested far too deep", {b"payload": _deep(50_000)}),
    ("not an order", {b"payload": b'{"id": "seven"}'}),
    (
        "a JSON header nested past the limit",
        {b"payload": b'{"id": 1}', b"j:deep": _deep(MAX_DEPTH + 5)},
    ),
    (
        "too many headers",
        {b"payload": b'{"id": 2}', **{f"i:h{i}".encode(): b"1" for i in range(MAX_HEADERS + 1)}},
    ),
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_poison_entries_are_dead_lettered_and_the_stream_goes_on(
    admin: Admin, redis_url: str, unique_name: Callable[[str], str]
) -> None:
    dest = unique_name("orders")
    admin.track(dest)
    seen: list[int] = []

    def take(order: Order) -> None:
        seen.append(order.id)

    stream: dict[str, Any] = {
        "default-binder": "r",
        "binders": {"r": {"type": "redis", "environment": {"url": redis_url}}},
        "function": {"definition": "take"},
        "bindings": {"take-in-0": {"destination": dest, "group": "g"}},
    }
    key = PREFIX + dest
    async with running_app({"take": take}, stream) as app:
        binding = app.bindings["take-in-0"]
        for i, (_, fields) in enumerate(POISON):
            await admin.client.xadd(key, {b"payload": f'{{"id": {100 + i}}}'.encode()})
            await admin.client.xadd(key, fields)  # type: ignore[arg-type]
        await admin.client.xadd(key, {b"payload": b'{"id": 999}'})
        await eventually(lambda: 999 in seen, "the good entry after the poison", 60)
        assert seen == [100 + i for i in range(len(POISON))] + [999]

        async def all_dead() -> bool:
            return await admin.length(f"{dest}.g.dlq") >= len(POISON)

        await eventually(all_dead, "every poison entry in the dead-letter stream", 30)
        dead = await admin.entries(f"{dest}.g.dlq")
        assert len(dead) == len(POISON)
        for (what, _), (_, fields) in zip(POISON, dead, strict=True):
            assert fields.get(b"s:x-exception-message"), f"{what}: no reason given"
            fqcn = fields[b"s:x-exception-fqcn"].decode()
            assert fqcn.endswith(("ConversionError", "FieldsError")), (what, fqcn)
        assert binding.ready and binding.stats.restarts == 0 and binding.stats.redelivered == 0
        assert await admin.pending(dest, "g") == 0
        before = _cpu()
        await asyncio.sleep(1.0)
        assert _cpu() - before < 0.3, "the process is not idle after the poison"
