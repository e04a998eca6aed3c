"""Spring's router function on the memory binder: by the function-definition header, by a
routing expression, by a default function; only the app's own functions; a message nothing
routes is dead-lettered with the reason."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest
from pydantic import BaseModel

from binder_core.deadletter import EXCEPTION_MESSAGE
from binder_core.errors import ConfigError
from binder_core.routing import DEFINITION_HEADER
from binder_core.testing import TestApp


class Order(BaseModel):
    kind: str
    id: int


seen: list[str] = []


def even(n: int) -> None:
    seen.append(f"even {n}")


def odd(n: int) -> None:
    seen.append(f"odd {n}")


def shout(word: str) -> str:
    return word.upper()


def exclaim(word: str) -> str:
    return word + "!"


def by_kind(order: Order) -> str:
    return f"{order.kind}:{order.id}"


def _module() -> types.ModuleType:
    module = types.ModuleType("routed_app")
    for fn in (even, odd, shout, exclaim, by_kind):
        fn.__module__ = module.__name__
        setattr(module, fn.__name__, fn)
    return module


def _tree(**function: Any) -> dict[str, Any]:
    return {
        "stream": {
            "function": function,
            "bindings": {
                "functionRouter-in-0": {"destination": "in", "group": "g"},
                "functionRouter-out-0": {"destination": "out", "content-type": "text/plain"},
            },
        }
    }


async def _until(count: int) -> None:
    for _ in range(200):
        if len(seen) >= count:
            return
        await asyncio.sleep(0.01)


async def test_the_definition_header_picks_the_function_and_compositions_work() -> None:
    seen.clear()
    async with TestApp(_module(), properties=_tree(routing={"enabled": True})) as app:
        await app.send("in", 2, headers={DEFINITION_HEADER: "even"})
        await app.send("in", 3, headers={DEFINITION_HEADER: "odd"})
        await app.send("in", "hi", headers={DEFINITION_HEADER: "shout|exclaim"})
        await _until(2)
        assert seen == ["even 2", "odd 3"]
        assert (await app.receive("out")).payload == b"HI!"


async def test_a_routing_expression_names_the_function() -> None:
    tree = _tree(**{"routing-expression": "payload.kind", "routing": {"functions": ["by_kind"]}})
    tree["stream"]["function"]["routing-expression"] = "headers['fn']"
    async with TestApp(_module(), properties=tree) as app:
        await app.send("in", {"kind": "book", "id": 7}, headers={"fn": "by_kind"})
        assert (await app.receive("out")).payload == b"book:7"


async def test_unknown_or_forbidden_functions_are_dead_lettered_with_the_reason() -> None:
    tree = _tree(routing={"enabled": True, "functions": ["shout"]})
    async with TestApp(_module(), properties=tree) as app:
        await app.send("in", "a", headers={DEFINITION_HEADER: "exclaim"})  # not allowed
        await app.send("in", "b", headers={DEFINITION_HEADER: "os.system"})
        await app.send("in", "c")  # no header, no expression, no default
        await app.send("in", "d", headers={DEFINITION_HEADER: "shout"})
        dead = await app.receive_all(app.dead_letter_destination("functionRouter-in-0"), 3)
        reasons = [m.headers[EXCEPTION_MESSAGE] for m in dead]
        assert "'exclaim', which is not a function the router may call" in reasons[0]
        assert "'os.system'" in reasons[1]
        assert "no function for this message" in reasons[2]
        assert (await app.receive("out")).payload == b"D"


async def test_a_default_function_takes_what_nothing_else_routes() -> None:
    tree = _tree(routing={"enabled": True, "default-function": "shout"})
    async with TestApp(_module(), properties=tree) as app:
        await app.send("in", "quiet")
        assert (await app.receive("out")).payload == b"QUIET"


async def test_bad_routing_settings_stop_start_up() -> None:
    bad_expression = _tree(**{"routing-expression": "payload..kind"})
    with pytest.raises(ConfigError, match="routing-expression"):
        await TestApp(_module(), properties=bad_expression).start()
    unknown_default = _tree(routing={"enabled": True, "default-function": "nope"})
    with pytest.raises(ConfigError, match=r"default-function.*'nope'"):
        await TestApp(_module(), properties=unknown_default).start()
