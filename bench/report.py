"""Results: medians, ratios, the markdown table, the JSON file and the chart."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Measure
from bench.workload import TITLES, payload_bytes


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _latency(m: Measure) -> dict[str, float]:
    return {
        "p50_ms": _percentile(m.latencies, 0.50) * 1e3,
        "p99_ms": _percentile(m.latencies, 0.99) * 1e3,
        "max_ms": max(m.latencies, default=0.0) * 1e3,
    }


@dataclass
class Case:
    """One binder x scenario x payload size, with every repeat of both sides."""

    binder: str
    scenario: str
    size: str
    messages: int
    rate: int = 0  # latency runs: messages per second offered
    framework: list[Measure] = field(default_factory=list)
    baseline: list[Measure] = field(default_factory=list)
    #: ``--metrics``: the framework again, with its management endpoint on and scraped.
    metrics: list[Measure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Partitions of the input and output topics (Kafka consume-process-produce).
    partitions: int = 1
    #: The limit anchors' runs, by name (``bench.anchors``): ``java`` (the official
    #: client's loop), ``perf-produce`` and ``perf-consume`` (Kafka's perf tools).
    anchors: dict[str, list[Measure]] = field(default_factory=dict)

    def anchor_median(self, name: str) -> float | None:
        """Median messages per second of one anchor."""
        runs = self.anchors.get(name)
        return statistics.median(m.rate for m in runs) if runs else None

    @property
    def ceiling(self) -> float | None:
        """Kafka: the consume-process-produce ceiling the perf tools put on the broker."""
        produce, consume = self.anchor_median("perf-produce"), self.anchor_median("perf-consume")
        if produce is None or consume is None:
            return None
        return 1 / (1 / produce + 1 / consume)

    @property
    def is_latency(self) -> bool:
        return self.scenario == "latency"

    def medians(self, side: str) -> dict[str, float]:
        """Median over repeats of the throughput, or of each latency figure."""
        runs = {"framework": self.framework, "baseline": self.baseline, "metrics": self.metrics}[
            side
        ]
        if not runs:
            return {}
        if self.is_latency:
            figures = [_latency(m) for m in runs]
            return {k: statistics.median(f[k] for f in figures) for k in figures[0]}
        return {
            "msg_per_s": statistics.median(m.rate for m in runs),
            "cpu_us_per_msg": statistics.median(m.cpu_us for m in runs),
        }

    @property
    def ratio(self) -> float | None:
        """Framework / baseline throughput, medians of the same run."""
        fw, base = self.medians("framework"), self.medians("baseline")
        if self.is_latency or not fw or not base or not base["msg_per_s"]:
            return None
        return fw["msg_per_s"] / base["msg_per_s"]

    @property
    def cpu_ratio(self) -> float | None:
        """Baseline / framework CPU time per message of this process: above 1 when the
        framework spends less. Less disturbed than wall clock by other load on the machine."""
        fw, base = self.medians("framework"), self.medians("baseline")
        if self.is_latency or not fw or not base or not fw["cpu_us_per_msg"]:
            return None
        return base["cpu_us_per_msg"] / fw["cpu_us_per_msg"]

    @property
    def metrics_cost(self) -> dict[str, float] | None:
        """What turning metrics on cost, in percent of the framework with them off: less
        throughput and more CPU per message (throughput cases), or more p50 / p99 latency."""
        off, on = self.medians("framework"), self.medians("metrics")
        if not off or not on:
            return None

        def more(key: str) -> float:
            return (on[key] / off[key] - 1) * 100 if off[key] else 0.0

        if self.is_latency:
            return {"p50_percent": more("p50_ms"), "p99_percent": more("p99_ms")}
        # The best run of each side too: other load on the machine only ever adds CPU time,
        # so the least each side needed is the steadiest figure when runs scatter.
        best_off = min(m.cpu_us for m in self.framework)
        best_on = min(m.cpu_us for m in self.metrics)
        return {
            "throughput_percent": (1 - on["msg_per_s"] / off["msg_per_s"]) * 100,
            "cpu_percent": more("cpu_us_per_msg"),
            "best_cpu_percent": (best_on / best_off - 1) * 100 if best_off else 0.0,
        }

    @property
    def overhead_us(self) -> float | None:
        """What the framework adds per message (negative: it saves), in microseconds."""
        fw, base = self.medians("framework"), self.medians("baseline")
        if self.is_latency or not fw or not base or not fw["msg_per_s"] or not base["msg_per_s"]:
            return None
        return (1 / fw["msg_per_s"] - 1 / base["msg_per_s"]) * 1e6

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "binder": self.binder,
            "scenario": TITLES[self.scenario],
            "payload": self.size,
            "payload_bytes": payload_bytes(self.size),
            "messages": self.messages,
            "framework": self.medians("framework"),
            "baseline": self.medians("baseline"),
            "errors": self.errors,
        }
        if self.is_latency:
            out["offered_rate"] = self.rate
            out["framework_runs"] = [_latency(m) for m in self.framework]
            out["baseline_runs"] = [_latency(m) for m in self.baseline]
        else:
            out["framework_runs"] = [round(m.rate) for m in self.framework]
            out["baseline_runs"] = [round(m.rate) for m in self.baseline]
            out["ratio"] = self.ratio
            out["ratios_per_repeat"] = [
                a.rate / b.rate for a, b in zip(self.framework, self.baseline, strict=False)
            ]
            out["overhead_us_per_message"] = self.overhead_us
            out["cpu_ratio"] = self.cpu_ratio
        if self.partitions != 1:
            out["partitions"] = self.partitions
        if self.anchors:
            fw = self.medians("framework").get("msg_per_s")
            out["anchors"] = {
                name: {
                    "msg_per_s": self.anchor_median(name),
                    "runs": [round(m.rate) for m in runs],
                    "cpu_us_per_msg": statistics.median(m.cpu_us for m in runs),
                    "framework_ratio": fw / self.anchor_median(name)  # type: ignore[operator]
                    if fw
                    else None,
                }
                for name, runs in self.anchors.items()
                if runs
            }
            if self.ceiling is not None:
                out["ceiling_msg_per_s"] = self.ceiling
                out["framework_to_ceiling"] = fw / self.ceiling if fw else None
        if self.metrics:
            out["metrics_on"] = self.medians("metrics")
            out["metrics_on_runs"] = (
                [_latency(m) for m in self.metrics]
                if self.is_latency
                else [round(m.rate) for m in self.metrics]
            )
            out["metrics_cost"] = self.metrics_cost
        return out


def machine(versions: dict[str, str]) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import aiokafka
    import pika
    import pydantic

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "pydantic": pydantic.VERSION,
        "aiokafka": aiokafka.__version__,
        "pika": pika.__version__,
        **versions,
    }


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _spread(runs: Sequence[Measure]) -> str:
    """The median, and the lowest and highest run, of messages per second."""
    if not runs:
        return "-"
    rates = sorted(m.rate for m in runs)
    median = statistics.median(rates)
    if len(rates) == 1:
        return f"{median:,.0f}"
    return f"{median:,.0f} ({rates[0]:,.0f}-{rates[-1]:,.0f})"


def _payload(c: Case) -> str:
    return f"{c.size} ({payload_bytes(c.size)} B)"


def limits_table(cases: Sequence[Case]) -> str:
    """Consume-process-produce against the limit anchors: the framework, the Python
    client's loop, the Java client's loop (medians, lowest-highest run), our ratio to the
    Java loop, and on Kafka the perf tools' produce and consume rates and the ceiling they
    put on a loop through the broker."""
    rows = [c for c in cases if c.anchors]
    if not rows:
        return ""
    lines = [
        "| binder | payload | partitions | framework msg/s | Python client msg/s "
        "| Java client msg/s | framework / Java | perf tools produce / consume msg/s "
        "| ceiling msg/s | framework / ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        fw = c.medians("framework").get("msg_per_s")
        java = c.anchor_median("java")
        ceiling = c.ceiling
        produce, consume = c.anchor_median("perf-produce"), c.anchor_median("perf-consume")
        tools = "-" if produce is None else f"{_rate(produce)} / {_rate(consume)}"
        lines.append(
            f"| {c.binder} | {_payload(c)} | {c.partitions} | {_spread(c.framework)} "
            f"| {_spread(c.baseline)} | {_spread(c.anchors.get('java', []))} "
            f"| {'-' if not fw or not java else f'{fw / java:.2f}x'} | {tools} "
            f"| {_rate(ceiling)} | {'-' if not fw or not ceiling else f'{fw / ceiling:.2f}x'} |"
        )
    return "\n".join(lines)


def table(cases: Sequence[Case]) -> str:
    """The throughput and latency tables in markdown."""
    lines = [
        "| binder | scenario | payload | partitions | messages | framework msg/s "
        "| baseline msg/s | ratio | overhead µs/msg | CPU µs/msg framework / baseline "
        "| CPU ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        if c.is_latency:
            continue
        fw, base = c.medians("framework"), c.medians("baseline")
        ratio, over = c.ratio, c.overhead_us
        lines.append(
            f"| {c.binder} | {TITLES[c.scenario]} | {_payload(c)} | {c.partitions} "
            f"| {c.messages:,} | {_rate(fw.get('msg_per_s'))} | {_rate(base.get('msg_per_s'))} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'-' if over is None else f'{over:+.1f}'} "
            f"| {fw.get('cpu_us_per_msg', 0):.1f} / {base.get('cpu_us_per_msg', 0):.1f} "
            f"| {'-' if c.cpu_ratio is None else f'{c.cpu_ratio:.2f}x'} |"
        )
    latency = [c for c in cases if c.is_latency]
    if latency:
        lines += [
            "",
            "| binder | payload | rate msg/s | framework p50 / p99 / max ms "
            "| baseline p50 / p99 / max ms |",
            "|---|---|---:|---:|---:|",
        ]
        for c in latency:
            fw, base = c.medians("framework"), c.medians("baseline")

            def fmt(d: dict[str, float]) -> str:
                if not d:
                    return "-"
                return f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} / {d['max_ms']:.2f}"

            lines.append(
                f"| {c.binder} | {c.size} ({payload_bytes(c.size)} B) | {c.rate:,} "
                f"| {fmt(fw)} | {fmt(base)} |"
            )
    return "\n".join(lines)


def metrics_table(cases: Sequence[Case]) -> str:
    """``--metrics``: each case with metrics off and on, and what turning them on cost
    (positive: slower, more CPU per message; negative: within the noise the other way)."""
    lines = [
        "| binder | scenario | payload | metrics off msg/s | metrics on msg/s | throughput cost "
        "| CPU µs/msg off / on | CPU cost | CPU cost, best runs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        cost = c.metrics_cost
        if c.is_latency or cost is None:
            continue
        off, on = c.medians("framework"), c.medians("metrics")
        lines.append(
            f"| {c.binder} | {TITLES[c.scenario]} | {c.size} ({payload_bytes(c.size)} B) "
            f"| {_rate(off['msg_per_s'])} | {_rate(on['msg_per_s'])} "
            f"| {cost['throughput_percent']:+.1f}% "
            f"| {off['cpu_us_per_msg']:.1f} / {on['cpu_us_per_msg']:.1f} "
            f"| {cost['cpu_percent']:+.1f}% | {cost['best_cpu_percent']:+.1f}% |"
        )
    latency = [c for c in cases if c.is_latency and c.metrics_cost is not None]
    if latency:
        lines += [
            "",
            "| binder | payload | p50 ms off / on | p99 ms off / on |",
            "|---|---|---:|---:|",
        ]
        for c in latency:
            off, on = c.medians("framework"), c.medians("metrics")
            lines.append(
                f"| {c.binder} | {c.size} ({payload_bytes(c.size)} B) "
                f"| {off['p50_ms']:.2f} / {on['p50_ms']:.2f} "
                f"| {off['p99_ms']:.2f} / {on['p99_ms']:.2f} |"
            )
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def chart(path: Path, cases: Sequence[Case], title: str) -> bool:
    """Ratios (framework / baseline) per case as bars, latency medians beside them.
    Returns False when matplotlib is not installed (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    throughput = [c for c in cases if not c.is_latency and c.ratio is not None]
    latency = [c for c in cases if c.is_latency and c.framework and c.baseline]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(15, max(4.0, 0.32 * len(throughput) + 1.5)), width_ratios=[3, 2]
    )
    labels = [
        f"{c.binder} {TITLES[c.scenario]} {c.size}"
        + (f" {c.partitions}p" if c.partitions > 1 else "")
        for c in throughput
    ]
    ratios = [c.ratio or 0.0 for c in throughput]
    colours = [
        "tab:green" if r >= (1.0 if c.binder == "memory" else 0.9) else "tab:red"
        for r, c in zip(ratios, throughput, strict=True)
    ]
    y = range(len(throughput))
    left.barh(list(y), ratios, color=colours)
    left.set_yticks(list(y), labels, fontsize=8)
    left.invert_yaxis()
    left.axvline(1.0, color="black", linewidth=0.8)
    left.axvline(0.9, color="grey", linestyle="--", linewidth=0.8)
    left.set_xlabel(
        "throughput, framework / hand-written baseline (median); green: at least the "
        "consume-process-produce target (memory 1.0x, brokers 0.9x)"
    )
    for i, r in enumerate(ratios):
        left.text(r, i, f" {r:.2f}", va="center", fontsize=7)
    if latency:
        names = [f"{c.binder} {c.size}" for c in latency]
        fw = [c.medians("framework")["p99_ms"] for c in latency]
        base = [c.medians("baseline")["p99_ms"] for c in latency]
        fw50 = [c.medians("framework")["p50_ms"] for c in latency]
        base50 = [c.medians("baseline")["p50_ms"] for c in latency]
        ys = range(len(latency))
        h = 0.2
        right.barh([i - 1.5 * h for i in ys], fw50, h, label="framework p50")
        right.barh([i - 0.5 * h for i in ys], base50, h, label="baseline p50")
        right.barh([i + 0.5 * h for i in ys], fw, h, label="framework p99")
        right.barh([i + 1.5 * h for i in ys], base, h, label="baseline p99")
        right.set_yticks(list(ys), names, fontsize=8)
        right.invert_yaxis()
        right.set_xscale("log")
        right.set_xlabel(f"end-to-end latency, ms (log), {latency[0].rate} msg/s offered")
        right.legend(fontsize=7)
    else:
        right.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return True
