"""The Kafka binder: the Binder SPI over aiokafka.

The binder owns the clients: one admin connection for provisioning, producers shared by
bindings with the same settings (Kafka producers are thread- and task-safe, and one
connection set batches better than many), a consumer per binding and ``concurrency``, and a
transactional producer per consumer when transactions are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from typing import TYPE_CHECKING, Any

from binder_core.message import Message
from binder_core.spi import Capability, ConsumerSpec, Health, ProducerSpec
from binders.kafka.clients import ClientConfig, throttle_client_logs
from binders.kafka.consumer import KafkaSubscription
from binders.kafka.producer import KafkaSink, Limits, ProducerSlot, stop_client
from binders.kafka.provisioning import Provisioner, ProvisioningError, describe
from binders.kafka.settings import (
    KafkaConsumerProperties,
    KafkaEnvironment,
    KafkaProducerProperties,
    KafkaTopicProperties,
)

if TYPE_CHECKING:
    from binders.kafka.deadletters import KafkaDeadLetters

log = logging.getLogger(__name__)

#: Seconds between the binder's broker probes (one metadata request each).
HEALTH_PROBE_INTERVAL = 3.0


class KafkaBinder:
    """Topics, consumer groups, partitions, dead-letter topics and transactions on Kafka."""

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
            Capability.TRANSACTIONS,
            Capability.STATE,
        }
    )

    def __init__(self, name: str, environment: KafkaEnvironment | None = None) -> None:
        self.name = name
        self.environment = environment or KafkaEnvironment()
        self.clients = ClientConfig(name, self.environment)
        self.provisioner = Provisioner(name, self.environment, self.clients)
        self._producers: dict[Any, ProducerSlot] = {}
        self._producer_lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        #: False while the brokers do not answer (the clients keep retrying meanwhile).
        self.healthy = False
        #: Times the brokers answered again after they had been lost.
        self.reconnects = 0

    async def start(self) -> None:
        """Reach the brokers (retrying for up to ``health-timeout``)."""
        throttle_client_logs()
        await self.provisioner.connect()
        self.healthy = True
        self._watch = asyncio.get_running_loop().create_task(
            self._watch_brokers(), name=f"kafka-health:{self.name}"
        )

    async def _watch_brokers(self) -> None:
        """Say clearly when the brokers go away and when they are back. aiokafka's clients
        reconnect on their own; its logs say so only in fragments, once per client."""
        loop = asyncio.get_running_loop()
        servers = ",".join(self.environment.servers())
        lost_at: float | None = None
        while True:
            await asyncio.sleep(HEALTH_PROBE_INTERVAL)
            try:
                await asyncio.wait_for(
                    self.provisioner.probe(), min(self.environment.health_timeout, 10.0)
                )
            except Exception as exc:
                if lost_at is None:
                    lost_at = loop.time()
                    self.healthy = False
                    log.warning(
                        "kafka binder '%s': lost the brokers at %s (%s); consumers and "
                        "producers keep retrying and resume on their own",
                        self.name,
                        servers,
                        describe(exc),
                    )
                continue
            if lost_at is not None:
                log.warning(
                    "kafka binder '%s': brokers at %s reachable again after %.0f s",
                    self.name,
                    servers,
                    loop.time() - lost_at,
                )
                lost_at = None
                self.healthy = True
                self.reconnects += 1

    # -- producers -------------------------------------------------------------------------

    def _acks(self) -> Any:
        acks = self.environment.required_acks
        return "all" if acks == "all" else int(acks)

    def _producer_kwargs(
        self, ext: KafkaProducerProperties, config: dict[str, Any]
    ) -> dict[str, Any]:
        base: dict[str, Any] = {
            "client_id": f"binder-{self.name}-producer",
            "acks": self._acks(),
            "max_batch_size": ext.buffer_size,
            "linger_ms": ext.batch_timeout,
            "compression_type": None if ext.compression_type == "none" else ext.compression_type,
        }
        kwargs = self.clients.kwargs("producer", base, config)
        if kwargs.get("acks") in ("all", -1) and "enable_idempotence" not in {
            **self.environment.configuration,
            **self.environment.producer_properties,
            **config,
        }:
            # As the Java client since 3.0: no duplicates or reordering from internal retries.
            kwargs["enable_idempotence"] = True
        return kwargs

    async def _start_client(self, kwargs: dict[str, Any]) -> Any:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        client = AIOKafkaProducer(**kwargs)
        try:
            await asyncio.wait_for(client.start(), self.environment.health_timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), 5)
            raise ProvisioningError(
                f"kafka binder '{self.name}': cannot start a producer ({describe(exc)})"
            ) from None
        return client

    async def _shared_client(
        self, ext: KafkaProducerProperties, config: dict[str, Any]
    ) -> tuple[ProducerSlot, Any]:
        """The started producer client for these settings, and the callable that releases
        it."""
        kwargs = self._producer_kwargs(ext, config)
        key = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "ssl_context"))
        async with self._producer_lock:
            shared = self._producers.get(key)
            if shared is None:
                client = await self._start_client(kwargs)
                shared = self._producers[key] = ProducerSlot(
                    client,
                    lambda: self._start_client(kwargs),
                    ext.close_timeout,
                    Limits.of(kwargs),
                )
            shared.users += 1

        async def release() -> None:
            shared.users -= 1
            if shared.users <= 0 and self._producers.get(key) is shared:
                del self._producers[key]
                await stop_client(shared.client, shared.close_timeout)

        return shared, release

    async def dead_letter_slot(self) -> ProducerSlot:
        """The producer dead letters go through (the binder's default settings)."""
        slot, _ = await self._shared_client(KafkaProducerProperties(), {})
        return slot

    async def transactional_client(
        self, binding: KafkaSubscription, index: int
    ) -> tuple[Any, Limits]:
        """A started transactional producer for one consumer of ``binding``, and its
        limits. Its id is stable across restarts (so a restarted instance fences its
        zombie) and distinct per group, topic, instance-index and consumer."""
        env = self.environment
        txn = env.transaction
        ext = txn.producer
        config = self.clients.check_binding(ext.configuration, "producer", binding.name)
        kwargs = self._producer_kwargs(ext, config)
        kwargs["acks"] = "all"
        kwargs.pop("enable_idempotence", None)
        kwargs["transactional_id"] = (
            f"{txn.transaction_id_prefix}{binding.group}.{binding.topic}."
            f"{binding.instance_index}.{index}"
        )
        kwargs["client_id"] = f"binder-{self.name}-{binding.name}-tx{index}"
        return await self._start_client(kwargs), Limits.of(kwargs)

    async def provision_producer(self, spec: ProducerSpec) -> KafkaSink:
        """Provision the topic (``partition-count`` partitions at least) and return a
        producer for it."""
        ext = spec.extension if isinstance(spec.extension, KafkaProducerProperties) else None
        ext = ext or KafkaProducerProperties()
        config = self.clients.check_binding(ext.configuration, "producer", spec.binding)
        await self.provisioner.ensure_topic(
            spec.destination,
            spec.properties.partition_count,
            fewer="error",
            properties=ext.topic,
            purpose=f"partition-count of binding {spec.binding}",
        )
        acks = self._producer_kwargs(ext, config).get("acks")
        await self.provisioner.warn_if_fragile(spec.destination, acks, spec.binding)
        slot, release = await self._shared_client(ext, config)
        try:
            await asyncio.wait_for(
                slot.client.partitions_for(spec.destination), self.environment.health_timeout
            )
        except BaseException:
            await release()
            raise
        # required-groups need nothing more on Kafka: the topic keeps every record for its
        # retention whoever consumes, and a new named group starts at the earliest offset.
        limit = await self.provisioner.max_message_bytes(spec.destination)
        return KafkaSink(self, spec.destination, slot, ext.sync, release, limit)

    # -- state -----------------------------------------------------------------------------

    async def provision_changelog(self, name: str, like: str) -> KafkaSink:
        """A compacted topic for a store, partitioned like the input topic ``like``."""
        partitions = await self.provisioner.partitions(like) or 1
        await self.provisioner.ensure_topic(
            name,
            partitions,
            fewer="error",
            properties=KafkaTopicProperties(properties={"cleanup.policy": "compact"}),
            purpose=f"state changelog partitioned like {like}",
        )
        return await self.provision_producer(ProducerSpec(name, name))

    async def provision_table(self, name: str, like: str | None) -> int:
        """The topic a table reads: created when missing (compacted, partitioned like the
        input ``like`` or with one partition), as a consumer binding's topic would be."""
        partitions = (await self.provisioner.partitions(like) or 1) if like else 1
        return await self.provisioner.ensure_topic(
            name,
            partitions,
            fewer="accept",
            properties=KafkaTopicProperties(properties={"cleanup.policy": "compact"}),
            purpose="table",
        )

    async def partition_count(self, name: str) -> int | None:
        return await self.provisioner.partitions(name)

    async def replay(
        self, name: str, partitions: Collection[int] | None, follow: bool
    ) -> AsyncIterator[Sequence[Message[bytes]] | None]:
        """The records of ``name`` from the beginning (a consumer of its own, no group)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            **self.clients.kwargs(
                "consumer",
                {
                    "client_id": f"binder-{self.name}-replay",
                    "auto_offset_reset": "earliest",
                    # What aborted transactions wrote never becomes state.
                    "isolation_level": "read_committed",
                },
                {},
            ),
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            if partitions is None:
                partitions = range(await self.provisioner.partitions(name) or 0)
            tps = [TopicPartition(name, p) for p in partitions]
            if not tps:
                yield None
                if not follow:
                    return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            caught_up = False
            while True:
                if not caught_up:
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                        caught_up = True
                        yield None
                        if not follow:
                            return
                data = await consumer.getmany(timeout_ms=200, max_records=2000)
                for records in data.values():
                    # Records of a replay carry no headers: one shared empty mapping.
                    yield [Message(r.value, _NO_HEADERS, r.key, r.partition) for r in records]
        finally:
            await _quietly(consumer.stop())

    # -- consumers -------------------------------------------------------------------------

    async def provision_consumer(self, spec: ConsumerSpec) -> KafkaSubscription:
        """Provision topic and dead-letter topic (for a named group)."""
        ext = spec.extension if isinstance(spec.extension, KafkaConsumerProperties) else None
        ext = ext or KafkaConsumerProperties()
        config = self.clients.check_binding(ext.configuration, "consumer", spec.binding)
        props = spec.properties
        manual = props.partitioned or not ext.auto_rebalance_enabled
        wanted = (props.instance_count or 1) * props.concurrency
        partitions = await self.provisioner.ensure_topic(
            spec.destination,
            wanted,
            fewer="error" if manual else "warn",
            properties=ext.topic,
            purpose=f"instance-count x concurrency of binding {spec.binding}",
        )
        subscription = KafkaSubscription(self, spec, ext, config, partitions)
        if ext.enable_dlq and spec.group:
            await subscription.dead_letters.provision()
        return subscription

    def dead_letters(self) -> KafkaDeadLetters:
        """Dead-letter access for ``binder dlq`` (``binder_core.dlq``)."""
        from binders.kafka.deadletters import KafkaDeadLetters

        return KafkaDeadLetters(self)

    async def health(self) -> Health:
        servers = ",".join(self.environment.servers())
        if self.healthy:
            return Health(True, f"brokers at {servers} answer", self.reconnects)
        return Health(False, f"brokers at {servers} do not answer", self.reconnects)

    async def close(self) -> None:
        """Flush and close producers, disconnect."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        shared, self._producers = list(self._producers.values()), {}
        await asyncio.gather(*(stop_client(s.client, s.close_timeout) for s in shared))
        await self.provisioner.close()


_NO_HEADERS: dict[str, Any] = {}


async def _quietly(coro: Any) -> None:
    """Cleanup that must not raise (a broker gone while a replay closes)."""
    try:
        await asyncio.wait_for(coro, 5)
    except Exception as exc:
        log.debug("cleanup step did not finish: %s", describe(exc))
