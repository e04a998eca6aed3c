"""Faults in the middle of a stream, on the real broker: a broker restart and a consumer
killed with SIGKILL. Every message is counted; duplicates (at-least-once) are reported."""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable

import pytest

from binder_core.message import Message
from binder_core.properties import ProducerProperties
from binder_core.spi import ConsumerSpec, ProducerSpec
from binders.rabbit.binder import RabbitBinder
from tests.rabbit.conftest import Admin
from tests.restart import require_restartable, restart_rabbit
from tests.support import AppProcess, Collector, eventually

pytestmark = pytest.mark.rabbit

Namer = Callable[[str], str]
Apps = Callable[..., AppProcess]

BATCH = 100
WINDOW = 1000  # messages sent ahead of the outputs seen: keeps the stream flowing, not flooding
FAULT_AFTER = 1500  # outputs seen before the fault is injected
AFTER_FAULT = 2000  # messages sent after the fault, which the recovered pipeline must carry


def broker_sets(rabbit_url: str) -> list[str]:
    if os.environ.get("RABBITMQ_URL"):
        return ["--set", f"stream.binders.rabbit.environment.uri={rabbit_url}"]
    return []


def uppercase_app(apps: Apps, words: str, shouted: str, rabbit_url: str) -> AppProcess:
    return apps(
        "run",
        "apps.uppercase",
        "--config",
        "config/uppercase",
        "--profile",
        "rabbit",
        "--set",
        f"stream.bindings.uppercase-in-0.destination={words}",
        "--set",
        f"stream.bindings.uppercase-out-0.destination={shouted}",
        *broker_sets(rabbit_url),
    )


class Stream:
    """Numbered words sent in confirmed batches while the pipeline keeps up, through the
    fault and for AFTER_FAULT more: the fault always lands mid-stream."""

    def __init__(self, out: Collector) -> None:
        self.out = out
        self.sent = 0
        self.fault_done = asyncio.Event()

    async def run(self, binder: RabbitBinder, words: str) -> None:
        producer = await binder.producer(
            ProducerSpec("in", words, ProducerProperties(required_groups=["shouters"]))
        )
        after = 0
        while after < AFTER_FAULT:
            await eventually(
                lambda: len(self.out.messages) >= self.sent - WINDOW, "the pipeline to keep up", 60
            )
            await producer.send(
                [
                    Message(f"w{i}".encode(), {"contentType": "text/plain"})
                    for i in range(self.sent, self.sent + BATCH)
                ]
            )
            self.sent += BATCH
            if self.fault_done.is_set():
                after += BATCH

    def check(self, label: str) -> None:
        counts = collections.Counter(self.out.payloads)
        expected = {f"W{i}".encode() for i in range(self.sent)}
        missing = expected - set(counts)
        dupes = sum(c - 1 for c in counts.values())
        print(
            f"\n{label}: {len(self.out.payloads)} outputs for {self.sent} inputs, "
            f"{len(missing)} missing, {dupes} duplicates"
        )
        assert not missing, f"{len(missing)} messages lost, e.g. {sorted(missing)[:5]}"
        assert set(counts) == expected


async def _subscribed(admin: Admin, queue: str) -> bool:
    state = await admin.state(queue)
    return state is not None and state[1] >= 1


async def test_broker_restart_mid_stream_loses_nothing(
    binder: RabbitBinder, admin: Admin, apps: Apps, unique_name: Namer, rabbit_url: str
) -> None:
    require_restartable("rabbit")
    words, shouted = unique_name("words"), unique_name("shouted")
    admin.track(words, "shouters")
    admin.track(shouted, "check")
    out = Collector()
    await binder.consumer(ConsumerSpec("check", shouted, "check"), out)
    app = uppercase_app(apps, words, shouted, rabbit_url)
    stream = Stream(out)
    sender = asyncio.ensure_future(stream.run(binder, words))
    try:
        await eventually(lambda: _subscribed(admin, f"{words}.shouters"), "the app")
        await eventually(lambda: len(out.messages) >= FAULT_AFTER, "the stream to flow")
        # stop_app + start_app on whatever node listens there, whoever started it.
        await restart_rabbit(rabbit_url)
        stream.fault_done.set()
        await asyncio.wait_for(sender, 120)  # every send confirmed, across the restart
        await eventually(lambda: len(set(out.payloads)) >= stream.sent, "every message", 60)
    finally:
        sender.cancel()
    stream.check("broker restart")
    assert app.running(), app.output
    assert await app.stop() == 0, app.output
    assert "lost" in app.output and "recovered" in app.output, app.output


async def test_consumer_killed_mid_stream_loses_nothing(
    binder: RabbitBinder, admin: Admin, apps: Apps, unique_name: Namer, rabbit_url: str
) -> None:
    words, shouted = unique_name("words"), unique_name("shouted")
    admin.track(words, "shouters")
    admin.track(shouted, "check")
    out = Collector()
    await binder.consumer(ConsumerSpec("check", shouted, "check"), out)
    first = uppercase_app(apps, words, shouted, rabbit_url)
    stream = Stream(out)
    sender = asyncio.ensure_future(stream.run(binder, words))
    try:
        await eventually(lambda: _subscribed(admin, f"{words}.shouters"), "the first app")
        await eventually(lambda: len(out.messages) >= FAULT_AFTER, "the stream to flow")
        first.kill()  # SIGKILL: nothing acknowledged after this point
        second = uppercase_app(apps, words, shouted, rabbit_url)
        stream.fault_done.set()
        await asyncio.wait_for(sender, 120)
        await eventually(lambda: len(set(out.payloads)) >= stream.sent, "every message", 60)
    finally:
        sender.cancel()
    stream.check("consumer killed")
    assert await second.stop() == 0, second.output
