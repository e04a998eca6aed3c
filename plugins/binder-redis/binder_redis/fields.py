"""Messages <-> stream entry fields.

A stream entry is a flat list of field/value byte strings. The payload goes in field
``payload``; each header goes in a field of its own, named ``<tag>:<header name>``, where
the tag keeps the header's Python type so it round-trips exactly:

====  =========  =========================================
tag   type       value on the wire
====  =========  =========================================
s     str        UTF-8
b     bytes      as is
i     int        decimal digits
f     float      ``repr`` (``0.1``, ``inf``, ``nan``)
t     bool       ``true`` / ``false``
j     list/dict  JSON
====  =========  =========================================

Values stay readable with ``redis-cli XRANGE``, and a producer in any language can write
them. A field without a known tag (written by some other client) becomes a header of that
name holding the raw bytes: nothing from an entry ever picks a Python type beyond these.

Both directions are cached by the exact headers: a stream's messages mostly carry the
same few, and a hit costs a dict copy instead of encoding each one again.

Reading is bounded: an entry with more than ``MAX_HEADERS`` headers, a JSON header nested
deeper than ``MAX_DEPTH``, or a field list that is not pairs cannot be read, and
``decode_fields`` says so with ``FieldsError`` (a ``ConversionError``: that one entry is
dead-lettered) rather than any other exception; a JSON value that does not parse stays
raw bytes, as before.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from binder_core.errors import ConversionError
from binder_core.limits import HEADER_COUNT, HEADER_NESTING_DEPTH

log = logging.getLogger(__name__)

PAYLOAD = b"payload"

#: Deepest nesting of lists and objects in a JSON header (the framework's limit). Python's
#: JSON parser recurses, so a header nested a few thousand levels deep raised
#: RecursionError.
MAX_DEPTH = HEADER_NESTING_DEPTH

#: Most headers read from one entry (the framework's limit).
MAX_HEADERS = HEADER_COUNT


class FieldsError(ConversionError):
    """A stream entry's fields cannot be read as a message (see ``decode_fields``)."""


_CACHE_SIZE = 1024
_out_cache: dict[tuple[tuple[str, Any], ...], list[bytes]] = {}
_in_cache: dict[tuple[bytes, ...], dict[str, Any]] = {}
_warned: set[str] = set()


def _bool(raw: bytes) -> bool:
    return raw == b"true"


def _json(raw: bytes) -> Any:
    # Decoded as json.loads would (UTF-8, -16 or -32), so the depth is counted on the very
    # characters it parses; a bad encoding is a ValueError like malformed JSON.
    text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise FieldsError(f"a JSON header is nested deeper than {MAX_DEPTH} levels")
    return json.loads(text)


_JSON_TOKENS = re.compile(r'[\\"\[\]{}]')


def _depth(text: str) -> int:
    """The deepest nesting of brackets outside strings in (possibly malformed) JSON: never
    less than what ``json.loads`` recurses into before it returns or stops at an error."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the position a backslash escapes
    for token in _JSON_TOKENS.finditer(text):
        at = token.start()
        if at == escaped_at:
            continue
        char = text[at]
        if in_string:
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "[" or char == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif char == "]" or char == "}":
            depth -= 1
    return deepest


_DECODERS: dict[bytes, Callable[[bytes], Any]] = {
    b"s:": lambda raw: raw.decode("utf-8", "replace"),
    b"b:": bytes,
    b"i:": int,
    b"f:": float,
    b"t:": _bool,
    b"j:": _json,
}


def _field(name: str, value: Any) -> tuple[bytes, bytes] | None:
    if isinstance(value, str):
        return b"s:" + name.encode(), value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return b"b:" + name.encode(), bytes(value)
    if isinstance(value, bool):  # before int: bool is an int
        return b"t:" + name.encode(), b"true" if value else b"false"
    if isinstance(value, int):
        return b"i:" + name.encode(), str(value).encode()
    if isinstance(value, float):
        return b"f:" + name.encode(), repr(value).encode()
    if isinstance(value, list | tuple | dict):
        return b"j:" + name.encode(), json.dumps(value).encode()
    return None


def _encode(headers: Mapping[str, Any]) -> list[bytes]:
    out: list[bytes] = []
    for name, value in headers.items():
        if value is None:
            continue
        try:
            pair = _field(name, value)
        except (TypeError, ValueError):
            pair = None
        if pair is None:
            if name not in _warned:
                _warned.add(name)
                log.warning(
                    "header %r of type %s cannot be sent to Redis (use str, bytes, int, float, "
                    "bool, or JSON-able lists and dicts); leaving it out",
                    name,
                    type(value).__name__,
                )
            continue
        out += pair
    return out


def encode_headers(headers: Mapping[str, Any]) -> list[bytes]:
    """The header fields of an entry, flat (``[field, value, ...]``); do not mutate."""
    if not headers:
        return []
    try:
        key = tuple(headers.items())
        cached = _out_cache.get(key)
    except TypeError:  # an unhashable value (list, dict): no caching
        return _encode(headers)
    if cached is None:
        cached = _encode(headers)
        if len(_out_cache) >= _CACHE_SIZE:
            _out_cache.clear()
        _out_cache[key] = cached
    return cached


def _decode(raw: Sequence[bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    it = iter(raw)
    for name, value in zip(it, it, strict=True):
        decode = _DECODERS.get(name[:2])
        if decode is None:
            out[name.decode("utf-8", "replace")] = value  # a foreign field: raw bytes
            continue
        try:
            out[name[2:].decode("utf-8", "replace")] = decode(value)
        except ValueError:
            out[name[2:].decode("utf-8", "replace")] = value
    return out


def decode_fields(fields: Sequence[bytes]) -> tuple[bytes, dict[str, Any]]:
    """(payload, headers) of an entry's flat field list.

    Raises ``FieldsError`` for an entry that cannot be read as a message (fields that do
    not pair up, more than ``MAX_HEADERS`` headers, a JSON header deeper than
    ``MAX_DEPTH``): the
    caller dead-letters that entry; no other exception comes out of here."""
    if len(fields) % 2:
        raise FieldsError(f"an entry of {len(fields)} fields: names and values do not pair up")
    if len(fields) > 2 * (MAX_HEADERS + 1):  # the payload and its headers
        raise FieldsError(f"an entry with more than {MAX_HEADERS} headers")
    if fields and fields[0] == PAYLOAD:
        payload, rest = fields[1], tuple(fields[2:])
    else:  # written by another client: find the payload wherever it is
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        payload = pairs.pop(PAYLOAD, b"")
        rest = tuple(x for pair in pairs.items() for x in pair)
    if not rest:
        return payload, {}
    cached = _in_cache.get(rest)
    if cached is None:
        cached = _decode(rest)
        if len(_in_cache) >= _CACHE_SIZE:
            _in_cache.clear()
        _in_cache[rest] = cached
    return payload, dict(cached)
