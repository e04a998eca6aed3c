"""Registers the ``application/x-msgpack`` converter through the public hook.

The converter turns payload bytes into plain data (dicts, lists, str, numbers, bytes) and
back; the core then validates that data into whatever the function declares (a pydantic
model, a dataclass, a dict ...), so a msgpack payload can never choose a Python type. For
the same reason msgpack's extension types are refused rather than decoded.
"""

from __future__ import annotations

from typing import Any

import msgpack

from binder_core.hookspecs import hookimpl
from binder_core.spi import Converter

CONTENT_TYPE = "application/x-msgpack"


def _no_extensions(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not supported")


def decode(payload: bytes) -> Any:
    """MessagePack bytes -> plain Python data (maps with any keys become dicts)."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=_no_extensions)


def encode(value: Any) -> bytes:
    """Plain Python data -> MessagePack bytes (the core hands over JSON-like data:
    models and dataclasses are already dicts here)."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


@hookimpl
def message_converters() -> list[Converter]:
    """The ``application/x-msgpack`` converter."""
    return [Converter(CONTENT_TYPE, decode, encode, "MessagePack (msgpack)")]
