"""The Redis Streams binder: destinations are streams, groups are consumer groups.

Topology, for destination ``ticks`` and the default ``key-prefix`` ``binder:``:

* stream ``binder:ticks`` (or ``binder:ticks-<n>`` for each partition ``n`` when a producer's
  ``partition-count`` is above 1); producers XADD to it, pipelined, one round trip a batch;
* consumer group ``<group>`` on it, created (XGROUP CREATE ... MKSTREAM) by the first
  consumer or by a producer's ``required-groups``; an anonymous binding gets a group of its
  own, ``anonymous.<random>``, deleted when it stops;
* dead letters in stream ``binder:ticks.<group>.dlq``.

The consumer loop, retries and conversion are the core's; this package supplies the Redis
commands (``consumer.py``, ``producer.py``) over one client (``client.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from binder_core.spi import Capability, ConsumerSpec, Health, ProducerSpec
from binder_redis.client import RedisClient
from binder_redis.consumer import RedisSubscription
from binder_redis.producer import RedisSink
from binder_redis.settings import (
    RedisConsumerProperties,
    RedisEnvironment,
    RedisProducerProperties,
)

if TYPE_CHECKING:
    from binder_redis.deadletters import RedisDeadLetters

#: XGROUP CREATE start id of groups a producer's required-groups creates: the beginning,
#: so even what was sent before the producer bound is kept for them.
EARLIEST = b"0"


class RedisBinder:
    """Streams on one Redis server (or one endpoint that fronts it)."""

    capabilities = frozenset(
        {
            Capability.GROUPS,
            Capability.ORDERING,
            Capability.PARTITIONS,
            Capability.DEAD_LETTER,
            Capability.PAUSE,
            Capability.PERSISTENCE,
            Capability.CROSS_PROCESS,
            Capability.REQUIRED_GROUPS,
        }
    )

    def __init__(self, name: str, environment: RedisEnvironment | None = None) -> None:
        self.name = name
        self.environment = environment or RedisEnvironment()
        self.client = RedisClient(name, self.environment)

    async def start(self) -> None:
        await self.client.connect()

    async def provision_producer(self, spec: ProducerSpec) -> RedisSink:
        ext = spec.extension
        ext = ext if isinstance(ext, RedisProducerProperties) else RedisProducerProperties()
        count = spec.properties.partition_count
        client = self.client
        keys = client.keys(spec.destination, count)
        if count > 1:
            await client.declare_partitions(spec.destination, count)
        for group in spec.properties.required_groups:
            for key in keys:
                await client.create_group(key, group, EARLIEST)
        return RedisSink(client, spec.destination, keys, ext)

    async def provision_consumer(self, spec: ConsumerSpec) -> RedisSubscription:
        ext = spec.extension
        ext = ext if isinstance(ext, RedisConsumerProperties) else RedisConsumerProperties()
        subscription = RedisSubscription(self.client, spec, ext)
        await subscription.provision()
        return subscription

    def dead_letters(self) -> RedisDeadLetters:
        """Dead-letter access for ``binder dlq`` (the core's dead-letter SPI)."""
        from binder_redis.deadletters import RedisDeadLetters

        return RedisDeadLetters(self)

    async def health(self) -> Health:
        if self.client.up:
            return Health(True, "Redis answers")
        return Health(False, "Redis does not answer")

    async def close(self) -> None:
        await self.client.close()
