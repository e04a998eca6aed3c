"""Redis Streams smoke test with the raw redis-py asyncio client: no binder code involved."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

pytestmark = pytest.mark.redis

DEADLINE_S = 10.0


def stream_entries(response: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREADGROUP's reply as a flat entry list (RESP2 gives a list, RESP3 a dict)."""
    streams = response.items() if isinstance(response, dict) else response or []
    entries: list[tuple[bytes, dict[bytes, bytes]]] = []
    for _stream, messages in streams:
        entries.extend((entry_id, fields) for entry_id, fields in messages)
    return entries


async def test_redis_stream_group_roundtrip(
    redis_url: str, unique_name: Callable[[str], str]
) -> None:
    stream, group = unique_name("smoke-stream"), unique_name("smoke-group")
    payload = f"redis-smoke-{uuid.uuid4().hex}".encode()

    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.xgroup_create(stream, group, id="0", mkstream=True)
        entry_id = await client.xadd(stream, {b"payload": payload})

        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        while not entries:
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"nothing read from {stream} within {DEADLINE_S}s")
            response = await client.xreadgroup(
                group, "consumer-1", {stream: ">"}, count=10, block=int(min(remaining, 1.0) * 1000)
            )
            entries = stream_entries(response)
        assert entries == [(entry_id, {b"payload": payload})]

        assert await client.xack(stream, group, entry_id) == 1
        pending = await client.xpending(stream, group)
        assert pending["pending"] == 0
    finally:
        await client.delete(stream)
        await client.aclose()
