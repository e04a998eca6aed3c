"""``python -m bench [--quick] [--metrics] [--binders memory,kafka,rabbit] [--out DIR]``

Runs every case through the framework and through its hand-written baseline, alternating
(A B A B ...) in one process, prints the table, and writes ``latest.json`` and
``latest.png`` into ``bench/results`` (or ``--out``). With ``--metrics`` the framework also
runs with its management endpoint on, scraped every second, alternating with the runs
without it, and a second table gives what that cost.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bench import report, startup, state
from bench.common import METRICS, Measure, Unavailable, warm_metrics
from bench.workload import FULL, QUICK, SCENARIOS, SIZES, TINY, TITLES, Plan

RESULTS = Path(__file__).resolve().parent / "results"

#: What could not run and why (shown with the skipped binders).
_SKIPPED: dict[str, str] = {}


class Suite(Protocol):
    """One binder's cases: the framework side and the hand-written side."""

    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def versions(self) -> dict[str, str]: ...
    def partition_counts(self, scenario: str, wanted: Sequence[int]) -> list[int]: ...
    def anchors(self, scenario: str) -> tuple[str, ...]: ...
    async def framework(
        self, scenario: str, size: str, n: int, rate: int, partitions: int = 1
    ) -> Measure: ...
    async def baseline(
        self, scenario: str, size: str, n: int, rate: int, partitions: int = 1
    ) -> Measure: ...
    async def anchor(self, name: str, size: str, n: int, partitions: int = 1) -> Measure: ...


