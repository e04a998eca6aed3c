"""The Python side of the interoperability tests: an app of plain functions, configured as
a user would in YAML (given here as a dict), run in-process on the real binder."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from binder_core import app_config
from binder_core.config import load_config
from binder_core.plugins import load_plugins
from binder_core.runtime import App
from tests.interop.spring import SpringApp
from tests.interop.wire import Wire
from tests.support import eventually


@contextlib.asynccontextmanager
async def python_app(
    wire: Wire,
    functions: Mapping[str, Callable[..., Any]] | types.ModuleType,
    bindings: Mapping[str, Mapping[str, Any]],
    binder_bindings: Mapping[str, Mapping[str, Any]] | None = None,
    function: Mapping[str, Any] | None = None,
    **stream: Any,
) -> AsyncIterator[App]:
    """Run ``functions`` (or a module's) with ``stream.bindings`` = ``bindings`` and the
    binder-specific ``stream.<binder>.bindings`` = ``binder_bindings`` on ``wire``'s
    broker; started when the block begins (consumers subscribed), stopped gracefully when
    it ends.
    ``stream.function`` is ``function`` when given, else every function bound."""
    if isinstance(functions, types.ModuleType):
        module, functions = functions, {}
    else:
        module = types.ModuleType("interop_python_app")
        for name, fn in functions.items():
            setattr(module, name, fn)
    tree: dict[str, Any] = {
        "function": dict(function) if function is not None else {"definition": ";".join(functions)},
        "default-binder": wire.name,
        "binders": {wire.name: wire.python_binder()},
        "bindings": {k: dict(v) for k, v in bindings.items()},
        # Quick retries: the cases that fail on purpose need not wait Spring's seconds.
        "default": {"consumer": {"back-off-initial-interval": 10, "back-off-max-interval": 50}},
        **stream,
    }
    if binder_bindings:
        tree[wire.name] = {"bindings": {k: dict(v) for k, v in binder_bindings.items()}}
    registry = load_plugins()
    config = load_config(
        None, (), (), registry.binder_types, environ={}, properties={"stream": tree},
        read_files=False,
    )  # fmt: skip
    app = App(module, config, registry)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
        app_config.use(None)


async def warm_spring_consumer(
    app: App,
    binding: str,
    spring: SpringApp,
    consumer: str,
    destination: str,
    queue: str,
    url: str,
) -> None:
    """Let Spring's consumer of a RabbitMQ queue ``queue`` that ``app``'s ``binding``
    (at ``url``) shares handle one message, ``warm-up``, alone: RabbitMQ hands a queue's messages to
    whichever consumer has room, and a JVM running a function for the first time (class
    loading, no JIT yet) is slow enough for the other member to take a whole burst.
    Meanwhile our member is paused (its subscription cancelled), then resumed."""
    ours = app.bindings[binding]
    await ours.pause()
    await eventually(
        lambda: asyncio.to_thread(_consumers, url, queue, 1),
        f"only Spring's consumer on {queue}",
    )
    await app.bridge.send(destination, "warm-up")
    await spring.wait_received(consumer, 1, match="warm-up")
    await ours.resume()


def _consumers(url: str, queue: str, count: int) -> bool:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = connection.channel().queue_declare(queue, passive=True).method
        return int(ok.consumer_count) == count
    finally:
        connection.close()
