"""Dead-lettering a batch's failures, as Spring's Rabbit binder does it.

With ``republish-to-dlq`` (the default) a failed message is published again, with the
original properties and body, to the dead-letter exchange with the queue name as routing key
(the DLQ is bound with it), carrying why it failed (``x-exception-message``,
``x-exception-stacktrace``, ``x-exception-fqcn``) and where it came from
(``x-original-exchange``, ``x-original-routingKey``); the input is acknowledged only once
RabbitMQ confirmed the dead letter. Without it, the failure is rejected (``requeue=false``)
and RabbitMQ dead-letters it through the queue's ``x-dead-letter-exchange``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from binder_core.deadletter import exception_headers
from binder_core.errors import DeliveryError
from binder_core.message import Message
from binders.rabbit.connection import Connection
from binders.rabbit.headers import TableProperties
from binders.rabbit.provisioning import ConsumerQueue
from binders.rabbit.publisher import Item, Publisher
from binders.rabbit.settings import RabbitConsumerProperties

log = logging.getLogger(__name__)

ORIGINAL_EXCHANGE = "x-original-exchange"
ORIGINAL_ROUTING_KEY = "x-original-routingKey"


class DeadLetters:
    """The dead-lettering of one consumer binding."""

    def __init__(
        self,
        binding: str,
        ext: RabbitConsumerProperties,
        queue: ConsumerQueue,
        connection: Callable[[], Awaitable[Connection]],
    ) -> None:
        self._name = binding
        self._ext = ext
        self._queue = queue
        self._connection = connection
        self._publisher: Publisher | None = None

    async def close(self) -> None:
        """Close the republishing channel, if one was opened."""
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None

    async def handle(
        self,
        batch: Sequence[Message[bytes]],
        methods: Sequence[Any],
        props: Sequence[Any],
        outcomes: Sequence[tuple[int, Exception]],
    ) -> list[int]:
        """Republish failures to the DLQ (or pick them for rejection); return the delivery
        tags to reject."""
        failed = [i for i, _ in outcomes]
        errors = dict(outcomes)
        queue = self._queue
        last = type(outcomes[-1][1]).__name__
        if queue.anonymous:
            log.error(
                "binding %s: %d failed message(s) dropped: an anonymous subscription has no "
                "dead-letter queue (give the binding a group); last error: %s",
                self._name,
                len(failed),
                last,
            )
            return []
        if queue.dlx is None:
            if self._ext.auto_bind_dlq:
                log.warning(
                    "binding %s: rejecting %d failed message(s); RabbitMQ dead-letters them to "
                    "the DLQ; last error: %s",
                    self._name,
                    len(failed),
                    last,
                )
            else:
                log.error(
                    "binding %s: rejecting %d failed message(s) without a dead-letter queue "
                    "(auto-bind-dlq is false); last error: %s",
                    self._name,
                    len(failed),
                    last,
                )
            return [methods[i].delivery_tag for i in failed]
        mode = 2 if self._ext.republish_delivery_mode == "PERSISTENT" else 1
        items: list[Item] = []
        for i in failed:
            exc = errors[i]
            method, p = methods[i], props[i]
            headers = dict(p.headers or {})
            headers.update(exception_headers(exc))
            headers[ORIGINAL_EXCHANGE] = method.exchange
            headers[ORIGINAL_ROUTING_KEY] = method.routing_key
            # The original properties, bar the TTL (a dead letter must not vanish) and the
            # user id (RabbitMQ checks it against whoever publishes).
            dead = TableProperties(
                content_type=p.content_type,
                content_encoding=p.content_encoding,
                headers=headers,
                delivery_mode=mode,
                priority=p.priority,
                correlation_id=p.correlation_id,
                reply_to=p.reply_to,
                message_id=p.message_id,
                timestamp=p.timestamp,
                type=p.type,
                app_id=p.app_id,
            )
            items.append((queue.dlq_routing_key, batch[i].payload, dead))
        if self._publisher is None:
            self._publisher = Publisher(await self._connection())
        failures = await self._publisher.publish(queue.dlx, items, mandatory=True)
        log.warning(
            "binding %s: %d failed message(s) republished to the dead-letter exchange '%s' "
            "(routing key '%s'); last error: %s",
            self._name,
            len(failed) - len(failures),
            queue.dlx,
            queue.dlq_routing_key,
            last,
        )
        if failures:
            first = failures[min(failures)]
            if not queue.rejects_to_dlx:
                # Rejecting would drop them (the queue dead-letters nothing itself): the
                # batch is delivered again, and dead-lettered once the DLX takes it.
                raise DeliveryError(
                    f"{len(failures)} failed message(s) could not be republished to the "
                    f"dead-letter exchange '{queue.dlx}' ({first}); delivering the batch again"
                )
            log.error(
                "binding %s: %d failed message(s) could not be republished (%s); rejecting them "
                "(the queue dead-letters them to its dead-letter exchange)",
                self._name,
                len(failures),
                first,
            )
        return [methods[failed[j]].delivery_tag for j in sorted(failures)]
