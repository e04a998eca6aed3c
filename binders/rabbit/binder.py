"""The RabbitMQ binder: the Binder SPI over pika, with Spring Cloud Stream's topology.

Two connections per binder, as Spring has: consumers (and the topology they need) on one,
publishers on the other, so a broker that blocks publishers under memory pressure does not
also stop the consumers that would drain it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from binder_core.errors import DeliveryError
from binder_core.expression import ExpressionError, compile_expression
from binder_core.message import Message
from binder_core.spi import (
    Binding,
    Capability,
    ConsumerSpec,
    Handle,
    Producer,
    ProducerSpec,
)
from binders.rabbit.connection import Connection
from binders.rabbit.consumer import RabbitBinding
from binders.rabbit.headers import PropertiesMaker
from binders.rabbit.provisioning import ProvisioningError, Topology
from binders.rabbit.publisher import Publisher
from binders.rabbit.settings import (
    RabbitConsumerProperties,
    RabbitEnvironment,
    RabbitProducerProperties,
)

log = logging.getLogger(__name__)


class RabbitProducer:
    """Publishes batches to one exchange and returns once RabbitMQ confirmed all of them."""

    def __init__(
        self,
        publisher: Publisher,
        exchange: str,
        spec: ProducerSpec,
        ext: RabbitProducerProperties,
    ) -> None:
        self._publisher = publisher
        self.exchange = exchange
        self._mandatory = ext.mandatory
        self.properties = PropertiesMaker(2 if ext.delivery_mode == "PERSISTENT" else 1)
        self._route = router(spec.destination, ext, spec.properties.partition_count)

    async def send(self, messages: Sequence[Message[bytes]]) -> None:
        if not messages:
            return
        route, props = self._route, self.properties
        try:
            items = [(route(m), m.payload, props(m.headers)) for m in messages]
        except RoutingError as exc:
            raise DeliveryError(f"exchange '{self.exchange}': {exc}") from exc
        failures = await self._publisher.publish(self.exchange, items, self._mandatory)
        if failures:
            first = failures[min(failures)]
            raise DeliveryError(
                f"{len(failures)} of {len(messages)} message(s) to exchange '{self.exchange}' "
                f"not accepted: {first}"
            )

    async def close(self) -> None:
        await self._publisher.close()


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
    from_payload = expression.strip().startswith("payload")

    def computed(m: Message[bytes]) -> str:
        payload: Any = m.payload
        if from_payload:
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise RoutingError(
                    f"routing-key-expression '{expression}' needs a JSON payload"
                ) from exc
        key = evaluate(payload, m.headers)
        if key is None:
            raise RoutingError(f"routing-key-expression '{expression}' gave no value")
        if partitioned:
            p = m.partition
            return f"{key}-{next(spread) % partition_count if p is None else p}"
        return str(key)

    return computed


def _quiet_pika() -> None:
    """pika reports every socket event at INFO, and each failed connection attempt (which
    our reconnect loop reports once, with its cause) as several ERROR lines. Keep it to
    warnings, and its connection workflow silent, unless the app set those levels itself."""
    for name, level in (
        ("pika", logging.WARNING),
        ("pika.adapters.utils.connection_workflow", logging.CRITICAL),
        ("pika.adapters.utils.io_services_utils", logging.CRITICAL),
    ):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


class RabbitBinder:
    """Destinations are exchanges; groups are durable queues; failures go to DLQs."""

    capabilities = frozenset(
        {
            Capability.GROUPS,
            Capability.PARTITIONS,
            Capability.DEAD_LETTER,
            Capability.PAUSE,
            Capability.PERSISTENCE,
            Capability.CROSS_PROCESS,
            Capability.REQUIRED_GROUPS,
            # Kept per partition (and per queue) while each queue has one consumer with
            # concurrency 1, the default: RabbitMQ delivers a queue in order and the core
            # retries in place.
            Capability.ORDERING,
        }
    )

    def __init__(self, name: str, environment: RabbitEnvironment | None = None) -> None:
        _quiet_pika()
        self.name = name
        self.environment = environment or RabbitEnvironment()
        self.connection = Connection(self.environment, name, "consumer")
        self.topology = Topology(self.connection)
        self._publisher_connection: Connection | None = None
        self._publisher_lock = asyncio.Lock()
        self._bindings: list[RabbitBinding] = []
        self._producers: list[RabbitProducer] = []
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self.connection.start()
            self._started = True
            log.info("rabbit binder %s connected to %s", self.name, self.connection.where)

    async def publisher_connection(self) -> Connection:
        """The publishing connection, opened on first use."""
        async with self._publisher_lock:
            if self._publisher_connection is None:
                conn = Connection(self.environment, self.name, "publisher")
                await conn.start()
                self._publisher_connection = conn
            return self._publisher_connection

    async def producer(self, spec: ProducerSpec) -> Producer:
        ext = spec.extension
        if not isinstance(ext, RabbitProducerProperties):
            ext = RabbitProducerProperties()
        props = spec.properties
        exchange = await self.topology.provision_producer(
            spec.destination, ext, list(props.required_groups), props.partition_count
        )
        publisher = Publisher(await self.publisher_connection())
        producer = RabbitProducer(publisher, exchange, spec, ext)
        self._producers.append(producer)
        return producer

    async def consumer(self, spec: ConsumerSpec, handle: Handle) -> Binding:
        ext = spec.extension
        if not isinstance(ext, RabbitConsumerProperties):
            ext = RabbitConsumerProperties()
        binding = RabbitBinding(self, spec, ext, handle)
        await binding.provision()
        self._bindings.append(binding)
        if spec.properties.auto_startup:
            await binding.start()
        return binding

    async def close(self) -> None:
        for binding in self._bindings:
            try:
                await binding.stop()
            except Exception as exc:
                log.error("rabbit binding %s did not stop cleanly: %s", binding.name, exc)
        self._bindings.clear()
        for producer in self._producers:
            with contextlib.suppress(Exception):
                await producer.close()
        self._producers.clear()
        with contextlib.suppress(Exception):
            await self.topology.close()
        if self._publisher_connection is not None:
            await self._publisher_connection.close()
            self._publisher_connection = None
        await self.connection.close()
        self._started = False
