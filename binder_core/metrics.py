"""Prometheus metrics of a running app.

Nothing is counted per message for them: the consumer loop already keeps per-batch counters
(``consumer.Stats``), outputs count what they send, and this module only reads those when
Prometheus scrapes. Broker-side figures (Kafka consumer lag, RabbitMQ queue depth, binder
health) are sampled in the background every ``sample-interval`` seconds, so a scrape never
waits on a broker and a busy scraper cannot load one.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from binder_core.consumer import ConsumerBinding
from binder_core.output import Output
from binder_core.spi import Binder, BindingState, Health

log = logging.getLogger(__name__)

#: Upper bounds of the batch duration histogram, seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: A broker-side figure is left out when its sample is older than this many intervals.
_STALE_AFTER = 3

#: Seconds each broker call of a sample may take, however short the interval: a Kafka lag
#: query waits behind the consumer's long poll (up to half a second).
_LEAST_WAIT = 2.0


class Observed(Protocol):
    """What the metrics read of an app."""

    binders: dict[str, Binder]
    bindings: dict[str, ConsumerBinding]
    outputs_by_name: dict[str, Output]

    def binder_of(self, binding: str) -> str:
        """The binder name of a binding."""


class BatchTimes:
    """A histogram of batch durations, kept as bucket counts (no prometheus objects on the
    loop's path: ``observe`` is a bisect and three additions, once per batch)."""

    __slots__ = ("count", "counts", "messages", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0
        self.messages = 0

    def observe(self, seconds: float, size: int) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1
        self.messages += size

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class Sampler:
    """Broker-side figures, refreshed in the background."""

    def __init__(self, app: Observed, interval: float) -> None:
        self._app = app
        self.interval = interval
        #: binding -> (kind, {label: count}); kind is "lag" (per partition, from the
        #: consumers) or "depth" (per queue, from the subscription).
        self.backlog: dict[str, tuple[str, dict[str, int]]] = {}
        self.health: dict[str, Health] = {}
        self.taken = 0.0
        #: Seconds the last sample took.
        self.took = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    @property
    def fresh(self) -> bool:
        """Whether the last sample is recent enough to show (samples come every interval
        plus the time one takes)."""
        age = asyncio.get_running_loop().time() - self.taken
        return age < (self.interval + self.took) * _STALE_AFTER

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception as exc:  # a sample must never end the sampler
                log.debug("metrics sample failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def sample(self) -> None:
        """Take every figure once (each call bounded by the interval, or ``_LEAST_WAIT``
        seconds when the interval is shorter).

        Bounded with ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for``
        can swallow the cancellation that ``stop`` sends when the awaited call finishes at
        the same moment, and the sampler would then sleep on past its stop."""
        app = self._app
        timeout = max(self.interval, _LEAST_WAIT)
        started = asyncio.get_running_loop().time()
        for name, binder in list(app.binders.items()):
            try:
                async with asyncio.timeout(timeout):
                    self.health[name] = await binder.health()
            except Exception as exc:
                self.health[name] = Health(False, f"health check failed: {type(exc).__name__}")
        for name, binding in list(app.bindings.items()):
            if binding.state is BindingState.STOPPED:
                self.backlog.pop(name, None)
                continue
            self.backlog[name] = await _backlog(binding, timeout)
        self.taken = asyncio.get_running_loop().time()
        self.took = self.taken - started


async def _backlog(binding: ConsumerBinding, timeout: float) -> tuple[str, dict[str, int]]:
    figures: dict[str, int] = {}
    whole = getattr(binding.subscription, "backlog", None)
    if whole is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                figures.update(await whole())
        return "depth", figures
    for source in binding.sources:
        part = getattr(source, "backlog", None)
        if part is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    figures.update(await part())
    return "lag", figures


class AppCollector:
    """A prometheus-client collector over one app (registered in a registry of its own, so
    two apps in one process never mix their figures)."""

    def __init__(self, app: Observed, sampler: Sampler, times: Mapping[str, BatchTimes]) -> None:
        self._app = app
        self._sampler = sampler
        self._times = times

    def describe(self) -> list[Any]:
        return []  # collected afresh at each scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        app = self._app

        def counter(name: str, text: str, labels: list[str]) -> Any:
            return CounterMetricFamily(name, text, labels=labels)

        received = counter("binder_messages_received", "Messages consumed.", ["binding"])
        processed = counter(
            "binder_messages_processed", "Messages processed and acknowledged.", ["binding"]
        )
        failed = counter(
            "binder_messages_failed", "Failed attempts (retried or given up).", ["binding"]
        )
        retried = counter("binder_messages_retried", "Attempts made again.", ["binding"])
        dead = counter(
            "binder_messages_dead_lettered",
            "Messages whose retries ran out: dead-lettered, or dropped where the binding has "
            "no dead-letter destination.",
            ["binding"],
        )
        redelivered = counter(
            "binder_batches_redelivered",
            "Batches given back to the broker to be delivered again.",
            ["binding"],
        )
        restarts = counter(
            "binder_consumer_restarts", "Consumers opened again after a failure.", ["binding"]
        )
        sent = counter("binder_messages_sent", "Messages the broker confirmed.", ["binding"])
        lost = counter(
            "binder_messages_lost",
            "Messages a supplier or StreamBridge could not deliver after its retries.",
            ["binding"],
        )
        in_flight = GaugeMetricFamily(
            "binder_messages_in_flight",
            "Messages fetched and not yet acknowledged.",
            labels=["binding"],
        )
        state = GaugeMetricFamily(
            "binder_binding_state",
            "1 for the binding's current state.",
            labels=["binding", "state"],
        )
        ready = GaugeMetricFamily(
            "binder_binding_ready", "1 when every consumer of the binding runs.", labels=["binding"]
        )
        duration = HistogramMetricFamily(
            "binder_batch_duration_seconds",
            "Time from fetching a batch to acknowledging it.",
            labels=["binding"],
        )
        for name, binding in app.bindings.items():
            stats = binding.stats
            retries = int(getattr(binding.processor, "retries", 0))
            received.add_metric([name], stats.received)
            processed.add_metric([name], stats.processed)
            retried.add_metric([name], retries)
            dead.add_metric([name], stats.failed)
            failed.add_metric([name], stats.failed + retries)
            redelivered.add_metric([name], stats.redelivered)
            restarts.add_metric([name], stats.restarts)
            in_flight.add_metric([name], binding.in_flight)
            for s in BindingState:
                state.add_metric([name, s.value], 1.0 if binding.state is s else 0.0)
            ready.add_metric([name], 1.0 if binding.ready else 0.0)
            times = self._times.get(name)
            if times is not None:
                duration.add_metric([name], times.buckets(), times.total)
        for output in app.outputs_by_name.values():
            sent.add_metric([output.binding], output.sent)
            lost.add_metric([output.binding], output.lost)
        yield from (received, processed, failed, retried, dead, redelivered, restarts, sent)
        yield from (lost, in_flight, state, ready, duration)
        yield from self._sampled()

    def _sampled(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sampler = self._sampler
        up = GaugeMetricFamily("binder_binder_up", "1 when the broker answers.", labels=["binder"])
        reconnects = CounterMetricFamily(
            "binder_binder_reconnects", "Connections re-established.", labels=["binder"]
        )
        for name, health in sampler.health.items():
            up.add_metric([name], 1.0 if health.up else 0.0)
            reconnects.add_metric([name], health.reconnects)
        lag = GaugeMetricFamily(
            "binder_consumer_lag",
            "Kafka: records behind the end of each assigned partition (sampled).",
            labels=["binding", "topic", "partition"],
        )
        depth = GaugeMetricFamily(
            "binder_queue_depth",
            "Messages waiting in the binding's queue (sampled).",
            labels=["binding", "queue"],
        )
        if sampler.fresh:
            for binding, (kind, figures) in sampler.backlog.items():
                for label, count in figures.items():
                    if kind == "lag":
                        # A partition is named ``<topic>-<n>``; a topic name may hold dashes.
                        topic, _, partition = label.rpartition("-")
                        lag.add_metric([binding, topic, partition], count)
                    else:
                        depth.add_metric([binding, label], count)
        yield from (up, reconnects, lag, depth)


def text(collector: AppCollector) -> tuple[bytes, str]:
    """The Prometheus exposition of one collector, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
