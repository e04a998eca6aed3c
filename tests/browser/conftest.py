"""Headless Chromium for the page tests: Debian's ``chromium`` and ``chromium-driver``
(``scripts/browser`` installs them), driven by Selenium. Nothing here downloads a browser.

Without the browser a test is skipped with the command that installs it; with ``CI=true``
it fails instead, so a CI run can never go green by skipping the pages.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import skip_or_fail
from tests.support import REPO, AppProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Seconds a page may take to show what a test waits for.
WAIT = 30.0


def _unavailable(reason: str) -> None:
    skip_or_fail(f"{reason}; install it with scripts/browser", "a browser that cannot start fails")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile, quit after the test."""
    # Selenium must never fetch a driver or a browser of its own.
    os.environ.setdefault("SE_OFFLINE", "true")
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
        raise  # not reached: _unavailable skips or fails
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            _unavailable(f"{path} is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1440,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=subprocess.DEVNULL)
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        _unavailable(f"chromium did not start: {(exc.msg or str(exc)).splitlines()[0]}")
        raise
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Demo:
    """The market demo with both pages, run as a user runs it."""

    process: AppProcess
    token: str
    ops_url: str
    dashboard_url: str

    @property
    def management_url(self) -> str:
        return self.ops_url.removesuffix("/ops/")

    def stop(self) -> int:
        self.process.proc.terminate()
        try:
            return self.process.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the demo did not stop:\n{self.process.output}") from None


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    """Start ``binder run apps.market_dashboard --profile dashboard`` with a management
    token and free ports; returns once both pages are served."""
    started: list[AppProcess] = []

    def start(*args: str) -> Demo:
        token = secrets.token_urlsafe(16)
        process = AppProcess(
            tmp_path / f"demo-{len(started)}.log",
            [
                "run",
                "apps.market_dashboard",
                "--profile",
                "dashboard",
                "--management-port",
                "0",
                "--set",
                "market.dashboard.port=0",
                *args,
            ],
            {"BINDER_MANAGEMENT_TOKEN": token},
        )
        started.append(process)
        urls = _wait_for_urls(process)
        return Demo(process, token, *urls)

    yield start
    for process in started:
        if process.running():
            process.kill()


def _wait_for_urls(process: AppProcess) -> tuple[str, str]:
    import time

    deadline = time.monotonic() + WAIT
    while True:
        output = process.output
        ops = re.search(r"operations page: (http://\S+/ops/)", output)
        board = re.search(r"market dashboard at (http://\S+/)", output)
        if ops and board:
            return ops.group(1), board.group(1)
        if not process.running() or time.monotonic() > deadline:
            raise AssertionError(f"the demo did not serve both pages:\n{output}")
        time.sleep(0.1)


def check_not_blank(png: bytes, name: str, tmp_path: Path) -> None:
    """A screenshot shows a page (many colours, no single colour filling it); it is kept
    in the test's folder and, with ``BINDER_UPDATE_SCREENSHOTS=1``, in docs/images/."""
    from PIL import Image

    image = Image.open(BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24) or []
    pixels = image.width * image.height
    most = max(count for count, _ in colours)
    assert len(colours) > 200, f"{name}: only {len(colours)} colours: is the page blank?"
    assert most < 0.95 * pixels, f"{name}: one colour fills {most / pixels:.0%} of it"
    (tmp_path / name).write_bytes(png)
    if os.environ.get("BINDER_UPDATE_SCREENSHOTS") == "1":
        images = REPO / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(png)


def assert_no_script_errors(driver: Any) -> None:
    """The page's script raised nothing (refused requests are expected, and are the
    network's entries, not the script's)."""
    errors = [e["message"] for e in driver.get_log("browser") if e.get("source") == "javascript"]
    assert not errors, "script errors on the page:\n" + "\n".join(errors)
