"""Pytest plugin for tests that talk to a real Kafka, RabbitMQ or Redis.

Load it from tests/conftest.py with ``pytest_plugins = ["tests.brokers"]``.

* Markers ``kafka``, ``rabbit`` and ``redis`` (declared in pyproject.toml): a marked test needs
  that broker. If it does not answer, the test is skipped with the command that starts it
  (``scripts/brokers up kafka``); with ``CI=true`` in the environment it fails instead, so a
  CI run can never go green by skipping everything.
* Fixtures ``kafka_bootstrap``, ``rabbit_url`` and ``redis_url`` give the broker's address
  (``KAFKA_BOOTSTRAP_SERVERS``, ``RABBITMQ_URL``, ``REDIS_URL`` or the local defaults) and apply
  the same skip-or-fail rule themselves.
* TLS fixtures: ``tls_files`` (the test CA scripts/brokers made, and a client certificate
  it signed), ``kafka_ssl_bootstrap``, ``kafka_sasl_ssl_bootstrap`` (SCRAM-SHA-512 as
  ``SCRAM_USER``/``SCRAM_PASSWORD``) and ``rabbit_amqps_address``: each listener must finish
  a handshake verified against the CA, else the test is skipped (failed with ``CI=true``).
* Fixture ``prometheus``: the Prometheus ``scripts/brokers up prometheus`` runs on
  127.0.0.1:9490 (``PROMETHEUS_URL`` for another), to have it scrape an app
  (``prometheus.scrape(job, address)`` writes a file_sd target file) and to ask it PromQL
  (``prometheus.query``). Same skip-or-fail rule as the brokers.
* Fixture ``unique_name``: ``unique_name("orders")`` returns a new name on every call, made of
  the prefix, the test's node id and a random suffix. It is a valid Kafka topic, RabbitMQ
  exchange or queue, and Redis key name, so tests never see each other's data.

Reachability is checked once per session and broker, with a short timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import ssl
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

BROKERS = ("kafka", "rabbit", "redis")
ENV_VARS = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "rabbit": "RABBITMQ_URL", "redis": "REDIS_URL"}
DEFAULTS = {
    "kafka": "127.0.0.1:9092",
    "rabbit": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "redis": "redis://127.0.0.1:6379/0",
}
CHECK_TIMEOUT_S = 2.0

_NAME_PREFIX_MAX = 40
#: Random suffixes of every name ``unique_name`` gave out this session (for the clean-up).
_issued: set[str] = set()
_NAME_TEST_MAX = 60


def broker_address(name: str) -> str:
    """The configured address of a broker: its environment variable, else the local default."""
    return os.environ.get(ENV_VARS[name]) or DEFAULTS[name]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def redact(address: str) -> str:
    """Hide the password of a URL for messages."""
    parts = urlsplit(address)
    if not parts.password:
        return address
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _check_kafka(bootstrap: str) -> None:
    """An ApiVersions round trip with the first bootstrap server that answers."""
    errors = []
    for server in bootstrap.split(","):
        server = server.strip().split("://")[-1]
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), CHECK_TIMEOUT_S) as sock:
                sock.settimeout(CHECK_TIMEOUT_S)
                client_id = b"pytest"
                header = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
                sock.sendall(struct.pack(">i", len(header)) + header)
                raw = b""
                while len(raw) < 10:  # size, correlation id, error code
                    chunk = sock.recv(10 - len(raw))
                    if not chunk:
                        raise ConnectionError("connection closed without an answer")
                    raw += chunk
                _size, correlation, error = struct.unpack(">iih", raw)
                if correlation != 1 or error != 0:
                    raise ConnectionError(f"unexpected ApiVersions answer (error {error})")
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
    raise ConnectionError("; ".join(errors))


def _check_rabbit(url: str) -> None:
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = CHECK_TIMEOUT_S
    params.stack_timeout = CHECK_TIMEOUT_S * 2
    params.blocked_connection_timeout = CHECK_TIMEOUT_S
    with _quiet("pika"):  # pika logs every failed attempt with a traceback
        connection = pika.BlockingConnection(params)
    connection.close()


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a logger and its children (they inherit the level unless they set their own)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _describe(exc: BaseException) -> str:
    detail = str(exc) or ", ".join(str(arg) or repr(arg) for arg in exc.args)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S
    )
    try:
        client.ping()
    finally:
        client.close()


_CHECKS: dict[str, Callable[[str], None]] = {
    "kafka": _check_kafka,
    "rabbit": _check_rabbit,
    "redis": _check_redis,
}
_REACHABILITY = pytest.StashKey[dict[str, str | None]]()


def broker_problem(config: pytest.Config, name: str) -> str | None:
    """None if the broker answers, else why not. Checked once per session and broker."""
    cache = config.stash.setdefault(_REACHABILITY, {})
    if name not in cache:
        try:
            _CHECKS[name](broker_address(name))
        except Exception as exc:  # any failure to connect means "unreachable"
            cache[name] = _describe(exc)
        else:
            cache[name] = None
    return cache[name]


def require_broker(config: pytest.Config, name: str) -> str:
    """Return the broker's address, or skip (fail with CI=true) the current test."""
    address = broker_address(name)
    problem = broker_problem(config, name)
    if problem is None:
        return address
    message = (
        f"{name} broker not reachable at {redact(address)} ({problem}); "
        f"start it with: scripts/brokers up {name}"
    )
    if os.environ.get(ENV_VARS[name]):
        message += f" (or fix {ENV_VARS[name]})"
    skip_or_fail(message, "unreachable brokers fail")


