"""The rabbit binder's configuration: validation through the core, connection parameters
(addresses, URI, TLS) and secrets kept out of reprs and messages. No broker needed."""

from __future__ import annotations

import ssl

import pytest

from binder_core.config import load_config
from binder_core.errors import ConfigError
from binder_core.plugins import load_plugins
from binders.rabbit.parameters import describe, parameters
from binders.rabbit.settings import RabbitConsumerProperties, RabbitEnvironment


def config(*overrides: str) -> None:
    registry = load_plugins()
    load_config(None, [], list(overrides), registry.binder_types, environ={}, read_files=False)


def test_a_misspelt_property_is_reported_with_the_right_name() -> None:
    with pytest.raises(ConfigError) as info:
        config("stream.rabbit.bindings.in-0.consumer.prefech=10")
    assert "did you mean 'prefetch'" in str(info.value)


def test_spring_property_names_are_accepted() -> None:
    config(
        "stream.rabbit.bindings.in-0.consumer.auto-bind-dlq=true",
        "stream.rabbit.bindings.in-0.consumer.republish-to-dlq=false",
        "stream.rabbit.bindings.in-0.consumer.dlq-ttl=5000",
        "stream.rabbit.bindings.in-0.consumer.binding-routing-key=orders.*",
        "stream.rabbit.bindings.out-0.producer.routing-key-expression=headers['type']",
        "stream.rabbit.binder.addresses=h1:5672,h2:5673",
    )


def test_batch_size_cannot_exceed_prefetch() -> None:
    with pytest.raises(ValueError, match="batch-size cannot exceed prefetch"):
        RabbitConsumerProperties(prefetch=10, batch_size=20)


def test_addresses_become_one_parameter_set_each_in_order() -> None:
    env = RabbitEnvironment.model_validate(
        {"addresses": "a.example:5672, b.example:5673, c.example", "virtual-host": "prod"}
    )
    params = parameters(env, "rabbit", "consumer")
    assert [(p.host, p.port) for p in params] == [
        ("a.example", 5672), ("b.example", 5673), ("c.example", 5672)]  # fmt: skip
    assert {p.virtual_host for p in params} == {"prod"}
    assert params[0].client_properties["connection_name"] == "binder:rabbit:consumer"


def test_uri_wins_and_its_password_stays_secret() -> None:
    env = RabbitEnvironment.model_validate(
        {"uri": "amqp://app:pa55-w0rd@mq.example:5679/orders", "host": "ignored"}
    )
    (p,) = parameters(env, "rabbit", "publisher")
    assert (p.host, p.port, p.virtual_host) == ("mq.example", 5679, "orders")
    assert p.credentials.password == "pa55-w0rd"
    assert "pa55-w0rd" not in repr(env)
    assert "pa55-w0rd" not in describe(env)
    assert "pa55-w0rd" not in str(env.model_dump(mode="json"))


def test_password_is_not_in_the_settings_repr() -> None:
    env = RabbitEnvironment.model_validate({"password": "hunter2-xyz"})
    assert "hunter2-xyz" not in repr(env)
    assert "hunter2-xyz" not in describe(env)


def test_tls_builds_a_verifying_context_on_the_tls_port() -> None:
    env = RabbitEnvironment.model_validate({"host": "mq.example", "ssl": {"enabled": True}})
    (p,) = parameters(env, "rabbit", "consumer")
    assert p.port == 5671
    assert p.ssl_options is not None
    assert p.ssl_options.server_hostname == "mq.example"
    context = p.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_tls_without_verification_is_explicit() -> None:
    env = RabbitEnvironment.model_validate(
        {"ssl": {"enabled": True, "validate-server-certificate": False}}
    )
    (p,) = parameters(env, "rabbit", "consumer")
    assert p.ssl_options is not None
    assert p.ssl_options.context.verify_mode == ssl.CERT_NONE
