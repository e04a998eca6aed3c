"""CloudEvents on a binding (``cloudevents: binary | structured``), with the ``cloudevents``
package's event model checking every event read and written.

Incoming, either mode is read (a receiver tells them apart by the content type, as the
protocol bindings say): a structured event (``application/cloudevents+json``) becomes its
data, with ``datacontenttype`` as the message's content type; a binary event keeps its
payload. Either way the function gets the data converted to the type it declares, and the
attributes in the headers under the binder's prefix, readable through ``Message.ce``
(``msg.ce["id"]``, ``msg.ce["type"]``, whatever the protocol's prefix). A message that is
not a valid event (a required attribute missing, a bad ``time``, a malformed envelope) is
a conversion failure: dead-lettered with the reason, never retried.

Outgoing, each message gets ``id`` (a new UUID), ``source`` and ``type`` (the binding's
``cloudevents-source`` and ``cloudevents-type``, by default ``/<app>/<binding>`` and
``<app>.<binding>``), ``time`` and ``specversion`` 1.0; attributes a function sets itself
on a returned ``Message`` (``ce_type``, say) are kept. Binary mode writes them as headers
named as the protocol binding names them: ``ce_`` on Kafka (with ``content-type`` for
``datacontenttype``), ``cloudEvents:`` on AMQP (RabbitMQ's header table is where AMQP 1.0
puts application properties); structured mode sends the whole event as
``application/cloudevents+json``.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pydantic_core

from binder_core.conversion import is_json, media_type
from binder_core.errors import ConversionError
from binder_core.message import CONTENT_TYPE, Message

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
#: Header prefixes of the protocol bindings: Kafka's (and ours on memory and Redis), AMQP's.
KAFKA_PREFIX = "ce_"
AMQP_PREFIX = "cloudEvents:"
#: Prefixes read on the way in: the AMQP binding allows ``cloudEvents_`` too, and the
#: HTTP-derived ``ce-`` is what some bridges write.
_READ_PREFIXES = (KAFKA_PREFIX, AMQP_PREFIX, "cloudEvents_", "ce-")
#: The Kafka protocol binding's header for ``datacontenttype`` in binary mode.
KAFKA_CONTENT_TYPE = "content-type"
_PREFIX_BY_TYPE = {"rabbit": AMQP_PREFIX}
_REQUIRED = ("id", "source", "type", "specversion")


def prefix_for(binder_type: str, binder: object = None) -> str:
    """The header prefix of a binder: its own ``cloudevents_prefix`` when it declares one
    (a plugin can), ``cloudEvents:`` for AMQP, else Kafka's ``ce_``."""
    declared = getattr(binder, "cloudevents_prefix", None)
    if isinstance(declared, str) and declared:
        return declared
    return _PREFIX_BY_TYPE.get(binder_type, KAFKA_PREFIX)


