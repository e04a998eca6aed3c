"""The scale-out benchmark runs end to end at a tiny size on the Kafka cluster, so it cannot
rot unnoticed. Nothing here judges the figures (a loaded test machine says nothing about
speed): every instance count ran on both sides, moved records and measured CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.conftest import KafkaCluster
from tests.support import REPO

pytestmark = pytest.mark.cluster


def test_the_scale_out_benchmark_runs_on_the_cluster(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--scale-out", "--tiny", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    document = json.loads((tmp_path / "scaleout.json").read_text())
    assert document["table"] in proc.stdout
    assert document["table"] in (tmp_path / "scaleout.md").read_text()
    assert not document["failures"]
    runs = document["runs"]
    assert sorted((r["side"], r["instances"]) for r in runs) == [
        ("aiokafka", 1), ("aiokafka", 2), ("framework", 1), ("framework", 2),
    ]  # fmt: skip
    for run in runs:
        assert run["messages"] > 0 and run["rate"] > 0, run
        assert len(run["instance_cpu"]) == run["instances"], run
        assert run["broker_cpu"] > 0 and 0 < run["machine_busy"] <= 1, run
    assert [row["instances"] for row in document["rows"]] == [1, 2]
