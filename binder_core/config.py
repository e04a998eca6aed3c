"""Validating the layered configuration into typed settings, reporting every problem at
once with its source, key path and a suggestion."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, create_model
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from binder_core.config_sources import Layered, load
from binder_core.errors import ConfigError, Problem, closest, did_you_mean
from binder_core.names import binding_name_problems
from binder_core.properties import (
    BindingProperties,
    Props,
    StreamProperties,
    canonical,
    kebab,
    overlay,
)
from binder_core.secrets import is_secret, mask_repr
from binder_core.spi import BinderType

#: Top-level keys that are probably a misspelt or Spring-style ``stream:``.
_STREAM_LOOKALIKES = {"streams", "steam", "stream-", "spring", "cloud", "strem", "sream"}


@dataclass(frozen=True)
class TypeSection:
    """The validated ``stream.<type>`` section of one binder type."""

    binder: BaseModel
    bindings: dict[str, BaseModel]  # canonical binding name -> extension model
    default: BaseModel
    model: type[BaseModel]  # the per-binding extension model, for bindings not configured


@dataclass
class AppConfig:
    """Everything validated: the ``stream`` tree, each binder type's section, each binder
    instance's environment, and the raw app sections."""

    stream: StreamProperties
    layered: Layered
    types: dict[str, BinderType]
    sections: dict[str, TypeSection] = field(default_factory=dict)
    environments: dict[str, BaseModel] = field(default_factory=dict)  # instance -> env

    def binding(self, name: str) -> BindingProperties:
        """The properties of binding ``name``: ``stream.default`` under its own."""
        own = self.stream.bindings.get(canonical(name))
        return self.stream.default if own is None else overlay(self.stream.default, own)

    def extension(self, binder_type: str, name: str) -> BaseModel | None:
        """The binder-specific properties of a binding (``stream.<type>.bindings.<name>``)."""
        section = self.sections.get(binder_type)
        if section is None:
            return None
        own = section.bindings.get(canonical(name))
        return section.default if own is None else overlay(section.default, own)

    def instance_type(self, binder_name: str) -> str:
        """The binder type of a binder instance name."""
        return self.stream.binders[binder_name].type

    @property
    def default_binder(self) -> str:
        """The binder instance serving bindings that name none."""
        if self.stream.default_binder:
            return self.stream.default_binder
        candidates = [n for n, b in self.stream.binders.items() if b.default_candidate]
        return candidates[0] if len(candidates) == 1 else "memory"


