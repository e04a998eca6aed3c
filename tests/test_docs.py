"""The README tells the truth: its reference matches the models, CI runs its command."""

from __future__ import annotations

from pathlib import Path

from binder_core.reference import END, START, render

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_configuration_reference_matches_the_settings_models() -> None:
    block = README.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render().strip(), (
        "README reference is stale: run .venv/bin/python -m binder_core.reference --write"
    )


def test_ci_runs_the_readme_test_command() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()
