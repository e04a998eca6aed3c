"""A Kafka consumer binding: the SPI ``Binding`` over ``concurrency`` consumers of one
group (``consumer.py``), their provisioning and their dead letters.

A group-managed binding lets Kafka's coordinator spread partitions over its consumers (and
over every instance of the app); a partitioned one (``partitioned`` or
``auto-rebalance-enabled: false``) takes the partitions p with
p % instance-count == instance-index and deals them to its consumers, as Spring does.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from binder_core.errors import BinderException, DeliveryError
from binder_core.spi import BindingState, ConsumerSpec, Handle
from binders.kafka.consumer import Consumer
from binders.kafka.deadletter import dead_letter
from binders.kafka.producer import ProducerSlot, publish
from binders.kafka.provisioning import describe
from binders.kafka.settings import KafkaConsumerProperties

if TYPE_CHECKING:
    from binders.kafka.binder import KafkaBinder

log = logging.getLogger(__name__)


class KafkaBinding:
    """One consumer binding (the SPI ``Binding``)."""

    def __init__(
        self,
        binder: KafkaBinder,
        spec: ConsumerSpec,
        handle: Handle,
        ext: KafkaConsumerProperties,
        client_config: dict[str, Any],
        partitions: int,
    ) -> None:
        self.name = spec.binding
        self.binder = binder
        self.spec = spec
        self.handle = handle
        self.ext = ext
        self.topic = spec.destination
        self.anonymous = spec.group is None
        #: The consumer group; an anonymous binding keeps one random group while it lives,
        #: so a stop/start resumes where it stopped.
        self.group = spec.group or f"anonymous.{uuid.uuid4()}"
        self.dlq_name = ext.dlq_name or f"error.{spec.destination}.{spec.group or 'anonymous'}"
        self.partitions = partitions
        self._dlq_partitions: int | None = None
        self._dlq_limit: int | None = None  # the dead-letter topic's max.message.bytes
        self._dlq_lock = asyncio.Lock()
        self._client_config = client_config
        props = spec.properties
        self.manual = props.partitioned or not ext.auto_rebalance_enabled
        self.instance_index = props.instance_index or 0
        self.instance_count = props.instance_count or 1
        self._state = BindingState.STOPPED
        self.paused = False
        self._workers: list[Consumer] = []

    @property
    def state(self) -> BindingState:
        return self._state

    @property
    def transactional(self) -> bool:
        return self.binder.environment.transactional

    # -- provisioning ----------------------------------------------------------------------

    async def dlq_partitions(self) -> int:
        """Create the dead-letter topic if needed (at bind time for a named group, at the
        first dead letter for an anonymous one); return its partition count."""
        if self._dlq_partitions is None:
            async with self._dlq_lock:
                if self._dlq_partitions is None:
                    wanted = self.ext.dlq_partitions or self.partitions
                    count = await self.binder.provisioner.ensure_topic(
                        self.dlq_name,
                        wanted,
                        fewer="accept",
                        purpose=f"dead letters of binding {self.name}",
                    )
                    self._dlq_limit = await self.binder.provisioner.max_message_bytes(self.dlq_name)
                    self._dlq_partitions = count
        return self._dlq_partitions

    def assignments(self) -> list[list[int] | None]:
        """Partitions per consumer: None = the group coordinator decides; else the
        partitions p with p % instance-count == instance-index, dealt to the consumers."""
        n = self.spec.properties.concurrency
        if not self.manual:
            return [None] * n
        mine = [p for p in range(self.partitions) if p % self.instance_count == self.instance_index]
        return [mine[i::n] for i in range(n)]

    def consumer_kwargs(self) -> dict[str, Any]:
        """aiokafka consumer settings of this binding."""
        start = self.ext.start_offset or ("latest" if self.anonymous else "earliest")
        base: dict[str, Any] = {
            "auto_offset_reset": start,
            "client_id": f"binder-{self.binder.name}-{self.name}",
        }
        if self.transactional:
            base["isolation_level"] = "read_committed"
        kwargs = self.binder.clients.kwargs("consumer", base, self._client_config)
        kwargs["group_id"] = self.group
        kwargs["enable_auto_commit"] = False
        return kwargs

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, raise_on_timeout: bool = False) -> None:
        """Join the group (or take this instance's partitions) and start consuming from the
        committed offsets; waits until the consumers have their partitions."""
        if self._state is not BindingState.STOPPED:
            return
        self._state = BindingState.RUNNING
        self.paused = False
        self._workers = [Consumer(self, i, parts) for i, parts in enumerate(self.assignments())]
        for worker in self._workers:
            worker.start()
        timeout = self.binder.environment.health_timeout
        try:
            await asyncio.wait_for(
                asyncio.gather(*(w.ready.wait() for w in self._workers)), timeout
            )
            failed = next((w.error for w in self._workers if w.error is not None), None)
            if failed is not None:
                await self.stop()
                raise BinderException(
                    f"binding {self.name}: cannot create its Kafka consumer: {describe(failed)}"
                )
        except TimeoutError:
            message = (
                f"binding {self.name}: consumers of {self.topic} (group {self.group}) got no "
                f"partitions within {timeout:g} s"
            )
            if raise_on_timeout:
                await self.stop()
                raise BinderException(message) from None
            log.warning("%s; they keep trying", message)

    async def stop(self) -> None:
        """Finish the batch in flight (up to ``shutdown-timeout``), commit, leave the group."""
        if self._state is BindingState.STOPPED:
            return
        self._state = BindingState.STOPPED
        timeout = self.binder.environment.shutdown_timeout / 1000
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.stop(timeout) for w in workers), return_exceptions=True)

    async def pause(self) -> None:
        """Stop fetching; the group membership (and so the partitions) is kept."""
        if self._state is BindingState.RUNNING:
            self.paused = True
            self._state = BindingState.PAUSED
            for worker in self._workers:
                worker.pause()

    async def resume(self) -> None:
        """Fetch again from where the binding paused."""
        if self._state is BindingState.PAUSED:
            self.paused = False
            self._state = BindingState.RUNNING
            for worker in self._workers:
                worker.resume()

    # -- dead letters ----------------------------------------------------------------------

    async def dead_letter(
        self, records: Sequence[Any], errors: Sequence[Exception], client: Any = None
    ) -> None:
        """Send failed records to the dead-letter topic, or log and skip them when
        ``enable-dlq`` is false. Raises (the batch is then redelivered) only when the
        dead letters could not be confirmed for a reason that may pass."""
        if not self.ext.enable_dlq:
            for record, exc in zip(records, errors, strict=True):
                log.error(
                    "binding %s: skipping record %s-%d@%d, its retries ran out "
                    "(enable-dlq is false): %s",
                    self.name,
                    record.topic,
                    record.partition,
                    record.offset,
                    describe(exc),
                )
            return
        count = await self.dlq_partitions()
        # Inside a transaction its producer, else the binder's dead-letter producer, which
        # is replaced when a refusal broke it (read afresh for every send).
        slot = None if client is not None else await self.binder.dead_letter_slot()
        letters = [
            dead_letter(r, e, self.group, count) for r, e in zip(records, errors, strict=True)
        ]
        try:
            await self._send_letters(letters, client, slot)
        except DeliveryError:
            await self._dead_letter_one_by_one(records, errors, count, client, slot)
        log.info(
            "binding %s: dead-lettered %d record%s to %s",
            self.name,
            len(letters),
            "" if len(letters) == 1 else "s",
            self.dlq_name,
        )

    async def _send_letters(
        self, letters: Sequence[Any], client: Any, slot: ProducerSlot | None
    ) -> None:
        await publish(
            slot.client if slot is not None else client,
            self.dlq_name,
            [(d.key, d.value, d.headers, d.partition) for d in letters],
            limit=self._dlq_limit,
            renew=slot.renew if slot is not None else None,
        )

    async def _dead_letter_one_by_one(
        self,
        records: Sequence[Any],
        errors: Sequence[Exception],
        count: int,
        client: Any,
        slot: ProducerSlot | None,
    ) -> None:
        """Kafka refused a dead-letter batch for good (most likely a record grew too large
        with its stack trace). Each record is tried alone, then without stack traces; one
        that is still refused is logged and skipped: a poison record must not stop the
        partition forever."""
        for record, exc in zip(records, errors, strict=True):
            for brief in (False, True):
                d = dead_letter(record, exc, self.group, count, brief=brief)
                try:
                    await self._send_letters([d], client, slot)
                    break
                except DeliveryError as refused:
                    if brief:
                        log.error(
                            "binding %s: %s refused the dead letter of %s-%d@%d (%s); "
                            "skipping it. It failed with: %s",
                            self.name,
                            self.dlq_name,
                            record.topic,
                            record.partition,
                            record.offset,
                            refused,
                            describe(exc),
                        )
