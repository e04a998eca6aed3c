"""The Kafka binder against the conformance suite, on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from binder_core.testing.conformance import BinderConformance, Subject

ROOT = Path(__file__).resolve().parents[2]


async def restart_kafka() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "brokers"), "restart", "kafka",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


@pytest.mark.kafka
class TestKafkaConformance(BinderConformance):
    @pytest.fixture
    def subject(self, kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Subject:
        # Kafka takes records up to about 1 MB unless told otherwise: the 1 MiB payload case
        # needs what a user would configure for large messages.
        topic = {"properties": {"max.message.bytes": str(4 * 2**20)}}
        return Subject(
            "kafka",
            {"bootstrap-servers": kafka_bootstrap},
            names=unique_name,
            producer_extension={"configuration": {"max_request_size": 4 * 2**20}, "topic": topic},
            consumer_extension={"topic": topic},
            restart_broker=restart_kafka,
        )
