"""Restart the broker that listens on a local port, whoever started it (tests only).

The fault and conformance tests restart brokers while messages flow. ``scripts/brokers``
restarts only what it started itself, so a machine whose brokers came from another
checkout, or a RabbitMQ the user runs anyway, failed those tests. These helpers find the
broker by its port and restart that process:

* RabbitMQ: ``rabbitmqctl stop_app`` and ``start_app`` on the node listening there (as
  root, the node keeps running and every connection drops), then wait for a queue declare.
* Kafka: the process listening on the bootstrap port (found through ``/proc/net/tcp*`` and
  the sockets in ``/proc/<pid>/fd``) gets SIGTERM and is started again with the very same
  command line, environment, working directory, user and output file; a pid file in that
  directory that named it is updated, so ``scripts/brokers`` still knows it. Then wait for
  a topic create and delete. The stop and the start run in a process of their own
  (``python -m tests.restart kafka PORT``), so a test that is cancelled or killed half-way
  never leaves the broker stopped for everyone else.

Only brokers addressed on the loopback interface are touched: anything else is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.brokers import broker_address, skip_or_fail

#: Seconds a broker may take to stop, and to answer again after it started.
STOP_TIMEOUT = 120.0
READY_TIMEOUT = 180.0

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
_REPO = Path(__file__).resolve().parents[1]
#: Processes this module started (kept so they are reaped when they stop again).
_children: dict[int, subprocess.Popen[bytes]] = {}


class RestartError(Exception):
    """The broker could not be restarted (or does not answer afterwards)."""


# -- finding the process -------------------------------------------------------------------


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _local_address(hex_address: str) -> tuple[str, int]:
    """(ip, port) of a ``/proc/net/tcp[6]`` address: the IP in host byte order, 32 bits at
    a time."""
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), int(port_hex, 16)
    return str(ip), int(port_hex, 16)


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` on a loopback or wildcard address."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != _LISTEN:
                    continue
                ip, local_port = _local_address(fields[1])
                usable = _loopback(ip) or ipaddress.ip_address(ip).is_unspecified
                if local_port == port and usable:
                    inodes.add(fields[9])
    return inodes


def listening_pid(port: int) -> int:
    """The pid of the process listening on ``port`` on 127.0.0.1 (or every interface)."""
    inodes = _listening_inodes(port)
    if not inodes:
        raise RestartError(f"nothing listens on 127.0.0.1:{port}")
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return int(proc.name)
    raise RestartError(f"cannot see which process listens on 127.0.0.1:{port} (not root?)")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


@dataclass(frozen=True)
class Launch:
    """How a running process was started: enough to start it again the same way."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    output: str | None  # the regular file its standard output goes to, if any

    @classmethod
    def of(cls, pid: int) -> Launch:
        proc = Path(f"/proc/{pid}")
        try:
            argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0")[:-1]]
            env = dict(
                item.decode("utf-8", "surrogateescape").partition("=")[::2]
                for item in (proc / "environ").read_bytes().split(b"\0")
                if b"=" in item
            )
            cwd = os.readlink(proc / "cwd")
            stat = os.stat(proc)
            output = os.readlink(proc / "fd" / "1")
        except OSError as exc:
            raise RestartError(f"cannot read how pid {pid} was started: {exc}") from exc
        if not argv:
            raise RestartError(f"pid {pid} has no command line (a kernel thread, or gone)")
        is_file = output.startswith("/") and Path(output).is_file()
        return cls(argv, env, cwd, stat.st_uid, stat.st_gid, output if is_file else None)

    def start(self) -> int:
        """Start the process again; its pid."""
        switch = os.geteuid() == 0 and self.uid != 0  # as the user it ran as, not root
        if not switch and os.geteuid() != self.uid:
            raise RestartError(f"the broker runs as uid {self.uid}; cannot start it as that user")
        with open(self.output or os.devnull, "ab") as out:
            proc: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the test session, as it did before
                user=self.uid if switch else None,
                group=self.gid if switch else None,
            )
        _children[proc.pid] = proc
        return int(proc.pid)


