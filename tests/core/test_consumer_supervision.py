"""The core's consumer loop supervising a source that fails under it (a fake ``Source``,
faults injected): an unexpected error from ``fetch`` is logged as an ERROR naming the
binding, the source is closed and opened again after a back-off while readiness (the
management endpoint's ``/ready``) says the consumer is restarting, and processing goes on;
``Permanent`` from ``open`` fails the binding's start with that error."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from binder_core.consumer import ConsumerBinding, ConsumerStatus, HandleProcessor
from binder_core.management import Management
from binder_core.message import Message
from binder_core.properties import ManagementProperties
from binder_core.remote import call
from binder_core.spi import Batch, BindingState, Health, Permanent
from binder_core.stateful import AppState
from tests.support import Collector, eventually

NAME = "words-in-0"


class FakeSource:
    """One consumer of ``FakeSubscription``: takes what waits there, raises what the test
    put in its way."""

    overlap = False

    def __init__(self, sub: FakeSubscription, index: int) -> None:
        self.sub = sub
        self.index = index
        self.closed = False
        self._wake = asyncio.Event()

    async def open(self) -> None:
        sub = self.sub
        sub.opens.append(asyncio.get_running_loop().time())
        gate = sub.open_gates.popleft() if sub.open_gates else None
        if gate is not None:
            await gate.wait()
        if sub.open_faults:
            raise sub.open_faults.popleft()

    async def fetch(self, wait: bool) -> Batch | None:
        sub = self.sub
        if sub.fetch_faults:
            sub.failed_at.append(asyncio.get_running_loop().time())
            raise sub.fetch_faults.popleft()
        if sub.waiting:
            taken = list(sub.waiting)
            sub.waiting.clear()
            return Batch(taken)
        if not wait:
            return None
        self._wake.clear()
        sub.sources.add(self)
        try:
            await self._wake.wait()
        finally:
            sub.sources.discard(self)
        return None  # woken: interrupted, or something arrived for the next fetch

    def interrupt(self) -> None:
        self._wake.set()

    async def settle(
        self, batch: Batch, failed: Sequence[tuple[int, Exception]], transaction: Any = None
    ) -> None:
        self.sub.settled.extend(m.payload for m in batch.messages)

    async def redeliver(self, batches: Sequence[Batch]) -> None:
        for batch in reversed(batches):
            self.sub.waiting.extendleft(reversed(batch.messages))

    async def pause(self) -> None:
        pass

    async def resume(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True
        self._wake.set()


@dataclass
class FakeSubscription:
    """A fake broker destination and its faults: each fault is raised once, in order."""

    drain_timeout: float = 5.0
    waiting: deque[Message[bytes]] = field(default_factory=deque)
    settled: list[bytes] = field(default_factory=list)
    fetch_faults: deque[Exception] = field(default_factory=deque)
    open_faults: deque[Exception] = field(default_factory=deque)
    #: Per ``open`` in turn: an event it waits for first (``None``: no wait).
    open_gates: deque[asyncio.Event | None] = field(default_factory=deque)
    opens: list[float] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)
    made: list[FakeSource] = field(default_factory=list)
    sources: set[FakeSource] = field(default_factory=set)

    def source(self, index: int) -> FakeSource:
        made = FakeSource(self, index)
        self.made.append(made)
        return made

    def send(self, *payloads: bytes) -> None:
        self.waiting.extend(Message(p, {}) for p in payloads)
        for source in list(self.sources):
            source.interrupt()

    async def close(self) -> None:
        pass


class FakeBinder:
    """A binder whose broker always answers."""

    name = "fake"
    capabilities: frozenset[Any] = frozenset()

    async def health(self) -> Health:
        return Health(True, "answers")


@dataclass
class FakeApp:
    """The little of an app the management endpoint's readiness reads."""

    bindings: dict[str, ConsumerBinding]
    binders: dict[str, Any] = field(default_factory=lambda: {"fake": FakeBinder()})
    outputs_by_name: dict[str, Any] = field(default_factory=dict)
    plan: Any = None
    state: AppState = field(default_factory=AppState)

    def binder_of(self, binding: str) -> str:
        return "fake"


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[FakeSubscription, ConsumerBinding, Collector, str]]:
    sub = FakeSubscription()
    collector = Collector()
    binding = ConsumerBinding(NAME, sub, HandleProcessor(collector))  # type: ignore[arg-type]
    management = Management(FakeApp({NAME: binding}), ManagementProperties(port=0))
    await management.start()
    try:
        yield sub, binding, collector, management.url
    finally:
        await binding.stop()
        await management.stop()


async def ready(url: str) -> tuple[int, Any]:
    return await asyncio.to_thread(call, url, "/ready", "BINDER_TEST_NO_TOKEN")


