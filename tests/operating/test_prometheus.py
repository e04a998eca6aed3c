"""A real Prometheus scrapes a real app on Kafka (``binder run`` in a subprocess): PromQL
through its HTTP API gives the app's receive rate and its consumer lag while a producer
outpaces it; pausing the binding through the endpoint (``binder pause --url``) takes the
rate to zero while the lag keeps growing, and resuming brings the rate back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.brokers import Prometheus
from tests.kafka.conftest import Kit, binder_tree
from tests.operating.conftest import binder, management_url, write_config
from tests.support import Apps, eventually

pytestmark = pytest.mark.kafka

#: Messages a second the producer sends: more than the slow app reads (about 200).
FEED_RATE = 400


@contextlib.asynccontextmanager
async def feeding(kit: Kit, topic: str) -> AsyncIterator[None]:
    """Send ``FEED_RATE`` messages a second to ``topic`` until the block ends."""
    producer = await kit.producer()
    stop = asyncio.Event()

    async def feed() -> None:
        n = 0
        while not stop.is_set():
            futures = [await producer.send(topic, f"w{n + i}".encode()) for i in range(40)]
            n += 40
            await asyncio.gather(*futures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 40 / FEED_RATE)

    task = asyncio.create_task(feed())
    try:
        yield
    finally:
        stop.set()
        await task


async def test_prometheus_sees_rate_and_lag_and_a_paused_binding(
    kit: Kit, prometheus: Prometheus, apps: Apps, tmp_path: Path
) -> None:
    topic, group = kit.name("words"), kit.name("readers")
    await kit.create(topic)
    stream = binder_tree(kit.bootstrap)
    stream.update(
        {
            "function": {"definition": "slow"},
            "bindings": {
                "slow-in-0": {"destination": topic, "group": group, "content-type": "text/plain"}
            },
            # Small batches: the received counter moves every ~0.1 s, not every 2.5 s.
            "kafka": {"bindings": {"slow-in-0": {"consumer": {"max-poll-records": 20}}}},
            "management": {"sample-interval": 1},
        }
    )
    config = write_config(tmp_path / "config", {"stream": stream})
    app = apps("run", "tests.operating.slow_app", "--config", str(config), "--management-port", "0")
    url = await management_url(app)
    job = topic  # unique per test run: the series of this app only
    selector = f'run="{job}",binding="slow-in-0"'
    rate = f"sum(rate(binder_messages_received_total{{{selector}}}[5s]))"
    lag = f"sum(binder_consumer_lag{{{selector}}})"

    async def value(promql: str) -> float | None:
        result = await asyncio.to_thread(prometheus.query, promql)
        return result[0][1] if result else None

    async def above_zero(promql: str) -> bool:
        got = await value(promql)
        return got is not None and got > 0

    async def zero(promql: str) -> bool:
        return await value(promql) == 0

    with prometheus.scrape(job, url.removeprefix("http://")):
        async with feeding(kit, topic):
            await eventually(lambda: above_zero(rate), f"a receive rate in Prometheus ({rate})", 60)
            # The app reads at most what is fed (and about 200 a second, being slow).
            assert 0 < (await value(rate) or 0) <= FEED_RATE * 1.5
            await eventually(lambda: above_zero(lag), f"a consumer lag in Prometheus ({lag})", 60)

            paused = await binder("pause", "slow-in-0", "--url", url)
            assert paused.returncode == 0, paused.stderr
            assert paused.stdout.strip() == "slow-in-0: PAUSED"
            await eventually(lambda: zero(rate), "the rate of a paused binding to drop to 0", 60)
            # Paused, the binding still reports its lag, which grows as the producer goes on.
            before = await value(lag)
            assert before is not None

            async def grown() -> bool:
                now = await value(lag)
                return now is not None and now > before + FEED_RATE

            await eventually(grown, "the lag of the paused binding to grow", 60)

            resumed = await binder("resume", "slow-in-0", "--url", url)
            assert resumed.returncode == 0, resumed.stderr
            await eventually(lambda: above_zero(rate), "the rate again after resume", 60)
    assert await app.stop() == 0
