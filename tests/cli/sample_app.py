"""An app for the command-line tests: numbers flow through a slow function to a consumer
that prints them, so a test can check that nothing is lost when the app is stopped."""

from __future__ import annotations

import asyncio
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


async def slow_double(n: int) -> int:
    """Keeps messages in flight when the signal arrives."""
    await asyncio.sleep(0.0005)
    return n * 2


def record(n: int) -> None:
    """Print each value: the test's record of what was processed."""
    print(n, flush=True)
