"""Fixtures for the RabbitMQ binder's tests: a started binder, an admin client that inspects
and cleans up queues over AMQP, and a collecting handle.

Everything here talks to the real broker on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest

from binder_core.message import Message
from binder_core.spi import Outcome
from binders.rabbit.binder import RabbitBinder
from binders.rabbit.settings import RabbitEnvironment

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 20.0


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
    delay = 0.01
    while True:
        got = condition()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


@dataclass
class Collector:
    """A consumer's handle that records what it receives; ``fail`` picks failures."""

    fail: Callable[[Message[bytes]], Exception | None] = lambda m: None
    messages: list[Message[bytes]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    async def __call__(self, batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        self.batches.append(len(batch))
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
    """Inspects and deletes broker objects with a plain blocking pika client, off the
    event loop. Remembers what a test named so it can clean up after it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            return fn(conn.channel())
        finally:
            conn.close()

    def queue_state(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, consumers), or None when the queue does not exist."""

        def inspect(ch: Any) -> tuple[int, int]:
            ok = ch.queue_declare(queue, passive=True).method
            return int(ok.message_count), int(ok.consumer_count)

        try:
            result: tuple[int, int] = self._run(inspect)
            return result
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise

    async def state(self, queue: str) -> tuple[int, int] | None:
        return await asyncio.to_thread(self.queue_state, queue)

    async def depth(self, queue: str) -> int:
        got = await self.state(queue)
        assert got is not None, f"queue {queue} does not exist"
        return got[0]

    def drain(self, queue: str, limit: int = 10_000) -> list[tuple[Any, Any, bytes]]:
        """Take (ack) every message from a queue: (method, properties, body) each."""

        def take(ch: Any) -> list[tuple[Any, Any, bytes]]:
            out = []
            while len(out) < limit:
                method, props, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    return out
                out.append((method, props, body))
            return out

        got: list[tuple[Any, Any, bytes]] = self._run(take)
        return got

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: pika.BasicProperties | None = None,
    ) -> None:
        def send(ch: Any) -> None:
            ch.confirm_delivery()
            ch.basic_publish(exchange, routing_key, body, props, mandatory=True)

        self._run(send)

    def track(self, destination: str, *groups: str) -> None:
        """Remember a destination and its group queues (and DLQs) for clean-up."""
        self.exchanges.add(destination)
        for g in groups:
            self.queues.update({f"{destination}.{g}", f"{destination}.{g}.dlq"})

    def cleanup(self) -> None:
        def delete(ch: Any) -> None:
            for q in sorted(self.queues):
                ch.queue_delete(q)
            for x in sorted(self.exchanges):
                ch.exchange_delete(x)

        # Best effort: a test that bounced the broker may leave a channel error.
        with contextlib.suppress(pika.exceptions.AMQPError):
            self._run(delete)


@pytest.fixture
def admin(rabbit_url: str) -> Iterator[Admin]:
    """Broker inspection and clean-up for one test."""
    a = Admin(rabbit_url)
    yield a
    a.cleanup()


@pytest.fixture
def rabbit_env(rabbit_url: str) -> RabbitEnvironment:
    """The binder environment pointing at the test broker."""
    return RabbitEnvironment.model_validate({"uri": rabbit_url})


@pytest.fixture
async def binder(rabbit_env: RabbitEnvironment, admin: Admin) -> AsyncIterator[RabbitBinder]:
    """A started rabbit binder, closed after the test (before ``admin`` cleans up)."""
    b = RabbitBinder("rabbit", rabbit_env)
    await b.start()
    yield b
    await b.close()


@pytest.fixture
async def new_binder(
    rabbit_env: RabbitEnvironment, admin: Admin
) -> AsyncIterator[Callable[[], Awaitable[RabbitBinder]]]:
    """More binders (as if from other processes), all closed after the test."""
    made: list[RabbitBinder] = []

    async def make() -> RabbitBinder:
        b = RabbitBinder(f"rabbit-{len(made)}", rabbit_env)
        await b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


class AppProcess:
    """``binder <args>`` run from the repository root (where apps/ and config/ are), its
    output going to a file so a chatty app can never block on a full pipe."""

    def __init__(self, log: Path, *args: str) -> None:
        environ = dict(os.environ)
        environ.setdefault("BINDER_LOG_LEVEL", "INFO")
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
        """SIGTERM and wait for the exit code."""
        if terminate and self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"app did not stop within {timeout}s:\n{self.output}") from None
        finally:
            self._out.close()
        return code


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    """Start ``binder`` commands; any still running after the test is killed."""
    started: list[AppProcess] = []

    def start(*args: str) -> AppProcess:
        proc = AppProcess(tmp_path / f"app-{len(started)}.log", *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.running():
            proc.kill()
