"""Conversion fails in one way only: ``ConversionError`` for that one message, whatever went
wrong underneath, with a reason that never quotes the payload."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, field_validator

from binder_core.conversion import (
    JSON,
    OCTET,
    TEXT,
    decoder_for,
    encoder_for,
    is_json_text,
    media_type,
    message_converters,
)
from binder_core.deadletter import EXCEPTION_FQCN, EXCEPTION_MESSAGE
from binder_core.errors import ConversionError
from binder_core.limits import JSON_NESTING_DEPTH
from binder_core.spi import Converter
from binder_core.testing import TestApp

CONVERTERS = {c.content_type: c for c in message_converters()}
FAST = {"default": {"consumer": {"back-off-initial-interval": 1, "back-off-max-interval": 1}}}


class Tick(BaseModel):
    symbol: str
    price: float


@dataclass
class Point:
    x: int
    y: int


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", [Any, dict, list, Tick, Point])
def test_deeply_nested_json_is_a_conversion_error(target: Any) -> None:
    decode = decoder_for(target, JSON, CONVERTERS)
    with pytest.raises(ConversionError):
        decode(b'{"a":' + nested(5000) + b"}" if target is not list else nested(5000))


def test_json_nested_to_the_documented_depth_is_read() -> None:
    decode = decoder_for(Any, JSON, CONVERTERS)
    value = decode(nested(JSON_NESTING_DEPTH))
    for _ in range(JSON_NESTING_DEPTH - 1):
        value = value[0]
    assert value == []


@pytest.mark.parametrize("header", [{"type": "application/json"}, 42, ["application/json"], 1.5])
def test_a_content_type_header_that_is_not_text_is_a_conversion_error(header: object) -> None:
    with pytest.raises(ConversionError, match="contentType header is a"):
        media_type(header)


def test_content_type_header_spellings() -> None:
    assert media_type(b'"application/json"') == JSON
    assert media_type(bytearray(b"Text/Plain; charset=UTF-8")) == TEXT
    assert media_type(None) == ""


def test_a_plugin_converter_that_raises_anything_is_a_conversion_error() -> None:
    class Boom(Exception):
        pass

    def decode(data: bytes) -> Any:
        raise Boom(f"secret payload {data!r}")

    converters = {
        **CONVERTERS,
        "application/x-boom": Converter("application/x-boom", decode, bytes),
    }
    for target in (Any, dict, Tick):
        with pytest.raises(ConversionError) as caught:
            decoder_for(target, "application/x-boom", converters)(b"card 4111")
        # What the converter said may quote the payload: only its type is kept.
        assert "Boom" in str(caught.value)
        assert "secret" not in str(caught.value) and "4111" not in str(caught.value)


def test_a_validator_that_raises_anything_is_a_conversion_error() -> None:
    class Strict(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def lookup(cls, value: str) -> str:
            raise KeyError(value)

    with pytest.raises(ConversionError, match="KeyError"):
        decoder_for(Strict, JSON, CONVERTERS)(b'{"name":"alice@example.com"}')


def test_validation_errors_do_not_quote_the_payload() -> None:
    with pytest.raises(ConversionError) as caught:
        decoder_for(Tick, JSON, CONVERTERS)(b'{"symbol":"ACME","price":"hunter2"}')
    assert "price" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("target", [str, Any, Tick, int])
def test_bad_utf8_is_a_conversion_error(target: Any) -> None:
    for mt in (JSON, TEXT):
        with pytest.raises(ConversionError):
            decoder_for(target, mt, CONVERTERS)(b"\xff\xfe\xfa")


# -- encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, {"a": [1.0, -math.inf]}, [Point(1, 2), {"p": math.nan}]]
)
def test_nan_and_infinity_are_not_sent_as_json(value: Any) -> None:
    with pytest.raises(ConversionError, match="NaN or Infinity"):
        encoder_for(JSON, CONVERTERS)(value)


def test_models_write_non_finite_numbers_as_their_config_says_and_never_as_nan() -> None:
    class Loud(BaseModel):
        model_config = ConfigDict(ser_json_inf_nan="constants")
        x: float

    class Quiet(BaseModel):  # pydantic's default: null
        x: float
        inner: Loud | None = None
        extra: dict[str, Any] = {}

    encode = encoder_for(JSON, CONVERTERS)
    assert encode(Quiet(x=math.nan)) == b'{"x":null,"inner":null,"extra":{}}'
    for value in (
        Loud(x=math.inf),
        Quiet(x=1, inner=Loud(x=math.nan)),
        Quiet(x=1, extra={"l": Loud(x=-math.inf)}),
    ):
        with pytest.raises(ConversionError, match="NaN or Infinity"):
            encode(value)


def test_the_words_nan_and_infinity_in_text_are_fine() -> None:
    encode = encoder_for(JSON, CONVERTERS)
    assert encode({"note": "NaN Infinity"}) == b'{"note":"NaN Infinity"}'


def test_text_plain_takes_numbers_and_booleans_and_refuses_structures() -> None:
    encode = encoder_for(TEXT, CONVERTERS)
    assert encode(42) == b"42"
    assert encode(1.5) == b"1.5"
    assert encode(True) == b"true"
    assert encode(Decimal("2.50")) == b"2.50"
    assert encode("héllo") == "héllo".encode()
    for value in (Point(1, 2), {"a": 1}, [1], Tick(symbol="A", price=1)):
        with pytest.raises(ConversionError, match="as text/plain: return a str"):
            encode(value)


def test_octet_stream_takes_bytes_only() -> None:
    encode = encoder_for(OCTET, CONVERTERS)
    assert encode(b"\x00\x01") == b"\x00\x01"
    assert encode(bytearray(b"ab")) == b"ab"
    # bytes(5) would have been five zero bytes, and bytes(10**10) ten gigabytes.
    for value in (5, 10**10, Point(1, 2)):
        with pytest.raises(ConversionError, match="octet-stream: return bytes"):
            encode(value)


def test_a_str_that_is_not_unicode_text_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match="UTF-8"):
        encoder_for(JSON, CONVERTERS)("lone \ud800 surrogate")


def test_json_text_is_told_from_other_text() -> None:
    for text in ('{"a":1}', " [1, 2] ", '"quoted"', "42", "-1.5e3", "true", "null"):
        assert is_json_text(text), text
    for text in ("", "hello", "NaN", "Infinity", "{'a': 1}", "tru", "[1,", "42 apples"):
        assert not is_json_text(text), text


# -- end to end on the memory binder ------------------------------------------------------


async def test_deep_json_into_an_untyped_parameter_is_dead_lettered_at_once() -> None:
    calls: list[Any] = []

    def echo(value: Any) -> Any:
        calls.append(value)
        return value

    async with TestApp({"echo": echo}, properties={"stream": FAST}) as app:
        await app.send("echo-in-0", nested(5000))
        await app.send("echo-in-0", b'{"ok":1}')
        assert (await app.receive("echo-out-0")).payload == b'{"ok":1}'
        dead = await app.receive(app.dead_letter_destination("echo-in-0"))
        assert dead.payload == nested(5000)
        assert dead.headers[EXCEPTION_FQCN].endswith("ConversionError")
        assert calls == [{"ok": 1}]  # the function never saw the poison message


async def test_a_content_type_header_typed_as_a_map_is_dead_lettered_at_once() -> None:
    def echo(value: Any) -> Any:
        return value

    async with TestApp({"echo": echo}, properties={"stream": FAST}) as app:
        for header in ({"a": 1}, 7):
            await app.send("echo-in-0", b'{"bad":1}', headers={"contentType": header})
        await app.send("echo-in-0", b'{"ok":1}')
        assert (await app.receive("echo-out-0")).payload == b'{"ok":1}'
        for _ in range(2):
            dead = await app.receive(app.dead_letter_destination("echo-in-0"))
            assert dead.headers[EXCEPTION_FQCN].endswith("ConversionError")
            assert "contentType header is a" in dead.headers[EXCEPTION_MESSAGE]


async def test_a_nan_output_is_dead_lettered_and_the_stream_goes_on() -> None:
    def ratio(tick: Tick) -> dict[str, float]:
        return {"ratio": tick.price / tick.price if tick.price else math.nan}

    async with TestApp({"ratio": ratio}, properties={"stream": FAST}) as app:
        await app.send("ratio-in-0", {"symbol": "A", "price": 0})
        await app.send("ratio-in-0", {"symbol": "B", "price": 2})
        assert (await app.receive("ratio-out-0")).payload == b'{"ratio":1.0}'
        dead = await app.receive(app.dead_letter_destination("ratio-in-0"))
        assert "NaN or Infinity" in dead.headers[EXCEPTION_MESSAGE]
        assert app.pending("ratio-out-0") == 0


async def test_str_outputs_are_sent_as_they_are_and_labelled_honestly() -> None:
    def say(word: str) -> str:
        return json.dumps({"word": word}) if word.startswith("j") else word.upper()

    async with TestApp({"say": say}, properties={"stream": FAST}) as app:
        await app.send("say-in-0", b"hello")
        await app.send("say-in-0", b"json")
        text, json_text = await app.receive_all("say-out-0", 2)
        assert (text.payload, text.headers["contentType"]) == (b"HELLO", TEXT)
        assert (json_text.payload, json_text.headers["contentType"]) == (b'{"word": "json"}', JSON)


async def test_a_dataclass_on_a_text_binding_is_refused_not_sent_as_its_repr() -> None:
    def where(word: str) -> Point:
        return Point(len(word), 0)

    tree = {**FAST, "bindings": {"where-out-0": {"content-type": "text/plain"}}}
    async with TestApp({"where": where}, properties={"stream": tree}) as app:
        await app.send("where-in-0", b"abc")
        dead = await app.receive(app.dead_letter_destination("where-in-0"))
        assert "cannot send a Point as text/plain" in dead.headers[EXCEPTION_MESSAGE]
        assert app.pending("where-out-0") == 0
