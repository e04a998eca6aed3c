"""Tracing across brokers: W3C trace context (``traceparent``, ``tracestate``) in message
headers, and OpenTelemetry spans named and attributed after its messaging conventions:
``receive <destination>`` per batch, ``process <destination>`` per message (child of the
span that published it, linked to the batch's receive span), ``publish <destination>`` per
message sent (its context goes into the message's headers).

Only ``opentelemetry-api`` is needed; the SDK (and where spans go) is the app's choice. With
``stream.tracing.enabled: auto`` (the default) tracing is on when the app installed an SDK
tracer provider before starting, and costs nothing otherwise: nothing here is imported, and
the hot path is not the traced one. Headers travel on every binder, plugins included,
since they are ordinary message headers.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

from binder_core.message import Message
from binder_core.properties import TracingProperties

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_INSTRUMENTATION = "binder"

#: ``messaging.system`` as OpenTelemetry's conventions name a broker, by binder type (a
#: type not listed goes by its own name: kafka, memory, a plugin's).
_SYSTEMS = {"rabbit": "rabbitmq"}

#: A tracer provider handed to binder rather than installed globally (``use_provider``);
#: per task, so apps started from different places may trace to different providers.
_PROVIDER: ContextVar[Any] = ContextVar("binder_tracer_provider", default=None)


def use_provider(provider: Any) -> None:
    """Trace apps started from here on with ``provider`` (an OpenTelemetry SDK
    ``TracerProvider``) instead of the global one; ``None`` goes back to the global one."""
    _PROVIDER.set(provider)


def enabled(props: TracingProperties) -> bool:
    """Whether this app traces: asked once at start-up."""
    if props.enabled == "false":
        return False
    if props.enabled == "true" or _PROVIDER.get() is not None:
        return True
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False  # nobody imported OpenTelemetry, so nobody installed an SDK
    provider = trace.get_tracer_provider()
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def _carriers() -> tuple[Any, Any]:
    """OpenTelemetry's getter and setter for message headers (built on first use, so this
    module imports nothing of OpenTelemetry until tracing is on). The getter reads values
    that arrive as bytes too (a header another client wrote)."""
    from opentelemetry.propagators.textmap import Getter, Setter

    class HeaderGetter(Getter[Mapping[str, Any]]):
        def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
            value = carrier.get(key)
            if value is None:
                return None
            if isinstance(value, bytes | bytearray):
                value = bytes(value).decode("latin-1")
            return [str(value)]

        def keys(self, carrier: Mapping[str, Any]) -> list[str]:
            return list(carrier)

    class HeaderSetter(Setter[MutableMapping[str, Any]]):
        def set(self, carrier: MutableMapping[str, Any], key: str, value: str) -> None:
            carrier[key] = value

    return HeaderGetter(), HeaderSetter()


class Tracing:
    """The spans of one binding (its destination and broker, ``system`` being the binder
    type)."""

    def __init__(self, system: str, destination: str, group: str | None = None) -> None:
        from opentelemetry import propagate, trace

        self._trace = trace
        self._propagate = propagate
        provider = _PROVIDER.get()
        self._tracer = (
            provider.get_tracer(_INSTRUMENTATION)
            if provider is not None
            else trace.get_tracer(_INSTRUMENTATION)
        )
        self._getter, self._setter = _carriers()
        self.destination = destination
        self._attributes: dict[str, Any] = {
            "messaging.system": _SYSTEMS.get(system, system),
            "messaging.destination.name": destination,
        }
        if group:
            self._attributes["messaging.consumer.group.name"] = group

    def context_of(self, headers: Mapping[str, Any]) -> Any:
        """The trace context a message carries (empty when it carries none)."""
        return self._propagate.extract(headers, getter=self._getter)

    @contextlib.contextmanager
    def receive(self, count: int) -> Iterator[Any]:
        """The span of one fetched batch."""
        attributes = {**self._attributes, "messaging.operation.type": "receive"}
        attributes["messaging.batch.message_count"] = count
        with self._tracer.start_as_current_span(
            f"receive {self.destination}",
            kind=self._trace.SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span

    @contextlib.contextmanager
    def process(self, messages: Iterable[Message[Any]], receive: Any = None) -> Iterator[Any]:
        """The span of processing one message (its parent: the span that published it) or,
        in batch mode, several (linked to each of theirs)."""
        trace = self._trace
        messages = list(messages)
        links = []
        if receive is not None:
            links.append(trace.Link(receive.get_span_context()))
        parent = None
        if len(messages) == 1:
            parent = self.context_of(messages[0].headers)
        else:
            for message in messages:
                found = trace.get_current_span(self.context_of(message.headers))
                if found.get_span_context().is_valid:
                    links.append(trace.Link(found.get_span_context()))
        attributes = {**self._attributes, "messaging.operation.type": "process"}
        if len(messages) != 1:
            attributes["messaging.batch.message_count"] = len(messages)
        with self._tracer.start_as_current_span(
            f"process {self.destination}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
        ) as span:
            yield span

    def failed(self, span: Any, exc: BaseException) -> None:
        """Mark a process span as failed (the message goes to the dead-letter path)."""
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))

    def publish(self, message: Message[bytes], inject: bool = True) -> Message[bytes]:
        """Start and end the span of sending ``message`` (as a child of the current span)
        and put its context into the message's headers (unless the binding writes no
        headers: ``header-mode: none``)."""
        attributes = {**self._attributes, "messaging.operation.type": "send"}
        with self._tracer.start_as_current_span(
            f"publish {self.destination}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes=attributes,
        ):
            if inject:
                headers = dict(message.headers)
                headers.pop(TRACEPARENT, None)
                headers.pop(TRACESTATE, None)
                self._propagate.inject(headers, setter=self._setter)
                message.headers = headers
        return message
