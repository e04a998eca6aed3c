"""Message headers to AMQP properties and back, the way Spring's AMQP header mapper does it.

``contentType`` travels as the ``content_type`` property (where Spring reads and writes it);
every other header goes into the header table. pika cannot carry floating point headers:
its encoder refuses them and its decoder turns a double into a truncated integer (0.25
arrives as 0). Header tables are therefore encoded here, and re-decoded here when pika's
reading may have lost something, from the AMQP 0-9-1 specification with RabbitMQ's field
types (``d`` for doubles, as Spring AMQP writes them).
"""

from __future__ import annotations

import calendar
import datetime
import decimal
import struct
from collections.abc import Mapping
from typing import Any

from pika import BasicProperties
from pika.compat import long as _PikaLong

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


def needs_redecoding(table: Mapping[str, Any]) -> bool:
    """Whether pika's reading of a table may be wrong: it returns doubles (and 64-bit
    integers) as its own integer type, and nested tables are not worth inspecting."""
    for value in table.values():
        if type(value) is _PikaLong or isinstance(value, dict | list):
            return True
    return False


def headers_of(properties: bytes | bytearray | memoryview, offset: int) -> dict[str, Any] | None:
    """The header table of encoded basic properties starting at ``offset`` (None when the
    properties have none)."""
    (flags,) = struct.unpack_from(">H", properties, offset)
    offset += 2
    if not flags & (1 << 13):
        return None
    for bit in (1 << 15, 1 << 14):  # content_type, content_encoding come first
        if flags & bit:
            offset += 1 + properties[offset]
    table, _ = _read_table(properties, offset)
    return table


def _read_table(data: bytes | bytearray | memoryview, offset: int) -> tuple[dict[str, Any], int]:
    (size,) = struct.unpack_from(">I", data, offset)
    offset += 4
    end = offset + size
    table: dict[str, Any] = {}
    while offset < end:
        length = data[offset]
        key = bytes(data[offset + 1 : offset + 1 + length]).decode("utf-8", "replace")
        offset += 1 + length
        table[key], offset = _read_value(data, offset)
    return table, end


def _read_value(data: bytes | bytearray | memoryview, offset: int) -> tuple[Any, int]:
    kind = chr(data[offset])
    offset += 1
    fixed = _FIXED.get(kind)
    if fixed is not None:
        fmt, size = fixed
        (value,) = struct.unpack_from(fmt, data, offset)
        return (bool(value) if kind == "t" else value), offset + size
    if kind in "Sx":
        (size,) = struct.unpack_from(">I", data, offset)
        raw = bytes(data[offset + 4 : offset + 4 + size])
        if kind == "S":
            try:
                return raw.decode("utf-8"), offset + 4 + size
            except UnicodeDecodeError:
                return raw, offset + 4 + size
        return raw, offset + 4 + size
    if kind == "F":
        return _read_table(data, offset)
    if kind == "A":
        (size,) = struct.unpack_from(">I", data, offset)
        end = offset + 4 + size
        offset += 4
        items = []
        while offset < end:
            item, offset = _read_value(data, offset)
            items.append(item)
        return items, end
    if kind == "D":
        scale, raw_int = struct.unpack_from(">Bi", data, offset)
        return decimal.Decimal(raw_int).scaleb(-scale), offset + 5
    if kind == "T":
        (seconds,) = struct.unpack_from(">Q", data, offset)
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC), offset + 8
    if kind == "V":
        return None, offset
    raise ValueError(f"unknown AMQP field type {kind!r}")


_FIXED = {
    "t": (">B", 1),
    "b": (">b", 1),
    "B": (">B", 1),
    "s": (">h", 2),
    "u": (">H", 2),
    "I": (">i", 4),
    "i": (">I", 4),
    "l": (">q", 8),
    "L": (">q", 8),
    "f": (">f", 4),
    "d": (">d", 8),
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
