"""The two live pages in a real browser (headless Chromium): the market dashboard on each
binder, and the operations page of the management endpoint with its token."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import WAIT, Demo, assert_no_script_errors, check_not_blank

#: A slump of 10 % forced every 20 ticks on a gentle walk: the alert it raises is told
#: apart from a natural one by its size.
SLUMP = [
    "--set",
    "market.ticker.slump-every=20",
    "--set",
    "market.ticker.slump-drop-percent=10",
    "--set",
    "market.ticker.volatility-percent=0.3",
]


def _wait(driver: Any, what: str, condition: Callable[[Any], Any]) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, f"waiting for {what}")


def _destinations(binder: str, unique_name: Callable[[str], str]) -> list[str]:
    """Own destinations for a broker run, so runs never see each other's ticks."""
    if binder == "memory":
        return []
    ticks, alerts = unique_name("ticks"), unique_name("alerts")
    args = ["--profile", binder]
    for binding in ("ticker-out-0", "price_alerts-in-0", "audit-in-0", "board-in-0"):
        args += ["--set", f"stream.bindings.{binding}.destination={ticks}"]
    for binding in ("price_alerts-out-0", "notify-in-0", "board_alerts-in-0"):
        args += ["--set", f"stream.bindings.{binding}.destination={alerts}"]
    return args


@pytest.mark.parametrize(
    "binder",
    [
        "memory",
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("rabbit", marks=pytest.mark.rabbit),
    ],
)
def test_the_market_page_charts_prices_and_shows_a_slump_as_it_happens(
    binder: str,
    browser: Any,
    demo: Callable[..., Demo],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    app = demo(*SLUMP, *_destinations(binder, unique_name))
    browser.get(app.dashboard_url)

    def prices(driver: Any) -> dict[str, str]:
        return {
            card.get_attribute("data-symbol"): card.find_element(By.CSS_SELECTOR, ".price").text
            for card in driver.find_elements(By.CSS_SELECTOR, "section.symbol")
        }

    first = _wait(browser, "a price for every symbol", lambda d: len(prices(d)) == 3 and prices(d))
    assert set(first) == {"ACME", "GLOBEX", "INITECH"}
    _wait(browser, "prices that change", lambda d: prices(d) != first)
    chart = browser.find_element(By.CSS_SELECTOR, "section.symbol .line")
    assert len(chart.get_attribute("points").split()) > 1

    def forced(driver: Any) -> list[str]:
        texts = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#alerts li")]
        return [t for t in texts if (m := re.search(r"▼ ([0-9.]+)%", t)) and float(m[1]) > 9.5]

    alert = _wait(browser, "the alert of the forced slump", forced)[0]
    assert alert.split()[0] in first
    # The slump is marked on its symbol's chart too.
    _wait(
        browser,
        "a slump marked on a chart",
        lambda d: d.find_elements(By.CSS_SELECTOR, "circle.slump"),
    )
    if binder == "memory":

        def ticks(driver: Any) -> list[int]:
            ranges = driver.find_elements(By.CSS_SELECTOR, "section.symbol .range")
            return [int(m[1]) for r in ranges if (m := re.search(r"(\d+) ticks", r.text))]

        # The charts grow as ticks arrive (and the picture has something to show).
        _wait(browser, "30 ticks charted per symbol", lambda d: min(ticks(d) or [0]) >= 30)
        check_not_blank(browser.get_screenshot_as_png(), "market-dashboard.png", tmp_path)
    assert_no_script_errors(browser)
    assert app.stop() == 0, app.process.output


def _metric(app: Demo, name: str, binding: str) -> float:
    request = urllib.request.Request(
        app.management_url + "/metrics", headers={"Authorization": f"Bearer {app.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    found = re.search(rf'^{name}\{{binding="{binding}"\}} ([0-9.e+]+)$', body, re.MULTILINE)
    assert found, f"{name} of {binding} not in /metrics"
    return float(found[1])


def test_the_operations_page_pauses_and_resumes_a_binding_and_wants_its_token(
    browser: Any, demo: Callable[..., Demo], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    app = demo()
    received = "binder_messages_received_total"

    # Without the token: no data, neither from the feed nor from the endpoint.
    for path in ("/ops/events", "/bindings", "/metrics"):
        browser.get(app.management_url + path)
        assert "bearer token is required" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(app.ops_url)
    form = _wait(browser, "the token form", lambda d: d.find_element(By.ID, "token-form"))
    _wait(browser, "the token form shown", lambda d: form.is_displayed())
    assert browser.find_elements(By.CSS_SELECTOR, "#bindings tbody tr") == []

    # A wrong token: refused, still no data.
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    _wait(browser, "the refusal", lambda d: "refused" in d.find_element(By.ID, "token-error").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#bindings tbody tr") == []

    # The right one: every binding, live.
    browser.find_element(By.ID, "token").send_keys(app.token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    row = '#bindings tr[data-binding="audit-in-0"]'

    def cell(name: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, f"{row} .{name}").text)

    def rate() -> float | None:
        text = cell("in-rate")
        return float(text) if re.fullmatch(r"[0-9.]+", text) else None

    def samples() -> int:
        return int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-samples") or 0)

    _wait(browser, "audit-in-0 taking ticks", lambda d: (rate() or 0) > 0)
    names = {
        r.get_attribute("data-binding")
        for r in browser.find_elements(By.CSS_SELECTOR, "#bindings tbody tr")
    }
    assert {"ticker-out-0", "price_alerts-in-0", "audit-in-0", "board-in-0"} <= names
    assert cell("destination") == "ticks" and cell("group") == "audit"
    assert cell("binder") == "memory" and cell("state") == "RUNNING"
    assert cell("dlq") == "0"

    # Pause: the page's rate falls to zero, and so does the counter in /metrics.
    browser.find_element(By.CSS_SELECTOR, f'{row} button[data-action="PAUSED"]').click()
    _wait(browser, "PAUSED", lambda d: cell("state") == "PAUSED")
    _wait(browser, "a rate of zero", lambda d: rate() == 0)
    held = _metric(app, received, "audit-in-0")
    seen = samples()
    _wait(browser, "two more samples", lambda d: samples() >= seen + 2)
    assert rate() == 0
    assert _metric(app, received, "audit-in-0") == held
    assert _metric(app, received, "price_alerts-in-0") > 0  # the others go on

    # Resume: the rate comes back on the page and the counter moves again.
    browser.find_element(By.CSS_SELECTOR, f'{row} button[data-action="RESUMED"]').click()
    _wait(browser, "RUNNING", lambda d: cell("state") == "RUNNING")
    _wait(browser, "the rate back", lambda d: (rate() or 0) > 0)
    assert _metric(app, received, "audit-in-0") > held
    check_not_blank(browser.get_screenshot_as_png(), "operations-page.png", tmp_path)
    assert_no_script_errors(browser)
    assert app.stop() == 0, app.process.output
