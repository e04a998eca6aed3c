"""Fixtures for the RabbitMQ binder's tests: a started binder, an admin client that inspects
and cleans up queues over AMQP, and a collecting handle.

Everything here talks to the real broker on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pika
import pytest

from binder_core.testing.driver import BinderDriver
from binders.rabbit.binder import RabbitBinder
from binders.rabbit.settings import RabbitEnvironment
from tests.support import apps  # noqa: F401  (the apps fixture)


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
    b = BinderDriver(RabbitBinder("rabbit", rabbit_env))
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
        b = BinderDriver(RabbitBinder(f"rabbit-{len(made)}", rabbit_env))
        await b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()
