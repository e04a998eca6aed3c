"""An app for the dead-letter tests on the memory binder: ``feed`` sends a few orders
once; ``orders`` fails the ``bad`` ones until they come back replayed (the cause "fixed"),
and says what it processed."""

from __future__ import annotations

from collections.abc import Iterator

from binder_core.message import Message


def feed() -> Iterator[str]:
    yield from ["good-1", "bad-1", "bad-2", "bad-3"]


def orders(msg: Message[str]) -> None:
    if msg.payload.startswith("bad") and "x-replay-count" not in msg.headers:
        raise ValueError("bad price: not a number")
    print(f"processed {msg.payload} replayed={msg.headers.get('x-replay-count')}", flush=True)
