"""``python -m bench.hotpath``: the framework side alone, and the summary of its profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.hotpath import summarize

ROOT = Path(__file__).resolve().parents[2]

# Three samples of the loop, one of filling the input (left out), in py-spy's raw format.
PROFILE = """\
main (x.py:1);_run_once (asyncio/base_events.py:1922);argument (binder_core/arguments.py:93) 6
main (x.py:1);_run_once (asyncio/base_events.py:1922);_each (binder_core/pipeline.py:308) 2
main (x.py:1);_sender_routine (aiokafka/producer/sender.py:167) 2
main (x.py:1);KafkaSuite._input (bench/kafka.py:177);send (aiokafka/producer/producer.py:9) 40
"""


def test_summary_groups_the_loops_samples_by_owner(tmp_path: Path) -> None:
    profile = tmp_path / "prof.txt"
    profile.write_text(PROFILE)
    text = summarize(profile)
    assert text.startswith("10 samples in the loop (40 outside it, left out)")
    assert " 60.0%  pydantic\n" in text
    assert " 20.0%  framework\n" in text
    assert " 20.0%  aiokafka: producer/sender.py" in text


def test_framework_only_runs_on_memory() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.hotpath", "memory", "--runs", "2", "--messages", "500"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("memory small: ") for line in lines)
