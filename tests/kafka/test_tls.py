"""The Kafka binder over TLS and SASL_SSL/SCRAM-SHA-512, against the local broker's TLS
listeners (scripts/brokers): messages round-trip through an app, and each setting that
can never work (a wrong CA, a wrong password, a plain client on the TLS port) stops
start-up at once with the setting to check, never a traceback and never the password."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.brokers import SCRAM_PASSWORD, SCRAM_USER, TlsFiles
from tests.kafka.conftest import Kit, binder_tree, running_app
from tests.support import Apps, eventually

pytestmark = pytest.mark.kafka

#: Start-up must stop well before the default health-timeout (60 s) for settings that
#: can never connect.
FAST = 15.0


def uppercase(word: str) -> str:
    return word.upper()


async def _round_trip(kit: Kit, bootstrap: str, environment: dict[str, Any]) -> None:
    """words -> uppercase -> shouted, the app's clients all on ``bootstrap``."""
    words, shouted = kit.name("words"), kit.name("shouted")
    stream = {
        "function": {"definition": "uppercase"},
        **binder_tree(bootstrap, **environment),
        "bindings": {
            "uppercase-in-0": {
                "destination": words,
                "group": kit.name("g"),
                "content-type": "text/plain",
            },
            "uppercase-out-0": {"destination": shouted, "content-type": "text/plain"},
        },
    }
    async with running_app({"uppercase": uppercase}, stream):
        await kit.produce(words, [b"over", b"tls"])
        records = await kit.read(shouted, 2)
    assert [r.value for r in records] == [b"OVER", b"TLS"]


async def test_round_trip_over_ssl_with_a_client_certificate(
    kit: Kit, kafka_ssl_bootstrap: str, tls_files: TlsFiles
) -> None:
    await _round_trip(
        kit,
        kafka_ssl_bootstrap,
        {
            "security-protocol": "SSL",
            "ssl": {
                "ca-file": str(tls_files.ca),
                "cert-file": str(tls_files.client_cert),
                "key-file": str(tls_files.client_key),
            },
        },
    )


async def test_round_trip_over_sasl_ssl_scram_with_a_password_file(
    kit: Kit, kafka_sasl_ssl_bootstrap: str, tls_files: TlsFiles, tmp_path: Path
) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(SCRAM_PASSWORD + "\n")  # as a mounted secret often ends
    await _round_trip(
        kit,
        kafka_sasl_ssl_bootstrap,
        {
            "security-protocol": "SASL_SSL",
            "ssl": {"ca-file": str(tls_files.ca)},
            "sasl": {
                "mechanism": "SCRAM-SHA-512",
                "username": SCRAM_USER,
                "password-file": str(secret),
            },
        },
    )


