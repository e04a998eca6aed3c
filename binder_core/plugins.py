"""Discovering plugins through entry points and collecting what they register.

A plugin that fails to import is reported by name with its error; the others keep
working, so one broken package cannot take every app down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from binder_core import hookspecs
from binder_core.errors import did_you_mean
from binder_core.properties import canonical
from binder_core.spi import BinderType, Converter

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "binder_core.plugins"


@dataclass(frozen=True)
class PluginInfo:
    """Where something registered came from, for ``binder plugins``."""

    name: str
    distribution: str
    version: str


class BinderTypes(dict[str, BinderType]):
    """Binder types by name. A type that two installed distributions both provide is not
    in the mapping until configuration chooses one (``stream.binder-types.<type>:
    <distribution>``): a plugin never takes over a type silently, whatever its hook order."""

    def __init__(self) -> None:
        super().__init__()
        #: Every provider of every type, in registration order: type -> [(type, origin)].
        self.providers: dict[str, list[tuple[BinderType, PluginInfo]]] = {}

    @property
    def conflicts(self) -> dict[str, list[PluginInfo]]:
        """Types with more than one provider, each with the distributions providing it."""
        return {
            name: [info for _, info in found]
            for name, found in self.providers.items()
            if len(found) > 1
        }

    def add(self, binder_type: BinderType, info: PluginInfo) -> None:
        """Record a provider; the type is usable only while it has exactly one."""
        found = self.providers.setdefault(binder_type.name, [])
        found.append((binder_type, info))
        if len(found) == 1:
            self[binder_type.name] = binder_type
        else:
            self.pop(binder_type.name, None)

    def choose(self, choices: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Apply ``stream.binder-types`` (type -> distribution). Returns ``(type, what is
        wrong)`` for every choice that does not fit and every conflict left unchosen."""
        problems: list[tuple[str, str]] = []
        chosen = {str(k): v for k, v in choices.items()}
        for name, found in self.providers.items():
            wanted = chosen.pop(name, None)
            dists = sorted(info.distribution for _, info in found)
            listed = " and ".join(f"'{d}'" for d in dists)
            if wanted is None:
                if len(found) > 1:
                    problems.append(
                        (
                            name,
                            f"binder type '{name}' is provided by {listed}; choose one with "
                            f"stream.binder-types.{name}: <distribution>, or uninstall one",
                        )
                    )
                continue
            match = [bt for bt, info in found if _same(info.distribution, str(wanted))]
            if not match:
                problems.append(
                    (
                        name,
                        f"'{wanted}' does not provide binder type '{name}'; it is provided by "
                        f"{listed}",
                    )
                )
                continue
            self[name] = match[0]
        for name, wanted in chosen.items():
            problems.append(
                (
                    name,
                    f"no installed distribution provides binder type '{name}' (chosen: "
                    f"'{wanted}')" + did_you_mean(name, self.providers),
                )
            )
        return problems

    def origin(self, name: str) -> PluginInfo | None:
        """The distribution behind the type in use under ``name``."""
        current = self.get(name)
        for binder_type, info in self.providers.get(name, []):
            if binder_type is current:
                return info
        return None


def _same(a: str, b: str) -> bool:
    """Distribution names compare as packaging normalizes them (case, ``-``, ``_``, ``.``)."""
    return canonical(a).replace(".", "-") == canonical(b).replace(".", "-")


@dataclass
class Registry:
    """Binder types and converters from every plugin that loaded."""

    binder_types: BinderTypes = field(default_factory=BinderTypes)
    converters: dict[str, Converter] = field(default_factory=dict)
    origin: dict[str, PluginInfo] = field(default_factory=dict)  # "binder:x"/"converter:x"
    failures: dict[str, str] = field(default_factory=dict)  # plugin name -> error
    #: The plugins' hooks, for the optional ones called later (``destination_exists``).
    hooks: Any = None


def load_plugins(extra: list[ModuleType | object] | None = None) -> Registry:
    """Load every installed plugin (plus ``extra`` objects, for tests) into a registry."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    registry = Registry(hooks=manager.hook)
    infos: dict[str, PluginInfo] = {}

    # The core's own converters (JSON, text, bytes) are a plugin too.
    from binder_core import conversion

    manager.register(conversion, name="binder_core.conversion")
    infos["binder_core.conversion"] = _core_info()

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        info = PluginInfo(
            ep.name,
            dist.name if dist is not None else "?",
            dist.version if dist is not None else "?",
        )
        try:
            plugin = ep.load()
            manager.register(plugin, name=ep.value)
        except Exception as exc:  # a broken plugin must not stop the others
            registry.failures[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        infos[ep.value] = info
    for index, plugin in enumerate(extra or []):
        name = getattr(plugin, "__name__", f"extra-{index}")
        manager.register(plugin, name=name)
        infos[name] = PluginInfo(name, "(registered in code)", "-")

    # Each implementation is called on its own, so a failing plugin is named and skipped
    # and everything it registers is traced back to its distribution. They are taken in
    # registration order (the core first), not in pluggy's call order, so tryfirst or
    # trylast on a hook cannot decide who provides what.
    order = {name: i for i, name in enumerate(infos)}

    def registered(impls: list[pluggy.HookImpl]) -> list[pluggy.HookImpl]:
        return sorted(impls, key=lambda impl: order.get(impl.plugin_name, len(order)))

    for impl in registered(manager.hook.binder_types.get_hookimpls()):
        info = infos.get(impl.plugin_name, PluginInfo(impl.plugin_name, "?", "?"))
        for binder_type in _results(impl, info, registry):
            if not isinstance(binder_type, BinderType):
                registry.failures[info.name] = f"binder_types returned {binder_type!r}"
                continue
            registry.binder_types.add(binder_type, info)
            registry.origin.setdefault(f"binder:{binder_type.name}", info)
    for impl in registered(manager.hook.message_converters.get_hookimpls()):
        info = infos.get(impl.plugin_name, PluginInfo(impl.plugin_name, "?", "?"))
        for converter in _results(impl, info, registry):
            if not isinstance(converter, Converter):
                registry.failures[info.name] = f"message_converters returned {converter!r}"
                continue
            key = converter.content_type.lower()
            if key in registry.converters:
                other = registry.origin[f"converter:{key}"]
                registry.failures[info.name] = (
                    f"content type '{key}' is already provided by {other.distribution}; "
                    f"the converter of {info.distribution} is not used"
                )
                continue
            registry.converters[key] = converter
            registry.origin[f"converter:{key}"] = info
    return registry


def _results(impl: pluggy.HookImpl, info: PluginInfo, registry: Registry) -> list[object]:
    try:
        result: Any = impl.function()
        return list(result or [])
    except Exception as exc:
        registry.failures[info.name] = f"{type(exc).__name__}: {exc}"
        log.warning("binder plugin %r failed: %s", info.name, exc)
        return []


def _core_info() -> PluginInfo:
    try:
        return PluginInfo("core", "binder", metadata.version("binder"))
    except metadata.PackageNotFoundError:
        return PluginInfo("core", "binder", "source")