def _suite(name: str) -> Suite:
    # Each suite imports its broker client only when chosen.
    if name == "memory":
        from bench.memory import MemorySuite

        return MemorySuite()
    if name == "kafka":
        from bench.kafka import KafkaSuite

        return KafkaSuite()
    if name == "rabbit":
        from bench.rabbit import RabbitSuite

        return RabbitSuite()
    raise SystemExit(f"unknown binder '{name}' (memory, kafka, rabbit)")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run(
    binders: Sequence[str],
    plan: Plan,
    scenarios: Sequence[str],
    sizes: Sequence[str],
    with_startup: bool,
    with_state: bool = True,
    with_anchors: bool = True,
) -> tuple[dict[str, Any], list[report.Case]]:
    """Every case of every reachable binder: the document ``latest.json`` holds, and the
    cases themselves (for the chart)."""
    cases: list[report.Case] = []
    skipped: dict[str, str] = {}
    versions: dict[str, str] = {}
    started = time.monotonic()
    # Other work on the machine moves every figure: what it was, is published with them.
    loads = [os.getloadavg()[0]]
    for name in binders:
        suite = _suite(name)
        try:
            await suite.open()
        except Unavailable as exc:
            skipped[name] = str(exc)
            _say(f"skipping {name}: {exc}")
            continue
        try:
            versions.update(suite.versions())
            for size in sizes:
                for scenario in scenarios:
                    for parts in suite.partition_counts(scenario, plan.partitions):
                        cases.append(await _case(suite, plan, scenario, size, parts, with_anchors))
                        loads.append(os.getloadavg()[0])
        finally:
            await suite.close()
    document: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "plan": {
            "repeats": plan.repeats,
            "latency_rate": plan.rate,
            "latency_seconds": plan.latency_seconds,
        },
        "skipped": {**skipped, **_SKIPPED},
        "cases": [c.as_json() for c in cases],
    }
    if with_state and "kafka" in binders and "kafka" not in skipped:
        _say("measuring store restore from a Kafka changelog")
        try:
            document["state"] = await state.measure(
                plan.state_records,
                keys=min(10_000, plan.state_records // 4),
                repeats=max(3, plan.repeats),
            )
        except Exception as exc:
            document["state_error"] = f"{type(exc).__name__}: {exc}"
            _say(f"store restore: FAILED {exc}")
    if with_startup:
        _say("measuring start-up and idle memory (binder run subprocesses)")
        profiles = [b for b in binders if b != "memory" and b not in skipped]
        document["startup"] = await startup.measure(max(3, plan.repeats), profiles)
    document["machine"] = report.machine(versions)
    document["load"] = {
        "min": round(min(loads), 2),
        "median": round(sorted(loads)[len(loads) // 2], 2),
        "max": round(max(loads), 2),
    }
    document["seconds"] = round(time.monotonic() - started, 1)
    document["table"] = report.table(cases)
    document["limits_table"] = report.limits_table(cases)
    if METRICS.wanted:
        document["metrics_table"] = report.metrics_table(cases)
        took = sorted(METRICS.scrapes)
        document["scrapes"] = {
            "every_s": METRICS.every,
            "count": len(took),
            "p50_ms": took[len(took) // 2] * 1e3 if took else 0.0,
            "max_ms": took[-1] * 1e3 if took else 0.0,
        }
    return document, cases


async def _case(
    suite: Suite, plan: Plan, scenario: str, size: str, parts: int, with_anchors: bool
) -> report.Case:
    """Every repeat of one case: the framework, the hand-written baseline and the limit
    anchors, one after the other; which goes first rotates from repeat to repeat, so none
    is always the one that follows a JVM or a broker's busy spell."""
    name = suite.name
    latency = scenario == "latency"
    n = round(plan.rate * plan.latency_seconds) if latency else plan.count(name, size)
    case = report.Case(name, scenario, size, n, plan.rate if latency else 0, partitions=parts)
    anchors = suite.anchors(scenario) if with_anchors else ()
    if anchors:
        from bench import anchors as java

        try:
            await asyncio.get_running_loop().run_in_executor(None, java.build)
        except java.AnchorUnavailable as exc:
            # Like a broker that does not answer: said, and the rest runs.
            if "limit anchors" not in _SKIPPED:
                _say(f"limit anchors not run: {exc}")
            _SKIPPED["limit anchors"] = str(exc)
            anchors = ()
    sides = ["framework", "baseline", *anchors]
    title = f"{name:6} {TITLES[scenario]:24} {size:6}" + (f" {parts}p" if parts > 1 else "")
    for r in range(plan.repeats):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        runs: dict[str, Measure] = {}
        on: Measure | None = None
        try:
            for side in order:
                if side == "framework":
                    runs[side], on = await _framework(suite, scenario, size, n, plan.rate, r, parts)
                elif side == "baseline":
                    runs[side] = await suite.baseline(scenario, size, n, plan.rate, parts)
                else:
                    runs[side] = await suite.anchor(side, size, n, parts)
        except Exception as exc:
            # A broker restarted by someone else's test, say: the repeat is reported as
            # failed, never silently averaged away.
            case.errors.append(f"repeat {r + 1}: {type(exc).__name__}: {exc}")
            _say(f"{title} #{r + 1}: FAILED {exc}")
            continue
        a, b = runs["framework"], runs["baseline"]
        case.framework.append(a)
        case.baseline.append(b)
        for side in anchors:
            case.anchors.setdefault(side, []).append(runs[side])
        if on is not None:
            case.metrics.append(on)
        detail = (
            f"p50 {report._latency(a)['p50_ms']:.2f} ms vs {report._latency(b)['p50_ms']:.2f} ms"
            if latency
            else f"{a.rate:10,.0f} vs {b.rate:10,.0f} msg/s "
            f"({a.rate / b.rate:.2f}x), CPU {a.cpu_us:.1f} vs {b.cpu_us:.1f} µs/msg"
        )
        _say(f"{title} #{r + 1}: framework vs baseline {detail}")
        for side in anchors:
            m = runs[side]
            _say(f"{'':6} {'':24} {size:6} #{r + 1}: {side:12} {m.rate:10,.0f} msg/s")
        if on is not None:
            _say(f"{'':6} {'':24} {size:6} #{r + 1}: metrics on {_figure(on)}")
    return case


async def _framework(
    suite: Suite, scenario: str, size: str, n: int, rate: int, repeat: int, parts: int = 1
) -> tuple[Measure, Measure | None]:
    """The framework side of one repeat: without metrics, and with ``--metrics`` also with
    them (which of the two goes first alternates between repeats)."""
    if not METRICS.wanted:
        return await suite.framework(scenario, size, n, rate, parts), None
    runs: dict[bool, Measure] = {}
    for on in (False, True) if repeat % 2 == 0 else (True, False):
        METRICS.on = on
        try:
            runs[on] = await suite.framework(scenario, size, n, rate, parts)
        finally:
            METRICS.on = False
    return runs[False], runs[True]


def _figure(m: Measure) -> str:
    if m.latencies:
        figures = report._latency(m)
        return f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms"
    return f"{m.rate:10,.0f} msg/s, CPU {m.cpu_us:.1f} µs/msg"


def _summary(document: dict[str, Any]) -> str:
    m = document["machine"]
    lines = [
        f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, pydantic "
        f"{m['pydantic']}, aiokafka {m['aiokafka']}, pika {m['pika']}"
        + "".join(f", {k} {v}" for k, v in m.items() if k.endswith("broker")),
        f"Medians of {document['plan']['repeats']} repeats, framework, baseline and limit "
        f"anchors taking turns; {document['seconds']} s in all. Load average (1 min) "
        f"sampled after each case: {document['load']['min']:.1f} to "
        f"{document['load']['max']:.1f}, median {document['load']['median']:.1f}.",
        "",
        document["table"],
    ]
    if document.get("limits_table"):
        lines += [
            "",
            "Consume-process-produce against the limit anchors: the loop written with each "
            "broker's official Java client (same guarantees, settings and work per message), "
            "and Kafka's own perf tools (ProducerPerformance, ConsumerPerformance), whose "
            "ceiling is 1 / (1 / produce + 1 / consume). Medians, lowest-highest run in "
            "brackets.",
            "",
            document["limits_table"],
        ]
    if "metrics_table" in document:
        scrapes = document["scrapes"]
        lines += [
            "",
            "Cost of metrics: the framework with its management endpoint on (metrics counted, "
            f"broker figures sampled and /metrics scraped every {scrapes['every_s']:g} s) "
            "against the same runs with it off, alternating; positive is slower. Medians, "
            "and the least CPU each side needed in its best run (other load only adds). A "
            "run shorter than the scrape interval sees no scrape: what a scrape costs the "
            "app's event loop is below.",
            "",
            document["metrics_table"],
            "",
            f"Scrapes: {scrapes['count']}, answered in {scrapes['p50_ms']:.2f} ms median "
            f"({scrapes['max_ms']:.2f} ms at most): about "
            f"{scrapes['p50_ms'] / (10 * scrapes['every_s']):.2f}% of the event loop's time "
            f"at one every {scrapes['every_s']:g} s."
            if scrapes["count"]
            else f"Scrapes: none (every run was shorter than {scrapes['every_s']:g} s).",
        ]
    for name, why in document["skipped"].items():
        lines.append(f"\n{name}: skipped ({why})")
    for case in document["cases"]:
        for error in case.get("errors", []):
            lines.append(f"\nFAILED {case['binder']} {case['scenario']} {case['payload']}: {error}")
    restore = document.get("state")
    if restore:
        lines += [
            "",
            f"Store restore from a Kafka changelog ({restore['records']:,} records, "
            f"{restore['keys']:,} keys, {restore['partitions']} partitions): "
            f"{restore['framework_median']:,.0f} records/s in memory, "
            f"{restore['sqlite_median']:,.0f} records/s into SQLite (a plain aiokafka "
            f"reader keeping the last value per key: {restore['baseline_median']:,.0f} "
            "records/s)",
        ]
    if "state_error" in document:
        lines.append(f"\nFAILED store restore: {document['state_error']}")
    s = document.get("startup")
    if s:
        rss = ", ".join(f"{k} {v:.1f} MiB" for k, v in s["idle_rss_mib"].items())
        imp = s["imports"]
        lines += [
            "",
            f"Start-up to first message (memory, `binder run`): "
            f"{s['startup_to_first_message_s'] * 1000:.0f} ms (median)",
            f"Idle RSS, app with three bindings: {rss}",
            "Broker libraries imported by a memory-only app: "
            + (", ".join(imp["broker_libraries_imported"]) or "none"),
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats")
    parser.add_argument("--tiny", action="store_true", help="smoke-test size (no real figures)")
    parser.add_argument("--binders", default="memory,rabbit,kafka", help="comma-separated")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=", ".join(SCENARIOS))
    parser.add_argument("--sizes", default=",".join(SIZES), help=", ".join(SIZES))
    parser.add_argument("--repeats", type=int, help="repeats of each case (default per mode)")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up/RSS part")
    parser.add_argument(
        "--no-state", action="store_true", help="skip the store-restore part (Kafka)"
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also run the framework with its management endpoint on (scraped every second) "
        "and report the difference against metrics off",
    )
    parser.add_argument(
        "--scrape-every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="with --metrics: seconds between scrapes, and between samples of broker figures",
    )
    parser.add_argument(
        "--partitions",
        help="Kafka consume-process-produce: partition counts, comma-separated "
        "(default 1,4,8; 1 with --tiny)",
    )
    parser.add_argument(
        "--no-anchors",
        action="store_true",
        help="skip the limit anchors (the Java clients' loops and Kafka's perf tools)",
    )
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="instead: 1, 2 and 4 instances (processes) on the three-node Kafka cluster, next "
        "to as many aiokafka loops (scripts/brokers up --cluster kafka); writes scaleout.json",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json/png go")
    args = parser.parse_args(argv)
    if args.scale_out:
        from bench import scaleout

        chosen = scaleout.TINY if args.tiny else scaleout.QUICK if args.quick else scaleout.FULL
        if args.repeats:
            chosen = dataclasses.replace(chosen, repeats=args.repeats)
        return scaleout.main(chosen, args.out)
    plan = TINY if args.tiny else QUICK if args.quick else FULL
    if args.repeats:
        plan = dataclasses.replace(plan, repeats=args.repeats)
    if args.partitions:
        try:
            counts = tuple(int(p) for p in args.partitions.split(",") if p.strip())
        except ValueError:
            parser.error(f"--partitions takes numbers: {args.partitions}")
        if not counts or min(counts) < 1:
            parser.error("--partitions takes counts of 1 or more")
        plan = dataclasses.replace(plan, partitions=counts)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS] + [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown scenario or size: {', '.join(unknown)}")
    binders = [b.strip() for b in args.binders.split(",") if b.strip()]
    METRICS.wanted = args.metrics
    METRICS.every = args.scrape_every
    if args.metrics:
        warm_metrics()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "kafka", "pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    document, cases = asyncio.run(
        run(
            binders,
            plan,
            scenarios,
            sizes,
            not args.no_startup,
            not args.no_state,
            not args.no_anchors,
        )
    )
    text = _summary(document)
    print(text)
    report.write_json(args.out / "latest.json", document)
    (args.out / "latest.md").write_text(text + "\n", encoding="utf-8")
    m = document["machine"]
    title = (
        f"binder benchmark {document['when']}: {m['cores']} cores, Python {m['python']}"
        + "".join(f", {k} {v}" for k, v in m.items() if k.endswith("broker"))
    )
    if not report.chart(args.out / "latest.png", cases, title):
        _say("matplotlib is not installed (pip install -e '.[bench]'): no chart written")
    return 1 if any(c.errors for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
