"""Registers the memory binder through the same hook a third-party binder uses."""

from __future__ import annotations

from typing import Any

from binder_core.hookspecs import hookimpl
from binder_core.spi import Binder, BinderType
from binders.memory.settings import MemoryConsumerProperties, MemoryEnvironment

#: Characters of a destination or group name: no broker behind it, but a name is kept in
#: memory (and in every dead letter's headers), so a megabyte-long one is refused.
MAX_NAME_LENGTH = 1024


def check_name(kind: str, name: str) -> str | None:
    """The memory binder's naming rules: names are not empty and at most 1,024 characters."""
    if kind not in ("destination", "group"):
        return None
    if not name:
        if kind == "group":
            return "a group cannot be empty (leave group out for an anonymous subscription)"
        return "a destination name cannot be empty"
    if len(name) > MAX_NAME_LENGTH:
        return (
            f"it has {len(name):,} characters; the memory binder takes at most {MAX_NAME_LENGTH:,}"
        )
    return None


def _create(name: str, environment: Any) -> Binder:
    from binders.memory.binder import MemoryBinder

    return MemoryBinder(name, environment)


@hookimpl
def binder_types() -> list[BinderType]:
    """The ``memory`` binder type."""
    return [
        BinderType(
            name="memory",
            factory=_create,
            environment=MemoryEnvironment,
            consumer=MemoryConsumerProperties,
            description="in-process destinations with groups, partitions and back-pressure",
            check_name=check_name,
        )
    ]