def require_own_broker(name: str) -> None:
    """For a fault test that restarts the broker with ``scripts/brokers``, which never
    touches a broker named by its environment variable: skipped then, or with ``CI=true``
    failed, so a CI run never goes green without its fault tests."""
    var = ENV_VARS[name]
    if os.environ.get(var):
        skip_or_fail(
            f"{var} names an external {name} broker, which scripts/brokers does not restart",
            "fault tests need a broker they can restart",
        )


def skip_or_fail(message: str, rule: str) -> None:
    """Skip locally; with ``CI=true`` fail instead: a CI run never goes green on a test
    that did not run."""
    if in_ci():
        pytest.fail(f"{message} [CI=true: {rule}, never skip]", pytrace=False)
    pytest.skip(message)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in BROKERS:
        if item.get_closest_marker(name) is not None:
            require_broker(item.config, name)


def pytest_report_header(config: pytest.Config) -> str:
    addresses = " ".join(f"{name}={redact(broker_address(name))}" for name in BROKERS)
    rule = "fail" if in_ci() else "skip"
    return f"brokers: {addresses} (unreachable: {rule})"


@pytest.fixture(scope="session")
def kafka_bootstrap(pytestconfig: pytest.Config) -> str:
    """Kafka bootstrap servers: KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092."""
    return require_broker(pytestconfig, "kafka")


@pytest.fixture(scope="session")
def rabbit_url(pytestconfig: pytest.Config) -> str:
    """AMQP URL: RABBITMQ_URL or amqp://guest:guest@127.0.0.1:5672/%2F."""
    return require_broker(pytestconfig, "rabbit")


@pytest.fixture(scope="session")
def redis_url(pytestconfig: pytest.Config) -> str:
    """Redis URL: REDIS_URL or redis://127.0.0.1:6379/0."""
    return require_broker(pytestconfig, "redis")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def make_unique_namer(nodeid: str) -> Callable[[str], str]:
    """A namer for one test: prefix, test slug, 12 random hex digits; only [a-z0-9-], at most
    114 characters, so valid for Kafka topics (249), AMQP names (255) and Redis keys."""
    test = _slug(nodeid.removeprefix("tests/").replace(".py::", "::"))
    if len(test) > _NAME_TEST_MAX:
        test = test[-_NAME_TEST_MAX:].lstrip("-")

    def unique_name(prefix: str) -> str:
        head = _slug(prefix)[:_NAME_PREFIX_MAX].strip("-") or "t"
        suffix = uuid.uuid4().hex[:12]
        _issued.add(suffix)
        return f"{head}-{test}-{suffix}"

    return unique_name


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_name(prefix)``: a fresh broker-safe name per call, tagged with this test."""
    return make_unique_namer(request.node.nodeid)


def _made_here(name: str) -> bool:
    """True for a broker object named after a ``unique_name`` of this session: a topic, an
    exchange, a group queue ``<name>.<group>``, its ``.dlq``, a partition ``<name>-<n>``."""
    return any(part in _issued for part in re.split(r"[-.]", name))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete the topics, queues and exchanges this session's tests made (dead-letter ones
    too). A broker that keeps them slows down every later provisioning, and a RabbitMQ node
    recovers every durable queue when it boots, so leftovers make its start ever slower."""
    if not _issued:
        return
    if broker_problem(session.config, "kafka") is None:
        _clean_kafka()
    if broker_problem(session.config, "rabbit") is None:
        _clean_rabbit()


