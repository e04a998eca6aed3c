"""A stream of numbered messages fed in the background while a test breaks things.

The feed runs as a task of its own, so a node or an instance is killed while messages are
really on their way (a kill between two batches of a feed that waits would hit an idle
pipeline). It keeps at most ``window`` messages ahead of the outputs seen, and never goes
past ``limit``, which the test raises when it is ready for the rest of the stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from tests.support import eventually

BATCH = 200
WINDOW = 1000


class Feed:
    """Numbers ``0 .. total - 1`` through ``send`` (batches of ``BATCH``), paced by
    ``outputs()``, the number of outputs seen so far."""

    def __init__(
        self,
        send: Callable[[range], Awaitable[None]],
        outputs: Callable[[], Awaitable[int]],
        total: int,
        limit: int,
        window: int = WINDOW,
    ) -> None:
        self._send = send
        self._outputs = outputs
        self.total = total
        self.limit = limit
        self.window = window
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self.sent < self.total:

            async def may_send() -> bool:
                return self.sent < self.limit and await self._outputs() >= self.sent - self.window

            await eventually(may_send, f"room to send (sent {self.sent})", 180)
            numbers = range(self.sent, min(self.sent + BATCH, self.limit, self.total))
            await self._send(numbers)
            self.sent = numbers[-1] + 1

    def _check(self) -> None:
        if self._task is not None and self._task.done() and self._task.exception() is not None:
            raise AssertionError(f"the feed failed: {self._task.exception()!r}")

    async def reached(self, outputs: int, what: str, timeout: float = 120) -> None:
        """Wait until ``outputs()`` reaches ``outputs`` (the feed still running)."""

        async def there() -> bool:
            self._check()
            return await self._outputs() >= outputs

        await eventually(there, f"{outputs} outputs ({what})", timeout)

    async def finish(self, timeout: float = 180) -> None:
        """Let the feed send everything, and wait until it has."""
        self.limit = self.total
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