async def test_a_failing_fetch_restarts_the_source_with_back_off_and_readiness_says_so(
    endpoint: tuple[FakeSubscription, ConsumerBinding, Collector, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub, binding, collector, url = endpoint
    await binding.start()
    assert (await ready(url))[0] == 200
    sub.send(b"first")
    await collector.wait_for(1)

    # The next fetch raises something no binder should, once; the next open waits for us.
    gate = asyncio.Event()
    sub.open_gates.extend([gate])
    with caplog.at_level(logging.ERROR, logger="binder_core.consumer"):
        sub.fetch_faults.append(RuntimeError("socket went away"))
        sub.send(b"second")
        await eventually(lambda: len(sub.opens) == 2, "the source opened again")
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == (
        f"binding {NAME}: consumer failed (RuntimeError: socket went away); "
        "opening it again in 0.2 s"
    )
    assert sub.opens[1] - sub.failed_at[0] >= 0.2, "opened again without a back-off"
    assert sub.made[0].closed, "the failed source was not closed"
    assert binding.stats.restarts == 1

    status, report = await ready(url)
    assert status == 503
    assert report["status"] == "DOWN"
    assert report["binders"]["fake"]["status"] == "UP"
    assert report["bindings"][NAME] == {
        "status": "DOWN",
        "state": "running",
        "consumers": ["restarting"],
    }
    assert binding.consumers == [ConsumerStatus.RESTARTING] and not binding.ready

    gate.set()  # the broker is back: the open succeeds
    await collector.wait_for(2)
    status, report = await ready(url)
    assert status == 200
    assert report["bindings"][NAME]["consumers"] == ["running"]
    sub.send(b"third")
    await collector.wait_for(3)
    assert collector.payloads == [b"first", b"second", b"third"]
    assert sub.settled == [b"first", b"second", b"third"]


async def test_an_open_that_fails_for_a_passing_reason_is_tried_again() -> None:
    sub = FakeSubscription()
    sub.open_faults.extend([ConnectionRefusedError("refused"), TimeoutError("slow")])
    collector = Collector()
    binding = ConsumerBinding(NAME, sub, HandleProcessor(collector))  # type: ignore[arg-type]
    await binding.start()  # returns once the third open succeeded
    try:
        assert len(sub.opens) == 3
        assert binding.stats.restarts == 2
        assert binding.ready
        sub.send(b"x")
        await collector.wait_for(1)
    finally:
        await binding.stop()


async def test_permanent_from_open_fails_the_binding_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = FakeSubscription()
    refused = Permanent("login refused for user reader")
    sub.open_faults.append(refused)
    binding = ConsumerBinding(NAME, sub, HandleProcessor(Collector()))  # type: ignore[arg-type]
    with (
        caplog.at_level(logging.ERROR, logger="binder_core.consumer"),
        pytest.raises(Permanent) as raised,
    ):
        await binding.start()
    assert raised.value is refused
    assert len(sub.opens) == 1, "a permanent error was retried"
    assert binding.state is BindingState.STOPPED
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"binding {NAME}: cannot consume: login refused for user reader"
    ]


class SlowConfirms(HandleProcessor):
    """Outputs whose confirmations come when the test says so."""

    def __init__(self, handle: Any) -> None:
        super().__init__(handle)
        self.confirm = asyncio.Event()

    async def finish(self, work: Any) -> list[Any]:
        await self.confirm.wait()
        return list(work.outcomes)


@pytest.fixture
async def overlapping() -> AsyncIterator[tuple[FakeSubscription, Collector, SlowConfirms]]:
    """A started binding over a source that overlaps, with confirmations held back."""
    sub = FakeSubscription()
    collector = Collector()
    processor = SlowConfirms(collector)
    binding = ConsumerBinding(NAME, sub, processor)  # type: ignore[arg-type]
    FakeSource.overlap = True
    try:
        await binding.start()
        yield sub, collector, processor
    finally:
        FakeSource.overlap = False
        await binding.stop()


async def test_input_arriving_while_confirmations_are_awaited_is_processed_at_once(
    overlapping: tuple[FakeSubscription, Collector, SlowConfirms],
) -> None:
    """With overlap, a message that arrives while the previous batch's outputs wait for
    their confirmations is processed without waiting for them; the batches are still
    acknowledged in order, and only once confirmed."""
    sub, collector, processor = overlapping
    sub.send(b"first")
    await collector.wait_for(1)
    sub.send(b"second")  # the first batch's confirmations are still awaited
    await collector.wait_for(2)
    assert sub.settled == [], "acknowledged before its outputs were confirmed"
    processor.confirm.set()
    await eventually(lambda: sub.settled == [b"first", b"second"], "both acknowledged")


async def test_confirmations_arriving_while_input_is_awaited_acknowledge_at_once(
    overlapping: tuple[FakeSubscription, Collector, SlowConfirms],
) -> None:
    sub, collector, processor = overlapping
    sub.send(b"only")
    await collector.wait_for(1)
    processor.confirm.set()  # no more input comes: the batch is acknowledged anyway
    await eventually(lambda: sub.settled == [b"only"], "acknowledged without more input")
