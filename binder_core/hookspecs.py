"""The plugin contract. This file is what a plugin author implements.

A plugin is a module (or object) with functions marked ``@hookimpl`` named as below,
registered through the entry-point group ``binder_core.plugins``::

    [project.entry-points."binder_core.plugins"]
    redis = "binder_redis.plugin"

The built-in memory, Kafka and RabbitMQ binders are plugins of exactly these hooks.
Keep the plugin module cheap to import: import the broker library inside the binder
factory, so apps that do not use the binder never pay for it.
"""

from __future__ import annotations

from collections.abc import Awaitable

import pluggy

from binder_core.spi import Binder, BinderType, Converter

PROJECT = "binder_core"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Mark your hook implementations with this.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def binder_types() -> list[BinderType]:  # type: ignore[empty-body]
    """Binder types this plugin provides.

    Each ``BinderType`` names the type (used as ``type:`` in YAML and as the section
    ``stream.<type>``), its factory, and the pydantic models of its ``environment`` and of
    its consumer and producer binding properties. Names must be unique across plugins.
    """


@hookspec
def message_converters() -> list[Converter]:  # type: ignore[empty-body]
    """Message converters this plugin provides, one per content type.

    A converter decodes payload bytes into plain Python data and encodes values back; the
    core validates decoded data into the type a function declares.
    """


@hookspec(firstresult=True)
def destination_exists(binder: Binder, destination: str) -> Awaitable[bool] | None:
    """Whether ``destination`` exists on the broker of ``binder`` (a started binder).

    Used by commands that read a destination and must not create it (``binder tail``):
    they say the destination is missing instead of provisioning it. Return ``None`` when
    ``binder`` is not one of yours (or its broker cannot tell), otherwise an awaitable of
    the answer; the first plugin that answers decides. Optional: without an answer the
    command goes on as before.
    """
