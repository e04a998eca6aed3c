"""Fixtures of the operating tests: the raw Kafka kit, apps run as ``binder run`` in a
subprocess with their management endpoint on, and the ``binder`` command against them."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.kafka.conftest import (
    Kit,  # noqa: F401  (for the tests' annotations)
    kit,  # noqa: F401  (the kit fixture)
)
from tests.support import (
    AppProcess,
    apps,  # noqa: F401  (the apps fixture)
    eventually,
)

BINDER = str(Path(sys.executable).with_name("binder"))

_ENDPOINT = re.compile(r"management endpoint at (http://\S+)")


def write_config(folder: Path, tree: Mapping[str, Any]) -> Path:
    """``folder/application.yaml`` holding ``tree``; returns ``folder`` (for ``--config``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "application.yaml").write_text(yaml.safe_dump(dict(tree)), encoding="utf-8")
    return folder


async def management_url(app: AppProcess, timeout: float = 60.0) -> str:
    """The endpoint a ``binder run --management-port 0`` reports in its log (the system
    chose the port); fails at once when the app exits instead."""
    found: list[str] = []

    def reported() -> bool:
        match = _ENDPOINT.search(app.output)
        if match:
            found.append(match.group(1))
            return True
        assert app.running(), f"the app exited:\n{app.output}"
        return False

    await eventually(reported, "the management endpoint in the app's log", timeout)
    return found[0]


async def binder(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``binder ARGS`` as a user types it (off the event loop): exit code and output."""
    import os

    return await asyncio.to_thread(
        subprocess.run,
        [BINDER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
