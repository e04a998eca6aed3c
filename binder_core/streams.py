"""Stream (reactive) functions: an ``AsyncIterator`` in, values out, driven one input at a
time so each output is matched to the input it came from."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from binder_core.functions import FunctionInfo

log = logging.getLogger(__name__)

_END = object()


class _Feed:
    """The ``AsyncIterator`` a stream function reads; it tells the driver each time the
    function asks for the next item, which is how outputs are matched to inputs."""

    def __init__(self, driver: StreamDriver) -> None:
        self._driver = driver

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> Any:
        return await self._driver.next_item()


class StreamDriver:
    """Runs a stream (reactive) function as one long-lived task fed one item at a time.

    An input counts as processed when the function asks for the next one; what it yielded
    in between are that input's outputs. If the function raises, the item fails like any
    other (retry, then dead-letter) and the function is started afresh for the next
    attempt: its state is lost, its input is not.
    """

    def __init__(self, info: FunctionInfo, blocking: bool) -> None:
        self._info = info
        self._task: asyncio.Task[None] | None = None
        self._pulled: asyncio.Future[Any] | None = None  # resolved when the fn asks again
        self._item: asyncio.Future[Any] | None = None  # the item the fn is waiting for
        self._produced: list[Any] = []
        self._lock = asyncio.Lock()

    async def next_item(self) -> Any:
        loop = asyncio.get_running_loop()
        self._item = loop.create_future()
        if self._pulled is not None and not self._pulled.done():
            self._pulled.set_result(None)
        value = await self._item
        if value is _END:
            raise StopAsyncIteration
        return value

    async def _run(self) -> None:
        pulled = self._pulled
        try:
            if self._info.is_async_generator:
                async for value in self._info.fn(_Feed(self)):
                    if value is not None:
                        self._produced.append(value)
            else:
                await self._info.fn(_Feed(self))
        except BaseException as exc:
            current = self._pulled
            if current is not None and not current.done():
                current.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            current = self._pulled
            if current is not None and not current.done():
                current.set_result(_END)
        del pulled

    async def _ensure_started(self) -> None:
        if self._task is not None and not self._task.done():
            return
        loop = asyncio.get_running_loop()
        self._pulled = loop.create_future()
        self._item = None
        self._task = loop.create_task(self._run(), name=f"stream:{self._info.name}")
        await self._pulled  # runs the function up to its first read

    async def feed(self, value: Any) -> list[Any]:
        """Give the function one item; return what it yielded before asking for more."""
        async with self._lock:
            await self._ensure_started()
            loop = asyncio.get_running_loop()
            self._pulled = loop.create_future()
            assert self._item is not None
            self._item.set_result(value)
            try:
                await self._pulled
            finally:
                produced, self._produced = self._produced, []
            return produced

    async def close(self) -> list[Any]:
        """End the input; return what the function yields while it finishes."""
        async with self._lock:
            if self._task is None or self._task.done():
                return []
            loop = asyncio.get_running_loop()
            self._pulled = loop.create_future()
            if self._item is not None and not self._item.done():
                self._item.set_result(_END)
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except Exception as exc:
                log.warning("stream function %s did not finish cleanly: %s", self._info.name, exc)
            produced, self._produced = self._produced, []
            return produced
