"""CloudEvents through an app on the real brokers, in both modes: an event the
``cloudevents`` package encodes (its Kafka and AMQP bindings) reaches the function as its
declared type with the attributes in ``Message.ce``; what the app sends is decoded by the
package; a malformed event is dead-lettered with the reason."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cloudevents.core.bindings import amqp, kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from binder_core import app_config
from binder_core.config import load_config
from binder_core.dlq.letters import reason
from binder_core.dlq.spi import access
from binder_core.plugins import load_plugins
from binder_core.runtime import App
from tests.cloudevents import events_app
from tests.support import eventually

MODES = ("binary", "structured")


def incoming_event(n: int) -> CloudEvent:
    return CloudEvent(
        {
            "id": f"order-{n}",
            "source": "/shop",
            "type": "com.example.order.placed",
            "time": datetime(2024, 5, 1, 12, 0, n, tzinfo=UTC),
            "datacontenttype": "application/json",
            "subject": f"ACME-{n}",
        },
        {"id": n, "symbol": "ACME"},
    )


async def start_app(tmp_path: Path, tree: dict[str, Any]) -> App:
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "application.yaml").write_text(yaml.safe_dump(tree), encoding="utf-8")
    registry = load_plugins()
    config = load_config(config_dir, [], [], registry.binder_types)
    app_config.use(config.layered)
    app = App(events_app, config, registry)
    await app.start()
    return app


def bindings(mode: str, inp: str, out: str, group: str, **extra: Any) -> dict[str, Any]:
    return {
        "handle-in-0": {
            "destination": inp,
            "group": group,
            "cloudevents": mode,
            "consumer": {"max-attempts": 1},
        },
        "handle-out-0": {"destination": out, "cloudevents": mode, **extra},
    }


@pytest.fixture
async def seen() -> AsyncIterator[list[Any]]:
    events_app.SEEN.clear()
    yield events_app.SEEN
    events_app.SEEN.clear()


def check_received(seen: list[Any]) -> None:
    order, attrs = seen[0]
    assert order == events_app.Order(id=1, symbol="ACME")
    assert attrs["id"] == "order-1" and attrs["type"] == "com.example.order.placed"
    assert attrs["source"] == "/shop" and attrs["subject"] == "ACME-1"
    assert attrs["time"].startswith("2024-05-01T12:00:01")


def check_sent(got: Any) -> None:
    assert got.get_specversion() == "1.0"
    assert got.get_source() == "/tests.cloudevents.events_app/handle-out-0"
    assert got.get_type() == "orders.v2"
    assert got.get_data() == {"id": 1, "symbol": "acme"}
    assert got.get_time() is not None and len(got.get_id()) == 36


@pytest.mark.kafka
@pytest.mark.parametrize("mode", MODES)
async def test_kafka(
    mode: str,
    seen: list[Any],
    tmp_path: Path,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
) -> None:
    inp, out, group = unique_name("ce-in"), unique_name("ce-out"), unique_name("g")
    tree = {
        "stream": {
            "function": {"definition": "handle"},
            "binders": {
                "kafka": {"type": "kafka", "environment": {"bootstrap-servers": kafka_bootstrap}}
            },
            "bindings": bindings(mode, inp, out, group, **{"cloudevents-type": "orders.v2"}),
        }
    }
    app = await start_app(tmp_path, tree)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    consumer = AIOKafkaConsumer(
        out, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    try:
        encode = kafka.to_binary if mode == "binary" else kafka.to_structured
        wire = encode(incoming_event(1), JSONFormat())
        await producer.send_and_wait(inp, wire.value, headers=list(wire.headers.items()))
        # Malformed: a binary event without source, type and specversion.
        await producer.send_and_wait(inp, b'{"id": 2}', headers=[("ce_id", b"x-2")])
        await eventually(lambda: len(seen) == 1, "the event handled")
        check_received(seen)
        record = await asyncio.wait_for(consumer.getone(), 30)
        got = kafka.from_kafka(
            kafka.KafkaMessage(dict(record.headers), record.key, record.value), JSONFormat()
        )
        check_sent(got)
        if mode == "structured":
            assert dict(record.headers)["contentType"] == b'"application/cloudevents+json"'
        else:
            assert dict(record.headers)["ce_type"] == b"orders.v2"
        await dead_lettered(app, "required attributes source, type, specversion missing")
    finally:
        await consumer.stop()
        await producer.stop()
        await app.stop()


async def dead_lettered(app: App, expected: str) -> None:
    (binder,) = app.binders.values()
    found = access(binder)
    assert found is not None
    plan = app.plan.inputs["handle"]
    from binder_core.spi import ConsumerSpec

    name = found.locate(
        ConsumerSpec(
            plan.name,
            plan.destination,
            plan.group,
            plan.properties.consumer,
            getattr(plan.extension, "consumer", None),
        )
    )
    assert name is not None
    letters: list[Any] = []

    async def there() -> bool:
        queue = await found.open(name)
        try:
            letters[:] = await queue.read(10)
        finally:
            await queue.close()
        return bool(letters)

    await eventually(there, "the malformed event dead-lettered")
    assert expected in reason(letters[0].message.headers)


@pytest.mark.rabbit
@pytest.mark.parametrize("mode", MODES)
async def test_rabbit(
    mode: str, seen: list[Any], tmp_path: Path, rabbit_url: str, unique_name: Callable[[str], str]
) -> None:
    inp, out, group = unique_name("ce-in"), unique_name("ce-out"), unique_name("g")
    extra = {"cloudevents-type": "orders.v2", "producer": {"required-groups": ["probe"]}}
    tree = {
        "stream": {
            "function": {"definition": "handle"},
            "binders": {"rabbit": {"type": "rabbit", "environment": {"uri": rabbit_url}}},
            "bindings": bindings(mode, inp, out, group, **extra),
        }
    }
    app = await start_app(tmp_path, tree)
    encode = amqp.to_binary if mode == "binary" else amqp.to_structured
    wire = encode(incoming_event(1), JSONFormat())

    def publish() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            props = pika.BasicProperties(
                content_type=wire.properties.get("content-type"),
                headers=dict(wire.application_properties) or None,
            )
            ch.basic_publish(inp, "order", wire.application_data, props)
            ch.basic_publish(
                inp, "order", b'{"id": 2}', pika.BasicProperties(headers={"cloudEvents:id": "x-2"})
            )
        finally:
            conn.close()

    def take() -> tuple[Any, bytes] | None:
        conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        try:
            method, props, body = conn.channel().basic_get(f"{out}.probe", auto_ack=True)
            return None if method is None else (props, body)
        finally:
            conn.close()

    try:
        await asyncio.to_thread(publish)
        await eventually(lambda: len(seen) == 1, "the event handled")
        check_received(seen)
        taken: list[tuple[Any, bytes]] = []

        async def arrived() -> bool:
            got = await asyncio.to_thread(take)
            if got is not None:
                taken.append(got)
            return bool(taken)

        await eventually(arrived, "the app's event")
        props, body = taken[0]
        message = amqp.AMQPMessage(
            {"content-type": props.content_type}, dict(props.headers or {}), body
        )
        check_sent(amqp.from_amqp(message, JSONFormat()))
        if mode == "binary":
            assert props.headers["cloudEvents:type"] == "orders.v2"
            assert props.content_type == "application/json"
        else:
            assert props.content_type == "application/cloudevents+json"
            assert json.loads(body)["type"] == "orders.v2"
        await dead_lettered(app, "required attributes source, type, specversion missing")
    finally:
        await app.stop()
