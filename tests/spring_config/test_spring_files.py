"""Spring Cloud Stream configuration files, written as a Spring Boot application writes
them, each checked for what it asks: the binding's destination, group, partitioning,
binder and retry settings end up where Spring puts them, and an app started on it does
the right thing on the broker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from binder_core.errors import ConfigError
from binder_core.expression import select_partition
from binder_core.message import Message
from binder_core.plan import with_plan_problems
from binder_core.plugins import load_plugins
from binder_core.testing import TestApp
from tests.kafka.conftest import Kit
from tests.rabbit.conftest import Admin
from tests.spring_config.conftest import config_dir, load, module, running
from tests.support import eventually

Namer = Callable[[str], str]
BINDER = str(Path(sys.executable).with_name("binder"))


# -- relaxed names, placeholders (no broker) ------------------------------------------------


async def test_relaxed_names_bind_as_spring_does(tmp_path: Path) -> None:
    config = load(tmp_path, "relaxed_names.yaml")
    props = config.binding("uppercase|exclaim-in-0")
    assert (props.destination, props.group, props.content_type) == (
        "words",
        "shouters",
        "text/plain",
    )
    consumer = props.consumer
    assert (consumer.max_attempts, consumer.back_off_initial_interval) == (2, 10)
    assert consumer.back_off_max_interval == 20
    assert config.binding("uppercaseexclaim-out-0").destination == "shouted"
    assert config.stream.function.definition == "uppercase|exclaim"

    def uppercase(word: str) -> str:
        return word.upper()

    def exclaim(word: str) -> str:
        return word + "!"

    app = TestApp(
        module(uppercase=uppercase, exclaim=exclaim),
        config_dir=config_dir(tmp_path, "relaxed_names.yaml"),
    )
    async with app:
        [plan] = app.app.plan.inputs.values() if app.app else []  # type: ignore[union-attr]
        assert (plan.name, plan.destination, plan.group) == (
            "uppercaseexclaim-in-0",
            "words",
            "shouters",
        )
        await app.send("words", "hello", content_type="text/plain")
        got = await app.receive("shouted")
    assert got.payload == b"HELLO!"


async def test_placeholders_resolve_from_configuration_and_environment(tmp_path: Path) -> None:
    config = load(tmp_path, "placeholders.yaml", {"REGION": "us", "PARTITIONS": "4"})
    props = config.binding("charge-in-0")
    assert (props.destination, props.group) == ("orders", "billing-us")
    out = config.binding("charge-out-0")
    assert out.destination == "billing.charged"
    assert out.producer.partition_count == 4
    assert config.stream.function.definition == "charge"
    # The nested default, and the source binder config names for it.
    config = load(tmp_path, "placeholders.yaml", {"ZONE": "ap"})
    assert config.binding("charge-in-0").group == "billing-ap"
    source = config.layered.source_of(["stream", "bindings", "charge-in-0", "group"])
    assert source.endswith("application.yaml:14")
    assert config.layered.placeholders[("stream", "bindings", "chargein0", "group")] == (
        "${spring.application.name}-${REGION:${ZONE:eu}}"
    )

    def charge(order: dict[str, Any]) -> dict[str, Any]:
        return {**order, "charged": True}

    async with TestApp(
        module(charge=charge), config_dir=config_dir(tmp_path, "placeholders.yaml")
    ) as app:
        await app.send("orders", {"customer": "c1"})
        got = await app.receive("billing.charged")
    assert json.loads(got.payload) == {"customer": "c1", "charged": True}


# -- Spring Boot's connection properties ------------------------------------------------------


@pytest.mark.rabbit
async def test_a_rabbitmq_service_configured_by_spring_boot(
    tmp_path: Path, rabbit_url: str, admin: Admin, unique_name: Namer
) -> None:
    orders, enriched = unique_name("orders"), unique_name("enriched")
    admin.track(orders, "billing")
    admin.track(enriched, "audit")
    env = {
        "ORDERS": orders,
        "ENRICHED": enriched,
        "RABBIT_HOST": urlsplit(rabbit_url).hostname or "",
    }
    config = load(tmp_path, "boot_rabbit.yaml", env)
    assert config.default_binder == "rabbit"  # the one broker binder configured
    rabbit = config.environments["rabbit"]
    assert (rabbit.host, rabbit.port, rabbit.heartbeat) == ("127.0.0.1", 5672, 30)  # type: ignore[attr-defined]
    assert rabbit.connection_timeout == 5.0  # type: ignore[attr-defined]
    origin = config.env_origins["rabbit"][("heartbeat",)]
    assert origin == ("spring", "rabbitmq", "requested-heartbeat")
    ext: Any = config.extension("rabbit", "enrich-in-0")
    assert (ext.consumer.prefetch, ext.consumer.batch_size, ext.consumer.enable_batching) == (
        10,
        5,
        True,
    )

    def enrich(order: dict[str, Any]) -> dict[str, Any]:
        if order.get("item") == "poison":
            raise ValueError("cannot enrich")
        return {**order, "enriched": True}

    async with running(tmp_path, "boot_rabbit.yaml", env, module(enrich=enrich)):
        for item in ("tea", "poison", "cake"):
            await _rabbit_publish(admin, orders, json.dumps({"item": item}).encode())
        await eventually(lambda: _depth(admin, f"{enriched}.audit", 2), "2 enriched orders")
        await eventually(lambda: _depth(admin, f"{orders}.billing.dlq", 1), "1 dead letter")
    bodies = [json.loads(body) for _, _, body in admin.drain(f"{enriched}.audit")]
    assert bodies == [{"item": "tea", "enriched": True}, {"item": "cake", "enriched": True}]
    [(_, props, body)] = admin.drain(f"{orders}.billing.dlq")
    assert json.loads(body) == {"item": "poison"}
    assert "cannot enrich" in props.headers["x-exception-message"]


@pytest.mark.kafka
async def test_a_kafka_service_configured_by_spring_boot(tmp_path: Path, kit: Kit) -> None:
    orders, enriched = kit.name("orders"), kit.name("enriched")
    env = {"ORDERS": orders, "ENRICHED": enriched, "KAFKA_BROKERS": kit.bootstrap}
    config = load(tmp_path, "boot_kafka.yaml", env)
    assert config.default_binder == "kafka"
    kafka: Any = config.environments["kafka"]
    assert kafka.bootstrap_servers == [kit.bootstrap]
    assert kafka.consumer_properties == {"max.poll.records": 50, "fetch.max.wait.ms": 100}
    assert kafka.producer_properties == {"linger.ms": 5}
    assert kafka.configuration == {"client_id": "spring-config-test"}
    assert (kafka.auto_add_partitions, kafka.min_partition_count) == (True, 2)
    assert kafka.replication_factor == -1  # Spring's default: the broker's

    def enrich(order: dict[str, Any]) -> dict[str, Any]:
        if order.get("item") == "poison":
            raise ValueError("cannot enrich")
        return {**order, "enriched": True}

    await kit.create(orders)
    await kit.produce(orders, [json.dumps({"item": i}).encode() for i in ("tea", "poison", "cake")])
    async with running(tmp_path, "boot_kafka.yaml", env, module(enrich=enrich)):
        out = await kit.read(enriched, 2)
        dead = await kit.read(f"error.{orders}.billing", 1)
    assert sorted(json.loads(r.value)["item"] for r in out) == ["cake", "tea"]
    assert json.loads(dead[0].value) == {"item": "poison"}
    assert await kit.partitions(enriched) == 2  # min-partition-count


@pytest.mark.kafka
@pytest.mark.rabbit
async def test_binder_environments_in_springs_shape(
    tmp_path: Path, kit: Kit, admin: Admin, unique_name: Namer
) -> None:
    source, target = unique_name("from-rabbit"), kit.name("to-kafka")
    admin.track(source, "bridge")
    env = {"FROM_RABBIT": source, "TO_KAFKA": target, "KAFKA_BROKERS": kit.bootstrap}
    config = load(tmp_path, "binder_environments.yaml", env)
    assert config.default_binder == "rabbit1"
    assert config.environments["kafka1"].bootstrap_servers == [kit.bootstrap]  # type: ignore[attr-defined]
    assert config.environments["rabbit1"].host == "127.0.0.1"  # type: ignore[attr-defined]
    source_of_brokers = config.layered.exact_source(
        config.env_origins["kafka1"][("bootstrap-servers",)]
    )
    assert source_of_brokers is not None and source_of_brokers.endswith("application.yaml:23")

    def bridge(text: str) -> str:
        return text

    async with running(tmp_path, "binder_environments.yaml", env, module(bridge=bridge)):
        await _rabbit_publish(admin, source, b'"over the bridge"')
        [record] = await kit.read(target, 1)
    assert record.value == b'"over the bridge"'


# -- several destinations per consumer --------------------------------------------------------


def _auditor(seen: list[str]) -> Any:
    def audit(text: str) -> None:
        if text == "bad":
            raise ValueError("refused")
        seen.append(text)

    return module(audit=audit)


@pytest.mark.kafka
async def test_a_kafka_consumer_bound_to_several_topics(tmp_path: Path, kit: Kit) -> None:
    first, second = kit.name("first"), kit.name("second")
    env = {"FIRST": first, "SECOND": second, "BINDER": "kafka", "KAFKA_BROKERS": kit.bootstrap}
    assert load(tmp_path, "multi_destination.yaml", env).binding("audit-in-0").destinations == (
        first,
        second,
    )
    seen: list[str] = []
    async with running(tmp_path, "multi_destination.yaml", env, _auditor(seen)) as app:
        binding = app.bindings["audit-in-0"]
        assert len(binding.consumers) == 2  # one per topic, one binding
        await kit.produce(first, [b"a1"])
        await kit.produce(second, [b"b1", b"bad"])
        await eventually(lambda: sorted(seen) == ["a1", "b1"], "both topics read")
        [dead] = await kit.read(f"error.{second}.auditors", 1)  # the topic's own DLQ
    assert dead.value == b"bad"
    assert not any("," in t for t in await kit.topics())  # never a topic named a,b


@pytest.mark.rabbit
async def test_a_rabbitmq_consumer_bound_to_several_exchanges(
    tmp_path: Path, admin: Admin, unique_name: Namer
) -> None:
    first, second = unique_name("first"), unique_name("second")
    admin.track(first, "auditors")
    admin.track(second, "auditors")
    env = {"FIRST": first, "SECOND": second, "BINDER": "rabbit"}
    env["SPRING_RABBITMQ_HOST"] = "127.0.0.1"  # Spring's variable for the connection
    seen: list[str] = []
    async with running(tmp_path, "multi_destination.yaml", env, _auditor(seen)) as app:
        assert len(app.bindings["audit-in-0"].consumers) == 2
        await _rabbit_publish(admin, first, b"a1", "text/plain")
        await _rabbit_publish(admin, second, b"b1", "text/plain")
        await _rabbit_publish(admin, second, b"bad", "text/plain")
        await eventually(lambda: sorted(seen) == ["a1", "b1"], "both exchanges read")
        await eventually(lambda: _depth(admin, f"{second}.auditors.dlq", 1), "a dead letter")
        # One queue per exchange, in the group; never one named after the list.
        assert await admin.state(f"{first}.auditors") is not None
        assert await admin.state(f"{first},{second}.auditors") is None
        assert await admin.state(f"{first}, {second}.auditors") is None


# -- expressions -------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_partitioning_with_an_expression_spring_users_write(tmp_path: Path, kit: Kit) -> None:
    source, out = kit.name("in"), kit.name("out")
    env = {"IN": source, "OUT": out, "KAFKA_BROKERS": kit.bootstrap}
    config = load(tmp_path, "partitioning.yaml", env)
    assert config.binding("route-out-0").producer.partitioned is True
    assert config.binding("tally-in-0").consumer.instance_index == 1
    tallied: list[int] = []

    def route(order: dict[str, Any]) -> Message[dict[str, Any]]:
        headers = {"partitionKey": order["n"]} if "n" in order else {}
        return Message(order, headers)

    def tally(order: dict[str, Any]) -> None:
        tallied.append(order["n"])

    await kit.create(source)
    orders = [{"n": n} for n in range(1, 7)] + [{"no": "key"}]
    async with running(tmp_path, "partitioning.yaml", env, module(route=route, tally=tally)):
        await kit.produce(source, [json.dumps(o).encode() for o in orders])
        records = await kit.read(out, 6)
        [dead] = await kit.read(f"error.{source}.router", 1)
        # This instance (index 1 of 3) reads partition 1 only.
        await eventually(lambda: sorted(tallied) == [2, 5], "partition 1's records")
    for record in records:
        n = json.loads(record.value)["n"]
        assert record.partition == select_partition(n - 1, 3)  # headers['partitionKey'] - 1
    # No key: the send fails, as in Spring, and the input is dead-lettered with the reason.
    assert json.loads(dead.value) == {"no": "key"}
    reason = dict(dead.headers).get("x-exception-message", b"").decode()
    assert "partition-key-expression failed: cannot subtract null" in reason


@pytest.mark.rabbit
async def test_a_quoted_literal_routing_key(
    tmp_path: Path, admin: Admin, unique_name: Namer
) -> None:
    source, exchange = unique_name("in"), unique_name("keyed")
    admin.track(source, "publisher")
    admin.track(exchange, "keyed")
    env = {"IN": source, "EXCHANGE": exchange, "SPRING_RABBITMQ_HOST": "127.0.0.1"}
    ext: Any = load(tmp_path, "routing_key.yaml", env).extension("rabbit", "publish-out-0")
    assert ext.producer.routing_key_expression == "'myRoutingKey'"

    def publish(text: str) -> str:
        return text.upper()

    async with running(tmp_path, "routing_key.yaml", env, module(publish=publish)):
        await _rabbit_publish(admin, source, b'"hello"')
        await eventually(lambda: _depth(admin, f"{exchange}.keyed", 1), "the keyed message")
    [(method, _, body)] = admin.drain(f"{exchange}.keyed")
    assert (method.routing_key, body) == ("myRoutingKey", b'"HELLO"')


# -- pollers and output bindings ------------------------------------------------------------


async def test_pollers_per_binding_and_output_bindings(tmp_path: Path) -> None:
    config = load(tmp_path, "pollers.yaml")
    fast, slow = config.poller("fast-out-0"), config.poller("slow-out-0")
    assert (fast.fixed_delay, fast.initial_delay, fast.max_messages_per_poll) == (20, 0, 2)
    assert (slow.fixed_delay, slow.time_unit) == (60_000, "MINUTES")  # 1 minute
    counts = {"fast": 0, "slow": 0}

    def fast_fn() -> str:
        counts["fast"] += 1
        return "fast"

    def slow_fn() -> str:
        counts["slow"] += 1
        return "slow"

    app = TestApp(
        module(fast=fast_fn, slow=slow_fn), config_dir=config_dir(tmp_path, "pollers.yaml")
    )
    async with app:
        assert app.app is not None and "notices-out-0" in app.app.outputs_by_name  # bound at start
        await eventually(lambda: counts["fast"] >= 8, "the fast supplier's polls")
        assert counts["slow"] == 1  # polled once, next in a minute
        await app.app.bridge.send("notices-out-0", "posted")
        got = await app.receive("notice-board")
    assert got.payload == b"posted"


# -- Spring's defaults kept ------------------------------------------------------------------


@pytest.mark.kafka
async def test_a_dead_letter_consumer_gets_no_dead_letter_topic_of_its_own(
    tmp_path: Path, kit: Kit
) -> None:
    jobs = kit.name("jobs")
    env = {"JOBS": jobs, "KAFKA_BROKERS": kit.bootstrap}
    config = load(tmp_path, "dead_letters.yaml", env)
    assert config.environments["kafka"].replication_factor == -1  # type: ignore[attr-defined]
    inspect_ext: Any = config.extension("kafka", "inspect-in-0")
    work_ext: Any = config.extension("kafka", "work-in-0")
    assert (work_ext.consumer.enable_dlq, inspect_ext.consumer.enable_dlq) == (True, False)
    inspected: list[str] = []

    def work(job: str) -> None:
        raise ValueError(f"cannot do {job}")

    def inspect(job: str) -> None:
        inspected.append(job)
        raise ValueError("inspection fails too")

    async with running(tmp_path, "dead_letters.yaml", env, module(work=work, inspect=inspect)):
        await kit.produce(jobs, [b"j1"])
        await eventually(lambda: inspected == ["j1"], "the dead letter inspected")
        await kit.read(f"error.{jobs}.workers", 1)
    topics = await kit.topics()
    assert f"error.error.{jobs}.workers.inspectors" not in topics
    assert not any(t.startswith(f"error.error.{jobs}") for t in topics)


# -- problems, all in one round -------------------------------------------------------------


def test_every_problem_of_a_file_in_one_round(tmp_path: Path) -> None:
    registry = load_plugins()

    def enrich(order: dict[str, Any]) -> dict[str, Any]:
        return order

    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "one_round.yaml")
    error = with_plan_problems(exc.value, module(enrich=enrich), registry.converters)
    text = error.render()
    paths = {p.path for p in error.problems}
    assert {
        "stream.bogusKey",
        "stream.poller.fixed-delay",
        "stream.bindings.enrich-out-0.producer.partition-key-expression",
        "stream.bindings.enrich-out-0.content-type",
        "stream.bindings.audit-in-0.destination",
        "stream.bindings.enrch-in-0",
        "stream.function.definition",
        "stream.kafka.binder.configuration.max.poll.recrods",
        "stream.kafka.binder.transaction.producer.configuration.retries",
        "stream.kafka.bindings.enrich-in-0.consumer.ack-mode",
        "stream.rabbit.bindings.enrich-out-0.producer.routing-key-expression",
        "stream.rabbit.bindings.enrich-in-0.consumer.acknowledge-mode",
        "stream.rabbit.bindings.enrich-in-0.consumer.requeue-rejected",
    } <= paths, text
    assert "no function 'nosuch'" in text and "did you mean 'enrich-in-0'?" in text
    assert "did you mean 'max_poll_records'?" in text
    assert "'RECORD' is not supported (only 'BATCH')" in text
    assert "requeueing it would deliver it again forever" in text
    assert "application.yaml:" in text  # each located in the file

    # binder config refuses the file too, with what it can find without the app module.
    directory = config_dir(tmp_path, "one_round.yaml")
    result = subprocess.run(
        [BINDER, "config", "--config", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "stream.bindings.enrich-out-0.content-type" in result.stderr
    assert "Traceback" not in result.stderr


# -- helpers ------------------------------------------------------------------------------------


async def _rabbit_publish(
    admin: Admin, exchange: str, body: bytes, content_type: str = "application/json"
) -> None:
    import asyncio

    import pika

    props = pika.BasicProperties(content_type=content_type, delivery_mode=2)
    await asyncio.to_thread(admin.publish, exchange, exchange, body, props)


async def _depth(admin: Admin, queue: str, n: int) -> bool:
    state = await admin.state(queue)
    return state is not None and state[0] >= n
