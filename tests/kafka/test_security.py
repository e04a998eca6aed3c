"""Kafka connection security resolved from the settings (no broker needed): Spring's names,
JAAS lines read as data, password files, and every contradiction reported with its key."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from binder_core.errors import ConfigError
from binders.kafka.clients import ClientConfig
from binders.kafka.settings import KafkaEnvironment

SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


def config(**settings: Any) -> ClientConfig:
    return ClientConfig("k", KafkaEnvironment.model_validate(settings))


def problems(**settings: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        config(**settings)
    return caught.value.render()


def test_plaintext_by_default_without_tls_or_login() -> None:
    kwargs = config().kwargs("consumer")
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert "ssl_context" not in kwargs
    assert "sasl_plain_password" not in kwargs


def test_typed_settings_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\r\n")
    clients = config(
        **{
            "security-protocol": "sasl_ssl",
            "ssl": {"check-hostname": False},
            "sasl": {"mechanism": "scram-sha-256", "username": "app", "password-file": str(secret)},
        }
    )
    for role in ("admin", "consumer", "producer"):
        kwargs = clients.kwargs(role)
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
        assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("app", "s3cret")
        assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
        assert kwargs["ssl_context"].check_hostname is False
    assert clients.kwargs("admin")["ssl_context"] is clients.kwargs("producer")["ssl_context"]


@pytest.mark.parametrize(
    ("line", "user", "password"),
    [
        (f'{SCRAM} required username="app" password="p@ss w;rd";', "app", "p@ss w;rd"),
        (f'{SCRAM} required\n  username="app"\n  password="say \\"hi\\"";', "app", 'say "hi"'),
        (f"{SCRAM} required username=app password=plain;", "app", "plain"),
    ],
)
def test_spring_jaas_line_is_read_as_data(line: str, user: str, password: str) -> None:
    kwargs = config(
        configuration={
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": line,
        }
    ).kwargs("producer")
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (user, password)


def test_spring_jaas_property_plain_login_module_implies_plain() -> None:
    kwargs = config(
        **{
            "security-protocol": "SASL_PLAINTEXT",
            "jaas": {"login-module": PLAIN, "options": {"username": "u", "password": "p"}},
        }
    ).kwargs("consumer")
    assert kwargs["sasl_mechanism"] == "PLAIN"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("u", "p")


def test_contradictions_and_gaps_are_named_by_key(tmp_path: Path) -> None:
    text = problems(
        **{
            "security-protocol": "SASL_SSL",
            "sasl": {"username": "a", "password-file": str(tmp_path / "missing")},
            "configuration": {"sasl_plain_username": "b", "ssl.truststore.type": "JKS"},
        }
    )
    assert (
        "sasl.username: set differently in configuration.sasl_plain_username and sasl.username"
        in text
    )
    assert "sasl.password-file: cannot read" in text and "No such file" in text
    assert "sasl.mechanism: needed with SASL_SSL" in text
    assert "configuration.ssl.truststore.type: only PEM files" in text
    assert "sasl.password: needed" not in text  # the unreadable file is the problem reported


KRB5 = "com.sun.security.auth.module.Krb5LoginModule"
BAD = [
    ({"ssl": {"ca-file": "/x.pem"}}, "ssl.ca-file: TLS files are set but security-protocol is"),
    ({"sasl": {"username": "u"}}, "sasl.username: a SASL login is set but security-protocol"),
    (
        {"security-protocol": "SSL", "ssl": {"ca-file": "/nope.pem"}},
        "ssl.ca-file: cannot load the CA certificates from '/nope.pem'",
    ),
    (
        {"consumer-properties": {"security.protocol": "SSL"}},
        "consumer-properties.security.protocol: not allowed here",
    ),
    (
        {"security-protocol": "SASL_SSL", "jaas": {"login-module": KRB5}},
        f"jaas.login-module: login module '{KRB5}' is not supported",
    ),
    (
        {
            "security-protocol": "SASL_SSL",
            "configuration": {"sasl.mechanism": "PLAIN", "sasl.jaas.config": "nonsense"},
        },
        "configuration.sasl.jaas.config: expected",
    ),
]


@pytest.mark.parametrize(("settings", "expected"), BAD)
def test_settings_that_cannot_work_stop_before_connecting(
    settings: dict[str, Any], expected: str
) -> None:
    assert expected in problems(**settings)
