"""The walk-throughs of README.md and the guide, run command by command as a reader runs
them (one terminal each, from the repository root), and their output compared with what
the page shows.

The only changes to the documented commands: destinations get names of their own, so
concurrent tests never share a topic, the management port is a free one, and the brokers
are the test suite's (``KAFKA_BOOTSTRAP_SERVERS`` and friends, the local ones by default).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.brokers import skip_or_fail
from tests.docs.blocks import by_id, commands
from tests.docs.processes import Terminal, argv, run
from tests.support import DEADLINE

BROKER = {
    "kafka": ("kafka", pytest.mark.kafka),
    "rabbit": ("rabbit", pytest.mark.rabbit),
}


def _broker_override(broker: str, kafka_bootstrap: str | None, rabbit_url: str | None) -> list[str]:
    if broker == "kafka":
        return ["--set", f"stream.binders.kafka.environment.bootstrap-servers={kafka_bootstrap}"]
    return ["--set", f"stream.binders.rabbit.environment.uri={rabbit_url}"]


@pytest.mark.parametrize(
    ("walk", "seen", "broker"),
    [
        pytest.param(w, s, b, marks=BROKER[b][1], id=f"{w}-{b}")
        for w, s in (("readme-send-and-see", "readme-seen"), ("tour-send-and-see", "tour-seen"))
        for b in BROKER
    ],
)
def test_send_a_message_and_see_it(
    walk: str,
    seen: str,
    broker: str,
    request: pytest.FixtureRequest,
    unique_name: Callable[[str], str],
) -> None:
    bootstrap = request.getfixturevalue("kafka_bootstrap") if broker == "kafka" else None
    url = request.getfixturevalue("rabbit_url") if broker == "rabbit" else None
    app_cmd, tail_cmd, send_cmd = (argv(c) for c in commands(by_id(walk)))
    words, shouted = unique_name("words"), unique_name("shouted")
    where = _broker_override(broker, bootstrap, url)

    def reader(cmd: list[str]) -> list[str]:
        """The documented command, on this broker, with this test's destinations."""
        cmd = ["rabbit" if (w == "kafka" and broker == "rabbit") else w for w in cmd]
        cmd = [{"words": words, "shouted": shouted}.get(w, w) for w in cmd]
        return [*cmd, *where]

    assert app_cmd[1:3] == ["run", "apps.uppercase"] and tail_cmd[1:3] == ["tail", "shouted"]
    assert send_cmd[1:4] == ["send", "words", "hello"]
    app = Terminal(
        [
            *reader(app_cmd),
            "--set", f"stream.bindings.uppercase-in-0.destination={words}",
            "--set", f"stream.bindings.uppercase-out-0.destination={shouted}",
        ]
    )  # fmt: skip
    tail = None
    try:
        app.stderr_line("started:", DEADLINE)
        tail = Terminal(reader(tail_cmd))
        tail.stderr_line(f"tailing {shouted} on binder {broker} as an anonymous subscriber")
        sent = run(reader(send_cmd))
        assert sent.returncode == 0, sent.stderr
        assert f"sent 5 bytes (text/plain) to {words}" in sent.stderr
        shown = by_id(seen).text.strip()
        assert tail.stdout_line("HELLO", DEADLINE).strip() == shown
        assert tail.interrupt() == 0
        assert app.interrupt() == 0
    finally:
        app.kill()
        if tail is not None:
            tail.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.strip().splitlines()[1:]}


@pytest.mark.parametrize(
    ("walk", "shown"), [("readme-watch", "readme-watched"), ("tour-watch", "tour-watched")]
)
def test_watch_the_memory_demo_from_outside(walk: str, shown: str) -> None:
    run_cmd, ask_cmd = (argv(c) for c in commands(by_id(walk)))
    port = str(_free_port())
    run_cmd = [port if w == "8081" else w for w in run_cmd]
    ask_cmd = [w.replace(":8081", f":{port}") for w in ask_cmd]
    assert "--management-port" in run_cmd and f"http://127.0.0.1:{port}" in ask_cmd
    demo = Terminal(run_cmd)
    try:
        demo.stderr_line("management endpoint at", DEADLINE)
        documented = by_id(shown).text
        expected = _rows(documented)
        got: dict[str, list[str]] = {}
        for _ in range(100):  # until the demo has moved some ticks, as a reader would see
            answer = run(ask_cmd)
            assert answer.returncode == 0, answer.stderr
            assert answer.stdout.splitlines()[0].split() == documented.splitlines()[0].split()
            got = _rows(answer.stdout)
            if all(int(got[name][6]) > 0 for name in ("price_alerts-in-0", "audit-in-0")):
                break
        assert got.keys() == expected.keys()
        for name, row in expected.items():
            assert got[name][:6] == row[:6], name  # name, dir, destination, group, binder, state
            counts = got[name][6:]
            assert all(c == "-" or c.isdigit() for c in counts), counts
        assert int(got["audit-in-0"][6]) > 0 and int(got["ticker-out-0"][7]) > 0
        assert demo.interrupt() == 0
    finally:
        demo.kill()


def test_bindings_of_the_first_function_are_as_shown() -> None:
    [command] = commands(by_id("tour-bindings"))
    result = run(argv(command))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == by_id("tour-bindings-shown").text.strip()


def test_configuration_mistakes_are_reported_as_shown(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "application.yaml").write_text(by_id("config-mistakes").text, encoding="utf-8")
    result = run(argv(".venv/bin/binder config"), cwd=tmp_path)
    assert result.returncode == 2
    documented = by_id("config-mistakes-shown").text.strip()
    installed = re.search(r"installed binder types: (.*)$", result.stderr, re.M)
    if installed and installed[1] != "kafka, memory, rabbit, redis":
        skip_or_fail(
            f"the page shows the types of a full install; here: {installed[1]}",
            "the test command installs every plugin",
        )
    # The same lines; their order follows validation, which the page does not promise.
    got = result.stderr.strip().splitlines()
    shown = documented.splitlines()
    assert got[0] == shown[0] and sorted(got[1:]) == sorted(shown[1:])
