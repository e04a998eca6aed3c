"""Discovering plugins through entry points and collecting what they register.

A plugin that fails to import is reported by name with its error; the others keep
working, so one broken package cannot take every app down.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from binder_core import hookspecs
from binder_core.spi import BinderType, Converter

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "binder_core.plugins"


@dataclass(frozen=True)
class PluginInfo:
    """Where something registered came from, for ``binder plugins``."""

    name: str
    distribution: str
    version: str


@dataclass
class Registry:
    """Binder types and converters from every plugin that loaded."""

    binder_types: dict[str, BinderType] = field(default_factory=dict)
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
    # and everything it registers is traced back to its distribution.
    for impl in manager.hook.binder_types.get_hookimpls():
        info = infos.get(impl.plugin_name, PluginInfo(impl.plugin_name, "?", "?"))
        for binder_type in _results(impl, info, registry):
            if not isinstance(binder_type, BinderType):
                registry.failures[info.name] = f"binder_types returned {binder_type!r}"
            elif binder_type.name in registry.binder_types:
                other = registry.origin[f"binder:{binder_type.name}"]
                registry.failures[info.name] = (
                    f"binder type '{binder_type.name}' is already provided by {other.distribution}"
                )
            else:
                registry.binder_types[binder_type.name] = binder_type
                registry.origin[f"binder:{binder_type.name}"] = info
    for impl in manager.hook.message_converters.get_hookimpls():
        info = infos.get(impl.plugin_name, PluginInfo(impl.plugin_name, "?", "?"))
        for converter in _results(impl, info, registry):
            if not isinstance(converter, Converter):
                registry.failures[info.name] = f"message_converters returned {converter!r}"
                continue
            key = converter.content_type.lower()
            registry.converters.setdefault(key, converter)
            registry.origin.setdefault(f"converter:{key}", info)
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


def import_module(name: str) -> ModuleType:
    """Import an app module by dotted name (kept here so the CLI and tests share it)."""
    return importlib.import_module(name)