def _clean_rabbit() -> None:
    """AMQP cannot list queues, so ask ``rabbitmqctl`` (there when the node is local and we
    may run it); delete over AMQP. Best effort: a clean-up never fails the session."""
    import subprocess

    import pika

    def names(kind: str) -> list[str]:
        argv = ["rabbitmqctl", f"list_{kind}", "name", "--quiet", "--no-table-headers"]
        if os.geteuid() != 0:
            argv = ["sudo", "-n", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        return [n for n in result.stdout.split() if _made_here(n)] if result.returncode == 0 else []

    with contextlib.suppress(Exception), _quiet("pika"):
        queues, exchanges = names("queues"), names("exchanges")
        if not queues and not exchanges:
            return
        connection = pika.BlockingConnection(pika.URLParameters(broker_address("rabbit")))
        try:
            channel = connection.channel()
            for kind, name in [("queue", q) for q in queues] + [("exchange", e) for e in exchanges]:
                try:
                    if kind == "queue":
                        channel.queue_delete(name)
                    else:
                        channel.exchange_delete(name)
                except pika.exceptions.ChannelClosedByBroker:
                    channel = connection.channel()  # e.g. an exclusive queue still held
        finally:
            connection.close()


def _clean_kafka() -> None:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def clean() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker_address("kafka"))
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if _made_here(t)]
            for i in range(0, len(topics), 200):
                await admin.delete_topics(topics[i : i + 200])
        finally:
            await admin.close()

    with contextlib.suppress(Exception), _quiet("aiokafka"):
        asyncio.run(asyncio.wait_for(clean(), 60))


# -- TLS listeners (scripts/brokers starts them beside the plain ones) ---------------------

#: Where scripts/brokers writes its test CA and certificates (BROKERS_TLS_DIR moves it).
TLS_DIR = Path(os.environ.get("BROKERS_TLS_DIR") or Path(__file__).parents[1] / ".brokers" / "tls")
TLS_ADDRESSES = {
    "kafka-ssl": "127.0.0.1:9094",
    "kafka-sasl-ssl": "127.0.0.1:9095",
    "rabbit-amqps": "127.0.0.1:5671",
}
#: The SCRAM-SHA-512 user scripts/brokers creates on Kafka's SASL_SSL listener (test only).
SCRAM_USER, SCRAM_PASSWORD = "binder-test", "binder-test-secret"
_TLS_REACHABILITY = pytest.StashKey[dict[str, str | None]]()


@dataclass(frozen=True)
class TlsFiles:
    """The test CA and the client certificate it signed (for mutual TLS)."""

    ca: Path
    client_cert: Path
    client_key: Path


def _check_tls(address: str, ca: Path) -> None:
    """A TLS handshake that verifies the listener's certificate against the test CA."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, int(port)), CHECK_TIMEOUT_S) as sock,
        context.wrap_socket(sock, server_hostname=host),
    ):
        pass


def require_tls(config: pytest.Config, listener: str) -> str:
    """The address of a TLS listener (a key of ``TLS_ADDRESSES``) that completes a verified
    handshake; otherwise skip, or with ``CI=true`` fail: a missing TLS listener never lets
    a CI run go green."""
    broker = listener.split("-")[0]
    require_broker(config, broker)
    address = TLS_ADDRESSES[listener]
    ca = TLS_DIR / "ca.pem"
    cache = config.stash.setdefault(_TLS_REACHABILITY, {})
    if listener not in cache:
        try:
            if not ca.is_file():
                raise FileNotFoundError(f"no test CA at {ca}")
            _check_tls(address, ca)
        except Exception as exc:  # any failure means the listener is not usable
            cache[listener] = _describe(exc)
        else:
            cache[listener] = None
    problem = cache[listener]
    if problem is not None:
        skip_or_fail(
            f"{listener} TLS listener not usable at {address} ({problem}); "
            f"start it with: scripts/brokers up {broker}",
            "missing TLS listeners fail",
        )
    return address


@pytest.fixture(scope="session")
def tls_files() -> TlsFiles:
    """The CA scripts/brokers made (and its client certificate), for TLS tests."""
    files = TlsFiles(TLS_DIR / "ca.pem", TLS_DIR / "client.pem", TLS_DIR / "client.key")
    missing = [str(p) for p in (files.ca, files.client_cert, files.client_key) if not p.is_file()]
    if missing:
        skip_or_fail(
            f"no test CA and certificates ({', '.join(missing)}); run: scripts/brokers up",
            "missing TLS material fails",
        )
    return files


@pytest.fixture(scope="session")
def kafka_ssl_bootstrap(pytestconfig: pytest.Config, tls_files: TlsFiles) -> str:
    """Kafka's SSL listener (127.0.0.1:9094), its certificate signed by ``tls_files.ca``."""
    return require_tls(pytestconfig, "kafka-ssl")


