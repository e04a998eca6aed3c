"""The rabbit binder over amqps against the local broker's TLS listener (scripts/brokers):
messages round-trip in every way TLS can be configured, and each setting that can never
work (a wrong CA, a wrong password, a plain client on the TLS port) stops start-up with
the setting to check, never a traceback and never the password."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from binder_core.message import Message
from binder_core.properties import ProducerProperties
from binder_core.spi import ConsumerSpec, ProducerSpec
from binder_core.testing.driver import BinderDriver
from binders.rabbit.binder import RabbitBinder
from binders.rabbit.settings import RabbitEnvironment
from tests.brokers import TlsFiles
from tests.rabbit.conftest import Admin
from tests.support import Apps, Collector

pytestmark = pytest.mark.rabbit

Namer = Callable[[str], str]
#: Settings that can never work must stop start-up well before startup-timeout (60 s).
FAST = 15.0


def _shapes(address: str, tls: TlsFiles, password_file: Path) -> dict[str, dict[str, Any]]:
    host, _, port = address.rpartition(":")
    return {
        "ssl-enabled-with-client-certificate": {
            "host": host,
            "port": int(port),
            "ssl": {
                "enabled": True,
                "ca-file": str(tls.ca),
                "cert-file": str(tls.client_cert),
                "key-file": str(tls.client_key),
            },
        },
        "amqps-uri-and-password-file": {
            "uri": f"amqps://guest@{address}/%2F",
            "password-file": str(password_file),
            "ssl": {"ca-file": str(tls.ca)},
        },
        "amqps-address-by-host-name": {
            "addresses": f"amqps://localhost:{port}",
            "ssl": {"ca-file": str(tls.ca)},
        },
    }


@pytest.mark.parametrize(
    "shape",
    [
        "ssl-enabled-with-client-certificate",
        "amqps-uri-and-password-file",
        "amqps-address-by-host-name",
    ],
)
async def test_round_trip_over_amqps(
    admin: Admin,
    unique_name: Namer,
    rabbit_amqps_address: str,
    tls_files: TlsFiles,
    tmp_path: Path,
    shape: str,
) -> None:
    secret = tmp_path / "password"
    secret.write_text("guest\n")
    settings = _shapes(rabbit_amqps_address, tls_files, secret)[shape]
    binder = BinderDriver(RabbitBinder("secure", RabbitEnvironment.model_validate(settings)))
    await binder.start()
    try:
        assert "over TLS" in binder.connection.where
        dest = unique_name("words")
        admin.track(dest, "g")
        got = Collector()
        await binder.consumer(ConsumerSpec("in", dest, "g"), got)
        producer = await binder.producer(
            ProducerSpec("out", dest, ProducerProperties(required_groups=["g"]))
        )
        sent = [f"tls{i}".encode() for i in range(50)]
        await producer.send([Message(p, {"contentType": "text/plain"}) for p in sent])
        await got.wait_for(50)
        assert got.payloads == sent
    finally:
        await binder.close()


# -- start-up errors, through the command line as a user meets them -------------------------


def _config_dir(tmp_path: Path, environment: dict[str, Any]) -> Path:
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    tree = {
        "stream": {
            "function": {"definition": "uppercase"},
            "default-binder": "rabbit",
            "binders": {"rabbit": {"type": "rabbit", "environment": environment}},
            "bindings": {
                "uppercase-in-0": {"destination": "tls-words", "group": "tls"},
                "uppercase-out-0": {"destination": "tls-shouted"},
            },
        }
    }
    (folder / "application.yaml").write_text(yaml.safe_dump(tree))
    return folder


async def _failed_start(apps: Apps, config: Path, env: dict[str, str] | None = None) -> str:
    """Run the app; it must exit 1 quickly, naming the binder; its output."""
    started = time.monotonic()
    app = apps("run", "apps.uppercase", "--config", str(config), env=env)
    code = await app.wait(timeout=FAST + 30)
    spent = time.monotonic() - started
    output = app.output
    assert code == 1, output
    assert spent < FAST, f"start-up took {spent:.1f} s to fail:\n{output}"
    assert "Traceback" not in output, output
    assert "binder 'rabbit'" in output, output
    return output


async def test_wrong_ca_fails_at_once_naming_ssl_ca_file(
    apps: Apps, tmp_path: Path, rabbit_amqps_address: str, foreign_ca: Path
) -> None:
    config = _config_dir(
        tmp_path,
        {"uri": f"amqps://guest:guest@{rabbit_amqps_address}", "ssl": {"ca-file": str(foreign_ca)}},
    )
    output = await _failed_start(apps, config)
    assert "the broker's TLS certificate is not trusted" in output, output
    assert "check ssl.ca-file" in output, output


async def test_plain_client_on_the_tls_port_says_to_use_amqps(
    apps: Apps, tmp_path: Path, rabbit_amqps_address: str
) -> None:
    """Not final (a reset at the greeting might be a broker going down): retried for the
    startup-timeout, then the hint."""
    host, _, port = rabbit_amqps_address.rpartition(":")
    config = _config_dir(tmp_path, {"host": host, "port": int(port), "startup-timeout": 2})
    output = await _failed_start(apps, config)
    assert "if this is a TLS port" in output and "amqps://" in output, output


async def test_tls_client_on_the_plain_port_fails_at_once(
    apps: Apps, tmp_path: Path, rabbit_url: str, tls_files: TlsFiles, rabbit_amqps_address: str
) -> None:
    plain = rabbit_url.replace("amqp://", "amqps://", 1)
    config = _config_dir(tmp_path, {"uri": plain, "ssl": {"ca-file": str(tls_files.ca)}})
    output = await _failed_start(apps, config)
    assert "does not speak TLS" in output, output


@pytest.mark.parametrize("where", ["environment-variable", "uri"])
async def test_wrong_password_fails_at_once_and_is_never_shown(
    apps: Apps, tmp_path: Path, rabbit_amqps_address: str, tls_files: TlsFiles, where: str
) -> None:
    wrong = "Wr0ng-Pa55-not-shown"
    ssl = {"ca-file": str(tls_files.ca)}
    env: dict[str, str] = {}
    if where == "uri":
        environment = {"uri": f"amqps://guest:{wrong}@{rabbit_amqps_address}/%2F", "ssl": ssl}
    else:
        host, _, port = rabbit_amqps_address.rpartition(":")
        environment = {"host": host, "port": int(port), "ssl": {**ssl, "enabled": True}}
        env["STREAM__BINDERS__RABBIT__ENVIRONMENT__PASSWORD"] = wrong
    config = _config_dir(tmp_path, environment)
    output = await _failed_start(apps, config, {**env, "BINDER_LOG_LEVEL": "DEBUG"})
    assert "login refused (check username and password)" in output, output
    assert wrong not in output

    shown = apps("config", "--config", str(config), env=env)
    assert await shown.wait() == 0, shown.output
    assert wrong not in shown.output
    key = ".environment.uri " if where == "uri" else ".environment.password "
    assert "******" in next(x for x in shown.output.splitlines() if key in x)
