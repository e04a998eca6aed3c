"""What every binder's benchmark shares: building the real app, timing, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bench.app
from binder_core import app_config
from binder_core.config import load_config
from binder_core.plugins import Registry, load_plugins
from binder_core.runtime import App

#: No single run may take longer than this; a stuck run is a failure, not a hang.
RUN_TIMEOUT = 120.0

_registry: Registry | None = None


def registry() -> Registry:
    """The plugin registry, loaded once (as ``binder run`` does, once per process)."""
    global _registry
    if _registry is None:
        _registry = load_plugins()
    return _registry


@dataclass
class Metrics:
    """Whether the framework runs with its management endpoint on (``--metrics``): metrics
    counted, broker-side figures sampled every ``every`` seconds, and ``/metrics`` scraped
    as often by a background task, as Prometheus would. ``scrapes`` keeps how long each
    scrape took to answer, seconds."""

    #: Asked for on the command line; ``on`` is set for the runs that have it.
    wanted: bool = False
    on: bool = False
    every: float = 1.0
    scrapes: list[float] = field(default_factory=list)


METRICS = Metrics()


def warm_metrics() -> None:
    """Import what the endpoint and its scrapes use before anything is measured: a process
    pays that once, at start-up, not per message."""
    import aiohttp.web  # noqa: F401
    import prometheus_client.core  # noqa: F401

    import binder_core.management  # noqa: F401


def make_app(stream: Mapping[str, Any]) -> App:
    """An App over ``bench.app`` with ``stream`` as its configuration, exactly what
    ``binder run bench.app`` builds from a YAML file holding ``{"stream": stream}``."""
    reg = registry()
    tree = dict(stream)
    if METRICS.on:
        tree["management"] = {"port": 0, "sample-interval": METRICS.every}
    config = load_config(
        None,
        [],
        [],
        reg.binder_types,
        environ={},
        properties={"stream": tree},
        read_files=False,
    )
    app_config.use(config.layered)
    return App(bench.app, config, reg)


@contextlib.asynccontextmanager
async def running(app: App, start: bool = True) -> AsyncIterator[App]:
    """Start ``app`` (unless ``start`` is false: the caller starts it) and always stop it.
    With its management endpoint on, ``/metrics`` is scraped from the start, every
    ``METRICS.every`` seconds."""
    scraper: asyncio.Task[None] | None = None
    try:
        if start:
            await app.start()
        if app.management is not None:
            scraper = asyncio.get_running_loop().create_task(_scrape(app.management.url))
        yield app
    finally:
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        await app.stop()
        app_config.use(None)


async def _scrape(url: str) -> None:
    """Scrape ``url``/metrics every ``METRICS.every`` seconds, as Prometheus would (so a run
    shorter than that sees no scrape: the scrape's own cost is reported apart)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while True:
            await asyncio.sleep(METRICS.every)
            started = time.perf_counter()
            async with session.get(f"{url}/metrics") as response:
                body = await response.read()
            took = time.perf_counter() - started
            if response.status != 200 or b"binder_messages_received_total" not in body:
                raise AssertionError(f"a scrape of {url}/metrics answered {response.status}")
            METRICS.scrapes.append(took)


@dataclass
class Measure:
    """One measured run: messages moved in some seconds (wall clock), the CPU seconds this
    process spent meanwhile, maybe latencies (seconds)."""

    seconds: float
    messages: int
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0

    @property
    def cpu_us(self) -> float:
        """CPU microseconds this process spent per message."""
        return self.cpu / self.messages * 1e6 if self.messages else 0.0

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    timeout: float = RUN_TIMEOUT,
    every: float = 0.005,
) -> None:
    """Wait for ``condition`` (polled) up to ``timeout`` seconds, or fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)


async def done(event: asyncio.Event, what: str, timeout: float = RUN_TIMEOUT) -> None:
    """Wait for ``event`` or fail saying ``what``."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}") from None


class Stopwatch:
    """Wall clock and process CPU time, together."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def measure(self, messages: int) -> Measure:
        """What was spent since the stopwatch started, for ``messages`` messages."""
        return Measure(
            time.perf_counter() - self.wall, messages, cpu=time.process_time() - self.cpu
        )


def probed(probe: bench.app.Probe) -> Measure:
    """From the first to the last message the probe counted."""
    return Measure(probe.last - probe.first, probe.target, cpu=probe.last_cpu - probe.first_cpu)


def sourced(probe: bench.app.Probe) -> Measure:
    """From the start of the source (``bench.app.SOURCE``) to the last message counted."""
    source = bench.app.SOURCE
    return Measure(
        probe.last - source.started, probe.target, cpu=probe.last_cpu - source.started_cpu
    )


def since_source(messages: int) -> Measure:
    """From the start of the source to now."""
    source = bench.app.SOURCE
    return Measure(
        time.perf_counter() - source.started,
        messages,
        cpu=time.process_time() - source.started_cpu,
    )


def latency_measure(probe: bench.app.Probe) -> Measure:
    """Latencies of a fixed-rate run, without the first 5% (connections warming up)."""
    skip = len(probe.latencies) // 20
    return Measure(probe.last - probe.first, probe.count, probe.latencies[skip:])


class Unavailable(Exception):
    """A broker this binder needs does not answer: its cases are skipped."""
