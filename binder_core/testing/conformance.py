"""The binder conformance suite: what every binder must do, the same way.

A binder is defined by passing this suite. It runs through the public SPI (and, for the
cases about user functions, through the core's own pipeline), against a real broker, and
counts messages: every case checks that nothing was lost and says how many duplicates it saw.

Use it from a test module of your own binder::

    import pytest
    from binder_core.testing.conformance import BinderConformance, Subject

    class TestRedisConformance(BinderConformance):
        @pytest.fixture
        def subject(self) -> Subject:
            return Subject("redis", {"url": "redis://127.0.0.1:6379/0"})

It needs pytest-asyncio, in any ``asyncio_mode``: the cases carry its mark. A case whose
capability the binder does not declare (``Binder.capabilities``) is reported as skipped
with "not applicable", never as passed. ``BINDER_STRESS=N`` sets how many copies
of the stress case run at once (default 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tracemalloc
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from binder_core.consumer import ConsumerBinding, Processor
from binder_core.functions import Definition, inspect_function
from binder_core.kit import bind_consumer, bind_producer
from binder_core.message import Message
from binder_core.output import Output
from binder_core.pipeline import Pipeline
from binder_core.plugins import load_plugins
from binder_core.properties import ConsumerProperties, ProducerProperties
from binder_core.retry import RetryPolicy
from binder_core.spi import (
    Binder,
    BindingState,
    Capability,
    ConsumerSpec,
    Outcome,
    ProducerSpec,
)

#: Reads ``count`` dead letters of (destination, group) within ``timeout`` seconds.
DeadLetterReader = Callable[["Kit", str, str, int, float], Awaitable[list[Message[bytes]]]]


@dataclass
class Subject:
    """The binder under test and what the suite needs to know about it."""

    binder_type: str
    environment: dict[str, Any]
    #: Unique destination names per call (the ``unique_name`` fixture of the test suite).
    names: Callable[[str], str] = field(default=lambda p: f"{p}-{uuid.uuid4().hex[:10]}")
    #: Raw binder-specific consumer / producer properties for every binding.
    consumer_extension: dict[str, Any] = field(default_factory=dict)
    producer_extension: dict[str, Any] = field(default_factory=dict)
    #: The destination holding dead letters of (destination, group), read through the SPI
    #: with a fresh group. Give ``read_dead_letters`` instead when they are not a destination.
    dead_letter_destination: Callable[[str, str], str] = field(
        default=lambda destination, group: f"error.{destination}.{group}"
    )
    #: The group that reads a dead-letter destination (memory keeps them in group "dlq").
    dead_letter_group: str | None = None
    read_dead_letters: DeadLetterReader | None = None
    #: Restarts the broker (connections drop, data survives); None when tests cannot.
    restart_broker: Callable[[], Awaitable[None]] | None = None
    #: Seconds a case waits for messages before it fails.
    timeout: float = 30.0
    #: The binder's destinations live in its instance (memory): cases that want a second
    #: app instance get the same binder, as every instance would share one process.
    single_instance: bool = False


class Collector:
    """A handle that records what it is given and answers per message as told."""

    def __init__(
        self,
        outcome: Callable[[Message[bytes], int], Outcome] | None = None,
        raise_on: Callable[[Sequence[Message[bytes]], int], bool] | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.seen: list[bytes] = []  # every delivery, duplicates included
        self.headers: list[dict[str, Any]] = []
        self.calls = 0
        self.deliveries: Counter[bytes] = Counter()
        self.in_flight = 0
        self.cancelled = 0
        self._outcome = outcome
        self._raise_on = raise_on
        #: When given, every batch waits for it: a test holds batches in flight with it.
        self._gate = gate
        self._changed = asyncio.Event()

    async def __call__(self, batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        self.calls += 1
        for msg in batch:
            self.deliveries[msg.payload] += 1
        if self._raise_on is not None and self._raise_on(batch, self.calls):
            raise RuntimeError("the handler refuses this batch")
        self.in_flight += 1
        try:
            if self._gate is not None:
                await self._gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        outcomes: list[Outcome] = []
        for msg in batch:
            outcome = self._outcome(msg, self.deliveries[msg.payload]) if self._outcome else None
            if outcome is None:
                self.seen.append(msg.payload)
                self.headers.append(msg.headers)
            outcomes.append(outcome)
        self._changed.set()
        return outcomes

    @property
    def unique(self) -> set[bytes]:
        """Distinct payloads processed successfully."""
        return set(self.seen)

    @property
    def duplicates(self) -> int:
        """Successful deliveries beyond the first of each payload."""
        return len(self.seen) - len(self.unique)

    async def wait_for(self, count: int, timeout: float) -> None:
        """Until ``count`` distinct payloads were processed; fails with what was missing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.unique) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"received {len(self.unique)} of {count} distinct messages "
                    f"({self.duplicates} duplicates) within {timeout}s"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))


