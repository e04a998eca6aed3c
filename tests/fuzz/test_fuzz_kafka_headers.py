"""Property: whatever headers a Kafka record carries, reading them gives a headers dict or
raises ``UnreadableHeaders`` (that one record is then dead-lettered), never anything else:
an exception escaping here would end the consumer task.

Short by default (tests/conftest.py's profile); ``HYPOTHESIS_PROFILE=long`` searches longer.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from binder_core.errors import ConversionError
from binder_core.limits import HEADER_COUNT, HEADER_NESTING_DEPTH
from binders.kafka.headers import (
    JSON_TYPES,
    UnreadableHeaders,
    decode_headers,
    encode_headers,
    merge_types,
)

JAVA_TYPES = [
    "java.lang.String",
    "java.lang.Integer",
    "java.lang.Long",
    "java.lang.Double",
    "java.lang.Boolean",
    "java.util.ArrayList",
    "java.util.LinkedHashMap",
    "org.springframework.util.MimeType",
    "com.example.Unknown",
]


def _nested(depth: int, kind: str) -> bytes:
    opener, closer = (b"[", b"]") if kind == "list" else (b'{"k":', b"}")
    return opener * depth + b"0" + closer * depth


names = st.text(max_size=12) | st.sampled_from(["contentType", "id", "x-key", JSON_TYPES])
values = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.text(max_size=32).map(str.encode),
    st.text(max_size=16).map(lambda t: json.dumps(t).encode()),
    st.integers().map(lambda n: str(n).encode()),
    st.sampled_from([b"NaN", b"-Infinity", b"true", b"null", b"1e400", b"\xff\xfe"]),
    st.builds(_nested, st.integers(1, 4000), st.sampled_from(["list", "map"])),
)
type_maps = st.one_of(
    st.dictionaries(names, st.sampled_from(JAVA_TYPES), max_size=6).map(
        lambda m: json.dumps(m).encode()
    ),
    st.binary(max_size=32),
    st.builds(_nested, st.integers(1, 4000), st.sampled_from(["list", "map"])),
    st.just(b'{"a": ["java.lang.String"], "b": 1}'),
)


@st.composite
def header_lists(draw: Any) -> list[tuple[str, bytes | None]]:
    raw = draw(st.lists(st.tuples(names, values), max_size=12))
    if draw(st.booleans()):
        raw.append((JSON_TYPES, draw(type_maps)))
    if draw(st.booleans()):  # type every header, so typed decoding is exercised
        raw.append(
            (
                JSON_TYPES,
                json.dumps({n: draw(st.sampled_from(JAVA_TYPES)) for n, _ in raw}).encode(),
            )
        )
    return raw


@given(raw=header_lists())
def test_any_header_list_is_read_or_refused_cleanly(raw: list[tuple[str, bytes | None]]) -> None:
    try:
        headers = decode_headers(raw)
    except UnreadableHeaders as exc:
        assert isinstance(exc, ConversionError)
        return
    assert isinstance(headers, dict)
    assert set(headers) <= {n for n, _ in raw} - {JSON_TYPES}
    # What was read can be written again (a function passing headers on).
    encode_headers(headers)
    # Building a dead letter for the record never fails either.
    merge_types(raw, {"x-exception-message": "java.lang.String"})


def test_a_typed_header_nested_past_the_limit_is_refused_with_its_name() -> None:
    for kind in ("list", "map"):
        raw = [
            ("ok", b"1"),
            ("deep", _nested(HEADER_NESTING_DEPTH + 1, kind)),
            (JSON_TYPES, b'{"ok":"java.lang.Integer","deep":"java.util.ArrayList"}'),
        ]
        try:
            decode_headers(raw)
        except UnreadableHeaders as exc:
            assert "'deep'" in str(exc) and "nested deeper than" in str(exc)
        else:
            raise AssertionError("read a header nested past the limit")
        raw[1] = ("deep", _nested(HEADER_NESTING_DEPTH - 1, kind))
        assert decode_headers(raw)["ok"] == 1


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps(["[" * 500, {"k": "{" * 500}]).encode()
    raw = [("h", text), (JSON_TYPES, b'{"h":"java.util.ArrayList"}')]
    assert decode_headers(raw)["h"] == ["[" * 500, {"k": "{" * 500}]


def test_too_many_headers_are_refused_and_the_limit_itself_is_read() -> None:
    at_limit = [(f"h{i}", b"v") for i in range(HEADER_COUNT)]
    assert len(decode_headers(at_limit)) == HEADER_COUNT
    try:
        decode_headers([*at_limit, ("one-more", b"v")])
    except UnreadableHeaders as exc:
        assert str(HEADER_COUNT) in str(exc)
    else:
        raise AssertionError("read more headers than the limit")


def test_an_unreadable_type_map_types_nothing() -> None:
    deep = _nested(5000, "map")
    raw = [("n", b"5"), (JSON_TYPES, deep)]
    assert decode_headers(raw) == {"n": b"5"}
    assert json.loads(merge_types(raw, {"x": "java.lang.String"})) == {"x": "java.lang.String"}


def test_large_header_lists_are_not_cached() -> None:
    from binders.kafka import headers as module

    module._in_cache.clear()
    module._out_cache.clear()
    big = (("blob", b"x" * 100_000),)
    small = (("k", b"v"),)
    decode_headers(big)
    decode_headers(small)
    assert big not in module._in_cache and small in module._in_cache
    encode_headers({"blob": "y" * 100_000})
    encode_headers({"k": "v"})
    assert list(module._out_cache) == [(("k", "v"),)]
