"""The operations page of the management endpoint, over HTTP (the browser tests in
tests/browser drive the same page in Chromium): who gets data, the rates the page shows,
and that a connected page never holds up the endpoint's stop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from binder_core.ops_page import HISTORY, OpsPage, Sample
from binder_core.testing import TestApp

TOKEN_ENV = "BINDER_TEST_OPS_TOKEN"
TOKEN = "ops-page-s3cret"


def shout(word: str) -> str:
    return word.upper()


def _tree() -> dict[str, Any]:
    return {
        "stream": {
            "function": {"definition": "shout"},
            "bindings": {
                "shout-in-0": {"destination": "words", "group": "g", "content-type": "text/plain"},
                "shout-out-0": {"destination": "shouts", "content-type": "text/plain"},
            },
            "management": {"port": 0, "token-env": TOKEN_ENV},
        }
    }


@pytest.fixture
async def endpoint(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestApp, str]]:
    """A running app whose endpoint (on loopback) has a token."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    async with TestApp({"shout": shout}, properties=_tree()) as app:
        assert app.app is not None
        await app.app.start_management()
        assert app.app.management is not None
        yield app, app.app.management.url


def _ops(app: TestApp) -> OpsPage:
    assert app.app is not None and app.app.management is not None
    ops = app.app.management.ops
    assert ops is not None
    return ops


async def _first_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            return dict(json.loads(line.removeprefix("data: ")))
    raise AssertionError("the feed ended without an event")


