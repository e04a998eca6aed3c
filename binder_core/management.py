"""The management endpoint: see and steer a running app over HTTP, on the app's own loop.

- ``GET /health``: liveness (the event loop answers).
- ``GET /ready``: readiness: every binding started and running, every binder's broker
  reachable; 503 otherwise. The body says, per binder and per binding, what is wrong.
- ``GET /bindings``, ``GET /bindings/NAME``, ``POST /bindings/NAME`` with
  ``{"state": "STOPPED" | "STARTED" | "PAUSED" | "RESUMED"}`` (Spring's actuator words).
- ``GET /metrics``: Prometheus text (``metrics.py``).
- ``GET /ops/``: the operations page, live in a browser (``ops_page.py``).
- ``/dead-letters``: list, show, replay and purge dead letters (``dlq/endpoint.py``).

Off unless a port is configured. It listens on 127.0.0.1 unless told otherwise; on any
other address a bearer token is required (from ``token``, ``token-file`` or the
environment variable ``token-env`` names), checked in constant time on every request, and
the endpoint refuses to start without one. aiohttp is imported only when the endpoint is on.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from errno import EADDRINUSE
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from binder_core.config import AppConfig
from binder_core.consumer import ConsumerBinding
from binder_core.errors import BinderException, ConfigError, Problem
from binder_core.metrics import AppCollector, BatchTimes, Sampler, text
from binder_core.output import Output
from binder_core.plan import AppPlan
from binder_core.properties import ManagementProperties, canonical
from binder_core.spi import Binder, BindingState, Health

if TYPE_CHECKING:
    from aiohttp import web

    from binder_core.ops_page import OpsPage
    from binder_core.stateful import AppState

log = logging.getLogger(__name__)

#: Seconds a readiness check waits for one binder's health.
_HEALTH_WAIT = 2.0

#: Spring's actuator vocabulary -> what to do with the binding.
_ACTIONS = {"STOPPED": "stop", "STARTED": "start", "PAUSED": "pause", "RESUMED": "resume"}


class ManagementError(BinderException):
    """The management endpoint cannot start as configured."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        #: The configuration key at fault, and what is wrong with it.
        self.key = key
        self.reason = reason


class Managed(Protocol):
    """What the endpoint needs of an app."""

    plan: AppPlan
    binders: dict[str, Binder]
    bindings: dict[str, ConsumerBinding]
    outputs_by_name: dict[str, Output]
    state: AppState

    def binder_of(self, binding: str) -> str:
        """The binder name of a binding."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_name(host: str) -> bool:
    """Whether a request's ``Host`` (``name:port``, ``[v6]:port``) names this machine."""
    name = host.strip()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    return is_loopback(name.lower())


