"""Error handlers (Spring's error-handler-definition): the app's function receives each
message whose retries ran out, instead of (or before) the dead-letter destination; a
handler that fails leaves the message to the dead-letter destination."""

from __future__ import annotations

from typing import Any

import pytest

from binder_core import FailedMessage
from binder_core.errors import ConfigError
from binder_core.testing import TestApp

handled: list[FailedMessage] = []


def picky(word: str) -> str:
    if word.startswith("bad"):
        raise ValueError(f"cannot take {word}")
    return word.upper()


def on_error(failed: FailedMessage) -> None:
    if failed.message.payload == b"bad-and-worse":
        raise RuntimeError("the handler gives up too")
    handled.append(failed)


def _tree(binding: dict[str, Any], default: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "stream": {
            "function": {"definition": "picky"},
            "default": {"consumer": {"max-attempts": 2, "back-off-initial-interval": 1}}
            | (default or {}),
            "bindings": {
                "picky-in-0": {"destination": "words", "group": "g", "content-type": "text/plain"}
                | binding,
                "picky-out-0": {"destination": "out", "content-type": "text/plain"},
            },
        }
    }


FNS = {"picky": picky, "on_error": on_error}


async def test_the_handler_takes_failures_instead_of_the_dead_letter_queue() -> None:
    handled.clear()
    async with TestApp(FNS, properties=_tree({"error-handler-definition": "on_error"})) as app:
        for w in ("ok", "bad", "bad-and-worse", "fine"):
            await app.send("words", w)
        assert [m.payload for m in await app.receive_all("out", 2)] == [b"OK", b"FINE"]
        [dead] = await app.receive_all(app.dead_letter_destination("picky-in-0"), 1)
        assert dead.payload == b"bad-and-worse"  # the handler failed on it
        assert app.pending(app.dead_letter_destination("picky-in-0")) == 0
    [failed] = handled
    assert failed.message.payload == b"bad"
    assert failed.binding == "picky-in-0"
    assert isinstance(failed.error, ValueError)
    assert failed.reason == "ValueError: cannot take bad"


async def test_a_default_handler_applies_to_every_binding_and_may_dead_letter_too() -> None:
    handled.clear()
    tree = _tree(
        {"consumer": {"dead-letter-after-error-handler": True}},
        default={"error-handler-definition": "on_error"},
    )
    async with TestApp(FNS, properties=tree) as app:
        await app.send("words", "bad")
        [dead] = await app.receive_all(app.dead_letter_destination("picky-in-0"), 1)
        assert dead.payload == b"bad"
    assert [f.message.payload for f in handled] == [b"bad"]


async def test_an_unknown_handler_stops_start_up() -> None:
    tree = _tree({"error-handler-definition": "on_eror"})
    with pytest.raises(ConfigError, match="did you mean 'on_error'"):
        await TestApp(FNS, properties=tree).start()
