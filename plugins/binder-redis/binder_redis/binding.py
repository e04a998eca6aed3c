"""Consumer bindings: XREADGROUP batches handed to the core, one XACK per batch.

Each of a binding's ``concurrency`` workers is a consumer of the group with a name of its
own and a connection of its own (a blocking read holds its connection). A worker's loop:

1. its own pending entries first (XREADGROUP ... 0): what it read but never acknowledged,
   because the core raised or the connection went before the ack; in entry order, so a
   partition's order survives a redelivery;
2. every ``claim-interval``, entries other consumers of the group have held for longer than
   ``claim-idle`` (XAUTOCLAIM): the work of a crashed process, taken over and then read as
   in 1;
3. new entries (XREADGROUP ... BLOCK ... >).

A batch goes to the core's handle; its failures are dead-lettered (XADD to the DLQ stream,
confirmed) and then the whole batch is acknowledged with one XACK per stream. If the handle
raises, nothing is acknowledged: the entries stay pending and step 1 delivers them again.

Stop and pause interrupt a waiting XREADGROUP with CLIENT UNBLOCK (it returns as if timed
out, having delivered nothing), so a stop never strands entries in a dead read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from binder_core.deadletter import (
    ORIGINAL_GROUP,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    exception_headers,
)
from binder_core.errors import BinderException
from binder_core.message import Message
from binder_core.spi import BindingState, ConsumerSpec, Handle, Outcome
from binder_redis.connection import TRANSIENT, Command, Link
from binder_redis.fields import decode_fields, encode_headers
from binder_redis.settings import RedisConsumerProperties

if TYPE_CHECKING:
    from binder_redis.binder import RedisBinder

log = logging.getLogger(__name__)

#: Where a dead letter came from, beside Spring's x-original-* headers.
ORIGINAL_STREAM = "x-original-stream"
ORIGINAL_ID = "x-original-id"

_NONE = b"0-0"
_UNREACHABLE: tuple[type[BaseException], ...] = (*TRANSIENT, BinderException)
_ADMIN_ERRORS: tuple[type[BaseException], ...] = (*_UNREACHABLE, ResponseError)
_LATEST, _EARLIEST = b"$", b"0"

#: (stream key, entry id, raw fields) of each message of a batch, in batch order.
Ref = tuple[bytes, bytes, list[bytes]]


def backoff(failures: int, cap_ms: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures, at most ``cap_ms``."""
    return min(0.05 * 2.0 ** min(failures, 10), cap_ms / 1000)


