"""The message model: a payload plus headers, the unit every binder moves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Spring Cloud Stream's header for the payload's content type; keeping the name lets a
#: Python service and a Spring service read each other's messages.
CONTENT_TYPE = "contentType"


@dataclass(slots=True)
class Message(Generic[T]):
    """A payload with headers.

    Binders move ``Message[bytes]``; a function that declares ``Message[T]`` as its parameter
    receives the payload converted to ``T`` together with the headers, and a function that
    returns a ``Message`` chooses the headers of what it sends.

    ``key`` and ``partition`` are transport metadata rather than wire headers: on the way out
    the core fills them from ``partition-key-expression`` so a binder can route without
    evaluating anything; on the way in a binder that knows them (Kafka) fills them.
    """

    payload: T
    headers: dict[str, Any] = field(default_factory=dict)
    key: Any = None
    partition: int | None = None

    @property
    def ce(self) -> Mapping[str, str]:
        """The CloudEvents attributes in the headers, by name (``msg.ce["id"]``,
        ``msg.ce["type"]``), whatever prefix the protocol gives them (``ce_`` on Kafka,
        ``cloudEvents:`` on AMQP); empty for a message that is no event."""
        from binder_core.cloudevents import attributes

        return attributes(self.headers)

    def __repr__(self) -> str:
        # Payloads may hold personal data: keep them out of reprs that end up in logs.
        size = len(self.payload) if isinstance(self.payload, bytes | str) else "?"
        kind = type(self.payload).__name__
        return f"Message(payload=<{kind} {size}>, headers={self.headers!r})"