def _raw_attributes(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes as the headers hold them (an AMQP time may be a timestamp)."""
    found: dict[str, Any] = {}
    for name, value in headers.items():
        for prefix in _READ_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                raw = bytes(value) if isinstance(value, bytearray | memoryview) else value
                found[name[len(prefix) :].lower()] = (
                    raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                )
                break
    return found


def attributes(headers: Mapping[str, Any]) -> Mapping[str, str]:
    """The CloudEvents attributes in ``headers``, by attribute name, under any prefix
    (what ``Message.ce`` gives): read-only."""
    found: dict[str, str] = {}
    for name, value in _raw_attributes(headers).items():
        if name == "time" and isinstance(value, int | datetime) and not isinstance(value, bool):
            value = _rfc3339(_parse_time(value))  # an AMQP timestamp, in canonical form
        found[name] = _text(value)
    return MappingProxyType(found)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return _rfc3339(value)
    return str(value)


def _rfc3339(when: datetime) -> str:
    text = when.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _checked(attrs: dict[str, Any], data: Any = None) -> None:
    """Raise ``ConversionError`` unless ``attrs`` make a valid CloudEvents 1.0 event (the
    ``cloudevents`` package's model decides)."""
    from cloudevents.core.exceptions import BaseCloudEventException
    from cloudevents.core.v1.event import CloudEvent

    missing = [a for a in _REQUIRED if not attrs.get(a)]
    if missing:
        raise ConversionError(
            f"not a CloudEvent: required attribute{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} missing"
        )
    if attrs.get("specversion") != SPECVERSION:
        raise ConversionError(
            f"CloudEvents specversion {str(attrs.get('specversion'))[:20]!r} is not supported "
            f"(only {SPECVERSION})"
        )
    given = dict(attrs)
    if "time" in given:
        given["time"] = _parse_time(given["time"])
    try:
        CloudEvent(given, data)
    except BaseCloudEventException as exc:
        raise ConversionError(f"not a valid CloudEvent: {exc}") from None


def _parse_time(value: Any) -> datetime:
    # AMQP carries time natively: a timestamp (pika reads it as a datetime), or the AMQP
    # 1.0 binding's milliseconds since the epoch; the canonical form is RFC 3339 text.
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    text = str(value).strip()
    # RFC 3339 allows any number of fractional digits; Python reads at most six.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        when = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ConversionError("CloudEvents time is not an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise ConversionError("CloudEvents time has no time zone (RFC 3339 needs one)")
    return when


class CloudEvents:
    """The CloudEvents codec of one binding."""

    def __init__(self, mode: str, prefix: str, source: str, type_: str) -> None:
        if mode not in ("binary", "structured"):
            raise ValueError(f"cloudevents is binary or structured, not {mode!r}")
        self.mode = mode
        self.prefix = prefix
        self.source = source
        self.type = type_

    # -- incoming ----------------------------------------------------------------------------

    def incoming(self, msg: Message[bytes]) -> Message[bytes]:
        """The event's data as the message the function's conversion reads, attributes in
        the headers; ``ConversionError`` for what is not a valid event."""
        ct = media_type(msg.headers.get(CONTENT_TYPE) or msg.headers.get(KAFKA_CONTENT_TYPE))
        if ct.startswith("application/cloudevents"):
            if not is_json(ct):
                raise ConversionError(
                    f"structured CloudEvents in {ct} cannot be read (only {STRUCTURED})"
                )
            return self._structured(msg)
        attrs = _raw_attributes(msg.headers)
        _checked(attrs)
        headers = msg.headers
        if CONTENT_TYPE not in headers and KAFKA_CONTENT_TYPE in headers:
            headers = {**headers, CONTENT_TYPE: _text(headers[KAFKA_CONTENT_TYPE])}
        return Message(msg.payload, headers, msg.key, msg.partition)

    def _structured(self, msg: Message[bytes]) -> Message[bytes]:
        try:
            envelope = pydantic_core.from_json(msg.payload)
        except ValueError as exc:
            raise ConversionError(f"structured CloudEvent is not JSON: {exc}") from None
        if not isinstance(envelope, dict):
            raise ConversionError(
                f"structured CloudEvent is a JSON {type(envelope).__name__}, not an object"
            )
        data = envelope.pop("data", None)
        encoded = envelope.pop("data_base64", None)
        _checked(envelope)
        content_type = envelope.get("datacontenttype")
        if content_type is not None and not isinstance(content_type, str):
            raise ConversionError("CloudEvents datacontenttype is not a string")
        content_type = content_type or "application/json"
        if encoded is not None:
            try:
                payload = base64.b64decode(str(encoded), validate=True)
            except ValueError:
                raise ConversionError("CloudEvents data_base64 is not base64") from None
        elif data is None:
            payload = b""
        elif is_json(media_type(content_type)):
            payload = pydantic_core.to_json(data)
        elif isinstance(data, str):
            payload = data.encode("utf-8")
        else:
            payload = pydantic_core.to_json(data)
        headers = {
            k: v
            for k, v in msg.headers.items()
            if k not in (CONTENT_TYPE, KAFKA_CONTENT_TYPE) and not _is_attribute(k)
        }
        for name, value in envelope.items():
            if name != "datacontenttype" and value is not None:
                headers[self.prefix + name] = value if isinstance(value, str) else _text(value)
        headers[CONTENT_TYPE] = content_type
        return Message(payload, headers, msg.key, msg.partition)

    # -- outgoing ----------------------------------------------------------------------------

    def outgoing(self, msg: Message[bytes]) -> Message[bytes]:
        """``msg`` as an event of this binding."""
        given = attributes(msg.headers)
        attrs: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": given.get("id") or str(uuid.uuid4()),
            "source": given.get("source") or self.source,
            "type": given.get("type") or self.type,
            "time": given.get("time") or _rfc3339(datetime.now(UTC)),
        }
        for name, value in given.items():
            attrs.setdefault(name, value)
        attrs["specversion"] = SPECVERSION
        content_type = msg.headers.get(CONTENT_TYPE)
        rest = {k: v for k, v in msg.headers.items() if not _is_attribute(k)}
        if self.mode == "binary":
            _checked(attrs)
            headers = dict(rest)
            for name, value in attrs.items():
                headers[self.prefix + name] = value
            if self.prefix == KAFKA_PREFIX and content_type is not None:
                headers[KAFKA_CONTENT_TYPE] = _text(content_type)
            return Message(msg.payload, headers, msg.key, msg.partition)
        ct = _text(content_type) if content_type is not None else "application/json"
        envelope: dict[str, Any] = {**attrs, "datacontenttype": ct}
        data: Any
        if is_json(media_type(ct)):
            try:
                data = pydantic_core.from_json(msg.payload) if msg.payload else None
            except ValueError:
                raise ConversionError(
                    f"the payload is labelled {ct} but is not JSON, so it cannot be the data "
                    "of a structured CloudEvent"
                ) from None
            envelope["data"] = data
        elif media_type(ct).startswith("text/"):
            try:
                envelope["data"] = msg.payload.decode("utf-8")
            except UnicodeDecodeError:
                envelope["data_base64"] = base64.b64encode(msg.payload).decode("ascii")
        else:
            envelope["data_base64"] = base64.b64encode(msg.payload).decode("ascii")
        _checked({k: v for k, v in envelope.items() if k not in ("data", "data_base64")})
        headers = dict(rest)
        headers[CONTENT_TYPE] = STRUCTURED
        return Message(pydantic_core.to_json(envelope), headers, msg.key, msg.partition)

    # -- hooks -------------------------------------------------------------------------------

    def reading(self, convert: Callable[[Message[bytes]], Any]) -> Callable[[Message[bytes]], Any]:
        """``convert`` (a binding's argument maker) reading events."""
        incoming = self.incoming

        def argument(msg: Message[bytes]) -> Any:
            return convert(incoming(msg))

        return argument

    def writing(self, make: Callable[[Any], Message[bytes]]) -> Callable[[Any], Message[bytes]]:
        """``make`` (an output's value -> message) writing events."""
        outgoing = self.outgoing

        def message(value: Any) -> Message[bytes]:
            return outgoing(make(value))

        return message


def _is_attribute(name: str) -> bool:
    return any(name.startswith(p) and len(name) > len(p) for p in _READ_PREFIXES)


def for_binding(
    mode: str | None,
    binder_type: str,
    binder: object,
    app: str,
    binding: str,
    source: str | None,
    type_: str | None,
) -> CloudEvents | None:
    """The codec of a binding, or ``None`` when it does not speak CloudEvents."""
    if mode is None:
        return None
    return CloudEvents(
        mode,
        prefix_for(binder_type, binder),
        source or f"/{app}/{binding}",
        type_ or f"{app}.{binding}",
    )
