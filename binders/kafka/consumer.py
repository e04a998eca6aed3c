"""Consuming from Kafka: a ``Subscription`` per binding and a ``Source`` per consumer
(``concurrency``), driven by the core's consumer loop.

A group-managed binding lets Kafka's coordinator spread partitions over its consumers (and
over every instance of the app); a partitioned one (``partitioned`` or
``auto-rebalance-enabled: false``) takes the partitions p with
p % instance-count == instance-index and deals them to its consumers, as Spring does.

A fetch is one ``getmany``; settling a batch dead-letters its failures (confirmed) and then
commits the batch's end offsets, so an offset is committed only after everything the batch
caused was confirmed. A batch given back is a seek to its first offsets. Rebalances: before
partitions are taken away, the source waits (bounded) until the batches it handed out are
settled, and a batch settled after its partitions were revoked is not committed (their new
owner delivers it again). Newly assigned partitions get their starting position committed
at once, so an anonymous (``latest``) subscription never skips what was sent while a
rebalance ran.

Transactions (``transaction-id-prefix``): each batch runs in a transaction of a producer
owned by its consumer; the outputs through this binder, the dead letters and the input
offsets commit together (the core's loop aborts and runs the others again when a record
failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from binder_core.message import Message
from binder_core.spi import Batch, ConsumerSpec, Disconnected, PartitionListener, Permanent
from binders.kafka.clients import ClientConfig
from binders.kafka.deadletter import DeadLetters
from binders.kafka.headers import decoded
from binders.kafka.producer import KafkaTransaction, Limits, ProducerSlot
from binders.kafka.provisioning import Provisioner, describe
from binders.kafka.settings import KafkaConsumerProperties, KafkaEnvironment


def _assignors() -> tuple[Any, ...]:
    """The assignor a consumer offers its group: range, the first of those Java's consumer
    (and so Spring's) offers by default, so that a Spring instance and a Python one can
    share a group (a group runs an assignor every member offers; aiokafka's default,
    round-robin, is not among Java's). One only: aiokafka 0.14 sends a JoinGroup per
    assignor offered, which keeps a group of several members rebalancing."""
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    return (RangePartitionAssignor,)


class KafkaHost(Protocol):
    """What a subscription needs of its binder."""

    name: str
    environment: KafkaEnvironment
    clients: ClientConfig
    provisioner: Provisioner

    async def dead_letter_slot(self) -> ProducerSlot:
        """The producer dead letters go through."""

    async def transactional_client(
        self, binding: KafkaSubscription, index: int
    ) -> tuple[Any, Limits]:
        """A started transactional producer for one consumer, and its limits."""


log = logging.getLogger(__name__)

#: Broker answers no retry will change (credentials, permissions, rejected settings).
_FATAL_NAMES = frozenset(
    {
        "AuthenticationFailedError",
        "SaslAuthenticationFailed",
        "UnsupportedSaslMechanismError",
        "GroupAuthorizationFailedError",
        "TopicAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "InvalidSessionTimeoutError",
        "InvalidGroupIdError",
    }
)

#: Seconds a paused consumer waits between the polls that keep it in its group.
_PAUSED_POLL = 1.0

#: Longest wait of one poll, ms: how soon a waiting consumer notices a pause or a stop.
_INTERRUPT_MS = 100


def to_messages(records: Sequence[Any]) -> tuple[list[Message[bytes]], dict[int, Exception]]:
    """The core's view of records: payload (a tombstone's is empty), headers, key bytes and
    partition; and the records whose headers could not be read (index -> why).

    This runs for every record, so it does the least per record: a stream's records mostly
    carry identical headers, so each record's raw headers are compared with the previous
    record's (an equality test, no hashing of fresh bytes) and, when equal, the decoded
    dict is copied rather than decoded again."""
    out: list[Message[bytes]] = []
    unreadable: dict[int, Exception] = {}
    add = out.append
    last_raw: Any = None
    last: dict[str, Any] = {}
    for i, r in enumerate(records):
        raw = r.headers
        if not raw:
            headers: dict[str, Any] = {}
        else:
            if raw != last_raw:
                try:
                    last, last_raw = decoded(raw), raw
                except Exception as exc:
                    # One record's headers are beyond reading: that record fails (it is
                    # dead-lettered with the reason), the partition goes on.
                    unreadable[i] = exc
                    last_raw = None
                    add(Message(b"" if r.value is None else r.value, {}, r.key, r.partition))
                    continue
            headers = last.copy()
        value = r.value
        add(Message(b"" if value is None else value, headers, r.key, r.partition))
    return out, unreadable


@dataclass(slots=True)
class Polled:
    """A batch's Kafka side: its records, where each partition starts and ends, and the
    rebalance generation it was fetched in."""

    records: list[Any]
    starts: dict[Any, int]
    ends: dict[Any, int]
    epoch: int


class KafkaSubscription:
    """A consumer binding's topic, group and dead-letter topic."""

    def __init__(
        self,
        binder: KafkaHost,
        spec: ConsumerSpec,
        ext: KafkaConsumerProperties,
        client_config: dict[str, Any],
        partitions: int,
    ) -> None:
        self.name = spec.binding
        self.binder = binder
        self.spec = spec
        self.ext = ext
        self.topic = spec.destination
        self.anonymous = spec.group is None
        #: The consumer group; an anonymous binding keeps one random group while it lives,
        #: so a stop/start resumes where it stopped.
        self.group = spec.group or f"anonymous.{uuid.uuid4()}"
        self.partitions = partitions
        props = spec.properties
        self.manual = props.partitioned or not ext.auto_rebalance_enabled
        self.instance_index = props.instance_index or 0
        self.instance_count = props.instance_count or 1
        self.concurrency = props.concurrency
        self.dead_letters = DeadLetters(
            binder.provisioner,
            binder.dead_letter_slot,
            spec.binding,
            spec.destination,
            spec.group,
            self.group,
            ext,
            partitions,
        )
        self._client_config = client_config
        env = binder.environment
        self.drain_timeout = env.shutdown_timeout / 1000
        self.transactional = env.transactional
        #: Whether the binding is paused (new partitions are paused as they come).
        self.paused = False
        #: Told when a consumer of this binding gets or loses partitions (state).
        self.listeners: list[PartitionListener] = []

    def listen(self, listener: PartitionListener) -> None:
        """Tell ``listener`` about partition assignments (restores state before input)."""
        self.listeners.append(listener)

    @property
    def dlq_name(self) -> str:
        return self.dead_letters.topic

    def source(self, index: int) -> KafkaSource:
        return KafkaSource(self, index, self.assignment(index))

    def assignment(self, index: int) -> list[int] | None:
        """Partitions of consumer ``index``: None = the group coordinator decides; else the
        partitions p with p % instance-count == instance-index, dealt to the consumers."""
        if not self.manual:
            return None
        mine = [p for p in range(self.partitions) if p % self.instance_count == self.instance_index]
        return mine[index :: self.concurrency]

    def consumer_kwargs(self, index: int) -> dict[str, Any]:
        """aiokafka consumer settings of this binding."""
        start = self.ext.start_offset or ("latest" if self.anonymous else "earliest")
        base: dict[str, Any] = {
            "auto_offset_reset": start,
            "client_id": f"binder-{self.binder.name}-{self.name}",
        }
        if self.transactional:
            base["isolation_level"] = "read_committed"
        kwargs = self.binder.clients.kwargs("consumer", base, self._client_config)
        kwargs.setdefault("partition_assignment_strategy", _assignors())
        kwargs["group_id"] = self.group
        kwargs["enable_auto_commit"] = False
        return kwargs

    async def close(self) -> None:
        return None


class KafkaSource:
    """One aiokafka consumer of a binding."""

    #: The core processes the next poll while the previous one's outputs wait for their
    #: acknowledgements (``acks=all``: the broker answers once the batch is in its log):
    #: that wait, not the processing, was most of a poll's time. A rebalance still sees
    #: a moment with nothing in flight: while partitions are being revoked, a fetch that
    #: would overlap returns nothing, so the batch in flight is settled first.
    overlap = True

    def __init__(
        self, subscription: KafkaSubscription, index: int, partitions: list[int] | None
    ) -> None:
        self.sub = subscription
        self.index = index
        self.partitions = partitions
        self.transactional = subscription.transactional
        suffix = f"[{index}]" if subscription.concurrency > 1 else ""
        self.label = f"{subscription.name}{suffix}"
        self.consumer: Any = None
        self.txn_producer: Any = None
        self.epoch = 0  # bumped when partitions are revoked: older batches are not committed
        self.pending: dict[Any, int] = {}  # offsets processed, not yet committed
        self._committing: asyncio.Task[None] | None = None
        self._reset_done: set[Any] = set()
        self._held = 0  # batches handed out and not yet settled or given back
        self._idle = asyncio.Event()
        self._idle.set()
        self._ready = asyncio.Event()
        self._wake: asyncio.Future[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._interrupted = False
        self._revoking = False  # partitions are being revoked: let the batches settle
        self._poll_failures = 0
        self._txn_limits = Limits()
        ext = subscription.ext
        # A waiting poll returns after at most this long (or at once when records come),
        # so a pause or stop (``interrupt``) is seen within it, without a task per poll.
        self._wait_ms = min(ext.poll_timeout, _INTERRUPT_MS)
        self._max_records = ext.max_poll_records
        self._commit = ext.auto_commit_offset
        env = subscription.binder.environment
        # A rebalance waits this long for the batch in flight before moving on without it.
        self._revoke_wait = max(1.0, min(env.shutdown_timeout / 1000, 8.0))

    # -- opening and closing --------------------------------------------------------------

    async def open(self) -> None:
        """Create and start the consumer; return once it has its partitions (or after
        ``health-timeout``, still waiting for them)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        sub = self.sub
        try:
            consumer = AIOKafkaConsumer(**sub.consumer_kwargs(self.index))
        except Exception as exc:  # a setting aiokafka rejects: no retry will help
            raise Permanent(f"cannot create its Kafka consumer: {describe(exc)}") from exc
        if self.partitions is None:
            consumer.subscribe([sub.topic], listener=_listener(self, consumer))
        elif self.partitions:
            consumer.assign([TopicPartition(sub.topic, p) for p in self.partitions])
        try:
            try:
                await consumer.start()
            except (KafkaError, OSError):
                raise
            except Exception as exc:  # rejected settings: retrying will not help
                raise Permanent(f"cannot start its Kafka consumer: {describe(exc)}") from exc
            self.consumer = consumer
            if self.partitions:
                await self.assigned(consumer, set(consumer.assignment()))
            elif self.partitions is not None:
                log.info("binding %s: no partition of %s for this consumer", self.label, sub.topic)
                self._ready.set()
            if self.transactional:
                self.txn_producer, self._txn_limits = await sub.binder.transactional_client(
                    sub, self.index
                )
        except BaseException as exc:
            self.consumer = None
            await _bounded(consumer.stop(), 5)
            if isinstance(exc, Permanent):
                raise
            if type(exc).__name__ in _FATAL_NAMES:
                raise Permanent(f"Kafka refused the consumer: {describe(exc)}") from exc
            if isinstance(exc, KafkaError | OSError):
                raise Disconnected(f"cannot start its consumer: {describe(exc)}") from exc
            raise
        timeout = sub.binder.environment.health_timeout
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            log.warning(
                "binding %s: consumers of %s (group %s) got no partitions within %g s; they "
                "keep trying",
                self.label,
                sub.topic,
                sub.group,
                timeout,
            )

    async def close(self) -> None:
        """Commit what is settled, leave the group; what was not settled is delivered
        again from the last commit."""
        await self._stop_keepalive()
        await _bounded(self._committed(), 5)
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            if self.pending:
                await _bounded(self._flush(consumer), 5)
            await _bounded(consumer.stop(), 5)  # leaves the group
        producer, self.txn_producer = self.txn_producer, None
        if producer is not None:
            await _bounded(producer.stop(), 10)
        self._held = 0
        self._idle.set()

    # -- fetching --------------------------------------------------------------------------

    async def fetch(self, wait: bool) -> Batch | None:
        consumer = self.consumer
        if consumer is None:
            raise Disconnected("the consumer is closed")
        if self._interrupted:
            self._interrupted = False
            return None
        if self._revoking and not wait:
            return None  # the core settles what it holds; the revocation waits for that
        if self.pending:
            self._commit_soon()  # a commit that failed for a passing reason
        from aiokafka.errors import ConsumerStoppedError, KafkaError

        try:
            data = await consumer.getmany(
                timeout_ms=self._wait_ms if wait else 0, max_records=self._max_records
            )
        except ConsumerStoppedError as exc:
            raise Disconnected("the consumer stopped") from exc
        except KafkaError as exc:
            # A broker condition the client recovers from by itself (it reconnects):
            # wait a little and poll again with the same consumer and partitions.
            self._poll_failures += 1
            delay = min(0.1 * 2 ** min(self._poll_failures, 7), 10.0)
            log.warning(
                "binding %s: poll failed (%s); polling again in %.1f s",
                self.label,
                describe(exc),
                delay,
            )
            await self._nap(delay)
            return None
        if self._poll_failures:
            self._poll_failures = 0
        if self._interrupted:
            # Paused or stopped while the poll waited: what it brought is read again later.
            self._interrupted = False
            if data:
                self._seek({tp: batch[0].offset for tp, batch in data.items()})
            return None
        if not data:
            return None
        if len(data) == 1:
            [records] = data.values()
        else:
            records = [r for batch in data.values() for r in batch]
        messages, unreadable = to_messages(records)
        polled = Polled(
            records,
            {tp: batch[0].offset for tp, batch in data.items()},
            {tp: batch[-1].offset + 1 for tp, batch in data.items()},
            self.epoch,
        )
        self._held += 1
        self._idle.clear()
        return Batch(messages, polled, unreadable or None)

    async def _nap(self, seconds: float) -> None:
        """Sleep, ending early on ``interrupt``."""
        self._wake = wake = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(wake, seconds)
        except TimeoutError:
            pass
        finally:
            self._wake = None

    def interrupt(self) -> None:
        self._interrupted = True
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    # -- settling --------------------------------------------------------------------------

    async def settle(
        self, batch: Batch, failed: Sequence[tuple[int, Exception]], transaction: Any = None
    ) -> None:
        polled: Polled = batch.token
        if transaction is not None:
            producer = transaction.producer
            if failed:
                await self.sub.dead_letters.send(
                    [polled.records[i] for i, _ in failed], [e for _, e in failed], transaction
                )
            await producer.send_offsets_to_transaction(polled.ends, self.sub.group)
            await producer.commit_transaction()
            self._release()
            return
        if failed:
            await self.sub.dead_letters.send(
                [polled.records[i] for i, _ in failed], [e for _, e in failed]
            )
        if self._commit and polled.epoch == self.epoch and self.consumer is not None:
            self.pending.update(polled.ends)
            self._commit_soon()
        self._release()

    async def redeliver(self, batches: Sequence[Batch]) -> None:
        """Seek every partition back to the first offset any of these batches holds."""
        firsts: dict[Any, int] = {}
        for batch in batches:
            polled: Polled = batch.token
            if polled.epoch != self.epoch:
                continue  # revoked meanwhile: the partitions' new owner delivers them
            for tp, offset in polled.starts.items():
                if tp not in firsts or offset < firsts[tp]:
                    firsts[tp] = offset
        self._seek(firsts)
        self._held = 0
        self._idle.set()

    def _seek(self, offsets: dict[Any, int]) -> None:
        from aiokafka.errors import IllegalStateError

        consumer = self.consumer
        if consumer is not None:
            for tp, offset in offsets.items():
                with contextlib.suppress(IllegalStateError, AssertionError):
                    consumer.seek(tp, offset)

    def _release(self) -> None:
        self._held = max(0, self._held - 1)
        if not self._held:
            self._idle.set()

    def _commit_soon(self) -> None:
        """Commit what is pending without waiting for the broker's answer (the next batch is
        processed meanwhile); a commit under way is followed by one for whatever was
        settled while it ran. The offsets were already confirmed as processed, so this
        changes only how soon a commit's round trip ends, never what is committed."""
        task = self._committing
        if task is None or task.done():
            self._committing = asyncio.get_running_loop().create_task(
                self._commit_pending(), name=f"kafka-commit:{self.label}"
            )

    async def _commit_pending(self) -> None:
        consumer = self.consumer
        while self.pending and consumer is not None and consumer is self.consumer:
            before = dict(self.pending)
            await self._flush(consumer)
            if self.pending == before:
                return  # failed for a passing reason: tried again at the next fetch

    async def _committed(self) -> None:
        """Until the commit under way (if any) has its answer."""
        task = self._committing
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def _flush(self, consumer: Any) -> None:
        """Commit what was processed. A commit refused after a rebalance is dropped (the
        partitions' new owner delivers those records again); one that failed for a passing
        reason stays pending and is tried again before the next poll."""
        from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

        offsets = dict(self.pending)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            log.info(
                "binding %s: offsets not committed after a rebalance (%s); those records "
                "will be delivered again",
                self.label,
                describe(exc),
            )
            self.pending.clear()
            return
        except (KafkaError, OSError, AssertionError) as exc:
            log.warning("binding %s: commit failed (%s); will retry", self.label, describe(exc))
            return
        for tp, offset in offsets.items():
            if self.pending.get(tp) == offset:
                del self.pending[tp]

    # -- figures ---------------------------------------------------------------------------

    async def backlog(self) -> dict[str, int]:
        """Consumer lag per assigned partition: the partition's end offset minus this
        consumer's position. The end is asked of the broker (one request per sample), not
        taken from the last fetch: a paused consumer fetches nothing, and its lag must still
        grow while records arrive (an autoscaler reads it)."""
        consumer = self.consumer
        if consumer is None:
            return {}
        assigned = list(consumer.assignment())
        if not assigned:
            return {}
        ends = await consumer.end_offsets(assigned)
        lag: dict[str, int] = {}
        for tp in assigned:
            position = await consumer.position(tp)
            lag[f"{tp.topic}-{tp.partition}"] = max(0, ends[tp] - position)
        return lag

    # -- pause -----------------------------------------------------------------------------

    async def pause(self) -> None:
        """Pause every partition and keep polling now and then (which returns nothing), so
        the consumer stays in its group however long the pause lasts."""
        self.sub.paused = True
        consumer = self.consumer
        if consumer is None:
            return
        consumer.pause(*consumer.assignment())
        if self._keepalive is None:
            self._keepalive = asyncio.get_running_loop().create_task(
                self._keep_polling(consumer), name=f"kafka-paused:{self.label}"
            )

    async def _keep_polling(self, consumer: Any) -> None:
        from aiokafka.errors import KafkaError

        while True:
            try:
                data = await consumer.getmany(timeout_ms=int(_PAUSED_POLL * 1000))
            except (KafkaError, OSError) as exc:
                log.debug("binding %s: poll while paused failed: %s", self.label, describe(exc))
                await asyncio.sleep(_PAUSED_POLL)
                continue
            for tp, records in data.items():
                # Fetched just before the pause took hold: read again after the resume.
                with contextlib.suppress(Exception):
                    consumer.seek(tp, records[0].offset)

    async def _stop_keepalive(self) -> None:
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def resume(self) -> None:
        self.sub.paused = False
        await self._stop_keepalive()
        consumer = self.consumer
        if consumer is not None:
            consumer.resume(*consumer.assignment())

    # -- rebalances ------------------------------------------------------------------------

    async def revoked(self, consumer: Any, revoked: set[Any]) -> None:
        """Before partitions go: let the batches in flight be settled (bounded), commit."""
        self._revoking = True
        try:
            await self._revoke(consumer, revoked)
        finally:
            self._revoking = False

    async def _revoke(self, consumer: Any, revoked: set[Any]) -> None:
        if not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), self._revoke_wait)
            except TimeoutError:
                log.warning(
                    "binding %s: partitions revoked while a batch was in flight for more "
                    "than %.1f s; it will not be committed (its new owner delivers it again)",
                    self.label,
                    self._revoke_wait,
                )
        self.epoch += 1
        await _bounded(self._committed(), self._revoke_wait)
        if self.pending:
            await _bounded(self._flush(consumer), self._revoke_wait)
            self.pending.clear()
        mine = {tp.partition for tp in revoked if tp.topic == self.sub.topic}
        if mine:
            for listener in self.sub.listeners:
                await listener.revoked(mine)

    async def assigned(self, consumer: Any, assigned: set[Any]) -> None:
        """New partitions: apply reset-offsets, pause if the binding is paused, and commit
        the starting positions, so that a later rebalance or restart resumes from here."""
        sub = self.sub
        try:
            if sub.paused:
                consumer.pause(*assigned)
            positions: dict[Any, int] = {}
            for tp in assigned:
                if sub.ext.reset_offsets and tp not in self._reset_done:
                    self._reset_done.add(tp)
                    if (sub.ext.start_offset or "earliest") == "earliest":
                        await consumer.seek_to_beginning(tp)
                    else:
                        await consumer.seek_to_end(tp)
                positions[tp] = await asyncio.wait_for(
                    consumer.position(tp), sub.binder.environment.health_timeout
                )
            if positions and self._commit:
                await asyncio.wait_for(
                    consumer.commit(positions), sub.binder.environment.health_timeout
                )
        except Exception as exc:
            log.warning(
                "binding %s: could not fix the starting positions of %s (%s)",
                self.label,
                sorted(tp.partition for tp in assigned),
                describe(exc),
            )
        try:
            # State for these partitions is restored before any of their records is
            # fetched (aiokafka fetches only once this callback returned).
            mine = {tp.partition for tp in assigned if tp.topic == sub.topic}
            for listener in sub.listeners:
                await listener.assigned(mine)
        finally:
            self._ready.set()

    # -- transactions ----------------------------------------------------------------------

    async def begin(self) -> KafkaTransaction | None:
        if not self.transactional:
            return None
        producer = self.txn_producer
        if producer is None:
            sub = self.sub
            producer, self._txn_limits = await sub.binder.transactional_client(sub, self.index)
            self.txn_producer = producer
        await producer.begin_transaction()
        return KafkaTransaction(self.sub.binder, producer, self._txn_limits)

    async def abort(self, transaction: Any) -> None:
        if transaction is None:
            return
        producer = transaction.producer
        try:
            await asyncio.wait_for(producer.abort_transaction(), 10)
        except BaseException as exc:
            # A fenced or broken transactional producer cannot go on: start a new one.
            log.warning(
                "binding %s: transaction abort failed (%s); recreating the transactional producer",
                self.label,
                describe(exc),
            )
            if self.txn_producer is producer:
                self.txn_producer = None
            await _bounded(producer.stop(), 5)


def _listener(source: KafkaSource, consumer: Any) -> Any:
    """aiokafka's rebalance callbacks (it insists on its own base class, imported only
    now), forwarded to the source that owns the consumer."""
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await source.revoked(consumer, set(revoked))

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await source.assigned(consumer, set(assigned))

    return Listener()


async def _bounded(coro: Any, seconds: float) -> None:
    """Await cleanup without letting an unreachable broker hold a shutdown forever."""
    try:
        await asyncio.wait_for(coro, seconds)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        log.debug("cleanup step did not finish: %s", describe(exc))
