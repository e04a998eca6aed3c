"""Conversion between payload bytes and the types functions declare.

Decoders and encoders are built once per binding at start-up, from the parameter's type
hint and the binding's content type, so the hot path does no lookups. Nothing from a
message ever chooses a Python type: a payload becomes only what the function declares.

Every decoder and encoder fails in one way only, ``ConversionError``, whatever went wrong
underneath (bad UTF-8, bad JSON, nesting too deep, a validator, a plugin's converter): a
conversion failure is that one message's outcome, dead-lettered without retries, never a
crash of the consumer and never mistaken for a failure of the function. ``MemoryError``
alone is left alone: it says more about the process than about the message.

Reasons are written to be logged and to travel in dead-letter headers, so they never
quote the payload: positions and types, not values. What an unknown converter or
validator said in its own words is logged at DEBUG only.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any, get_args, get_origin, get_type_hints

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from binder_core.errors import ConversionError
from binder_core.hookspecs import hookimpl
from binder_core.message import CONTENT_TYPE
from binder_core.spi import Converter

log = logging.getLogger(__name__)

JSON = "application/json"
TEXT = "text/plain"
OCTET = "application/octet-stream"

Decoder = Callable[[bytes], Any]
Encoder = Callable[[Any], bytes]

_BYTES_LIKE = (bytes, bytearray, memoryview)

#: The characters a JSON document can start with (after white space).
_JSON_START = frozenset('{["-0123456789tfn')

#: Longest piece of a validation error location shown in a reason (a location step can
#: be a key taken from the payload).
_LOC_STEP = 40
_REASON = 500


def media_type(content_type: object) -> str:
    """``application/json;charset=UTF-8`` -> ``application/json``. Header values written as
    JSON strings (``"application/json"``, as some Spring header mappers do) are unquoted.

    A ``contentType`` header that is not text (a Kafka header typed as a map, a number)
    raises ``ConversionError``: the message says nothing usable about its own format, so
    it fails as that one message's conversion failure.
    """
    if content_type is None:
        return ""
    if isinstance(content_type, _BYTES_LIKE):
        content_type = bytes(content_type).decode("utf-8", "replace")
    elif not isinstance(content_type, str):
        raise ConversionError(
            f"the {CONTENT_TYPE} header is a {type(content_type).__name__}, not a media type "
            "such as application/json"
        )
    return content_type.strip().strip('"').split(";", 1)[0].strip().lower()


def is_json(mt: str) -> bool:
    """JSON and the ``+json`` structured-syntax family (``application/cloudevents+json``)."""
    return mt == JSON or mt.endswith("+json")


def is_json_text(text: str) -> bool:
    """Whether ``text`` is one JSON document (NaN and Infinity are not JSON).

    Most text that is not JSON is told by its first character, without parsing.
    """
    if text.lstrip(" \t\r\n")[:1] not in _JSON_START:
        return False
    try:
        pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError:
        return False
    return True


def _json_loads(payload: bytes) -> Any:
    # pydantic-core's parser, the one typed parameters use too: it recurses in Rust with
    # a depth limit, so a deeply nested document is refused instead of exhausting
    # Python's stack. Its messages give a position, never the payload.
    try:
        return pydantic_core.from_json(payload)
    except ValueError as exc:
        raise ConversionError(f"payload is not JSON: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:
        raise ConversionError(f"payload is not JSON: {_reason(exc)}") from None


def to_json(value: Any) -> bytes:
    """``value`` as JSON bytes; NaN and Infinity are refused, since they are not JSON and
    a strict reader (Jackson, for one) rejects the whole message. (A pydantic model writes
    them as its ``ser_json_inf_nan`` setting says: ``null`` unless configured.)"""
    data = pydantic_core.to_json(value)
    finite = _FINITE.get(type(value))
    if finite is None:
        finite = _FINITE[type(value)] = _finite_by_type(type(value))
    # Only the words matter, and a search for one byte is cheap: the search for the whole
    # words, and the parse that tells a number from text, happen only when both could.
    if not finite and ((b"N" in data and b"NaN" in data) or (b"I" in data and b"Infinity" in data)):
        try:
            pydantic_core.from_json(data, allow_inf_nan=False)
        except ValueError as exc:
            why = (
                "it is nested too deeply"
                if "recursion" in str(exc)
                else "it holds NaN or Infinity, which JSON cannot carry (use None, or a "
                "finite number)"
            )
            raise ConversionError(f"cannot encode {type(value).__name__} as JSON: {why}") from None
    return data


#: Per type of value: whether pydantic-core can only write finite numbers for it.
_FINITE: dict[type, bool] = {}


def _finite_by_type(tp: type, seen: set[type] | None = None) -> bool:
    """Whether every float in a ``tp`` instance is written as a number or ``null``: true
    for a pydantic model left at ``ser_json_inf_nan='null'`` (the default) whose fields can
    only hold such models, dataclasses and plain data. Anything unknown is false, which
    only means the output gets looked at."""
    seen = set() if seen is None else seen
    if tp in seen:
        return True
    seen.add(tp)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return False
    if tp.model_config.get("ser_json_inf_nan", "null") == "constants":
        return False
    return all(_field_finite(f.annotation, seen) for f in tp.model_fields.values())


def _field_finite(annotation: Any, seen: set[type]) -> bool:
    args = get_args(annotation)
    if args:
        return _field_finite(get_origin(annotation), seen) and all(
            _field_finite(a, seen) for a in args if a is not Ellipsis
        )
    if annotation is None or annotation is type(None):
        return True
    if annotation is Any or annotation is object or not isinstance(annotation, type):
        return False  # a type variable, a forward reference: could hold anything
    if issubclass(annotation, BaseModel):
        return _finite_by_type(annotation, seen)
    if dataclasses.is_dataclass(annotation):
        # Written under the enclosing model's setting, unless a field holds a model.
        hints = get_type_hints(annotation)
        return all(_field_finite(hints[f.name], seen) for f in dataclasses.fields(annotation))
    return True


def _text(value: Any) -> bytes:
    """``text/plain`` for what is not already text: numbers and booleans as their JSON
    spelling (``42``, ``1.5``, ``true``, as Java writes them); anything else is refused
    rather than sent as its ``repr``."""
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int | float):
        return pydantic_core.to_json(value)
    if isinstance(value, Decimal):
        return str(value).encode()
    raise ConversionError(
        f"cannot send a {type(value).__name__} as text/plain: return a str (formatted as it "
        "should be read), or set the binding's content-type to application/json"
    )


def _octets(value: Any) -> bytes:
    raise ConversionError(
        f"cannot send a {type(value).__name__} as application/octet-stream: return bytes"
    )


@hookimpl
def message_converters() -> list[Converter]:
    """The core's own converters, registered through the same hook as any plugin's."""
    return [
        Converter(JSON, _json_loads, to_json, "JSON (pydantic models, dataclasses, dicts)"),
        Converter(TEXT, _decode_text, _text, "UTF-8 text"),
        Converter(OCTET, bytes, _octets, "raw bytes"),
    ]


@lru_cache(maxsize=512)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _short(step: object) -> str:
    text = str(step)
    return text if len(text) <= _LOC_STEP else f"{text[:_LOC_STEP]}..."


def _describe(exc: ValidationError, target: Any) -> str:
    # Without the input values: the reason ends up in logs and dead-letter headers.
    details = "; ".join(
        f"{'.'.join(_short(p) for p in e['loc']) or '(payload)'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)[:5]
    )
    name = getattr(target, "__name__", str(target))
    return f"cannot convert payload to {name}: {details}"[:_REASON]


def _reason(exc: BaseException) -> str:
    """Why a conversion failed, in words that cannot quote the payload."""
    if isinstance(exc, UnicodeError):
        where = getattr(exc, "start", None)
        return f"not UTF-8 text ({getattr(exc, 'reason', 'bad encoding')} at {where})"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, pydantic_core.PydanticSerializationError):
        return str(exc).split("\n", 1)[0][:_REASON]
    # Code we do not know (a plugin's converter, a user's validator) may quote the
    # payload in its message: the type is enough to act on; the words go to DEBUG.
    log.debug("conversion failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return f"{type(exc).__name__} raised"


def decoder_for(target: Any, content_type: str, converters: Mapping[str, Converter]) -> Decoder:
    """A function ``bytes -> target`` for one binding; it raises only ``ConversionError``.

    ``target`` is the parameter's type hint (``Any`` when there is none); the content type
    is the binding's, used unless a message carries its own ``contentType`` header (the
    invoker then asks for that content type's decoder).
    """
    mt = media_type(content_type)
    if target is bytes:
        return bytes
    if target is str:
        return _decode_text
    if target is Any or target is None:
        if is_json(mt):
            return _json_loads
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
            except MemoryError:
                raise
            except Exception as exc:  # a validator of the user's model raised
                raise ConversionError(_failed(target, exc)) from None

        _UNWRAPPED[from_json] = validate_json
        return from_json
    converter = converters.get(mt)
    if converter is None:
        raise ConversionError(f"no converter for content type '{mt}'")
    decode = converter.decode

    def via_converter(payload: bytes) -> Any:
        try:
            return adapter.validate_python(decode(payload))
        except ConversionError:
            raise
        except ValidationError as exc:
            raise ConversionError(_describe(exc, target)) from None
        except MemoryError:
            raise
        except Exception as exc:
            raise ConversionError(f"cannot decode {mt}: {_reason(exc)}") from None

    return via_converter


#: A decoder -> the call inside it that does the work, for the per-message path: what it
#: raises must be turned into the decoder's ``ConversionError`` by calling the decoder.
_UNWRAPPED: weakref.WeakKeyDictionary[Decoder, Callable[[bytes], Any]] = weakref.WeakKeyDictionary()


def unwrapped(decoder: Decoder) -> Callable[[bytes], Any] | None:
    """The call inside ``decoder`` that does its work (pydantic's validator for a model
    from JSON), or None: one Python call fewer per message. It may raise anything; the
    caller then calls ``decoder`` itself, which raises the ``ConversionError`` that names
    the problem."""
    return _UNWRAPPED.get(decoder)


def encoder_of(encode_object: Callable[[Any], bytes], kind: type) -> Callable[[Any], bytes]:
    """What ``encode_object`` amounts to for values of type ``kind``: pydantic-core's own
    ``to_json`` where ``to_json`` can only write finite numbers for that type (its check
    would look at nothing), else ``encode_object``. Raises what they raise."""
    if encode_object is to_json:
        finite = _FINITE.get(kind)
        if finite is None:
            finite = _FINITE[kind] = _finite_by_type(kind)
        if finite:
            return pydantic_core.to_json
    return encode_object


def _failed(target: Any, exc: BaseException) -> str:
    name = getattr(target, "__name__", str(target))
    return f"cannot convert payload to {name}: {_reason(exc)}"


def _decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConversionError(
            f"payload is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise ConversionError(f"payload is not UTF-8 text: {_reason(exc)}") from None


def _guard(decode: Callable[[bytes], Any], what: str) -> Decoder:
    def guarded(payload: bytes) -> Any:
        try:
            return decode(payload)
        except ConversionError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise ConversionError(f"cannot decode {what}: {_reason(exc)}") from None

    return guarded


def encoder_for(content_type: str, converters: Mapping[str, Converter]) -> Encoder:
    """A function ``value -> bytes`` for one output binding; it raises only
    ``ConversionError``.

    ``bytes`` and ``str`` go out as they are whatever the content type (as Spring does);
    anything else is encoded by the content type's converter: JSON (NaN and Infinity
    refused), ``text/plain`` for numbers and booleans only, ``application/octet-stream``
    for nothing but bytes.
    """
    mt = media_type(content_type)
    if is_json(mt):
        encode: Callable[[Any], bytes] = to_json
    elif mt == TEXT:
        encode = _text
    elif mt == OCTET:
        encode = _octets
    else:
        converter = converters.get(mt)
        if converter is None:
            raise ConversionError(f"no converter for content type '{mt}'")
        raw = converter.encode

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
            try:
                return value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ConversionError(
                    f"cannot encode str as UTF-8: {exc.reason} at index {exc.start}"
                ) from None
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        try:
            return self.encode_object(value)
        except ConversionError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise ConversionError(
                f"cannot encode {type(value).__name__} as {self.media_type}: {_reason(exc)}"
            ) from None
