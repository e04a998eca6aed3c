"""Message headers <-> Kafka record headers, the way Spring Cloud Stream writes them.

Spring's Kafka binder (``BinderHeaderMapper``) writes every header as bytes and lists the
Java type of each non-``byte[]`` header in a JSON header ``spring_json_header_types``
(``{"contentType":"java.lang.String","retries":"java.lang.Integer"}``). Strings go out as
raw UTF-8, except ``contentType``, which Spring holds as a MimeType and therefore writes
JSON-quoted (``"application/json"``); numbers and booleans go out as JSON. Its reader decodes
each typed header by that map (a ``java.lang.String`` value that does not start with a
quote is taken raw) and hands every untyped header over as ``byte[]``.

We write exactly that, so a Spring app reads our ``str``/``int``/``float``/``bool`` headers
as String/Integer or Long/Double/Boolean, and we read Spring's (and our own) back into the
same Python types. ``bytes`` travel raw and untyped, both ways. Nothing here chooses a
Python type from a class name beyond these few, so no header can make us build an object.

Both directions are cached by the exact headers: a stream's messages mostly carry the same
few headers, and a cache hit costs one dict copy instead of a JSON round trip. Only small
header lists are cached, so records with large headers cannot fill memory through it.

Reading is bounded (``binder_core.limits``): a record with more than ``HEADER_COUNT``
headers, or a typed header nested deeper than ``HEADER_NESTING_DEPTH``, cannot be read, and
neither can anything else that goes wrong while reading; ``decoded`` then raises
``UnreadableHeaders``, a ``ConversionError`` of that one record, which is dead-lettered
with the reason while the partition goes on.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core

from binder_core.errors import ConversionError
from binder_core.limits import HEADER_COUNT, HEADER_NESTING_DEPTH
from binder_core.message import CONTENT_TYPE

log = logging.getLogger(__name__)

JSON_TYPES = "spring_json_header_types"

#: Headers Spring never maps to a record (they describe the in-memory message).
_NEVER = frozenset({"id", "timestamp", "deliveryAttempt", "nativeHeadersPresent"})

_STRING = "java.lang.String"
_CACHE_SIZE = 1024
#: Largest header list (in headers, and in bytes of names and values) that is cached.
_CACHED_HEADERS = 32
_CACHED_BYTES = 4096
#: Header names that could not be sent and were reported: bounded, a warning each.
_WARNED_NAMES = 1000

RawHeaders = Sequence[tuple[str, bytes]]

_out_cache: dict[tuple[tuple[str, Any], ...], list[tuple[str, bytes]]] = {}
_in_cache: dict[RawHeaders, dict[str, Any]] = {}
_types_cache: dict[bytes, dict[str, str]] = {}
_warned: set[str] = set()


class UnreadableHeaders(ConversionError):
    """A record's headers cannot be read: too many, nested too deeply, or malformed. It is
    that one record's conversion failure (dead-lettered with this reason); the partition
    goes on."""


def _java(name: str, value: Any) -> tuple[bytes, str | None] | None:
    """One header value as Spring would write it: (bytes, Java type or None for raw)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), None
    if isinstance(value, str):
        if name == CONTENT_TYPE:
            return json.dumps(value).encode(), _STRING
        return value.encode("utf-8"), _STRING
    if isinstance(value, bool):
        return (b"true" if value else b"false"), "java.lang.Boolean"
    if isinstance(value, int):
        kind = "java.lang.Integer" if -(2**31) <= value < 2**31 else "java.lang.Long"
        return str(value).encode(), kind
    # allow_nan=False: Jackson, on the Spring side, refuses NaN and Infinity.
    if isinstance(value, float):
        return json.dumps(value, allow_nan=False).encode(), "java.lang.Double"
    if isinstance(value, list | tuple):
        return json.dumps(list(value), allow_nan=False).encode(), "java.util.ArrayList"
    if isinstance(value, dict):
        return json.dumps(value, allow_nan=False).encode(), "java.util.LinkedHashMap"
    return None


