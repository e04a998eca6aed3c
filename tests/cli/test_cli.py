"""The ``binder`` command run as a user runs it: a subprocess, exit codes, messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINDER = str(Path(sys.executable).parent / "binder")


def binder(
    *args: str, cwd: Path = ROOT, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM__", "MARKET__"))}
    environ.pop("BINDER_PROFILES", None)
    environ.update(env or {})
    return subprocess.run(
        [BINDER, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout
    )


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "application.yaml").write_text(text)
    return directory


@pytest.mark.parametrize("command", ["run", "config", "bindings", "plugins", "send", "tail"])
def test_every_command_has_help(command: str) -> None:
    result = binder(command, "--help")
    assert result.returncode == 0
    assert "usage: binder " + command in result.stdout


def test_uppercase_app_runs_and_exits_cleanly() -> None:
    result = binder("run", "apps.uppercase", "--config", "config/uppercase", "--run-for", "0.5")
    assert result.returncode == 0, result.stderr
    assert "uppercase-in-0 -> words" in result.stderr
    assert "stopped" in result.stderr


def test_market_demo_prints_alerts_and_audit_tally() -> None:
    result = binder(
        "run", "apps.market", "--run-for", "3",
        "--set", "market.ticker.seed=7",
        "--set", "market.ticker.volatility-percent=4",
        "--set", "stream.poller.fixed-delay=5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ALERT " in result.stdout
    assert "audit: 25 ticks recorded" in result.stdout


_DEMO = (
    "--run-for", "2",
    "--set", "market.ticker.seed=7",
    "--set", "market.ticker.volatility-percent=4",
    "--set", "stream.poller.fixed-delay=5",
)  # fmt: skip


def _drops(stdout: str) -> list[float]:
    """The drop of each alert the demo printed ("ALERT ACME: 97.73 is 1.26% below 98.98")."""
    return [float(line.split()[4].rstrip("%")) for line in stdout.splitlines() if "ALERT" in line]


@pytest.mark.parametrize(
    ("options", "env", "threshold", "instead_of"),
    [
        ((), {}, 3.0, 5.0),  # config/application.yaml, not the model's default
        (("--set", "market.alerts.slump-percent=1"), {}, 1.0, 3.0),
        (("--set", "market.alerts.slump_percent=1"), {}, 1.0, 3.0),
        ((), {"MARKET__ALERTS__SLUMP_PERCENT": "1.5"}, 1.5, 3.0),
    ],
)
def test_market_demo_applies_its_slump_setting_from_every_source(
    options: tuple[str, ...], env: dict[str, str], threshold: float, instead_of: float
) -> None:
    result = binder("run", "apps.market", *_DEMO, *options, env=env)
    assert result.returncode == 0, result.stderr
    drops = _drops(result.stdout)
    assert drops, result.stdout
    assert min(drops) > threshold
    assert min(drops) < instead_of, f"alerts look like slump-percent {instead_of}: {drops}"


def test_market_demo_refuses_a_bad_setting_with_its_key_path() -> None:
    result = binder(
        "run", "apps.market", "--run-for", "1", "--set", "market.alerts.slump-percent=abc"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--set market.alerts.slump-percent: market.alerts.slump-percent:" in result.stderr
    assert "(got 'abc')" in result.stderr
    assert "ALERT" not in result.stdout


def test_config_error_names_file_line_key_and_suggestion(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "cfg",
        "stream:\n  function:\n    definition: uppercase\n  bindings:\n"
        "    uppercase-in-0:\n      destnation: words\n",
    )
    result = binder("run", "apps.uppercase", "--config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        f"{config}/application.yaml:6: stream.bindings.uppercase-in-0.destnation: unknown key "
        "(did you mean 'destination'?)"
    ) in result.stderr


def test_unknown_function_binder_type_and_module(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "cfg",
        "stream:\n  function:\n    definition: upercase\n  binders:\n    main: {type: rabit}\n",
    )
    result = binder("run", "apps.uppercase", "--config", str(config))
    assert result.returncode == 2
    assert "unknown binder type 'rabit' (did you mean 'rabbit'?)" in result.stderr
    assert "installed binder types: kafka, memory, rabbit" in result.stderr
    config = write_config(tmp_path / "cfg2", "stream:\n  function:\n    definition: upercase\n")
    result = binder("run", "apps.uppercase", "--config", str(config))
    assert result.returncode == 2
    assert (
        "no function 'upercase'" in result.stderr and "did you mean 'uppercase'?" in result.stderr
    )
    result = binder("run", "apps.uppercse", "--config", str(config))
    assert result.returncode == 2
    assert "cannot import app module 'apps.uppercse'" in result.stderr
    assert "did you mean 'apps.uppercase'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_shows_sources_and_masks_secrets(tmp_path: Path) -> None:
    result = binder(
        "config", "--profile", "rabbit", "--set", "stream.bindings.notify-in-0.group=ops"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stream.binders.rabbit.environment.password" in out
    assert (
        "guest" not in out.split("stream.binders.rabbit.environment.password", 1)[1].split("\n")[0]
    )
    assert "******" in out
    line = next(x for x in out.splitlines() if x.startswith("stream.bindings.notify-in-0.group"))
    assert "ops" in line and "--set stream.bindings.notify-in-0.group" in line
    line = next(x for x in out.splitlines() if x.startswith("stream.default-binder"))
    assert "config/application-rabbit.yaml:3" in line


def test_bindings_table_for_the_market_app() -> None:
    result = binder("bindings", "apps.market")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["audit-in-0"][1:5] == ["in", "ticks", "audit", "memory"]
    assert rows["ticker-out-0"][1:3] == ["out", "ticks"]
    assert rows["price_alerts-out-0"][2] == "price-alerts"


def test_plugins_lists_types_and_converters_with_distribution() -> None:
    result = binder("plugins")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["memory", "binder"] for line in lines)
    assert any(line.split()[:2] == ["kafka", "binder"] for line in lines)
    assert any(line.split()[:2] == ["rabbit", "binder"] for line in lines)
    assert any(line.startswith("application/json") for line in lines)


def test_send_and_tail_explain_why_memory_cannot() -> None:
    result = binder("send", "words", "hello")
    assert result.returncode == 2
    assert "inside the process" in result.stderr and "--binder kafka" in result.stderr
    result = binder("tail", "words")
    assert result.returncode == 2


def test_sigterm_with_messages_in_flight_loses_none(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "cfg",
        "stream:\n  function:\n    definition: numbers;double;record\n"
        "  bindings:\n"
        "    numbers-out-0: {destination: n, producer: {required-groups: [g]}}\n"
        "    double-in-0: {destination: n, group: g}\n"
        "    double-out-0: {destination: d, producer: {required-groups: [r]}}\n"
        "    record-in-0: {destination: d, group: r}\n",
    )
    env = dict(os.environ)
    proc = subprocess.Popen(
        [BINDER, "run", "tests.cli.sample_app", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    # Wait until values flow, then stop it while messages are queued and in flight.
    values = [int(proc.stdout.readline())]
    while len(values) < 200:
        values.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGTERM)
    # Read on from the same buffered stream (communicate() would skip what it buffered).
    out = proc.stdout.read()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    values += [int(x) for x in out.split()]
    supplied = int(next(x for x in err.splitlines() if x.startswith("supplied")).split()[1])
    assert supplied > len(values) - len(out.split())  # the signal came with work queued
    assert values == [2 * i for i in range(supplied)], f"processed {len(values)} of {supplied}"
    assert "undelivered" not in err


def test_unreachable_broker_fails_start_up_with_exit_1_in_bounded_time() -> None:
    result = binder(
        "run", "apps.uppercase", "--config", "config/uppercase", "--profile", "kafka",
        "--set", "stream.binders.kafka.environment.bootstrap-servers=127.0.0.1:1",
        "--set", "stream.binders.kafka.environment.health-timeout=1",
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert "binder 'kafka' (kafka) could not start" in result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_masks_secrets_in_every_form(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "cfg",
        "stream:\n  binders:\n    k:\n      type: kafka\n      environment:\n"
        "        configuration:\n"
        "          sasl.jaas.config: 'org.apache.kafka.common.security.scram.ScramLoginModule"
        ' required username="a" password="hunter2";\'\n'
        "          sasl_plain_password: hunter2\n"
        "          security.protocol: SASL_SSL\n"
        "          sasl.mechanism: SCRAM-SHA-512\n"
        "    r: {type: rabbit, environment: {uri: 'AMQPS://alice:hunter2@127.0.0.1:5671/'}}\n"
        "myapp:\n"
        "  broker-url: amqp://alice:hunter2@127.0.0.1/\n"
        "  cache: redis://:hunter2@127.0.0.1:6379/0\n"
        "  events: kafka+ssl://alice:hunter2@127.0.0.1:9093\n"
        "  sasl: {jaas: {config: 'password=\"hunter2\"'}}\n"
        "  ssl-key-password: hunter2\n"
        "  password-file: /run/secrets/pw\n"
        "  ApiToken: hunter2\n",
    )
    result = binder(
        "config", "--config", str(config),
        "--set", "myapp.other=AMQP://bob:hunter2@h",
        "--set", "myapp.nested.client_secret=hunter2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    lines = {line.split(" = ")[0].strip(): line for line in result.stdout.splitlines()[2:]}
    assert "amqp://alice:******@127.0.0.1/" in lines["myapp.broker-url"]
    assert "redis://:******@127.0.0.1:6379/0" in lines["myapp.cache"]
    assert "kafka+ssl://alice:******@127.0.0.1:9093" in lines["myapp.events"]
    assert "AMQP://bob:******@h" in lines["myapp.other"]
    assert "/run/secrets/pw" in lines["myapp.password-file"]  # the path, never the contents
    assert "SASL_SSL" in lines["stream.binders.k.environment.configuration.security.protocol"]
    # a key holding dots still finds its source
    jaas = lines["stream.binders.k.environment.configuration.sasl.jaas.config"]
    assert jaas.endswith("application.yaml:7"), jaas
    for key in (
        "myapp.sasl.jaas.config",
        "myapp.ssl-key-password",
        "myapp.ApiToken",
        "myapp.nested.client_secret",
        "stream.binders.k.environment.configuration.sasl.jaas.config",
        "stream.binders.k.environment.configuration.sasl_plain_password",
    ):
        assert "******" in lines[key], key


def test_logs_and_errors_of_a_run_mask_urls_with_passwords(tmp_path: Path) -> None:
    (tmp_path / "leaky.py").write_text(
        "import logging\n"
        "logging.getLogger('leaky').warning('connecting to %s', 'amqp://u:hunter2@h:5672')\n"
        "raise RuntimeError('cannot reach redis://:hunter2@cache:6379')\n"
    )
    result = binder("run", "leaky", "--config", str(write_config(tmp_path / "c", "{}\n")),
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
    assert "amqp://u:******@h:5672" in result.stderr
    assert "redis://:******@cache:6379" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &a [x,x,x,x,x,x,x,x,x]\n"
         + "".join(f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]\n"
                   for p, n in zip("abcdefgh", "bcdefghi", strict=True)),
         "alias bomb"),
        ("loop: &a [1, *a]\n", "recursive alias *a"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels"),
        (b"name: caf\xe9\n", "not UTF-8"),
    ],
)  # fmt: skip
def test_hostile_yaml_is_a_configuration_error_not_a_traceback(
    tmp_path: Path, text: str | bytes, expected: str
) -> None:
    directory = tmp_path / "cfg"
    directory.mkdir()
    file = directory / "application.yaml"
    if isinstance(text, bytes):
        file.write_bytes(text)
    else:
        file.write_text(text)
    started = time.perf_counter()
    result = binder("config", "--config", str(directory))
    assert time.perf_counter() - started < 10
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{file}:" in result.stderr and expected in result.stderr


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 1\ndef broken(:\n    pass\n", "broken_app.py:2: SyntaxError: invalid syntax"),
        (
            "import os\nimport surely_not_installed_anywhere\n",
            "broken_app.py:2: ModuleNotFoundError",
        ),
        ("def f():\n    return 1 / 0\n\nf()\n", "broken_app.py:2: ZeroDivisionError"),
    ],
)
def test_an_app_module_that_cannot_be_imported_is_one_clear_paragraph(
    tmp_path: Path, source: str, expected: str
) -> None:
    (tmp_path / "broken_app.py").write_text(source)
    config = write_config(tmp_path / "cfg", "{}\n")
    result = binder("run", "broken_app", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot import app module 'broken_app'" in result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "soon"])
def test_run_for_must_be_a_finite_number_of_seconds(value: str) -> None:
    result = binder("run", "apps.uppercase", "--config", "config/uppercase", "--run-for", value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --run-for: expected a" in result.stderr and f"got '{value}'" in result.stderr


def test_output_cut_short_by_its_reader_is_not_a_traceback() -> None:
    """``binder config | head -1``: the reader goes away while binder still writes."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAM__")}
    proc = subprocess.Popen(
        [BINDER, "config"], cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # no reader left: every write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


@pytest.mark.kafka
def test_tail_on_a_missing_kafka_topic_says_so_and_creates_nothing(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("missing")
    where = f"stream.binders.kafka.environment.bootstrap-servers={kafka_bootstrap}"
    for _ in range(2):  # the second run proves the first created nothing
        result = binder("tail", topic, "--profile", "kafka", "--set", where, timeout=90)
        assert result.returncode == 1, result.stderr
        assert f"destination '{topic}' does not exist on binder 'kafka'" in result.stderr
        assert "nothing was created" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.rabbit
def test_tail_on_a_missing_rabbit_exchange_says_so_and_creates_nothing(
    rabbit_url: str, unique_name: Callable[[str], str]
) -> None:
    exchange = unique_name("missing")
    where = f"stream.binders.rabbit.environment.uri={rabbit_url}"
    for _ in range(2):  # the second run proves the first created nothing
        result = binder("tail", exchange, "--profile", "rabbit", "--set", where, timeout=90)
        assert result.returncode == 1, result.stderr
        assert f"destination '{exchange}' does not exist on binder 'rabbit'" in result.stderr
        assert "nothing was created" in result.stderr and "Traceback" not in result.stderr
        assert "NOT_FOUND" not in result.stderr  # pika's warning is the expected answer here


def _install_impostor(site: Path) -> dict[str, str]:
    """A distribution 'evil-binder' that provides the kafka binder type with tryfirst, made
    importable through PYTHONPATH (its dist-info is what entry-point discovery reads)."""
    info = site / "evil_binder-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-binder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[binder_core.plugins]\nevil = evil_binder\n")
    (site / "evil_binder.py").write_text(
        "from binder_core.errors import BinderException\n"
        "from binder_core.hookspecs import hookimpl\n"
        "from binder_core.spi import BinderType\n"
        "from binders.kafka.settings import KafkaEnvironment\n\n"
        "def _create(name, environment):\n"
        "    raise BinderException('the evil-binder kafka type was used')\n\n"
        "@hookimpl(tryfirst=True)\n"
        "def binder_types():\n"
        "    return [BinderType('kafka', _create, KafkaEnvironment, description='impostor')]\n"
    )
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_two_providers_of_a_binder_type_are_listed_and_refused_until_chosen(
    tmp_path: Path,
) -> None:
    env = _install_impostor(tmp_path / "site")
    listing = binder("plugins", env=env)
    assert listing.returncode == 0, listing.stderr
    kafka_rows = [line for line in listing.stdout.splitlines() if line.startswith("kafka ")]
    assert [row.split()[1] for row in kafka_rows] == ["binder", "evil-binder"]
    assert all("CONFLICT" in row and "stream.binder-types.kafka" in row for row in kafka_rows)

    refused = binder("config", env=env)
    assert refused.returncode == 2
    assert (
        "stream.binder-types.kafka: binder type 'kafka' is provided by 'binder' and "
        "'evil-binder'" in refused.stderr
    )
    chosen = binder("config", "--set", "stream.binder-types.kafka=binder", env=env)
    assert chosen.returncode == 0, chosen.stderr

    run = ("run", "apps.uppercase", "--config", "config/uppercase", "--profile", "kafka")
    impostor = binder(*run, "--set", "stream.binder-types.kafka=evil-binder", env=env)
    assert impostor.returncode == 1
    assert "the evil-binder kafka type was used" in impostor.stderr


def test_send_to_a_name_the_broker_would_refuse_stops_before_connecting() -> None:
    started = time.perf_counter()
    result = binder(
        "send", "d" * 300, "x", "--profile", "rabbit",
        "--set", "stream.binders.rabbit.environment.port=1",  # nothing listens there
    )  # fmt: skip
    assert time.perf_counter() - started < 30
    assert result.returncode == 2
    assert "is not a valid rabbit name: it is 300 bytes in UTF-8" in result.stderr
    assert "Traceback" not in result.stderr and "d" * 100 not in result.stderr
