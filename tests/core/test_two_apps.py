"""Two apps with different configuration in one process, at the same time: each function
reads its own app's settings and sends through its own app's ``StreamBridge``; nothing of
one app leaks into the other (no process-global state)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from binder_core import StreamBridge, app_settings
from binder_core.testing import TestApp


class Greeting(BaseModel):
    word: str = "hello"


def _app(word: str, side: str) -> tuple[dict[str, Any], dict[str, Any]]:
    async def greet(name: str) -> str:
        # Read at call time: the settings of the app this function runs in.
        prefix = app_settings("greeting", Greeting).word
        await StreamBridge.current().send(side, f"{prefix} from the bridge")
        return f"{prefix} {name}"

    tree = {
        "greeting": {"word": word},
        "stream": {
            "bindings": {
                "greet-in-0": {"destination": "names", "group": "g", "content-type": "text/plain"},
                "greet-out-0": {"destination": "greetings", "content-type": "text/plain"},
            },
            "dynamic-destinations": [side],
        },
    }
    return {"greet": greet}, tree


async def test_two_apps_in_one_process_keep_their_own_bridge_and_settings() -> None:
    fns_a, tree_a = _app("bonjour", "side-a")
    fns_b, tree_b = _app("hola", "side-b")
    async with TestApp(fns_a, properties=tree_a) as a, TestApp(fns_b, properties=tree_b) as b:
        assert a.app is not None and b.app is not None
        assert a.app.bridge is not b.app.bridge
        for app in (a, b):  # subscribe the test's probes to both side destinations first
            assert app.pending("side-a") == app.pending("side-b") == 0
        await asyncio.gather(a.send("names", "ann"), b.send("names", "bob"))
        got_a = await a.receive("greetings")
        got_b = await b.receive("greetings")
        assert got_a.payload == b"bonjour ann"
        assert got_b.payload == b"hola bob"
        # Each function's StreamBridge sends went through its own app's binder.
        assert (await a.receive("side-a")).payload == b"bonjour from the bridge"
        assert (await b.receive("side-b")).payload == b"hola from the bridge"
        assert a.pending("side-b") == 0 and b.pending("side-a") == 0
