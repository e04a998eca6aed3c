"""The ``binder`` command against a running app (``binder run --management-port`` in a
subprocess, on Kafka): health, bindings, pause, resume, stop and start through ``--url``,
as tables and as JSON, with their exit codes; and the token rule off loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kafka.conftest import Kit
from tests.operating.conftest import binder, management_url
from tests.support import Apps, eventually

pytestmark = pytest.mark.kafka

TOKEN_ENV = "BINDER_MANAGEMENT_TOKEN"


def uppercase_args(kit: Kit, *extra: str) -> tuple[list[str], str, str]:
    """``binder run apps.uppercase`` on Kafka with topics of this test: the arguments, the
    input and the output topic."""
    words, shouted = kit.name("words"), kit.name("shouted")
    sets = {
        "stream.binders.kafka.environment.bootstrap-servers": kit.bootstrap,
        "stream.bindings.uppercase-in-0.destination": words,
        "stream.bindings.uppercase-in-0.group": kit.name("shouters"),
        "stream.bindings.uppercase-out-0.destination": shouted,
    }
    args = ["run", "apps.uppercase", "--config", "config/uppercase", "--profile", "kafka"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return [*args, "--management-port", "0", *extra], words, shouted


def rows(table: str) -> dict[str, list[str]]:
    """A table the command printed, by the first cell of each row."""
    return {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}


async def test_health_bindings_and_control_of_a_running_app(
    kit: Kit, apps: Apps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args, words, shouted = uppercase_args(kit)
    app = apps(*args)
    url = await management_url(app)

    health = await binder("health", "--url", url)
    assert health.returncode == 0, health.stderr
    lines = health.stdout.splitlines()
    assert lines[0] == f"UP ({url})"
    table = rows("\n".join(lines[1:]))
    assert table["binder"][1:3] == ["kafka", "UP"]
    assert "uppercase-in-0 UP running; consumers: running" in " ".join(health.stdout.split())
    as_json = await binder("health", "--url", url, "--json")
    assert json.loads(as_json.stdout)["bindings"]["uppercase-in-0"]["status"] == "UP"

    await kit.produce(words, [b"hello"])
    assert [r.value for r in await kit.read(shouted, 1)] == [b"HELLO"]

    async def counted() -> bool:
        listed = await binder("bindings", "--url", url, "--json")
        by_name = {b["bindingName"]: b for b in json.loads(listed.stdout)}
        return by_name["uppercase-in-0"]["received"] == 1

    await eventually(counted, "the received count of uppercase-in-0")
    listed = await binder("bindings", "--url", url)
    assert listed.returncode == 0, listed.stderr
    table = rows(listed.stdout)
    assert table["NAME"] == [
        "NAME", "DIR", "DESTINATION", "GROUP", "BINDER", "STATE", "RECEIVED", "SENT", "DLQ"
    ]  # fmt: skip
    assert table["uppercase-in-0"][1:3] == ["in", words]
    assert table["uppercase-in-0"][5:] == ["RUNNING", "1", "1", "0"]
    assert table["uppercase-out-0"][1:3] == ["out", shouted]

    paused = await binder("pause", "uppercase-in-0", "--url", url)
    assert (paused.returncode, paused.stdout) == (0, "uppercase-in-0: PAUSED\n")
    resumed = await binder("resume", "uppercase-in-0", "--url", url, "--json")
    assert resumed.returncode == 0
    assert json.loads(resumed.stdout)["state"] == "RUNNING"

    # A stopped binding is not ready: health says so and exits 1.
    stopped = await binder("stop", "uppercase-in-0", "--url", url)
    assert (stopped.returncode, stopped.stdout) == (0, "uppercase-in-0: STOPPED\n")
    health = await binder("health", "--url", url)
    assert health.returncode == 1
    assert health.stdout.startswith(f"DOWN ({url})")
    assert rows(health.stdout)["binding"][1:3] == ["uppercase-in-0", "DOWN"]
    started = await binder("start", "uppercase-in-0", "--url", url)
    assert (started.returncode, started.stdout) == (0, "uppercase-in-0: RUNNING\n")
    assert (await binder("health", "--url", url)).returncode == 0

    # Messages sent while it was stopped are taken once it runs again.
    await kit.produce(words, [b"again"])
    assert [r.value for r in await kit.read(shouted, 2)] == [b"HELLO", b"AGAIN"]

    unknown = await binder("pause", "uppercase-in-9", "--url", url)
    assert unknown.returncode == 1
    assert unknown.stderr == f'binder: {url}: no binding named "uppercase-in-9"\n'
    output = await binder("pause", "uppercase-out-0", "--url", url)
    assert output.returncode == 1
    assert "only input bindings can be steered" in output.stderr
    assert await app.stop() == 0


async def test_nothing_listening_is_a_clear_error(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"
    for command in (["health"], ["bindings"], ["pause", "x-in-0"]):
        result = await binder(*command, "--url", url)
        assert result.returncode == 1
        assert result.stderr.startswith(f"binder: cannot reach the management endpoint at {url}")
        assert "Traceback" not in result.stderr


async def test_off_loopback_the_endpoint_needs_a_token(
    kit: Kit, apps: Apps, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args, _, _ = uppercase_args(kit, "--set", "stream.management.host=0.0.0.0")

    refused = apps(*args)
    assert await refused.wait() == 2  # a configuration error, found before connecting
    assert (
        "stream.management.host: 0.0.0.0 is reachable from other machines, so the endpoint "
        f"needs a token: set the environment variable {TOKEN_ENV}"
    ) in refused.output
    assert "started:" not in refused.output
    assert "Traceback" not in refused.output

    token = "t0ken-" + kit.name("secret")[-12:]
    app = apps(*args, env={TOKEN_ENV: token})
    reported = await management_url(app)
    assert reported.startswith("http://0.0.0.0:")
    url = reported.replace("0.0.0.0", "127.0.0.1")

    without = await binder("health", "--url", url)
    assert without.returncode == 1
    assert (
        without.stderr
        == f"binder: {url} wants a token: put it in the environment variable {TOKEN_ENV}\n"
    )
    wrong = await binder("bindings", "--url", url, env={TOKEN_ENV: "not-" + token})
    assert wrong.returncode == 1 and "wants a token" in wrong.stderr

    right = await binder("health", "--url", url, env={TOKEN_ENV: token})
    assert right.returncode == 0, right.stderr
    assert right.stdout.startswith(f"UP ({url})")
    other = await binder(
        "health", "--url", url, "--token-env", "OTHER_VAR", env={"OTHER_VAR": token}
    )
    assert other.returncode == 0
    assert await app.stop() == 0
    assert token not in app.output  # never logged


async def test_a_port_in_use_is_named(kit: Kit, apps: Apps) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args, _, _ = uppercase_args(kit)
        app = apps(*[a if a != "0" else str(port) for a in args])
        assert await app.wait() == 1
    assert (
        f"binder: stream.management.port: the endpoint cannot listen on 127.0.0.1:{port}: "
        "Address already in use; choose another port, or 0 for a free one"
    ) in app.output
    assert "Traceback" not in app.output
