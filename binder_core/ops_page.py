"""The operations page of the management endpoint: every binding of a running app, live.

``GET /ops/`` is a plain HTML page (``binder_core/static``: no build step, nothing from
elsewhere, so it works offline) that reads ``GET /ops/events``, a server-sent events feed:
per binding its destination, group, binder, state, DLQ count, lag or queue depth (from the
metrics sampler), and in/out rates with a sparkline of the last five minutes. Its buttons
post to ``/bindings/NAME`` like ``binder pause``.

Rates come from a ring of samples taken once a second from the counters the consumer loop
keeps anyway: nothing is counted per message for the page, and a slow or stalled browser
never holds up a binding (``feed.Feed``).

When the endpoint has a token, a plain link cannot carry an ``Authorization`` header, and
neither can ``EventSource``. The page asks for the token, keeps it in the tab's
``sessionStorage``, and sends it as a bearer header to ``POST /ops/session``, which answers
with an ``HttpOnly``, ``SameSite=Strict`` cookie holding an HMAC of the token under a key
made at start (never the token itself, and it dies with the process). The cookie is
accepted for reading (``GET``) only, compared in constant time; steering a binding still
needs the bearer header, which another site cannot make a browser send. The token never
appears in a URL, so no access log or proxy log holds it. The page itself and its script
and style carry no data and are served without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from binder_core.feed import Feed
from binder_core.metrics import Observed, Sampler
from binder_core.plan import AppPlan

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

#: Seconds between two samples of the counters, and how many samples the ring keeps.
INTERVAL = 1.0
HISTORY = 300

#: The files of the page: URL path under /ops/ -> (file in binder_core/static, type).
_FILES = {
    "": ("ops.html", "text/html; charset=utf-8"),
    "ops.js": ("ops.js", "text/javascript; charset=utf-8"),
    "ops.css": ("ops.css", "text/css; charset=utf-8"),
}

#: The page runs only its own script and style, talks only to this endpoint, and cannot
#: be framed by another site.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class Shown(Observed, Protocol):
    """What the page reads of an app."""

    plan: AppPlan


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of every binding: unix time, and binding -> (in, out) messages a second."""

    time: float
    rates: dict[str, tuple[float, float]]


class OpsPage:
    """The page, its feed and the once-a-second sampler of one app's endpoint."""

    def __init__(
        self,
        app: Shown,
        describe: Callable[[str], dict[str, Any]],
        sampler: Sampler,
        token: str | None,
    ) -> None:
        self._app = app
        self._describe = describe
        self._sampler = sampler
        self._token = token
        self._key = secrets.token_bytes(32)
        self.feed: Feed[Sample] = Feed(HISTORY)
        self._last: dict[str, tuple[float, int, int]] = {}  # binding -> (clock, in, out)
        self._task: asyncio.Task[None] | None = None
        self._files: dict[str, bytes] = {}
        #: Cookie names carry the port: browsers share cookies between the ports of a host.
        self.port: int | None = None

    def routes(self) -> list[Any]:
        from aiohttp import web

        return [
            web.get("/", self._home),
            web.get("/ops", self._home),
            *(web.get(f"/ops/{path}", self._file) for path in _FILES),
            web.post("/ops/session", self._session),
            web.get("/ops/events", self._events),
        ]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ops-page-sampler")

    async def stop(self) -> None:
        self.feed.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # -- access ------------------------------------------------------------------------------

    def public(self, request: web.Request) -> bool:
        """Whether ``request`` asks for the page's own files (no data: no token needed)."""
        path = request.path
        return request.method in ("GET", "HEAD") and (
            path in ("/", "/ops") or path.removeprefix("/ops/") in _FILES
        )

    @property
    def cookie_name(self) -> str:
        return f"binder-ops-{self.port or 0}"

    def _session_value(self) -> str:
        token = self._token or ""
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def admits(self, request: web.Request) -> bool:
        """Whether ``request`` reads (``GET``) with the cookie ``POST /ops/session`` set."""
        if request.method not in ("GET", "HEAD") or self._token is None:
            return False
        given = request.cookies.get(self.cookie_name, "")
        return hmac.compare_digest(given.encode(), self._session_value().encode())

    # -- requests ------------------------------------------------------------------------------

    async def _home(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        raise web.HTTPFound("/ops/")

    async def _file(self, request: web.Request) -> web.Response:
        from aiohttp import web

        name, content_type = _FILES[request.path.removeprefix("/ops/")]
        body = self._files.get(name)
        if body is None:
            body = self._files[name] = (
                resources.files("binder_core") / "static" / name
            ).read_bytes()
        return web.Response(body=body, headers={"Content-Type": content_type, **_HEADERS})

    async def _session(self, request: web.Request) -> web.Response:
        """Reached only with the bearer token (or when there is none): a cookie for the feed."""
        from aiohttp import web

        response = web.json_response({"token": self._token is not None})
        if self._token is not None:
            response.set_cookie(
                self.cookie_name,
                self._session_value(),
                path="/",
                httponly=True,
                samesite="Strict",
            )
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        return await self.feed.serve(request, self._render)

    def _render(self, samples: Sequence[Sample], reset: bool) -> dict[str, Any]:
        app = self._app
        health = self._sampler.health
        return {
            "reset": reset,
            "interval": INTERVAL,
            "history": HISTORY,
            "samples": [{"time": s.time, "rates": s.rates} for s in samples],
            "bindings": [self._describe(plan.name) for plan in app.plan.all()],
            "binders": {
                name: {
                    "status": "UP" if h.up else "DOWN",
                    "detail": h.detail,
                    "reconnects": h.reconnects,
                }
                for name, h in health.items()
            },
        }

    # -- sampling ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception as exc:  # a sample must never end the sampler
                log.debug("operations page sample failed: %s", exc)
            await asyncio.sleep(INTERVAL)

    def sample(self) -> None:
        """Read every binding's counters once and append their rates to the ring."""
        now = asyncio.get_running_loop().time()
        counts: dict[str, tuple[int, int]] = {
            name: (b.stats.received, b.stats.sent) for name, b in self._app.bindings.items()
        }
        for output in self._app.outputs_by_name.values():
            counts.setdefault(output.binding, (0, output.sent))
        rates: dict[str, tuple[float, float]] = {}
        for name, (n_in, n_out) in counts.items():
            before = self._last.get(name)
            self._last[name] = (now, n_in, n_out)
            if before is None or now <= before[0]:
                continue
            seconds = now - before[0]
            rates[name] = (
                round(max(0, n_in - before[1]) / seconds, 2),
                round(max(0, n_out - before[2]) / seconds, 2),
            )
        if rates:
            self.feed.append(Sample(time.time(), rates))