async def test_the_page_is_served_without_a_token_and_its_data_is_not(
    endpoint: tuple[TestApp, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, url = endpoint
    port = _ops(app).port
    async with aiohttp.ClientSession() as http:
        # The page and its files carry no data: a plain link opens them.
        async with http.get(f"{url}/", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/ops/"
        async with http.get(f"{url}/ops/") as r:
            assert r.status == 200
            assert "text/html" in r.headers["Content-Type"]
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert 'src="ops.js"' in await r.text()
        for name in ("ops.js", "ops.css"):
            async with http.get(f"{url}/ops/{name}") as r:
                assert r.status == 200, name

        # No token, a wrong one, or a made-up cookie: no data, no cookie.
        cookie = {f"binder-ops-{port}": "0" * 64}
        async with http.get(f"{url}/ops/events") as r:
            assert r.status == 401
        async with http.get(f"{url}/ops/events", cookies=cookie) as r:
            assert r.status == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        async with http.get(f"{url}/ops/events", headers=wrong) as r:
            assert r.status == 401
        async with http.post(f"{url}/ops/session", headers=wrong) as r:
            assert r.status == 401 and "Set-Cookie" not in r.headers
        async with http.post(f"{url}/ops/session") as r:
            assert r.status == 401 and "Set-Cookie" not in r.headers
        async with http.get(f"{url}/bindings") as r:
            assert r.status == 401

    # (unsafe: aiohttp's jar otherwise ignores cookies of a host given by IP address;
    # browsers keep them.)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        # The token as a bearer header buys a cookie for reading: not the token itself.
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(f"{url}/ops/session", headers=bearer) as r:
            assert r.status == 200
            set_cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        assert TOKEN not in set_cookie
        async with http.get(f"{url}/ops/events") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/event-stream"
            event = await _first_event(r)
        assert event["reset"] is True
        assert [b["bindingName"] for b in event["bindings"]] == ["shout-in-0", "shout-out-0"]
        async with http.get(f"{url}/bindings/shout-in-0") as r:
            assert r.status == 200
        # Steering needs the bearer header: a cookie another site could make a browser
        # send does not pause anything.
        async with http.post(f"{url}/bindings/shout-in-0", json={"state": "PAUSED"}) as r:
            assert r.status == 401
        async with http.post(
            f"{url}/bindings/shout-in-0", json={"state": "PAUSED"}, headers=bearer
        ) as r:
            assert r.status == 200 and (await r.json())["state"] == "PAUSED"

    assert TOKEN not in caplog.text


async def test_without_a_token_on_loopback_the_page_needs_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with TestApp({"shout": shout}, properties=_tree()) as app:
        assert app.app is not None
        await app.app.start_management()
        assert app.app.management is not None
        url = app.app.management.url
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/ops/session") as r:
                assert r.status == 200 and (await r.json()) == {"token": False}
                assert "Set-Cookie" not in r.headers
            async with http.get(f"{url}/ops/events") as r:
                assert r.status == 200
                assert (await _first_event(r))["bindings"]


async def test_another_site_cannot_make_a_browser_steer_an_endpoint_without_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A page anywhere may make the browser post text/plain to 127.0.0.1 without a CORS
    # preflight; only JSON steers a binding (and JSON from another origin needs a
    # preflight the endpoint never grants).
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with TestApp({"shout": shout}, properties=_tree()) as app:
        assert app.app is not None
        await app.app.start_management()
        assert app.app.management is not None
        url = app.app.management.url
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{url}/bindings/shout-in-0",
                data='{"state": "PAUSED"}',
                headers={"Content-Type": "text/plain", "Origin": "http://elsewhere.example"},
            ) as r:
                assert r.status == 415
                assert "application/json" in (await r.json())["error"]
            assert app.app.bindings["shout-in-0"].state.value == "running"
            async with http.post(f"{url}/bindings/shout-in-0", json={"state": "PAUSED"}) as r:
                assert r.status == 200
            assert app.app.bindings["shout-in-0"].state.value == "paused"


async def test_rates_are_sampled_from_the_counters_and_pause_drops_them_to_zero(
    endpoint: tuple[TestApp, str],
) -> None:
    app, _ = endpoint
    ops = _ops(app)
    before = ops.feed.seq
    ops.sample()  # the first sample of a binding has nothing to compare with
    for word in ("a", "b", "c"):
        await app.send("words", word)
    await app.receive_all("shouts", 3)
    ops.sample()
    rates = ops.feed.items()[-1].rates
    assert rates["shout-in-0"][0] > 0 and rates["shout-in-0"][1] > 0
    assert rates["shout-out-0"] == (0.0, rates["shout-out-0"][1])
    assert rates["shout-out-0"][1] > 0

    assert app.app is not None
    await app.app.bindings["shout-in-0"].pause()
    await app.send("words", "held")
    ops.sample()
    assert ops.feed.items()[-1].rates["shout-in-0"] == (0.0, 0.0)
    assert ops.feed.seq > before

    await app.app.bindings["shout-in-0"].resume()
    await app.receive("shouts")
    ops.sample()
    assert ops.feed.items()[-1].rates["shout-in-0"][0] > 0


async def test_the_ring_of_samples_is_bounded(endpoint: tuple[TestApp, str]) -> None:
    app, _ = endpoint
    feed = _ops(app).feed
    for i in range(HISTORY * 2):
        feed.append(Sample(float(i), {}))
    held = feed.items()
    assert len(held) == HISTORY
    assert held[-1].time == HISTORY * 2 - 1


async def test_an_open_page_does_not_hold_up_the_endpoints_stop(
    endpoint: tuple[TestApp, str],
) -> None:
    app, url = endpoint
    assert app.app is not None and app.app.management is not None
    management = app.app.management
    async with aiohttp.ClientSession() as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{url}/ops/events", headers=bearer) as r:
            await _first_event(r)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await management.stop()
            # aiohttp waits up to a minute for open requests; the feed ends at once.
            assert loop.time() - started < 5.0


async def test_an_endpoint_stopped_as_it_starts_stops_at_once(
    endpoint: tuple[TestApp, str],
) -> None:
    # Its samplers are in their first round (the binders' health): stopping must not wait
    # for their next round (on Python 3.11 a wait_for finishing as it is cancelled kept
    # the metrics sampler alive, and the stop waited for it for good).
    app, _ = endpoint
    assert app.app is not None and app.app.management is not None
    stopping = asyncio.ensure_future(app.app.management.stop())
    done, _ = await asyncio.wait([stopping], timeout=2.0)
    assert stopping in done, "the endpoint did not stop within 2 s"


def test_nothing_of_the_pages_is_imported_when_the_endpoint_is_off() -> None:
    # binder run stays quick to start: the endpoint, its page, its feed and aiohttp are
    # imported only when stream.management.port is set.
    import subprocess
    import sys

    from tests.support import REPO

    code = (
        "import sys\n"
        "from binder_core import cli\n"
        "try:\n"
        "    cli.main(['run', 'apps.market', '--run-for', '0.2', '--log-level', 'ERROR'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'\n"
        "      or m in ('binder_core.management', 'binder_core.ops_page', 'binder_core.feed')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
