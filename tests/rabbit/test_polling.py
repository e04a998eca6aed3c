"""A polled consumer on RabbitMQ: the app pulls messages when it wants; what it rejects is
dead-lettered with the reason, what it acknowledges is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from binder_core import pollable
from tests.kafka.conftest import running_app
from tests.rabbit.conftest import Admin
from tests.support import eventually

pytestmark = pytest.mark.rabbit


async def test_polled_messages_are_acknowledged_or_dead_lettered(
    rabbit_url: str, admin: Admin, unique_name: Any
) -> None:
    dest = unique_name("polled")
    admin.track(dest, "g")
    stream: dict[str, Any] = {
        "default-binder": "rabbit",
        "binders": {"rabbit": {"type": "rabbit", "environment": {"uri": rabbit_url}}},
        "pollable-source": "jobs",
        "bindings": {
            "jobs-in-0": {"destination": dest, "group": "g", "content-type": "text/plain"}
        },
    }
    async with running_app({}, stream):
        for word in (b"one", b"two"):
            await asyncio.to_thread(admin.publish, dest, "k", word)
        source = pollable("jobs-in-0")
        one = await source.receive(str, timeout=10)
        assert one is not None and one.value == "one"
        await one.ack()
        two = await source.receive(str, timeout=10)
        assert two is not None and two.value == "two"
        await two.reject(ValueError("not this one"))

        async def dead() -> bool:
            return await admin.depth(f"{dest}.g.dlq") == 1

        await eventually(dead, "the rejected message in the DLQ", 20)
        assert await admin.depth(f"{dest}.g") == 0
