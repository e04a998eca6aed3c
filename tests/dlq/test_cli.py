"""``binder dlq`` as a user runs it: against each broker through its configuration, with a
replay killed with SIGKILL half-way and run again (every message counted: none lost, at
most the chunk in flight twice), and against a running app's endpoint for the memory
binder."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.dlq.conftest import Lab, gather
from tests.operating.conftest import binder, management_url, write_config
from tests.support import DEADLINE, AppProcess, Apps, eventually

#: Letters per round trip in the killed replay: at most this many are replayed twice.
BATCH = 1
LETTERS = 600


async def _kill_part_way(replay: AppProcess, lab: Lab) -> None:
    """SIGKILL the replay while letters are left, however fast its broker is: the replay
    runs half a millisecond at a time and is stopped (SIGSTOP) while the queue is looked
    at; it is killed once half the letters are gone from the queue (RabbitMQ no longer
    counts the ones a consumer holds unacknowledged, so "some gone" is not yet "some
    replayed"). A replay of one letter per chunk needs a few round trips per letter, so
    300 of them take many such slices."""
    pid = replay.proc.pid
    deadline = time.monotonic() + DEADLINE
    while replay.running() and time.monotonic() < deadline:
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.0005)  # noqa: ASYNC251 -- the replay's time slice, not a wait for it
        os.kill(pid, signal.SIGSTOP)
        if await lab.size() <= LETTERS // 2:
            break
    replay.kill()


def _config(tmp_path: Path, lab: Lab) -> Path:
    return write_config(
        tmp_path / "config",
        {
            "stream": {
                "default-binder": "lab",
                "binders": {"lab": {"type": lab.kind, "environment": lab.environment}},
                "bindings": {"orders-in-0": {"destination": lab.destination, "group": lab.group}},
            }
        },
    )


@pytest.mark.parametrize("lab", ["kafka", "rabbit", "redis"], indirect=True)
async def test_a_replay_killed_half_way_loses_nothing(lab: Lab, apps: Apps, tmp_path: Path) -> None:
    payloads = [f"bad-{i:04d}".encode() for i in range(LETTERS)]
    await lab.dead_letter(payloads, bad=LETTERS)
    config = _config(tmp_path, lab)

    listed = await binder("dlq", "list", "orders-in-0", "--config", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    (queue,) = json.loads(listed.stdout)["queues"]
    assert (queue["queue"], queue["binding"], queue["count"]) == (
        lab.queue_name,
        "orders-in-0",
        LETTERS,
    )
    assert queue["reasons"] == [{"reason": "ValueError: bad price: not a number", "count": LETTERS}]

    replay = apps("dlq", "replay", "orders-in-0", "--config", str(config), "--batch", str(BATCH))
    await _kill_part_way(replay, lab)
    left = await lab.size()
    assert 0 < left < LETTERS, f"the replay was not killed half-way ({left} left):\n{replay.output}"

    again = await binder("dlq", "replay", "orders-in-0", "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert "failed 0" in again.stdout
    assert await lab.size() == 0

    await lab.consume(lambda m: None)
    await gather(lab, LETTERS)
    await eventually(
        lambda: set(m.payload for m in lab.received) == set(payloads), "every payload back"
    )
    seen = Counter(m.payload for m in lab.received)
    twice = sum(n - 1 for n in seen.values())
    assert twice <= BATCH, f"{twice} duplicates, more than the chunk in flight"


@pytest.mark.parametrize("lab", ["kafka", "rabbit", "redis"], indirect=True)
async def test_show_and_purge_by_binding_name(lab: Lab, tmp_path: Path) -> None:
    await lab.dead_letter([b"bad-\x07bell", b"good"], bad=1)
    config = _config(tmp_path, lab)
    show = await binder("dlq", "show", "orders-in-0", "--config", str(config))
    assert show.returncode == 0, show.stderr
    assert f"{lab.queue_name}: 1 waiting, 1 shown" in show.stdout
    assert "reason:  ValueError: bad price: not a number" in show.stdout
    assert "bad-\\x07bell" in show.stdout and "\x07" not in show.stdout

    refused = await binder("dlq", "purge", "orders-in-0", "--config", str(config))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert await lab.size() == 1
    purged = await binder("dlq", "purge", "orders-in-0", "--config", str(config), "--yes")
    assert purged.returncode == 0, purged.stderr
    assert await lab.size() == 0


async def test_a_missing_queue_is_a_clear_error(tmp_path: Path, kafka_bootstrap: str) -> None:
    config = write_config(
        tmp_path / "config",
        {
            "stream": {
                "binders": {
                    "k": {"type": "kafka", "environment": {"bootstrap-servers": kafka_bootstrap}}
                }
            }
        },
    )
    done = await binder("dlq", "show", "error.nothing-here.g", "--config", str(config))
    assert done.returncode == 1
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


async def test_memory_dead_letters_through_the_running_app(apps: Apps, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config",
        {
            "stream": {
                "function": {"definition": "feed;orders"},
                "bindings": {
                    "feed-out-0": {"destination": "orders"},
                    "orders-in-0": {
                        "destination": "orders",
                        "group": "g",
                        "consumer": {"max-attempts": 1},
                    },
                },
            }
        },
    )
    app = apps("run", "tests.dlq.orders_app", "--config", str(config), "--management-port", "0")
    url = await management_url(app)

    async def three() -> bool:
        got = await binder("dlq", "list", "--url", url, "--json")
        queues = json.loads(got.stdout)["queues"] if got.returncode == 0 else []
        return bool(queues) and queues[0]["count"] == 3

    await eventually(three, "three dead letters in the app")
    listed = await binder("dlq", "list", "--url", url)
    assert "error.orders.g" in listed.stdout and "3x ValueError: bad price" in listed.stdout

    local = await binder("dlq", "list", "--config", str(config))
    assert local.returncode == 2 and "--url" in local.stderr

    replay = await binder("dlq", "replay", "error.orders.g", "--url", url, "--reason", "BAD PRICE")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 3" in replay.stdout
    await eventually(lambda: app.output.count("replayed=1") == 3, "the replayed orders processed")
    listed = await binder("dlq", "list", "--url", url, "--json")
    assert json.loads(listed.stdout)["queues"][0]["count"] == 0
    assert await app.stop() == 0
