"""A Python app and a Spring app sharing one RabbitMQ group queue, whichever declared it.

Spring's default group queue ``<destination>.<group>`` has no dead-letter exchange (its
``auto-bind-dlq`` is false); ours has one by default. RabbitMQ refuses a second declaration
of a queue with other arguments, so whoever comes second meets a queue it did not shape:

* Spring first, Python second: we adopt the queue as it is, with one warning
  (``declare-mode: strict`` refuses instead);
* Python first, Spring second: Spring logs RabbitMQ's refusal of its declaration and
  consumes from the queue as it is;
* Spring with ``auto-bind-dlq: true`` declares exactly what we declare: no warning, no
  refusal, in either order.

In every case both apps share the queue's messages, none twice. Each test starts its own
Spring JVM: the order of declarations is the point.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from binder_core.errors import BinderException
from binder_core.runtime import App
from tests.interop.conftest import StartSpring
from tests.interop.pyapp import python_app, warm_spring_consumer
from tests.interop.spring import SpringApp
from tests.interop.wire import RabbitWire, make_wire
from tests.support import eventually

pytestmark = [pytest.mark.interop, pytest.mark.rabbit]

Namer = Callable[[str], str]
REFUSED = "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange'"


@pytest.fixture
def wire(rabbit_url: str) -> RabbitWire:
    made = make_wire("rabbit", rabbit_url)
    assert isinstance(made, RabbitWire)
    return made


def _spring(destination: str, wire: RabbitWire, **rabbit: str) -> dict[str, str]:
    consumer = "spring.cloud.stream.rabbit.bindings.share-in-0.consumer"
    return {
        "spring.cloud.function.definition": "share",
        **wire.spring_binder(),
        "spring.cloud.stream.bindings.share-in-0.destination": destination,
        "spring.cloud.stream.bindings.share-in-0.group": "workers",
        **{f"{consumer}.{k}": v for k, v in rabbit.items()},
    }


class Shared:
    """The Python member of the group (``work``), and what both members took."""

    def __init__(self, wire: RabbitWire) -> None:
        self.wire = wire
        self.seen: list[str] = []
        self.spring: SpringApp | None = None

    def work(self, item: str) -> None:
        if item.startswith("poison"):
            raise ValueError(f"refusing {item}")
        self.seen.append(item)

    def app(self, destination: str, **consumer: object) -> Any:
        """The Python app: ``work`` in group ``workers`` of ``destination``, our defaults
        unless ``consumer`` (RabbitMQ consumer properties) says otherwise."""
        return python_app(
            self.wire,
            {"work": self.work},
            {"work-in-0": {"destination": destination, "group": "workers"}},
            {"work-in-0": {"consumer": consumer}} if consumer else None,
        )

    def spring_took(self) -> list[str]:
        got = self.spring.received("share") if self.spring else []
        return [r.text for r in got if r.text != "warm-up"]

    async def share(self, app: App, destination: str, total: int = 100) -> None:
        """Send ``total`` items; each member takes some, and no item is taken twice."""
        assert self.spring is not None
        await warm_spring_consumer(
            app, "work-in-0", self.spring, "share", destination, f"{destination}.workers",
            self.wire.address,
        )  # fmt: skip
        items = [f"item-{i}" for i in range(total)]
        for item in items:
            await app.bridge.send(destination, item)
        await eventually(
            lambda: len(self.seen) + len(self.spring_took()) >= total,
            f"{total} items between Spring and Python",
        )
        counts = Counter(self.seen + self.spring_took())
        print(f"Python took {len(self.seen)}, Spring took {len(self.spring_took())} of {total}")
        assert sorted(counts) == sorted(items)
        assert max(counts.values()) == 1, "an item was handled twice"
        assert self.seen and self.spring_took(), "one member did all the work"


def _adoption_warnings(caplog: pytest.LogCaptureFixture, queue: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and f"'{queue}' exists with other settings" in r.getMessage()
    ]


async def test_python_adopts_the_group_queue_spring_declared(
    wire: RabbitWire,
    start_spring: StartSpring,
    unique_name: Namer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    destination = unique_name("spring-first")
    shared = Shared(wire)
    shared.spring = start_spring(_spring(destination, wire))
    with caplog.at_level(logging.WARNING, logger="binders.rabbit"):
        async with shared.app(destination) as app:
            await shared.share(app, destination)
            # With the Spring member gone, what fails in Python is still dead-lettered
            # (republished by the binder), though the adopted queue has no dead-letter
            # exchange of its own.
            shared.spring.stop()
            async with wire.tap("DLX", [f"{destination}.workers"]) as dead:
                await app.bridge.send(destination, "poison")
                letters = await dead.take(1)
    assert letters[0].body == b"poison"
    assert letters[0].headers["x-exception-message"] == "refusing poison"
    warnings = _adoption_warnings(caplog, f"{destination}.workers")
    assert len(warnings) == 1, warnings
    assert "x-dead-letter-exchange" in warnings[0]


async def test_strict_declare_mode_refuses_the_group_queue_spring_declared(
    wire: RabbitWire, start_spring: StartSpring, unique_name: Namer
) -> None:
    destination = unique_name("strict")
    start_spring(_spring(destination, wire))
    with pytest.raises(BinderException) as refused:
        async with Shared(wire).app(destination, **{"declare-mode": "strict"}):
            pass
    assert "x-dead-letter-exchange" in str(refused.value)


async def test_spring_consumes_the_group_queue_python_declared(
    wire: RabbitWire, start_spring: StartSpring, unique_name: Namer
) -> None:
    destination = unique_name("python-first")
    shared = Shared(wire)
    async with shared.app(destination) as app:
        shared.spring = await asyncio.to_thread(start_spring, _spring(destination, wire))
        # Spring's declaration is refused (it logs the refusal as an ERROR), and its
        # consumer goes on with the queue as it is.
        assert REFUSED in shared.spring.output
        await shared.share(app, destination)


@pytest.mark.parametrize("spring_first", [True, False], ids=["spring-first", "python-first"])
async def test_spring_with_auto_bind_dlq_declares_what_we_declare(
    wire: RabbitWire,
    start_spring: StartSpring,
    unique_name: Namer,
    caplog: pytest.LogCaptureFixture,
    spring_first: bool,
) -> None:
    destination = unique_name("same")
    shared = Shared(wire)
    properties = _spring(destination, wire, **{"auto-bind-dlq": "true"})
    if spring_first:
        shared.spring = start_spring(properties)
    with caplog.at_level(logging.WARNING, logger="binders.rabbit"):
        async with shared.app(destination) as app:
            if not spring_first:
                shared.spring = await asyncio.to_thread(start_spring, properties)
            await shared.share(app, destination)
    assert _adoption_warnings(caplog, f"{destination}.workers") == []
    assert shared.spring is not None
    assert "PRECONDITION_FAILED" not in shared.spring.output
