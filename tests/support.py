"""Helpers the broker test suites share: waiting for a condition, a recording handle,
and ``binder`` commands run in a subprocess the way a user runs them."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from binder_core.message import Message
from binder_core.spi import Outcome

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 30.0


async def eventually(
    condition: Callable[[], object | Awaitable[object]], what: str, timeout: float = DEADLINE
) -> None:
    """Wait until ``condition`` is truthy (it may return an awaitable), polling; fail with
    ``what`` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.005
    while True:
        got = condition()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class Collector:
    """A consumer's handle that records what it receives; ``fail`` picks failures and
    ``gate``, when set, holds every batch until it is opened."""

    fail: Callable[[Message[bytes]], Exception | None] = lambda m: None
    messages: list[Message[bytes]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        self.batches.append(len(batch))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        out: list[Outcome] = []
        for m in batch:
            exc = self.fail(m)
            if exc is None:
                self.messages.append(m)
            out.append(exc)
        return out

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]

    async def wait_for(self, count: int, timeout: float = DEADLINE) -> None:
        await eventually(
            lambda: len(self.messages) >= count,
            f"{count} messages (have {len(self.messages)})",
            timeout,
        )


class AppProcess:
    """``binder <args>`` run from the repository root (where apps/ and config/ are), its
    output going to a file so a chatty app can never block on a full pipe."""

    def __init__(self, log: Path, args: Sequence[str], env: dict[str, str] | None) -> None:
        environ = dict(os.environ)
        environ.setdefault("BINDER_LOG_LEVEL", "INFO")
        environ.update(env or {})
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("binder")), *args],
            cwd=REPO,
            env=environ,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as a crash."""
        self.proc.kill()
        self.proc.wait()
        self._out.close()

    async def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for the command to finish by itself; its exit code."""
        return await self.stop(timeout, terminate=False)

    async def stop(self, timeout: float = DEADLINE, terminate: bool = True) -> int:
        """SIGTERM (unless told not to) and wait for the exit code."""
        if terminate and self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"did not stop within {timeout}s:\n{self.output}") from None
        finally:
            self._out.close()
        return code


Apps = Callable[..., AppProcess]


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    """Start ``binder`` commands; any still running after the test is killed."""
    started: list[AppProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> AppProcess:
        proc = AppProcess(tmp_path / f"app-{len(started)}.log", args, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.running():
            proc.kill()
