"""The YAML of the guide's broker set-ups, started against the real brokers and checked to
do what the text beside it says.

Each test takes the block as the page shows it and changes only what cannot be the same
here (each change is said on the page): addresses and credentials point at the test
suite's brokers, destinations get names of their own, a one-broker Kafka gets a
replication factor of 1, and retries wait milliseconds rather than seconds.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import shutil
import types
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pytest
import yaml

from binder_core import app_config
from binder_core.config import load_config
from binder_core.plugins import load_plugins
from binder_core.runtime import App
from tests.brokers import SCRAM_PASSWORD, SCRAM_USER, TlsFiles
from tests.docs.blocks import ROOT, Block, blocks_of, by_id
from tests.support import DEADLINE, eventually

Namer = Callable[[str], str]

#: Retries in milliseconds, for every binding of an example.
FAST_RETRIES = {"consumer": {"back-off-initial-interval": 10, "back-off-max-interval": 20}}


def page_module(block: Block, title: str) -> types.ModuleType:
    """The Python block titled ``title`` on ``block``'s page, as a module."""
    [source] = [b for b in blocks_of(block.page) if b.title == title]
    module = types.ModuleType(Path(title).stem)
    exec(compile(source.text, source.where, "exec"), module.__dict__)  # our own guide's code
    return module


def tree_of(block: Block) -> dict[str, Any]:
    tree = yaml.safe_load(block.text)
    assert isinstance(tree, dict)
    return copy.deepcopy(tree)


@contextlib.asynccontextmanager
async def running(
    module: types.ModuleType | Mapping[str, Callable[..., Any]],
    tree: Mapping[str, Any] | None = None,
    *,
    config_dir: Path | None = None,
    profiles: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> AsyncIterator[App]:
    """An app started in-process from a configuration tree (or directory), stopped after."""
    if not isinstance(module, types.ModuleType):
        functions = module
        module = types.ModuleType("doc_example_app")
        for name, fn in functions.items():
            setattr(module, name, fn)
    registry = load_plugins()
    config = load_config(
        config_dir,
        profiles,
        overrides,
        registry.binder_types,
        environ={},
        properties=dict(tree or {}),
        read_files=config_dir is not None,
    )
    app_config.use(config.layered)
    app = App(module, config, registry)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
        app_config.use(None)


# -- Kafka ----------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_kafka_example_provisions_compresses_and_dead_letters(
    kafka_bootstrap: str, unique_name: Namer
) -> None:
    from tests.kafka.conftest import Kit

    block = by_id("kafka-example")
    module = page_module(block, "apps/order_totals.py")
    tree = tree_of(block)
    stream = tree["stream"]
    kit = Kit(kafka_bootstrap, unique_name)
    await kit.admin.start()
    try:
        orders, totals = kit.name("orders"), kit.name("totals")
        dlq = f"{orders}.dlq"
        assert stream["kafka"]["bindings"]["total-in-0"]["consumer"]["dlq-name"] == "orders.dlq"
        assert stream["kafka"]["bindings"]["total-out-0"]["producer"]["compression-type"] == "lz4"
        stream["binders"]["kafka"]["environment"]["bootstrap-servers"] = kafka_bootstrap
        stream["kafka"]["binder"]["replication-factor"] = 1
        stream["bindings"]["total-in-0"]["destination"] = orders
        stream["bindings"]["total-in-0"]["group"] = kit.name("totals-group")
        stream["bindings"]["total-out-0"]["destination"] = totals
        stream["kafka"]["bindings"]["total-in-0"]["consumer"]["dlq-name"] = dlq
        stream["default"] = FAST_RETRIES
        async with running(module, tree):
            for topic in (orders, totals, dlq):  # min-partition-count: 6
                assert await kit.partitions(topic) == 6, topic
            await kit.produce(
                orders,
                [
                    json.dumps({"id": 1, "quantity": 3, "price": 2.5}).encode(),
                    json.dumps({"id": 2, "quantity": -1, "price": 9.0}).encode(),
                ],
                key=b"same-partition",
            )
            [total] = await kit.read(totals, 1)
            [dead] = await kit.read(dlq, 1)
        assert json.loads(total.value or b"") == {"order": 1, "total": 7.5}
        assert json.loads(dead.value or b"") == {"id": 2, "quantity": -1, "price": 9.0}
        assert dict(dead.headers)["x-exception-message"] == b"a negative quantity"
    finally:
        await kit.cleanup()


