"""Scale-out on the three-node Kafka cluster: 1, 2 and 4 instances (processes) of one
consume-process-produce app in one consumer group over 8 partitions, next to the same
number of hand-written aiokafka loops (``bench/scaleout_loop.py``).

``python -m bench --scale-out [--quick | --tiny] [--repeats N] [--out DIR]``

The input topic (8 partitions, 3 replicas, min.insync.replicas 2 from the cluster's
defaults) is filled once with small documents; each run starts its instances in a fresh
group that reads it from the beginning, writing to a new topic of 8 partitions. Once the
group is stable with every instance and a warm-up has passed, a window of steady state is
measured: records that reached the output topic per second, the CPU time each instance
process spent (``/proc/<pid>/stat``), what the three broker JVMs spent, and how busy the
whole machine was (``/proc/stat``, other people's work included). Framework and baseline
runs alternate, per instance count.

Start the cluster first: ``scripts/brokers up --cluster kafka``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import report
from bench.common import Unavailable
from bench.scaleout_loop import HEADERS
from bench.workload import encoded

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get(
    "BENCH_CLUSTER_BOOTSTRAP", "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
)
BINDER = str(Path(sys.executable).with_name("binder"))
PARTITIONS = 8
SIDES = ("framework", "aiokafka")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Plan:
    """How much to run: input records, instance counts, repeats, seconds of warm-up and of
    the measured window."""

    records: int
    instances: tuple[int, ...]
    repeats: int
    warmup: float
    window: float


FULL = Plan(1_500_000, (1, 2, 4), 3, 2.0, 6.0)
QUICK = Plan(800_000, (1, 2, 4), 1, 2.0, 5.0)
TINY = Plan(300_000, (1, 2), 1, 0.0, 0.5)


@dataclass
class Run:
    """One measured window: output records per second, each instance's CPU (a fraction of
    one core), the brokers' CPU (cores), how busy the machine was (0-1 of all cores)."""

    side: str
    instances: int
    seconds: float
    messages: int
    instance_cpu: list[float]
    broker_cpu: float
    machine_busy: float
    logs: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def other_cpu(self) -> float:
        """Cores the rest of the machine used meanwhile (other people's work included)."""
        cores = os.cpu_count() or 1
        return max(0.0, self.machine_busy * cores - sum(self.instance_cpu) - self.broker_cpu)

    @property
    def cpu_us(self) -> float:
        """Instance CPU microseconds per message, all instances together."""
        return sum(self.instance_cpu) * self.seconds / self.messages * 1e6 if self.messages else 0

    @property
    def broker_us(self) -> float:
        """Broker CPU microseconds per message, the three nodes together."""
        return self.broker_cpu * self.seconds / self.messages * 1e6 if self.messages else 0

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("logs")
        out |= {
            "rate": round(self.rate, 1),
            "cpu_us_per_message": round(self.cpu_us, 2),
            "broker_us_per_message": round(self.broker_us, 2),
            "other_cpu": round(self.other_cpu, 2),
        }
        return out


# -- what the processes spent ---------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def broker_pids() -> list[int]:
    """The cluster's Kafka JVMs, from the pid files scripts/brokers keeps."""
    pids = []
    for pidfile in sorted((ROOT / ".brokers" / "kafka-cluster").glob("node*/kafka.pid")):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if Path(f"/proc/{pid}").exists():
                pids.append(pid)
    return pids


@dataclass
class Snapshot:
    when: float
    outputs: int
    instances: list[float]
    brokers: float
    machine: tuple[int, int]


# -- the cluster ----------------------------------------------------------------------------


