"""A polled consumer on Kafka: the app pulls records when it wants; what it acknowledged is
committed, what it did not is delivered again after a restart."""

from __future__ import annotations

from typing import Any

import pytest

from binder_core import pollable
from tests.kafka.conftest import Kit, binder_tree, running_app

pytestmark = pytest.mark.kafka


async def test_polled_records_are_committed_only_once_decided(kit: Kit) -> None:
    topic, group = kit.name("polled"), kit.name("g")
    await kit.create(topic)
    stream: dict[str, Any] = {
        **binder_tree(kit.bootstrap),
        "pollable-source": "orders",
        "bindings": {
            "orders-in-0": {"destination": topic, "group": group, "content-type": "text/plain"}
        },
    }
    await kit.produce(topic, [b"a", b"b", b"c"])
    async with running_app({}, stream):
        source = pollable("orders-in-0")
        first = await source.receive(str, timeout=20)
        assert first is not None and first.value == "a"
        await first.ack()
        second = await source.receive(str, timeout=5)
        assert second is not None and second.value == "b"
        await second.ack()
        third = await source.receive(str, timeout=5)
        assert third is not None and third.value == "c"
        # c is left undecided: its batch is not committed, so all of it comes again.
    async with running_app({}, stream):
        source = pollable("orders-in-0")
        again = []
        while (got := await source.receive(str, timeout=10)) is not None:
            again.append(got.value)
            await got.ack()
            if got.value == "c":
                break
        assert again[-1] == "c" and set(again) <= {"a", "b", "c"}
    async with running_app({}, stream):
        assert await pollable("orders-in-0").receive(str, timeout=3) is None, "all committed"
