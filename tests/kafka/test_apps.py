"""The example apps on Kafka by profile alone, ``binder send``/``binder tail``, and a
consumer process killed mid-batch that loses nothing when restarted."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import NewTopic
from pydantic import BaseModel

from binder_core import app_config
from binder_core.message import Message
from tests.kafka.conftest import (
    BINDER,
    ROOT,
    Kit,
    binder_tree,
    running_app,
    start_binder,
    wait_exit,
)
from tests.support import eventually

pytestmark = pytest.mark.kafka


class Order(BaseModel):
    """An input of the batch-mode test."""

    id: int


def _sets(**keys: str) -> list[str]:
    return [f"{k}={v}" for k, v in keys.items()]


async def test_uppercase_app_runs_on_kafka_by_profile(kit: Kit) -> None:
    words, shouted, group = kit.name("words"), kit.name("shouted"), kit.name("shouters")
    overrides = _sets(
        **{
            "stream.binders.kafka.environment.bootstrap-servers": kit.bootstrap,
            "stream.bindings.uppercase-in-0.destination": words,
            "stream.bindings.uppercase-in-0.group": group,
            "stream.bindings.uppercase-out-0.destination": shouted,
        }
    )
    module = importlib.import_module("apps.uppercase")
    async with running_app(
        module, config_dir=ROOT / "config" / "uppercase", profiles=["kafka"], overrides=overrides
    ) as app:
        assert {b.binder for b in app.plan.all()} == {"kafka"}
        await kit.produce(words, [b"hello", b"kafka"])
        records = await kit.read(shouted, 2)
    assert sorted(r.value for r in records) == [b"HELLO", b"KAFKA"]
    assert dict(records[0].headers)["contentType"] == b'"text/plain"'


async def test_market_app_runs_on_kafka_by_profile(
    kit: Kit, capsys: pytest.CaptureFixture[str]
) -> None:
    ticks, alerts = kit.name("ticks"), kit.name("price-alerts")
    overrides = _sets(
        **{
            "stream.binders.kafka.environment.bootstrap-servers": kit.bootstrap,
            "stream.poller.fixed-delay": "5",
            "stream.bindings.ticker-out-0.destination": ticks,
            "stream.bindings.price_alerts-in-0.destination": ticks,
            "stream.bindings.price_alerts-in-0.group": kit.name("alerts"),
            "stream.bindings.audit-in-0.destination": ticks,
            "stream.bindings.audit-in-0.group": kit.name("audit"),
            "stream.bindings.price_alerts-out-0.destination": alerts,
            "stream.bindings.notify-in-0.destination": alerts,
            "stream.bindings.notify-in-0.group": kit.name("notifier"),
        }
    )
    from binder_core.config import load_config
    from binder_core.plugins import load_plugins

    # The app reads its own settings at import: import it with this configuration.
    config = load_config(ROOT / "config", ["kafka"], overrides, load_plugins().binder_types, {})
    app_config.use(config.layered)
    sys.modules.pop("apps.market", None)
    module = importlib.import_module("apps.market")
    async with running_app(
        module, config_dir=ROOT / "config", profiles=["kafka"], overrides=overrides
    ) as app:
        assert {b.binder for b in app.plan.all()} == {"kafka"}
        await eventually(
            lambda: "audit: 50 ticks recorded" in capsys.readouterr().out or None,
            what="the audit group to count 50 ticks",
        )
        # The ticks went through Kafka: the topic holds them, keyed by symbol.
        records = await kit.read(ticks, 50)
        assert {r.key for r in records} == {b"ACME", b"GLOBEX", b"INITECH"}


def _write_config(directory: Path, bootstrap: str, source: str, sink: str, group: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "application.yaml").write_text(
        f"""
stream:
  function: {{definition: upper}}
  default-binder: kafka
  binders:
    kafka: {{type: kafka, environment: {{bootstrap-servers: "{bootstrap}"}}}}
  bindings:
    upper-in-0: {{destination: {source}, group: {group}, content-type: text/plain}}
    upper-out-0: {{destination: {sink}, content-type: text/plain}}
  kafka:
    bindings:
      upper-in-0:
        consumer:
          max-poll-records: 200
          # the killed member's partitions come back after its session times out
          configuration: {{session_timeout_ms: 6000, heartbeat_interval_ms: 1000}}
