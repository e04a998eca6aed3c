"""Fixtures for the dead-letter tests: on each binder (memory, Kafka, RabbitMQ, the Redis
plugin) a lab that dead-letters messages the way an app does (through the core's consumer
loop, with a handle that fails some of them), then reads what arrives where they are
replayed. Every broker is the real one on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from binder_core.dlq.spi import DeadLetterQueue, DeadLetters, access
from binder_core.kit import bind_consumer, bind_producer
from binder_core.message import Message
from binder_core.properties import ConsumerProperties, ProducerProperties
from binder_core.spi import Binder, ConsumerSpec, Outcome, ProducerSpec
from tests.support import (
    apps,  # noqa: F401  (the apps fixture)
    eventually,
)

BROKERS = ("memory", "kafka", "rabbit", "redis")


def fail_bad(msg: Message[bytes]) -> Exception | None:
    """The lab's function: payloads starting with ``bad`` fail with a ValueError, those
    starting with ``ugly`` with a KeyError."""
    if msg.payload.startswith(b"bad"):
        return ValueError("bad price: not a number")
    if msg.payload.startswith(b"ugly"):
        return KeyError("symbol")
    return None


@dataclass
class Lab:
    """One binder, a destination and group whose failures are dead-lettered."""

    kind: str
    binder: Binder
    destination: str
    group: str
    environment: dict[str, Any]
    received: list[Message[bytes]] = field(default_factory=list)
    _bindings: list[Any] = field(default_factory=list)

    @property
    def dead_letters(self) -> DeadLetters:
        found = access(self.binder)
        assert found is not None
        return found

    def spec(self, fail: bool = True) -> ConsumerSpec:
        return ConsumerSpec(
            "orders-in-0",
            self.destination,
            self.group,
            ConsumerProperties(max_attempts=1),
        )

    @property
    def queue_name(self) -> str:
        name = self.dead_letters.locate(self.spec())
        assert name is not None
        return name

    async def consume(self, fail: Callable[[Message[bytes]], Exception | None]) -> Any:
        """Bind the group's consumer: messages ``fail`` picks are dead-lettered, the rest
        recorded in ``received``."""

        async def handle(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
            out: list[Outcome] = []
            for m in batch:
                exc = fail(m)
                if exc is None:
                    self.received.append(m)
                out.append(exc)
            return out

        binding = await bind_consumer(self.binder, self.spec(), handle)
        self._bindings.append(binding)
        return binding

    async def send(self, payloads: Sequence[bytes], headers: dict[str, Any] | None = None) -> None:
        output = await bind_producer(
            self.binder, ProducerSpec("lab-out", self.destination, ProducerProperties())
        )
        try:
            for start in range(0, len(payloads), 500):
                await output.send(
                    [Message(p, dict(headers or {})) for p in payloads[start : start + 500]]
                )
        finally:
            await output.close()

    async def open(self) -> DeadLetterQueue:
        return await self.dead_letters.open(self.queue_name)

    async def size(self) -> int:
        queue = await self.open()
        try:
            return await queue.size() or 0
        finally:
            await queue.close()

    async def wait_dead(self, count: int) -> None:
        async def there() -> bool:
            try:
                return await self.size() >= count
            except Exception:
                return False

        await eventually(there, f"{count} dead letters in {self.queue_name}")

    async def dead_letter(self, payloads: Sequence[bytes], bad: int) -> None:
        """Send ``payloads`` through a consumer that fails the bad ones; wait until the
        ``bad`` failures are dead-lettered and the rest received; stop the consumer."""
        binding = await self.consume(fail_bad)
        await self.send(payloads)
        await self.wait_dead(bad)
        good = len(payloads) - bad
        await eventually(lambda: len(self.received) >= good, f"{good} received")
        await binding.stop()
        self._bindings.remove(binding)
        self.received.clear()

    async def close(self) -> None:
        for binding in self._bindings:
            await binding.stop()
        await self.binder.close()


def _environment(kind: str, address: str) -> dict[str, Any]:
    if kind == "kafka":
        return {"bootstrap-servers": address}
    if kind == "rabbit":
        return {"uri": address}
    if kind == "redis":
        return {"url": address}
    return {}


def make_binder(kind: str, environment: dict[str, Any]) -> Binder:
    from binder_core.plugins import load_plugins

    binder_type = load_plugins().binder_types[kind]
    return binder_type.factory(f"{kind}-dlq", binder_type.environment.model_validate(environment))


@pytest.fixture(params=BROKERS)
async def lab(
    request: pytest.FixtureRequest, unique_name: Callable[[str], str]
) -> AsyncIterator[Lab]:
    kind: str = request.param
    address = ""
    if kind != "memory":
        request.applymarker(getattr(pytest.mark, kind))
        fixture = {"kafka": "kafka_bootstrap", "rabbit": "rabbit_url", "redis": "redis_url"}[kind]
        address = request.getfixturevalue(fixture)
    environment = _environment(kind, address)
    binder = make_binder(kind, environment)
    await binder.start()
    made = Lab(kind, binder, unique_name("orders"), unique_name("g"), environment)
    try:
        yield made
    finally:
        await made.close()
        if kind == "redis":
            await _redis_cleanup(address, made.destination)


async def _redis_cleanup(url: str, destination: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        keys = [k async for k in client.scan_iter(match=f"binder:{destination}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def gather(lab: Lab, count: int, timeout: float = 30.0) -> None:
    """Wait until the lab's consumer received ``count`` messages."""
    await eventually(lambda: len(lab.received) >= count, f"{count} received", timeout)
    await asyncio.sleep(0)
