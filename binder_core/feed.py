"""A bounded live feed for pages in a browser (server-sent events), which a slow or stalled
browser can never turn into back-pressure or memory growth.

The producer appends to a ring of fixed size and wakes the writers; ``append`` is a plain
function that never waits, so whatever feeds the ring (a sampler, a consumer function)
runs at its own pace whoever watches. Each connected browser has one writer that remembers
the sequence number of the last item it sent and, when woken, sends everything newer that
the ring still holds in one event. A browser that cannot keep up gets fewer, larger events
(coalescing); one that fell further behind than the ring gets a reset with what the ring
holds. A stalled browser costs its socket's send buffer (aiohttp waits for it to drain past
its high-water mark) and one integer; a write that cannot finish within ``stall`` seconds
ends that connection. The number of connections is capped.

aiohttp is imported only when a page is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from aiohttp import web

T = TypeVar("T")

#: Renders one event from the items a browser has not seen yet; ``reset`` says the page
#: must drop what it holds (first event, or the browser fell behind the ring).
Render = Callable[[Sequence[T], bool], Any]


class Feed(Generic[T]):
    """A ring of the last ``size`` items, served to at most ``max_clients`` browsers."""

    def __init__(
        self,
        size: int,
        max_clients: int = 16,
        heartbeat: float = 15.0,
        stall: float = 30.0,
    ) -> None:
        self._items: deque[T] = deque(maxlen=size)
        #: Sequence number of the newest item (0: none yet).
        self.seq = 0
        self.max_clients = max_clients
        #: Seconds without news after which a comment line checks the connection.
        self.heartbeat = heartbeat
        #: Seconds one write may wait for a browser before the connection is dropped.
        self.stall = stall
        #: Browsers connected now.
        self.clients = 0
        self._wake: asyncio.Event | None = None
        self._closed = False

    def append(self, item: T) -> None:
        """Add ``item`` (the oldest falls out when the ring is full) and wake the writers.
        Never waits."""
        self.seq += 1
        self._items.append(item)
        self._notify()

    def items(self) -> list[T]:
        """What the ring holds, oldest first."""
        return list(self._items)

    def since(self, seq: int | None) -> tuple[list[T], bool]:
        """The items newer than ``seq``, and whether the reader must reset (it saw nothing
        yet, or the ring dropped items it had not seen, or ``seq`` is not one of ours)."""
        held = len(self._items)
        newer = self.seq - seq if seq is not None else -1
        if seq is None or newer < 0 or newer > held:
            return list(self._items), True
        return list(itertools.islice(self._items, held - newer, held)), False

    def close(self) -> None:
        """End every connection (the endpoint is stopping)."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.set()

    async def _changed(self, seq: int, timeout: float) -> None:
        """Until an item newer than ``seq`` arrives, the feed closes, or ``timeout``."""
        if self.seq != seq or self._closed:
            return
        if self._wake is None:
            self._wake = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def serve(self, request: web.Request, render: Render[T]) -> web.StreamResponse:
        """Stream the feed to one browser as server-sent events until it goes away, stalls,
        or the feed closes. A browser that reconnects with ``Last-Event-ID`` gets only what
        it missed, when the ring still holds it."""
        from aiohttp import web

        if self._closed or self.clients >= self.max_clients:
            return web.json_response(
                {"error": f"{self.max_clients} live pages are open already; close one"},
                status=503,
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-store",
                "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
            }
        )
        self.clients += 1
        try:
            await response.prepare(request)
            await self._write(request, response, b"retry: 2000\n\n")
            seq = _last_event_id(request)
            first = True
            while not self._closed:
                if first or seq != self.seq:
                    items, reset = self.since(seq)
                    seq = self.seq
                    data = json.dumps(render(items, reset), separators=(",", ":"))
                    chunk = f"id: {seq}\ndata: {data}\n\n".encode()
                    first = False
                else:
                    chunk = b": still here\n\n"
                await self._write(request, response, chunk)
                await self._changed(seq, self.heartbeat)
        except (ConnectionError, TimeoutError):
            pass  # the browser went away or stopped reading: its connection is closed
        finally:
            self.clients -= 1
        return response

    async def _write(
        self, request: web.Request, response: web.StreamResponse, chunk: bytes
    ) -> None:
        try:
            await asyncio.wait_for(response.write(chunk), self.stall)
        except TimeoutError:
            # A browser that stopped reading: drop the connection rather than buffer for it.
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None
