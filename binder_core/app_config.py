"""The app's own settings, read from the same sources as ``stream:``.

An app keeps its settings next to the stream configuration (``market.alerts.slump-percent``
in ``config/application.yaml``, overridable by profile, environment or ``--set``) and reads
them as a pydantic model, at module level::

    class Alerts(BaseModel):
        slump_percent: float = 5.0

    settings = app_settings("market.alerts", Alerts)

Keys match the model's fields ignoring case and ``-``/``_`` (``slump-percent``,
``slump_percent`` and ``SLUMP_PERCENT`` are one key), as everywhere in the configuration.
An unknown key or a bad value raises ``ConfigError`` with the key path and its source, so
it stops start-up: ``binder run`` loads the configuration before it imports the app
module, which is why reading settings at module level sees every source.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic import AliasChoices, BaseModel, ValidationError

from binder_core.config_sources import Layered, load, merge_env, split_key
from binder_core.errors import ConfigError, Problem, did_you_mean
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
    fitted = _fit(model, raw if raw is not None else {}, path, layered, problems)
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


def _keys(name: str, info: Any) -> tuple[str, set[str]]:
    """The key pydantic validates a field by, and every spelling that means it."""
    spellings = {name}
    key = name
    alias = info.validation_alias
    if isinstance(alias, str):
        key = alias
        spellings.add(alias)
    elif isinstance(alias, AliasChoices):
        choices = [c for c in alias.choices if isinstance(c, str)]
        key = choices[0] if choices else name
        spellings.update(choices)
    elif info.alias:
        key = info.alias
        spellings.add(info.alias)
    return key, {canonical(s) for s in spellings}


def _fit(
    model: type[BaseModel], raw: Any, path: Sequence[str], layered: Layered, problems: list[Problem]
) -> Any:
    """``raw`` with each key renamed to the one the model validates by (kebab-case and
    other spellings map onto snake_case fields); unknown keys become problems unless the
    model itself allows or ignores extra keys."""
    if not isinstance(raw, dict):
        return raw
    fields: dict[str, tuple[str, Any]] = {}
    for name, info in model.model_fields.items():
        key, spellings = _keys(name, info)
        for spelling in spellings:
            fields[spelling] = (key, info.annotation)
    extra = model.model_config.get("extra")
    out: dict[str, Any] = {}
    for k, value in raw.items():
        sub = [*path, str(k)]
        found = fields.get(canonical(str(k)))
        if found is None:
            if extra in ("allow", "ignore"):
                out[k] = value
                continue
            valid = {kebab(n) for n in model.model_fields}
            problems.append(
                Problem(
                    ".".join(sub),
                    "unknown key" + did_you_mean(canonical(str(k)), valid),
                    layered.source_of(sub),
                )
            )
            continue
        key, annotation = found
        out[key] = _fit_value(annotation, value, sub, layered, problems)
    return out


def _fit_value(
    annotation: Any, value: Any, path: Sequence[str], layered: Layered, problems: list[Problem]
) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # Model | None
        options = [a for a in args if a is not type(None)]
        annotation = options[0] if len(options) == 1 else annotation
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _fit(annotation, value, path, layered, problems)
    inner = args[-1] if args else None
    if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
        return value
    if origin is dict and isinstance(value, dict):
        return {k: _fit(inner, v, [*path, str(k)], layered, problems) for k, v in value.items()}
    if origin in (list, tuple) and isinstance(value, list):
        return [_fit(inner, v, path, layered, problems) for v in value]
    return value


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
