"""The example apps and the command line on RabbitMQ, switched by profile alone, plus an
app run in-process to show the core's failures (conversion) reach the DLQ."""

from __future__ import annotations

import asyncio
import os
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from binder_core import app_config
from binder_core.config import load_config
from binder_core.message import Message
from binder_core.plugins import load_plugins
from binder_core.properties import ProducerProperties
from binder_core.runtime import App
from binder_core.spi import ConsumerSpec, ProducerSpec
from binders.rabbit.binder import RabbitBinder
from tests.rabbit.conftest import Admin
from tests.support import REPO, AppProcess, Collector, eventually

pytestmark = pytest.mark.rabbit

Namer = Callable[[str], str]
Apps = Callable[..., AppProcess]


def broker_sets(rabbit_url: str) -> list[str]:
    """Point the profile at RABBITMQ_URL when one is given; else the profile's own host."""
    if os.environ.get("RABBITMQ_URL"):
        return ["--set", f"stream.binders.rabbit.environment.uri={rabbit_url}"]
    return []


def sets(**bindings: str) -> list[str]:
    out = []
    for key, value in bindings.items():
        out += ["--set", f"stream.bindings.{key.replace('_', '-')}={value}"]
    return out


async def test_uppercase_runs_on_rabbit_by_profile(
    binder: RabbitBinder, admin: Admin, apps: Apps, unique_name: Namer, rabbit_url: str
) -> None:
    words, shouted = unique_name("words"), unique_name("shouted")
    admin.track(words, "shouters")
    admin.track(shouted, "check")
    out = Collector()
    await binder.consumer(ConsumerSpec("check", shouted, "check"), out)
    producer = await binder.producer(
        ProducerSpec("in", words, ProducerProperties(required_groups=["shouters"]))
    )
    app = apps(
        "run",
        "apps.uppercase",
        "--config",
        "config/uppercase",
        "--profile",
        "rabbit",
        *sets(**{"uppercase-in-0.destination": words, "uppercase-out-0.destination": shouted}),
        *broker_sets(rabbit_url),
    )
    await eventually(lambda: _consumers(admin, f"{words}.shouters", 1), "the app to subscribe")
    sent = [f"word{i}" for i in range(200)]
    await producer.send([Message(w.encode(), {"contentType": "text/plain"}) for w in sent])
    await out.wait_for(200)
    assert sorted(out.payloads) == sorted(w.upper().encode() for w in sent)
    assert {m.headers["contentType"] for m in out.messages} == {"text/plain"}
    assert await app.stop() == 0, app.output
    assert await admin.state(f"{words}.shouters") == (0, 0)


async def test_market_runs_on_rabbit_by_profile(
    binder: RabbitBinder, admin: Admin, apps: Apps, unique_name: Namer, rabbit_url: str
) -> None:
    ticks, alerts = unique_name("ticks"), unique_name("alerts")
    admin.track(ticks, "alerts", "audit", "watch")
    admin.track(alerts, "notifier")
    watch = Collector()
    await binder.consumer(ConsumerSpec("watch", ticks, "watch"), watch)
    app = apps(
        "run",
        "apps.market",
        "--profile",
        "rabbit",
        "--set",
        "stream.poller.fixed-delay=5",
        *sets(
            **{
                "ticker-out-0.destination": ticks,
                "price_alerts-in-0.destination": ticks,
                "audit-in-0.destination": ticks,
                "price_alerts-out-0.destination": alerts,
                "notify-in-0.destination": alerts,
            }
        ),
        *broker_sets(rabbit_url),
    )
    await watch.wait_for(60)
    await eventually(lambda: "audit: 50 ticks recorded" in app.output, "the audit tally")
    assert {m.headers["contentType"] for m in watch.messages} == {"application/json"}
    assert await app.stop() == 0, app.output
    for queue in (f"{ticks}.alerts", f"{ticks}.audit", f"{alerts}.notifier"):
        state = await admin.state(queue)
        assert state is not None and state[1] == 0, f"{queue}: declared, no consumer left"


async def test_send_and_tail_from_the_command_line(
    admin: Admin, apps: Apps, unique_name: Namer, rabbit_url: str
) -> None:
    dest = unique_name("cli")
    admin.track(dest, "peek")
    nobody = apps("send", dest, '{"n": 1}', "--profile", "rabbit", *broker_sets(rabbit_url))
    assert await nobody.wait() == 1
    assert "unroutable" in nobody.output, "sending where no queue listens is an error"

    tail = apps(
        "tail",
        dest,
        "--group",
        "peek",
        "--count",
        "2",
        "--profile",
        "rabbit",
        *broker_sets(rabbit_url),
    )
    await eventually(lambda: _consumers(admin, f"{dest}.peek", 1), "tail to subscribe")
    for n in (1, 2):
        send = apps(
            "send",
            dest,
            f'{{"n": {n}}}',
            "--header",
            "x-k=v",
            "--profile",
            "rabbit",
            *broker_sets(rabbit_url),
        )
        assert await send.wait() == 0, send.output
    assert await tail.wait() == 0, "tail exits after 2 messages"
    assert '{"n": 1}' in tail.output and '{"n": 2}' in tail.output
    assert "x-k" in tail.output


