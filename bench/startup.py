"""Start-up time and idle memory of ``binder run``, measured on real subprocesses.

- start-up: wall clock from spawning ``binder run bench.startup_app`` to the line its
  consumer prints when the first message went supplier -> memory binder -> consumer;
- idle RSS: ``VmRSS`` from ``/proc/<pid>/status`` of an app with three bindings
  (``relay-in-0``, ``relay-out-0``, ``first-in-0``) once it logged that it started;
- lazy imports: ``python -X importtime`` of the start-up run, checked for aiokafka and pika.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.startup_app import MARK

ROOT = Path(__file__).resolve().parent.parent
BINDER = Path(sys.executable).with_name("binder")
DEADLINE = 30.0

_FIRST = """\
stream:
  function: {definition: hello;first}
  poller: {fixed-delay: 1000}
  bindings:
    hello-out-0: {destination: greetings}
    first-in-0: {destination: greetings, group: startup}
"""

_IDLE = """\
stream:
  function: {definition: relay;first}
  bindings:
    relay-in-0: {destination: words, group: idle}
    relay-out-0: {destination: relayed}
    first-in-0: {destination: relayed, group: idle}
"""

_PROFILES = {
    "kafka": "stream:\n  default-binder: kafka\n  binders:\n    kafka: {type: kafka, "
    "environment: {bootstrap-servers: 127.0.0.1:9092}}\n",
    "rabbit": "stream:\n  default-binder: rabbit\n  binders:\n    rabbit: {type: rabbit, "
    "environment: {host: 127.0.0.1, port: 5672}}\n",
}


def _config(body: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-config-"))
    (folder / "application.yaml").write_text(body)
    for name, text in _PROFILES.items():
        (folder / f"application-{name}.yaml").write_text(text)
    return folder


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Stop a process this module started (SIGTERM, then SIGKILL past a deadline)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), DEADLINE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _read_until(stream: asyncio.StreamReader, needle: bytes, what: str) -> list[bytes]:
    """Lines of ``stream`` up to the one containing ``needle``; fails after DEADLINE."""
    lines: list[bytes] = []
    deadline = time.monotonic() + DEADLINE
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {what} within {DEADLINE:.0f} s")
        line = await asyncio.wait_for(stream.readline(), left)
        if not line:
            tail = b"".join(lines[-10:]).decode(errors="replace")
            raise RuntimeError(f"binder run ended before {what}:\n{tail}")
        lines.append(line)
        if needle in line:
            return lines


async def first_message(config: Path) -> float:
    """Seconds from spawning ``binder run`` to the first message processed."""
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(BINDER),
        "run",
        "bench.startup_app",
        "--config",
        str(config),
        "--log-level",
        "WARNING",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        await _read_until(proc.stdout, MARK.encode(), "first message")
        return time.perf_counter() - start
    finally:
        await _stop(proc)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc")


async def idle_rss(config: Path, profile: str | None) -> float:
    """MiB resident of an idle app with three bindings, once it is started."""
    args = ["run", "bench.startup_app", "--config", str(config), "--log-level", "INFO"]
    if profile:
        args += ["--profile", profile]
    proc = await asyncio.create_subprocess_exec(
        str(BINDER),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        await _read_until(proc.stderr, b"started:", "'started' log line")
        return _rss_mib(proc.pid)
    finally:
        await _stop(proc)


async def import_check(config: Path) -> dict[str, Any]:
    """Which broker libraries a memory-only ``binder run`` imports, and its import time."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        str(BINDER),
        "run",
        "bench.startup_app",
        "--config",
        str(config),
        "--run-for",
        "0.3",
        "--log-level",
        "WARNING",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    finally:
        await _stop(proc)
    modules: dict[str, int] = {}
    for line in err.decode(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = [p.strip() for p in line[len("import time:") :].split("|")]
            if parts[1].isdigit():
                modules[parts[2].strip()] = int(parts[1])
    broker_libs = sorted(
        m for m in modules if m.split(".")[0] in ("aiokafka", "pika", "kafka", "redis")
    )
    top = sorted(
        ((m, us) for m, us in modules.items() if "." not in m), key=lambda x: x[1], reverse=True
    )
    return {
        "broker_libraries_imported": broker_libs,
        "lazy_ok": not broker_libs,
        "top_level_imports_ms": {m: round(us / 1000, 1) for m, us in top[:8]},
    }


async def measure(repeats: int, profiles: list[str]) -> dict[str, Any]:
    """Start-up (median of ``repeats``), idle RSS per binder, and the import check."""
    first_cfg, idle_cfg = _config(_FIRST), _config(_IDLE)
    try:
        times = [await first_message(first_cfg) for _ in range(repeats)]
        rss = {"memory": await idle_rss(idle_cfg, None)}
        for profile in profiles:
            rss[profile] = await idle_rss(idle_cfg, profile)
        imports = await import_check(first_cfg)
    finally:
        shutil.rmtree(first_cfg, ignore_errors=True)
        shutil.rmtree(idle_cfg, ignore_errors=True)
    return {
        "startup_to_first_message_s": statistics.median(times),
        "startup_runs_s": times,
        "idle_rss_mib": rss,
        "imports": imports,
        "cpu_count": os.cpu_count(),
    }
