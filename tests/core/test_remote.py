"""The command line's client of the management endpoint (``binder_core.remote``) and the
endpoint's answers when an action fails: every refusal is a ``RemoteError`` in the
endpoint's own words (never a crash on an answer of the wrong kind), a redirect is not
followed (the token goes nowhere else), a binding that cannot start says why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from binder_core.consumer import ConsumerBinding, HandleProcessor
from binder_core.management import Management
from binder_core.properties import ManagementProperties
from binder_core.remote import RemoteError, call
from binder_core.spi import Permanent
from tests.core.test_consumer_supervision import NAME, FakeApp, FakeSubscription
from tests.support import Collector

TOKEN_ENV = "BINDER_TEST_REMOTE_TOKEN"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[dict[str, Handler]], Awaitable[str]]]:
    """Start small HTTP servers (path -> handler) on loopback; their URLs."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def ask(url: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    return await asyncio.to_thread(call, url, path, TOKEN_ENV, body)


async def test_a_binding_that_cannot_start_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    sub = FakeSubscription()
    sub.open_faults.append(Permanent("login refused for user reader"))
    binding = ConsumerBinding(NAME, sub, HandleProcessor(Collector()))  # type: ignore[arg-type]
    plan = SimpleNamespace(name=NAME, destination="words", group="g", binder="fake", direction="in")
    app = FakeApp({NAME: binding}, plan=SimpleNamespace(all=lambda: [plan]))
    management = Management(app, ManagementProperties(port=0))
    await management.start()
    try:
        with pytest.raises(RemoteError) as refused:
            await ask(management.url, f"/bindings/{NAME}", {"state": "STARTED"})
        assert str(refused.value) == (
            f"{management.url}: {NAME} could not start: Permanent: login refused for user reader"
        )
        _, described = await ask(management.url, f"/bindings/{NAME}")
        assert described["state"] == "STOPPED"
    finally:
        await management.stop()


async def test_a_redirect_is_not_followed_with_the_token(
    serve: Callable[[dict[str, Handler]], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []

    async def steal(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"status": "UP", "binders": {}, "bindings": {}})

    elsewhere = await serve({"/steal": steal})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{elsewhere}/steal")

    url = await serve({"/ready": moved})
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    with pytest.raises(RemoteError, match="302 Found"):
        await ask(url, "/ready")
    assert seen == []


async def test_answers_that_are_not_the_endpoints_are_clear_errors(
    serve: Callable[[dict[str, Handler]], Awaitable[str]],
) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>a web shop</html>", content_type="text/html")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="Internal Server Error")

    async def not_ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "DOWN", "binders": {}, "bindings": {}}, status=503)

    async def overloaded(request: web.Request) -> web.Response:
        return web.Response(status=503, text="Service Unavailable")

    url = await serve(
        {"/bindings": page, "/broken": broken, "/ready": not_ready, "/busy": overloaded}
    )
    with pytest.raises(RemoteError) as page_error:
        await ask(url, "/bindings")
    assert str(page_error.value) == (
        f"{url} is not a binder management endpoint: /bindings answered 200 with "
        "'<html>a web shop</html>'"
    )
    with pytest.raises(RemoteError, match=r": 500 Internal Server Error$"):
        await ask(url, "/broken")
    # A readiness report with 503 is an answer (the app is not ready); a bare 503 is not.
    assert await ask(url, "/ready") == (503, {"status": "DOWN", "binders": {}, "bindings": {}})
    with pytest.raises(RemoteError, match=r": 503 Service Unavailable$"):
        await ask(url, "/busy")
