"""Property: whatever bytes arrive with whatever ``contentType`` header, a binding's decoder
gives the declared type or raises ``ConversionError``, never anything else; and an encoder
gives bytes or raises ``ConversionError``.

Short by default (tests/conftest.py's profile); ``HYPOTHESIS_PROFILE=long`` searches longer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from binder_core.conversion import decoder_for, encoder_for, message_converters
from binder_core.errors import ConversionError
from binder_core.functions import inspect_function
from binder_core.message import CONTENT_TYPE, Message

try:  # where the consumer loop makes arguments
    from binder_core.arguments import argument_maker
except ImportError:
    from binder_core.invoker import argument_maker

CONVERTERS = {c.content_type: c for c in message_converters()}
CONTENT_TYPES = [
    "application/json",
    "application/cloudevents+json",
    "text/plain",
    "application/octet-stream",
    "text/csv",
    "application/x-unknown",
]


class Tick(BaseModel):
    symbol: str
    price: float
    tags: list[str] = []


@dataclasses.dataclass
class Point:
    x: int
    y: int


def _untyped(value: Any) -> Any:
    return value


def _as_bytes(value: bytes) -> bytes:
    return value


def _as_str(value: str) -> str:
    return value


def _as_dict(value: dict[str, Any]) -> dict[str, Any]:
    return value


def _as_tick(value: Tick) -> Tick:
    return value


def _as_point(value: Point) -> Point:
    return value


def _as_message(value: Message[Tick]) -> Message[Tick]:
    return value


FUNCTIONS = [_untyped, _as_bytes, _as_str, _as_dict, _as_tick, _as_point, _as_message]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def _deep(depth: int, kind: str) -> bytes:
    opener, closer = (b"[", b"]") if kind == "list" else (b'{"a":', b"}")
    return opener * depth + b"1" + closer * depth


payloads = st.one_of(
    st.binary(max_size=256),
    st.text(max_size=128).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(_deep, st.integers(1, 5000), st.sampled_from(["list", "map"])),
    st.just(b'{"symbol": "ACME", "price": 1.5}'),
    st.just(b'{"x": 1, "y": 2}'),
)

header_values = st.one_of(
    st.none(),
    st.sampled_from(CONTENT_TYPES),
    st.text(max_size=64),
    st.binary(max_size=64),
    st.integers(),
    st.floats(),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    st.sampled_from(CONTENT_TYPES).map(lambda t: f'"{t}";charset=UTF-8'.encode()),
)


@given(
    function=st.sampled_from(FUNCTIONS),
    binding_type=st.sampled_from(CONTENT_TYPES[:4]),
    payload=payloads,
    header=header_values,
)
def test_any_input_gives_the_declared_type_or_a_conversion_error(
    function: Any, binding_type: str, payload: bytes, header: object
) -> None:
    info = inspect_function(function.__name__, function)
    argument = argument_maker(info, binding_type, CONVERTERS)
    headers = {} if header is None else {CONTENT_TYPE: header}
    try:
        value = argument(Message(payload, headers))
    except ConversionError:
        return
    target = info.input_type
    if info.wants_message:
        assert isinstance(value, Message)
        value = value.payload
    if target in (bytes, str, dict, Tick, Point):
        assert isinstance(value, target)


@given(
    target=st.sampled_from([Any, bytes, str, dict, list, Tick, Point, int, float]), payload=payloads
)
def test_every_decoder_raises_only_conversion_errors(target: Any, payload: bytes) -> None:
    for content_type in CONTENT_TYPES[:4]:
        with contextlib.suppress(ConversionError):
            decoder_for(target, content_type, CONVERTERS)(payload)


outputs = st.one_of(
    json_values,
    st.binary(max_size=32),
    st.builds(Tick, symbol=st.text(max_size=8), price=st.floats()),
    st.builds(Point, x=st.integers(), y=st.integers()),
    st.decimals(allow_nan=True),
    st.just(object()),
    st.just(math.nan),
)


@given(value=outputs)
def test_every_encoder_gives_bytes_or_a_conversion_error(value: Any) -> None:
    for content_type in CONTENT_TYPES[:4]:
        try:
            data = encoder_for(content_type, CONVERTERS)(value)
        except ConversionError:
            continue
        assert isinstance(data, bytes)
        if content_type == "application/json" and not isinstance(value, bytes | str):
            # What is sent as JSON is strict JSON: a strict reader takes it.
            json.loads(data, parse_constant=_refuse)


def _refuse(token: str) -> Any:
    raise AssertionError(f"{token} sent as JSON")
