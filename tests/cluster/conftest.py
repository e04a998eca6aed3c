"""Fixtures for the tests on the three-node clusters ``scripts/brokers up --cluster`` runs
beside the single brokers: Kafka on 127.0.0.1:19092-19094, RabbitMQ on 127.0.0.1:5681-5683.

* ``kafka_cluster`` and ``rabbit_cluster`` check that every node of the cluster answers
  (Kafka: all three brokers registered; RabbitMQ: every node reachable over AMQP), else
  the test is skipped with the command that starts them, or with ``CI=true`` fails.
* They kill a node with SIGKILL and start it again through ``scripts/brokers`` (``kill``
  and ``up --cluster ... --node N``), only ever nodes of these clusters, never the single
  brokers the rest of the suite uses. After each test, any node a test left down is
  started again, and what the test made on the cluster (topics, queues, exchanges) is
  deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import pika
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.brokers import make_unique_namer, skip_or_fail
from tests.support import REPO, apps  # noqa: F401  (the apps fixture)

SCRIPT = REPO / "scripts" / "brokers"
KAFKA_NODES = {1: "127.0.0.1:19092", 2: "127.0.0.1:19093", 3: "127.0.0.1:19094"}
RABBIT_NODES = {1: "127.0.0.1:5681", 2: "127.0.0.1:5682", 3: "127.0.0.1:5683"}
RABBIT_NAMES = {n: f"binder-c{n}@localhost" for n in RABBIT_NODES}
#: How long starting a node again may take (a Kafka JVM and its catch-up, a RabbitMQ boot).
NODE_START_TIMEOUT = 240.0


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Client libraries log every refused connection with a traceback: a node the test
    killed on purpose is not news."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


@contextlib.asynccontextmanager
async def one_test_at_a_time(kind: str) -> AsyncIterator[None]:
    """Hold the cluster for one test across every test session on this machine: two
    sessions each killing a node at once would leave one node of three, and no quorum.
    The lock goes with the process, so a session killed half-way holds it no longer."""
    path = Path(tempfile.gettempdir()) / f"binder-tests-{kind}-cluster.lock"
    with path.open("a") as handle:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _script(*args: str, timeout: float) -> None:
    result = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"scripts/brokers {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )


class Nodes:
    """One local cluster: its nodes' addresses, and stopping and starting them."""

    def __init__(self, kind: str, addresses: dict[int, str]) -> None:
        self.kind = kind
        self.addresses = addresses
        self.killed: set[int] = set()

    def list(self, *order: int) -> str:
        """The nodes' addresses, comma-separated, in ``order`` (default 1, 2, 3)."""
        return ",".join(self.addresses[n] for n in order or sorted(self.addresses))

    async def kill(self, node: int) -> None:
        """SIGKILL one node: no shutdown of any kind, as a crash."""
        self.killed.add(node)
        await asyncio.to_thread(
            _script, "kill", "--cluster", self.kind, "--node", str(node), timeout=60
        )

    async def start(self, node: int) -> None:
        """Start one node again; returns once the whole cluster is usable with it."""
        await asyncio.to_thread(
            _script, "up", "--cluster", self.kind, "--node", str(node),
            timeout=NODE_START_TIMEOUT,
        )  # fmt: skip
        self.killed.discard(node)

    def restore(self) -> None:
        """Start again whatever a test left down (a test that failed half-way)."""
        if self.killed:
            _script("up", "--cluster", self.kind, timeout=NODE_START_TIMEOUT)
            self.killed.clear()


# -- Kafka -------------------------------------------------------------------------------


async def _kafka_brokers(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 10)
        return len(cluster["brokers"])
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


