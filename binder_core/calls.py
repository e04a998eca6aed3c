"""Calling the user's functions: one function or a composition, plain, async or generator,
on the event loop or in a worker thread.

Built once per binding: the hot path calls what these return directly, with no
lookups per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from binder_core.functions import Definition, FunctionInfo

#: ``value -> outputs`` through a whole definition.
Apply = Callable[[Any], Awaitable[list[Any]]]


def _call_sync(part: FunctionInfo, value: Any, out: list[Any]) -> None:
    result = part.fn(value)
    if part.is_generator:
        out.extend(v for v in result if v is not None)
    elif result is not None:
        out.append(result)


async def _call(part: FunctionInfo, value: Any, out: list[Any]) -> None:
    if part.is_async:
        result = await part.fn(value)
        if result is not None:
            out.append(result)
    elif part.is_async_generator:
        async for v in part.fn(value):
            if v is not None:
                out.append(v)
    else:
        _call_sync(part, value, out)


def _chain(parts: tuple[FunctionInfo, ...]) -> Callable[[Any], list[Any]]:
    """``value -> outputs`` through synchronous functions, on the calling thread."""

    def run_sync(value: Any) -> list[Any]:
        values = [value]
        for part in parts:
            nxt: list[Any] = []
            for v in values:
                _call_sync(part, v, nxt)
            values = nxt
            if not values:
                break
        return values

    return run_sync


def _all_sync(definition: Definition) -> bool:
    return all(not (p.is_async or p.is_async_generator) for p in definition.parts)


def compose(definition: Definition, blocking: bool) -> Apply:
    """``value -> outputs`` through every function of a composition. ``None`` ends the
    chain for that value (a filter); a generator fans out."""
    parts = definition.parts
    all_sync = _all_sync(definition)
    run_sync = _chain(parts)

    if all_sync and blocking:

        async def in_thread(value: Any) -> list[Any]:
            return await asyncio.to_thread(run_sync, value)

        return in_thread
    if all_sync:

        async def on_loop(value: Any) -> list[Any]:
            return run_sync(value)

        return on_loop

    async def run_async(value: Any) -> list[Any]:
        values = [value]
        for part in parts:
            nxt: list[Any] = []
            for v in values:
                if blocking and not (part.is_async or part.is_async_generator):
                    await asyncio.to_thread(_call_sync, part, v, nxt)
                else:
                    await _call(part, v, nxt)
            values = nxt
            if not values:
                break
        return values

    return run_async


def compose_sync(definition: Definition, blocking: bool) -> Callable[[Any], list[Any]] | None:
    """What ``compose`` builds, without the coroutine, when every part is a plain function
    run on the loop: the hot path then calls it directly instead of creating and awaiting
    a coroutine per message. None when some part must be awaited or sent to a thread."""
    if blocking or not _all_sync(definition):
        return None
    return _chain(definition.parts)


def single_function(definition: Definition, blocking: bool) -> Callable[[Any], Any] | None:
    """The user function itself, when the definition is one plain ``def`` returning one
    value (the common case): no composition machinery is needed per message."""
    if blocking or len(definition.parts) != 1:
        return None
    part = definition.parts[0]
    if part.is_async or part.is_generator or part.is_async_generator or part.reactive:
        return None
    return part.fn
