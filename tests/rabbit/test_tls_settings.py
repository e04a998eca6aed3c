"""RabbitMQ TLS and password settings turned into pika parameters (no broker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from binder_core.errors import ConfigError
from binders.rabbit.parameters import describe, parameters
from binders.rabbit.settings import RabbitEnvironment


def env(**settings: Any) -> RabbitEnvironment:
    return RabbitEnvironment.model_validate(settings)


def test_an_amqps_uri_uses_the_ssl_settings_and_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    settings = env(
        uri="amqps://orders@mq.example/prod",
        **{"password-file": str(secret), "ssl": {"verify-hostname": False}},
    )
    assert settings.tls
    (p,) = parameters(settings, "rabbit", "consumer")
    assert (p.host, p.port, p.virtual_host) == ("mq.example", 5671, "prod")
    assert (p.credentials.username, p.credentials.password) == ("orders", "from-file")
    assert p.ssl_options is not None
    assert p.ssl_options.server_hostname == "mq.example"
    assert p.ssl_options.context.check_hostname is False  # our context, not pika's default


def test_amqps_addresses_each_checked_against_their_own_host() -> None:
    settings = env(addresses="amqps://mq-1:5671,amqps://user:pw@mq-2")
    hosts = [
        (p.host, p.port, p.ssl_options.server_hostname) for p in parameters(settings, "r", "c")
    ]
    assert hosts == [("mq-1", 5671, "mq-1"), ("mq-2", 5671, "mq-2")]
    assert "pw" not in describe(settings)
    assert describe(settings) == "mq-1:5671,mq-2:5671 as guest over TLS"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"uri": "amqp://h", "ssl": {"enabled": True}}, "ssl.enabled is true but the address"),
        ({"addresses": "amqps://a,amqp://b"}, "addresses mix amqp:// and amqps://"),
        ({"password": "x", "password-file": "/f"}, "give password or password-file, not both"),
        ({"uri": "amqps://u:p@h", "password-file": "/f"}, "the uri holds a password"),
        ({"uri": "amqps://u@h"}, "the uri names a user without a password"),
        ({"uri": "http://h"}, "unknown scheme http"),
    ],
)
def test_contradictions_are_configuration_errors(settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        env(**settings)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"password-file": "/nope"}, "password-file: cannot read '/nope'"),
        ({"ssl": {"enabled": True, "ca-file": "/nope.pem"}}, "ssl.ca-file: cannot load"),
        ({"ssl": {"enabled": True, "key-file": "/k.pem"}}, "ssl.key-file: needs ssl.cert-file"),
        (
            {"ssl": {"enabled": True, "cert-file": "/nope.pem"}},
            "ssl.cert-file: cannot load the client certificate '/nope.pem'",
        ),
    ],
)
def test_unreadable_files_name_their_key(settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        parameters(env(**settings), "rabbit", "consumer")
    assert "rabbit binder 'rabbit'" in caught.value.render()
