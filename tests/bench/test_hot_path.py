"""The fast paths taken for speed keep the behaviour of the general ones.

Each case goes through a branch the optimisations added (a plain function called without
composition machinery, the decoder table keyed by ``contentType`` value, the converter
called directly for outputs, sync generators handed on in chunks) and checks what a user
sees: outputs, their order, retries, dead letters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from binder_core import Message
from binder_core.deadletter import EXCEPTION_FQCN
from binder_core.runtime import SUPPLIER_GRACE
from binder_core.testing import TestApp

FAST_RETRY = {"default": {"consumer": {"back-off-initial-interval": 1, "back-off-max-interval": 5}}}


def props(bindings: dict[str, Any] | None = None, **stream: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {**FAST_RETRY, **stream}
    if bindings:
        tree["bindings"] = bindings
    return {"stream": tree}


class Word(BaseModel):
    text: str


class Unencodable:
    """A value no JSON encoder takes."""


async def test_plain_function_retries_in_place_and_keeps_order() -> None:
    attempts: dict[str, int] = {}

    def shout(word: Word) -> Word:
        attempts[word.text] = attempts.get(word.text, 0) + 1
        if word.text == "b" and attempts["b"] < 2:
            raise RuntimeError("once")
        return Word(text=word.text.upper())

    async with TestApp({"shout": shout}, properties=props()) as app:
        for text in ("a", "b", "c"):
            await app.send("shout-in-0", {"text": text})
        got = await app.receive_all("shout-out-0", 3)
        assert [m.payload for m in got] == [b'{"text":"A"}', b'{"text":"B"}', b'{"text":"C"}']
        assert attempts == {"a": 1, "b": 2, "c": 1}
        assert app.pending("shout-out-0") == 0


async def test_one_unencodable_output_fails_only_its_input() -> None:
    def convert(word: str) -> Any:
        return Unencodable() if word == "bad" else {"word": word}

    async with TestApp({"convert": convert}, properties=props()) as app:
        for word in ("x", "bad", "y"):
            await app.send("convert-in-0", word)
        got = await app.receive_all("convert-out-0", 2)
        assert [m.payload for m in got] == [b'{"word":"x"}', b'{"word":"y"}']
        dead = await app.receive(app.dead_letter_destination("convert-in-0"))
        assert dead.payload == b"bad"
        assert "ConversionError" in dead.headers[EXCEPTION_FQCN]


async def test_outputs_of_every_kind_of_value() -> None:
    def many(n: int) -> Any:
        return [b"raw", "text", {"n": n}, Message({"n": n}, {"trace": "t1"}), None][n]

    async with TestApp({"many": many}, properties=props()) as app:
        for n in range(5):
            await app.send("many-in-0", n)
        got = await app.receive_all("many-out-0", 4)
        assert [m.payload for m in got] == [b"raw", b"text", b'{"n":2}', b'{"n":3}']
        # "text" is not JSON: sent as it is, labelled text/plain.
        labels = [m.headers["contentType"] for m in got]
        assert labels == ["application/json", "text/plain", "application/json", "application/json"]
        assert got[3].headers["trace"] == "t1"
        assert app.pending("many-out-0") == 0  # None sent nothing


async def test_content_type_header_values_choose_the_decoder() -> None:
    def echo(value: Any) -> Any:
        return {"seen": value}

    async with TestApp({"echo": echo}, properties=props()) as app:
        await app.send("echo-in-0", b'{"a":1}')  # no header: the binding's JSON
        await app.send("echo-in-0", b'{"a":2}', content_type="application/json")
        await app.send("echo-in-0", b"plain", content_type="text/plain;charset=UTF-8")
        await app.send("echo-in-0", b"plain", content_type="text/plain;charset=UTF-8")
        await app.send("echo-in-0", b'{"a":3}', content_type='"application/json"')
        await app.send("echo-in-0", b'{"a":4}', content_type="application/cloudevents+json")
        got = await app.receive_all("echo-out-0", 6)
        assert [m.payload for m in got] == [
            b'{"seen":{"a":1}}',
            b'{"seen":{"a":2}}',
            b'{"seen":"plain"}',
            b'{"seen":"plain"}',
            b'{"seen":{"a":3}}',
            b'{"seen":{"a":4}}',
        ]


async def test_unhashable_content_type_fails_that_message_only() -> None:
    def echo(value: Any) -> Any:
        return value

    tree = props({"echo-in-0": {"consumer": {"max-attempts": 1}}})
    async with TestApp({"echo": echo}, properties=tree) as app:
        await app.send("echo-in-0", b'{"a":1}', headers={"contentType": ["application/json"]})
        await app.send("echo-in-0", b'{"a":2}')
        assert (await app.receive("echo-out-0")).payload == b'{"a":2}'
        dead = await app.receive(app.dead_letter_destination("echo-in-0"))
        assert dead.payload == b'{"a":1}'


async def test_generator_supplier_error_still_sends_what_came_before() -> None:
    def numbers() -> Iterator[int]:
        yield from range(300)  # more than one chunk
        raise RuntimeError("source broke")

    async with TestApp({"numbers": numbers}, properties=props()) as app:
        got = await app.receive_all("numbers-out-0", 300)
        assert [int(m.payload) for m in got] == list(range(300))


async def test_endless_generator_supplier_stops_with_the_app() -> None:
    produced = 0

    def forever() -> Iterator[int]:
        nonlocal produced
        while True:
            produced += 1
            yield produced

    app = TestApp({"forever": forever}, properties=props())
    await app.start()
    await app.receive_all("forever-out-0", 1000)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await app.stop()
    # Stopped at a chunk boundary, well before the grace period that would cancel it.
    assert loop.time() - began < SUPPLIER_GRACE / 2
    assert produced >= 1000
