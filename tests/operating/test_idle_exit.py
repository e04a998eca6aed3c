"""Scale to zero: ``binder run --idle-exit S`` on Kafka stops by itself after S seconds
without input, exit 0, having committed what it processed (the same group started again
gets nothing twice), and does not stop while input keeps coming."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.kafka.conftest import Kit
from tests.support import Apps

pytestmark = pytest.mark.kafka

IDLE = 2.0


async def test_idle_exit_stops_committed_and_only_when_idle(kit: Kit, apps: Apps) -> None:
    words, shouted, group = kit.name("words"), kit.name("shouted"), kit.name("shouters")
    await kit.create(words)
    await kit.produce(words, [b"one", b"two", b"three"])
    args = ["run", "apps.uppercase", "--config", "config/uppercase", "--profile", "kafka"]
    for key, value in {
        "stream.binders.kafka.environment.bootstrap-servers": kit.bootstrap,
        "stream.bindings.uppercase-in-0.destination": words,
        "stream.bindings.uppercase-in-0.group": group,
        "stream.bindings.uppercase-out-0.destination": shouted,
    }.items():
        args += ["--set", f"{key}={value}"]
    args += ["--idle-exit", str(IDLE)]

    app = apps(*args)
    await kit.read(shouted, 3)
    # Input keeps coming for more than twice the idle time, never IDLE seconds apart.
    sent = 0
    for _ in range(10):
        await kit.produce(words, [f"more-{sent}".encode()])
        sent += 1
        last_input = time.monotonic()
        await asyncio.sleep(IDLE / 4)  # the pace of the input, not a wait for a result
        assert app.running(), f"stopped while input kept coming:\n{app.output}"
    await kit.read(shouted, 3 + sent)

    assert await app.wait(timeout=30) == 0, app.output
    quiet = time.monotonic() - last_input
    assert quiet >= IDLE, f"stopped {quiet:.1f} s after the last input, before {IDLE} s"
    assert f"no input for {IDLE:g} s: stopping (idle-exit)" in app.output
    assert "stopped" in app.output.splitlines()[-1]

    # Started again (as an autoscaler would, on lag): nothing left to do, nothing done twice.
    again = apps(*args)
    assert await again.wait(timeout=30) == 0, again.output
    assert await kit.count(shouted) == 3 + sent
    records = await kit.read(shouted, 3 + sent)
    assert sorted(r.value for r in records) == sorted(
        [b"ONE", b"TWO", b"THREE", *(f"MORE-{i}".upper().encode() for i in range(sent))]
    )

    # And with input waiting, a restart takes it and idles out again.
    await kit.produce(words, [b"late"])
    third = apps(*args)
    assert await third.wait(timeout=30) == 0, third.output
    assert await kit.count(shouted) == 4 + sent
