"""The binder conformance suite on the Redis plugin, wired as its docstring says.

Dead letters are read through the SPI with a group of their own, starting at the
beginning of the dead-letter stream. The "broker restart" is a server-side kill of every
connection the binders hold (CLIENT KILL): the test Redis runs without persistence, so a
real restart would also drop the data the case expects to survive.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import redis.asyncio as aioredis

from binder_core.message import Message
from binder_core.spi import Outcome
from binder_core.testing.conformance import BinderConformance, Kit, Subject, eventually

pytestmark = pytest.mark.redis


async def read_dead_letters(
    kit: Kit, destination: str, group: str, count: int, timeout: float
) -> list[Message[bytes]]:
    got: list[Message[bytes]] = []

    async def keep(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        got.extend(batch)
        return [None] * len(batch)

    binder = await kit.binder()
    binding = await kit.consumer(
        binder,
        f"{destination}.{group}.dlq",
        f"dlq-reader-{uuid.uuid4().hex[:8]}",
        keep,
        ext={"start-offset": "earliest"},
    )
    arrived = await eventually(lambda: len(got) >= count, timeout)
    await binding.stop()
    assert arrived, f"{len(got)} of {count} dead letters arrived"
    return got[:count]


def killer(url: str) -> Callable[[], object]:
    async def kill_binder_connections() -> None:
        client = aioredis.Redis.from_url(url, protocol=2)
        try:
            for info in await client.client_list():
                if str(info.get("name", "")).startswith("binder:conformance-"):
                    await client.execute_command("CLIENT", "KILL", "ID", info["id"])
        finally:
            await client.aclose()

    return kill_binder_connections


class TestRedisConformance(BinderConformance):
    @pytest.fixture
    async def subject(
        self, redis_url: str, unique_name: Callable[[str], str]
    ) -> AsyncIterator[Subject]:
        prefix = f"conformance:{uuid.uuid4().hex[:8]}:"
        yield Subject(
            "redis",
            {"url": redis_url, "key-prefix": prefix},
            names=unique_name,
            read_dead_letters=read_dead_letters,
            restart_broker=killer(redis_url),  # type: ignore[arg-type]
        )
        client = aioredis.Redis.from_url(redis_url, protocol=2)
        try:
            keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
