"""Poison records among good ones, on the real broker: every good record is processed,
every poison record reaches the dead-letter topic with its reason, and the consumer is
still running afterwards: no restart, no reconnect loop, an idle process."""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

import pytest
from pydantic import BaseModel

from binder_core.limits import HEADER_NESTING_DEPTH
from binders.kafka.headers import JSON_TYPES
from tests.kafka.conftest import Kit, binder_tree, running_app
from tests.support import eventually

pytestmark = pytest.mark.kafka


class Order(BaseModel):
    id: int


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


#: (what it is, value, headers): each must fail alone, as a conversion failure.
POISON: list[tuple[str, bytes, list[tuple[str, bytes]]]] = [
    ("not JSON", b"{nope", []),
    ("JSON nested far too deep", _deep(50_000), []),
    ("not an order", b'{"id": "seven"}', []),
    (
        "a typed header nested past the limit",
        b'{"id": 1}',
        [
            ("deep", _deep(HEADER_NESTING_DEPTH + 5)),
            (JSON_TYPES, b'{"deep":"java.util.ArrayList"}'),
        ],
    ),
    (
        "a contentType header typed as a map",
        b'{"id": 2}',
        [("contentType", b'{"a":1}'), (JSON_TYPES, b'{"contentType":"java.util.HashMap"}')],
    ),
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_poison_records_are_dead_lettered_and_the_stream_goes_on(kit: Kit) -> None:
    source, group = kit.name("orders"), kit.name("g")
    await kit.create(source)
    seen: list[int] = []

    def take(order: Order) -> None:
        seen.append(order.id)

    stream: dict[str, Any] = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "take"},
        "bindings": {"take-in-0": {"destination": source, "group": group}},
    }
    async with running_app({"take": take}, stream) as app:
        binding = app.bindings["take-in-0"]
        for i, (_, value, headers) in enumerate(POISON):
            await kit.produce(source, [json.dumps({"id": 100 + i}).encode()])
            await kit.produce(source, [value], headers=headers)
        # A type map nested far too deep is not read (the headers stay untyped bytes):
        # the record itself is fine and is processed.
        await kit.produce(source, [b'{"id": 500}'], headers=[(JSON_TYPES, _deep(20_000))])
        await kit.produce(source, [b'{"id": 999}'])
        await eventually(lambda: 999 in seen, "the good record after the poison", 60)
        expected = [100 + i for i in range(len(POISON))] + [500, 999]
        assert seen == expected, "every good record, in order"
        dead = await kit.read(f"error.{source}.{group}", len(POISON))
        reasons = [dict(r.headers)["x-exception-message"].decode() for r in dead]
        assert len(reasons) == len(POISON)
        assert [r.value for r in dead] == [p[1] for p in POISON]
        for (what, _, _), reason in zip(POISON, reasons, strict=True):
            assert reason, f"{what}: no reason given"
        kinds = [dict(r.headers)["x-exception-fqcn"].decode() for r in dead]
        assert all(k.endswith(("ConversionError", "UnreadableHeaders")) for k in kinds), kinds
        # Still running, never restarted, never redelivered a batch, broker connection kept.
        assert binding.ready and binding.stats.restarts == 0 and binding.stats.redelivered == 0
        health = await app.binders["kafka"].health()
        assert health.up and health.reconnects == 0
        # Idle afterwards: no loop spinning on a record it cannot read.
        before = _cpu()
        await asyncio.sleep(1.0)
        assert _cpu() - before < 0.3, "the process is not idle after the poison"
