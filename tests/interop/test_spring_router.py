"""Spring's router (``spring.cloud.stream.function.routing.enabled=true``) taking messages a
Python app labelled with ``spring.cloud.function.definition``, on Kafka and RabbitMQ.

Spring's router is the app's only binding when it is enabled, so it has a JVM of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from binder_core.message import Message
from tests.interop.conftest import StartSpring
from tests.interop.pyapp import python_app
from tests.interop.spring import SpringApp
from tests.interop.wire import Wire
from tests.support import eventually

pytestmark = pytest.mark.interop

LABEL = "spring.cloud.function.definition"


@pytest.fixture(scope="module")
def destinations(module_name: Callable[[str], str]) -> tuple[str, str]:
    return module_name("to-route"), module_name("routed")


@pytest.fixture(scope="module")
def spring_router(
    wire: Wire, destinations: tuple[str, str], module_spring: StartSpring
) -> Iterator[SpringApp]:
    to_route, routed = destinations
    yield module_spring(
        {
            **wire.spring_binder(),
            "spring.cloud.stream.function.routing.enabled": "true",
            "spring.cloud.stream.bindings.functionRouter-in-0.destination": to_route,
            "spring.cloud.stream.bindings.functionRouter-in-0.group": "spring",
            "spring.cloud.stream.bindings.functionRouter-out-0.destination": routed,
        }
    )


async def test_spring_router_takes_what_python_labelled(
    wire: Wire, destinations: tuple[str, str], spring_router: SpringApp
) -> None:
    to_route, routed = destinations
    got: list[Message[str]] = []

    def answers(message: Message[str]) -> None:
        got.append(message)

    async with python_app(
        wire, {"answers": answers}, {"answers-in-0": {"destination": routed, "group": "python"}}
    ) as app:
        await app.bridge.send(to_route, "Hello", {LABEL: "uppercase"})
        await app.bridge.send(to_route, "stressed", {LABEL: "reverse"})
        await app.bridge.send(to_route, "composed", {LABEL: "reverse|uppercase"})
        # A consumer: Spring's router runs it, and nothing comes out.
        await app.bridge.send(to_route, "for the inbox", {LABEL: "inbox"})
        await eventually(lambda: len(got) >= 3, "the routed answers")
        inbox = await spring_router.wait_received("inbox", 1)

    assert sorted(m.payload for m in got) == ["DESOPMOC", "HELLO", "desserts"]
    assert inbox[0].text == "for the inbox"
    assert inbox[0].header(LABEL) == "inbox"
