"""``python -m bench --metrics`` at a tiny size: the framework runs again with its
management endpoint on, scraped (here every 10 ms, so even a tiny run sees scrapes), and the
cost table and scrape figures are written. Nothing judges the figures themselves."""

from __future__ import annotations

from pathlib import Path

from tests.bench.test_bench import run_bench


def test_the_metrics_switch_measures_both_ways(tmp_path: Path) -> None:
    document = run_bench(
        tmp_path,
        "--binders", "memory", "--sizes", "small", "--scenarios", "process,latency",
        "--no-startup", "--metrics", "--scrape-every", "0.01", "--repeats", "2",
    )  # fmt: skip
    cases = {c["scenario"]: c for c in document["cases"]}
    process = cases["consume-process-produce"]
    assert len(process["metrics_on_runs"]) == 2
    assert process["metrics_on"]["msg_per_s"] > 0
    assert set(process["metrics_cost"]) == {"throughput_percent", "cpu_percent", "best_cpu_percent"}
    assert set(cases["end-to-end latency"]["metrics_cost"]) == {"p50_percent", "p99_percent"}
    assert document["scrapes"]["count"] > 0
    assert 0 < document["scrapes"]["p50_ms"] <= document["scrapes"]["max_ms"]
    text = (tmp_path / "latest.md").read_text()
    assert document["metrics_table"] in text
    assert "| memory | consume-process-produce | small" in document["metrics_table"]


def test_without_the_switch_nothing_about_metrics(tmp_path: Path) -> None:
    document = run_bench(
        tmp_path, "--binders", "memory", "--sizes", "small", "--scenarios", "process",
        "--no-startup",
    )  # fmt: skip
    assert "metrics_table" not in document
    assert "metrics_on" not in document["cases"][0]