def _stop(pid: int, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    child = _children.pop(pid, None)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(0.2)
        else:
            time.sleep(0.2)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        if child is not None:
            child.wait(30)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if alive(pid):
        raise RestartError(f"pid {pid} does not stop")


def _update_pid_files(directory: str, old: int, new: int) -> None:
    """A pid file in the broker's directory that named the old process names the new one
    (``scripts/brokers`` keeps Kafka's there)."""
    for pid_file in Path(directory).glob("*.pid"):
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(old):
                pid_file.write_text(f"{new}\n")


# -- Kafka -----------------------------------------------------------------------------------


def _first_server(bootstrap: str) -> tuple[str, int]:
    server = bootstrap.split(",")[0].strip().split("://")[-1]
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


async def restart_kafka(bootstrap: str | None = None) -> None:
    """Restart the Kafka broker listening at ``bootstrap`` (the tests' broker by default)
    and return once it creates and deletes a topic again."""
    bootstrap = bootstrap or broker_address("kafka")
    host, port = _first_server(bootstrap)
    if not _loopback(host):
        raise RestartError(f"Kafka at {bootstrap} is not on this machine's loopback")
    listening_pid(port)  # fail here, clearly, when nothing is there
    # Detached: if this test is cancelled or killed, the restart still completes.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.restart", "kafka", str(port),
        cwd=str(_REPO), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise RestartError(f"restarting Kafka failed: {text}")
    await _kafka_ready(bootstrap, int(text.split()[-1]))


def _restart_process(port: int) -> int:
    """Stop the process listening on ``port`` and start it again as it was; the new pid."""
    pid = listening_pid(port)
    launch = Launch.of(pid)
    _stop(pid, STOP_TIMEOUT)
    new = launch.start()
    _update_pid_files(launch.cwd, pid, new)
    return new


async def _kafka_ready(bootstrap: str, pid: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    last: BaseException | None = None
    while loop.time() < deadline:
        if not alive(pid):
            raise RestartError(f"Kafka (pid {pid}) exited while starting again")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 10)
            topic = f"restart-probe-{uuid.uuid4().hex[:12]}"
            await asyncio.wait_for(admin.create_topics([NewTopic(topic, 1, 1)]), 10)
            await asyncio.wait_for(admin.delete_topics([topic]), 10)
            return
        except Exception as exc:  # not up yet: any failure means "try again shortly"
            last = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(0.5)
    raise RestartError(f"Kafka does not answer {READY_TIMEOUT:.0f}s after its restart: {last}")


# -- RabbitMQ --------------------------------------------------------------------------------


def _as_root(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return argv
    if shutil.which("sudo"):
        return ["sudo", "-n", *argv]
    return argv


def _rabbit_ctl(pid: int) -> list[str]:
    """``rabbitmqctl`` aimed at the node of that process (its RABBITMQ_NODENAME, if set)."""
    node = Launch.of(pid).env.get("RABBITMQ_NODENAME")
    return ["rabbitmqctl", *(["-n", node] if node else [])]


async def restart_rabbit(url: str | None = None) -> None:
    """``stop_app`` and ``start_app`` the RabbitMQ node listening at ``url`` (the tests'
    broker by default): the node stays up, every connection drops. Returns once a queue
    can be declared again."""
    url = url or broker_address("rabbit")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    if not _loopback(host):
        raise RestartError(f"RabbitMQ at {host}:{port} is not on this machine's loopback")
    ctl = _rabbit_ctl(listening_pid(port))
    for action in ("stop_app", "start_app"):
        result = await asyncio.to_thread(
            subprocess.run,
            _as_root([*ctl, action]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RestartError(f"rabbitmqctl {action} failed: {result.stderr.strip()}")
    await asyncio.to_thread(_rabbit_ready, url)


def _rabbit_ready(url: str) -> None:
    import logging

    import pika

    deadline = time.monotonic() + READY_TIMEOUT
    last: BaseException | None = None
    logger = logging.getLogger("pika")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)  # pika logs every refused attempt
    try:
        while time.monotonic() < deadline:
            try:
                params = pika.URLParameters(url)
                params.connection_attempts = 1
                params.socket_timeout = 5
                connection = pika.BlockingConnection(params)
                try:
                    connection.channel().queue_declare("", exclusive=True)
                finally:
                    connection.close()
                return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.5)
    finally:
        logger.setLevel(level)
    raise RestartError(f"RabbitMQ does not answer {READY_TIMEOUT:.0f}s after start_app: {last}")


# -- for tests -------------------------------------------------------------------------------


def require_restartable(name: str) -> None:
    """Skip (fail with ``CI=true``) a test that restarts a broker not on this machine's
    loopback: such a broker is never touched."""
    address = broker_address(name)
    host = urlsplit(address).hostname if "://" in address else _first_server(address)[0]
    if host is None or not _loopback(host):
        skip_or_fail(
            f"the {name} broker is not on 127.0.0.1, so the tests do not restart it",
            "fault tests need a broker they can restart",
        )


def main(argv: list[str]) -> int:
    """``python -m tests.restart kafka PORT``: restart the process listening on PORT and
    print its new pid (what ``restart_kafka`` runs, detached from the test)."""
    if len(argv) != 2 or argv[0] != "kafka" or not argv[1].isdigit():
        print("usage: python -m tests.restart kafka PORT", file=sys.stderr)
        return 2
    port = int(argv[1])
    # One restart of a port at a time, across test sessions: a second one waits, then
    # restarts the broker the first one started.
    lock_path = Path(tempfile.gettempdir()) / f"binder-tests-restart-{port}.lock"
    try:
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            print(_restart_process(port))
    except (RestartError, OSError) as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
