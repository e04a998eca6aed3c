"""Conversion between payload bytes and the types functions declare.

Decoders and encoders are built once per binding at start-up, from the parameter's type
hint and the binding's content type, so the hot path does no lookups. Nothing from a
message ever chooses a Python type: a payload becomes only what the function declares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from binder_core.errors import ConversionError
from binder_core.hookspecs import hookimpl
from binder_core.spi import Converter

JSON = "application/json"
TEXT = "text/plain"
OCTET = "application/octet-stream"

Decoder = Callable[[bytes], Any]
Encoder = Callable[[Any], bytes]


def media_type(content_type: str | bytes | None) -> str:
    """``application/json;charset=UTF-8`` -> ``application/json``. Header values written as
    JSON strings (``"application/json"``, as some Spring header mappers do) are unquoted."""
    if content_type is None:
        return ""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("utf-8", "replace")
    return content_type.strip().strip('"').split(";", 1)[0].strip().lower()


def is_json(mt: str) -> bool:
    """JSON and the ``+json`` structured-syntax family (``application/cloudevents+json``)."""
    return mt == JSON or mt.endswith("+json")


def _json_loads(payload: bytes) -> Any:
    return json.loads(payload)


def _json_dumps(value: Any) -> bytes:
    return pydantic_core.to_json(value)


@hookimpl
def message_converters() -> list[Converter]:
    """The core's own converters, registered through the same hook as any plugin's."""
    return [
        Converter(JSON, _json_loads, _json_dumps, "JSON (pydantic models, dataclasses, dicts)"),
        Converter(TEXT, lambda b: b.decode("utf-8"), lambda v: str(v).encode(), "UTF-8 text"),
        Converter(OCTET, bytes, bytes, "raw bytes"),
    ]


@lru_cache(maxsize=512)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _describe(exc: ValidationError | ValueError, target: Any) -> str:
    # The payload stays out of the message: it ends up in logs and dead-letter headers.
    if isinstance(exc, ValidationError):
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)[:5]
        )
    else:
        details = str(exc).split("\n", 1)[0]
    name = getattr(target, "__name__", str(target))
    return f"cannot convert payload to {name}: {details}"


def decoder_for(target: Any, content_type: str, converters: Mapping[str, Converter]) -> Decoder:
    """A function ``bytes -> target`` for one binding.

    ``target`` is the parameter's type hint (``Any`` when there is none); the content type
    is the binding's, used unless a message carries its own ``contentType`` header (see
    ``decode_with``).
    """
    mt = media_type(content_type)
    if target is bytes:
        return bytes
    if target is str:
        return _decode_text
    if target is Any or target is None:
        if is_json(mt):
            return _guard(_json_loads, "JSON")
        if mt.startswith("text/"):
            return _decode_text
        converter = converters.get(mt)
        return _guard(converter.decode, mt) if converter is not None and mt != OCTET else bytes
    adapter = _adapter(target)
    if is_json(mt):
        # The core validator itself: TypeAdapter.validate_json only forwards its defaults
        # to it, one more Python call per message.
        validate_json = adapter.validator.validate_json

        def from_json(payload: bytes) -> Any:
            try:
                return validate_json(payload)
            except ValidationError as exc:
                raise ConversionError(_describe(exc, target)) from None

        return from_json
    converter = converters.get(mt)
    if converter is None:
        raise ConversionError(f"no converter for content type '{mt}'")
    decode = converter.decode

    def via_converter(payload: bytes) -> Any:
        try:
            return adapter.validate_python(decode(payload))
        except ValidationError as exc:
            raise ConversionError(_describe(exc, target)) from None
        except (ValueError, TypeError) as exc:
            raise ConversionError(f"cannot decode {mt}: {exc}") from None

    return via_converter


def _decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConversionError(f"payload is not UTF-8 text: {exc.reason}") from None


def _guard(decode: Callable[[bytes], Any], what: str) -> Decoder:
    def guarded(payload: bytes) -> Any:
        try:
            return decode(payload)
        except (ValueError, TypeError) as exc:
            raise ConversionError(f"cannot decode {what}: {exc}") from None

    return guarded


def encoder_for(content_type: str, converters: Mapping[str, Converter]) -> Encoder:
    """A function ``value -> bytes`` for one output binding.

    ``bytes`` and ``str`` go out as they are whatever the content type (as Spring does);
    anything else is encoded by the content type's converter.
    """
    mt = media_type(content_type)
    if is_json(mt):
        encode: Callable[[Any], bytes] = pydantic_core.to_json
    else:
        converter = converters.get(mt)
        if converter is None:
            raise ConversionError(f"no converter for content type '{mt}'")
        raw = converter.encode
        if mt in (TEXT, OCTET):
            encode = raw
        else:

            def encode(value: Any) -> bytes:
                return raw(pydantic_core.to_jsonable_python(value))

    return ToBytes(encode, mt)


class ToBytes:
    """The encoder of one output binding: ``bytes`` and ``str`` as they are, anything else
    through ``encode_object`` (the content type's converter), with errors that name the
    problem.

    ``encode_object`` is public so the per-message path (``Output``) can call the converter
    itself for values it knows are neither bytes nor str, one Python call fewer per
    message, and come back here only when it raises.
    """

    __slots__ = ("encode_object", "media_type")

    def __init__(self, encode_object: Callable[[Any], bytes], media_type: str) -> None:
        self.encode_object = encode_object
        self.media_type = media_type

    def __call__(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        try:
            return self.encode_object(value)
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            raise ConversionError(
                f"cannot encode {type(value).__name__} as {self.media_type}: {exc}"
            ) from None
