"""An app's own settings (``app_settings``): every source applies, in any key spelling, and
a bad or unknown key stops start-up with its key path and source."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from binder_core import app_config
from binder_core.app_config import app_settings
from binder_core.config_sources import load
from binder_core.errors import ConfigError


class Alerts(BaseModel):
    slump_percent: float = 5.0
    symbols: list[str] = []


class Threshold(BaseModel):
    max_drop: float = 1.0


class Market(BaseModel):
    alerts: Alerts = Alerts()
    per_symbol: dict[str, Threshold] = {}


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    app_config.use(None)


def use(
    tmp_path: Path,
    yaml: str | None,
    overrides: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> None:
    if yaml is not None:
        (tmp_path / "application.yaml").write_text(yaml)
    layered, problems = load(tmp_path, (), overrides, env or {})
    assert not problems
    app_config.use(layered)


def test_kebab_case_keys_in_a_file_reach_snake_case_fields(tmp_path: Path) -> None:
    use(tmp_path, "market:\n  alerts:\n    slump-percent: 2.5\n")  # the README's snippet
    assert app_settings("market.alerts", Alerts).slump_percent == 2.5


@pytest.mark.parametrize(
    "override", ["market.alerts.slump-percent=1", "market.alerts.slump_percent=1"]
)
def test_set_in_either_spelling_wins_over_the_file(tmp_path: Path, override: str) -> None:
    use(tmp_path, "market:\n  alerts:\n    slump-percent: 3.0\n", (override,))
    assert app_settings("market.alerts", Alerts).slump_percent == 1.0


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    use(
        tmp_path,
        "market:\n  alerts:\n    slump-percent: 3.0\n",
        env={"MARKET__ALERTS__SLUMP_PERCENT": "1.5"},
    )
    assert app_settings("market.alerts", Alerts).slump_percent == 1.5


def test_environment_applies_when_no_file_names_the_section(tmp_path: Path) -> None:
    use(tmp_path, "stream: {}\n", env={"MARKET__ALERTS__SLUMP_PERCENT": "1.5"})
    assert app_settings("market.alerts", Alerts).slump_percent == 1.5
    use(
        tmp_path,
        "stream: {}\n",
        ("market.alerts.symbols=[ACME]",),
        env={"MARKET__ALERTS__SLUMP_PERCENT": "1.5"},
    )
    alerts = app_settings("market.alerts", Alerts)
    assert (alerts.slump_percent, alerts.symbols) == (1.5, ["ACME"])


def test_nested_models_and_maps_of_models(tmp_path: Path) -> None:
    use(
        tmp_path,
        "market:\n  alerts: {Slump-Percent: 4}\n  per-symbol:\n    ACME: {max-drop: 2}\n",
    )
    market = app_settings("market", Market)
    assert market.alerts.slump_percent == 4
    assert market.per_symbol["ACME"].max_drop == 2


def test_a_bad_value_names_its_key_path_and_source(tmp_path: Path) -> None:
    use(
        tmp_path,
        "market:\n  alerts:\n    slump-percent: 3.0\n",
        ("market.alerts.slump-percent=abc",),
    )
    with pytest.raises(ConfigError) as exc:
        app_settings("market.alerts", Alerts)
    [problem] = exc.value.problems
    assert problem.path == "market.alerts.slump-percent"
    assert problem.source == "--set market.alerts.slump-percent"
    assert "valid number" in problem.message and "(got 'abc')" in problem.message


def test_a_bad_value_in_a_file_names_file_and_line(tmp_path: Path) -> None:
    use(tmp_path, "market:\n  per-symbol:\n    ACME:\n      max-drop: lots\n")
    with pytest.raises(ConfigError) as exc:
        app_settings("market", Market)
    [problem] = exc.value.problems
    assert problem.path == "market.per-symbol.ACME.max-drop"
    assert problem.source is not None and problem.source.endswith("application.yaml:4")


def test_an_unknown_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    use(tmp_path, "market:\n  alerts:\n    slump-precent: 1\n")
    with pytest.raises(ConfigError) as exc:
        app_settings("market.alerts", Alerts)
    text = exc.value.render()
    assert "market.alerts.slump-precent: unknown key (did you mean 'slump-percent'?)" in text


def test_a_model_that_allows_extra_keys_keeps_them(tmp_path: Path) -> None:
    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")
        known: int = 0

    use(tmp_path, "app:\n  known: 1\n  other-thing: 2\n")
    settings = app_settings("app", Open)
    assert settings.known == 1 and settings.model_extra == {"other-thing": 2}


def test_a_secret_value_is_not_echoed(tmp_path: Path) -> None:
    class Db(BaseModel):
        port: int = 0

    use(tmp_path, "db:\n  port: amqp://u:hunter2@h\n")
    with pytest.raises(ConfigError) as exc:
        app_settings("db", Db)
    assert "hunter2" not in exc.value.render()
