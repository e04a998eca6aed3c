"""An app for the command-line tests: numbers flow through a function to a consumer that
prints them, so a test can check that nothing is lost when the app is stopped. The supplier
runs ahead of the printing consumer (bounded by the binder's buffers), so a stop always
finds messages queued and in flight."""

from __future__ import annotations

import sys
from collections.abc import Iterator


def numbers() -> Iterator[int]:
    """Count up until the app stops; report how many values were handed over."""
    supplied = 0
    try:
        while True:
            supplied += 1
            yield supplied - 1
    finally:
        print(f"supplied {supplied}", file=sys.stderr, flush=True)


async def double(n: int) -> int:
    """An async step between supplier and consumer: one more stage holding messages."""
    return n * 2


def record(n: int) -> None:
    """Print each value: the test's record of what was processed."""
    print(n, flush=True)
