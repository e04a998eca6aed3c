"""Registers the Kafka binder through the same hook a third-party binder uses.

Importing this module must stay cheap: aiokafka is imported only when an app actually
creates a Kafka binder (inside the factory), never by ``binder plugins`` or by apps on
other brokers.
"""

from __future__ import annotations

import re
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

#: Kafka's own limits on topic names (its Topic.validate): length and legal characters.
MAX_TOPIC_LENGTH = 249
_ILLEGAL = re.compile(r"[^a-zA-Z0-9._-]")


def check_name(kind: str, name: str) -> str | None:
    """Kafka's naming rules, checked at configuration load: a topic name is 1 to 249
    characters of ASCII letters, digits, '.', '_' and '-', and not '.' or '..'; a group
    id is not empty."""
    if kind == "destination":
        if not name:
            return "a topic name cannot be empty"
        if name in (".", ".."):
            return "'.' and '..' are not allowed as topic names"
        if len(name) > MAX_TOPIC_LENGTH:
            return f"it has {len(name):,} characters; Kafka allows at most {MAX_TOPIC_LENGTH}"
        bad = sorted(set(_ILLEGAL.findall(name)))
        if bad:
            found = ", ".join(repr(c) for c in bad[:5]) + (", ..." if len(bad) > 5 else "")
            return f"Kafka takes only ASCII letters, digits, '.', '_' and '-' (found {found})"
    elif kind == "group" and not name:
        return "a group id cannot be empty (leave group out for an anonymous subscription)"
    return None


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
            check_name=check_name,
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
