"""Validating the layered configuration into typed settings, reporting every problem at
once with its source, key path and a suggestion.

The tree is first fitted to the schema (``binder_core.relaxed``: Spring's spellings, run-on
environment variables, Spring-only properties), then validated piece by piece, so that one
bad value does not hide the problems of the other pieces. A binder instance's environment
is laid together from Spring Boot's connection properties (``spring.rabbitmq.*``,
``spring.kafka.*``), the type-wide ``stream.<type>.binder`` section and the instance's own
``environment`` (where Spring's shapes work too), later over earlier.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, create_model
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from binder_core.config_sources import Layered, RunOn, load
from binder_core.errors import ConfigError, Problem, closest, did_you_mean
from binder_core.names import binding_name_problems
from binder_core.properties import (
    BinderInstanceProperties,
    BindingProperties,
    PollerProperties,
    Props,
    StreamProperties,
    canonical,
    kebab,
    loose,
    overlay,
)
from binder_core.relaxed import Fitter, fields_of, value_problem
from binder_core.spi import BinderType

Path_ = tuple[str, ...]

#: Top-level keys that are probably a misspelt ``stream:``.
_STREAM_LOOKALIKES = {"streams", "steam", "stream-", "strem", "sream"}


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
    #: Per binder instance: a key path below its environment -> where a source wrote it
    #: (``spring.rabbitmq.host``, ``stream.kafka.binder.brokers``, ...).
    env_origins: dict[str, dict[Path_, Path_]] = field(default_factory=dict)
    #: Binder types the configuration sets up (a ``stream.<type>`` section, or Spring
    #: Boot's connection properties for it): the candidates for the default binder.
    configured_types: list[str] = field(default_factory=list)

    def binding(self, name: str) -> BindingProperties:
        """The properties of binding ``name``: ``stream.default`` under its own."""
        own = self.stream.bindings.get(canonical(name))
        return self.stream.default if own is None else overlay(self.stream.default, own)

    def extension(self, binder_type: str, name: str) -> BaseModel | None:
        """The binder-specific properties of a binding (``stream.<type>.bindings.<name>``).

        A consumer of a destination where its binder puts dead letters gets no dead-letter
        destination of its own unless it asks for one (its failures would otherwise go to
        ``error.error...``, or back round a dead-letter exchange)."""
        section = self.sections.get(binder_type)
        if section is None:
            return None
        own = section.bindings.get(canonical(name))
        ext = section.default if own is None else overlay(section.default, own)
        consumer = getattr(ext, "consumer", None)
        adjust = getattr(consumer, "for_dead_letters", None)
        if adjust is not None:
            props = self.binding(name)
            for destination in props.destinations or (name,):
                adjusted = adjust(destination, props.group)
                if adjusted is not None:
                    return ext.model_copy(update={"consumer": adjusted})
        return ext

    def instance_type(self, binder_name: str) -> str:
        """The binder type of a binder instance name."""
        return self.stream.binders[binder_name].type

    def poller(self, binding: str) -> PollerProperties:
        """The poller of a supplier's output binding: its own ``producer.poller`` over
        ``stream.poller``."""
        own = self.binding(binding).producer.poller
        return self.stream.poller if own is None else overlay(self.stream.poller, own)

    @property
    def default_binder(self) -> str:
        """The binder instance serving bindings that name none (see ``default_choice``)."""
        return self.default_choice()[0]

    def default_choice(self) -> tuple[str, str | None]:
        """The default binder and, when the choice is ambiguous, why (a binding that
        needs the default is then a problem).

        As in Spring: ``stream.default-binder``; else the one binder declared under
        ``stream.binders`` (not ``default-candidate: false``); else, with none declared,
        the one broker binder type configured (``stream.kafka...`` or Spring Boot's
        ``spring.kafka.*`` present); else memory."""
        if self.stream.default_binder:
            return self.stream.default_binder, None
        declared = [n for n, b in self.stream.binders.items() if b.default_candidate]
        if len(declared) == 1:
            return declared[0], None
        if len(declared) > 1:
            return declared[0], (
                f"several binders could serve it ({', '.join(sorted(declared))}): set "
                "stream.default-binder, or the binding's binder"
            )
        brokers = [t for t in self.configured_types if t != "memory"]
        if len(brokers) == 1:
            return brokers[0], None
        if len(brokers) > 1:
            return brokers[0], (
                f"binder types {', '.join(sorted(brokers))} are all configured: set "
                "stream.default-binder, or the binding's binder"
            )
        return "memory", None


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
    """Read, layer and validate; raises ``ConfigError`` listing every problem (carrying
    what could be validated, so that planning can still find its own problems)."""
    layered, problems = load(config_dir, profiles, overrides, environ, properties, read_files)
    return validate(layered, binder_types, problems)


def validate(
    layered: Layered, binder_types: Mapping[str, BinderType], problems: list[Problem]
) -> AppConfig:
    """Validate a layered tree; raises ``ConfigError`` with ``problems`` plus what it finds."""
    problems = list(problems)
    for key in layered.tree:
        if canonical(str(key)) in _STREAM_LOOKALIKES:
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

    _choose_providers(binder_types, raw, layered, problems)
    fitter = Fitter(layered, problems, elsewhere=_common_key_elsewhere)
    tree_model = _tree_model(tuple(binder_types.values()))
    fitted = fitter.fit(tree_model, raw, ("stream",))
    core_keys = {spec.key for spec in fields_of(StreamProperties).values()}
    core = {k: v for k, v in fitted.items() if k in core_keys}
    type_raw = {k: v for k, v in fitted.items() if k not in core_keys and k in binder_types}

    stream = StreamProperties()
    try:
        StreamSettings._tree = core
        stream = StreamSettings()
    except ValidationError as exc:
        problems.extend(_problems(exc, ("stream",), layered))
        stream = _valid_parts(core)
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

    boot = _boot_environments(layered, binder_types, fitter, problems)
    config.configured_types = sorted({*type_raw, *boot})
    _implicit_instances(config)
    _check_instances(config, type_raw, boot, fitter, problems)
    _check_names(config, problems)
    problems = _unique(problems)
    if problems:
        raise ConfigError(problems, config=config)
    return config


@functools.cache
def _tree_model(types: tuple[BinderType, ...]) -> type[BaseModel]:
    """The whole ``stream`` tree as one model for fitting: the core's fields and one
    section per binder type (validation is still done piece by piece)."""
    fields: dict[str, Any] = {}
    for binder_type in types:
        if binder_type.name in StreamProperties.model_fields:
            continue
        fields[binder_type.name] = (_section_model(binder_type) | None, None)
    return create_model("StreamTree", __base__=StreamProperties, **fields)


@functools.cache
def _section_model(binder_type: BinderType) -> type[BaseModel]:
    ext: Any = _extension_model(binder_type)
    env: Any = binder_type.environment
    fields: dict[str, Any] = {
        "binder": (env | None, None),
        "bindings": (dict[str, ext] | None, None),
        "default": (ext | None, None),
    }
    return create_model(f"{binder_type.name.title()}Section", __base__=Props, **fields)


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


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
    key = next((k for k in raw if loose(str(k)) == "bindertypes"), "binder-types")
    choices = raw.get(key)
    for type_name, message in choose(choices if isinstance(choices, dict) else {}):
        path = ("stream", key, type_name)
        problems.append(Problem(".".join(path), message, layered.source_of(path)))


def _valid_parts(raw: Mapping[str, Any]) -> StreamProperties:
    """What of an invalid ``stream`` tree is valid: each bad value is left out (at its
    default), so that the checks which depend on the rest (binder types, environments,
    planning: an unknown function, a content type no converter reads) still report their
    problems in the same round."""
    data: Any = _copy(dict(raw))
    for _ in range(_PRUNE_ROUNDS):
        try:
            return StreamProperties.model_validate(data)
        except ValidationError as exc:
            locs = [tuple(e["loc"]) for e in exc.errors(include_url=False)]
        if not any(_drop(data, loc) for loc in sorted(locs, key=len, reverse=True)):
            break
    return StreamProperties()


#: How many times a bad value is left out before giving up on the rest.
_PRUNE_ROUNDS = 8


def _drop(tree: Any, loc: tuple[Any, ...]) -> bool:
    """Remove the value at ``loc`` (or, for a problem of a whole mapping, that mapping)."""
    if not loc:
        return False
    node = tree
    for part in loc[:-1]:
        if not _holds(node, part):
            return _drop(tree, loc[:-1])
        node = node[part]
    if not _holds(node, loc[-1]):
        return _drop(tree, loc[:-1])
    del node[loc[-1]]
    return True


def _holds(node: Any, key: Any) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)


def _section(tree: Mapping[str, Any], name: str) -> Any:
    for key, value in tree.items():
        if loose(str(key)) == loose(name):
            return value
    return None


@functools.cache
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
    bindings: dict[str, BaseModel] = {}
    default = section.default
    if raw.get("default") is not None:
        got = _validated(model, raw["default"], (*prefix, "default"), layered, problems)
        default = got or section.default
    value = raw.get("bindings")
    if isinstance(value, dict):
        for binding, props in value.items():
            got = _validated(model, props, (*prefix, "bindings", binding), layered, problems)
            if got is not None:
                bindings[canonical(binding)] = got
    elif value is not None:
        path = (*prefix, "bindings")
        problems.append(Problem(".".join(path), "must be a mapping", layered.source_of(path)))
    # The type-wide binder settings are validated with each instance's environment.
    return TypeSection(section.binder, bindings, default, model)


def _validated(
    model: type[BaseModel],
    value: Any,
    path: tuple[str, ...],
    layered: Layered,
    problems: list[Problem],
) -> BaseModel | None:
    try:
        validated = model.model_validate(value if value is not None else {})
    except ValidationError as exc:
        problems.extend(_problems(exc, path, layered))
        return None
    for sub, message in _model_problems(validated):
        full = (*path, *sub)
        problems.append(Problem(".".join(full), message, layered.source_of(full)))
    return validated


def _model_problems(model: BaseModel) -> list[tuple[Path_, str]]:
    """``config_problems`` of ``model`` and of every model inside it."""
    out: list[tuple[Path_, str]] = []
    hook = getattr(model, "config_problems", None)
    if hook is not None:
        out += [(tuple(p), m) for p, m in hook()]
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        key = info.serialization_alias or kebab(name)
        if isinstance(value, BaseModel):
            out += [((key, *p), m) for p, m in _model_problems(value)]
    return out


# -- binder environments ------------------------------------------------------------------


@dataclass
class _Level:
    """One layer of an instance's environment: the fitted settings, and where each key
    was written (its base path in the tree, or per key for Boot's properties)."""

    values: dict[str, Any]
    base: Path_
    origins: dict[Path_, Path_] = field(default_factory=dict)


def _boot_model(binder_type: BinderType) -> tuple[str, type[BaseModel]] | None:
    spring = getattr(binder_type.environment, "spring_boot", None)
    if isinstance(spring, tuple) and len(spring) == 2:
        return str(spring[0]), spring[1]
    return None


def _boot_level(
    binder_type: BinderType,
    raw: Any,
    base: Path_,
    layered: Layered,
    fitter: Fitter,
    problems: list[Problem],
) -> _Level | None:
    """Spring Boot's connection properties for ``binder_type`` (``spring.rabbitmq.*``) as
    a layer of its environment."""
    spec = _boot_model(binder_type)
    if spec is None or not isinstance(raw, dict):
        return None
    _, model = spec
    fitted = fitter.fit(model, raw, base)
    boot = _validated(model, fitted, base, layered, problems)
    if boot is None:
        return None
    values, origins = boot.environment()  # type: ignore[attr-defined]
    return _Level(values, base, {k: (*base, *v) for k, v in origins.items()})


def _boot_environments(
    layered: Layered,
    binder_types: Mapping[str, BinderType],
    fitter: Fitter,
    problems: list[Problem],
) -> dict[str, _Level]:
    """The top-level ``spring.<prefix>`` section of each binder type that has one."""
    spring = _section(layered.tree, "spring")
    out: dict[str, _Level] = {}
    if not isinstance(spring, dict):
        return out
    for name, binder_type in binder_types.items():
        spec = _boot_model(binder_type)
        if spec is None:
            continue
        prefix = spec[0]
        key = next((k for k in spring if loose(str(k)) == loose(prefix)), None)
        if key is None:
            continue
        level = _boot_level(
            binder_type, spring[key], ("spring", str(key)), layered, fitter, problems
        )
        if level is not None:
            out[name] = level
    return out


def _instance_levels(
    name: str,
    instance: BinderInstanceProperties,
    binder_type: BinderType,
    type_raw: Mapping[str, Any],
    boot: Mapping[str, _Level],
    fitter: Fitter,
    problems: list[Problem],
) -> list[_Level]:
    """The layers of an instance's environment, lowest first."""
    layered = fitter.layered
    env_model = binder_type.environment
    levels: list[_Level] = []
    if binder_type.name in boot:
        levels.append(boot[binder_type.name])
    section = type_raw.get(binder_type.name)
    type_wide = section.get("binder") if isinstance(section, dict) else None
    if isinstance(type_wide, dict):
        levels.append(_Level(type_wide, ("stream", binder_type.name, "binder")))
    env = dict(instance.environment)
    base = ("stream", "binders", name, "environment")
    spring_key = next((k for k in env if loose(str(k)) == "spring"), None)
    spring = env.pop(spring_key) if spring_key is not None else None
    if isinstance(spring, dict):
        spring = _copy(spring)  # taken apart below; the tree stays as it was
        spec = _boot_model(binder_type)
        if spec is not None:
            key = next((k for k in spring if loose(str(k)) == loose(spec[0])), None)
            if key is not None:
                level = _boot_level(
                    binder_type,
                    spring.pop(key),
                    (*base, str(spring_key), str(key)),
                    layered,
                    fitter,
                    problems,
                )
                if level is not None:
                    levels.append(level)
        cloud = _pop_path(spring, ("cloud", "stream", binder_type.name, "binder"))
        if cloud is not None:
            at: Path_ = (*base, str(spring_key), "cloud", "stream", binder_type.name, "binder")
            levels.append(_Level(fitter.fit(env_model, cloud, at), at))
        for key in spring:
            at = (*base, str(spring_key), str(key))
            problems.append(
                Problem(
                    ".".join(at),
                    "not a setting of a "
                    f"{binder_type.name} binder's environment: Spring's shapes here are "
                    + ", ".join(_spring_shapes(binder_type)),
                    layered.source_of(at),
                )
            )
    levels.append(_Level(fitter.fit(env_model, env, base), base))
    return levels


def _spring_shapes(binder_type: BinderType) -> list[str]:
    shapes = [f"spring.cloud.stream.{binder_type.name}.binder.*"]
    spec = _boot_model(binder_type)
    if spec is not None:
        shapes.insert(0, f"spring.{spec[0]}.*")
    return shapes


def _pop_path(tree: dict[str, Any], path: Path_) -> Any:
    node: Any = tree
    trail: list[tuple[dict[str, Any], str]] = []
    for part in path:
        if not isinstance(node, dict):
            return None
        key = next((k for k in node if loose(str(k)) == loose(part)), None)
        if key is None:
            return None
        trail.append((node, key))
        node = node[key]
    holder, key = trail[-1]
    value = holder.pop(key)
    for holder, key in reversed(trail[:-1]):
        if isinstance(holder.get(key), dict) and not holder[key]:
            del holder[key]
    return value


def _layer(levels: Sequence[_Level]) -> tuple[dict[str, Any], dict[Path_, Path_]]:
    """The levels laid over each other (later wins, mappings merge key by key), and for
    every key path the path a source wrote it at."""
    merged: dict[str, Any] = {}
    origins: dict[Path_, Path_] = {}

    def put(
        target: dict[str, Any], values: Mapping[str, Any], prefix: Path_, level: _Level
    ) -> None:
        for key, value in values.items():
            path = (*prefix, str(key))
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                put(target[key], value, path, level)
                continue
            target[key] = _copy(value)
            for stale in [p for p in origins if p[: len(path)] == path]:
                del origins[stale]
            _note(path, value, level, origins)

    for level in levels:
        put(merged, level.values, (), level)
    return merged, origins


def _note(path: Path_, value: Any, level: _Level, origins: dict[Path_, Path_]) -> None:
    own = level.origins.get(path)
    origins[path] = own if own is not None else (*level.base, *path)
    if isinstance(value, dict):
        for key, sub in value.items():
            _note((*path, str(key)), sub, level, origins)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _origin(origins: Mapping[Path_, Path_], loc: Sequence[str], fallback: Path_) -> Path_:
    """Where the value at ``loc`` (below an environment) was written. A dotted setting
    name (``consumer-properties.group.id``) may be one key of a map."""
    loc = tuple(loc)
    for n in range(len(loc), 0, -1):
        if n < len(loc):
            found = origins.get((*loc[:n], ".".join(loc[n:])))
            if found is not None:
                return found
        found = origins.get(loc[:n])
        if found is not None:
            return (*found, *loc[n:])
    return (*fallback, *loc)


def _implicit_instances(config: AppConfig) -> None:
    """Every installed type is also usable as a binder named after it, as in Spring when a
    single binder is on the classpath: ``binder: kafka`` works without ``stream.binders``."""
    binders = dict(config.stream.binders)
    for name in config.types:
        if name not in binders:
            binders[name] = BinderInstanceProperties(type=name, default_candidate=False)
    object.__setattr__(config.stream, "binders", binders)


def _check_instances(
    config: AppConfig,
    type_raw: Mapping[str, Any],
    boot: Mapping[str, _Level],
    fitter: Fitter,
    problems: list[Problem],
) -> None:
    layered = config.layered
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
        levels = _instance_levels(name, instance, binder_type, type_raw, boot, fitter, problems)
        merged, origins = _layer(levels)
        config.env_origins[name] = origins
        base = (*path, "environment")
        try:
            env = binder_type.environment.model_validate(merged)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = tuple(str(p) for p in error["loc"])
                at = _origin(origins, loc, base)
                problems.append(
                    Problem(".".join(at), value_problem(error, at), layered.source_of(at))
                )
            continue
        for sub, message in _model_problems(env):
            at = _origin(origins, sub, base)
            problems.append(Problem(".".join(at), message, layered.source_of(at)))
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
        for destination in props.destinations or (None,):
            problems.extend(
                binding_name_problems(
                    binder_type,
                    config.layered,
                    name,
                    destination,
                    group=props.group,
                    required_groups=props.producer.required_groups,
                    dlq_name=getattr(getattr(extension, "consumer", None), "dlq_name", None),
                )
            )


def _problems(exc: ValidationError, prefix: tuple[str, ...], layered: Layered) -> list[Problem]:
    out = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(p) for p in error["loc"])
        path = (*prefix, *loc)
        dotted = ".".join(path)
        where = layered.source_of(path)
        if error["type"] == "extra_forbidden":
            message = _common_key_elsewhere(path) or "unknown key"
            out.append(Problem(dotted, message, where))
            continue
        out.append(Problem(dotted, value_problem(error, path), where))
    return out


def _common_key_elsewhere(path: Sequence[str]) -> str | None:
    """For a common binding property put under a binder type's section
    (``stream.rabbit.bindings.X.producer.required-groups``), where it belongs instead."""
    if len(path) != 6 or loose(path[0]) != "stream" or loose(path[2]) != "bindings":
        return None
    if isinstance(path[5], RunOn):
        return None
    kind, key = canonical(path[4]), path[5]
    common = BindingProperties.model_fields.get(kind)
    nested = common.annotation if common is not None else None
    if kind not in ("consumer", "producer") or not (
        isinstance(nested, type) and issubclass(nested, BaseModel)
    ):
        return None
    names = {loose(n): kebab(n) for n in nested.model_fields}
    if loose(key) not in names:
        return None
    key = names[loose(key)]
    return (
        f"{key} is a property every binder understands, so it is not set per binder type: "
        f"use stream.bindings.{path[3]}.{kind}.{key}"
    )
