"""Readiness on a real broker when a consumer dies under the loop: RabbitMQ closes the app's
consumer connection (``rabbitmqctl close_connection``), ``/ready`` answers 503 with that
consumer ``restarting`` for as long as it cannot subscribe again, then 200 once it is back,
and messages flow again. The new consumer's subscribe is held until the test lets it go, so
the restarting state is seen every time, however loaded the machine."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from binder_core.remote import call
from binder_core.runtime import App
from tests.brokers import require_own_broker
from tests.kafka.conftest import running_app
from tests.support import eventually

pytestmark = pytest.mark.rabbit


def close_connection(name: str) -> None:
    """Have RabbitMQ close the connection whose client named itself ``name``."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties",
         "--quiet", "--no-table-headers"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    marker = f'{{"connection_name","{name}"}}'
    found = [line.split("\t")[0] for line in listed.stdout.splitlines() if marker in line]
    assert len(found) == 1, f"connections named {name}: {found}"
    subprocess.run(
        ["rabbitmqctl", "close_connection", found[0], "closed by the readiness test"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip


async def test_a_consumer_dropped_by_the_broker_is_restarting_until_it_is_back(
    rabbit_url: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_own_broker("rabbit")  # rabbitmqctl reaches the local node only
    destination, group, connection = unique_name("words"), "g", unique_name("app")
    got: list[str] = []

    def keep(word: str) -> None:
        got.append(word)

    stream: dict[str, Any] = {
        "function": {"definition": "keep"},
        "default-binder": "rabbit",
        "binders": {
            "rabbit": {
                "type": "rabbit",
                "environment": {"uri": rabbit_url, "connection-name": connection},
            }
        },
        "bindings": {
            "keep-in-0": {"destination": destination, "group": group, "content-type": "text/plain"}
        },
        "management": {"port": 0},
    }
    async with running_app({"keep": keep}, stream) as app:
        assert app.management is not None
        url = app.management.url

        async def ready() -> tuple[int, Any]:
            return await asyncio.to_thread(call, url, "/ready", "BINDER_TEST_NO_TOKEN")

        assert (await ready())[0] == 200
        await send(app, "before")
        await eventually(lambda: got == ["before"], "the first word")

        # Every consumer opened from now on waits for the gate before it subscribes.
        binding = app.bindings["keep-in-0"]
        subscription: Any = binding.subscription
        make = subscription.source
        gate = asyncio.Event()

        def held(index: int) -> Any:
            source = make(index)
            subscribe = source.open

            async def open_when_let() -> None:
                await gate.wait()
                await subscribe()

            source.open = open_when_let
            return source

        monkeypatch.setattr(subscription, "source", held)
        await asyncio.to_thread(close_connection, f"{connection}:consumer")

        async def restarting() -> bool:
            status, report = await ready()
            return status == 503 and report["bindings"]["keep-in-0"]["consumers"] == ["restarting"]

        await eventually(restarting, "/ready to say the consumer is restarting")
        status, report = await ready()
        assert status == 503 and report["status"] == "DOWN"
        assert report["bindings"]["keep-in-0"]["state"] == "running"
        assert binding.stats.restarts == 1

        gate.set()

        async def back() -> bool:
            status, report = await ready()
            return status == 200 and report["bindings"]["keep-in-0"]["consumers"] == ["running"]

        await eventually(back, "/ready to answer 200 again")
        await send(app, "after")
        await eventually(lambda: got == ["before", "after"], "the word sent after")
        _, report = await ready()
        assert report["binders"]["rabbit"]["reconnects"] >= 1


async def send(app: App, word: str) -> None:
    """Through the app's own bridge, as a web handler in the app would."""
    await app.bridge.send(app.plan.inputs["keep"].destination, word)
