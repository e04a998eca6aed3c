"""The session ends with a count of the guide's code blocks: how many ran, and how many
were left to dedicated tests, skipped on purpose (with why) or are output."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.docs.test_snippets import SKIPPED, summary

    if not any(
        "tests/docs/" in str(getattr(r, "nodeid", ""))
        for reports in terminalreporter.stats.values()
        for r in reports
    ):
        return
    counts = summary()
    terminalreporter.write_sep("-", "code blocks of README.md and docs/")
    terminalreporter.write_line(
        ", ".join(f"{n} {what}" for what, n in counts.items() if what != "blocks")
        + f" (of {counts['blocks']})"
    )
    for block in SKIPPED:
        terminalreporter.write_line(f"  skipped on purpose: {block.where}: {block.check.skip}")
