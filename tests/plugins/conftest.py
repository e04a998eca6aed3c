"""Fixtures for the plugin distributions' tests: a started Redis binder, an admin client
that inspects and deletes streams, a collecting handle, and ``binder`` subprocesses.

Everything talks to the real Redis on 127.0.0.1 (scripts/brokers up redis); nothing is
mocked. The plugins are used only through what they install: entry points and packages.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from binder_core.message import Message
from binder_core.spi import Outcome

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 20.0
PREFIX = "binder:"  # the binder's default key-prefix


def pytest_configure(config: pytest.Config) -> None:
    # The broker fixtures and markers; the root conftest may already have loaded them.
    if not config.pluginmanager.has_plugin("tests.brokers"):
        config.pluginmanager.import_plugin("tests.brokers")


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = DEADLINE
) -> None:
    """Wait until ``condition`` holds, polling; fail with ``what`` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.005
    while True:
        got = condition()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class Collector:
    """A consumer's handle that records what it receives; ``fail`` picks failures and
    ``gate``, when set, holds every batch until it is opened."""

    fail: Callable[[Message[bytes]], Exception | None] = lambda m: None
    messages: list[Message[bytes]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        self.batches.append(len(batch))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        out: list[Outcome] = []
        for m in batch:
            exc = self.fail(m)
            if exc is None:
                self.messages.append(m)
            out.append(exc)
        return out

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]

    async def wait_for(self, count: int, timeout: float = DEADLINE) -> None:
        await eventually(
            lambda: len(self.messages) >= count,
            f"{count} messages (have {len(self.messages)})",
            timeout,
        )


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

    made: list[RedisBinder] = []

    async def make(**environment: Any) -> RedisBinder:
        env = redis_env.model_copy(update=environment) if environment else redis_env
        b = RedisBinder(f"redis-{len(made)}", env)
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


class AppProcess:
    """``binder <args>`` run from the repository root (where apps/ and config/ are), its
    output going to a file so a chatty app can never block on a full pipe."""

    def __init__(self, log: Path, args: Sequence[str], env: dict[str, str] | None) -> None:
        environ = dict(os.environ)
        environ.setdefault("BINDER_LOG_LEVEL", "INFO")
        environ.update(env or {})
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("binder")), *args],
            cwd=REPO,
            env=environ,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as a crash."""
        self.proc.kill()
        self.proc.wait()
        self._out.close()

    async def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for the command to finish by itself; its exit code."""
        return await self.stop(timeout, terminate=False)

    async def stop(self, timeout: float = DEADLINE, terminate: bool = True) -> int:
        """SIGTERM (unless told not to) and wait for the exit code."""
        if terminate and self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"did not stop within {timeout}s:\n{self.output}") from None
        finally:
            self._out.close()
        return code


Apps = Callable[..., AppProcess]


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    """Start ``binder`` commands; any still running after the test is killed."""
    started: list[AppProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> AppProcess:
        proc = AppProcess(tmp_path / f"app-{len(started)}.log", args, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.running():
            proc.kill()
