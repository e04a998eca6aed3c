"""Fixtures for the plugin distributions' tests: a started Redis binder, an admin client
that inspects and deletes streams, a collecting handle, and ``binder`` subprocesses.

Everything talks to the real Redis on 127.0.0.1 (scripts/brokers up redis); nothing is
mocked. The plugins are used only through what they install: entry points and packages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support import apps  # noqa: F401  (the apps fixture)

PREFIX = "binder:"  # the binder's default key-prefix


class Admin:
    """A plain redis-py client for looking at what the binder did, and for deleting every
    key a test touched (the destinations it named, with their partitions and DLQs)."""

    def __init__(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url, protocol=2)
        self.destinations: set[str] = set()

    def track(self, *destinations: str) -> None:
        self.destinations.update(destinations)

    async def length(self, destination: str) -> int:
        return int(await self.client.xlen(PREFIX + destination))

    async def entries(self, destination: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        got: list[tuple[bytes, dict[bytes, bytes]]] = await self.client.xrange(PREFIX + destination)
        return got

    async def groups(self, destination: str) -> dict[str, dict[str, Any]]:
        """XINFO GROUPS by name; empty when the stream does not exist."""
        try:
            infos = await self.client.xinfo_groups(PREFIX + destination)
        except aioredis.ResponseError:
            return {}
        return {_text(i["name"]): i for i in infos}

    async def pending(self, destination: str, group: str) -> int:
        info = await self.client.xpending(PREFIX + destination, group)
        return int(info["pending"])

    async def cleanup(self) -> None:
        for dest in self.destinations:
            keys = [k async for k in self.client.scan_iter(match=f"{PREFIX}{dest}*")]
            if keys:
                await self.client.delete(*keys)
        await self.client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Admin]:
    """Redis inspection and clean-up for one test."""
    a = Admin(redis_url)
    yield a
    await a.cleanup()


@pytest.fixture
def redis_env(redis_url: str) -> Any:
    """The binder environment pointing at the test Redis."""
    from binder_redis.settings import RedisEnvironment

    return RedisEnvironment.model_validate({"url": redis_url})


@pytest.fixture
async def new_binder(redis_env: Any, admin: Admin) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Started Redis binders (as if in separate processes), all closed after the test."""
    from binder_redis.binder import RedisBinder

    from binder_core.testing.driver import BinderDriver

    made: list[BinderDriver] = []

    async def make(**environment: Any) -> BinderDriver:
        env = redis_env.model_copy(update=environment) if environment else redis_env
        b = BinderDriver(RedisBinder(f"redis-{len(made)}", env))
        await b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


@pytest.fixture
async def binder(new_binder: Callable[..., Awaitable[Any]]) -> Any:
    """One started Redis binder."""
    return await new_binder()
