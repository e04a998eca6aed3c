"""Message headers to AMQP properties and back, the way Spring's AMQP header mapper does it.

``contentType`` travels as the ``content_type`` property (where Spring reads and writes it);
every other header goes into the header table. pika cannot carry floating point headers:
its encoder refuses them and its decoder turns a double into a truncated integer (0.25
arrives as 0), and its recursive decoder lets one crafted message nested a few thousand
levels deep break the connection. Header tables are therefore encoded and read here, from
the AMQP 0-9-1 specification with RabbitMQ's field types (``d`` for doubles, as Spring AMQP
writes them); reading is bounded (``MAX_DEPTH``, ``MAX_HEADERS``, ``MAX_VALUES``), and a
table that cannot be read is delivered as a marker (``unreadable``) instead.
"""

from __future__ import annotations

import calendar
import datetime
import decimal
import struct
from collections.abc import Mapping
from typing import Any

from pika import BasicProperties

from binder_core.errors import ConversionError
from binder_core.limits import HEADER_COUNT, HEADER_NESTING_DEPTH
from binder_core.message import CONTENT_TYPE

_PACK_I = struct.Struct(">I").pack
_PACK_H = struct.Struct(">H").pack
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

#: Distinct content types whose properties a producer keeps ready-made.
_CACHE_LIMIT = 32


def amqp_value(value: Any) -> Any:
    """A header value a field table can carry: text, bytes, booleans, integers, floats,
    decimals, datetimes, None, lists and tables pass; anything else travels as its text."""
    if value is None or isinstance(value, str | bytes | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): amqp_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [amqp_value(v) for v in value]
    if isinstance(value, decimal.Decimal | datetime.datetime):
        return value
    return str(value)


#: Deepest nesting of tables and arrays read from a message, the header table itself
#: being level 1 (the framework's limit; RabbitMQ's own ``x-death`` is 3 deep).
MAX_DEPTH = HEADER_NESTING_DEPTH

#: Most headers (keys of the header table itself) read from a message.
MAX_HEADERS = HEADER_COUNT

#: Most values at every level together (keys of every table, items of every array). The
#: frame size bounds them anyway (some 60,000 in RabbitMQ's default 128 KiB frame); this
#: keeps the work a single message costs small whatever its shape.
MAX_VALUES = 10 * HEADER_COUNT

#: The header that replaces a table we cannot read (see ``unreadable``).
UNREADABLE = "x-binder-unreadable-headers"


class HeaderTableError(ConversionError):
    """A message's header table cannot be read: malformed, nested deeper than
    ``MAX_DEPTH``, or holding more than ``MAX_HEADERS`` headers or ``MAX_VALUES`` values.
    The message itself is kept (it is dead-lettered with this reason); the connection is
    never affected."""


class Unreadable(str):
    """Why a header table could not be read: the value of the ``UNREADABLE`` marker.

    Its own type, rather than text, so that a publisher cannot forge the marker: nothing
    read from the wire is ever an ``Unreadable``."""

    __slots__ = ()


def unreadable_marker(reason: str) -> dict[str, Any]:
    """The header table delivered instead of one that cannot be read."""
    return {UNREADABLE: Unreadable(reason)}


def unreadable(headers: Mapping[str, Any] | None) -> str | None:
    """Why the header table of a delivery could not be read, or None for a readable one.

    A consumer dead-letters such a delivery as a conversion failure with this reason
    instead of processing it; its body is intact."""
    if not headers:
        return None
    reason = headers.get(UNREADABLE)
    return str(reason) if isinstance(reason, Unreadable) else None