@pytest.mark.kafka
async def test_kafka_tls_example_logs_in_with_scram_over_mutual_tls(
    kafka_bootstrap: str,
    kafka_sasl_ssl_bootstrap: str,
    tls_files: TlsFiles,
    unique_name: Namer,
    tmp_path: Path,
) -> None:
    from tests.kafka.conftest import Kit

    tree = tree_of(by_id("kafka-tls-example"))
    env = tree["stream"]["kafka"]["binder"]
    assert env["security-protocol"] == "SASL_SSL" and env["sasl"]["mechanism"] == "SCRAM-SHA-512"
    secret = tmp_path / "kafka-password"
    secret.write_text(SCRAM_PASSWORD + "\n")  # a trailing newline is ignored
    env["bootstrap-servers"] = kafka_sasl_ssl_bootstrap
    env["ssl"] = {
        "ca-file": str(tls_files.ca),
        "cert-file": str(tls_files.client_cert),
        "key-file": str(tls_files.client_key),
    }
    env["sasl"]["username"] = SCRAM_USER
    env["sasl"]["password-file"] = str(secret)

    def shout(word: str) -> str:
        return word.upper()

    kit = Kit(kafka_bootstrap, unique_name)  # the plain listener, to look from outside
    await kit.admin.start()
    try:
        words, shouted = kit.name("tls-words"), kit.name("tls-shouted")
        tree["stream"].update(
            {
                "default-binder": "kafka",
                "function": {"definition": "shout"},
                "bindings": {
                    "shout-in-0": {"destination": words, "group": kit.name("tls-group")},
                    "shout-out-0": {"destination": shouted},
                },
            }
        )
        async with running({"shout": shout}, tree):
            await kit.produce(words, [b'"quiet"'])
            [record] = await kit.read(shouted, 1)
        assert record.value == b'"QUIET"'
    finally:
        await kit.cleanup()


# -- RabbitMQ -------------------------------------------------------------------------------


def _rabbit_user(url: str) -> tuple[str, int, str, str]:
    parts = urlsplit(url)
    return (
        parts.hostname or "127.0.0.1",
        parts.port or 5672,
        unquote(parts.username or "guest"),
        unquote(parts.password or "guest"),
    )


@pytest.mark.rabbit
async def test_rabbit_example_routes_dead_letters_and_retries_later(
    rabbit_url: str, unique_name: Namer
) -> None:
    from tests.rabbit.conftest import Admin

    block = by_id("rabbit-example")
    module = page_module(block, "apps/order_events.py")
    tree = tree_of(block)
    stream = tree["stream"]
    host, port, user, password = _rabbit_user(rabbit_url)
    orders, classified = unique_name("orders"), unique_name("classified")
    admin = Admin(rabbit_url)
    admin.track(orders, "classifier")
    admin.track(classified, "audit")
    env = stream["binders"]["rabbit"]["environment"]
    assert env["addresses"] == "mq-1:5672,mq-2:5672"
    # The first address refuses, as a cluster node that is down: the second is used.
    env.update({"addresses": f"127.0.0.1:1,{host}:{port}", "username": user, "password": password})
    stream["bindings"]["classify-in-0"]["destination"] = orders
    stream["bindings"]["classify-out-0"]["destination"] = classified
    consumer = stream["rabbit"]["bindings"]["classify-in-0"]["consumer"]
    assert consumer["dlq-ttl"] == 30000 and consumer["binding-routing-key"] == "order.*"
    consumer["dlq-ttl"] = 300
    stream["default"] = FAST_RETRIES
    calls: Counter[int] = Counter()

    def classify(order: dict[str, Any]) -> Any:
        calls[order["id"]] += 1
        return module.classify(order)

    try:
        async with running({"classify": classify}, tree):
            props = pika.BasicProperties(content_type="application/json")
            admin.publish(orders, "order.created", b'{"id": 1, "quantity": 500}', props)
            with pytest.raises(pika.exceptions.UnroutableError):
                admin.publish(orders, "invoice.created", b'{"id": 2, "quantity": 1}', props)
            admin.publish(orders, "order.created", b'{"id": 3, "quantity": -1}', props)

            audit = f"{classified}.audit"  # declared by required-groups, nobody consumes it
            await eventually(lambda: admin.queue_state(audit) == (1, 0), "one classified order")
            [(method, properties, body)] = admin.drain(audit)
            assert method.routing_key == "order.big"
            assert properties.headers["type"] == "order.big"
            assert json.loads(body) == {"id": 1, "quantity": 500}
            # three attempts, the DLQ, 0.3 s, back to the queue, three more attempts
            await eventually(lambda: calls[3] > 3, "the failed order back from the DLQ")
        assert 2 not in calls
    finally:
        admin.cleanup()


