"""The app's own settings, read from the same sources as ``stream:``.

An app keeps its settings next to the stream configuration (``market.alerts.slump-percent``
in ``config/application.yaml``, overridable by profile, environment or ``--set``) and reads
them as a pydantic model::

    class Alerts(BaseModel):
        slump_percent: float = 5.0

    settings = app_settings("market.alerts", Alerts)
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from binder_core.config_sources import Layered, load, split_key
from binder_core.errors import ConfigError, Problem
from binder_core.properties import canonical

M = TypeVar("M", bound=BaseModel)

_current: Layered | None = None


def use(layered: Layered | None) -> None:
    """Make ``layered`` the configuration ``app_settings`` reads (the runtime does this
    before it imports the app module)."""
    global _current
    _current = layered


def app_settings(section: str, model: type[M]) -> M:
    """The section at dotted path ``section`` validated as ``model``.

    Raises ``ConfigError`` naming the key, its source and the problem, so a bad setting
    stops start-up like any other configuration error.
    """
    layered = _current
    if layered is None:
        layered, problems = load(None)
        if problems:
            raise ConfigError(problems)
    raw: Any = layered.tree
    path = split_key(section)
    for part in path:
        if not isinstance(raw, dict):
            raw = None
            break
        raw = next((v for k, v in raw.items() if canonical(k) == canonical(part)), None)
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            full = [*path, *(str(p) for p in error["loc"])]
            problems.append(Problem(".".join(full), error["msg"], layered.source_of(full)))
        raise ConfigError(problems) from None
