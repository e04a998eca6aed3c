"""Reading AMQP header tables and content-header properties: bounded, and total over any
input. Any bytes give a table (or properties) or ``HeaderTableError``, never another
exception, never a recursion; the limits hold exactly at their values.

No broker needed; ``HYPOTHESIS_PROFILE=long`` searches far longer than the default run.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import struct
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pika import BasicProperties

from binders.rabbit.headers import (
    MAX_DEPTH,
    MAX_HEADERS,
    MAX_VALUES,
    UNREADABLE,
    HeaderTableError,
    TableProperties,
    Unreadable,
    _table,
    properties_of,
    read_table,
    unreadable,
)
from binders.rabbit.internals import CoalescingConnection
from tests.rabbit.frames import nested, properties, short, table, wide


def _read(data: bytes) -> dict[str, Any]:
    got, end = read_table(data, 0, len(data))
    assert end == len(data)
    return got


# -- limits --------------------------------------------------------------------------------


def test_nesting_up_to_the_limit_is_read_and_one_more_level_is_not() -> None:
    inner: dict[str, Any] = {}
    for _ in range(MAX_DEPTH - 1):
        inner = {"k": inner}
    assert _read(nested(MAX_DEPTH)) == inner
    with pytest.raises(HeaderTableError, match=f"nested deeper than {MAX_DEPTH} levels"):
        _read(nested(MAX_DEPTH + 1))


def test_thousands_of_levels_are_refused_without_recursion() -> None:
    for levels in (1500, 3000, 10_000):
        with pytest.raises(HeaderTableError, match="nested deeper"):
            _read(nested(levels))
    arrays = b"A" + struct.pack(">I", 0)
    for _ in range(5000):
        arrays = b"A" + struct.pack(">I", len(arrays)) + arrays
    with pytest.raises(HeaderTableError, match="nested deeper"):
        _read(table(short("k") + arrays))


def test_header_count_and_value_count_limits() -> None:
    assert len(_read(wide(MAX_HEADERS))) == MAX_HEADERS
    with pytest.raises(HeaderTableError, match=f"more than {MAX_HEADERS} headers"):
        _read(wide(MAX_HEADERS + 1))
    items = b"V" * MAX_VALUES  # one header holding an array: MAX_VALUES values in all
    ok = table(short("k") + b"A" + struct.pack(">I", len(items) - 1) + items[:-1])
    assert len(_read(ok)["k"]) == MAX_VALUES - 1
    too_many = table(short("k") + b"A" + struct.pack(">I", len(items)) + items)
    with pytest.raises(HeaderTableError, match=f"more than {MAX_VALUES} values"):
        _read(too_many)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (table(short("k") + b"Z"), "unknown field type 0x5a"),
        (table(short("k")), "a key without a value"),
        (table(short("k") + b"I\x00\x00"), "overruns"),
        (table(short("k") + b"S" + struct.pack(">I", 99) + b"abc"), "overruns"),
        (struct.pack(">I", 99) + b"\x01k", "overruns"),
        (table(short("k") + b"T" + struct.pack(">Q", 2**64 - 1)), "malformed header table"),
        (b"\x00\x00", "overruns"),
    ],
)
def test_malformed_tables_say_what_is_wrong(data: bytes, why: str) -> None:
    with pytest.raises(HeaderTableError, match=why):
        _read(data)


# -- what is read ----------------------------------------------------------------------


def test_values_read_as_rabbitmq_and_spring_write_them() -> None:
    headers = {
        "s": "värde",
        "b": b"\x00\xff",
        "neg": -5,
        "big": 2**40,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "d": decimal.Decimal("12.34"),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "x-death": [{"count": 2, "queue": "q", "routing-keys": ["a", "b"]}],
    }
    assert _read(_table(headers)) == headers
    # the narrow integer types and single floats other clients write
    raw = table(
        short("b") + b"b\xff" + short("B") + b"B\xff" + short("s") + b"s\xff\xfe"
        + short("U") + b"U\xff\xfe" + short("u") + b"u\xff\xfe" + short("i") + b"i\xff\xff\xff\xff"
        + short("f") + b"f" + struct.pack(">f", 1.5) + short("x") + b"x\x00\x00\x00\x01z"
        + short("S") + b"S\x00\x00\x00\x01\xff"
    )  # fmt: skip
    assert _read(raw) == {
        "b": -1, "B": 255, "s": -2, "U": -2, "u": 65534, "i": 2**32 - 1,
        "f": 1.5, "x": b"z", "S": b"\xff",
    }  # fmt: skip


def test_properties_around_an_unreadable_table_are_kept() -> None:
    encoded = properties(nested(MAX_DEPTH + 1), "application/json", message_id="m-1")
    props = properties_of(encoded, 0, len(encoded))
    assert (props.content_type, props.delivery_mode, props.message_id) == (
        "application/json",
        2,
        "m-1",
    )
    assert unreadable(props.headers) == f"header table nested deeper than {MAX_DEPTH} levels"
    assert list(props.headers) == [UNREADABLE]


def test_a_table_whose_end_is_unknown_keeps_the_properties_before_it() -> None:
    encoded = properties(struct.pack(">I", 10_000) + b"\x01k", "text/plain", message_id="m-2")
    props = properties_of(encoded, 0, len(encoded))
    assert props.content_type == "text/plain" and props.message_id is None
    assert "overruns" in (unreadable(props.headers) or "")


def test_readable_properties_match_what_pika_reads() -> None:
    props = TableProperties(
        content_type="text/plain",
        content_encoding="gzip",
        headers={"a": 1, "n": {"x": [1, "two"]}},
        delivery_mode=2,
        priority=3,
        correlation_id="c",
        reply_to="r",
        expiration="60000",
        message_id="m",
        timestamp=1_700_000_000,
        type="t",
        user_id="guest",
        app_id="app",
    )
    encoded = b"".join(props.encode())
    ours = properties_of(encoded, 0, len(encoded))
    theirs = BasicProperties()
    theirs.decode(encoded)
    assert ours.__dict__ == theirs.__dict__
    assert unreadable(ours.headers) is None


def test_the_connection_reads_content_headers_itself() -> None:
    """The adapter's frame reader hands pika a content header frame with our reading of
    the properties, and consumes exactly that frame."""
    from pika import frame

    deep = properties(nested(3000), message_id="m-3")
    raw = frame.Header(7, 1234, TableProperties()).marshal()
    # The same frame with hand-made properties: type, channel, size, class, weight, body
    # size, properties, frame end.
    payload = struct.pack(">HHQ", 60, 0, 1234) + deep
    raw = struct.pack(">BHI", 2, 7, len(payload)) + payload + b"\xce"

    class Conn:
        _frame_buffer = raw + b"next frame"

    consumed, got = CoalescingConnection._read_frame(Conn())  # type: ignore[arg-type]
    assert consumed == len(raw)
    assert isinstance(got, frame.Header) and got.channel_number == 7 and got.body_size == 1234
    assert got.properties.message_id == "m-3" and unreadable(got.properties.headers)


def test_the_marker_cannot_be_forged() -> None:
    assert unreadable({UNREADABLE: "text from the wire"}) is None
    assert unreadable({UNREADABLE: Unreadable("why")}) == "why"
    assert unreadable(None) is None and unreadable({}) is None


# -- fuzz ----------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
_tables = st.dictionaries(st.text(max_size=12), _values, max_size=8)


def _levels(value: Any) -> int:
    """Tables and arrays nested in a value, itself included."""
    if isinstance(value, dict):
        return 1 + max(map(_levels, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_levels, value), default=0)
    return 0


@given(_tables)
def test_fuzz_what_we_write_reads_back(headers: dict[str, Any]) -> None:
    encoded = _table(headers)
    if _levels(headers) > MAX_DEPTH:  # empty arrays nest without adding leaves
        with pytest.raises(HeaderTableError, match="nested deeper"):
            _read(encoded)
        return
    assert _read(encoded) == headers


@given(st.binary(max_size=400))
@example(nested(5000))
@example(table(short("k") + b"A" + struct.pack(">I", 5) + b"F\xff\xff\xff\xff"))
def test_fuzz_any_bytes_read_as_a_table_or_the_clean_error(data: bytes) -> None:
    try:
        got, end = read_table(data, 0, len(data))
    except HeaderTableError:
        return
    assert isinstance(got, dict) and 4 <= end <= len(data)


@given(_tables, st.data())
def test_fuzz_damaged_tables_read_or_fail_cleanly(headers: dict[str, Any], data: Any) -> None:
    encoded = bytearray(_table(headers))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(HeaderTableError):
        read_table(bytes(encoded), 0, len(encoded))


@given(st.binary(max_size=300))
@example(properties(nested(4000)))
@example(b"\xff\xff" * 3)
@example(b"\x20\x00" + struct.pack(">I", 2**32 - 1))
def test_fuzz_any_properties_read_without_an_exception(data: bytes) -> None:
    props = properties_of(data, 0, len(data))
    assert isinstance(props, BasicProperties)
    assert props.headers is None or isinstance(props.headers, dict)
