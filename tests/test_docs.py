"""The guide tells the truth: its reference pages match the models, writing them never
drops a plugin's page, the README's links lead somewhere, and CI runs the README's test
command. (Every code block is run by tests/docs/.)"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from binder_core import reference
from binder_core.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = ROOT / "docs" / "reference"

#: Binder types whose reference pages this repository publishes (the Redis plugin's too).
PUBLISHED = {"configuration.md", "memory.md", "kafka.md", "rabbit.md", "redis.md"}


@pytest.mark.parametrize("page", sorted(reference.pages()))
def test_every_reference_page_that_can_be_generated_matches_the_models(page: str) -> None:
    written = PAGES / page
    fix = "run .venv/bin/python -m binder_core.reference --write"
    assert written.is_file(), f"{written} is missing: {fix}"
    assert written.read_text(encoding="utf-8") == reference.pages()[page], (
        f"{written} is stale: {fix}"
    )


def test_every_published_reference_page_exists() -> None:
    assert {p.name for p in PAGES.glob("*.md")} >= PUBLISHED
    installed = set(reference.pages())
    assert {"configuration.md", "memory.md", "kafka.md", "rabbit.md"} <= installed


def test_writing_without_a_plugin_keeps_its_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if the Redis plugin were not installed: its page stays, untouched."""
    shutil.copytree(PAGES, tmp_path / "reference")
    before = (tmp_path / "reference" / "redis.md").read_text(encoding="utf-8")
    registry = load_plugins()

    class WithoutRedis:
        binder_types = {k: v for k, v in registry.binder_types.items() if k != "redis"}

    def load_without_redis() -> Any:
        return WithoutRedis()

    monkeypatch.setattr(reference, "load_plugins", load_without_redis)
    assert "redis.md" not in reference.pages()
    assert "redis.md" not in reference.write(tmp_path / "reference")
    assert (tmp_path / "reference" / "redis.md").read_text(encoding="utf-8") == before


def test_a_consumer_and_producer_share_one_table_for_their_common_keys() -> None:
    rabbit = (PAGES / "rabbit.md").read_text(encoding="utf-8")
    for key in ("`exchange-type`", "`auto-bind-dlq`", "`dlq-ttl`"):
        assert rabbit.count(f"| {key} |") == 1, key
    assert rabbit.count("| `prefetch` |") == 1 and rabbit.count("| `routing-key` |") == 1
    kafka = (PAGES / "kafka.md").read_text(encoding="utf-8")
    assert "| `transaction.producer.*` |" in kafka
    assert "| `transaction.producer.buffer-size` |" not in kafka


def test_writing_to_a_markdown_file_is_refused(tmp_path: Path) -> None:
    assert reference.main(["--write", str(tmp_path / "README.md")]) == 2
    assert not (tmp_path / "README.md").exists()


def test_the_readme_stays_a_front_door() -> None:
    assert len(README.splitlines()) <= 300


def test_readme_links_lead_to_files() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_ci_runs_the_readme_test_command() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()