class KafkaCluster(Nodes):
    """The Kafka cluster, and an admin client on it."""

    def __init__(self) -> None:
        super().__init__("kafka", KAFKA_NODES)
        self.bootstrap = self.list()

    async def admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
        await admin.start()
        return admin

    async def replicas(self, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
        """Per partition of ``topic``: (leader, replicas, in-sync replicas); empty while
        the cluster cannot say (a node just killed is still in its metadata)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            found = await asyncio.wait_for(admin.describe_topics([topic]), 5)
        except Exception:  # asked a node that is down: the caller asks again
            return {}
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return {
            p["partition"]: (p["leader"], list(p["replicas"]), list(p["isr"]))
            for p in found[0].get("partitions") or []
        }

    async def delete_topics(self, marks: set[str]) -> None:
        admin = await self.admin()
        try:
            topics = [t for t in await admin.list_topics() if any(m in t for m in marks)]
            if topics:
                await admin.delete_topics(topics)
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def kafka_cluster_session() -> KafkaCluster:
    cluster = KafkaCluster()
    try:
        with quiet("aiokafka"):
            brokers = asyncio.run(_kafka_brokers(cluster.bootstrap))
        if brokers != len(KAFKA_NODES):
            raise ConnectionError(f"{brokers} of {len(KAFKA_NODES)} brokers registered")
    except Exception as exc:  # any failure means the cluster is not usable
        skip_or_fail(
            f"the Kafka cluster at {cluster.bootstrap} is not usable "
            f"({type(exc).__name__}: {exc}); start it with: scripts/brokers up --cluster kafka",
            "an unreachable cluster fails",
        )
    return cluster


@pytest.fixture
async def kafka_cluster(
    kafka_cluster_session: KafkaCluster, request: pytest.FixtureRequest
) -> AsyncIterator[KafkaCluster]:
    """The Kafka cluster for one test; nodes it killed are started again afterwards, and
    topics named with its ``names`` are deleted."""
    cluster = kafka_cluster_session
    async with one_test_at_a_time("kafka"):
        yield cluster
        await asyncio.to_thread(cluster.restore)
    marks = {name.rsplit("-", 1)[-1] for name in request.node.stash.get(_NAMES, [])}
    if marks:
        with quiet("aiokafka"), contextlib.suppress(Exception):
            await cluster.delete_topics(marks)


_NAMES = pytest.StashKey[list[str]]()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``names(prefix)``: a fresh topic, exchange or queue name, cleaned up after the test
    on whichever cluster the test used."""
    namer = make_unique_namer(request.node.nodeid)
    made: list[str] = request.node.stash.setdefault(_NAMES, [])

    def name(prefix: str) -> str:
        made.append(namer(prefix))
        return made[-1]

    return name


# -- RabbitMQ ----------------------------------------------------------------------------


#: pika's BlockingChannel (pika has no type hints).
Channel: TypeAlias = Any
#: A message taken from a queue: its headers and body.
Delivered: TypeAlias = tuple[dict[str, Any], bytes]


def _params(address: str) -> pika.ConnectionParameters:
    host, _, port = address.rpartition(":")
    return pika.ConnectionParameters(
        host, int(port), "/", pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5,
    )  # fmt: skip


class RabbitCluster(Nodes):
    """The RabbitMQ cluster: plain pika and rabbitmqctl on it, off the event loop."""

    def __init__(self) -> None:
        super().__init__("rabbit", RABBIT_NODES)

    def ctl(self, node: int, *args: str) -> str:
        argv = ["rabbitmqctl", "-n", RABBIT_NAMES[node], *args]
        if os.geteuid() != 0:
            argv = ["sudo", "-n", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: {result.stderr.strip()[-1000:]}")
        return result.stdout

    def queues(self, via: int) -> dict[str, dict[str, Any]]:
        """Every queue as node ``via`` sees it: type, leader node, members, ready messages."""
        out = self.ctl(
            via, "list_queues", "name", "type", "leader", "members", "messages_ready",
            "--formatter", "json",
        )  # fmt: skip
        return {q["name"]: q for q in json.loads(out)}

    def leader(self, queue: str, via: int) -> int:
        """Which node (1, 2, 3) leads the quorum queue ``queue``."""
        found = self.queues(via)[queue]
        by_name = {name: n for n, name in RABBIT_NAMES.items()}
        return by_name[str(found["leader"])]

    def _channel_run(self, via: int, work: Callable[[Channel], Any]) -> Any:
        with quiet("pika"):
            connection = pika.BlockingConnection(_params(self.addresses[via]))
            try:
                return work(connection.channel())
            finally:
                with contextlib.suppress(Exception):
                    connection.close()

    def ready(self, queue: str, via: int) -> int:
        """Messages ready in ``queue``, asked of node ``via`` (a passive declare)."""

        def depth(channel: Channel) -> int:
            return int(channel.queue_declare(queue, passive=True).method.message_count)

        return int(self._channel_run(via, depth))

    def drain(self, queue: str, via: int, idle: float = 3.0) -> list[Delivered]:
        """Take every message from ``queue`` (headers and body each), acknowledging them,
        until none arrives for ``idle`` seconds."""

        def take(channel: Channel) -> list[Delivered]:
            channel.basic_qos(prefetch_count=1000)
            out: list[Delivered] = []
            last_tag = acked = 0
            for method, properties, body in channel.consume(queue, inactivity_timeout=idle):
                if method is None:
                    break
                out.append((dict(properties.headers or {}), body))
                last_tag = method.delivery_tag
                if len(out) % 500 == 0:
                    channel.basic_ack(last_tag, multiple=True)
                    acked = last_tag
            if last_tag > acked:
                channel.basic_ack(last_tag, multiple=True)
            channel.cancel()
            return out

        taken: list[Delivered] = self._channel_run(via, take)
        return taken

    def delete(self, marks: set[str]) -> None:
        """Delete the queues and exchanges whose names carry one of ``marks``."""
        via = next(n for n in sorted(self.addresses) if n not in self.killed)

        def listed(kind: str) -> list[str]:
            out = self.ctl(via, f"list_{kind}", "name", "--quiet", "--no-table-headers")
            return [name for name in out.split() if any(m in name for m in marks)]

        queues, exchanges = listed("queues"), listed("exchanges")

        def delete(channel: Channel) -> None:
            for queue in queues:
                channel.queue_delete(queue)
            for exchange in exchanges:
                channel.exchange_delete(exchange)

        self._channel_run(via, delete)


def _rabbit_problem(cluster: RabbitCluster) -> str | None:
    for node, address in cluster.addresses.items():
        try:
            with quiet("pika"):
                pika.BlockingConnection(_params(address)).close()
        except Exception as exc:  # any failure means the node is not usable
            return f"node {node} at {address}: {type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def rabbit_cluster_session() -> RabbitCluster:
    cluster = RabbitCluster()
    problem = _rabbit_problem(cluster)
    if problem is not None:
        skip_or_fail(
            f"the RabbitMQ cluster is not usable ({problem}); start it with: "
            "scripts/brokers up --cluster rabbit",
            "an unreachable cluster fails",
        )
    return cluster


@pytest.fixture
async def rabbit_cluster(
    rabbit_cluster_session: RabbitCluster, request: pytest.FixtureRequest
) -> AsyncIterator[RabbitCluster]:
    """The RabbitMQ cluster for one test; nodes it killed are started again afterwards,
    and the queues and exchanges named with its ``names`` are deleted."""
    cluster = rabbit_cluster_session
    async with one_test_at_a_time("rabbit"):
        yield cluster
        await asyncio.to_thread(cluster.restore)
    marks = {name.rsplit("-", 1)[-1] for name in request.node.stash.get(_NAMES, [])}
    if marks:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(cluster.delete, marks)


_REPORT = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``report(line)``: a line for the summary at the end of the run (what a fault cost:
    messages in and out, missing, duplicates), shown whether the test passed or not."""
    lines = request.config.stash.setdefault(_REPORT, [])

    def add(line: str) -> None:
        lines.append(f"{request.node.name}: {line}")
        print(line)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("faults on the clusters")
        for line in lines:
            terminalreporter.write_line(line)


def write_config(folder: Path, text: str) -> Path:
    """An app's configuration directory holding ``application.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "application.yaml").write_text(text, encoding="utf-8")
    return folder