def headers_of(properties: bytes | bytearray | memoryview, offset: int) -> dict[str, Any] | None:
    """The header table of encoded basic properties starting at ``offset`` (None when the
    properties have none). Raises ``HeaderTableError`` when it cannot be read."""
    data = bytes(properties)
    try:
        (flags,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if not flags & (1 << 13):
            return None
        for bit in (1 << 15, 1 << 14):  # content_type, content_encoding come first
            if flags & bit:
                offset += 1 + data[offset]
    except (struct.error, IndexError):
        raise HeaderTableError("properties end before their header table") from None
    table, _ = read_table(data, offset, len(data))
    return table


def read_table(data: bytes, offset: int, limit: int) -> tuple[dict[str, Any], int]:
    """Read the field table at ``offset`` of ``data`` (ending by ``limit`` at the latest);
    return it and the offset after it.

    Iterative, with the nesting depth, the number of values and every length checked
    against the bytes there are, so any input gives a table or ``HeaderTableError``: never
    a recursion, an exception of another kind, or a read past ``limit``.
    """
    try:
        return _read_table(data, offset, min(limit, len(data)))
    except HeaderTableError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError, OSError, ArithmeticError) as exc:
        # A timestamp out of range, a decimal the decimal module refuses: the table is
        # malformed, whatever the detail.
        raise HeaderTableError(f"malformed header table ({type(exc).__name__})") from None


def _read_table(data: bytes, offset: int, limit: int) -> tuple[dict[str, Any], int]:
    size = _length(data, offset, limit)
    offset += 4
    root: dict[str, Any] = {}
    end = offset + size
    # One entry per open table or array: (the container, where its encoding ends).
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(root, end)]
    values = 0
    unpack = struct.unpack_from
    while stack:
        container, end = stack[-1]
        if offset >= end:
            if offset > end:
                raise HeaderTableError("malformed header table: a value overruns its table")
            stack.pop()
            continue
        key = ""
        if type(container) is dict:
            length = data[offset]
            offset += 1 + length
            if offset > end:
                raise HeaderTableError("malformed header table: a key overruns its table")
            key = data[offset - length : offset].decode("utf-8", "replace")
        if offset >= end:
            raise HeaderTableError("malformed header table: a key without a value")
        values += 1
        if values > MAX_VALUES:
            raise HeaderTableError(f"header table holds more than {MAX_VALUES} values")
        if container is root and len(root) >= MAX_HEADERS:
            raise HeaderTableError(f"header table holds more than {MAX_HEADERS} headers")
        kind = data[offset]
        offset += 1
        value: Any
        fixed = _FIXED.get(kind)
        if fixed is not None:
            fmt, width = fixed
            if offset + width > end:
                raise HeaderTableError("malformed header table: a value overruns its table")
            (value,) = unpack(fmt, data, offset)
            offset += width
            if kind == _BOOL:
                value = bool(value)
        elif kind in (_TABLE, _ARRAY):
            size = _length(data, offset, end)
            offset += 4
            if len(stack) >= MAX_DEPTH:
                raise HeaderTableError(f"header table nested deeper than {MAX_DEPTH} levels")
            value = {} if kind == _TABLE else []
            stack.append((value, offset + size))
        elif kind in (_LONGSTR, _BYTES):
            size = _length(data, offset, end)
            offset += 4 + size
            value = data[offset - size : offset]
            if kind == _LONGSTR:
                value = _text(value)
        elif kind == _DECIMAL:
            if offset + 5 > end:
                raise HeaderTableError("malformed header table: a value overruns its table")
            scale, raw_int = unpack(">Bi", data, offset)
            offset += 5
            value = decimal.Decimal(raw_int).scaleb(-scale)
        elif kind == _TIMESTAMP:
            if offset + 8 > end:
                raise HeaderTableError("malformed header table: a value overruns its table")
            (seconds,) = unpack(">Q", data, offset)
            offset += 8
            value = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        elif kind == _VOID:
            value = None
        else:
            raise HeaderTableError(f"malformed header table: unknown field type {kind:#04x}")
        if isinstance(container, dict):
            container[key] = value
        else:
            container.append(value)
    return root, offset


_CONTENT_TYPE_FLAG, _CONTENT_ENCODING_FLAG, _HEADERS_FLAG = 1 << 15, 1 << 14, 1 << 13


