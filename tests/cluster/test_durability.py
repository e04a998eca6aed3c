"""A Kafka topic the binder writes to, on which an acknowledged record could still be lost
to one broker's failure (one replica, min.insync.replicas 1, acks below all), is named at
start-up with the settings that fix it; the cluster's defaults draw no warning, and neither
does a single development broker."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from binder_core.spi import ProducerSpec
from binder_core.testing.driver import BinderDriver
from binders.kafka.binder import KafkaBinder
from binders.kafka.settings import KafkaEnvironment, KafkaProducerProperties
from tests.cluster.conftest import KafkaCluster

WARNING = "can be lost when one broker fails"


async def bind_producers(
    bootstrap: str, topics: dict[str, dict[str, object]], **env: object
) -> None:
    """Provision a producer per topic (``topics`` maps it to the binding's Kafka
    producer properties), then close."""
    environment = KafkaEnvironment.model_validate({"bootstrap-servers": bootstrap, **env})
    driver = BinderDriver(KafkaBinder("kafka", environment))
    await driver.start()
    try:
        for topic, props in topics.items():
            extension = KafkaProducerProperties.model_validate(props)
            await driver.producer(ProducerSpec(f"{topic}-out-0", topic, extension=extension))
    finally:
        await driver.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


@pytest.mark.cluster
async def test_a_topic_that_could_lose_acknowledged_records_is_named_at_start_up(
    kafka_cluster: KafkaCluster, names: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    strong, weak, alone = names("strong"), names("weak"), names("alone")
    topics: dict[str, dict[str, object]] = {
        strong: {},  # the cluster's defaults: three replicas, min.insync.replicas 2
        weak: {"topic": {"properties": {"min.insync.replicas": "1"}}},
        alone: {"topic": {"replication-factor": 1}},
    }
    with caplog.at_level(logging.WARNING, logger="binders.kafka"):
        await bind_producers(kafka_cluster.bootstrap, topics)
    said = warnings(caplog)
    assert len(said) == 2, said
    (about_weak,) = [w for w in said if f"topic {weak}" in w]
    assert "min.insync.replicas is 1" in about_weak, about_weak
    assert "binding " + f"{weak}-out-0" in about_weak
    assert "replication-factor 3, min.insync.replicas 2" in about_weak
    (about_alone,) = [w for w in said if f"topic {alone}" in w]
    assert "it has 1 replica" in about_alone, about_alone
    assert not [w for w in said if f"topic {strong}" in w]


@pytest.mark.cluster
async def test_acks_below_all_on_a_cluster_is_named(
    kafka_cluster: KafkaCluster, names: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    topic = names("leader-only")
    with caplog.at_level(logging.WARNING, logger="binders.kafka"):
        await bind_producers(kafka_cluster.bootstrap, {topic: {}}, **{"required-acks": "1"})
    (said,) = warnings(caplog)
    assert "acks is 1, so the partition leader alone acknowledges" in said, said


@pytest.mark.kafka
async def test_a_single_development_broker_draws_no_warning(
    kafka_bootstrap: str, names: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="binders.kafka"):
        await bind_producers(kafka_bootstrap, {names("local"): {}})
    assert not warnings(caplog)
