"""Stream (reactive) functions: ``AsyncIterator`` inputs in, values out, driven one input
item at a time so that each output is matched to an input.

An item counts as processed when the function asks for the next item of the same input;
what the function yielded since is handed back with that item (and so confirmed before
the item is acknowledged). With several inputs (``fn-in-0``, ``fn-in-1``, ...), each input
binding feeds its own ``AsyncIterator``, and outputs go back with whichever input's item is
released first after they were yielded: every output is sent once, and an item is
acknowledged only after the outputs handed back with it were confirmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from binder_core.errors import BinderException
from binder_core.functions import FunctionInfo

log = logging.getLogger(__name__)

_END = object()


class StreamClosed(BinderException):
    """The app is stopping and the stream function's inputs have ended: the item is not
    processed (it is delivered again)."""


class _Feed:
    """The ``AsyncIterator`` a stream function reads for one input; each time the function
    asks it for the next item, the driver learns the previous one is processed."""

    def __init__(self, driver: StreamDriver, index: int) -> None:
        self._driver = driver
        self._index = index

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> Any:
        return await self._driver.next_item(self._index)


class StreamDriver:
    """Runs a stream function as one long-lived task, fed one item at a time per input.

    If the function raises, the item being fed fails like any other (retry, then
    dead-letter) and the function is started afresh for the next attempt: its state is
    lost, its input is not.
    """

    def __init__(self, info: FunctionInfo, blocking: bool) -> None:
        self._info = info
        self._inputs = max(1, info.inputs)
        self._task: asyncio.Task[None] | None = None
        #: Per input: the function waiting for an item, items not taken yet, and the
        #: feeder waiting for its item to be released.
        self._waiting: list[asyncio.Future[Any] | None] = [None] * self._inputs
        self._queued: list[deque[Any]] = [deque() for _ in range(self._inputs)]
        self._released: list[asyncio.Future[Any] | None] = [None] * self._inputs
        self._locks = [asyncio.Lock() for _ in range(self._inputs)]
        #: Per input: whether the function took an item it has not asked past yet.
        self._holding = [False] * self._inputs
        self._produced: list[Any] = []
        self._closed = False

    async def next_item(self, index: int) -> Any:
        if self._holding[index]:
            # Asking for the next item: the one it holds is processed.
            self._holding[index] = False
            released = self._released[index]
            if released is not None and not released.done():
                released.set_result(None)
        queued = self._queued[index]
        if queued:
            value = queued.popleft()
        else:
            waiting = self._waiting[index] = asyncio.get_running_loop().create_future()
            try:
                value = await waiting
            finally:
                self._waiting[index] = None
        if value is _END:
            raise StopAsyncIteration
        self._holding[index] = True
        return value

    async def _run(self) -> None:
        feeds = [_Feed(self, i) for i in range(self._inputs)]
        try:
            if self._info.is_async_generator:
                async for value in self._info.fn(*feeds):
                    if value is not None:
                        self._produced.append(value)
            else:
                await self._info.fn(*feeds)
        except BaseException as exc:
            self._end(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self._end(None)

    def _end(self, exc: BaseException | None) -> None:
        """The function returned or raised: every feeder waiting for a release hears it."""
        for i, released in enumerate(self._released):
            if released is not None and not released.done():
                if exc is None:
                    released.set_result(_END)
                else:
                    released.set_exception(exc)
            self._released[i] = None
        for queued in self._queued:
            queued.clear()
        self._holding = [False] * self._inputs

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"stream:{self._info.name}"
            )

    def _give(self, index: int, value: Any) -> None:
        waiting = self._waiting[index]
        if waiting is not None and not waiting.done():
            waiting.set_result(value)
        else:
            self._queued[index].append(value)

    async def feed(self, value: Any, index: int = 0) -> list[Any]:
        """Give input ``index`` one item; return once the function asked for the next
        item of that input (or finished), with what it yielded meanwhile."""
        if self._closed:
            raise StreamClosed(f"stream function {self._info.name} is finishing")
        async with self._locks[index]:
            self._ensure_started()
            released = self._released[index] = asyncio.get_running_loop().create_future()
            self._give(index, value)
            try:
                await released
            finally:
                if self._released[index] is released:
                    self._released[index] = None
                produced, self._produced = self._produced, []
            return produced

    async def close(self) -> list[Any]:
        """End every input; return what the function yields while it finishes. Items it
        still holds are released (their feeders return); later feeds raise."""
        self._closed = True
        task = self._task
        if task is None or task.done():
            return []
        for i in range(self._inputs):
            self._give(i, _END)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=10)
        except Exception as exc:
            log.warning("stream function %s did not finish cleanly: %s", self._info.name, exc)
        produced, self._produced = self._produced, []
        return produced