"""
    )


def _start(config: Path, hold: str | None = None) -> subprocess.Popen[bytes]:
    """``binder run`` of the crash-test app (holding the batch with ``hold``, if given);
    its log goes to ``run.log`` next to its config."""
    env = {"BINDER_TEST_HOLD": hold} if hold else {}
    return start_binder(
        ["run", "tests.held_upper", "--config", str(config)], config / "run.log", env
    )


async def test_consumer_killed_mid_batch_loses_nothing(kit: Kit, tmp_path: Path) -> None:
    source, sink, group = kit.name("work"), kit.name("done"), kit.name("workers")
    await kit.create(source, 2)
    total = 2000
    words = [f"word-{i}".encode() for i in range(total)]
    await kit.produce(source, words)
    _write_config(tmp_path, kit.bootstrap, source, sink, group)

    first = _start(tmp_path, hold="word-1000")
    try:
        # Outputs go out at the end of each batch of 200; the batch holding word-1000
        # never ends: once some outputs are out, kill the process in the middle of it.
        await eventually(lambda: kit.count(sink), what="the first batch's outputs")
        first.send_signal(signal.SIGKILL)
        assert await wait_exit(first, 10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    done_before_restart = await kit.count(sink)
    assert done_before_restart < total, "the kill came too late to test anything"

    second = _start(tmp_path)
    try:
        await eventually(
            lambda: _at_least(kit, sink, total), timeout=60, what="every word processed"
        )
        second.send_signal(signal.SIGTERM)
        assert await wait_exit(second, 30) == 0, (tmp_path / "run.log").read_text()[
            -3000:
        ]  # graceful: finishes, commits, leaves
    finally:
        if second.poll() is None:
            second.kill()
    outputs = Counter(r.value for r in await kit.read(sink, total))
    missing = {w.upper() for w in words} - set(outputs)
    duplicates = sum(n - 1 for n in outputs.values())
    print(f"killed after {done_before_restart} outputs; duplicates after restart: {duplicates}")
    assert not missing, f"{len(missing)} words lost"
    assert set(outputs) == {w.upper() for w in words}
    assert duplicates <= 200  # at most the batch that was in flight (commits are synchronous)


async def _at_least(kit: Kit, topic: str, n: int) -> bool:
    return await kit.count(topic) >= n


async def test_binder_send_and_tail_reach_kafka(kit: Kit) -> None:
    topic = kit.name("cli")
    await kit.create(topic)  # tail reads a topic; it refuses one that does not exist
    env = {
        **os.environ,
        "STREAM__BINDERS__KAFKA__ENVIRONMENT__BOOTSTRAP_SERVERS": kit.bootstrap,
    }
    tail = await asyncio.create_subprocess_exec(
        BINDER,
        "tail",
        topic,
        "--binder",
        "kafka",
        "--count",
        "1",
        "--profile",
        "kafka",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # tail subscribes at the latest offset: send once its group has the topic's partition.
    await eventually(lambda: _has_group_for(kit, topic), what="tail to subscribe")
    send = await asyncio.create_subprocess_exec(
        BINDER,
        "send",
        topic,
        "hello from the cli",
        "--binder",
        "kafka",
        "--header",
        "trace=t-9",
        "--profile",
        "kafka",
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(send.communicate(), 60)
    assert send.returncode == 0, err.decode()
    out, err = await asyncio.wait_for(tail.communicate(), 60)
    assert tail.returncode == 0, err.decode()
    assert "hello from the cli" in out.decode()
    assert "'trace': 't-9'" in out.decode()


async def _has_group_for(kit: Kit, topic: str) -> bool:
    for group, _protocol in await kit.admin.list_consumer_groups():
        if not str(group).startswith("anonymous."):
            continue
        offsets = await kit.admin.list_consumer_group_offsets(group)
        if any(tp.topic == topic for tp in offsets):
            return True
    return False


async def test_yaml_binding_properties_reach_the_binder(kit: Kit) -> None:
    """stream.kafka.bindings.<name>.consumer|producer: a custom dlq-name, batches bounded
    by max-poll-records for a batch-mode function, compressed output."""
    source, out, dlq = kit.name("orders"), kit.name("totals"), kit.name("bad-orders")
    batches: list[int] = []

    def total(orders: list[Order]) -> list[int]:
        batches.append(len(orders))
        return [sum(o.id for o in orders)]

    def check(order: Order) -> None:
        return None

    stream = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "total;check"},
        "bindings": {
            "total-in-0": {
                "destination": source,
                "group": kit.name("totals"),
                "consumer": {"batch-mode": True},
            },
            "total-out-0": {"destination": out},
            "check-in-0": {
                "destination": source,
                "group": kit.name("checks"),
                "consumer": {"max-attempts": 1},
            },
        },
        "kafka": {
            "bindings": {
                "total-in-0": {"consumer": {"max-poll-records": 10}},
                "total-out-0": {"producer": {"compression-type": "gzip", "linger-ms": 5}},
                "check-in-0": {"consumer": {"dlq-name": dlq}},
            }
        },
    }
    await kit.create(source)
    await kit.produce(source, [f'{{"id": {i}}}'.encode() for i in range(30)] + [b"not json"])
    async with running_app({"total": total, "check": check}, stream):
        [dead] = await kit.read(dlq, 1)
        await eventually(lambda: sum(batches) >= 30, what="all orders in batches")
    assert dead.value == b"not json"
    assert dict(dead.headers)["kafka_dlt-exception-fqcn"] == b"binder_core.errors.ConversionError"
    assert max(batches) <= 10


async def test_a_record_the_broker_refuses_does_not_jam_its_partition(kit: Kit) -> None:
    """A compacted topic refuses a record without a key. The idempotent producer's sequence
    numbers for that partition then have a gap, so every later batch there would be refused
    as out of order: the binder must replace the producer, dead-letter the one input whose
    output was refused, and deliver every other output."""
    source, out, group = kit.name("words"), kit.name("compacted"), kit.name("keyers")
    kit.names.append(f"error.{source}.{group}")
    await kit.create(source)
    await kit.admin.create_topics(
        [NewTopic(out, 1, 1, topic_configs={"cleanup.policy": "compact"})]
    )

    def keyed(word: bytes) -> Message[bytes]:
        return Message(word.upper(), key=None if word == b"nokey" else word)

    stream = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "keyed"},
        "bindings": {
            "keyed-in-0": {
                "destination": source,
                "group": group,
                "consumer": {"max-attempts": 2, "back-off-initial-interval": 1},
            },
            "keyed-out-0": {"destination": out, "content-type": "application/octet-stream"},
        },
    }
    words = [f"w{i}".encode() for i in range(50)]
    words += [b"nokey", *(f"v{i}".encode() for i in range(50))]
    await kit.produce(source, words)
    async with running_app({"keyed": keyed}, stream):
        [dead] = await kit.read(f"error.{source}.{group}", 1)
        got = await kit.read(out, 100)
    assert dead.value == b"nokey"
    assert "kafka_dlt-exception-message" in dict(dead.headers)
    assert sorted(r.value for r in got) == sorted(w.upper() for w in words if w != b"nokey")