class RedisBinding:
    """A consumer binding: ``concurrency`` consumers of one group."""

    def __init__(
        self,
        binder: RedisBinder,
        spec: ConsumerSpec,
        ext: RedisConsumerProperties,
        handle: Handle,
    ) -> None:
        self.name = spec.binding
        self.binder = binder
        self.spec = spec
        self.ext = ext
        self.handle = handle
        props = spec.properties
        self.partitioned = props.partitioned
        self.instance_count = props.instance_count or 1
        self.instance_index = props.instance_index or 0
        self.streams: list[tuple[bytes, int | None]] = []
        self.partitions = 0
        self.anonymous = spec.group is None
        self.group = spec.group or self._anonymous_group()
        self.start_id = (
            _EARLIEST if ext.start_offset == "earliest" and not self.anonymous else _LATEST
        )
        self.dlq_name = ext.dlq_name or f"{spec.destination}.{spec.group or 'anonymous'}.dlq"
        self.dlq_key = binder.key(self.dlq_name)
        # Unique per binding instance, kept across stop/start so a restarted binding finds
        # the entries it still holds.
        self.consumer_base = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._provisioned = False
        self._state = BindingState.STOPPED
        self.resumed = asyncio.Event()
        self._workers: list[_Worker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._halt_watcher = asyncio.Event()
        self._reshaping = asyncio.Lock()

    @staticmethod
    def _anonymous_group() -> str:
        return f"anonymous.{uuid.uuid4().hex[:12]}"

    @property
    def state(self) -> BindingState:
        return self._state

    def _layout(self, partitions: int) -> list[tuple[bytes, int | None]]:
        """The streams this binding reads when the destination has ``partitions``.

        The plain stream always (a producer without partition-count writes there; of the
        partitioned instances, index 0 reads it), plus every partition stream, or a
        partitioned instance's own ones: partition p belongs to p % instance-count.
        """
        b, dest = self.binder, self.spec.destination
        parts = [(b.key(f"{dest}-{p}"), p) for p in range(partitions)] if partitions > 1 else []
        plain: list[tuple[bytes, int | None]] = [(b.key(dest), None)]
        if not self.partitioned:
            return plain + parts
        mine = [s for s in parts if s[1] % self.instance_count == self.instance_index]
        return (plain if self.instance_index == 0 else []) + mine

    async def _partition_count(self) -> int:
        declared = self.ext.partition_count or await self.binder.partitions_of(
            self.spec.destination
        )
        return declared or (self.instance_count if self.partitioned else 1)

    async def provision(self, force: bool = False) -> None:
        """Create the group on each stream (MKSTREAM), unless it exists."""
        if self._provisioned and not force:
            return
        self.partitions = await self._partition_count()
        self.streams = self._layout(self.partitions)
        for key, _ in self.streams:
            await self.binder.create_group(key, self.group, self.start_id)
        self._provisioned = True

    async def start(self) -> None:
        if self._state is not BindingState.STOPPED:
            return
        await self.provision()
        self._state = BindingState.RUNNING
        self.resumed.set()
        self._start_workers()
        await self._until_ready()
        if self.ext.partition_count is None:
            self._halt_watcher.clear()
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch_partitions(), name=f"redis:{self.name}:partitions"
            )

    def _start_workers(self) -> None:
        concurrency = self.spec.properties.concurrency
        if not self.streams:
            log.warning(
                "binding %s: instance %d of %d owns none of the %d partition(s) of '%s' yet",
                self.name,
                self.instance_index,
                self.instance_count,
                self.partitions,
                self.spec.destination,
            )
            return
        if self.partitioned:
            # A stream is read by one worker only, so each partition's order holds.
            n = min(concurrency, len(self.streams))
            shares = [self.streams[i::n] for i in range(n)]
        else:
            shares = [self.streams] * concurrency
        self._workers = [_Worker(self, i, share) for i, share in enumerate(shares)]
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(w.run(), name=f"redis:{self.name}:{w.index}") for w in self._workers
        ]

    async def _until_ready(self) -> None:
        """Wait until every worker waits for new entries (bounded: if Redis is away, the
        workers keep trying on their own and nothing sent meanwhile is lost)."""
        waits = [asyncio.ensure_future(w.ready.wait()) for w in self._workers]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=self.binder.environment.socket_timeout)
        for w in pending:
            w.cancel()
        if pending:
            log.warning("binding %s: not reading yet; still trying", self.name)

    async def _stop_workers(self) -> None:
        """Let every worker finish (and acknowledge) its batch, then release them."""
        for worker in self._workers:
            worker.halt()
        tasks = self._tasks
        await self._interrupt_reads(lambda: all(t.done() for t in tasks))
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in self._workers:
            await worker.retire()
        self._workers, self._tasks = [], []

    async def _watch_partitions(self) -> None:
        """Follow a producer that declares (more) partitions after this binding started:
        their streams are added, their groups starting at 0 (nothing sent to them can
        predate this subscription)."""
        ext = self.ext
        every = (ext.claim_interval or ext.claim_idle // 2) / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halt_watcher.wait(), every)
            if self._halt_watcher.is_set():
                return
            try:
                known = await self.binder.partitions_of(self.spec.destination)
                if known <= self.partitions:
                    continue
                async with self._reshaping:
                    if self._state is BindingState.STOPPED:
                        return
                    layout = self._layout(known)
                    for key, _ in layout:
                        if (key, _) not in self.streams:
                            await self.binder.create_group(key, self.group, _EARLIEST)
                    log.info(
                        "binding %s: '%s' now has %d partitions",
                        self.name,
                        self.spec.destination,
                        known,
                    )
                    await self._stop_workers()
                    self.partitions, self.streams = known, layout
                    self._start_workers()
            except _ADMIN_ERRORS as exc:
                log.debug("binding %s: partition check failed: %s", self.name, exc)

    async def pause(self) -> None:
        if self._state is not BindingState.RUNNING:
            return
        self._state = BindingState.PAUSED
        self.resumed.clear()
        await self._interrupt_reads(lambda: not any(w.reading for w in self._workers))

    async def resume(self) -> None:
        if self._state is not BindingState.PAUSED:
            return
        self._state = BindingState.RUNNING
        self.resumed.set()

    async def stop(self) -> None:
        if self._state is BindingState.STOPPED:
            return
        self._state = BindingState.STOPPED
        self.resumed.set()
        self._halt_watcher.set()
        for worker in self._workers:
            worker.halt()
        async with self._reshaping:
            if self._watcher is not None:
                await asyncio.gather(self._watcher, return_exceptions=True)
                self._watcher = None
            await self._stop_workers()
        if self.anonymous:
            await self._destroy_group()

    async def _interrupt_reads(self, done: Callable[[], bool]) -> None:
        """CLIENT UNBLOCK every worker waiting in XREADGROUP until ``done()``: a read sent
        but not yet blocking when we look is caught on the next round."""
        while not done():
            for worker in self._workers:
                if worker.reading and worker.client_id is not None:
                    await self.binder.unblock(worker.client_id)
            await asyncio.sleep(0.005)

    async def _destroy_group(self) -> None:
        """An anonymous subscription ends with its binding, as in Spring."""
        for key, _ in self.streams:
            try:
                await self.binder.control(b"XGROUP", b"DESTROY", key, self.group.encode())
            except _ADMIN_ERRORS as exc:
                log.warning("binding %s: anonymous group not deleted: %s", self.name, exc)
        self.group = self._anonymous_group()
        self._provisioned = False


class _Worker:
    """One consumer of the group: its own name, connection and task."""

    def __init__(
        self, binding: RedisBinding, index: int, streams: Sequence[tuple[bytes, int | None]]
    ) -> None:
        self.binding = binding
        self.index = index
        ext = binding.ext
        self.name = f"{binding.consumer_base}:{index}".encode()
        self.link: Link = binding.binder.link(block_ms=ext.block)
        self.keys = [k for k, _ in streams]
        self.partition_of = dict(streams)
        self.client_id: int | None = None
        self.reading = False
        self.busy = False
        self.halted = False
        #: Set once the worker first waits for new entries: from then on, an entry added to
        #: its streams can be served to it (start() returns only then, as a subscribe would).
        self.ready = asyncio.Event()
        self._wake: asyncio.Future[None] | None = None
        self._cursors: dict[bytes, bytes] = {}
        group = binding.group.encode()
        count = str(ext.batch_size).encode()
        ids = len(self.keys)
        self._read_pending = (
            b"XREADGROUP", b"GROUP", group, self.name, b"COUNT", count,
            b"STREAMS", *self.keys, *[b"0"] * ids,
        )  # fmt: skip
        self._read_head = (b"XREADGROUP", b"GROUP", group, self.name, b"COUNT", count, b"BLOCK")
        self._read_tail = (b"STREAMS", *self.keys, *[b">"] * ids)

    def halt(self) -> None:
        """Finish the batch in hand (if any), then end."""
        self.halted = True
        self.wake()

    def wake(self) -> None:
        """Cut a back-off pause short (stop)."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _while_paused(self) -> None:
        """Until resumed, stopped, or halted (the binding is reshaped)."""
        resumed: asyncio.Future[Any] = asyncio.ensure_future(self.binding.resumed.wait())
        wake: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._wake = wake
        try:
            await asyncio.wait([resumed, wake], return_when=asyncio.FIRST_COMPLETED)
        finally:
            resumed.cancel()
            self._wake = None

    async def _pause(self, seconds: float) -> None:
        self._wake = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._wake, seconds)
        except TimeoutError:
            pass
        finally:
            self._wake = None

    async def run(self) -> None:
        b = self.binding
        ext = b.ext
        loop = asyncio.get_running_loop()
        claim_every = (ext.claim_interval or ext.claim_idle // 2) / 1000
        next_claim = loop.time()  # at once: a crashed predecessor's entries may be waiting
        takeover = b.partitioned  # our partitions are ours alone: take over all they hold
        backlog = True
        failures = 0
        while not (self.halted or b.state is BindingState.STOPPED):
            if b.state is BindingState.PAUSED:
                await self._while_paused()
                continue
            try:
                if takeover:
                    await self._claim(0, everything=True)
                    takeover, backlog = False, True
                    continue
                now = loop.time()
                if now >= next_claim:
                    claimed, more = await self._claim(ext.claim_idle)
                    next_claim = now if more else now + claim_every
                    backlog = backlog or claimed
                    continue
                if backlog:
                    reply = await self.link.call(*self._read_pending)
                    if not any(entries for _, entries in reply):
                        backlog = False
                        continue
                else:
                    reply = await self._read_new(max(1, int((next_claim - now) * 1000)))
                    if reply is None:
                        continue
                if failures:
                    failures = 0
                    b.binder.recovered()
                if not await self._process(reply):
                    failures += 1
                    backlog = True
                    await self._pause(backoff(failures, b.binder.environment.recovery_interval))
            except asyncio.CancelledError:
                raise
            except _UNREACHABLE as exc:
                failures += 1
                backlog = True
                b.binder.lost(f"binding {b.name}", exc)
                await self._pause(backoff(failures, b.binder.environment.recovery_interval))
            except ResponseError as exc:
                failures += 1
                backlog = True
                if str(exc).startswith("NOGROUP"):
                    # The stream or the group went (deleted, or Redis restarted without
                    # persistence): provision again and go on.
                    log.warning("binding %s: %s; creating the group again", b.name, exc)
                    await self._provision_again()
                else:
                    log.error("binding %s: Redis refused a read: %s", b.name, exc)
                    await self._pause(backoff(failures, b.binder.environment.recovery_interval))
            except Exception as exc:  # a worker must never die silently
                failures += 1
                backlog = True
                log.exception("binding %s: unexpected error in consumer: %s", b.name, exc)
                await self._pause(backoff(failures, b.binder.environment.recovery_interval))

    async def _provision_again(self) -> None:
        try:
            await self.binding.provision(force=True)
        except _ADMIN_ERRORS as exc:
            log.error("binding %s: cannot create the group: %s", self.binding.name, exc)

    async def _read_new(self, until_claim_ms: int) -> Any:
        block = min(self.binding.ext.block, until_claim_ms)
        self.client_id = await self.link.client_id()
        self.reading = True
        try:
            if self.halted or self.binding.state is not BindingState.RUNNING:
                return None  # paused or stopped while we were getting ready
            return await self.link.call(
                *self._read_head, str(block).encode(), *self._read_tail, on_sent=self.ready.set
            )
        finally:
            self.reading = False

    async def _claim(self, min_idle: int, everything: bool = False) -> tuple[bool, bool]:
        """XAUTOCLAIM entries idle for ``min_idle`` ms into our pending list (read next as
        our backlog, in entry order); returns (claimed any, more to scan)."""
        b = self.binding
        count = str(b.ext.batch_size).encode()
        claimed = 0
        more = False
        for key in self.keys:
            cursor = self._cursors.get(key, _NONE)
            while True:
                reply = await self.link.call(
                    b"XAUTOCLAIM", key, b.group.encode(), self.name, str(min_idle).encode(),
                    cursor, b"COUNT", count, b"JUSTID",
                )  # fmt: skip
                cursor = reply[0]
                claimed += len(reply[1])
                if not everything or cursor == _NONE:
                    break
            self._cursors[key] = cursor
            more = more or cursor != _NONE
        if claimed:
            log.info(
                "binding %s: took over %d entr%s pending in group '%s'%s",
                b.name,
                claimed,
                "y" if claimed == 1 else "ies",
                b.group,
                "" if everything else f" for more than {min_idle} ms (a consumer died?)",
            )
        return claimed > 0, more

    async def _process(self, reply: Any) -> bool:
        """Hand the entries to the core, dead-letter failures, acknowledge; False if the
        core could not finish the batch (nothing acknowledged)."""
        b = self.binding
        batch: list[Message[bytes]] = []
        refs: list[Ref] = []
        gone: list[tuple[bytes, bytes]] = []
        for key, entries in reply:
            partition = self.partition_of.get(key)
            for entry_id, fields in entries:
                if fields is None:  # trimmed away while pending: nothing left to deliver
                    gone.append((key, entry_id))
                    continue
                payload, headers = decode_fields(fields)
                batch.append(Message(payload, headers, None, partition))
                refs.append((key, entry_id, fields))
        if gone:
            log.warning(
                "binding %s: %d pending entr%s had been deleted from the stream (MAXLEN or "
                "XTRIM) before being processed",
                b.name,
                len(gone),
                "y" if len(gone) == 1 else "ies",
            )
        self.busy = True
        try:
            outcomes: Sequence[Outcome] = []
            if batch:
                try:
                    outcomes = await b.handle(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The core could not finish (an output was not confirmed): acknowledge
                    # nothing; the entries stay pending and are read again.
                    log.error("binding %s: batch not processed (%s); redelivering", b.name, exc)
                    return False
            await self._settle(refs, outcomes, gone)
            return True
        finally:
            self.busy = False

    async def _settle(
        self, refs: list[Ref], outcomes: Sequence[Outcome], gone: list[tuple[bytes, bytes]]
    ) -> None:
        b = self.binding
        keep: set[int] = set()
        if outcomes and outcomes.count(None) != len(outcomes):
            keep = await self._dead_letter(refs, outcomes)
        acks: dict[bytes, list[bytes]] = {}
        for i, (key, entry_id, _) in enumerate(refs):
            if i not in keep:
                acks.setdefault(key, []).append(entry_id)
        for key, entry_id in gone:
            acks.setdefault(key, []).append(entry_id)
        group = b.group.encode()
        commands: list[Command] = [(b"XACK", key, group, *ids) for key, ids in acks.items()]
        if not commands:
            return
        # XACK is idempotent and the pending list lives in Redis, so across a reconnect
        # the ack is simply sent again: no redelivery for a blip after the work was done.
        replies = await b.binder.with_reconnect(self.link, commands, f"binding {b.name}: ack")
        for reply in replies:
            if isinstance(reply, ResponseError):
                log.error("binding %s: acknowledgement refused: %s", b.name, reply)

    async def _dead_letter(self, refs: list[Ref], outcomes: Sequence[Outcome]) -> set[int]:
        """XADD the failures to the DLQ; return the indexes NOT dead-lettered (kept
        pending, to be tried again, rather than acknowledged and lost)."""
        b = self.binding
        failed = [i for i, o in enumerate(outcomes) if o is not None]
        last = outcomes[failed[-1]]
        if not b.ext.enable_dlq:
            log.error(
                "binding %s: dropping %d failed message(s) (enable-dlq is false); last error: %s",
                b.name,
                len(failed),
                last,
            )
            return set()
        commands: list[Command] = []
        for i in failed:
            key, entry_id, fields = refs[i]
            exc = outcomes[i]
            assert exc is not None
            reason: dict[str, Any] = exception_headers(exc)
            reason[ORIGINAL_TOPIC] = b.spec.destination
            if not b.anonymous:
                reason[ORIGINAL_GROUP] = b.group
            partition = self.partition_of.get(key)
            if partition is not None:
                reason[ORIGINAL_PARTITION] = partition
            reason[ORIGINAL_STREAM] = key.decode("utf-8", "replace")
            reason[ORIGINAL_ID] = entry_id.decode()
            entry = dict(zip(fields[::2], fields[1::2], strict=True))
            extra = encode_headers(reason)
            entry.update(zip(extra[::2], extra[1::2], strict=True))
            flat = [x for pair in entry.items() for x in pair]
            commands.append((b"XADD", b.dlq_key, b"*", *flat))
        replies = await b.binder.with_reconnect(
            self.link, commands, f"binding {b.name}: dead-letter"
        )
        refused = {failed[j] for j, r in enumerate(replies) if isinstance(r, ResponseError)}
        if refused:
            log.error(
                "binding %s: %d failed message(s) could not be dead-lettered (%s); they stay "
                "pending and are tried again",
                b.name,
                len(refused),
                next(r for r in replies if isinstance(r, ResponseError)),
            )
        log.warning(
            "binding %s: %d failed message(s) dead-lettered to '%s'; last error: %s",
            b.name,
            len(failed) - len(refused),
            b.dlq_name,
            last,
        )
        return refused

    async def retire(self) -> None:
        """After stop: forget this consumer in Redis if it holds nothing (a consumer that
        still holds entries stays, so they can be claimed), and close the connection."""
        b = self.binding
        if not b.anonymous:
            group = b.group.encode()
            for key in self.keys:
                try:
                    held = await self.link.call(
                        b"XPENDING", key, group, b"-", b"+", b"1", self.name
                    )
                    if not held:
                        await self.link.call(b"XGROUP", b"DELCONSUMER", key, group, self.name)
                except _ADMIN_ERRORS as exc:
                    log.debug("binding %s: consumer not removed: %s", b.name, exc)
        await self.link.close()
