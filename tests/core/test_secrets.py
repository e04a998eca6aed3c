"""One masking rule for secrets: configuration dumps, validation errors, log records."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from binder_core.config import load_config
from binder_core.errors import ConfigError
from binder_core.plugins import load_plugins
from binder_core.secrets import MASK, SecretFilter, install_log_filter, is_secret, mask, mask_text

TYPES = load_plugins().binder_types


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://user:hunter2@127.0.0.1:5672/vh", "amqp://user:******@127.0.0.1:5672/vh"),
        ("AMQPS://User:hunter2@host", "AMQPS://User:******@host"),
        ("redis://:hunter2@host:6379/0", "redis://:******@host:6379/0"),
        ("kafka+ssl://u:hunter2@b:9093", "kafka+ssl://u:******@b:9093"),
        ("https://hunter2@example.org/x", "https://******@example.org/x"),
        ("amqp://u:p@ss:hunter2@h/v", "amqp://u:******@h/v"),  # an unescaped @ in the password
        ("(got 'amqp://u:hunter2@h')", "(got 'amqp://u:******@h')"),
        ('LoginModule required username="a" password="hunter2";', "password=******;"),
        ("GET /?token=hunter2&x=1", "token=******&x=1"),
    ],
)
def test_mask_text_masks_user_info_and_password_pairs(text: str, shown: str) -> None:
    masked = mask_text(text)
    assert "hunter2" not in masked
    assert shown in masked


def test_mask_text_leaves_ordinary_text_alone() -> None:
    for text in ("mail me at a@b.example", "127.0.0.1:9092", "key: password: unknown key"):
        assert mask_text(text) == text


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "ssl-key-password",
        "ssl_key_password",
        "sslKeyPassword",
        "client-secret",
        "auth-token",
        "sasl.jaas.config",
        "sasl_plain_password",
        "jaas",
        "credentials",
    ],
)
def test_secret_keys_any_case_and_spelling(key: str) -> None:
    assert is_secret(key)


@pytest.mark.parametrize(
    "key", ["password-file", "ssl-keyfile", "host", "sasl-mechanism", "security.protocol"]
)
def test_keys_that_are_not_secrets(key: str) -> None:
    assert not is_secret(key)


def test_mask_covers_nested_keys_below_a_secret_and_keeps_paths() -> None:
    tree = {
        "configuration": {"sasl.jaas.config": "x hunter2", "security.protocol": "SASL_SSL"},
        "sasl": {"jaas": {"config": "hunter2"}},
        "password-file": "/run/secrets/pw",
        "urls": ["redis://:hunter2@h"],
    }
    tree["kafka"] = {
        "sasl": {"mechanism": "SCRAM-SHA-512", "password": "hunter2", "password-file": "/pw"}
    }
    masked = mask(tree)
    assert "hunter2" not in repr(masked)
    assert masked["kafka"]["sasl"]["password-file"] == "/pw"
    assert masked["kafka"]["sasl"]["mechanism"] == "SCRAM-SHA-512"
    assert masked["configuration"]["security.protocol"] == "SASL_SSL"
    assert masked["sasl"]["jaas"]["config"] == MASK
    assert masked["password-file"] == "/run/secrets/pw"


def test_validation_error_on_a_value_holding_a_password(tmp_path: Path) -> None:
    (tmp_path / "application.yaml").write_text(
        "stream:\n  binders:\n    r:\n      type: rabbit\n      environment:\n"
        "        port: amqp://alice:hunter2@127.0.0.1\n"
        "        heartbeat: redis://:hunter2@h\n"
        "  bindings:\n    f-in-0:\n      destination: {url: AMQPS://bob:hunter2@h}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, (), (), TYPES, environ={})
    text = exc.value.render()
    assert "hunter2" not in text
    assert "hunter2" not in str(exc.value)
    assert "(got 'amqp://alice:******@127.0.0.1')" in text
    assert "stream.bindings.f-in-0.destination" in text and "AMQPS://bob:******@h" in text


def test_a_secret_in_a_kafka_configuration_map_is_not_echoed(tmp_path: Path) -> None:
    (tmp_path / "application.yaml").write_text(
        "stream:\n  binders:\n    k:\n      type: kafka\n      environment:\n"
        "        health-timeout: 'org.apache ScramLoginModule required password=\"hunter2\";'\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, (), (), TYPES, environ={})
    assert "hunter2" not in exc.value.render()
    assert "stream.binders.k.environment.health-timeout" in exc.value.render()


def test_log_filter_masks_message_arguments_and_traceback() -> None:
    logger = logging.getLogger("tests.secrets")
    logger.propagate = False
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    try:
        install_log_filter(logger)
        assert any(isinstance(f, SecretFilter) for f in handler.filters)
        logger.warning("connecting to %s", "amqp://alice:hunter2@broker:5672")
        logger.warning("plain AMQPS://bob:hunter2@broker")
        try:
            raise RuntimeError("cannot reach redis://:hunter2@cache:6379")
        except RuntimeError:
            logger.exception("failed")
        logger.warning("nothing secret here: %d", 42)
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "hunter2" not in text
    assert "amqp://alice:******@broker:5672" in text
    assert "redis://:******@cache:6379" in text
    assert "nothing secret here: 42" in text
