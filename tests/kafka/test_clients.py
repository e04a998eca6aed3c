"""Client settings: Spring-style maps turned into aiokafka arguments (no broker needed)."""

from __future__ import annotations

import ssl

import pytest

from binder_core.errors import ConfigError
from binders.kafka.clients import ClientConfig
from binders.kafka.settings import KafkaEnvironment


def config(**settings: object) -> ClientConfig:
    return ClientConfig("kafka", KafkaEnvironment.model_validate(settings))


def test_sasl_ssl_settings_reach_every_client() -> None:
    clients = config(
        brokers="kafka-1:9093,kafka-2",
        configuration={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "app",
            "sasl_plain_password": "s3cret",
            "ssl_check_hostname": "false",
        },
    )
    for role in ("admin", "consumer", "producer"):
        kwargs = clients.kwargs(role)
        assert kwargs["bootstrap_servers"] == ["kafka-1:9093", "kafka-2:9092"]
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
        assert kwargs["sasl_plain_password"] == "s3cret"
        assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
        assert kwargs["ssl_context"].check_hostname is False


def test_role_specific_settings_are_filtered_and_typed() -> None:
    clients = config(
        configuration={"request.timeout.ms": "15000", "isolation.level": "read_committed"},
        **{"producer-properties": {"linger.ms": "5", "batch.size": "65536"}},
    )
    consumer = clients.kwargs("consumer", {"max_poll_records": 7})
    assert consumer["request_timeout_ms"] == 15000
    assert consumer["isolation_level"] == "read_committed"
    assert consumer["max_poll_records"] == 7
    producer = clients.kwargs("producer")
    assert "isolation_level" not in producer  # a consumer setting: not for producers
    assert (producer["linger_ms"], producer["max_batch_size"]) == (5, 65536)


def test_bad_settings_are_reported_together_with_where_they_are() -> None:
    with pytest.raises(ConfigError) as caught:
        config(
            configuration={"fetch_max_wait_ms": "soon", "bootstrap.servers": "x:1"},
            **{"consumer-properties": {"linger_ms": 5}},
        )
    text = caught.value.render()
    assert "3 problems" in text
    assert "configuration.fetch_max_wait_ms: expected a whole number, got 'soon'" in text
    assert "configuration.bootstrap.servers: not allowed here: set bootstrap-servers" in text
    assert "consumer-properties.linger_ms: unknown aiokafka client setting 'linger_ms'" in text


def test_required_acks_and_replication_are_checked() -> None:
    assert KafkaEnvironment.model_validate({"required-acks": -1}).required_acks == "all"
    with pytest.raises(ValueError, match="all, -1, 0 or 1"):
        KafkaEnvironment.model_validate({"required-acks": "most"})
    with pytest.raises(ValueError, match="at least 1, or -1"):
        KafkaEnvironment.model_validate({"replication-factor": 0})