def properties_of(data: bytes, start: int, end: int) -> BasicProperties:
    """The basic properties encoded in ``data[start:end]`` (a content header frame's), with
    the header table read by ``read_table``. Never raises: a header table that cannot be
    read is replaced by the ``unreadable`` marker, and properties that cannot be read at
    all become just that marker, so one malformed message never breaks a connection."""
    flags, props_at = _flag_words(data, start, end)
    offset = props_at
    if flags is None:
        return BasicProperties(headers=unreadable_marker("malformed message properties"))
    if not flags & _HEADERS_FLAG:
        return _pika_properties(data[start:end])
    for bit in (_CONTENT_TYPE_FLAG, _CONTENT_ENCODING_FLAG):  # the two before the table
        if flags & bit:
            offset += 1 + data[offset] if offset < end else end + 1
    if offset > end:
        return BasicProperties(headers=unreadable_marker("malformed message properties"))
    table_at = offset
    head = data[start + 2 : table_at]  # more flag words, content type and encoding
    table: dict[str, Any]
    after: int | None
    try:
        table, after = read_table(data, table_at, end)
    except HeaderTableError as exc:
        table = unreadable_marker(str(exc))
        after = _skip_table(data, table_at, end)
    if after is None:  # where the table ends is unknown: keep what comes before it
        kept = flags & (_CONTENT_TYPE_FLAG | _CONTENT_ENCODING_FLAG)
        rest = _PACK_H(kept) + data[props_at:table_at]
    else:
        rest = _PACK_H(flags & ~_HEADERS_FLAG) + head + data[after:end]
    props = _pika_properties(rest)
    props.headers = table
    return props


