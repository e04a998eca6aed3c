"""The management endpoint of a running app (memory binder): health, readiness, bindings
and their control, metrics, and the token rule."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from binder_core.remote import RemoteError, call
from binder_core.runtime import StartError
from binder_core.spi import BindingState
from binder_core.testing import TestApp

TOKEN_ENV = "BINDER_TEST_MANAGEMENT_TOKEN"


def shout(word: str) -> str:
    return word.upper()


def _tree(**management: Any) -> dict[str, Any]:
    return {
        "stream": {
            "function": {"definition": "shout"},
            "bindings": {
                "shout-in-0": {"destination": "words", "group": "g", "content-type": "text/plain"},
                "shout-out-0": {"destination": "shouts", "content-type": "text/plain"},
            },
            "management": {"port": 0, "token-env": TOKEN_ENV, **management},
        }
    }


@pytest.fixture
async def running() -> AsyncIterator[tuple[TestApp, str]]:
    async with TestApp({"shout": shout}, properties=_tree()) as app:
        assert app.app is not None
        await app.app.start_management()
        assert app.app.management is not None
        yield app, app.app.management.url


async def get(url: str, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(call, url, path, TOKEN_ENV)


async def post(url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    return await asyncio.to_thread(call, url, path, TOKEN_ENV, body)


async def test_health_and_readiness_per_binder_and_binding(running: tuple[TestApp, str]) -> None:
    _, url = running
    assert await get(url, "/health") == (200, {"status": "UP"})
    status, ready = await get(url, "/ready")
    assert status == 200
    assert ready["status"] == "UP"
    assert ready["binders"]["memory"]["status"] == "UP"
    assert ready["bindings"]["shout-in-0"] == {
        "status": "UP",
        "state": "running",
        "consumers": ["running"],
    }
    # A stopped binding is not ready, and says so.
    await post(url, "/bindings/shout-in-0", {"state": "STOPPED"})
    status, ready = await get(url, "/ready")
    assert status == 503
    assert ready["status"] == "DOWN"
    assert ready["bindings"]["shout-in-0"]["status"] == "DOWN"


async def test_bindings_are_listed_and_steered_with_springs_words(
    running: tuple[TestApp, str],
) -> None:
    app, url = running
    _, listed = await get(url, "/bindings")
    by_name = {b["bindingName"]: b for b in listed}
    assert by_name["shout-in-0"]["name"] == "words"
    assert by_name["shout-in-0"]["group"] == "g"
    assert by_name["shout-in-0"]["state"] == "RUNNING"
    assert by_name["shout-out-0"]["input"] is False

    _, paused = await post(url, "/bindings/shout-in-0", {"state": "PAUSED"})
    assert paused["state"] == "PAUSED"
    assert app.app is not None
    assert app.app.bindings["shout-in-0"].state is BindingState.PAUSED
    await app.send("words", "held")
    with pytest.raises(TimeoutError):
        await app.receive("shouts", timeout=0.3)
    _, resumed = await post(url, "/bindings/shout-in-0", {"state": "RESUMED"})
    assert resumed["state"] == "RUNNING"
    assert (await app.receive("shouts")).payload == b"HELD"
    _, one = await get(url, "/bindings/shout-in-0")
    assert one["received"] == 1 and one["processed"] == 1 and one["sent"] == 1


async def test_bad_requests_get_clear_answers(running: tuple[TestApp, str]) -> None:
    _, url = running
    with pytest.raises(RemoteError, match="no binding named"):
        await get(url, "/bindings/nope-in-0")
    with pytest.raises(RemoteError, match="STOPPED"):
        await post(url, "/bindings/shout-in-0", {"state": "ASLEEP"})
    with pytest.raises(RemoteError, match="output binding"):
        await post(url, "/bindings/shout-out-0", {"state": "PAUSED"})


async def test_metrics_count_per_binding(running: tuple[TestApp, str]) -> None:
    app, url = running
    for w in ("a", "b", "c"):
        await app.send("words", w)
    await app.receive_all("shouts", 3)
    assert app.app is not None
    management = app.app.management
    assert management is not None
    await management.sampler.sample()
    body, _ = await asyncio.to_thread(_scrape, url)

    def value(metric: str) -> float:
        found = re.search(rf"^{re.escape(metric)} ([0-9.e+]+)$", body, re.MULTILINE)
        assert found, f"{metric} not in the scrape"
        return float(found.group(1))

    assert value('binder_messages_received_total{binding="shout-in-0"}') == 3
    assert value('binder_messages_processed_total{binding="shout-in-0"}') == 3
    assert value('binder_messages_sent_total{binding="shout-out-0"}') == 3
    assert value('binder_messages_dead_lettered_total{binding="shout-in-0"}') == 0
    assert value('binder_batch_duration_seconds_count{binding="shout-in-0"}') >= 1
    assert value('binder_binder_up{binder="memory"}') == 1
    assert value('binder_queue_depth{binding="shout-in-0",queue="g"}') == 0
    assert value('binder_binding_state{binding="shout-in-0",state="running"}') == 1


def _scrape(url: str) -> tuple[str, str]:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        return response.read().decode(), response.headers["Content-Type"]


async def test_a_token_is_required_off_loopback_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with TestApp({"shout": shout}, properties=_tree(host="0.0.0.0")) as app:
        assert app.app is not None
        with pytest.raises(StartError, match="token"):
            await app.app.start_management()
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    async with TestApp({"shout": shout}, properties=_tree(host="0.0.0.0")) as app:
        assert app.app is not None
        await app.app.start_management()
        assert app.app.management is not None
        url = f"http://127.0.0.1:{app.app.management.port}"
        assert (await get(url, "/health"))[0] == 200
        monkeypatch.setenv(TOKEN_ENV, "wrong")
        with pytest.raises(RemoteError, match="wants a token"):
            await get(url, "/bindings")
        monkeypatch.delenv(TOKEN_ENV)
        with pytest.raises(RemoteError, match="wants a token"):
            await get(url, "/metrics")


async def test_a_request_for_another_host_name_is_refused_without_a_token() -> None:
    """DNS rebinding: a page at evil.example whose name resolves to 127.0.0.1 reaches a
    tokenless endpoint with its own name in Host; it gets no data and cannot steer."""
    import urllib.error
    import urllib.request

    tree = _tree()
    del tree["stream"]["management"]["token-env"]
    async with TestApp({"shout": shout}, properties=tree) as app:
        assert app.app is not None
        await app.app.start_management()
        assert app.app.management is not None
        port = app.app.management.port

        def status(host: str) -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/bindings")
            request.add_header("Host", host)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await asyncio.to_thread(status, f"evil.example:{port}") == 403
        assert await asyncio.to_thread(status, f"127.0.0.1:{port}") == 200
        assert await asyncio.to_thread(status, f"localhost:{port}") == 200
        assert await asyncio.to_thread(status, f"[::1]:{port}") == 200


async def test_the_command_line_sends_a_binding_name_as_one_path_segment(
    running: tuple[TestApp, str],
) -> None:
    """``shout-in-0?x`` is no binding: sent unencoded, its ``?x`` would be taken for a query
    and the command would pause ``shout-in-0``."""
    import subprocess
    import sys
    from pathlib import Path

    app, url = running
    command = [str(Path(sys.executable).with_name("binder")), "pause", "shout-in-0?x"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, "--url", url, "--token-env", TOKEN_ENV],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "shout-in-0?x" in done.stderr, done.stderr
    assert app.app is not None
    assert app.app.bindings["shout-in-0"].state is BindingState.RUNNING