@pytest.mark.rabbit
async def test_rabbit_tls_example_connects_with_the_password_file(
    rabbit_url: str,
    rabbit_amqps_address: str,
    tls_files: TlsFiles,
    unique_name: Namer,
    tmp_path: Path,
) -> None:
    from tests.rabbit.conftest import Admin

    tree = tree_of(by_id("rabbit-tls-example"))
    env = tree["stream"]["binders"]["rabbit"]["environment"]
    assert env["uri"].startswith("amqps://orders@") and "password-file" in env
    _, _, user, password = _rabbit_user(rabbit_url)
    secret = tmp_path / "rabbitmq-password"
    secret.write_text(password + "\n")
    address = rabbit_amqps_address.split("://")[-1]
    env["uri"] = f"amqps://{user}@{address}/%2F"
    env["password-file"] = str(secret)
    env["ssl"] = {
        "ca-file": str(tls_files.ca),
        "cert-file": str(tls_files.client_cert),
        "key-file": str(tls_files.client_key),
    }
    words = unique_name("tls-words")
    admin = Admin(rabbit_url)
    admin.track(words, "g")
    seen: list[str] = []

    def keep(word: str) -> None:
        seen.append(word)

    tree["stream"].update(
        {
            "default-binder": "rabbit",
            "function": {"definition": "keep"},
            "bindings": {"keep-in-0": {"destination": words, "group": "g"}},
        }
    )
    try:
        async with running({"keep": keep}, tree):
            props = pika.BasicProperties(content_type="text/plain")
            admin.publish(words, words, b"over tls", props)
            await eventually(lambda: seen == ["over tls"], "the message, read over amqps")
    finally:
        admin.cleanup()


# -- Redis ----------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_binder_by_yaml_alone(redis_url: str, unique_name: Namer) -> None:
    import redis.asyncio as aioredis

    tree = tree_of(by_id("redis-use"))
    stream = tree["stream"]
    assert stream["binders"]["r"]["type"] == "redis"
    prefix = f"{unique_name('doc')}:"
    stream["binders"]["r"]["environment"] = {"url": redis_url, "key-prefix": prefix}
    destination = unique_name("ticks")
    stream.update(
        {
            "function": {"definition": "tick;keep"},
            "poller": {"fixed-delay": 10},
            "bindings": {
                "tick-out-0": {"destination": destination, "producer": {"required-groups": ["g"]}},
                "keep-in-0": {"destination": destination, "group": "g"},
            },
        }
    )
    seen: list[dict[str, int]] = []

    def tick() -> dict[str, int]:
        return {"n": 1}

    def keep(value: dict[str, int]) -> None:
        seen.append(value)

    client = aioredis.Redis.from_url(redis_url, protocol=2)
    try:
        async with running({"tick": tick, "keep": keep}, tree):
            await eventually(lambda: len(seen) >= 3, "three ticks through Redis")
        assert await client.xlen(f"{prefix}{destination}") >= 3
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.redis
async def test_redis_example_runs_the_market_demo(
    redis_url: str, unique_name: Namer, tmp_path: Path
) -> None:
    import redis.asyncio as aioredis

    block = by_id("redis-example")
    assert block.title == "config/application-redis.yaml"
    tree = tree_of(block)
    environment = tree["stream"]["binders"]["redis"]["environment"]
    assert environment["key-prefix"] == "market:"
    prefix = f"{unique_name('market')}:"
    environment.update({"url": redis_url, "key-prefix": prefix})
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(ROOT / "config" / "application.yaml", config / "application.yaml")
    (config / "application-redis.yaml").write_text(yaml.safe_dump(tree), encoding="utf-8")
    market = importlib.import_module("apps.market")
    client = aioredis.Redis.from_url(redis_url, protocol=2)
    try:
        async with running(
            market,
            config_dir=config,
            profiles=["redis"],
            overrides=["stream.poller.fixed-delay=5"],
        ) as app:
            assert {plan.binder for plan in app.plan.all()} == {"redis"}

            async def audited() -> bool:
                found = await client.xinfo_groups(f"{prefix}ticks")
                groups = {g["name"].decode(): g for g in found}
                return {"alerts", "audit"} <= groups.keys() and (
                    groups["audit"]["entries-read"] or 0
                ) > 3

            await eventually(audited, "the audit group reading the ticks stream", DEADLINE)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
