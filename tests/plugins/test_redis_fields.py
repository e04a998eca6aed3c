"""Reading Redis stream entries as messages: bounded, and total over any input. Any field
list gives (payload, headers) or ``FieldsError`` (a ``ConversionError``: that entry is
dead-lettered), never another exception; a JSON header nested thousands deep used to raise
RecursionError.

No broker needed; ``HYPOTHESIS_PROFILE=long`` searches far longer than the default run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from binder_redis.fields import (
    MAX_DEPTH,
    MAX_HEADERS,
    PAYLOAD,
    FieldsError,
    _depth,
    decode_fields,
    encode_headers,
)
from hypothesis import example, given
from hypothesis import strategies as st

from binder_core.errors import ConversionError


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def test_json_headers_up_to_the_limit_are_read_and_deeper_ones_are_refused() -> None:
    value: Any = []
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert decode_fields([PAYLOAD, b"p", b"j:h", _nested(MAX_DEPTH)]) == (b"p", {"h": value})
    for levels in (MAX_DEPTH + 1, 3000, 100_000):
        with pytest.raises(FieldsError, match=f"nested deeper than {MAX_DEPTH} levels"):
            decode_fields([PAYLOAD, b"p", b"j:h", _nested(levels)])
    assert issubclass(FieldsError, ConversionError)


def test_brackets_inside_strings_do_not_count_and_other_encodings_are_seen_through() -> None:
    inside = json.dumps(["[" * 5000, '\\"[[[', "{" * 100]).encode()
    assert decode_fields([PAYLOAD, b"p", b"j:h", inside])[1]["h"][0] == "[" * 5000
    # json.loads also reads UTF-16 and UTF-32: the depth is counted on the same characters.
    for encoding in ("utf-16", "utf-32-be"):
        with pytest.raises(FieldsError):
            decode_fields([PAYLOAD, b"p", b"j:h", _nested(3000).decode().encode(encoding)])


def test_entries_that_are_not_messages_are_refused_with_the_reason() -> None:
    with pytest.raises(FieldsError, match="do not pair up"):
        decode_fields([PAYLOAD])
    with pytest.raises(FieldsError, match="do not pair up"):
        decode_fields([PAYLOAD, b"p", b"s:x"])
    many = [PAYLOAD, b"p"]
    for i in range(MAX_HEADERS):
        many += [f"s:h{i}".encode(), b"v"]
    assert len(decode_fields(many)[1]) == MAX_HEADERS
    with pytest.raises(FieldsError, match=f"more than {MAX_HEADERS} headers"):
        decode_fields([*many, b"s:one-more", b"v"])


def test_values_that_do_not_parse_stay_raw_as_before() -> None:
    fields = [
        PAYLOAD,
        b"p",
        b"j:bad",
        b"[[[",
        b"i:huge",
        b"9" * 5000,
        b"f:f",
        b"x",
        b"j:b",
        b"\xff",
    ]
    assert decode_fields(fields)[1] == {"bad": b"[[[", "huge": b"9" * 5000, "f": b"x", "b": b"\xff"}


# -- fuzz ----------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=40,
)


@given(_json)
def test_fuzz_depth_is_counted_exactly_on_valid_json(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    assert _depth(json.dumps(value)) == depth(value)


_headers = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.text(max_size=10)
    | st.binary(max_size=10)
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.lists(st.integers(), max_size=3),
    max_size=6,
)


@given(st.binary(max_size=20), _headers)
def test_fuzz_what_we_write_reads_back(payload: bytes, headers: dict[str, Any]) -> None:
    assert decode_fields([PAYLOAD, payload, *encode_headers(headers)]) == (payload, headers)


_names = st.sampled_from([b"payload", b"j:h", b"s:h", b"i:h", b"f:h", b"t:h", b"b:h", b"x"])
_json_like = st.text(alphabet='[]{}"\\,:1a ', max_size=200).map(str.encode)


@given(st.lists(_names | st.binary(max_size=12) | _json_like, max_size=12))
@example([PAYLOAD, b"p", b"j:h", _nested(5000)])
@example([b"j:h", b'["\\\\"' + _nested(2000)])
def test_fuzz_any_fields_read_or_fail_cleanly(fields: list[bytes]) -> None:
    try:
        payload, headers = decode_fields(fields)
    except FieldsError:
        return
    assert isinstance(payload, bytes) and isinstance(headers, dict)
