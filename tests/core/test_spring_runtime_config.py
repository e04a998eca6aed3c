"""What Spring configuration does once an app runs (on the memory binder): several
destinations per consumer, partition keys that are null, dead-letter consumers, output
bindings, StreamBridge names, a consumer that cannot start; and what ``binder config``
says about it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from binder_core.config import load_config
from binder_core.consumer import ConsumerBinding, HandleProcessor
from binder_core.errors import ConfigError
from binder_core.message import Message
from binder_core.plugins import load_plugins
from binder_core.spi import Batch, Outcome, Permanent
from binder_core.subscriptions import MultiSubscription, guard
from binder_core.testing import TestApp

TYPES = load_plugins().binder_types
BINDER = str(Path(sys.executable).with_name("binder"))
ROOT = Path(__file__).resolve().parents[2]


def stream(**tree: Any) -> dict[str, Any]:
    return {"stream": tree}


# -- several destinations per consumer -------------------------------------------------------


async def test_a_consumer_of_several_destinations_reads_each_and_dead_letters_per_destination() -> (
    None
):
    seen: list[str] = []

    def audit(text: str) -> None:
        if text == "bad":
            raise ValueError("refused")
        seen.append(text)

    tree = stream(
        function={"definition": "audit"},
        bindings={
            "audit-in-0": {
                "destination": "north, south",
                "group": "g",
                "consumer": {"max-attempts": 1, "concurrency": 2},
            }
        },
    )
    async with TestApp({"audit": audit}, properties=tree) as app:
        assert app.app is not None
        binding = app.app.bindings["audit-in-0"]
        assert isinstance(binding.subscription.inner, MultiSubscription)  # type: ignore[attr-defined]
        assert len(binding.consumers) == 4  # concurrency 2 on each destination
        assert binding.subscription.dlq_names == ["error.north.g", "error.south.g"]  # type: ignore[attr-defined]
        app.watch("error.south.g")
        await app.send("north", "n1", content_type="text/plain")
        await app.send("south", "s1", content_type="text/plain")
        await app.send("south", "bad", content_type="text/plain")
        dead = await app.receive("error.south.g")
        while sorted(seen) != ["n1", "s1"]:
            await asyncio.sleep(0.01)
        await binding.pause()
        await binding.resume()
    assert dead.payload == b"bad"


def test_a_producer_cannot_have_several_destinations() -> None:
    def f(x: str) -> str:
        return x

    tree = stream(function={"definition": "f"}, bindings={"f-out-0": {"destination": "a,b"}})
    with pytest.raises(ConfigError) as exc:
        asyncio.run(TestApp({"f": f}, properties=tree).start())
    assert "only a consumer binding can have" in exc.value.render()


# -- partition keys ---------------------------------------------------------------------------


async def test_a_null_partition_key_dead_letters_the_input() -> None:
    def relay(msg: Message[dict[str, Any]]) -> Message[dict[str, Any]]:
        return msg

    tree = stream(
        function={"definition": "relay"},
        bindings={
            "relay-in-0": {"destination": "in", "group": "g", "consumer": {"max-attempts": 3}},
            "relay-out-0": {
                "destination": "out",
                "producer": {"partition-key-expression": "headers['key']", "partition-count": 2},
            },
        },
    )
    async with TestApp({"relay": relay}, properties=tree) as app:
        await app.send("in", {"n": 1}, headers={"key": "k1"})
        await app.send("in", {"n": 2})  # no key
        sent = await app.receive("out")
        dead = await app.receive(app.dead_letter_destination("relay-in-0"))
    assert json.loads(sent.payload) == {"n": 1}
    assert json.loads(dead.payload) == {"n": 2}
    reason = str(dead.headers.get("x-exception-message"))
    assert "partition key is null" in reason
    assert dead.headers.get("x-exception-fqcn") == "binder_core.errors.PartitionKeyError"


# -- dead-letter consumers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binder", "destination", "field", "expected"),
    [
        ("kafka", "error.orders.g", "enable_dlq", False),
        ("kafka", "orders", "enable_dlq", True),
        ("memory", "error.orders.g", "enable_dlq", False),
        ("rabbit", "DLX", "auto_bind_dlq", False),
        ("rabbit", "orders", "auto_bind_dlq", True),
    ],
)
def test_a_dead_letter_consumer_gets_no_dead_letters_of_its_own(
    binder: str, destination: str, field: str, expected: bool
) -> None:
    tree = stream(bindings={"look-in-0": {"destination": destination, "group": "g"}})
    config = load_config(None, (), (), TYPES, environ={}, properties=tree, read_files=False)
    ext: Any = config.extension(binder, "look-in-0")
    assert getattr(ext.consumer, field) is expected


def test_a_dead_letter_consumer_may_still_ask_for_a_dlq() -> None:
    tree = stream(
        bindings={"look-in-0": {"destination": "error.orders.g", "group": "g"}},
        kafka={"bindings": {"look-in-0": {"consumer": {"enable-dlq": True}}}},
    )
    config = load_config(None, (), (), TYPES, environ={}, properties=tree, read_files=False)
    ext: Any = config.extension("kafka", "look-in-0")
    assert ext.consumer.enable_dlq is True


# -- output bindings and StreamBridge names ------------------------------------------------------


async def test_output_bindings_are_bound_at_start_and_are_no_typos() -> None:
    def on_order(order: dict[str, Any]) -> None:
        return None

    tree = stream(
        function={"definition": "on_order"},
        output_bindings="orders;audit",
        bindings={"orders-out-0": {"destination": "placed"}},
    )
    async with TestApp({"on_order": on_order}, properties=tree) as app:
        assert app.app is not None
        assert {"orders-out-0", "audit-out-0"} <= set(app.app.outputs_by_name)
        assert app.destination_of("orders-out-0") == "placed"


def test_a_streambridge_binding_is_not_taken_for_a_typo_of_another_direction() -> None:
    def on_order(order: dict[str, Any]) -> None:
        return None

    tree = stream(
        function={"definition": "on_order"},
        bindings={"orders-out-0": {"destination": "placed"}},
    )
    asyncio.run(_start_stop(TestApp({"on_order": on_order}, properties=tree)))
    # ...but a function's typo still is, and an input binding no function has is refused.
    tree["stream"]["bindings"] = {"on_ordr-in-0": {"group": "g"}, "audit-in-0": {"group": "g"}}
    with pytest.raises(ConfigError) as exc:
        asyncio.run(TestApp({"on_order": on_order}, properties=tree).start())
    text = exc.value.render()
    assert "did you mean 'on-order-in-0'?" in text
    assert "no function in stream.function.definition has input binding 'audit-in-0'" in text


async def _start_stop(app: TestApp) -> None:
    async with app:
        pass


# -- a consumer that cannot start ----------------------------------------------------------------


class _BrokenSource:
    overlap = False

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.opens = 0

    async def open(self) -> None:
        self.opens += 1
        raise self.error

    async def fetch(self, wait: bool) -> Batch | None:
        return None

    def interrupt(self) -> None:
        pass

    async def settle(
        self, batch: Batch, failed: Sequence[tuple[int, Exception]], t: Any = None
    ) -> None:
        pass

    async def redeliver(self, batches: Sequence[Batch]) -> None:
        pass

    async def pause(self) -> None:
        pass

    async def resume(self) -> None:
        pass

    async def close(self) -> None:
        pass


class _Subscription:
    drain_timeout = 1.0

    def __init__(self, source: _BrokenSource) -> None:
        self.made = source

    def source(self, index: int) -> Any:
        return self.made

    async def close(self) -> None:
        pass


async def _nothing(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
    return [None] * len(batch)


@pytest.mark.parametrize(
    "error", [TypeError("unexpected keyword argument 'retries'"), ConfigError([])]
)
async def test_a_consumer_failing_on_its_settings_fails_the_binding_at_once(
    error: Exception,
) -> None:
    source = _BrokenSource(error)
    binding = ConsumerBinding("b", guard(_Subscription(source)), HandleProcessor(_nothing))
    with pytest.raises(Permanent) as exc:
        await binding.start()
    assert type(error).__name__ in str(exc.value)
    assert source.opens == 1  # not retried


async def test_a_consumer_whose_broker_is_away_keeps_trying() -> None:
    source = _BrokenSource(ConnectionError("refused"))
    binding = ConsumerBinding("b", guard(_Subscription(source)), HandleProcessor(_nothing))
    task = asyncio.ensure_future(binding.start())
    while source.opens < 2:
        await asyncio.sleep(0.01)
    assert not task.done()
    await binding.stop()
    task.cancel()


# -- binder config -----------------------------------------------------------------------------


def _config(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BINDER, "config", "--config", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def _rows(out: str) -> dict[str, str]:
    return {line.split(" = ")[0].strip(): line for line in out.splitlines() if " = " in line}


def test_binder_config_names_the_true_source_of_merged_values(tmp_path: Path) -> None:
    (tmp_path / "application.yaml").write_text(
        "spring:\n"
        "  application.name: shop\n"
        "  rabbitmq:\n    host: mq.internal\n    requested-heartbeat: 20\n"
        "  cloud.stream:\n"
        "    default.contentType: text/plain\n"
        "    rabbit.binder.port: 5673\n"
        "    bindings:\n      f-in-0: {group: '${spring.application.name}'}\n"
    )
    result = _config(tmp_path, env={"STREAM__RABBIT__BINDER__USERNAME": "app"})
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["stream.binders.rabbit.environment.host"].endswith("application.yaml:4")
    assert rows["stream.binders.rabbit.environment.heartbeat"].endswith("application.yaml:5")
    assert rows["stream.binders.rabbit.environment.port"].endswith("application.yaml:8")
    assert rows["stream.binders.rabbit.environment.username"].endswith(
        "# env STREAM__RABBIT__BINDER__USERNAME"
    )
    assert rows["stream.bindings.f-in-0.content-type"].endswith("application.yaml:7")
    group = rows["stream.bindings.f-in-0.group"]
    assert "shop" in group and "application.yaml:10 (${spring.application.name})" in group
    assert "the one broker binder configured" in rows["stream.default-binder"]
    # Where our default deliberately differs from Spring's, binder config says so.
    (tmp_path / "application.yaml").write_text(
        "stream:\n  bindings:\n    f-in-0: {group: g}\n"
        "  rabbit:\n    bindings:\n      f-in-0:\n        consumer: {prefetch: 10}\n"
    )
    rows = _rows(_config(tmp_path).stdout)
    assert rows["stream.rabbit.bindings.f-in-0.consumer.auto-bind-dlq"].endswith(
        "# default (Spring: false)"
    )
    assert rows["stream.rabbit.bindings.f-in-0.consumer.prefetch"].endswith("application.yaml:7")


def test_binder_config_refuses_what_binder_run_refuses(tmp_path: Path) -> None:
    (tmp_path / "application.yaml").write_text(
        "stream:\n  function.definition: shout\n"
        "  bindings:\n    shout-out-0: {content-type: application/x-nope}\n"
    )
    (tmp_path / "shoutapp.py").write_text("def shout(x: str) -> str:\n    return x\n")
    result = _config(tmp_path)
    assert result.returncode == 2
    assert "no converter for content type 'application/x-nope'" in result.stderr
    (tmp_path / "application.yaml").write_text("stream:\n  function.definition: shuot\n")
    result = _config(tmp_path, "shoutapp", env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stdout
    assert "no function 'shuot'" in result.stderr and "did you mean 'shout'?" in result.stderr
