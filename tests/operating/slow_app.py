"""An app for the operating tests: it reads words at about 200 a second (each takes 5 ms),
so a producer can outpace it and its consumer lag grows."""

from __future__ import annotations

import asyncio


async def slow(word: str) -> None:
    """Take a while over each word."""
    await asyncio.sleep(0.005)
