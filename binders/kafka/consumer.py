"""One consumer of a binding and the task that polls it: a batch per poll, handed to the
core, failures dead-lettered, the batch's offsets committed once, after all of that was
confirmed.

At-least-once comes from the order of those steps: an offset is committed only after the
core's handle returned for its batch (so every output was acknowledged by Kafka) and the
failures were dead-lettered (DLQ sends confirmed). If handle raises, the consumer seeks
back to the batch's first offsets and polls it again after a back-off; if the process dies
first, the group resumes from the last commit. Either way records may be processed twice,
never skipped; a crash replays at most the batch in flight.

Rebalances: before partitions are taken away (``on_partitions_revoked``) the consumer
waits, for a bounded time, for the batch in flight to finish and commit; a batch that
finishes after its partitions were revoked is not committed (its new owner delivers it
again). Newly assigned partitions get their starting position committed at once, so an
anonymous (``latest``) subscription never skips what was sent while a rebalance ran.

Transactions (``transaction-id-prefix``): each batch runs in a Kafka transaction of a
producer owned by its consumer; the core's outputs through this binder, the dead letters and
the input offsets are committed together. If any record of the batch failed, the
transaction is aborted and the batch's other records are processed again in a new one, so
nothing a failed attempt sent becomes visible to ``read_committed`` readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from binder_core.message import Message
from binder_core.spi import Outcome
from binders.kafka.headers import decoded
from binders.kafka.producer import CURRENT, Transaction
from binders.kafka.provisioning import describe

if TYPE_CHECKING:
    from binders.kafka.binding import KafkaBinding

log = logging.getLogger(__name__)

_MAX_BACKOFF = 10.0
_CLEANUP = 20.0  # seconds closing a consumer may take (commit, leave group)
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


def to_messages(records: Sequence[Any]) -> list[Message[bytes]]:
    """The core's view of records: payload (a tombstone's is empty), headers, key bytes and
    partition. This runs for every record, so it does the least per record: a stream's
    records mostly carry identical headers, so each record's raw headers are compared
    with the previous record's (an equality test, no hashing of fresh bytes) and, when
    equal, the decoded dict is copied rather than looked up again."""
    out: list[Message[bytes]] = []
    add = out.append
    last_raw: Any = None
    last: dict[str, Any] = {}
    for r in records:
        raw = r.headers
        if not raw:
            headers: dict[str, Any] = {}
        else:
            if raw != last_raw:
                last, last_raw = decoded(raw), raw
            headers = last.copy()
        value = r.value
        add(Message(b"" if value is None else value, headers, r.key, r.partition))
    return out


def _listener(worker: Consumer, consumer: Any) -> Any:
    """aiokafka's rebalance callbacks (it insists on its own base class, imported only
    now), forwarded to the worker that owns the consumer."""
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            await worker.revoked(consumer, set(revoked))

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await worker.assigned(consumer, set(assigned))

    return Listener()


class Consumer:
    """One consumer of a binding and the task that polls it."""

    def __init__(self, binding: KafkaBinding, index: int, partitions: list[int] | None) -> None:
        self.binding = binding
        self.index = index
        self.partitions = partitions
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False
        self.consumer: Any = None
        self.txn_producer: Any = None
        self.epoch = 0  # bumped when partitions are revoked: older batches are not committed
        self.pending: dict[Any, int] = {}  # offsets processed, not yet committed
        self.failures = 0
        self.error: BaseException | None = None  # why the consumer could not be created
        self._reset_done: set[Any] = set()
        self._in_loop = False
        self._task: asyncio.Task[None] | None = None
        ext = binding.ext
        self._poll_ms = ext.poll_timeout
        self._max_records = ext.max_poll_records
        self._commit = ext.auto_commit_offset
        env = binding.binder.environment
        # A rebalance waits this long for the batch in flight before moving on without it.
        self._revoke_wait = max(1.0, min(env.shutdown_timeout / 1000, 8.0))

    @property
    def label(self) -> str:
        b = self.binding
        suffix = f"[{self.index}]" if b.spec.properties.concurrency > 1 else ""
        return f"{b.name}{suffix}"

    def start(self) -> None:
        self._in_loop = True
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"kafka:{self.label}")
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("binding %s: consumer stopped: %s", self.label, describe(error))
        self.ready.set()

    async def stop(self, grace: float) -> None:
        """Let the batch in flight finish (up to ``grace`` seconds), then close the consumer."""
        self.stopping = True
        task = self._task
        if task is None or task.done():
            return
        if not self.idle.is_set():
            try:
                await asyncio.wait_for(self.idle.wait(), grace)
            except TimeoutError:
                log.warning(
                    "binding %s: the batch in flight did not finish within %.1f s; stopping "
                    "without committing it (it will be delivered again)",
                    self.label,
                    grace,
                )
        if self._in_loop:
            task.cancel()  # polling, backing off, or abandoning the batch: nothing to commit
        try:
            await asyncio.wait_for(asyncio.shield(task), _CLEANUP)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        except BaseException:
            pass

    def pause(self) -> None:
        consumer = self.consumer
        if consumer is not None:
            consumer.pause(*consumer.assignment())

    def resume(self) -> None:
        consumer = self.consumer
        if consumer is not None:
            consumer.resume(*consumer.assignment())

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self.stopping:
                if self.consumer is None and not await self._open():
                    break
                delay = await self._poll()
                if delay:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            pass  # stop() cancels an idle worker; the consumer is closed below
        finally:
            self._in_loop = False
            await self._close()

    async def _open(self) -> bool:
        """Create and start the consumer, retrying with back-off while the broker is down."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        b = self.binding
        delay = 0.2
        while not self.stopping:
            try:
                consumer = AIOKafkaConsumer(**b.consumer_kwargs())
            except Exception as exc:  # a setting aiokafka rejects: no retry will help
                self.error = exc
                raise
            if self.partitions is None:
                consumer.subscribe([b.topic], listener=_listener(self, consumer))
            elif self.partitions:
                consumer.assign([TopicPartition(b.topic, p) for p in self.partitions])
            else:
                log.info("binding %s: no partition of %s for this consumer", self.label, b.topic)
                self.ready.set()
                return False
            try:
                try:
                    await consumer.start()
                except (KafkaError, OSError):
                    raise
                except Exception as exc:  # rejected settings: retrying will not help
                    await _bounded(consumer.stop(), 5)
                    self.error = exc
                    raise
                if self.partitions:
                    await self.assigned(consumer, set(consumer.assignment()))
                if b.transactional:
                    await self._transactional_producer()
            except (KafkaError, OSError) as exc:
                await _bounded(consumer.stop(), 5)
                if type(exc).__name__ in _FATAL_NAMES:
                    self.error = exc
                    raise
                log.warning(
                    "binding %s: cannot start its consumer (%s); retrying in %.1f s",
                    self.label,
                    describe(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            self.consumer = consumer
            if b.paused:
                self.pause()
            return True
        return False

    async def _close(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            if self.pending:
                await _bounded(self._flush(consumer), 5)
            await _bounded(consumer.stop(), 5)  # leaves the group
        producer, self.txn_producer = self.txn_producer, None
        if producer is not None:
            await _bounded(producer.stop(), 10)
        self.ready.set()

    async def _poll(self) -> float:
        """One poll and its batch; returns how long to back off before the next."""
        from aiokafka.errors import ConsumerStoppedError, KafkaError

        consumer = self.consumer
        if self.pending:
            self.idle.clear()
            try:
                await self._flush(consumer)
            finally:
                self.idle.set()
        try:
            data = await consumer.getmany(timeout_ms=self._poll_ms, max_records=self._max_records)
        except ConsumerStoppedError:
            self.consumer = None
            return 0.0
        except KafkaError as exc:
            self.failures += 1
            log.warning("binding %s: poll failed: %s", self.label, describe(exc))
            return self._backoff()
        except Exception as exc:
            # Not a broker condition aiokafka retries itself: start over with a new consumer
            # (from the committed offsets) rather than leave the binding silently dead.
            self.failures += 1
            log.error("binding %s: consumer failed (%s); reopening it", self.label, describe(exc))
            self.consumer = None
            await _bounded(consumer.stop(), 5)
            return self._backoff()
        if not data:
            return 0.0
        self.idle.clear()
        try:
            return await self._process(consumer, data)
        finally:
            self.idle.set()

    def _backoff(self) -> float:
        return float(min(0.1 * 2 ** min(self.failures, 7), _MAX_BACKOFF))

    async def _process(self, consumer: Any, data: dict[Any, list[Any]]) -> float:
        b = self.binding
        if len(data) == 1:
            [records] = data.values()
        else:
            records = [r for batch in data.values() for r in batch]
        messages = to_messages(records)
        ends = {tp: batch[-1].offset + 1 for tp, batch in data.items()}
        epoch = self.epoch
        try:
            if b.transactional:
                await self._in_transaction(records, messages, ends)
            else:
                outcomes = await b.handle(messages)
                if outcomes.count(None) != len(records):  # one C-level pass when all went well
                    failed = [
                        (r, e) for r, e in zip(records, outcomes, strict=True) if e is not None
                    ]
                    await b.dead_letter([r for r, _ in failed], [e for _, e in failed])
        except Exception as exc:
            self._rewind(consumer, data)
            self.failures += 1
            delay = self._backoff()
            log.error(
                "binding %s: batch of %d record%s not processed (%s); delivering it again "
                "in %.1f s",
                self.label,
                len(records),
                "" if len(records) == 1 else "s",
                describe(exc),
                delay,
            )
            return delay
        if self.failures:
            log.info("binding %s: processing again", self.label)
            self.failures = 0
        if b.transactional:
            return 0.0
        if self._commit and epoch == self.epoch:
            self.pending.update(ends)
            await self._flush(consumer)
        return 0.0

    def _rewind(self, consumer: Any, data: dict[Any, list[Any]]) -> None:
        """Seek back to the batch's first offsets, so the next poll delivers it again."""
        from aiokafka.errors import IllegalStateError

        for tp, batch in data.items():
            with contextlib.suppress(IllegalStateError, AssertionError):
                consumer.seek(tp, batch[0].offset)

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

    # -- rebalances ------------------------------------------------------------------------

    async def revoked(self, consumer: Any, revoked: set[Any]) -> None:
        """Before partitions go: let the batch in flight finish and commit (bounded)."""
        if not self.idle.is_set():
            try:
                await asyncio.wait_for(self.idle.wait(), self._revoke_wait)
            except TimeoutError:
                log.warning(
                    "binding %s: partitions revoked while a batch was in flight for more "
                    "than %.1f s; it will not be committed (its new owner delivers it again)",
                    self.label,
                    self._revoke_wait,
                )
        self.epoch += 1
        if self.pending:
            await _bounded(self._flush(consumer), self._revoke_wait)
            self.pending.clear()

    async def assigned(self, consumer: Any, assigned: set[Any]) -> None:
        """New partitions: apply reset-offsets, pause if the binding is paused, and commit
        the starting positions, so that a later rebalance or restart resumes from here."""
        b = self.binding
        try:
            if b.paused:
                consumer.pause(*assigned)
            positions: dict[Any, int] = {}
            for tp in assigned:
                if b.ext.reset_offsets and tp not in self._reset_done:
                    self._reset_done.add(tp)
                    if (b.ext.start_offset or "earliest") == "earliest":
                        await consumer.seek_to_beginning(tp)
                    else:
                        await consumer.seek_to_end(tp)
                positions[tp] = await asyncio.wait_for(
                    consumer.position(tp), b.binder.environment.health_timeout
                )
            if positions and self._commit:
                await asyncio.wait_for(
                    consumer.commit(positions), b.binder.environment.health_timeout
                )
        except Exception as exc:
            log.warning(
                "binding %s: could not fix the starting positions of %s (%s)",
                self.label,
                sorted(tp.partition for tp in assigned),
                describe(exc),
            )
        finally:
            self.ready.set()

    # -- transactions ----------------------------------------------------------------------

    async def _transactional_producer(self) -> Any:
        if self.txn_producer is None:
            self.txn_producer = await self.binding.binder.transactional_client(
                self.binding, self.index
            )
        return self.txn_producer

    async def _in_transaction(
        self, records: list[Any], messages: list[Message[bytes]], ends: dict[Any, int]
    ) -> None:
        b = self.binding
        producer = await self._transactional_producer()
        todo = list(range(len(records)))
        dead: dict[int, Exception] = {}
        while True:
            token = CURRENT.set(Transaction(b.binder, producer))
            try:
                await producer.begin_transaction()
                outcomes: Sequence[Outcome] = (
                    await b.handle([messages[i] for i in todo]) if todo else []
                )
                failed = {i: e for i, e in zip(todo, outcomes, strict=True) if e is not None}
                if failed:
                    # What a failed record's attempts sent must not become visible: abort,
                    # then run the others again in a new transaction.
                    dead.update(failed)
                    todo = [i for i in todo if i not in failed]
                    await producer.abort_transaction()
                    continue
                if dead:
                    order = sorted(dead)
                    await b.dead_letter(
                        [records[i] for i in order], [dead[i] for i in order], producer
                    )
                await producer.send_offsets_to_transaction(ends, b.group)
                await producer.commit_transaction()
                return
            except BaseException:
                await self._abort(producer)
                raise
            finally:
                CURRENT.reset(token)

    async def _abort(self, producer: Any) -> None:
        try:
            await asyncio.wait_for(producer.abort_transaction(), 10)
        except BaseException as exc:
            # A fenced or broken transactional producer cannot go on: start a new one.
            log.warning(
                "binding %s: transaction abort failed (%s); recreating the transactional producer",
                self.label,
                describe(exc),
            )
            self.txn_producer = None
            await _bounded(producer.stop(), 5)


async def _bounded(coro: Any, seconds: float) -> None:
    """Await cleanup without letting an unreachable broker hold a shutdown forever."""
    try:
        await asyncio.wait_for(coro, seconds)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        log.debug("cleanup step did not finish: %s", describe(exc))
