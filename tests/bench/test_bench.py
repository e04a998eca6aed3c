"""The benchmark runs end to end at a tiny size, so it cannot rot unnoticed.

Nothing here judges the figures (a loaded test machine says nothing about speed); it
checks that every case ran on both sides, moved the messages it should, and that the
results, the chart and the start-up figures were written.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(out: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
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
    document = run_bench(tmp_path, "--binders", "kafka", "--sizes", "small", "--no-startup")
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
    document = run_bench(tmp_path, "--binders", "rabbit", "--sizes", "small", "--no-startup")
    check_cases(document, "rabbit", sizes=1)
