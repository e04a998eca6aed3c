"""The plugin module: what the ``binder_core.plugins`` entry point names.

It registers the ``redis`` binder type through the public hook, exactly as the built-in
binders do. redis-py is imported inside the factory, so discovering this plugin (every
``binder`` start does) costs only pydantic models.
"""

from __future__ import annotations

from typing import Any

from binder_core.hookspecs import hookimpl
from binder_core.spi import Binder, BinderType
from binder_redis.settings import (
    RedisConsumerProperties,
    RedisEnvironment,
    RedisProducerProperties,
)

#: UTF-8 bytes of a destination or group name. Redis keys are binary-safe up to 512 MB,
#: but every entry and every claim carries the key and group: a sane bound keeps a
#: mistaken (or hostile) name from costing memory on every command.
MAX_NAME_BYTES = 1024


def check_name(kind: str, name: str) -> str | None:
    """The Redis binder's naming rules: stream keys and group names are not empty and at
    most 1,024 UTF-8 bytes."""
    if kind not in ("destination", "group"):
        return None
    if not name:
        if kind == "group":
            return "a group cannot be empty (leave group out for an anonymous subscription)"
        return "a stream name cannot be empty"
    size = len(name.encode("utf-8", "replace"))
    if size > MAX_NAME_BYTES:
        return f"it is {size:,} bytes in UTF-8; the Redis binder takes at most {MAX_NAME_BYTES:,}"
    return None


def _create(name: str, environment: Any) -> Binder:
    from binder_redis.binder import RedisBinder

    return RedisBinder(name, environment)


@hookimpl
def binder_types() -> list[BinderType]:
    """The ``redis`` binder type."""
    return [
        BinderType(
            name="redis",
            factory=_create,
            environment=RedisEnvironment,
            consumer=RedisConsumerProperties,
            producer=RedisProducerProperties,
            description="Redis Streams (redis-py): consumer groups, claims, DLQ streams",
            check_name=check_name,
        )
    ]