async def eventually(predicate: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds (polled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(every)
    return True


def _at_least(got: Collector, count: int) -> Callable[[], bool]:
    """Whether ``got`` has seen ``count`` deliveries (duplicates included)."""
    return lambda: len(got.seen) >= count


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """``eventually``, failing the case when ``predicate`` stays false."""
    if not await eventually(predicate, timeout):
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def numbered(n: int, start: int = 0, prefix: str = "m") -> list[Message[bytes]]:
    """``n`` messages with distinct payloads ``m<i>`` and a ``seq`` header."""
    return [Message(f"{prefix}{i}".encode(), {"seq": i}) for i in range(start, start + n)]


class Kit:
    """Binders, producers and consumers for one case; closes everything at the end."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        registry = load_plugins()
        self.binder_type = registry.binder_types[subject.binder_type]
        self._binders: list[Binder] = []
        self._bindings: list[ConsumerBinding] = []

    def name(self, prefix: str) -> str:
        """A destination name no other case uses."""
        return self.subject.names(prefix)

    async def binder(self) -> Binder:
        """A new, started binder instance (a second app instance, in effect)."""
        if self.subject.single_instance and self._binders:
            return self._binders[0]
        env = self.binder_type.environment.model_validate(self.subject.environment)
        binder = self.binder_type.factory(f"conformance-{len(self._binders)}", env)
        await binder.start()
        self._binders.append(binder)
        return binder

    def _ext(self, kind: str, raw: dict[str, Any]) -> Any:
        model = getattr(self.binder_type, kind)
        base = getattr(self.subject, f"{kind}_extension")
        return model.model_validate({**base, **raw}) if model is not None else None

    async def producer(
        self, binder: Binder, destination: str, ext: dict[str, Any] | None = None, **props: Any
    ) -> Output:
        """A producer with common ``props`` (snake_case) and binder-specific ``ext``."""
        spec = ProducerSpec(
            "conformance-out",
            destination,
            ProducerProperties(**props),
            self._ext("producer", ext or {}),
        )
        return await bind_producer(binder, spec)

    async def consumer(
        self,
        binder: Binder,
        destination: str,
        group: str | None,
        handle: Callable[[Sequence[Message[bytes]]], Awaitable[Sequence[Outcome]]] | Processor,
        ext: dict[str, Any] | None = None,
        **props: Any,
    ) -> ConsumerBinding:
        """A started consumer binding."""
        spec = ConsumerSpec(
            "conformance-in",
            destination,
            group,
            ConsumerProperties(**props),
            self._ext("consumer", ext or {}),
        )
        binding = await bind_consumer(binder, spec, handle)
        self._bindings.append(binding)
        return binding

    async def dead_letters(self, destination: str, group: str, count: int) -> list[Message[bytes]]:
        """The first ``count`` dead letters of a group."""
        if self.subject.read_dead_letters is not None:
            return await self.subject.read_dead_letters(
                self, destination, group, count, self.subject.timeout
            )
        dlq = self.subject.dead_letter_destination(destination, group)
        got: list[Message[bytes]] = []

        async def keep(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
            got.extend(batch)
            return [None] * len(batch)

        reader_group = self.subject.dead_letter_group or f"dlq-reader-{uuid.uuid4().hex[:8]}"
        binder = await self.binder()
        binding = await self.consumer(binder, dlq, reader_group, keep)
        arrived = await eventually(lambda: len(got) >= count, self.subject.timeout)
        await binding.stop()
        assert arrived, f"{len(got)} of {count} dead letters arrived"
        return got[:count]

    async def close(self) -> None:
        """Stop every binding and close every binder this case made."""
        for binding in self._bindings:
            with contextlib.suppress(Exception):
                await binding.stop()
        for binder in self._binders:
            with contextlib.suppress(Exception):
                await binder.close()


async def send_all(producer: Output, messages: Sequence[Message[bytes]], batch: int = 200) -> None:
    """Send in batches, each confirmed before the next."""
    for i in range(0, len(messages), batch):
        await producer.send(messages[i : i + batch])


def requires(binder: Binder, *capabilities: Capability) -> None:
    """Skip, as not applicable, a case whose capability the binder does not declare."""
    missing = [c for c in capabilities if c not in binder.capabilities]
    if missing:
        pytest.skip(f"not applicable: binder does not declare {', '.join(missing)}")


class BinderConformance:
    """Subclass with a ``subject`` fixture returning a ``Subject`` for your binder."""

    # Marked here, so the suite runs in pytest-asyncio's strict mode (its default) too.
    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def kit(self, subject: Subject) -> AsyncIterator[Kit]:
        """Binders and bindings for one case, closed after it."""
        kit = Kit(subject)
        yield kit
        await kit.close()

    # -- payloads and headers ---------------------------------------------------------

    async def test_payloads_round_trip_byte_for_byte(self, kit: Kit) -> None:
        binder = await kit.binder()
        dest = kit.name("payloads")
        payloads = [
            b"",
            bytes(range(256)),
            "héllo wörld, ✓ 🚀 — ĳ".encode(),
            random.Random(7).randbytes(1024 * 1024),
        ]
        got = Collector()
        await kit.consumer(binder, dest, "g", got)
        producer = await kit.producer(binder, dest)
        for i, payload in enumerate(payloads):
            await producer.send([Message(payload, {"i": i})])
        await got.wait_for(len(payloads), kit.subject.timeout)
        assert sorted(got.seen, key=len) == sorted(payloads, key=len)
        assert got.seen == payloads, "order of one producer's messages on one partition"

    async def test_headers_of_several_types_round_trip(self, kit: Kit) -> None:
        binder = await kit.binder()
        dest = kit.name("headers")
        headers = {"text": "värde", "count": 42, "big": 2**40, "ratio": 0.25,
                   "flag": True, "off": False, "raw": b"\x00\xff"}  # fmt: skip
        got = Collector()
        await kit.consumer(binder, dest, "g", got)
        producer = await kit.producer(binder, dest)
        await producer.send([Message(b"h", dict(headers))])
        await got.wait_for(1, kit.subject.timeout)
        received = got.headers[0]
        for key, value in headers.items():
            assert key in received, f"header {key} was lost"
            assert received[key] == value and type(received[key]) is type(value), (
                f"header {key}: sent {value!r}, received {received[key]!r}"
            )

    # -- subscriptions and groups -------------------------------------------------------

    async def test_anonymous_subscribers_each_get_every_message(self, kit: Kit) -> None:
        binder = await kit.binder()
        dest = kit.name("anon")
        a, b = Collector(), Collector()
        await kit.consumer(binder, dest, None, a)
        await kit.consumer(await kit.binder(), dest, None, b)
        producer = await kit.producer(binder, dest)
        await send_all(producer, numbered(100))
        for c in (a, b):
            await c.wait_for(100, kit.subject.timeout)
            assert c.duplicates == 0

    async def test_two_groups_each_get_every_message(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.GROUPS)
        dest = kit.name("groups")
        a, b = Collector(), Collector()
        await kit.consumer(binder, dest, "alpha", a)
        await kit.consumer(binder, dest, "beta", b)
        producer = await kit.producer(binder, dest)
        await send_all(producer, numbered(200))
        for c in (a, b):
            await c.wait_for(200, kit.subject.timeout)
            assert c.unique == {m.payload for m in numbered(200)}
            assert c.duplicates == 0

    async def test_members_of_a_group_share_without_loss_or_duplicates(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.GROUPS)
        dest = kit.name("share")
        a, b = Collector(), Collector()
        producer = await kit.producer(binder, dest, partition_count=4)
        await kit.consumer(binder, dest, "workers", a)
        await kit.consumer(await kit.binder(), dest, "workers", b)
        messages = numbered(400)
        for i, m in enumerate(messages):
            m.key, m.partition = i, i % 4
        await send_all(producer, messages)
        await eventually(lambda: len(a.unique | b.unique) >= 400, kit.subject.timeout)
        assert a.unique | b.unique == {m.payload for m in messages}, "messages were lost"
        assert not a.unique & b.unique, "a message went to both members of one group"
        assert a.duplicates == b.duplicates == 0
        assert a.seen and b.seen, "both members should have had a share"

    async def test_order_is_kept_per_partition_key(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.ORDERING, Capability.PARTITIONS)
        dest = kit.name("order")
        got = Collector()
        producer = await kit.producer(binder, dest, partition_count=3)
        # Spring's way to scale out in order: one partitioned consumer per instance.
        for index in range(3):
            await kit.consumer(
                await kit.binder(), dest, "ordered", got,
                partitioned=True, instance_index=index, instance_count=3,
            )  # fmt: skip
        from binder_core.expression import select_partition

        messages = []
        for i in range(300):
            key = f"k{i % 10}"
            messages.append(Message(f"{key}:{i}".encode(), {}, key, select_partition(key, 3)))
        await send_all(producer, messages, batch=37)
        await got.wait_for(300, kit.subject.timeout)
        last: dict[str, int] = {}
        for payload in got.seen:
            key, seq = payload.decode().split(":")
            assert int(seq) > last.get(key, -1), f"{key}: {seq} after {last[key]}"
            last[key] = int(seq)

    # -- failures ----------------------------------------------------------------------

    async def test_a_failed_batch_is_redelivered_then_succeeds(self, kit: Kit) -> None:
        binder = await kit.binder()
        dest = kit.name("redeliver")
        refuse = {b"m3"}

        def once(batch: Sequence[Message[bytes]], call: int) -> bool:
            hit = [m for m in batch if m.payload in refuse]
            if hit:
                refuse.clear()  # refuse the first delivery only
                return True
            return False

        got = Collector(raise_on=once)
        await kit.consumer(binder, dest, "g", got)
        producer = await kit.producer(binder, dest)
        await send_all(producer, numbered(10))
        await got.wait_for(10, kit.subject.timeout)
        assert got.deliveries[b"m3"] >= 2, "the refused message was not delivered again"

    async def test_exhausted_messages_are_dead_lettered_with_reason(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.DEAD_LETTER)
        dest = kit.name("dlq")

        def fail_bad(msg: Message[bytes], delivery: int) -> Outcome:
            return (
                ValueError(f"cannot take {msg.payload.decode()}")
                if msg.payload.startswith(b"bad")
                else None
            )

        got = Collector(outcome=fail_bad)
        await kit.consumer(binder, dest, "g", got)
        producer = await kit.producer(binder, dest)
        await producer.send([Message(b"ok1", {"n": 1}), Message(b"bad1", {"n": 2, "who": "me"})])
        await producer.send([Message(b"ok2", {"n": 3})])
        await got.wait_for(2, kit.subject.timeout)
        assert got.unique == {b"ok1", b"ok2"}, "the stream goes on past a dead letter"
        (dead,) = await kit.dead_letters(dest, "g", 1)
        assert dead.payload == b"bad1"
        assert dead.headers.get("who") == "me", "original headers are kept"
        assert dead.headers.get("x-exception-message") == "cannot take bad1"
        assert str(dead.headers.get("x-exception-fqcn", "")).endswith("ValueError")
        assert dead.headers.get("x-exception-stacktrace")

    async def test_failing_first_two_deliveries_and_every_fifth_still_succeed(
        self, kit: Kit
    ) -> None:
        # Through the core's pipeline: the retries a user configures, on this binder.
        binder = await kit.binder()
        src, out = kit.name("flaky-in"), kit.name("flaky-out")
        attempts: Counter[str] = Counter()

        def flaky(word: str) -> str:
            attempts[word] += 1
            n = int(word[1:])
            limit = 3 if n % 5 == 0 else 2
            if attempts[word] <= limit:
                raise RuntimeError(f"attempt {attempts[word]} of {word}")
            return word.upper()

        got = Collector()
        await kit.consumer(await kit.binder(), out, "check", got)
        producer = await kit.producer(binder, out)
        invoker = _invoker(flaky, producer, out, max_attempts=4)
        await kit.consumer(binder, src, "g", invoker)
        await send_all(await kit.producer(binder, src), numbered(200))
        await got.wait_for(200, kit.subject.timeout)
        assert got.unique == {f"M{i}".encode() for i in range(200)}
        assert all(attempts[f"m{i}"] >= (4 if i % 5 == 0 else 3) for i in range(200))

    # -- lifecycle ---------------------------------------------------------------------

    async def test_a_stopped_consumer_resumes_its_group_without_loss(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.GROUPS)
        dest = kit.name("resume")
        got = Collector()
        binding = await kit.consumer(binder, dest, "g", got)
        producer = await kit.producer(binder, dest)
        await send_all(producer, numbered(100))
        await got.wait_for(100, kit.subject.timeout)
        await binding.stop()
        assert binding.state is BindingState.STOPPED
        await send_all(producer, numbered(100, start=100))
        await binding.start()
        await got.wait_for(200, kit.subject.timeout)
        assert got.unique == {m.payload for m in numbered(200)}
        print(f"resume: {got.duplicates} duplicates")

    async def test_required_groups_keep_what_is_sent_before_any_consumer(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.REQUIRED_GROUPS)
        dest = kit.name("required")
        producer = await kit.producer(binder, dest, required_groups=["late"])
        await send_all(producer, numbered(50))
        got = Collector()
        await kit.consumer(await kit.binder(), dest, "late", got)
        await got.wait_for(50, kit.subject.timeout)
        assert got.duplicates == 0

    async def test_concurrency_processes_in_parallel_without_loss_or_duplicates(
        self, kit: Kit
    ) -> None:
        binder = await kit.binder()
        dest = kit.name("concurrency")
        peak = 0
        active = 0
        overlapped = asyncio.Event()

        async def handle(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
            nonlocal peak, active
            active += 1
            peak = max(peak, active)
            if active > 1:
                overlapped.set()
            try:
                # The first batch waits (a bounded while) for another consumer to be in a
                # batch too: parallel consumers overlap at once, a serial binder never does.
                if peak == 1 and not overlapped.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(overlapped.wait(), 5.0)
                return await got(batch)
            finally:
                active -= 1

        got = Collector()
        producer = await kit.producer(binder, dest, partition_count=3)
        await kit.consumer(binder, dest, "g", handle, concurrency=3)
        messages = numbered(600)
        for i, m in enumerate(messages):
            m.key, m.partition = i, i % 3
        await send_all(producer, messages)
        await got.wait_for(600, kit.subject.timeout)
        assert got.duplicates == 0
        assert peak > 1, "concurrency 3 never processed two batches at once"

    async def test_pause_holds_messages_until_resume(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.PAUSE, Capability.GROUPS)
        dest = kit.name("pause")
        paused, witness = Collector(), Collector()
        binding = await kit.consumer(binder, dest, "paused", paused)
        await kit.consumer(binder, dest, "witness", witness)
        await binding.pause()
        assert binding.state is BindingState.PAUSED
        await send_all(await kit.producer(binder, dest), numbered(50))
        # The witness group got everything through the same path: the paused one got none.
        await witness.wait_for(50, kit.subject.timeout)
        assert paused.seen == []
        await binding.resume()
        await paused.wait_for(50, kit.subject.timeout)
        assert paused.duplicates == 0

    async def test_stop_finishes_the_batch_in_flight_and_loses_nothing(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.GROUPS)
        dest = kit.name("stop")
        gate = asyncio.Event()
        got = Collector(gate=gate)
        binding = await kit.consumer(binder, dest, "g", got)
        await send_all(await kit.producer(binder, dest), numbered(300))
        assert await eventually(lambda: got.in_flight > 0, kit.subject.timeout), (
            "no batch was ever in flight"
        )
        # Stop while a batch is held, then let it finish: stop must wait for it.
        stopping = asyncio.ensure_future(binding.stop())
        await asyncio.sleep(0)
        gate.set()
        await asyncio.wait_for(stopping, kit.subject.timeout)
        assert got.cancelled == 0, "stop cancelled the batch in flight"
        assert got.in_flight == 0
        await binding.start()
        await got.wait_for(300, kit.subject.timeout)
        print(f"stop/start: {got.duplicates} duplicates")

    # -- state (binders declaring Capability.STATE) -------------------------------------

    async def _changelog(self, kit: Kit, binder: Binder) -> tuple[str, str, Any]:
        """An input destination of two partitions and a changelog partitioned like it."""
        src, name = kit.name("state-in"), kit.name("state-log")
        await kit.producer(binder, src, partition_count=2)
        state: Any = binder
        sink = await state.provision_changelog(name, src)
        return src, name, sink

    async def _replayed(
        self, binder: Any, name: str, partitions: Sequence[int] | None
    ) -> list[Message[bytes]]:
        out: list[Message[bytes]] = []
        async for batch in binder.replay(name, partitions, False):
            if batch is None:
                break
            out.extend(batch)
        return out

    async def test_a_changelog_replays_its_records_by_partition(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.STATE)
        state: Any = binder
        src, name, sink = await self._changelog(kit, binder)
        assert await state.partition_count(name) == await state.partition_count(src) == 2
        records = [
            Message(b"1", {}, b"a", 0),
            Message(b"2", {}, b"b", 1),
            Message(b"3", {}, b"a", 0),
            Message(None, {}, b"b", 1),  # a tombstone
        ]
        box = sink.outbox()
        await box.add(records)
        assert all(r is None for r in await box.confirm())
        first = await self._replayed(state, name, [0])
        assert [(m.key, m.payload, m.partition) for m in first] == [
            (b"a", b"1", 0),
            (b"a", b"3", 0),
        ]
        both = await self._replayed(state, name, None)
        latest: dict[bytes, bytes | None] = {}
        for m in both:
            latest[m.key] = m.payload or None
        assert latest == {b"a": b"3", b"b": None}, "the last record per key, a delete as None"
        await sink.close()

    async def test_a_following_replay_sees_what_is_sent_after_it_caught_up(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.STATE)
        state: Any = binder
        _, name, sink = await self._changelog(kit, binder)
        box = sink.outbox()
        await box.add([Message(b"old", {}, b"k", 1)])
        await box.confirm()
        seen: list[bytes] = []
        caught_up = asyncio.Event()

        async def follow() -> None:
            async for batch in state.replay(name, None, True):
                if batch is None:
                    caught_up.set()
                    continue
                seen.extend(m.payload for m in batch)

        task = asyncio.get_running_loop().create_task(follow())
        try:
            await asyncio.wait_for(caught_up.wait(), kit.subject.timeout)
            assert seen == [b"old"]
            box = sink.outbox()
            await box.add([Message(b"new", {}, b"k", 0)])
            await box.confirm()
            await _until(lambda: seen == [b"old", b"new"], kit.subject.timeout, "the new record")
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await sink.close()

    async def test_partition_listeners_hear_assignments_before_records(self, kit: Kit) -> None:
        binder = await kit.binder()
        requires(binder, Capability.STATE)
        src = kit.name("state-in")
        producer = await kit.producer(binder, src, partition_count=2)
        events: list[str] = []

        class Listener:
            async def assigned(self, partitions: set[int]) -> None:
                events.append(f"assigned {sorted(partitions)}")

            async def revoked(self, partitions: set[int]) -> None:
                events.append(f"revoked {sorted(partitions)}")

        async def handle(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
            events.extend("record" for _ in batch)
            return [None] * len(batch)

        await producer.send([Message(b"x", {}, None, 0), Message(b"y", {}, None, 1)])
        binding = await kit.consumer(binder, src, "g", handle, auto_startup=False)
        subscription: Any = binding.subscription
        subscription.listen(Listener())
        await binding.start()
        await _until(lambda: events.count("record") == 2, kit.subject.timeout, "both records")
        assert events[0] == "assigned [0, 1]", events

    # -- volume and pressure -----------------------------------------------------------

    async def test_ten_thousand_through_a_function_arrive_exactly_once(self, kit: Kit) -> None:
        binder = await kit.binder()
        src, out = kit.name("bulk-in"), kit.name("bulk-out")
        got = Collector()
        await kit.consumer(await kit.binder(), out, "check", got)
        invoker = _invoker(str.upper, await kit.producer(binder, out), out)
        await kit.consumer(binder, src, "g", invoker)
        await send_all(await kit.producer(binder, src), numbered(10_000), batch=500)
        await got.wait_for(10_000, kit.subject.timeout * 2)
        assert got.unique == {f"M{i}".encode() for i in range(10_000)}
        assert got.duplicates == 0
        if Capability.ORDERING in binder.capabilities:
            # One consumer on one partition: the outputs leave in input order, also when
            # the binder overlaps one batch's confirmations with the next batch.
            assert got.seen == [f"M{i}".encode() for i in range(10_000)], "outputs reordered"

    async def test_a_slow_consumer_does_not_grow_memory_without_bound(self, kit: Kit) -> None:
        binder = await kit.binder()
        dest = kit.name("slow")
        release = asyncio.Event()

        async def blocked(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
            await release.wait()
            return [None] * len(batch)

        size, count = 8 * 1024, 3000  # 24 MiB offered to a consumer that takes nothing
        payload = random.Random(3).randbytes(size)
        await kit.consumer(binder, dest, "g", blocked)
        producer = await kit.producer(binder, dest)
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()

            sent = 0

            async def produce() -> None:
                nonlocal sent
                for i in range(0, count, 100):
                    await producer.send([Message(payload, {"i": j}) for j in range(i, i + 100)])
                    sent += 100

            tracemalloc.reset_peak()
            task = asyncio.ensure_future(produce())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            # Until the producer is done, or held back by back-pressure: a whole second of
            # waiting on it without one more send.
            while loop.time() < deadline:
                before = sent
                done, _ = await asyncio.wait([task], timeout=1.0)
                if done or sent == before:
                    break
            _, peak = tracemalloc.get_traced_memory()
            peak_growth = peak - base
        finally:
            tracemalloc.stop()
            release.set()
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        assert peak_growth < size * count / 2, (
            f"memory grew by {peak_growth / 2**20:.1f} MiB while a consumer held back "
            f"{size * count / 2**20:.0f} MiB"
        )

    # -- faults ------------------------------------------------------------------------

    async def test_broker_restarted_twice_while_messages_flow(self, kit: Kit) -> None:
        if kit.subject.restart_broker is None:
            pytest.skip("not applicable: the tests cannot restart this binder's broker")
        binder = await kit.binder()
        src, out = kit.name("bounce-in"), kit.name("bounce-out")
        got = Collector()
        await kit.consumer(await kit.binder(), out, "check", got)
        invoker = _invoker(str.upper, await kit.producer(binder, out), out)
        await kit.consumer(binder, src, "g", invoker)
        producer = await kit.producer(binder, src)
        messages = numbered(10_000)
        timeout = kit.subject.timeout * 4

        async def produce() -> None:
            # At most 1,000 ahead of what came out, so the stream is still flowing when
            # the broker restarts, and waits out the restart instead of running ahead.
            for i in range(0, len(messages), 100):
                await _until(_at_least(got, i - 1000), timeout, "the stream")
                await producer.send(messages[i : i + 100])

        task = asyncio.ensure_future(produce())
        for k in (1, 2):
            await _until(_at_least(got, 3000 * k), timeout, "the stream")
            await kit.subject.restart_broker()
        await asyncio.wait_for(task, timeout)
        await got.wait_for(10_000, kit.subject.timeout * 4)
        assert got.unique == {f"M{i}".encode() for i in range(10_000)}
        print(f"broker restarted twice: 10000 delivered, {got.duplicates} duplicates")

    async def test_stress_cases_in_parallel(self, kit: Kit, subject: Subject) -> None:
        copies = int(os.environ.get("BINDER_STRESS", "3"))
        binder = await kit.binder()
        cases = [self.test_anonymous_subscribers_each_get_every_message]
        if Capability.GROUPS in binder.capabilities:
            cases += [
                self.test_two_groups_each_get_every_message,
                self.test_members_of_a_group_share_without_loss_or_duplicates,
            ]
        cases.append(self.test_concurrency_processes_in_parallel_without_loss_or_duplicates)
        kits = [Kit(subject) for _ in range(copies * len(cases))]
        try:
            await asyncio.gather(*(case(k) for k, case in zip(kits, cases * copies, strict=True)))
        finally:
            for k in kits:
                await k.close()


def _invoker(
    fn: Callable[[str], str], producer: Output, destination: str, max_attempts: int = 3
) -> Pipeline:
    """The core's pipeline around ``fn``: conversion, retries without back-off, outputs."""
    from binder_core.conversion import encoder_for, message_converters

    converters = {c.content_type: c for c in message_converters()}
    info = inspect_function("fn", fn) if fn is not str.upper else _upper_info()
    definition = Definition("fn", (info,))
    output = Output(
        "fn-out-0", destination, producer.sink, encoder_for("text/plain", converters), "text/plain",
        ProducerProperties(),
    )  # fmt: skip
    policy = RetryPolicy(max_attempts=max_attempts, initial_ms=0, max_ms=0)
    return Pipeline("fn-in-0", definition, "text/plain", converters, policy, output)


def _upper_info() -> Any:
    def upper(word: str) -> str:
        return word.upper()

    return inspect_function("upper", upper)
