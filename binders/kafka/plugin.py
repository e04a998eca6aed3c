"""Registers the Kafka binder through the same hook a third-party binder uses.

Importing this module must stay cheap: aiokafka is imported only when an app actually
creates a Kafka binder (inside the factory), never by ``binder plugins`` or by apps on
other brokers.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable
from typing import Any

from binder_core.hookspecs import hookimpl
from binder_core.spi import Binder, BinderType
from binders.kafka.settings import (
    KafkaConsumerProperties,
    KafkaEnvironment,
    KafkaProducerProperties,
)


def _create(name: str, environment: Any) -> Binder:
    from binders.kafka.binder import KafkaBinder

    return KafkaBinder(name, environment)


@hookimpl
def binder_types() -> list[BinderType]:
    """The ``kafka`` binder type."""
    return [
        BinderType(
            name="kafka",
            factory=_create,
            environment=KafkaEnvironment,
            consumer=KafkaConsumerProperties,
            producer=KafkaProducerProperties,
            description="Apache Kafka through aiokafka: groups, partitions, DLQ, transactions",
        )
    ]


@hookimpl
def destination_exists(binder: Binder, destination: str) -> Awaitable[bool] | None:
    """Whether the topic exists, asked through a started Kafka binder's admin client."""
    module = sys.modules.get("binders.kafka.binder")  # loaded by then if binder is ours
    if module is None or not isinstance(binder, module.KafkaBinder):
        return None
    return _topic_exists(binder, destination)


async def _topic_exists(binder: Any, topic: str) -> bool:
    return await binder.provisioner.partitions(topic) is not None