class _LayeredSource(PydanticBaseSettingsSource):
    """Feeds pydantic-settings the tree we layered ourselves: we need per-key sources and
    case/-/_ -insensitive matching of binding names, which its own sources do not give."""

    def __init__(self, settings_cls: type[BaseSettings], tree: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._tree = tree

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._tree.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._tree


class StreamSettings(BaseSettings, StreamProperties):
    """``StreamProperties`` as a pydantic-settings model over the layered sources."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _tree: typing.ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], *args: Any, **kwargs: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_LayeredSource(settings_cls, cls._tree),)


def load_config(
    config_dir: Path | None,
    profiles: Sequence[str],
    overrides: Sequence[str],
    binder_types: Mapping[str, BinderType],
    environ: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
    read_files: bool = True,
) -> AppConfig:
    """Read, layer and validate; raises ``ConfigError`` listing every problem."""
    layered, problems = load(config_dir, profiles, overrides, environ, properties, read_files)
    config = validate(layered, binder_types, problems)
    return config


def validate(
    layered: Layered, binder_types: Mapping[str, BinderType], problems: list[Problem]
) -> AppConfig:
    """Validate a layered tree; raises ``ConfigError`` with ``problems`` plus what it finds."""
    problems = list(problems)
    for key in layered.tree:
        if canonical(key) in _STREAM_LOOKALIKES:
            problems.append(
                Problem(
                    key, "unknown top-level key (did you mean 'stream'?)", layered.source_of([key])
                )
            )
    raw = _section(layered.tree, "stream")
    if raw is not None and not isinstance(raw, dict):
        problems.append(Problem("stream", "must be a mapping", layered.source_of(["stream"])))
        raw = {}
    raw = dict(raw or {})

    fields = {kebab(n) for n in StreamProperties.model_fields}
    _choose_providers(binder_types, raw, layered, problems)
    types_by_canon = {canonical(t): t for t in binder_types}
    type_raw: dict[str, Any] = {}
    for key in list(raw):
        c = canonical(key)
        if c in fields:
            continue
        value = raw.pop(key)
        if c in types_by_canon:
            type_raw[types_by_canon[c]] = value
        else:
            problems.append(
                Problem(
                    f"stream.{key}",
                    "unknown key" + did_you_mean(c, fields | set(binder_types)),
                    layered.source_of(["stream", key]),
                )
            )

    stream = StreamProperties()
    try:
        StreamSettings._tree = raw
        stream = StreamSettings()
    except ValidationError as exc:
        problems.extend(_problems(exc, ("stream",), StreamProperties, layered))
        stream = _valid_parts(raw)
    finally:
        StreamSettings._tree = {}

    config = AppConfig(stream=stream, layered=layered, types=dict(binder_types))
    for type_name, section_raw in type_raw.items():
        section = _validate_type_section(binder_types[type_name], section_raw, layered, problems)
        if section is not None:
            config.sections[type_name] = section
    for name, binder_type in binder_types.items():
        if name not in config.sections:
            config.sections[name] = _default_section(binder_type)

    _implicit_instances(config)
    _check_instances(config, type_raw, layered, problems)
    _check_names(config, problems)
    if problems:
        raise ConfigError(problems)
    return config


def _choose_providers(
    binder_types: Mapping[str, BinderType],
    raw: Mapping[str, Any],
    layered: Layered,
    problems: list[Problem],
) -> None:
    """Settle binder types that two installed distributions provide, by
    ``stream.binder-types``; an unsettled one is a problem naming both."""
    choose = getattr(binder_types, "choose", None)
    if choose is None:  # a plain mapping (tests): nothing can be ambiguous
        return
    key = next((k for k in raw if canonical(k) == "binder-types"), "binder-types")
    choices = raw.get(key)
    for type_name, message in choose(choices if isinstance(choices, dict) else {}):
        path = ("stream", key, type_name)
        problems.append(Problem(".".join(path), message, layered.source_of(path)))


def _valid_parts(raw: Mapping[str, Any]) -> StreamProperties:
    """The sections of an invalid ``stream`` tree that are valid on their own, so that the
    checks which depend on them (binder types, environments) still report their problems."""
    good: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            StreamProperties.model_validate({key: value})
        except ValidationError:
            if canonical(key) in ("bindings", "binders") and isinstance(value, dict):
                # Keep the entries that are valid, so their names are still checked.
                good[key] = {k: v for k, v in value.items() if _valid({key: {k: v}})}
            continue
        good[key] = value
    return StreamProperties.model_validate(good)


def _valid(raw: Mapping[str, Any]) -> bool:
    try:
        StreamProperties.model_validate(raw)
    except ValidationError:
        return False
    return True


def _section(tree: Mapping[str, Any], name: str) -> Any:
    for key, value in tree.items():
        if canonical(key) == name:
            return value
    return None


def _extension_model(binder_type: BinderType) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    if binder_type.consumer is not None:
        fields["consumer"] = (binder_type.consumer, binder_type.consumer())
    if binder_type.producer is not None:
        fields["producer"] = (binder_type.producer, binder_type.producer())
    return create_model(f"{binder_type.name.title()}BindingProperties", __base__=Props, **fields)


def _default_section(binder_type: BinderType) -> TypeSection:
    model = _extension_model(binder_type)
    return TypeSection(binder_type.environment(), {}, model(), model)


def _validate_type_section(
    binder_type: BinderType, raw: Any, layered: Layered, problems: list[Problem]
) -> TypeSection | None:
    prefix = ("stream", binder_type.name)
    if not isinstance(raw, dict):
        problems.append(Problem(".".join(prefix), "must be a mapping", layered.source_of(prefix)))
        return None
    model = _extension_model(binder_type)
    section = _default_section(binder_type)
    allowed = {"binder", "bindings", "default"}
    binder_env, bindings, default = section.binder, {}, section.default
    for key, value in raw.items():
        c = canonical(key)
        path = (*prefix, key)
        if c not in allowed:
            problems.append(
                Problem(
                    ".".join(path),
                    "unknown key" + did_you_mean(c, allowed),
                    layered.source_of(path),
                )
            )
        elif c == "binder":
            binder_env = (
                _validated(binder_type.environment, value, path, layered, problems) or binder_env
            )
        elif c == "default":
            default = _validated(model, value, path, layered, problems) or default
        elif not isinstance(value, dict):
            problems.append(Problem(".".join(path), "must be a mapping", layered.source_of(path)))
        else:
            for binding, props in value.items():
                got = _validated(model, props, (*path, binding), layered, problems)
                if got is not None:
                    bindings[canonical(binding)] = got
    return TypeSection(binder_env, bindings, default, model)


def _validated(
    model: type[BaseModel],
    value: Any,
    path: tuple[str, ...],
    layered: Layered,
    problems: list[Problem],
) -> BaseModel | None:
    try:
        return model.model_validate(value if value is not None else {})
    except ValidationError as exc:
        problems.extend(_problems(exc, path, model, layered))
        return None


def _implicit_instances(config: AppConfig) -> None:
    """Every installed type is also usable as a binder named after it, as in Spring when a
    single binder is on the classpath: ``binder: kafka`` works without ``stream.binders``."""
    from binder_core.properties import BinderInstanceProperties

    binders = dict(config.stream.binders)
    for name in config.types:
        if name not in binders:
            binders[name] = BinderInstanceProperties(type=name, default_candidate=False)
    object.__setattr__(config.stream, "binders", binders)


def _check_instances(
    config: AppConfig, type_raw: Mapping[str, Any], layered: Layered, problems: list[Problem]
) -> None:
    installed = sorted(config.types)
    path: tuple[str, ...]
    for name, instance in config.stream.binders.items():
        path = ("stream", "binders", name)
        binder_type = config.types.get(instance.type)
        if binder_type is None:
            problems.append(
                Problem(
                    ".".join((*path, "type")),
                    f"unknown binder type '{instance.type}'"
                    + (
                        f" (did you mean '{near}'?)"
                        if (near := closest(instance.type, installed))
                        else ""
                    )
                    + f"; installed binder types: {', '.join(installed)}",
                    layered.source_of((*path, "type")),
                )
            )
            continue
        # The type-wide stream.<type>.binder settings, then the instance's own environment.
        merged: dict[str, Any] = {}
        type_wide = _section(type_raw.get(instance.type) or {}, "binder")
        if isinstance(type_wide, dict):
            merged.update(type_wide)
        merged.update(instance.environment)
        env = _validated(binder_type.environment, merged, (*path, "environment"), layered, problems)
        if env is not None:
            config.environments[name] = env
    known = set(config.stream.binders)
    default = config.stream.default_binder
    if default is not None and default not in known:
        problems.append(
            Problem(
                "stream.default-binder",
                f"no binder named '{default}'" + did_you_mean(default, known),
                layered.source_of(["stream", "default-binder"]),
            )
        )
    for name, binding in config.stream.bindings.items():
        if binding.binder is not None and binding.binder not in known:
            path = ("stream", "bindings", name, "binder")
            problems.append(
                Problem(
                    ".".join(path),
                    f"no binder named '{binding.binder}'" + did_you_mean(binding.binder, known),
                    layered.source_of(path),
                )
            )


def _check_names(config: AppConfig, problems: list[Problem]) -> None:
    """The names each configured binding will create, against its binder type's rules
    (the bindings only a function defines are checked when the app is planned)."""
    for name in config.stream.bindings:
        props = config.binding(name)
        instance = config.stream.binders.get(props.binder or config.default_binder)
        binder_type = config.types.get(instance.type) if instance is not None else None
        if binder_type is None:
            continue  # reported above
        extension = config.extension(binder_type.name, name)
        problems.extend(
            binding_name_problems(
                binder_type,
                config.layered,
                name,
                props.destination,
                group=props.group,
                required_groups=props.producer.required_groups,
                dlq_name=getattr(getattr(extension, "consumer", None), "dlq_name", None),
            )
        )


def _problems(
    exc: ValidationError, prefix: tuple[str, ...], model: type[BaseModel], layered: Layered
) -> list[Problem]:
    out = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        path = (*prefix, *loc)
        dotted = ".".join(path)
        where = layered.source_of(path)
        if error["type"] == "extra_forbidden":
            common = _common_key_elsewhere(path)
            if common is not None:
                out.append(Problem(dotted, common, where))
                continue
            parent = _model_at(model, loc[:-1])
            valid = {kebab(n) for n in parent.model_fields} if parent is not None else set()
            out.append(
                Problem(dotted, "unknown key" + did_you_mean(canonical(loc[-1]), valid), where)
            )
            continue
        message = error["msg"]
        if error["type"] == "missing":
            message = "required key is missing"
        elif not any(is_secret(p) for p in path) and error["type"] != "model_type":
            message += f" (got {mask_repr(error['input'], path[-1] if path else '')})"
        out.append(Problem(dotted, message, where))
    return out


def _common_key_elsewhere(path: Sequence[str]) -> str | None:
    """For a common binding property put under a binder type's section
    (``stream.rabbit.bindings.X.producer.required-groups``), where it belongs instead."""
    if len(path) != 6 or canonical(path[0]) != "stream" or canonical(path[2]) != "bindings":
        return None
    kind, key = canonical(path[4]), canonical(path[5])
    common = BindingProperties.model_fields.get(kind)
    nested = common.annotation if common is not None else None
    if kind not in ("consumer", "producer") or not (
        isinstance(nested, type) and issubclass(nested, BaseModel)
    ):
        return None
    if key not in {canonical(n) for n in nested.model_fields}:
        return None
    return (
        f"{key} is a property every binder understands, so it is not set per binder type: "
        f"use stream.bindings.{path[3]}.{kind}.{key}"
    )


def _model_at(model: type[BaseModel], loc: Sequence[str]) -> type[BaseModel] | None:
    """The model class found by following ``loc`` from ``model`` (dict keys skipped)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field_info = _field(current, part)
            if field_info is None:
                return None
            current = field_info
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if canonical(name) == canonical(key):
            return info.annotation
    return None


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp
