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
        )
    ]