@pytest.fixture(scope="session")
def kafka_sasl_ssl_bootstrap(pytestconfig: pytest.Config, tls_files: TlsFiles) -> str:
    """Kafka's SASL_SSL listener (127.0.0.1:9095, SCRAM-SHA-512 as ``SCRAM_USER``)."""
    return require_tls(pytestconfig, "kafka-sasl-ssl")


@pytest.fixture(scope="session")
def rabbit_amqps_address(pytestconfig: pytest.Config, tls_files: TlsFiles) -> str:
    """RabbitMQ's amqps listener (127.0.0.1:5671), user guest/guest as on 5672."""
    return require_tls(pytestconfig, "rabbit-amqps")


@pytest.fixture(scope="session")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA certificate that signed none of the brokers' certificates (the wrong CA)."""
    import subprocess

    folder = tmp_path_factory.mktemp("foreign-ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-noenc", "-days", "2",
         "-subj", "/CN=not the brokers' CA", "-keyout", str(folder / "ca.key"),
         "-out", str(folder / "ca.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return folder / "ca.pem"


# -- Prometheus (scripts/brokers up prometheus) --------------------------------------------

PROMETHEUS_DEFAULT = "http://127.0.0.1:9490"
#: Where the Prometheus of scripts/brokers reads its file_sd targets (``PROMETHEUS_TARGETS_DIR``
#: for one started otherwise, reading ``*.json`` there).
PROMETHEUS_TARGETS = Path(
    os.environ.get("PROMETHEUS_TARGETS_DIR")
    or Path(__file__).parents[1] / ".brokers" / "prometheus" / "targets"
)


class Prometheus:
    """A real Prometheus: scrape targets written as files, PromQL through its HTTP API."""

    def __init__(self, url: str, targets: Path) -> None:
        self.url = url.rstrip("/")
        self.targets = targets

    @contextlib.contextmanager
    def scrape(self, job: str, address: str, **labels: str) -> Iterator[None]:
        """Have Prometheus scrape ``address`` (host:port, ``/metrics``) every second, with
        ``run=job`` and ``labels`` on every series, until the block ends."""
        import json

        target = self.targets / f"{_slug(job)}.json"
        entry = [{"targets": [address], "labels": {"run": job, **labels}}]
        partial = target.with_suffix(".tmp")  # not *.json: Prometheus never reads it half-written
        partial.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(partial, target)
        try:
            yield
        finally:
            target.unlink(missing_ok=True)

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: each series' labels and value."""
        import json
        import urllib.parse
        import urllib.request

        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(address, timeout=CHECK_TIMEOUT_S * 2) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]


def _check_prometheus(url: str) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url}/-/ready", timeout=CHECK_TIMEOUT_S) as response:
        if response.status != 200:
            raise ConnectionError(f"/-/ready answered {response.status}")
    with urllib.request.urlopen(f"{url}/api/v1/query?query=vector(1)", timeout=5) as response:
        if json.loads(response.read()).get("status") != "success":
            raise ConnectionError("a PromQL query did not succeed")


@pytest.fixture(scope="session")
def prometheus() -> Prometheus:
    """The test Prometheus (``PROMETHEUS_URL`` or 127.0.0.1:9490), reading file_sd targets
    from ``PROMETHEUS_TARGETS``; skipped when it does not answer (failed with ``CI=true``)."""
    url = os.environ.get("PROMETHEUS_URL") or PROMETHEUS_DEFAULT
    try:
        _check_prometheus(url)
        if not PROMETHEUS_TARGETS.is_dir():
            raise FileNotFoundError(f"no targets directory {PROMETHEUS_TARGETS}")
    except Exception as exc:  # any failure means it is not usable
        skip_or_fail(
            f"prometheus not usable at {url} ({_describe(exc)}); "
            "start it with: scripts/brokers up prometheus",
            "an unreachable Prometheus fails",
        )
    return Prometheus(url, PROMETHEUS_TARGETS)
