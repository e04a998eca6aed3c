"""The market demo with a live dashboard: prices per symbol, charted as the ticks arrive,
and slump alerts as they happen, in a browser.

    binder run apps.market_dashboard --profile dashboard                   # memory
    binder run apps.market_dashboard --profile dashboard --profile kafka   # or rabbit

The demo's functions (the ticker, ``price_alerts``, ``notify``, ``audit``) are the ones in
``apps.market``, imported unchanged: this module only adds two subscribers, ``board`` on
the ticks and ``board_alerts`` on the alerts, and the ``dashboard`` profile
(``config/application-dashboard.yaml``) adds them to the definition and binds them. Both
subscriptions are anonymous, so every dashboard sees every tick and leaves no queue or
consumer group behind. The profile also turns the management endpoint on, whose
operations page shows the same app from the operator's side.

The page is served by aiohttp on the app's own event loop from the first message on, on
``market.dashboard.port`` (8082; 0 picks a free port, logged). It reads a server-sent
events feed of bounded memory: a slow browser gets fewer, larger updates and never slows
the subscribers (``binder_core.feed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from apps.market import Alert, Tick, audit, notify, price_alerts, ticker
from binder_core import app_settings
from binder_core.feed import Feed

__all__ = ["audit", "board", "board_alerts", "notify", "price_alerts", "ticker"]

log = logging.getLogger(__name__)

_PAGE = Path(__file__).with_suffix(".html")


class DashboardSettings(BaseModel):
    """``market.dashboard`` in the configuration."""

    host: str = "127.0.0.1"
    port: int = Field(8082, ge=0, le=65535)
    #: Prices kept (and charted) per symbol.
    points: int = Field(150, ge=10, le=100_000)
    #: Alerts kept for a page that opens later.
    alerts: int = Field(20, ge=1, le=10_000)


class Board:
    """What the page shows, in bounded memory: the last prices of each symbol, the last
    alerts, and a feed of both as they come for the pages that are open."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.prices: dict[str, deque[tuple[float, float]]] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=settings.alerts)
        self.feed: Feed[tuple[str, Any]] = Feed(1000)

    def tick(self, tick: Tick) -> None:
        series = self.prices.get(tick.symbol)
        if series is None:
            series = self.prices[tick.symbol] = deque(maxlen=self.settings.points)
        series.append((tick.time, tick.price))
        self.feed.append(("tick", [tick.symbol, tick.time, tick.price]))

    def alert(self, alert: Alert) -> None:
        shown = alert.model_dump()
        self.alerts.append(shown)
        self.feed.append(("alert", shown))

    def render(self, items: Sequence[tuple[str, Any]], reset: bool) -> dict[str, Any]:
        """One event for a page: everything after a reset, else what it has not seen."""
        if reset:
            return {
                "reset": True,
                "points": self.settings.points,
                "prices": {s: [list(p) for p in series] for s, series in self.prices.items()},
                "alerts": list(self.alerts),
            }
        return {
            "ticks": [value for kind, value in items if kind == "tick"],
            "alerts": [value for kind, value in items if kind == "alert"],
        }


_board = Board(app_settings("market.dashboard", DashboardSettings))
_page: asyncio.Task[Any] | None = None


def board(tick: Tick) -> None:
    """Put each tick on the board (its symbol's chart)."""
    _board.tick(tick)
    _serve_once()


def board_alerts(alert: Alert) -> None:
    """Put each slump alert on the board."""
    _board.alert(alert)
    _serve_once()


def _serve_once() -> None:
    global _page
    if _page is not None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # called outside a running app (a test calling the function): no page
    _page = loop.create_task(_serve(_board), name="market-dashboard")
    _page.add_done_callback(_served)


async def _serve(shown: Board) -> Any:
    """Serve the page and its feed; the server lives as long as the app's event loop."""
    from aiohttp import web

    settings = shown.settings
    html = _PAGE.read_bytes()

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=html, content_type="text/html", charset="utf-8")

    async def events(request: web.Request) -> web.StreamResponse:
        return await shown.feed.serve(request, shown.render)

    app = web.Application()
    app.add_routes([web.get("/", page), web.get("/events", events)])
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("market dashboard at http://%s:%s/", shown_host, port)
    return runner  # kept by the finished task, so the server is not collected


def _served(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "market dashboard: cannot serve on %s:%s: %s (set market.dashboard.port)",
            _board.settings.host,
            _board.settings.port,
            task.exception(),
        )