def _flag_words(data: bytes, offset: int, end: int) -> tuple[int | None, int]:
    """The first property flag word (the only one basic properties use) and the offset
    after every flag word; None when they run past ``end``."""
    flags: int | None = None
    while True:
        if offset + 2 > end:
            return None, offset
        (word,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if flags is None:
            flags = word
        if not word & 1:
            return flags, offset


def _skip_table(data: bytes, offset: int, end: int) -> int | None:
    """Where a table ends by its declared size, if that lies within ``end``."""
    if offset + 4 > end:
        return None
    (size,) = struct.unpack_from(">I", data, offset)
    after = offset + 4 + int(size)
    return after if after <= end else None


def _pika_properties(encoded: bytes) -> BasicProperties:
    """pika's reading of properties without a header table (nothing there can recurse);
    when they cannot be read, the marker alone."""
    props = BasicProperties()
    try:
        props.decode(encoded)
    except Exception:  # pika's decoder, on arbitrary bytes: any failure means malformed
        return BasicProperties(headers=unreadable_marker("malformed message properties"))
    return props


def _text(raw: bytes) -> str | bytes:
    """A long string as text, or as the bytes it is when it is not UTF-8 (as pika reads it)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _length(data: bytes, offset: int, end: int) -> int:
    """A 32-bit length at ``offset`` whose bytes must lie within ``end``."""
    if offset + 4 > end:
        raise HeaderTableError("malformed header table: a length overruns its table")
    (size,) = struct.unpack_from(">I", data, offset)
    if offset + 4 + size > end:
        raise HeaderTableError("malformed header table: a length overruns its table")
    return int(size)


_BOOL, _TABLE, _ARRAY, _LONGSTR, _BYTES = ord("t"), ord("F"), ord("A"), ord("S"), ord("x")
_DECIMAL, _TIMESTAMP, _VOID = ord("D"), ord("T"), ord("V")

#: Fixed-width field types: RabbitMQ's reading of AMQP 0-9-1 (``l`` and ``L`` are both
#: signed 64-bit, ``s`` and ``U`` both signed 16-bit, ``f`` and ``d`` real floats).
_FIXED = {
    ord("t"): (">B", 1),
    ord("b"): (">b", 1),
    ord("B"): (">B", 1),
    ord("s"): (">h", 2),
    ord("U"): (">h", 2),
    ord("u"): (">H", 2),
    ord("I"): (">i", 4),
    ord("i"): (">I", 4),
    ord("l"): (">q", 8),
    ord("L"): (">q", 8),
    ord("f"): (">f", 4),
    ord("d"): (">d", 8),
}


class TableProperties(BasicProperties):  # type: ignore[misc]
    """``BasicProperties`` encoded by this module, so header tables may hold floats."""

    def encode(self) -> list[bytes]:
        flags = 0
        pieces: list[bytes] = [b""]
        for bit, name, kind in _FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            flags |= bit
            if kind == "s":
                _short(pieces, value)
            elif kind == "o":
                pieces.append(bytes((value,)))
            elif kind == "t":
                pieces.append(_table(value))
            else:  # timestamp
                pieces.append(struct.pack(">Q", _seconds(value)))
        pieces[0] = _PACK_H(flags)
        return pieces


# (flag bit, attribute, kind): s shortstr, o octet, t table, q timestamp; AMQP 0-9-1 order.
_FIELDS = (
    (1 << 15, "content_type", "s"),
    (1 << 14, "content_encoding", "s"),
    (1 << 13, "headers", "t"),
    (1 << 12, "delivery_mode", "o"),
    (1 << 11, "priority", "o"),
    (1 << 10, "correlation_id", "s"),
    (1 << 9, "reply_to", "s"),
    (1 << 8, "expiration", "s"),
    (1 << 7, "message_id", "s"),
    (1 << 6, "timestamp", "q"),
    (1 << 5, "type", "s"),
    (1 << 4, "user_id", "s"),
    (1 << 3, "app_id", "s"),
    (1 << 2, "cluster_id", "s"),
)


def _short(pieces: list[bytes], value: str | bytes) -> None:
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {data[:40]!r}...")
    pieces.append(bytes((len(data),)))
    pieces.append(data)


def _seconds(value: Any) -> int:
    if isinstance(value, datetime.datetime):
        return calendar.timegm(value.utctimetuple())
    return int(value)


def _table(table: Mapping[str, Any]) -> bytes:
    pieces: list[bytes] = []
    for key, value in table.items():
        _short(pieces, str(key))
        _value(pieces, value)
    body = b"".join(pieces)
    return _PACK_I(len(body)) + body


def _value(pieces: list[bytes], value: Any) -> None:
    if isinstance(value, str):
        data = value.encode()
        pieces.append(b"S" + _PACK_I(len(data)))
        pieces.append(data)
    elif isinstance(value, bytes | bytearray):
        pieces.append(b"x" + _PACK_I(len(value)))
        pieces.append(bytes(value))
    elif isinstance(value, bool):
        pieces.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, int):
        if _INT32[0] <= value <= _INT32[1]:
            pieces.append(struct.pack(">ci", b"I", value))
        elif _INT64[0] <= value <= _INT64[1]:
            pieces.append(struct.pack(">cq", b"l", value))
        else:
            raise ValueError(f"integer header value out of the 64-bit range: {value}")
    elif isinstance(value, float):
        pieces.append(struct.pack(">cd", b"d", value))
    elif isinstance(value, decimal.Decimal):
        exponent = value.as_tuple().exponent
        scale = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        raw = int(value.scaleb(scale))
        pieces.append(struct.pack(">cBi", b"D", scale, raw))
    elif isinstance(value, datetime.datetime):
        pieces.append(struct.pack(">cQ", b"T", _seconds(value)))
    elif isinstance(value, Mapping):
        pieces.append(b"F" + _table(value))
    elif isinstance(value, list | tuple):
        inner: list[bytes] = []
        for item in value:
            _value(inner, item)
        data = b"".join(inner)
        pieces.append(b"A" + _PACK_I(len(data)))
        pieces.append(data)
    elif value is None:
        pieces.append(b"V")
    else:
        raise ValueError(f"no AMQP field type for {type(value).__name__}")


class PropertiesMaker:
    """Builds a producer's message properties; the common case (only ``contentType``)
    reuses one ready-made object per content type."""

    def __init__(self, delivery_mode: int) -> None:
        self._mode = delivery_mode
        self._cache: dict[str, BasicProperties] = {}

    def __call__(self, headers: Mapping[str, Any]) -> BasicProperties:
        if len(headers) == 1:
            ct = headers.get(CONTENT_TYPE)
            if isinstance(ct, str):
                cached = self._cache.get(ct)
                if cached is None:
                    cached = BasicProperties(content_type=ct, delivery_mode=self._mode)
                    if len(self._cache) < _CACHE_LIMIT:
                        self._cache[ct] = cached
                return cached
        content_type = None
        table: dict[str, Any] = {}
        for key, value in headers.items():
            if key == CONTENT_TYPE:
                content_type = None if value is None else str(value)
            else:
                table[key] = amqp_value(value)
        return TableProperties(
            content_type=content_type, delivery_mode=self._mode, headers=table or None
        )
