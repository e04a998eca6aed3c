"""The Kafka binder against the conformance suite, on the real broker."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from binder_core.testing.conformance import BinderConformance, Subject
from tests.restart import restart_kafka


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
            # Whatever Kafka listens there, whoever started it (tests/restart.py).
            restart_broker=functools.partial(restart_kafka, kafka_bootstrap),
        )
