"""Documented commands run as a reader runs them: from the repository root, one terminal
each, watched line by line so a test waits for what the reader would wait for."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.docs.blocks import ROOT

#: The reader's ``.venv/bin``: the interpreter running the tests.
VENV_BIN = Path(sys.executable).parent


def argv(command: str) -> list[str]:
    """A documented command as arguments, ``.venv/bin/`` meaning this interpreter's."""
    words = shlex.split(command, comments=True)
    if words and words[0].startswith(".venv/bin/"):
        words[0] = str(VENV_BIN / words[0].removeprefix(".venv/bin/"))
    return words


def environ() -> dict[str, str]:
    """A reader's environment: none of the test run's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM__", "MARKET__"))}
    env.pop("BINDER_PROFILES", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Terminal:
    """One long-running command, its standard output and error read as they come."""

    def __init__(self, words: list[str], cwd: Path = ROOT) -> None:
        self.words = words
        self.proc = subprocess.Popen(
            words, cwd=cwd, env=environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1,
        )  # fmt: skip
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.seen_out: list[str] = []
        self.seen_err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=_pump, args=(stream, sink), daemon=True).start()

    def _wait(self, lines: queue.Queue[str], seen: list[str], text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"`{shlex.join(self.words)}` did not print {text!r} within {timeout:.0f}s; "
                    f"it printed:\n{''.join(self.seen_out)}\n--- stderr ---\n"
                    f"{''.join(self.seen_err)[-4000:]}"
                )
            try:
                line = lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and lines.empty():
                    left = 0.0
                    deadline = time.monotonic()
                continue
            seen.append(line)
            if text in line:
                return line

    def stdout_line(self, text: str, timeout: float = 60) -> str:
        return self._wait(self.out, self.seen_out, text, timeout)

    def stderr_line(self, text: str, timeout: float = 60) -> str:
        return self._wait(self.err, self.seen_err, text, timeout)

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, as the reader stops it; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"`{shlex.join(self.words)}` did not stop on Ctrl-C") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pump(stream: object, sink: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sink.put(line)


def run(
    words: list[str], cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One command that finishes by itself."""
    return subprocess.run(
        words, cwd=cwd, env=environ(), capture_output=True, text=True, timeout=timeout
    )