async def test_config_dump_masks_the_password(apps: Apps) -> None:
    proc = apps(
        "config",
        "--profile",
        "rabbit",
        "--set",
        "stream.binders.rabbit.environment.password=s3cr3t-zebra",
        "--set",
        "stream.rabbit.binder.uri=amqp://bob:uri-pw-77@127.0.0.1:5672/%2F",
    )
    assert await proc.wait() == 0, proc.output
    assert "s3cr3t-zebra" not in proc.output
    assert "uri-pw-77" not in proc.output
    assert "environment.password" in proc.output


class Order(BaseModel):
    """What the in-process app expects."""

    item: str
    quantity: int


def confirm(order: Order) -> str:
    return f"{order.quantity} x {order.item}"


async def test_undeserializable_input_is_dead_lettered_by_the_core(
    binder: RabbitBinder, admin: Admin, unique_name: Namer, rabbit_url: str
) -> None:
    orders, confirmed = unique_name("orders"), unique_name("confirmed")
    admin.track(orders, "shop")
    admin.track(confirmed, "check")
    out = Collector()
    await binder.consumer(ConsumerSpec("check", confirmed, "check"), out)
    module = types.ModuleType("shop_app")
    module.confirm = confirm  # type: ignore[attr-defined]
    tree = {
        "stream": {
            "function": {"definition": "confirm"},
            "default-binder": "rabbit",
            "binders": {"rabbit": {"type": "rabbit", "environment": {"uri": rabbit_url}}},
            "bindings": {
                "confirm-in-0": {"destination": orders, "group": "shop"},
                "confirm-out-0": {"destination": confirmed, "content-type": "text/plain"},
            },
        }
    }
    registry = load_plugins()
    config = load_config(
        None, [], [], registry.binder_types, environ={}, properties=tree, read_files=False
    )
    app_config.use(config.layered)
    app = App(module, config, registry)
    await app.start()
    try:
        producer = await binder.producer(ProducerSpec("in", orders))
        await producer.send(
            [
                Message(b'{"item": "tea", "quantity": 2}'),
                Message(b'{"item": "tea", "quantity": "lots"}'),
                Message(b"not json at all"),
            ]
        )
        await out.wait_for(1)
        await eventually(lambda: _depth(admin, f"{orders}.shop.dlq", 2), "2 dead letters")
    finally:
        await app.stop()
        app_config.use(None)
    assert out.payloads == [b"2 x tea"]
    dead = admin.drain(f"{orders}.shop.dlq")
    assert [body for _, _, body in dead] == [
        b'{"item": "tea", "quantity": "lots"}',
        b"not json at all",
    ]
    assert {p.headers["x-exception-fqcn"] for _, p, _ in dead} == {
        "binder_core.errors.ConversionError"
    }


async def _consumers(admin: Admin, queue: str, n: int) -> bool:
    state = await admin.state(queue)
    return state is not None and state[1] == n


async def _depth(admin: Admin, queue: str, n: int) -> bool:
    state = await admin.state(queue)
    return state is not None and state[0] == n


assert Path(REPO, "apps", "uppercase.py").exists()


async def test_overlapping_batches_keep_order_and_lose_nothing(
    binder: RabbitBinder, admin: Admin, unique_name: Namer, rabbit_url: str
) -> None:
    """A consumer takes its next batch while the previous one's outputs wait for their
    confirms. With small batches and an async function that yields on every message (so
    two batches could interleave if the binder let them), the outputs must still come out
    in input order, each once, and the function must never run for two batches at once."""
    words, shouted = unique_name("words"), unique_name("shouted")
    admin.track(words, "g")
    admin.track(shouted, "check")
    out = Collector()
    await binder.consumer(ConsumerSpec("check", shouted, "check"), out)
    running = 0
    most = 0

    async def shout(word: str) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        running -= 1
        return word.upper()

    module = types.ModuleType("shout_app")
    module.shout = shout  # type: ignore[attr-defined]
    tree = {
        "stream": {
            "function": {"definition": "shout"},
            "default-binder": "rabbit",
            "binders": {"rabbit": {"type": "rabbit", "environment": {"uri": rabbit_url}}},
            "bindings": {
                "shout-in-0": {"destination": words, "group": "g", "content-type": "text/plain"},
                "shout-out-0": {"destination": shouted, "content-type": "text/plain"},
            },
            "rabbit": {"bindings": {"shout-in-0": {"consumer": {"prefetch": 20}}}},
        }
    }
    registry = load_plugins()
    config = load_config(
        None, [], [], registry.binder_types, environ={}, properties=tree, read_files=False
    )
    app_config.use(config.layered)
    app = App(module, config, registry)
    await app.start()
    sent = [f"w{i}" for i in range(3000)]
    try:
        producer = await binder.producer(ProducerSpec("in", words))
        for i in range(0, len(sent), 500):
            await producer.send([Message(w.encode()) for w in sent[i : i + 500]])
        await out.wait_for(len(sent))
    finally:
        await app.stop()
        app_config.use(None)
    assert out.payloads == [w.upper().encode() for w in sent]
    assert most == 1, "the function ran for two batches at once"
    assert await admin.state(f"{words}.g") == (0, 0)
