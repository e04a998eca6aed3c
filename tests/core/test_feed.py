"""The live feed behind the pages: bounded, coalescing, and a stalled browser costs the
others (and the producer) nothing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from binder_core.feed import Feed


def test_since_gives_what_a_reader_has_not_seen_or_a_reset() -> None:
    feed: Feed[int] = Feed(3)
    assert feed.since(None) == ([], True)
    for i in range(1, 6):
        feed.append(i)
    assert feed.seq == 5
    assert feed.items() == [3, 4, 5]
    assert feed.since(5) == ([], False)
    assert feed.since(3) == ([4, 5], False)
    assert feed.since(2) == ([3, 4, 5], False)
    # Fell behind the ring, or a sequence number of another process: everything, reset.
    assert feed.since(1) == ([3, 4, 5], True)
    assert feed.since(9) == ([3, 4, 5], True)


def _render(items: Sequence[Any], reset: bool) -> dict[str, Any]:
    return {"items": list(items), "reset": reset}


@pytest.fixture
async def served() -> AsyncIterator[tuple[Feed[Any], str]]:
    feed: Feed[Any] = Feed(50, max_clients=3, stall=0.5)

    async def events(request: web.Request) -> web.StreamResponse:
        return await feed.serve(request, _render)

    app = web.Application()
    app.add_routes([web.get("/events", events)])
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield feed, f"http://127.0.0.1:{port}/events"
    finally:
        feed.close()
        await runner.cleanup()


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    seq = 0
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            seq = int(line.removeprefix("id: "))
        elif line.startswith("data: "):
            yield seq, json.loads(line.removeprefix("data: "))


async def test_a_reader_behind_gets_one_event_with_all_it_missed(
    served: tuple[Feed[Any], str],
) -> None:
    feed, url = served
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        events = _events(response)
        assert await anext(events) == (0, {"items": [], "reset": True})
        for i in range(10):  # no await between: the writer wakes once for all ten
            feed.append(i)
        assert await anext(events) == (10, {"items": list(range(10)), "reset": False})
        for i in range(10, 100):  # more than the ring holds
            feed.append(i)
        seq, event = await anext(events)
        assert seq == 100
        assert event == {"items": list(range(50, 100)), "reset": True}


async def test_a_reconnecting_reader_gets_only_what_it_missed(
    served: tuple[Feed[Any], str],
) -> None:
    feed, url = served
    for i in range(5):
        feed.append(i)
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Last-Event-ID": "3"}) as response,
    ):
        assert await anext(_events(response)) == (5, {"items": [3, 4], "reset": False})


async def test_a_stalled_reader_is_dropped_and_never_holds_up_the_others(
    served: tuple[Feed[Any], str],
) -> None:
    feed, url = served
    port = int(url.split(":")[2].split("/")[0])
    # A browser that stopped reading: a tiny receive buffer, never read.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stalled, ("127.0.0.1", port))
    await loop.sock_sendall(stalled, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    big = "x" * 200_000
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            events = _events(response)
            await anext(events)
            while feed.clients < 2:  # both readers connected before the news flows
                await asyncio.sleep(0.01)
            deadline = loop.time() + 10.0
            while feed.clients > 1:
                assert loop.time() < deadline, "the stalled reader was never dropped"
                feed.append(big)  # never waits, whoever reads
                seq, event = await anext(events)  # the reader that reads gets each item
                assert seq == feed.seq and event["items"][-1] == big
                await asyncio.sleep(0.05)  # the stalled writer's clock runs meanwhile
            # The stalled reader cost a bounded ring and was cut off; the other reads on.
            assert len(feed.items()) <= 50
            feed.append("after")
            assert (await anext(events))[1]["items"] == ["after"]
    finally:
        stalled.close()


async def test_readers_past_the_cap_are_refused(served: tuple[Feed[Any], str]) -> None:
    _, url = served
    async with aiohttp.ClientSession() as http:
        open_ = [await http.get(url) for _ in range(3)]
        try:
            for response in open_:
                await anext(_events(response))
            async with http.get(url) as refused:
                assert refused.status == 503
                assert "close one" in (await refused.json())["error"]
        finally:
            for response in open_:
                response.close()