class Bench:
    """The input topic, and one run after another of ``k`` instances of a side."""

    def __init__(self, plan: Plan, folder: Path) -> None:
        self.plan = plan
        self.folder = folder
        self.tag = uuid.uuid4().hex[:8]
        self.source = f"bench-scale-in-{self.tag}"
        self.topics: list[str] = [self.source]
        self.admin: Any = None
        self.reader: Any = None

    async def open(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10000)
        try:
            await asyncio.wait_for(admin.start(), 15)
            brokers = (await admin.describe_cluster())["brokers"]
        except Exception as exc:
            with contextlib.suppress(Exception):
                await admin.close()
            raise Unavailable(
                f"the Kafka cluster at {BOOTSTRAP} does not answer ({type(exc).__name__}); "
                "start it with scripts/brokers up --cluster kafka"
            ) from None
        if len(brokers) < 3:
            await admin.close()
            raise Unavailable(f"the Kafka cluster at {BOOTSTRAP} has {len(brokers)} brokers, not 3")
        self.admin = admin
        self.reader = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
        await self.reader.start()

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.stop()
        if self.admin is not None:
            with contextlib.suppress(Exception):
                ours = [t for t in await self.admin.list_topics() if self.tag in t]
                if ours:
                    await self.admin.delete_topics(ours)
            await self.admin.close()

    async def create(self, topic: str) -> None:
        await self.admin.create_topics([NewTopic(topic, PARTITIONS, 3)])
        for _ in range(200):
            found = await self.admin.describe_topics([topic])
            parts = found[0].get("partitions") or []
            if len(parts) == PARTITIONS and all(p["leader"] >= 0 for p in parts):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no leaders for {topic}")

    async def fill(self) -> float:
        """Write the input once: small documents, round-robin over the partitions. Returns
        the seconds it took."""
        await self.create(self.source)
        # Filling is not measured: big batches, so it takes seconds, not minutes.
        producer = AIOKafkaProducer(
            bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=20, max_batch_size=512 * 1024
        )
        await producer.start()
        started = time.perf_counter()
        try:
            docs = encoded("small")
            pending: list[Any] = []
            for i in range(self.plan.records):
                pending.append(
                    await producer.send(
                        self.source, docs[i % len(docs)], headers=HEADERS, partition=i % PARTITIONS
                    )
                )
                if len(pending) >= 20_000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return time.perf_counter() - started

    async def outputs(self, topic: str) -> int:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await self.reader.end_offsets(tps)
        return sum(int(v) for v in ends.values())

    async def group(self, group: str) -> tuple[str, int]:
        try:
            found = (await self.admin.describe_consumer_groups([group]))[0].to_object()
        except Exception:  # the coordinator not known yet
            return "unknown", 0
        entry = found["groups"][0]
        return str(entry["state"]), len(entry["members"])

    def config(self, group: str, target: str) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="scale-", dir=self.folder))
        (folder / "application.yaml").write_text(
            f"""\
stream:
  function: {{definition: uppercase}}
  default-binder: kafka
  binders:
    kafka: {{type: kafka, environment: {{bootstrap-servers: "{BOOTSTRAP}"}}}}
  bindings:
    uppercase-in-0: {{destination: {self.source}, group: {group}}}
    uppercase-out-0: {{destination: {target}}}
""",
            encoding="utf-8",
        )
        return folder

    async def start(
        self, side: str, k: int, group: str, target: str
    ) -> list[tuple[asyncio.subprocess.Process, Path]]:
        if side == "framework":
            config = self.config(group, target)
            argv = [BINDER, "run", "bench.app", "--config", str(config), "--log-level", "WARNING"]
        else:
            argv = [
                sys.executable,
                "-m",
                "bench.scaleout_loop",
                BOOTSTRAP,
                self.source,
                target,
                group,
            ]
        started = []
        for i in range(k):
            log = self.folder / f"{side}-{k}-{i}-{group}.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT
                )
            started.append((proc, log))
        return started

    async def snapshot(self, target: str, pids: Sequence[int], brokers: Sequence[int]) -> Snapshot:
        return Snapshot(
            time.perf_counter(),
            await self.outputs(target),
            [cpu_seconds(p) for p in pids],
            sum(cpu_seconds(p) for p in brokers),
            machine_ticks(),
        )

    async def run(self, side: str, k: int) -> Run:
        group = f"bench-scale-{side}-{k}-{uuid.uuid4().hex[:8]}-{self.tag}"
        target = f"bench-scale-out-{uuid.uuid4().hex[:8]}-{self.tag}"
        await self.create(target)
        procs = await self.start(side, k, group, target)
        try:
            deadline = time.monotonic() + 120
            while await self.group(group) != ("Stable", k):
                for proc, log in procs:
                    if proc.returncode is not None:
                        raise RuntimeError(f"an instance exited: {log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"group {group} not stable with {k} members")
                await asyncio.sleep(0.1)
            await asyncio.sleep(self.plan.warmup)
            pids, brokers = [p.pid for p, _ in procs], broker_pids()
            first = await self.snapshot(target, pids, brokers)
            await asyncio.sleep(self.plan.window)
            last = await self.snapshot(target, pids, brokers)
            state = await self.group(group)
            for _ in range(20):  # "unknown": the coordinator did not answer this once
                if state[0] != "unknown":
                    break
                await asyncio.sleep(0.1)
                state = await self.group(group)
            if state != ("Stable", k):
                raise RuntimeError(f"the group changed during the window: {state}")
            if last.outputs >= self.plan.records:
                raise RuntimeError("the input ran out during the window: raise the records")
        finally:
            for proc, _ in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            with contextlib.suppress(Exception):
                dead = [t for t in await self.admin.list_topics() if group in t]
                await self.admin.delete_topics([target, *dead])
        seconds = last.when - first.when
        busy = (last.machine[0] - first.machine[0]) / max(1, last.machine[1] - first.machine[1])
        return Run(
            side,
            k,
            seconds,
            last.outputs - first.outputs,
            [(b - a) / seconds for a, b in zip(first.instances, last.instances, strict=True)],
            (last.brokers - first.brokers) / seconds,
            busy,
            [str(log) for _, log in procs],
        )


# -- the whole measurement ------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarise(runs: Sequence[Run], instances: Sequence[int]) -> list[dict[str, Any]]:
    """Per instance count and side: medians over the repeats."""
    rows = []
    base = {s: _median([r.rate for r in runs if r.side == s and r.instances == 1]) for s in SIDES}
    for k in instances:
        row: dict[str, Any] = {"instances": k}
        for side in SIDES:
            mine = [r for r in runs if r.side == side and r.instances == k]
            rate = _median([r.rate for r in mine])
            row[side] = {
                "rate": round(rate, 1),
                "speedup": round(rate / base[side], 2) if base[side] else None,
                "cpu_per_instance": round(_median([_median(r.instance_cpu) for r in mine]), 3),
                "cpu_us_per_message": round(_median([r.cpu_us for r in mine]), 1),
                "broker_cpu": round(_median([r.broker_cpu for r in mine]), 2),
                "broker_us_per_message": round(_median([r.broker_us for r in mine]), 1),
                "machine_busy": round(_median([r.machine_busy for r in mine]), 3),
                "other_cpu": round(_median([r.other_cpu for r in mine]), 2),
                "repeats": len(mine),
            }
        rows.append(row)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| instances | framework msg/s | aiokafka msg/s | framework / aiokafka | speed-up "
        "from 1 (framework, aiokafka) | CPU per instance, % of a core (framework, aiokafka) | "
        "instance CPU µs/msg (framework, aiokafka) | brokers' CPU µs/msg | brokers, cores | "
        "other load, cores | machine busy |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for row in rows:
        f, b = row["framework"], row["aiokafka"]
        ratio = f["rate"] / b["rate"] if b["rate"] else 0.0

        def pair(
            key: str, fmt: str, scale: float = 1.0, f: dict[str, Any] = f, b: dict[str, Any] = b
        ) -> str:
            return f"{f[key] * scale:{fmt}}, {b[key] * scale:{fmt}}"

        lines.append(
            f"| {row['instances']} | {f['rate']:,.0f} | {b['rate']:,.0f} | {ratio:.2f} | "
            f"{f['speedup'] or 0:.2f}x, {b['speedup'] or 0:.2f}x | "
            f"{pair('cpu_per_instance', '.0f', 100)} | {pair('cpu_us_per_message', '.0f')} | "
            f"{pair('broker_us_per_message', '.0f')} | {pair('broker_cpu', '.2f')} | "
            f"{pair('other_cpu', '.2f')} | {pair('machine_busy', '.0%')} |"
        )
    return "\n".join(lines)


async def measure(plan: Plan) -> dict[str, Any]:
    """Every run of ``plan``; the document scaleout.json holds."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        bench = Bench(plan, Path(tmp))
        await bench.open()
        runs: list[Run] = []
        failures: list[str] = []
        filled = 0.0
        try:
            _say(f"filling {bench.source}: {plan.records:,} records, {PARTITIONS} partitions")
            filled = await bench.fill()
            _say(f"filled in {filled:.1f} s ({plan.records / filled:,.0f} records/s)")
            for repeat in range(plan.repeats):
                for k in plan.instances:
                    sides = SIDES if (repeat + k) % 2 == 0 else SIDES[::-1]
                    for side in sides:
                        try:
                            run = await bench.run(side, k)
                        except Exception as exc:
                            failures.append(f"{side} x{k} #{repeat + 1}: {exc}")
                            _say(f"{side:9} x{k} #{repeat + 1}: FAILED {exc}")
                            continue
                        runs.append(run)
                        cpu = ", ".join(f"{c * 100:.0f}%" for c in run.instance_cpu)
                        _say(
                            f"{side:9} x{k} #{repeat + 1}: {run.rate:9,.0f} msg/s, instances "
                            f"CPU {cpu} ({run.cpu_us:.0f} µs/msg), brokers "
                            f"{run.broker_cpu:.2f} cores, others {run.other_cpu:.2f} cores, "
                            f"machine {run.machine_busy * 100:.0f}%"
                        )
        finally:
            await bench.close()
    rows = summarise(runs, plan.instances)
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "plan": asdict(plan),
        "bootstrap": BOOTSTRAP,
        "partitions": PARTITIONS,
        "fill_records_per_s": round(plan.records / filled, 1) if filled else None,
        "runs": [r.as_json() for r in runs],
        "rows": rows,
        "table": table(rows),
        "failures": failures,
        "machine": report.machine({"kafka cluster": "3 KRaft nodes, replication factor 3"}),
        "seconds": round(time.monotonic() - started, 1),
    }


def summary(document: dict[str, Any]) -> str:
    m = document["machine"]
    plan = document["plan"]
    lines = [
        f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, aiokafka "
        f"{m['aiokafka']}; Kafka cluster of 3 KRaft nodes on the same machine",
        f"Consume-process-produce over {document['partitions']} partitions, replication "
        f"factor 3, acks=all; medians of {plan['repeats']} repeats of a {plan['window']:g} s "
        f"window of steady state; {document['seconds']} s in all.",
        "",
        document["table"],
    ]
    lines += [f"\nFAILED {failure}" for failure in document["failures"]]
    return "\n".join(lines)


def main(plan: Plan, out: Path) -> int:
    """``python -m bench --scale-out``: measure, print the table, write scaleout.json/.md."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        document = asyncio.run(measure(plan))
    except Unavailable as exc:
        print(f"scale-out: {exc}", file=sys.stderr)
        return 1
    text = summary(document)
    print(text)
    report.write_json(out / "scaleout.json", document)
    (out / "scaleout.md").write_text(text + "\n", encoding="utf-8")
    return 1 if document["failures"] or not document["runs"] else 0
