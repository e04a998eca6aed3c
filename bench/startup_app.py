"""The app the start-up and idle-memory measurements run with ``binder run``.

``hello`` (a polled supplier) -> ``first`` (a consumer) says on standard output when the
first message arrived; ``relay`` and ``first`` alone make an idle app with three bindings.
"""

from __future__ import annotations

import sys

MARK = "first message processed"

_seen = False


def hello() -> dict[str, str]:
    """One greeting per poll."""
    return {"hello": "world"}


def relay(doc: dict[str, str]) -> dict[str, str]:
    """Passes documents on unchanged."""
    return doc


def first(doc: dict[str, str]) -> None:
    """Tells the parent process, once, that a message made it through."""
    global _seen
    if not _seen:
        _seen = True
        sys.stdout.write(f"{MARK}\n")
        sys.stdout.flush()
