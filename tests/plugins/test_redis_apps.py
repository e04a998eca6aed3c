"""The Redis plugin used as a user would: installed, then named in YAML. The example
market app and the command line run on it with no code change, and a consumer killed with
SIGKILL mid-stream has its pending entries claimed by the next member of its group."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from binder_core.message import Message
from binder_core.properties import ProducerProperties
from binder_core.spi import ConsumerSpec, ProducerSpec
from tests.plugins.conftest import PREFIX, Admin
from tests.support import REPO, Apps, Collector, eventually

pytestmark = pytest.mark.redis

Namer = Callable[[str], str]


def redis_profile(config_dir: Path, redis_url: str, extra: dict[str, Any] | None = None) -> None:
    """application-redis.yaml: the whole switch to Redis, in YAML."""
    tree: dict[str, Any] = {
        "stream": {
            "default-binder": "r",
            "binders": {"r": {"type": "redis", "environment": {"url": redis_url}}},
            **(extra or {}),
        }
    }
    (config_dir / "application-redis.yaml").write_text(yaml.safe_dump(tree))


def sets(**bindings: str) -> list[str]:
    out = []
    for key, value in bindings.items():
        out += ["--set", f"stream.bindings.{key}={value}"]
    return out


async def test_market_runs_on_redis_by_yaml_alone(
    binder: Any, admin: Admin, apps: Apps, unique_name: Namer, redis_url: str, tmp_path: Path
) -> None:
    ticks, alerts = unique_name("ticks"), unique_name("alerts")
    admin.track(ticks, alerts)
    (tmp_path / "application.yaml").write_text((REPO / "config" / "application.yaml").read_text())
    redis_profile(tmp_path, redis_url)
    watch = Collector()
    await binder.consumer(ConsumerSpec("watch", ticks, "watch"), watch)
    app = apps(
        "run", "apps.market", "--config", str(tmp_path), "--profile", "redis",
        "--set", "stream.poller.fixed-delay=5",
        *sets(**{
            "ticker-out-0.destination": ticks,
            "price_alerts-in-0.destination": ticks,
            "audit-in-0.destination": ticks,
            "price_alerts-out-0.destination": alerts,
            "notify-in-0.destination": alerts,
        }),
    )  # fmt: skip
    await watch.wait_for(60)
    await eventually(lambda: "audit: 50 ticks recorded" in app.output, "the audit tally")
    assert {m.headers["contentType"] for m in watch.messages} == {"application/json"}
    assert await app.stop() == 0, app.output
    groups = await admin.groups(ticks)
    assert {"alerts", "audit", "watch"} <= set(groups), "required-groups and consumers"
    for group in ("alerts", "audit"):
        assert groups[group]["pending"] == 0, f"{group}: everything acknowledged at stop"
        assert groups[group]["consumers"] == 0, f"{group}: its consumers left cleanly"
    assert (await admin.groups(alerts))["notifier"]["pending"] == 0


async def test_send_and_tail_from_the_command_line(
    admin: Admin, apps: Apps, unique_name: Namer, redis_url: str, tmp_path: Path
) -> None:
    dest = unique_name("cli")
    admin.track(dest)
    redis_profile(tmp_path, redis_url)
    common = ["--config", str(tmp_path), "--profile", "redis"]
    tail = apps("tail", dest, "--group", "peek", "--count", "2", *common)
    await eventually(lambda: _has_group(admin, dest, "peek"), "tail to create its group")
    for n in (1, 2):
        send = apps("send", dest, f'{{"n": {n}}}', "--header", "x-k=v", *common)
        assert await send.wait() == 0, send.output
    assert await tail.wait() == 0, "tail exits after 2 messages"
    assert '{"n": 1}' in tail.output and '{"n": 2}' in tail.output
    assert "'x-k': 'v'" in tail.output


async def _has_group(admin: Admin, dest: str, group: str) -> bool:
    return group in await admin.groups(dest)


async def test_config_dump_masks_the_redis_password(
    apps: Apps, tmp_path: Path, redis_url: str
) -> None:
    redis_profile(tmp_path, "redis://:url-pw-77@127.0.0.1:6379/0")
    proc = apps(
        "config", "--config", str(tmp_path), "--profile", "redis",
        "--set", "stream.binders.r.environment.password=s3cr3t-zebra",
    )  # fmt: skip
    assert await proc.wait() == 0, proc.output
    assert "s3cr3t-zebra" not in proc.output and "url-pw-77" not in proc.output
    assert "environment.password" in proc.output


async def test_a_consumer_killed_mid_batch_has_its_entries_claimed(
    binder: Any, admin: Admin, apps: Apps, unique_name: Namer, redis_url: str, tmp_path: Path
) -> None:
    words, shouted = unique_name("words"), unique_name("shouted")
    admin.track(words, shouted)
    consumer = {"claim-idle": 1000, "claim-interval": 200, "batch-size": 50}
    redis_profile(
        tmp_path,
        redis_url,
        {
            "function": {"definition": "upper"},
            "bindings": {
                "upper-in-0": {
                    "destination": words,
                    "group": "shouters",
                    "content-type": "text/plain",
                },
                "upper-out-0": {"destination": shouted, "content-type": "text/plain"},
            },
            "redis": {"bindings": {"upper-in-0": {"consumer": consumer}}},
        },
    )
    out = Collector()
    await binder.consumer(ConsumerSpec("check", shouted, "check"), out)
    producer = await binder.producer(
        ProducerSpec("in", words, ProducerProperties(required_groups=["shouters"]))
    )
    sent = [f"w{i}" for i in range(400)]
    await producer.send([Message(w.encode(), {"contentType": "text/plain"}) for w in sent])
    run = ["run", "tests.held_upper", "--config", str(tmp_path), "--profile", "redis"]
    first = apps(*run, env={"BINDER_TEST_HOLD": "w200"})  # its batch holding w200 never ends
    await out.wait_for(20)
    await eventually(lambda: _pending_above(admin, words, 0), "a batch in flight")
    first.kill()  # SIGKILL mid-batch: its entries stay pending under its consumer name
    held = await admin.client.xpending(PREFIX + words, "shouters")
    assert held["pending"] > 0, "the dead consumer holds entries"
    second = apps(*run)
    await eventually(lambda: len(set(out.payloads)) >= 400, "every word shouted", 60)
    counts = collections.Counter(out.payloads)
    assert set(counts) == {w.upper().encode() for w in sent}, "nothing lost"
    print(f"\nSIGKILL: {held['pending']} entries claimed, {sum(counts.values()) - 400} duplicates")
    await eventually(lambda: _pending_is(admin, words, 0), "everything acknowledged")
    assert await second.stop() == 0, second.output
    assert "took over" in second.output and "a consumer died?" in second.output


async def _pending_above(admin: Admin, dest: str, n: int) -> bool:
    return await admin.pending(dest, "shouters") > n


async def _pending_is(admin: Admin, dest: str, n: int) -> bool:
    return await admin.pending(dest, "shouters") == n
