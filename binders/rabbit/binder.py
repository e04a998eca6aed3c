"""The RabbitMQ binder: the Binder SPI over pika, with Spring Cloud Stream's topology.

Two connections per binder, as Spring has: consumers (and the topology they need) on one,
publishers on the other, so a broker that blocks publishers under memory pressure does not
also stop the consumers that would drain it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from binder_core.spi import Capability, ConsumerSpec, Health, ProducerSpec
from binders.rabbit.connection import Connection
from binders.rabbit.consumer import RabbitSubscription
from binders.rabbit.deadletter import DeadLetters
from binders.rabbit.producer import RabbitSink
from binders.rabbit.provisioning import Topology
from binders.rabbit.publisher import Publisher
from binders.rabbit.settings import (
    RabbitConsumerProperties,
    RabbitEnvironment,
    RabbitProducerProperties,
)

if TYPE_CHECKING:
    from binders.rabbit.deadletters import RabbitDeadLetters

log = logging.getLogger(__name__)


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
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self.connection.start()
            self._started = True
            connection = self.connection
            log.info(
                "rabbit binder %s connected to %s%s",
                self.name,
                connection.where,
                connection.on_node,
            )

    async def publisher_connection(self) -> Connection:
        """The publishing connection, opened on first use."""
        async with self._publisher_lock:
            if self._publisher_connection is None:
                conn = Connection(self.environment, self.name, "publisher")
                await conn.start()
                self._publisher_connection = conn
            return self._publisher_connection

    async def provision_producer(self, spec: ProducerSpec) -> RabbitSink:
        ext = spec.extension
        if not isinstance(ext, RabbitProducerProperties):
            ext = RabbitProducerProperties()
        props = spec.properties
        exchange = await self.topology.provision_producer(
            spec.destination, ext, list(props.required_groups), props.partition_count
        )
        return RabbitSink(Publisher(await self.publisher_connection()), exchange, spec, ext)

    async def provision_consumer(self, spec: ConsumerSpec) -> RabbitSubscription:
        """Declare exchange, queue, bindings and DLQ (an anonymous queue lives as long as
        its binding)."""
        ext = spec.extension
        if not isinstance(ext, RabbitConsumerProperties):
            ext = RabbitConsumerProperties()
        props = spec.properties
        queue = await self.topology.provision_consumer(
            spec.destination,
            spec.group,
            ext,
            props.partitioned,
            props.instance_index or 0,
        )
        dead_letters = DeadLetters(spec.binding, ext, queue, self.publisher_connection)
        return RabbitSubscription(
            spec,
            ext,
            self.connection,
            self.topology,
            queue,
            dead_letters,
            self.environment.shutdown_timeout / 1000,
        )

    def dead_letters(self) -> RabbitDeadLetters:
        """Dead-letter access for ``binder dlq`` (``binder_core.dlq``)."""
        from binders.rabbit.deadletters import RabbitDeadLetters

        return RabbitDeadLetters(self)

    async def health(self) -> Health:
        connections = [self.connection, self._publisher_connection]
        reconnects = sum(max(0, c.generation - 1) for c in connections if c is not None)
        up = all(c.is_up for c in connections if c is not None)
        where = self.connection.where
        detail = (
            f"connected to {where}{self.connection.on_node}" if up else f"not connected to {where}"
        )
        return Health(up, detail, reconnects)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.topology.close()
        if self._publisher_connection is not None:
            await self._publisher_connection.close()
            self._publisher_connection = None
        await self.connection.close()
        self._started = False
