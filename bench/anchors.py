"""Limit anchors: what the brokers' own Java clients do on the same machine, same brokers,
same payloads, in the same benchmark run as the framework.

- ``KafkaLoop`` and ``RabbitLoop`` (``bench/java``) are consume-process-produce loops
  written with the official clients (``kafka-clients``, ``amqp-client``), with the same
  guarantees as the Python sides (Kafka: poll, send, wait for every acknowledgement, commit;
  RabbitMQ: pipelined publisher confirms, an input acknowledged once its output is
  confirmed) and the same work per message (decode the JSON document, shout its text,
  encode it; Jackson on the Java side). Each is a JVM started per run; it times itself from
  the first processed message to the N-th, as the Python probes do, and prints the figure.
- Kafka's own ``ProducerPerformance`` and ``ConsumerPerformance`` (``kafka-tools``) give a
  second reference: how fast the broker takes records of this size from a Java producer
  and hands them to a Java consumer. A consume-process-produce loop through one broker
  cannot beat ``1 / (1 / produce + 1 / consume)`` of them (the *ceiling*).

The Maven project is built on first use, into ``bench/java/target`` with its own Maven
repository in ``bench/java/.m2`` (both ignored by git); later runs build nothing unless a
source changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Measure

HERE = Path(__file__).resolve().parent / "java"
CLASSES = HERE / "target" / "classes"
LIBS = HERE / "target" / "libs"
MAVEN_REPO = HERE / ".m2"
#: Written once a build succeeded: its time stamp says which sources it has.
BUILT = HERE / "target" / ".built"

#: The longest one JVM run may take (a hung run is a failure, never a hang).
RUN_TIMEOUT = 300.0


class AnchorUnavailable(Exception):
    """The Java anchors cannot run here (no JDK or Maven, or the build failed)."""


def _sources() -> list[Path]:
    return [HERE / "pom.xml", *(p for p in (HERE / "src").rglob("*") if p.is_file())]


def is_built() -> bool:
    """Whether the classes and their libraries are newer than every source."""
    if not BUILT.is_file() or not LIBS.is_dir():
        return False
    built = BUILT.stat().st_mtime
    return all(p.stat().st_mtime <= built for p in _sources())


def build() -> None:
    """Build the Java side unless it is current (Maven's output in ``target/maven.log``).
    The first build downloads the clients and the tools into ``bench/java/.m2``."""
    if is_built():
        return
    missing = [tool for tool in ("java", "javac", "mvn") if shutil.which(tool) is None]
    if missing:
        raise AnchorUnavailable(
            f"{', '.join(missing)} not found (install a JDK 17 and Maven: apt-get install "
            "openjdk-17-jdk-headless maven)"
        )
    log = HERE / "target" / "maven.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the Java anchors with Maven ({HERE}, log: {log})", file=sys.stderr, flush=True)
    started = time.monotonic()
    argv = [
        "mvn", "-B", "--no-transfer-progress",
        f"-Dmaven.repo.local={MAVEN_REPO}",
        "-f", str(HERE / "pom.xml"),
        "package", "-DskipTests",
    ]  # fmt: skip
    with log.open("w") as out:
        result = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=900
        )
    if result.returncode != 0 or not LIBS.is_dir():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise AnchorUnavailable(f"Maven could not build bench/java (log: {log}):\n{tail}")
    BUILT.write_text("")
    print(f"built the Java anchors in {time.monotonic() - started:.0f} s", file=sys.stderr)


def _classpath() -> str:
    return f"{CLASSES}:{LIBS}/*"


async def java(main: str, *args: str, timeout: float = RUN_TIMEOUT) -> list[str]:
    """Run ``main`` of the anchors in a JVM of its own; its output lines, once it exited
    with 0 (anything else raises, with the end of what it printed)."""
    proc = await asyncio.create_subprocess_exec(
        "java", "-Xmx512m", "-cp", _classpath(), main, *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    lines = out.decode(errors="replace").splitlines()
    if proc.returncode != 0:
        tail = "\n".join(line for line in lines[-15:] if not line.startswith("SLF4J"))
        raise RuntimeError(f"{main} exited with {proc.returncode}:\n{tail}")
    return lines


def result(lines: list[str]) -> Measure:
    """The ``RESULT {...}`` line a loop printed, as a measure."""
    for line in lines:
        if line.startswith("RESULT "):
            data = json.loads(line[len("RESULT ") :])
            return Measure(data["seconds"], data["messages"], cpu=data["cpu_seconds"])
    raise RuntimeError("the Java loop printed no result:\n" + "\n".join(lines[-15:]))


#: Messages a Java loop processes, untimed, before its timed run: the JIT compiles the
#: client's and Jackson's hot paths on them (without, a run of 60,000 records spent over
#: three times the CPU per record, most of it compiling), as a long-running service is warm.
WARMUP = 20_000


async def kafka_loop(
    bootstrap: str, source: str, out: str, group: str, n: int, warmup_out: str, warmup: int
) -> Measure:
    """The official client's consume-process-produce loop over ``n`` records, after
    ``warmup`` records of the same input (another group) went to ``warmup_out``."""
    return result(
        await java(
            "bench.KafkaLoop", bootstrap, source, out, group, str(n), warmup_out, str(warmup)
        )
    )


async def rabbit_loop(
    uri: str,
    queue: str,
    exchange: str,
    prefetch: int,
    n: int,
    warmup_queue: str,
    warmup_exchange: str,
    warmup: int,
) -> Measure:
    """The official client's consume-process-produce loop over ``n`` messages, after
    ``warmup`` messages of ``warmup_queue`` went to ``warmup_exchange``."""
    return result(
        await java(
            "bench.RabbitLoop",
            uri,
            queue,
            exchange,
            str(prefetch),
            str(n),
            warmup_queue,
            warmup_exchange,
            str(warmup),
        )
    )


_PRODUCED = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec")


async def producer_performance(bootstrap: str, topic: str, n: int, size: int) -> Measure:
    """Kafka's ``ProducerPerformance``: ``n`` records of ``size`` bytes into ``topic``
    with the binder's producer settings (acks=all, idempotence, 16 KiB batches, no
    linger), as fast as the broker takes them."""
    lines = await java(
        "org.apache.kafka.tools.ProducerPerformance",
        "--bootstrap-server", bootstrap, "--topic", topic,
        "--num-records", str(n), "--record-size", str(size), "--throughput", "-1",
        "--command-property", "acks=all", "enable.idempotence=true", "batch.size=16384",
        "linger.ms=0",
    )  # fmt: skip
    for line in reversed(lines):
        found = _PRODUCED.match(line)
        if found:
            sent, rate = int(found.group(1)), float(found.group(2))
            if sent != n:
                raise AssertionError(f"ProducerPerformance sent {sent} records, expected {n}")
            return Measure(sent / rate, sent)
    raise RuntimeError("ProducerPerformance printed no summary:\n" + "\n".join(lines[-10:]))


async def consumer_performance(bootstrap: str, topic: str, n: int) -> Measure:
    """Kafka's ``ConsumerPerformance``: ``n`` records read from ``topic`` by a fresh
    group; the fetch rate (without the group join, which the other sides do not time)."""
    lines = await java(
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server", bootstrap, "--topic", topic, "--num-records", str(n),
        "--timeout", "60000",
    )  # fmt: skip
    header = next((i for i, line in enumerate(lines) if line.startswith("start.time")), None)
    if header is None or header + 1 >= len(lines):
        raise RuntimeError("ConsumerPerformance printed no figures:\n" + "\n".join(lines[-10:]))
    names = [name.strip() for name in lines[header].split(",")]
    values = [value.strip() for value in lines[header + 1].split(",")]
    row = dict(zip(names, values, strict=False))
    read, rate = int(row["data.consumed.in.nMsg"]), float(row["fetch.nMsg.sec"])
    if read != n:
        raise AssertionError(f"ConsumerPerformance read {read} records, expected {n}")
    return Measure(read / rate, read)


def ceiling(produce: float, consume: float) -> float:
    """The most a consume-process-produce loop can move through one broker that takes
    ``produce`` records/s from a producer and gives ``consume`` records/s to a consumer:
    each record is read once and written once."""
    if produce <= 0 or consume <= 0:
        return 0.0
    return 1 / (1 / produce + 1 / consume)