def _encode(headers: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    types: dict[str, str] = {}
    for name, value in headers.items():
        if value is None or name == JSON_TYPES or name in _NEVER:
            continue
        try:
            mapped = _java(name, value)
        except (TypeError, ValueError, RecursionError):
            mapped = None
        if mapped is None:
            if name not in _warned and len(_warned) < _WARNED_NAMES:
                _warned.add(name)
                log.warning(
                    "header %r of type %s cannot be sent to Kafka (use str, bytes, int, "
                    "float, bool, or JSON-able lists and dicts); leaving it out",
                    name,
                    type(value).__name__,
                )
            continue
        data, java = mapped
        out.append((name, data))
        if java is not None:
            types[name] = java
    if types:
        out.append((JSON_TYPES, json.dumps(types, separators=(",", ":")).encode()))
    return out


def encode_headers(headers: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """Record headers for a message's headers (the returned list must not be mutated)."""
    if not headers:
        return []
    try:
        key = tuple(headers.items())
        cached = _out_cache.get(key)
    except TypeError:  # an unhashable value (list, dict): no caching
        return _encode(headers)
    if cached is None:
        cached = _encode(headers)
        if len(cached) <= _CACHED_HEADERS and _size(cached) <= _CACHED_BYTES:
            if len(_out_cache) >= _CACHE_SIZE:
                _out_cache.clear()
            _out_cache[key] = cached
    return cached


def _size(raw: RawHeaders) -> int:
    return sum(len(name) + len(value or b"") for name, value in raw)


def _types(raw: bytes) -> dict[str, str]:
    """``spring_json_header_types``: the names and Java types it lists. It never raises:
    a map that cannot be read types nothing, and every header is then taken as bytes."""
    found = _types_cache.get(raw)
    if found is None:
        try:
            parsed = pydantic_core.from_json(raw)
        except ValueError:
            parsed = None
        found = (
            {k: v for k, v in parsed.items() if isinstance(v, str)}
            if isinstance(parsed, dict)
            else {}
        )
        if len(raw) <= _CACHED_BYTES:
            if len(_types_cache) >= _CACHE_SIZE:
                _types_cache.clear()
            _types_cache[raw] = found
    return found


#: A JSON string (quotes and escapes included); what is left is structure and scalars.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


def _too_deep(value: bytes) -> bool:
    """Whether the JSON in ``value`` nests deeper than ``HEADER_NESTING_DEPTH``. Counting
    brackets is enough for almost every header; only one with many brackets is scanned."""
    if value.count(b"[") + value.count(b"{") <= HEADER_NESTING_DEPTH:
        return False
    depth = 0
    for byte in _JSON_STRING.sub(b"", value):
        if byte in _OPEN:
            depth += 1
            if depth > HEADER_NESTING_DEPTH:
                return True
        elif byte in _CLOSE:
            depth -= 1
    return False


def _json(value: bytes) -> Any:
    """Parsed JSON, or ``value`` itself when it is not JSON (as Spring keeps the bytes)."""
    try:
        return pydantic_core.from_json(value)
    except ValueError:
        return value


def _typed(name: str, value: bytes, java: str) -> Any:
    """A typed header value as Spring's reader would give it, in Python terms."""
    if java == _STRING:
        if value[:1] == b'"':
            text = _json(value)
            return text if isinstance(text, str) else value.decode("utf-8", "replace")
        return value.decode("utf-8", "replace")
    if _too_deep(value):
        raise UnreadableHeaders(
            f"header {_shown(name)} ({java}) is nested deeper than {HEADER_NESTING_DEPTH} levels"
        )
    parsed = _json(value)
    if parsed is value:
        return value
    if java in ("java.lang.Integer", "java.lang.Long", "java.lang.Short", "java.lang.Byte"):
        return parsed if isinstance(parsed, int) and not isinstance(parsed, bool) else value
    if java in ("java.lang.Double", "java.lang.Float"):
        return float(parsed) if isinstance(parsed, int | float) else value
    if java == "java.lang.Boolean":
        return parsed if isinstance(parsed, bool) else value
    if isinstance(parsed, str | list | dict):
        return parsed  # MimeType, UUID, collections...: plain JSON data, never an object
    return value


def _shown(name: str) -> str:
    return repr(name if len(name) <= 64 else f"{name[:64]}...")


def _decode(raw: RawHeaders) -> dict[str, Any]:
    if len(raw) > HEADER_COUNT:
        raise UnreadableHeaders(
            f"the record has {len(raw)} headers, more than the {HEADER_COUNT} accepted"
        )
    types: dict[str, str] = {}
    for name, value in raw:
        if name == JSON_TYPES and value:
            types = _types(value)
    out: dict[str, Any] = {}
    for name, value in raw:
        if name == JSON_TYPES:
            continue
        if value is None:
            out[name] = b""
            continue
        java = types.get(name)
        out[name] = bytes(value) if java is None else _typed(name, value, java)
    return out


def _read(raw: RawHeaders) -> dict[str, Any]:
    try:
        return _decode(raw)
    except (UnreadableHeaders, MemoryError):
        raise
    except Exception as exc:  # headers from the wire are never allowed to stop a consumer
        raise UnreadableHeaders(
            f"the record's headers cannot be read: {type(exc).__name__}"
        ) from None


def decoded(raw: RawHeaders) -> dict[str, Any]:
    """The headers of a record, shared through the cache: the caller must not change the
    dict (``decode_headers`` gives a copy). Raises ``UnreadableHeaders``, and nothing
    else, when they cannot be read."""
    try:
        cached = _in_cache.get(raw)
    except TypeError:
        return _read(raw)
    if cached is None:
        cached = _read(raw)
        if len(raw) <= _CACHED_HEADERS and _size(raw) <= _CACHED_BYTES:
            if len(_in_cache) >= _CACHE_SIZE:
                _in_cache.clear()
            _in_cache[raw] = cached
    return cached


def decode_headers(raw: RawHeaders) -> dict[str, Any]:
    """A fresh headers dict for a record's headers (the last of repeated names wins, as
    Spring's ``lastHeader``); raises ``UnreadableHeaders`` as ``decoded`` does."""
    if not raw:
        return {}
    return dict(decoded(raw))


def merge_types(raw: RawHeaders, extra: Mapping[str, str]) -> bytes:
    """``spring_json_header_types`` of ``raw`` with ``extra`` entries added."""
    types: dict[str, str] = {}
    for name, value in raw:
        if name == JSON_TYPES and value:
            types.update(_types(value))
    types.update(extra)
    return json.dumps(types, separators=(",", ":")).encode()
