"""Hand-made AMQP content headers for the hostile-input tests.

pika's own encoder recurses into nested tables (and refuses some values), so the
properties of a crafted message are written here byte by byte and handed to pika as they
are: ``RawProperties.encode`` returns them unchanged.
"""

from __future__ import annotations

import struct

from pika import BasicProperties

CONTENT_TYPE, HEADERS, DELIVERY_MODE, MESSAGE_ID = 1 << 15, 1 << 13, 1 << 12, 1 << 7


class RawProperties(BasicProperties):  # type: ignore[misc]
    """Basic properties that go on the wire exactly as given."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    def encode(self) -> list[bytes]:
        return [self.raw]


def table(body: bytes) -> bytes:
    """A field table around already encoded ``key, value`` pairs."""
    return struct.pack(">I", len(body)) + body


def short(text: str) -> bytes:
    data = text.encode()
    return bytes((len(data),)) + data


def long_string(text: str) -> bytes:
    data = text.encode()
    return b"S" + struct.pack(">I", len(data)) + data


def nested(levels: int) -> bytes:
    """A header table nested ``levels`` deep: ``{"k": {"k": ... {}}}``."""
    t = table(b"")
    for _ in range(levels - 1):
        t = table(short("k") + b"F" + t)
    return t


def wide(entries: int) -> bytes:
    """A header table of ``entries`` integer values (``k0``, ``k1``, ...)."""
    return table(b"".join(short(f"k{i}") + b"I" + struct.pack(">i", i) for i in range(entries)))


def properties(headers: bytes, content_type: str = "text/plain", message_id: str = "") -> bytes:
    """Encoded basic properties: content type, the given header table, persistent delivery,
    and a message id when given (it comes after the table on the wire)."""
    flags = CONTENT_TYPE | HEADERS | DELIVERY_MODE | (MESSAGE_ID if message_id else 0)
    out = struct.pack(">H", flags) + short(content_type) + headers + b"\x02"
    return out + (short(message_id) if message_id else b"")