def resolve_token(props: ManagementProperties) -> str | None:
    """The bearer token from the configuration, its file, or its environment variable."""
    if props.token is not None:
        return props.token.get_secret_value()
    if props.token_file is not None:
        key = "stream.management.token-file"
        try:
            first = Path(props.token_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ManagementError(key, f"cannot read {props.token_file}: {exc.strerror}") from None
        token = first[0].strip() if first else ""
        if not token:
            raise ManagementError(key, f"{props.token_file} is empty")
        return token
    return os.environ.get(props.token_env) or None


def checked_token(props: ManagementProperties) -> str | None:
    """The token, or ``None`` on loopback without one; raises ``ManagementError`` when the
    endpoint would listen where other machines reach it without a token."""
    token = resolve_token(props)
    if not is_loopback(props.host) and token is None:
        raise ManagementError(
            "stream.management.host",
            f"{props.host} is reachable from other machines, so the endpoint needs a token: "
            f"set the environment variable {props.token_env} (or "
            "stream.management.token-file), or listen on 127.0.0.1",
        )
    return token


def check(config: AppConfig) -> None:
    """Refuse, as a configuration error, an endpoint that could not start (no token off
    loopback, an unreadable token file): checked before anything connects."""
    props = config.stream.management
    if props.port is None:
        return
    try:
        checked_token(props)
    except ManagementError as exc:
        source = config.layered.exact_source(exc.key.split("."))
        raise ConfigError([Problem(exc.key, exc.reason, source)]) from None


class Management:
    """The endpoint of one app."""

    def __init__(self, app: Managed, props: ManagementProperties) -> None:
        self._app = app
        self._props = props
        self._token = checked_token(props)
        self.sampler = Sampler(app, props.sample_interval)
        self.times: dict[str, BatchTimes] = {}
        self.collector = AppCollector(app, self.sampler, self.times)
        self._runner: Any = None
        self.ops: OpsPage | None = None
        #: The port it listens on (the one the system chose, for port 0).
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = self._props.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def watch(self, name: str, binding: ConsumerBinding) -> None:
        """Time ``binding``'s batches for the duration histogram (one histogram per binding
        for the life of the endpoint: a binding stopped and started again keeps counting,
        as its other counters do)."""
        times = self.times.get(name)
        if times is None:
            times = self.times[name] = BatchTimes()
        binding.stats.observe = times.observe

    async def start(self) -> None:
        from aiohttp import web

        from binder_core.ops_page import OpsPage

        for name, binding in self._app.bindings.items():
            self.watch(name, binding)
        auth = self._auth

        @web.middleware
        async def authorized(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            return await auth(request, handler)

        app = web.Application(middlewares=[authorized])
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/ready", self._ready),
                web.get("/bindings", self._bindings),
                web.get("/bindings/{name}", self._binding),
                web.post("/bindings/{name}", self._control),
                web.get("/metrics", self._metrics),
                web.get("/asyncapi", self._asyncapi),
            ]
        )
        from binder_core.dlq.endpoint import DeadLetterRoutes

        app.add_routes(DeadLetterRoutes(self._app.plan, self._app.binders).routes())
        from binder_core.state_endpoint import StateRoutes

        app.add_routes(StateRoutes(self._app.state).routes())
        self.ops = OpsPage(self._app, self.describe, self.sampler, self._token)
        app.add_routes(self.ops.routes())
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._props.host, self._props.port or 0)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            # asyncio words the error itself ("error while attempting to bind on address
            # ..."); the system's text for its errno says it plainly.
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            hint = "; choose another port, or 0 for a free one" if exc.errno == EADDRINUSE else ""
            raise ManagementError(
                "stream.management.port",
                f"the endpoint cannot listen on {self._props.host}:{self._props.port}: {why}{hint}",
            ) from None
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._props.port
        self.sampler.start()
        self.ops.port = self.port
        self.ops.start()
        log.info("management endpoint at %s (operations page: %s/ops/)", self.url, self.url)

    async def stop(self) -> None:
        if self.ops is not None:
            await self.ops.stop()  # ends the live feeds, which would hold the runner's cleanup
        await self.sampler.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- requests --------------------------------------------------------------------------

    async def _auth(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        from aiohttp import web

        token = self._token
        ops = self.ops
        if token is None and not _loopback_name(request.host):
            # Without a token the endpoint listens on loopback only; a request naming
            # another host there came through a name that resolves to 127.0.0.1 (DNS
            # rebinding): a web page of that name must not read or steer the app.
            return web.json_response(
                {"error": "this endpoint answers requests addressed to localhost only"},
                status=403,
            )
        if token is not None and not (
            ops is not None and (ops.public(request) or ops.admits(request))
        ):
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return web.json_response(
                    {"error": "a bearer token is required (Authorization: Bearer ...)"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    async def _health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response({"status": "UP"})

    async def _ready(self, request: web.Request) -> web.Response:
        from aiohttp import web

        report = await self.readiness()
        return web.json_response(report, status=200 if report["status"] == "UP" else 503)

    async def readiness(self) -> dict[str, Any]:
        """Per binder (its broker answers) and per binding (started, every consumer
        running): UP only when all are."""
        app = self._app
        binders: dict[str, Any] = {}
        for name, binder in app.binders.items():
            try:
                async with asyncio.timeout(_HEALTH_WAIT):
                    health = await binder.health()
            except Exception as exc:
                health = Health(False, f"health check failed: {type(exc).__name__}")
            binders[name] = {
                "status": "UP" if health.up else "DOWN",
                "detail": health.detail,
                "reconnects": health.reconnects,
            }
        bindings: dict[str, Any] = {}
        for name, binding in app.bindings.items():
            running = binding.state is not BindingState.STOPPED and binding.ready
            bindings[name] = {
                "status": "UP" if running else "DOWN",
                "state": binding.state.value,
                "consumers": [c.value for c in binding.consumers],
            }
        up = all(b["status"] == "UP" for b in [*binders.values(), *bindings.values()])
        return {"status": "UP" if up else "DOWN", "binders": binders, "bindings": bindings}

    async def _asyncapi(self, request: web.Request) -> web.Response:
        """The running app's AsyncAPI 3.0 document, as ``binder asyncapi`` writes it (JSON):
        a catalogue or a gateway can read it from the app itself."""
        from aiohttp import web

        from binder_core.asyncapi import document

        app = self._app
        config = getattr(app, "config", None)  # an app made for tests may have none
        if config is None:
            return web.json_response({"error": "this app has no configuration"}, status=404)
        title = getattr(getattr(app, "module", None), "__name__", "app")
        return web.json_response(document(app.plan, config, title))

    async def _bindings(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response([self.describe(plan.name) for plan in self._app.plan.all()])

    def _find(self, name: str) -> str | None:
        for plan in self._app.plan.all():
            if canonical(plan.name) == canonical(name):
                return plan.name
        return None

    async def _binding(self, request: web.Request) -> web.Response:
        from aiohttp import web

        name = self._find(request.match_info["name"])
        if name is None:
            return _not_found(request.match_info["name"])
        return web.json_response(self.describe(name))

    async def _control(self, request: web.Request) -> web.Response:
        from aiohttp import web

        name = self._find(request.match_info["name"])
        if name is None:
            return _not_found(request.match_info["name"])
        if request.content_type != "application/json":
            # A web page may make a browser post text/plain anywhere without asking (no
            # CORS preflight): insisting on JSON keeps other sites from steering an
            # endpoint that has no token.
            return web.json_response(
                {"error": 'send {"state": ...} as Content-Type: application/json'},
                status=415,
            )
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        wanted = body.get("state") if isinstance(body, dict) else None
        action = _ACTIONS.get(str(wanted).upper()) if wanted is not None else None
        if action is None:
            return web.json_response(
                {"error": 'send {"state": "STOPPED" | "STARTED" | "PAUSED" | "RESUMED"}'},
                status=400,
            )
        binding = self._app.bindings.get(name)
        if binding is None:
            return web.json_response(
                {"error": f"{name} is an output binding: only input bindings can be steered"},
                status=409,
            )
        log.info("management: %s binding %s", action, name)
        try:
            await getattr(binding, action)()
        except Exception as exc:
            # A start refused for good (a login refused, say): an answer, not a traceback.
            log.error("management: %s binding %s failed: %s", action, name, exc)
            return web.json_response(
                {"error": f"{name} could not {action}: {type(exc).__name__}: {exc}"},
                status=500,
            )
        if action == "start":
            self.watch(name, binding)
        return web.json_response(self.describe(name))

    def describe(self, name: str) -> dict[str, Any]:
        """One binding as ``/bindings`` shows it."""
        app = self._app
        plan = next(p for p in app.plan.all() if p.name == name)
        info: dict[str, Any] = {
            "bindingName": name,
            "name": plan.destination,
            "group": plan.group,
            "binder": plan.binder,
            "input": plan.direction == "in",
        }
        binding = app.bindings.get(name)
        table = app.state.by_binding.get(name)
        if table is not None:
            # A table's input: read into the table, not steered (GET /state shows it).
            info.update(
                {
                    "state": "TABLE",
                    "pausable": False,
                    "table": table.name,
                    "keys": len(table),
                    "received": table.updates,
                }
            )
        elif binding is not None:
            s = binding.stats
            info.update(
                {
                    "state": binding.state.value.upper(),
                    "pausable": True,
                    "consumers": [c.value for c in binding.consumers],
                    "received": s.received,
                    "processed": s.processed,
                    "deadLettered": s.failed,
                    "retried": int(getattr(binding.processor, "retries", 0)),
                    "sent": s.sent,
                    "inFlight": binding.in_flight,
                    "redeliveredBatches": s.redelivered,
                    "restarts": s.restarts,
                }
            )
            kind, figures = self.sampler.backlog.get(name, ("", {}))
            if figures and self.sampler.fresh:
                info["lag" if kind == "lag" else "queueDepth"] = figures
        else:
            output = next((o for o in app.outputs_by_name.values() if o.binding == name), None)
            info["state"] = "STARTED" if output is not None else "UNBOUND"
            info["pausable"] = False
            if output is not None:
                info["sent"] = output.sent
                info["lost"] = output.lost
        return info

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body, content_type = text(self.collector)
        return web.Response(body=body, headers={"Content-Type": content_type})


def _not_found(name: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"error": f"no binding named {json.dumps(name)}"}, status=404)
