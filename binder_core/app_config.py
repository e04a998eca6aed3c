"""The app's own settings, read from the same sources as ``stream:``.

An app keeps its settings next to the stream configuration (``market.alerts.slump-percent``
in ``config/application.yaml``, overridable by profile, environment or ``--set``) and reads
them as a pydantic model, at module level::

    class Alerts(BaseModel):
        slump_percent: float = 5.0

    settings = app_settings("market.alerts", Alerts)

Keys match the model's fields as everywhere in the configuration, in any spelling Spring
Boot accepts (``slump-percent``, ``slump_percent``, ``slumpPercent`` and ``SLUMP_PERCENT``
are one key); a dotted key in YAML is a path, so a mapping key that holds dots is written
in brackets (``symbols: {'[BRK.A]': 420.0}``).
An unknown key or a bad value raises ``ConfigError`` with the key path and its source, so
it stops start-up: ``binder run`` loads the configuration before it imports the app
module, which is why reading settings at module level sees every source.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from binder_core.config_sources import Layered, load, merge_env, split_key
from binder_core.errors import ConfigError, Problem
from binder_core.properties import canonical, kebab
from binder_core.secrets import is_secret, mask_repr

M = TypeVar("M", bound=BaseModel)

#: The configuration ``app_settings`` reads: per task, so that two apps in one process (a
#: test, a process serving two pipelines) each read their own. An app's tasks inherit it
#: from where the app was started.
_CURRENT: ContextVar[Layered | None] = ContextVar("binder_app_config", default=None)


def use(layered: Layered | None) -> None:
    """Make ``layered`` the configuration ``app_settings`` reads here and in the tasks
    started from here (the command line does this before it imports the app module)."""
    _CURRENT.set(layered)


def app_settings(section: str, model: type[M]) -> M:
    """The section at dotted path ``section`` validated as ``model``.

    Raises ``ConfigError`` naming the key, its source and the problem, so a bad setting
    stops start-up like any other configuration error.
    """
    layered = _CURRENT.get()
    if layered is None:
        layered, found = load(None)
        if found:
            raise ConfigError(found)
    path = split_key(section)
    layered = _with_section_env(layered, path[0]) if path else layered
    raw: Any = layered.tree
    for part in path:
        if not isinstance(raw, dict):
            raw = None
            break
        raw = next((v for k, v in raw.items() if canonical(str(k)) == canonical(part)), None)
    problems: list[Problem] = []
    from binder_core.relaxed import Fitter

    fitted = Fitter(layered, problems).fit(model, raw if raw is not None else {}, path)
    if problems:
        raise ConfigError(problems)
    try:
        return model.model_validate(fitted)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, path, layered)) from None


def _with_section_env(layered: Layered, root: str) -> Layered:
    """``layered`` plus the environment variables of section ``root``, when no file or
    option named that section (so ``load`` left its variables unread)."""
    if any(canonical(str(k)) == canonical(root) for k in layered.tree):
        return layered
    names = [n for n in layered.unread_env if canonical(n.split("__")[0]) == canonical(root)]
    if not names:
        return layered
    copy = Layered(dict(layered.tree), dict(layered.sources), layered.files, layered.profiles)
    for name in sorted(names):
        merge_env(copy, name, layered.unread_env[name])
    return copy


def _problems(exc: ValidationError, path: Sequence[str], layered: Layered) -> list[Problem]:
    out = []
    for error in exc.errors(include_url=False):
        loc = [kebab(p) if isinstance(p, str) else str(p) for p in error["loc"]]
        full = [*path, *loc]
        message = error["msg"]
        if error["type"] == "missing":
            message = "required key is missing"
        elif not any(is_secret(p) for p in full) and error["type"] != "model_type":
            message += f" (got {mask_repr(error['input'], full[-1])})"
        out.append(Problem(".".join(full), message, layered.source_of(full)))
    return out
