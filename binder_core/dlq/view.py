"""Dead letters as people see them (``binder dlq show``, the endpoint's JSON): headers and
payloads shown safely, whatever they hold. Text is shown with control characters escaped
(a payload cannot move the cursor or recolour a terminal), binary as hex, both cut to a
length."""

from __future__ import annotations

import json
from typing import Any

from binder_core.dlq import letters
from binder_core.dlq.spi import DeadLetter
from binder_core.message import CONTENT_TYPE

#: Payload bytes shown by default.
PAYLOAD_BYTES = 256
#: Characters of one header value shown.
HEADER_CHARS = 300
#: Headers left out unless asked for: long, and the reason says what matters.
TRACE_HEADERS = frozenset({"x-exception-stacktrace", "kafka_dlt-exception-stacktrace"})

_PRINTABLE_CONTROL = frozenset("\n\t")


def safe_text(value: str, limit: int) -> str:
    """``value`` with control characters (and other unprintable ones) escaped, cut to
    ``limit`` characters with a marker saying how many were left out."""
    shown = "".join(
        c if c.isprintable() or c in _PRINTABLE_CONTROL else c.encode("unicode_escape").decode()
        for c in value[:limit]
    )
    shown = shown.replace("\n", "\\n").replace("\t", "\\t")
    if len(value) > limit:
        shown += f"... [{len(value) - limit} more chars]"
    return shown


def payload_view(payload: bytes, limit: int = PAYLOAD_BYTES) -> dict[str, Any]:
    """The payload for display: ``text`` when it is UTF-8, else ``hex``; ``truncated``
    when only the first ``limit`` bytes are shown."""
    head = payload[:limit]
    out: dict[str, Any] = {"size": len(payload), "truncated": len(payload) > limit}
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the limit is still text.
        if len(payload) > limit and exc.start >= len(head) - 3:
            decoded = head[: exc.start].decode("utf-8", "replace")
        else:
            out["hex"] = head.hex()
            return out
    out["text"] = safe_text(decoded, len(decoded))
    return out


def header_view(value: Any) -> str:
    """One header value for display."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return safe_text(raw.decode("utf-8"), HEADER_CHARS)
        except UnicodeDecodeError:
            return "0x" + raw[: HEADER_CHARS // 2].hex() + ("..." if len(raw) > 150 else "")
    if isinstance(value, str):
        return safe_text(value, HEADER_CHARS)
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return safe_text(text, HEADER_CHARS)


def describe(
    letter: DeadLetter, payload_bytes: int = PAYLOAD_BYTES, traces: bool = False
) -> dict[str, Any]:
    """One letter as ``show`` prints it and the endpoint answers it."""
    headers = letter.message.headers
    return {
        "id": letter.id,
        "timestamp": letter.timestamp,
        "reason": safe_text(letters.reason(headers), 4096),
        "origin": letters.origin(headers),
        "replayCount": letters.replay_count(headers),
        "contentType": header_view(headers[CONTENT_TYPE]) if CONTENT_TYPE in headers else None,
        "headers": {
            safe_text(str(k), 200): header_view(v)
            for k, v in headers.items()
            if traces or k not in TRACE_HEADERS
        },
        "payload": payload_view(letter.message.payload, payload_bytes),
    }
