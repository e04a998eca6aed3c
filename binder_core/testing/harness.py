"""``TestApp``: an app running on the in-memory binder, driven from a test."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic_core

from binder_core import app_config
from binder_core.config import load_config
from binder_core.errors import ConfigError
from binder_core.message import CONTENT_TYPE, Message
from binder_core.plan import with_plan_problems
from binder_core.plugins import Registry, load_plugins
from binder_core.properties import canonical
from binder_core.runtime import App

_TAP = "__test-probe__"


class TestApp:
    """Runs an app's functions on the memory binder, whatever binders its YAML names.

    ``module`` is the app module, or a mapping of names to functions for an ad-hoc app.
    ``properties`` is a configuration tree laid over the files (``{"stream": {...}}``).
    Every output destination and every dead-letter destination is tapped before the app
    starts, so ``receive`` sees everything the app sends.
    """

    __test__ = False  # not a test class, whatever pytest's name matching thinks

    def __init__(
        self,
        module: types.ModuleType | Mapping[str, Callable[..., Any]],
        *,
        config_dir: Path | str | None = None,
        profiles: Sequence[str] = (),
        properties: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
        registry: Registry | None = None,
    ) -> None:
        if isinstance(module, types.ModuleType):
            self.module = module
        else:
            self.module = types.ModuleType("binder_test_app")
            for name, fn in module.items():
                setattr(self.module, name, fn)
        self._config_dir = Path(config_dir) if config_dir is not None else None
        self._profiles = profiles
        self._properties = dict(properties or {})
        if not isinstance(module, types.ModuleType) and not _has_definition(self._properties):
            self._properties = _with_definition(self._properties, ";".join(module))
        self._overrides = overrides
        self._registry = registry
        self.app: App | None = None
        self._taps: dict[str, Any] = {}

    async def start(self) -> TestApp:
        """Bind everything on the memory binder, tap outputs, start suppliers."""
        registry = self._registry or load_plugins()
        try:
            config = load_config(
                self._config_dir,
                self._profiles,
                self._overrides,
                registry.binder_types,
                environ={},
                properties=self._properties,
                read_files=self._config_dir is not None,
            )
        except ConfigError as exc:  # with what planning the app finds too, in one report
            raise with_plan_problems(exc, self.module, registry.converters, "memory") from None
        app_config.use(config.layered)
        self.app = App(self.module, config, registry, force_binder="memory")
        await self.app.bind()
        for plan in self.app.plan.all():
            if plan.direction == "out":
                self._tap(plan.destination)
        subscriptions = [b.subscription for b in self.app.bindings.values()]
        subscriptions += [p.subscription for p in self.app.pollables.values()]
        for subscription in subscriptions:
            dlq = getattr(subscription, "dlq_name", None)
            if dlq:
                self._tap(dlq)
        self.app.start_suppliers()
        return self

    async def stop(self) -> None:
        """Stop the app gracefully."""
        if self.app is not None:
            await self.app.stop()
            self.app = None
        app_config.use(None)

    async def __aenter__(self) -> TestApp:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def _broker(self) -> Any:
        assert self.app is not None, "TestApp is not started"
        return self.app.binders["memory"].broker  # type: ignore[attr-defined]

    def _tap(self, destination: str) -> Any:
        tap = self._taps.get(destination)
        if tap is None:
            tap = self._taps[destination] = self._broker.destination(destination).group(_TAP)
            # A probe must watch, not push back: a test that never reads a destination
            # should not slow the app down.
            tap.capacity = sys.maxsize
        return tap

    def destination_of(self, name: str) -> str:
        """The destination of binding ``name``, or ``name`` itself when no binding has it."""
        assert self.app is not None
        for plan in self.app.plan.all():
            if canonical(plan.name) == canonical(name):
                return plan.destination
        return name

    async def send(
        self,
        name: str,
        payload: Any,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        key: str | bytes | None = None,
    ) -> None:
        """Send to a destination (or to the destination of binding ``name``), with ``key``
        as the message key when given (what tables are keyed by)."""
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            data = pydantic_core.to_json(payload)
        hdrs = dict(headers or {})
        if content_type is not None:
            hdrs[CONTENT_TYPE] = content_type
        raw = key.encode("utf-8") if isinstance(key, str) else key
        message = Message(data, hdrs, raw)
        await self._broker.destination(self.destination_of(name)).publish([message])

    async def receive(self, name: str, timeout: float = 2.0) -> Message[bytes]:
        """The next message sent to a destination (or binding); ``TimeoutError`` if none
        arrives within ``timeout`` seconds."""
        tap = self._tap(self.destination_of(name))
        partition, batch = await asyncio.wait_for(tap.take(_any, 1, _never), timeout)
        tap.done(partition)
        message: Message[bytes] = batch[0]
        return message

    async def receive_all(
        self, name: str, count: int, timeout: float = 5.0
    ) -> list[Message[bytes]]:
        """Exactly ``count`` messages (fails with ``TimeoutError`` when fewer arrive)."""
        out: list[Message[bytes]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"received {len(out)} of {count} messages from {name}")
            out.append(await self.receive(name, remaining))
        return out

    def watch(self, name: str) -> None:
        """Tap a destination the app has no binding for (one a function reaches through
        ``StreamBridge``), so that ``receive`` sees what is sent to it from now on; the
        bindings' destinations are tapped from the start."""
        self._tap(self.destination_of(name))

    def pending(self, name: str) -> int:
        """Messages sent to a destination (or binding) and not yet received by the test."""
        return int(self._tap(self.destination_of(name)).size)

    def dead_letter_destination(self, binding: str) -> str:
        """The dead-letter destination of an input binding."""
        assert self.app is not None
        inputs: dict[str, Any] = {
            **{n: b.subscription for n, b in self.app.bindings.items()},
            **{n: p.subscription for n, p in self.app.pollables.items()},
        }
        found = inputs.get(binding) or next(
            (s for n, s in inputs.items() if canonical(n) == canonical(binding)), None
        )
        if found is None:
            raise KeyError(f"no input binding '{binding}'")
        return str(found.dlq_name)


def _any(_: int) -> bool:
    return True


def _never() -> bool:
    return False


def _has_definition(tree: Mapping[str, Any]) -> bool:
    stream = tree.get("stream") or {}
    function = stream.get("function") or {}
    return bool(function.get("definition"))


def _with_definition(tree: Mapping[str, Any], definition: str) -> dict[str, Any]:
    out = dict(tree)
    stream = dict(out.get("stream") or {})
    function = dict(stream.get("function") or {})
    function["definition"] = definition
    stream["function"] = function
    out["stream"] = stream
    return out
