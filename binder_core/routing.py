"""Spring's router function: one input binding, ``functionRouter-in-0``, whose messages go
to one of the app's own functions, chosen per message.

The choice, in Spring's order: the message's ``spring.cloud.function.definition`` header (a
function name, or a composition ``a|b``), then ``stream.function.routing-expression`` (the
core's safe expression language over headers and payload: it names the function), then
``stream.function.routing.default-function``. Only the app's own public functions (or the
ones ``stream.function.routing.functions`` lists) can be chosen; nothing from a message
names anything else, and a routing expression in a header is never evaluated. A message no
function matches is dead-lettered with the reason. What the chosen function returns goes
to ``functionRouter-out-0``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from binder_core.arguments import argument_maker
from binder_core.calls import compose
from binder_core.errors import ConversionError, did_you_mean
from binder_core.expression import compile_expression
from binder_core.functions import (
    Definition,
    FunctionInfo,
    Kind,
    candidates,
    find_function,
    inspect_function,
)
from binder_core.message import Message
from binder_core.output import Output
from binder_core.pipeline import Pipeline, Work
from binder_core.retry import RetryPolicy
from binder_core.spi import Batch, Converter, Outcome

#: Spring's names: the router function, and the header that names the target.
ROUTER = "functionRouter"
DEFINITION_HEADER = "spring.cloud.function.definition"

#: Routes (target definitions) remembered per router; a header cannot grow it past this.
_ROUTES = 64


class RoutingError(ConversionError):
    """No function matches a message (not retried: the same message routes the same way)."""


def router_info() -> FunctionInfo:
    """The router as a function of the plan (its bindings are Spring's names)."""
    return FunctionInfo(
        name=ROUTER,
        fn=_never_called,
        kind=Kind.FUNCTION,
        is_async=True,
        is_generator=False,
        is_async_generator=False,
        reactive=False,
        input_type=Any,
        wants_message=False,
        batch=False,
    )


async def _never_called(value: Any) -> Any:
    raise RuntimeError("the router function is run by binder_core.routing, not called")


@dataclass(frozen=True, slots=True)
class Route:
    """One target: how to make its argument and how to call it."""

    name: str
    argument: Callable[[Message[bytes]], Any]
    apply: Callable[[Any], Awaitable[list[Any]]]


class Routes:
    """Resolves a message to one of the allowed functions."""

    def __init__(
        self,
        module: ModuleType,
        allowed: list[str],
        expression: str | None,
        default: str | None,
        content_type: str,
        converters: dict[str, Converter],
    ) -> None:
        if allowed:
            # Listed in the configuration: any public callable of the module may be one.
            listed = {n: find_function(module, n) for n in allowed}
            self._functions = {n: fn for n, fn in listed.items() if fn is not None}
        else:
            # What a message may name: only functions defined in the app module itself.
            self._functions = candidates(module)
        self._expression = compile_expression(expression) if expression else None
        self._from_payload = (expression or "").strip().startswith("payload")
        self._default = default
        self._content_type = content_type
        self._converters = converters
        self._routes: dict[str, Route] = {}

    def route(self, message: Message[bytes]) -> Route:
        """The target for ``message``; ``RoutingError`` when none matches."""
        headers = message.headers
        named = headers.get(DEFINITION_HEADER)
        if isinstance(named, bytes):
            named = named.decode("utf-8", "replace")
        if isinstance(named, str) and named.strip():
            return self._compiled(named.strip(), DEFINITION_HEADER)
        if self._expression is not None:
            payload: Any = message.payload
            if self._from_payload:
                try:
                    payload = json.loads(payload)
                except ValueError:
                    raise RoutingError(
                        "routing-expression reads the payload, which is not JSON"
                    ) from None
            try:
                chosen = self._expression(payload, headers)
            except Exception as exc:
                raise RoutingError(f"routing-expression failed: {type(exc).__name__}") from None
            if chosen is not None:
                return self._compiled(str(chosen), "routing-expression")
        if self._default:
            return self._compiled(self._default, "routing.default-function")
        raise RoutingError(
            f"no function for this message: no {DEFINITION_HEADER} header"
            + (", the routing-expression gave nothing" if self._expression else "")
            + " and no routing.default-function"
        )

    def _compiled(self, definition: str, source: str) -> Route:
        found = self._routes.get(definition)
        if found is not None:
            return found
        parts: list[FunctionInfo] = []
        for name in (p.strip() for p in definition.split("|")):
            fn = self._functions.get(name)
            if fn is None:
                shown = name if len(name) <= 60 else name[:57] + "..."
                raise RoutingError(
                    f"{source} names '{shown}', which is not a function the router may call"
                    + did_you_mean(name, self._functions)
                )
            try:
                info = inspect_function(name, fn)
            except TypeError as exc:
                raise RoutingError(f"{source}: {exc}") from None
            if not info.has_input or info.reactive or info.batch or info.outputs > 1:
                raise RoutingError(
                    f"{source} names '{name}', which takes no single message (a supplier, "
                    "a stream or batch function, or one with several outputs)"
                )
            parts.append(info)
        target = Definition("".join(p.name for p in parts), tuple(parts))
        route = Route(
            definition,
            argument_maker(target.first, self._content_type, self._converters),
            compose(target, blocking=False),
        )
        if len(self._routes) < _ROUTES:
            self._routes[definition] = route
        return route


class Router(Pipeline):
    """The consumer side of ``functionRouter-in-0``: each message runs the function it
    routes to, with the binding's retry policy; outputs go to ``functionRouter-out-0``."""

    def __init__(
        self,
        binding: str,
        routes: Routes,
        content_type: str,
        converters: dict[str, Converter],
        policy: RetryPolicy,
        output: Output | None,
    ) -> None:
        super().__init__(
            binding,
            Definition(ROUTER, (router_info(),)),
            content_type,
            converters,
            policy,
            output,
        )
        self._routes = routes

    async def process(self, batch: Batch, transaction: Any = None) -> Work:
        messages = batch.messages
        unreadable = batch.unreadable or {}
        outcomes: list[Outcome] = []
        work = Work(batch, outcomes, transaction)
        output, to_wire = self.output, self._to_wire
        pending, spans = work.outputs, work.spans
        for i, msg in enumerate(messages):
            outcome: Outcome = None
            try:
                if i in unreadable:
                    raise unreadable[i]
                route = self._routes.route(msg)
            except Exception as exc:
                outcomes.append(self._failed(exc, 1))
                spans.append(len(pending))
                continue

            async def run(route: Route = route, msg: Message[bytes] = msg) -> list[Any]:
                values = await route.apply(route.argument(msg))
                return [to_wire(v) for v in values] if to_wire is not None else []

            try:
                pending.extend(await run())
            except Exception as exc:
                result = await self._attempts(exc, run)
                if isinstance(result, Exception):
                    outcome = result
                else:
                    pending.extend(result)
            outcomes.append(outcome)
            spans.append(len(pending))
        if output is not None and pending:
            work.outbox = output.outbox(transaction)
            work.output = output
            await work.outbox.add(pending)
        return work
