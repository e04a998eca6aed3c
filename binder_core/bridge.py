"""``StreamBridge``: sending to a binding or to any destination from arbitrary code (a web
handler, a scheduled job), through the same binders and conversion as functions."""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Protocol

from binder_core.config import AppConfig
from binder_core.errors import BinderException, did_you_mean
from binder_core.limits import DESTINATION_NAME_BYTES
from binder_core.message import Message
from binder_core.output import Output
from binder_core.plan import plan_binding
from binder_core.plugins import Registry
from binder_core.polling import PolledSource
from binder_core.properties import canonical

#: The bridge of the app whose task is running: an app's tasks inherit it from where the
#: app was started, so two apps in one process each send through their own.
_CURRENT: ContextVar[StreamBridge | None] = ContextVar("binder_stream_bridge", default=None)


class Host(Protocol):
    """What the bridge needs of the app it belongs to."""

    config: AppConfig
    registry: Registry
    outputs_by_name: dict[str, Output]
    force_binder: str | None
    pollables: dict[str, PolledSource]

    async def bind_output(self, name: str, dynamic: bool = False) -> Output:
        """Bind an output for ``name`` on first use."""


class StreamBridge:
    """Sends values to bindings or destinations of the running app.

    ``await StreamBridge.current().send("orders-out-0", order)`` sends to a configured
    binding; a name that is no binding is a destination on the default binder, bound on
    first use. Producers for such dynamic destinations are kept in a bounded cache
    (``stream.dynamic-destination-cache-size``) and closed when evicted, so sending to many
    destinations cannot leak. A name that comes from code (perhaps from a request) is
    checked before anything is created: the core's bound (``check_destination_name``),
    then the binder type's naming rules.
    """

    def __init__(self, app: Host) -> None:
        self._app = app
        self._dynamic: OrderedDict[str, Output] = OrderedDict()
        self._lock = asyncio.Lock()

    @classmethod
    def current(cls) -> StreamBridge:
        """The bridge of the running app: the one whose function, supplier or task calls
        (or, from other code, the app started last in this task)."""
        bridge = _CURRENT.get()
        if bridge is None:
            raise BinderException("no binder app is running here")
        return bridge

    def pollable(self, name: str) -> PolledSource:
        """The input binding ``name`` that the app polls itself (``stream.pollable-source``)."""
        app = self._app
        found = app.pollables.get(name) or next(
            (p for n, p in app.pollables.items() if canonical(n) == canonical(name)), None
        )
        if found is None:
            raise BinderException(
                f"'{name}' is not a pollable source (stream.pollable-source binds "
                "<name>-in-0)" + did_you_mean(name, app.pollables)
            )
        return found

    def use(self) -> None:
        """Make this the bridge ``current`` returns here and in tasks started from here."""
        _CURRENT.set(self)

    def release(self) -> None:
        """Stop being the current bridge here (the app stopped)."""
        if _CURRENT.get() is self:
            _CURRENT.set(None)

    async def send(self, name: str, value: Any, headers: Mapping[str, Any] | None = None) -> None:
        """Send ``value`` and return once the broker confirmed it."""
        output = await self._output(name)
        if headers:
            value = (
                Message(value.payload, {**value.headers, **headers})
                if isinstance(value, Message)
                else Message(value, dict(headers))
            )
        await output.send([output.message(value)])

    async def _output(self, name: str) -> Output:
        found = self._app.outputs_by_name.get(canonical(name))
        if found is not None:
            return found
        cached = self._dynamic.get(name)
        if cached is not None:
            self._dynamic.move_to_end(name)
            return cached
        async with self._lock:
            if name in self._dynamic:
                return self._dynamic[name]
            problem = check_destination_name(name)
            if problem is not None:
                raise BinderException(f"cannot send to {_shown(name)}: {problem}")
            allowed = self._app.config.stream.dynamic_destinations
            if allowed and name not in allowed:
                raise BinderException(
                    f"'{name}' is neither a binding nor one of stream.dynamic-destinations"
                    + did_you_mean(name, [*allowed, *self._app.outputs_by_name])
                )
            self._check_with_binder(name)
            output = await self._app.bind_output(name, dynamic=True)
            self._dynamic[name] = output
            size = self._app.config.stream.dynamic_destination_cache_size
            while len(self._dynamic) > size:
                _, evicted = self._dynamic.popitem(last=False)
                await evicted.close()
            return output

    def _check_with_binder(self, name: str) -> None:
        """The naming rules of the binder type the destination would be created on."""
        app = self._app
        plan = plan_binding(app.config, name, "out", "", app.force_binder)
        binder_type = app.registry.binder_types.get(plan.binder_type)
        check = binder_type.check_name if binder_type is not None else None
        problem = check("destination", plan.destination) if check is not None else None
        if problem is not None:
            raise BinderException(
                f"cannot send to {_shown(plan.destination)} on binder '{plan.binder}' "
                f"({plan.binder_type}): {problem}"
            )

    async def close(self) -> None:
        """Close the producers of dynamic destinations."""
        while self._dynamic:
            _, output = self._dynamic.popitem(last=False)
            await output.close()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_destination_name(name: str) -> str | None:
    """What is wrong with ``name`` as a destination any binder could create, or ``None``:
    empty, longer than ``limits.DESTINATION_NAME_BYTES`` in UTF-8, or holding control
    characters (a line break in a name forges log lines)."""
    if not isinstance(name, str) or not name:
        return "a destination name must be a non-empty string"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > DESTINATION_NAME_BYTES:
        return f"the name is {size} bytes long; at most {DESTINATION_NAME_BYTES} are allowed"
    if _CONTROL.search(name):
        return "the name holds control characters"
    return None


def _shown(name: str) -> str:
    """A name as error messages quote it: never more than a line."""
    text = name if len(name) <= 80 else f"{name[:80]}..."
    return repr(text)
