"""Registers the rabbit binder through the same hook a third-party binder uses.

pika is imported only when a rabbit binder is built, so apps that do not use RabbitMQ do
not pay for it at start-up.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable
from typing import Any

from binder_core.hookspecs import hookimpl
from binder_core.spi import Binder, BinderType
from binders.rabbit.settings import (
    RabbitConsumerProperties,
    RabbitEnvironment,
    RabbitProducerProperties,
)

#: AMQP 0-9-1 short strings: exchange and queue names are at most 255 bytes (UTF-8).
MAX_NAME_BYTES = 255
#: What the binder appends to a group's queue for its dead-letter queue.
DLQ_SUFFIX = ".dlq"


def check_name(kind: str, name: str) -> str | None:
    """RabbitMQ's naming rules, checked at configuration load: exchange and queue names
    are at most 255 UTF-8 bytes, which includes a group's queue ``<destination>.<group>``
    and its dead-letter queue ``<destination>.<group>.dlq``."""
    size = len(name.encode("utf-8", "replace"))
    if kind == "destination":
        if not name:
            return "an exchange name cannot be empty (that is the broker's default exchange)"
        if size > MAX_NAME_BYTES:
            return f"it is {size:,} bytes in UTF-8; RabbitMQ allows at most {MAX_NAME_BYTES}"
    elif kind == "group":
        if not name:
            return "a group cannot be empty (leave group out for an anonymous subscription)"
        if size > MAX_NAME_BYTES:
            return f"it is {size:,} bytes in UTF-8; RabbitMQ allows at most {MAX_NAME_BYTES}"
    elif kind == "subscription":
        dlq = size + len(DLQ_SUFFIX)
        if dlq > MAX_NAME_BYTES:
            return (
                f"with its dead-letter queue '<queue>{DLQ_SUFFIX}' that is {dlq:,} bytes in "
                f"UTF-8; RabbitMQ allows at most {MAX_NAME_BYTES} (shorten the destination "
                "or the group)"
            )
    return None


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
            check_name=check_name,
        )
    ]


#: AMQP reply code of a passive declare for something that does not exist.
_NOT_FOUND = 404


@hookimpl
def destination_exists(binder: Binder, destination: str) -> Awaitable[bool] | None:
    """Whether the exchange exists: a passive declare, which never creates it."""
    module = sys.modules.get("binders.rabbit.binder")  # loaded by then if binder is ours
    if module is None or not isinstance(binder, module.RabbitBinder):
        return None
    return _exchange_exists(binder, destination)


async def _exchange_exists(binder: Any, exchange: str) -> bool:
    from binders.rabbit.connection import ChannelLost

    chan = await binder.connection.open_channel()
    # pika warns of every channel the broker closes; here that is the expected answer.
    quiet = logging.getLogger("pika.channel")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        await chan.rpc(chan.raw.exchange_declare, exchange=exchange, passive=True)
    except ChannelLost as exc:
        if exc.code == _NOT_FOUND:
            return False  # the broker closed the channel; nothing else to release
        raise
    finally:
        quiet.setLevel(level)
    await chan.close()
    return True
