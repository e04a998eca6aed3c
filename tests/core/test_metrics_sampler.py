"""The metrics sampler with a broker call slower than its interval (a Kafka lag query
waits behind the consumer's long poll, up to half a second): the figure is still taken
and shown, not cut off by the interval nor hidden as stale."""

from __future__ import annotations

import asyncio
import re

from binder_core.consumer import ConsumerBinding, HandleProcessor
from binder_core.metrics import AppCollector, Sampler, text
from tests.core.test_consumer_supervision import NAME, FakeApp, FakeSource, FakeSubscription
from tests.support import Collector, eventually


class SlowLagSource(FakeSource):
    """Reports its lag after a while, as a Kafka consumer does while it long-polls."""

    async def backlog(self) -> dict[str, int]:
        await asyncio.sleep(0.3)
        return {"words-0": 42}


class SlowLagSubscription(FakeSubscription):
    def source(self, index: int) -> FakeSource:
        made = SlowLagSource(self, index)
        self.made.append(made)
        return made


async def test_a_lag_slower_than_the_interval_is_still_shown() -> None:
    binding = ConsumerBinding(NAME, SlowLagSubscription(), HandleProcessor(Collector()))  # type: ignore[arg-type]
    await binding.start()
    app = FakeApp({NAME: binding})
    sampler = Sampler(app, interval=0.05)
    collector = AppCollector(app, sampler, {})
    sampler.start()
    try:

        def shown() -> bool:
            body = text(collector)[0].decode()
            return bool(
                re.search(
                    r'^binder_consumer_lag\{binding="words-in-0",partition="0",topic="words"\} '
                    r"42\.0$",
                    body,
                    re.MULTILINE,
                )
            )

        await eventually(shown, "the lag in the exposition", 10)
        assert sampler.took >= 0.3
        assert sampler.fresh
    finally:
        await sampler.stop()
        await binding.stop()
