"""Registers the rabbit binder through the same hook a third-party binder uses.

pika is imported only when a rabbit binder is built, so apps that do not use RabbitMQ do
not pay for it at start-up.
"""

from __future__ import annotations

from typing import Any

from binder_core.hookspecs import hookimpl
from binder_core.spi import Binder, BinderType
from binders.rabbit.settings import (
    RabbitConsumerProperties,
    RabbitEnvironment,
    RabbitProducerProperties,
)


def _create(name: str, environment: Any) -> Binder:
    from binders.rabbit.binder import RabbitBinder

    return RabbitBinder(name, environment)


@hookimpl
def binder_types() -> list[BinderType]:
    """The ``rabbit`` binder type."""
    return [
        BinderType(
            name="rabbit",
            factory=_create,
            environment=RabbitEnvironment,
            consumer=RabbitConsumerProperties,
            producer=RabbitProducerProperties,
            description="RabbitMQ (pika): exchanges, group queues, DLQs, publisher confirms",
        )
    ]
