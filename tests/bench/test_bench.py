"""The benchmark runs end to end at a tiny size, so it cannot rot unnoticed.

Nothing here judges the figures (a loaded test machine says nothing about speed); it
checks that every case ran on both sides, moved the messages it should, and that the
results, the chart and the start-up figures were written.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]


def run_bench(out: Path, *args: str, timeout: float = 120) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    document: dict[str, Any] = json.loads((out / "latest.json").read_text())
    assert document["table"] in proc.stdout
    assert document["table"] in (out / "latest.md").read_text()
    return document


def check_cases(document: dict[str, Any], binder: str, sizes: int) -> None:
    cases = [c for c in document["cases"] if c["binder"] == binder]
    assert len(cases) == 4 * sizes, [c["scenario"] for c in cases]
    for case in cases:
        if case["scenario"] == "end-to-end latency":
            for side in ("framework", "baseline"):
                assert 0 < case[side]["p50_ms"] <= case[side]["p99_ms"] <= case[side]["max_ms"]
        else:
            assert case["framework"]["msg_per_s"] > 0
            assert case["baseline"]["msg_per_s"] > 0
            assert case["ratio"] > 0
            assert len(case["framework_runs"]) == len(case["baseline_runs"]) == 1


def test_memory_benchmark_and_startup(tmp_path: Path) -> None:
    document = run_bench(tmp_path, "--binders", "memory")
    check_cases(document, "memory", sizes=2)
    assert document["skipped"] == {}
    startup = document["startup"]
    assert 0 < startup["startup_to_first_message_s"] < 10
    assert 10 < startup["idle_rss_mib"]["memory"] < 500
    # A memory-only app must not import broker client libraries.
    assert startup["imports"]["broker_libraries_imported"] == []
    assert document["machine"]["cores"] >= 1
    png = tmp_path / "latest.png"
    if importlib.util.find_spec("matplotlib") is None:  # the optional 'bench' extra
        assert not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.kafka
def test_kafka_benchmark(tmp_path: Path, kafka_bootstrap: str) -> None:
    document = run_bench(
        tmp_path, "--binders", "kafka", "--sizes", "small", "--no-startup", "--no-anchors"
    )
    check_cases(document, "kafka", sizes=1)
    # The store-restore part restored every record, on both sides.
    restore = document["state"]
    assert restore["records"] == 2_000 and restore["keys"] == 500
    assert len(restore["framework_records_per_s"]) == len(restore["baseline_records_per_s"]) >= 3
    assert restore["framework_median"] > 0 and restore["baseline_median"] > 0
    assert len(restore["sqlite_records_per_s"]) >= 3 and restore["sqlite_median"] > 0
    assert "Store restore from a Kafka changelog" in (tmp_path / "latest.md").read_text()


@pytest.mark.rabbit
def test_rabbit_benchmark(tmp_path: Path, rabbit_url: str) -> None:
    document = run_bench(
        tmp_path, "--binders", "rabbit", "--sizes", "small", "--no-startup", "--no-anchors"
    )
    check_cases(document, "rabbit", sizes=1)


def _java_tools() -> bool:
    return all(shutil.which(tool) for tool in ("java", "javac", "mvn"))


@pytest.mark.kafka
@pytest.mark.rabbit
def test_limit_anchors(tmp_path: Path, kafka_bootstrap: str, rabbit_url: str) -> None:
    """The Java clients' loops and Kafka's perf tools run beside the framework, each
    checked to have moved exactly its messages (and Kafka's in per-partition order)."""
    if not _java_tools():
        skip_or_fail(
            "no JDK or Maven here (scripts/brokers installs them)",
            "the limit anchors need a JDK and Maven",
        )
    document = run_bench(
        tmp_path,
        "--binders", "kafka,rabbit", "--scenarios", "process", "--sizes", "small",
        "--partitions", "1,4", "--no-startup", "--no-state",
        timeout=900,  # the first build fetches the clients with Maven
    )  # fmt: skip
    assert "limit anchors" not in document["skipped"], document["skipped"]
    cases = {(c["binder"], c.get("partitions", 1)): c for c in document["cases"]}
    assert set(cases) == {("kafka", 1), ("kafka", 4), ("rabbit", 1)}
    for (binder, _), case in cases.items():
        assert case["errors"] == []
        names = {"java", "perf-produce", "perf-consume"} if binder == "kafka" else {"java"}
        assert set(case["anchors"]) == names
        for figures in case["anchors"].values():
            assert figures["msg_per_s"] > 0 and len(figures["runs"]) == 1
        if binder == "kafka":
            assert case["ceiling_msg_per_s"] > 0
    assert "| kafka | small (101 B) | 4 |" in document["limits_table"]