async def test_round_trip_with_spring_cloud_stream_configuration_names(
    kit: Kit, kafka_sasl_ssl_bootstrap: str, tls_files: TlsFiles
) -> None:
    """A Spring Cloud Stream app's ``configuration`` map works as it is (PEM trust store)."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{SCRAM_USER}" password="{SCRAM_PASSWORD}";'
    )
    await _round_trip(
        kit,
        kafka_sasl_ssl_bootstrap,
        {
            "configuration": {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.jaas.config": jaas,
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(tls_files.ca),
            }
        },
    )


# -- start-up errors, through the command line as a user meets them -------------------------


def _config_dir(tmp_path: Path, environment: dict[str, Any], kit: Kit | None = None) -> Path:
    """config/application.yaml for apps.uppercase on one Kafka binder (topics named by
    ``kit`` when the app gets as far as creating them)."""
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    name = kit.name if kit is not None else (lambda prefix: f"tls-{prefix}")
    tree = {
        "stream": {
            "function": {"definition": "uppercase"},
            "default-binder": "kafka",
            "binders": {"kafka": {"type": "kafka", "environment": environment}},
            "bindings": {
                "uppercase-in-0": {"destination": name("words"), "group": name("g")},
                "uppercase-out-0": {"destination": name("shouted")},
            },
        }
    }
    (folder / "application.yaml").write_text(yaml.safe_dump(tree))
    return folder


async def _failed_start(apps: Apps, config: Path, env: dict[str, str] | None = None) -> str:
    """Run the app; it must exit 1 well within the health-timeout; its output."""
    started = time.monotonic()
    app = apps("run", "apps.uppercase", "--config", str(config), env=env)
    code = await app.wait(timeout=FAST + 30)
    spent = time.monotonic() - started
    output = app.output
    assert code == 1, output
    assert spent < FAST, f"start-up took {spent:.1f} s to fail:\n{output}"
    assert "Traceback" not in output, output
    assert "binder 'kafka'" in output, output
    return output


@pytest.mark.parametrize(
    ("listener", "settings", "expected"),
    [
        pytest.param(
            "ssl",
            {"security-protocol": "SSL"},
            "the broker's TLS certificate is not trusted",
            id="wrong-ca",
        ),
        pytest.param(
            "ssl",
            {},
            "this is a TLS listener but security-protocol is PLAINTEXT",
            id="plain-client-on-tls-port",
        ),
    ],
)
async def test_tls_mistakes_stop_start_up_at_once_with_the_setting_to_check(
    apps: Apps,
    tmp_path: Path,
    foreign_ca: Path,
    kafka_ssl_bootstrap: str,
    listener: str,
    settings: dict[str, Any],
    expected: str,
) -> None:
    environment: dict[str, Any] = {"bootstrap-servers": kafka_ssl_bootstrap, **settings}
    if settings:
        environment["ssl"] = {"ca-file": str(foreign_ca)}
    output = await _failed_start(apps, _config_dir(tmp_path, environment))
    assert expected in output, output
    assert ("ssl.ca-file" if settings else "security-protocol: SSL") in output, output


async def test_wrong_password_fails_at_once_and_is_never_shown(
    apps: Apps, tmp_path: Path, kafka_sasl_ssl_bootstrap: str, tls_files: TlsFiles
) -> None:
    wrong = "Wr0ng-Pa55-not-shown"  # from an environment variable, as a container gets it
    env = {"STREAM__BINDERS__KAFKA__ENVIRONMENT__SASL__PASSWORD": wrong}
    config = _config_dir(
        tmp_path,
        {
            "bootstrap-servers": kafka_sasl_ssl_bootstrap,
            "security-protocol": "SASL_SSL",
            "ssl": {"ca-file": str(tls_files.ca)},
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": SCRAM_USER},
        },
    )
    output = await _failed_start(apps, config, {**env, "BINDER_LOG_LEVEL": "DEBUG"})
    assert f"refused the SCRAM-SHA-512 login of user '{SCRAM_USER}'" in output, output
    assert "sasl.password" in output, output
    assert wrong not in output

    shown = apps("config", "--config", str(config), env=env)
    assert await shown.wait() == 0, shown.output
    assert wrong not in shown.output
    line = next(x for x in shown.output.splitlines() if ".sasl.password " in x)
    assert "******" in line and "STREAM__BINDERS__KAFKA__ENVIRONMENT__SASL__PASSWORD" in line


async def test_password_never_reaches_the_logs_of_a_running_app(
    apps: Apps, kit: Kit, tmp_path: Path, kafka_sasl_ssl_bootstrap: str, tls_files: TlsFiles
) -> None:
    """At DEBUG, through start-up, a login on every client and a clean stop."""
    secret = tmp_path / "password"
    secret.write_text(SCRAM_PASSWORD)
    config = _config_dir(
        tmp_path,
        {
            "bootstrap-servers": kafka_sasl_ssl_bootstrap,
            "security-protocol": "SASL_SSL",
            "ssl": {"ca-file": str(tls_files.ca)},
            "sasl": {
                "mechanism": "SCRAM-SHA-512",
                "username": SCRAM_USER,
                "password-file": str(secret),
            },
        },
        kit,
    )
    app = apps("run", "apps.uppercase", "--config", str(config), env={"BINDER_LOG_LEVEL": "DEBUG"})
    await eventually(
        lambda: "Successfully synced group" in app.output or not app.running(),
        "the app's consumer to join its group",
    )
    assert app.running(), app.output
    assert await app.stop() == 0, app.output
    output = app.output
    assert f"Authenticated as {SCRAM_USER} via SCRAM-SHA-512" in output
    assert SCRAM_PASSWORD not in output
