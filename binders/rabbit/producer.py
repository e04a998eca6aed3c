"""Producing to RabbitMQ: a ``Sink`` per output binding over the binder's publishing
connection, with Spring's routing (the destination as routing key, ``routing-key`` or
``routing-key-expression``, ``-<partition>`` on a partitioned destination).

An outbox starts publishing a slice the moment it is added (the frames go out while the
core goes on), and ``confirm`` waits for the publisher confirms: so when the core overlaps
batches, one batch's outputs are on their way to the broker's disk while the next batch is
processed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from binder_core.errors import DeliveryError, ProducerClosedError
from binder_core.expression import EvaluationError, ExpressionError, compile_expression
from binder_core.message import Message
from binder_core.spi import ProducerSpec
from binders.rabbit.headers import PropertiesMaker
from binders.rabbit.provisioning import ProvisioningError
from binders.rabbit.publisher import Item, Publisher
from binders.rabbit.settings import RabbitProducerProperties


class RabbitOutbox:
    """The outputs of one input batch for one exchange."""

    __slots__ = ("_refused", "_sink", "_sizes", "_tasks")

    def __init__(self, sink: RabbitSink) -> None:
        self._sink = sink
        self._tasks: list[asyncio.Future[dict[int, str]]] = []
        self._sizes: list[int] = []
        self._refused: dict[int, Exception] = {}  # message index -> why it was not sent

    async def add(self, messages: Sequence[Message[bytes]]) -> int | None:
        sink = self._sink
        if sink.publisher.closed:
            raise ProducerClosedError(f"cannot publish to exchange '{sink.exchange}': closed")
        base = sum(self._sizes)
        route, props = sink.route, sink.properties
        where: list[int] | None = None  # positions of the items, when some were left out
        try:
            items = [(route(m), m.payload, props(m.headers)) for m in messages]
        except RoutingError:
            # Some message's routing key cannot be computed: those fail, the others go.
            items, where = [], []
            for k, m in enumerate(messages):
                try:
                    items.append((route(m), m.payload, props(m.headers)))
                    where.append(k)
                except RoutingError as exc:
                    self._refused[base + k] = DeliveryError(f"exchange '{sink.exchange}': {exc}")
        self._sizes.append(len(messages))
        # Published from a task of its own, started now: its frames go out while the core
        # goes on, in the order the slices were added.
        self._tasks.append(asyncio.ensure_future(self._publish(items, where)))
        return None

    async def _publish(self, items: list[Item], where: list[int] | None) -> dict[int, str]:
        sink = self._sink
        if not items:
            return {}
        failures = await sink.publisher.publish(sink.exchange, items, sink.mandatory)
        if where is None or not failures:
            return failures
        return {where[k]: why for k, why in failures.items()}

    async def confirm(self) -> list[Exception | None]:
        results: list[Exception | None] = [None] * sum(self._sizes)
        if not self._tasks:
            return results
        try:
            answers = await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                if not task.done():
                    task.cancel()
        exchange = self._sink.exchange
        base = 0
        for size, failures in zip(self._sizes, answers, strict=True):
            for k, why in failures.items():
                results[base + k] = DeliveryError(f"exchange '{exchange}' did not accept: {why}")
            base += size
        for index, exc in self._refused.items():
            results[index] = exc
        return results


class RabbitSink:
    """Publishes to one exchange (the SPI's ``Sink``), on its own confirm channel."""

    def __init__(
        self,
        publisher: Publisher,
        exchange: str,
        spec: ProducerSpec,
        ext: RabbitProducerProperties,
    ) -> None:
        self.publisher = publisher
        self.exchange = exchange
        self.mandatory = ext.mandatory
        self.properties = PropertiesMaker(2 if ext.delivery_mode == "PERSISTENT" else 1)
        self.route = router(spec.destination, ext, spec.properties.partition_count)

    def outbox(self, transaction: Any = None) -> RabbitOutbox:
        if self.publisher.closed:
            raise ProducerClosedError(f"cannot publish to exchange '{self.exchange}': closed")
        return RabbitOutbox(self)

    async def close(self) -> None:
        await self.publisher.close()


class RoutingError(ValueError):
    """A message's routing key could not be computed."""


def router(
    destination: str, ext: RabbitProducerProperties, partition_count: int
) -> Callable[[Message[bytes]], str]:
    """Message -> routing key, chosen once per producer: the destination name (Spring's
    default), ``routing-key``, or ``routing-key-expression``; with ``-<partition>``
    appended on a partitioned destination (Spring's partition routing)."""
    partitioned = partition_count > 1
    spread = itertools.count()
    expression = ext.routing_key_expression
    if expression is None:
        base = ext.routing_key or destination
        if not partitioned:
            return lambda m: base

        def static(m: Message[bytes]) -> str:
            p = m.partition
            return f"{base}-{next(spread) % partition_count if p is None else p}"

        return static
    try:
        evaluate = compile_expression(expression)
    except ExpressionError as exc:
        raise ProvisioningError(f"routing-key-expression: {exc}") from exc
    from_payload = re.search(r"\bpayload\b", expression) is not None

    def computed(m: Message[bytes]) -> str:
        payload: Any = m.payload
        if from_payload:
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise RoutingError(
                    f"routing-key-expression '{expression}' needs a JSON payload"
                ) from exc
        try:
            key = evaluate(payload, m.headers)
        except EvaluationError as exc:
            raise RoutingError(f"routing-key-expression '{expression}': {exc}") from None
        if key is None:
            raise RoutingError(f"routing-key-expression '{expression}' gave no value")
        if partitioned:
            p = m.partition
            return f"{key}-{next(spread) % partition_count if p is None else p}"
        return str(key)

    return computed
