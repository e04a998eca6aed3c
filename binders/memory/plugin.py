"""Registers the memory binder through the same hook a third-party binder uses."""

from __future__ import annotations

from typing import Any

from binder_core.hookspecs import hookimpl
from binder_core.spi import Binder, BinderType
from binders.memory.settings import MemoryConsumerProperties, MemoryEnvironment


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
        )
    ]
