"""The market pipeline: a ticker publishes price ticks, ``price_alerts`` watches each
symbol for a slump (its references in a store, per-symbol thresholds from a table),
``notify`` prints the alerts, and ``audit`` (a second consumer group on the same ticks)
keeps a tally, added without touching the publisher.

Run it with ``binder run apps.market`` (memory binder) or ``--profile kafka`` / ``rabbit``.
"""

from __future__ import annotations

import random
import time

from pydantic import BaseModel, Field

from binder_core import GlobalTable, Store, app_settings


class Tick(BaseModel):
    """One price observation."""

    symbol: str
    price: float
    time: float = Field(description="Unix time of the observation, seconds")


class Alert(BaseModel):
    """A price that slumped against its reference."""

    symbol: str
    reference: float
    price: float
    drop_percent: float
    time: float


class TickerSettings(BaseModel):
    """``market.ticker`` in the configuration."""

    symbols: dict[str, float] = {"ACME": 100.0, "GLOBEX": 250.0, "INITECH": 40.0}
    volatility_percent: float = 1.5
    seed: int | None = None
    #: Every this many ticks, the tick's symbol falls by ``slump_drop_percent`` instead of
    #: walking (0: never): a slump on demand, for demos and tests of the alert path.
    slump_every: int = Field(0, ge=0)
    slump_drop_percent: float = Field(10.0, gt=0, lt=100)


class AlertSettings(BaseModel):
    """``market.alerts`` in the configuration."""

    slump_percent: float = 5.0


_ticker = app_settings("market.ticker", TickerSettings)
_alerts = app_settings("market.alerts", AlertSettings)
_random = random.Random(_ticker.seed)
_prices = dict(_ticker.symbols)
_order = list(_prices)
_next = 0


def ticker() -> Tick:
    """A polled supplier: one tick per poll, symbols in turn, prices on a random walk."""
    global _next
    symbol = _order[_next % len(_order)]
    _next += 1
    step = _random.gauss(0.0, _ticker.volatility_percent / 100.0)
    if _ticker.slump_every and _next % _ticker.slump_every == 0:
        step = -_ticker.slump_drop_percent / 100.0
    _prices[symbol] = round(max(0.01, _prices[symbol] * (1.0 + step)), 2)
    return Tick(symbol=symbol, price=_prices[symbol], time=time.time())


class Reference(BaseModel):
    """A symbol's reference price: the highest since its last alert."""

    price: float


class Threshold(BaseModel):
    """A symbol's own slump threshold: a record keyed by the symbol on ``slump-thresholds``
    (``binder send slump-thresholds --key ACME '{"slump_percent": 2}'``)."""

    slump_percent: float = Field(gt=0, lt=100)


def price_alerts(
    tick: Tick, references: Store[Reference], thresholds: GlobalTable[Threshold]
) -> Alert | None:
    """Emit an alert when a price slumps more than its symbol's threshold (or
    ``market.alerts.slump-percent``) below its reference, the highest price since the last
    alert; returning None sends nothing. The references are kept in a store: on Kafka they
    survive a restart and follow a partition to another instance."""
    reference = references.get(tick.symbol)
    if reference is None or tick.price > reference.price:
        references[tick.symbol] = Reference(price=tick.price)
        return None
    own = thresholds.get(tick.symbol)
    slump = own.slump_percent if own is not None else _alerts.slump_percent
    drop = (reference.price - tick.price) / reference.price * 100.0
    if drop <= slump:
        return None
    references[tick.symbol] = Reference(price=tick.price)
    return Alert(
        symbol=tick.symbol,
        reference=reference.price,
        price=tick.price,
        drop_percent=round(drop, 2),
        time=tick.time,
    )


def notify(alert: Alert) -> None:
    """The notifier: print each alert."""
    print(
        f"ALERT {alert.symbol}: {alert.price:.2f} is {alert.drop_percent:.2f}% below "
        f"{alert.reference:.2f}",
        flush=True,
    )


_tally: dict[str, int] = {}


def audit(tick: Tick) -> None:
    """The audit log, a second group on the ticks: a tally printed every 25 ticks."""
    _tally[tick.symbol] = _tally.get(tick.symbol, 0) + 1
    total = sum(_tally.values())
    if total % 25 == 0:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(_tally.items()))
        print(f"audit: {total} ticks recorded ({counts})", flush=True)
