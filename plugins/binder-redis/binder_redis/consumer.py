"""Consuming from Redis Streams: a ``Subscription`` per binding (its group on each stream)
and a ``Source`` per consumer of the group, driven by the core's consumer loop.

Each source is a consumer of the group with a name of its own and a connection of its own
(a blocking read holds its connection). A fetch takes, in this order:

1. its own pending entries (XREADGROUP ... 0): what it read but never acknowledged, because
   a batch was given back or the connection went before the ack; in entry order, so a
   partition's order survives a redelivery;
2. every ``claim-interval``, entries other consumers of the group have held for longer than
   ``claim-idle`` (XAUTOCLAIM): the work of a crashed process, taken over and then read as
   in 1;
3. new entries (XREADGROUP ... BLOCK ... >).

Settling a batch dead-letters its failures (XADD to the DLQ stream, confirmed) and then
acknowledges the batch with one XACK per stream. Giving a batch back acknowledges nothing:
the entries stay pending and step 1 reads them again. ``interrupt`` ends a waiting read
with CLIENT UNBLOCK (it returns as if timed out, having delivered nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from binder_core.deadletter import (
    ORIGINAL_GROUP,
    ORIGINAL_PARTITION,
    ORIGINAL_TOPIC,
    exception_headers,
)
from binder_core.errors import BinderException
from binder_core.message import Message
from binder_core.spi import Batch, ConsumerSpec, Disconnected
from binder_redis.client import RedisClient
from binder_redis.connection import TRANSIENT, Command, Link
from binder_redis.fields import decode_fields, encode_headers
from binder_redis.settings import RedisConsumerProperties

log = logging.getLogger(__name__)

#: Where a dead letter came from, beside Spring's x-original-* headers.
ORIGINAL_STREAM = "x-original-stream"
ORIGINAL_ID = "x-original-id"

_NONE = b"0-0"
_UNREACHABLE: tuple[type[BaseException], ...] = (*TRANSIENT, BinderException)
_ADMIN_ERRORS: tuple[type[BaseException], ...] = (*_UNREACHABLE, ResponseError)
_LATEST, _EARLIEST = b"$", b"0"


@dataclass(slots=True)
class Entries:
    """A batch's Redis side: (stream, entry id, raw fields) per message, and the entries
    that had been trimmed away while pending (acknowledged with the batch)."""

    refs: list[tuple[bytes, bytes, list[bytes]]] = field(default_factory=list)
    gone: list[tuple[bytes, bytes]] = field(default_factory=list)


def _gone(exc: ResponseError) -> bool:
    """Whether Redis says the stream or the group does not exist (any more)."""
    text = str(exc)
    return text.startswith("NOGROUP") or "no longer exists" in text


class RedisSubscription:
    """A binding's group on each stream of its destination."""

    def __init__(
        self, client: RedisClient, spec: ConsumerSpec, ext: RedisConsumerProperties
    ) -> None:
        self.client = client
        self.name = spec.binding
        self.spec = spec
        self.ext = ext
        props = spec.properties
        self.partitioned = props.partitioned
        self.instance_count = props.instance_count or 1
        self.instance_index = props.instance_index or 0
        self.concurrency = props.concurrency
        self.anonymous = spec.group is None
        self.group = spec.group or f"anonymous.{uuid.uuid4().hex[:12]}"
        self.start_id = (
            _EARLIEST if ext.start_offset == "earliest" and not self.anonymous else _LATEST
        )
        self.dlq_name = ext.dlq_name or f"{spec.destination}.{spec.group or 'anonymous'}.dlq"
        self.dlq_key = client.key(self.dlq_name)
        # Unique per binding, kept across stop/start so a restarted binding finds the
        # entries it still holds.
        self.consumer_base = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.drain_timeout = client.environment.send_timeout / 1000
        self.streams: list[tuple[bytes, int | None]] = []
        self.partitions = 0
        #: Bumped when the destination gains partitions: sources then read the new layout.
        self.layout = 0
        self._watcher: asyncio.Task[None] | None = None
        self._provisioned = False
        self._provisioning = asyncio.Lock()

    def _layout(self, partitions: int) -> list[tuple[bytes, int | None]]:
        """The streams this binding reads when the destination has ``partitions``.

        The plain stream always (a producer without partition-count writes there; of the
        partitioned instances, index 0 reads it), plus every partition stream, or a
        partitioned instance's own ones: partition p belongs to p % instance-count.
        """
        c, dest = self.client, self.spec.destination
        parts = [(c.key(f"{dest}-{p}"), p) for p in range(partitions)] if partitions > 1 else []
        plain: list[tuple[bytes, int | None]] = [(c.key(dest), None)]
        if not self.partitioned:
            return plain + parts
        mine = [s for s in parts if s[1] % self.instance_count == self.instance_index]
        return (plain if self.instance_index == 0 else []) + mine

    async def provision(self) -> None:
        """Create the group on each stream (MKSTREAM), unless it exists."""
        declared = self.ext.partition_count or await self.client.partitions_of(
            self.spec.destination
        )
        self.partitions = declared or (self.instance_count if self.partitioned else 1)
        self.streams = self._layout(self.partitions)
        for key, _ in self.streams:
            await self.client.create_group(key, self.group, self.start_id)
        self._provisioned = True

    async def ensure(self) -> None:
        """Provision again after ``close`` (a restarted anonymous binding gets a new group,
        from now on)."""
        if not self._provisioned:
            async with self._provisioning:
                if not self._provisioned:
                    await self.provision()
                    self.layout += 1

    def share(self, index: int) -> list[tuple[bytes, int | None]]:
        """The streams consumer ``index`` reads: all of them, or (partitioned) its own
        share, so that a stream is read by one consumer only and its order holds."""
        if not self.partitioned:
            return self.streams
        n = max(1, min(self.concurrency, len(self.streams)))
        return self.streams[index::n] if index < n else []

    def source(self, index: int) -> RedisSource:
        if self._watcher is None and self.ext.partition_count is None:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch_partitions(), name=f"redis:{self.name}:partitions"
            )
        return RedisSource(self, index)

    async def _watch_partitions(self) -> None:
        """Follow a producer that declares (more) partitions after this binding started:
        their streams are added, their groups starting at 0 (nothing sent to them can
        predate this subscription)."""
        ext = self.ext
        every = (ext.claim_interval or ext.claim_idle // 2) / 1000
        while True:
            await asyncio.sleep(every)
            try:
                known = await self.client.partitions_of(self.spec.destination)
                if known <= self.partitions:
                    continue
                layout = self._layout(known)
                for key, p in layout:
                    if (key, p) not in self.streams:
                        await self.client.create_group(key, self.group, _EARLIEST)
                log.info(
                    "binding %s: '%s' now has %d partitions",
                    self.name,
                    self.spec.destination,
                    known,
                )
                self.partitions, self.streams = known, layout
                self.layout += 1
            except _ADMIN_ERRORS as exc:
                log.debug("binding %s: partition check failed: %s", self.name, exc)

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        if self.anonymous:
            # An anonymous subscription ends with its binding, as in Spring.
            for key, _ in self.streams:
                try:
                    await self.client.control(b"XGROUP", b"DESTROY", key, self.group.encode())
                except _ADMIN_ERRORS as exc:
                    log.warning("binding %s: anonymous group not deleted: %s", self.name, exc)
            self.group = f"anonymous.{uuid.uuid4().hex[:12]}"
            self._provisioned = False


class RedisSource:
    """One consumer of the group: its own name and connection."""

    overlap = False

    def __init__(self, subscription: RedisSubscription, index: int) -> None:
        self.sub = subscription
        self.index = index
        ext = subscription.ext
        self.label = (
            subscription.name if subscription.concurrency == 1 else (f"{subscription.name}#{index}")
        )
        self.name = f"{subscription.consumer_base}:{index}".encode()
        self.link: Link = subscription.client.link(block_ms=ext.block)
        self.client_id: int | None = None
        self.reading = False
        self._interrupted = False
        self._unblocking: asyncio.Task[None] | None = None
        self._cursors: dict[bytes, bytes] = {}
        self._layout = -1
        self._backlog = True
        self._takeover = subscription.partitioned  # our partitions are ours alone
        self._next_claim = 0.0  # at once: a crashed predecessor's entries may be waiting
        #: The first read, made by ``open``: its entries, or the wait for new ones.
        self._stash: Any = None
        self._waiting: asyncio.Future[Any] | None = None
        self.keys: list[bytes] = []
        self.partition_of: dict[bytes, int | None] = {}
        self._read_pending: Command = ()
        self._read_head: Command = ()
        self._read_tail: Command = ()

    def _read_layout(self) -> None:
        sub = self.sub
        streams = sub.share(self.index)
        self._layout = sub.layout
        self.keys = [k for k, _ in streams]
        self.partition_of = dict(streams)
        group = sub.group.encode()
        count = str(sub.ext.batch_size).encode()
        ids = len(self.keys)
        self._read_pending = (
            b"XREADGROUP", b"GROUP", group, self.name, b"COUNT", count,
            b"STREAMS", *self.keys, *[b"0"] * ids,
        )  # fmt: skip
        self._read_head = (b"XREADGROUP", b"GROUP", group, self.name, b"COUNT", count, b"BLOCK")
        self._read_tail = (b"STREAMS", *self.keys, *[b">"] * ids)

    async def open(self) -> None:
        try:
            await self.sub.ensure()
        except _ADMIN_ERRORS as exc:
            raise Disconnected(f"cannot create the group: {exc}") from exc
        self._read_layout()
        if not self.keys:
            log.warning(
                "binding %s: instance %d of %d owns none of the %d partition(s) of '%s' yet",
                self.label,
                self.sub.instance_index,
                self.sub.instance_count,
                self.sub.partitions,
                self.sub.spec.destination,
            )
        try:
            await self.link.call(b"PING")
            if self.keys:
                await self._first_read()
        except _UNREACHABLE as exc:
            raise Disconnected(f"cannot reach Redis: {exc}") from exc
        except ResponseError as exc:
            if not _gone(exc):
                raise
            await self._provision_again(exc)

    async def _first_read(self) -> None:
        """Take over what this consumer (or, partitioned, its partitions) still holds, then
        either keep the pending entries as the first batch or start waiting for new ones,
        returning once that wait is in place: from then on, entries sent to the stream are
        shared among the group's waiting consumers (as a subscription would be)."""
        if self._takeover:
            await self._claim(0, everything=True)
            self._takeover = False
        reply = await self.link.call(*self._read_pending)
        if any(entries for _, entries in reply):
            self._stash = reply
            return
        self._backlog = False
        claim_every = (self.sub.ext.claim_interval or self.sub.ext.claim_idle // 2) / 1000
        self._next_claim = asyncio.get_running_loop().time() + claim_every
        sent = asyncio.Event()
        waiting = self._waiting = asyncio.ensure_future(
            self._read_new(self.sub.ext.block, sent.set)
        )
        signalled = asyncio.ensure_future(sent.wait())
        await asyncio.wait({waiting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        if waiting.done() and waiting.exception() is not None:
            self._waiting = None
            error = waiting.exception()
            assert error is not None
            raise error

    # -- fetching --------------------------------------------------------------------------

    async def fetch(self, wait: bool) -> Batch | None:
        sub = self.sub
        loop = asyncio.get_running_loop()
        claim_every = (sub.ext.claim_interval or sub.ext.claim_idle // 2) / 1000
        try:
            while True:
                if self._interrupted:
                    self._interrupted = False
                    return None
                if self._stash is not None:
                    reply, self._stash = self._stash, None
                    batch = await self._batch(reply)
                    if batch is not None:
                        return batch
                    continue
                if self._waiting is not None:
                    waiting, self._waiting = self._waiting, None
                    reply = await waiting
                    if reply is not None:
                        batch = await self._batch(reply)
                        if batch is not None:
                            return batch
                    continue
                if self._layout != sub.layout:
                    self._read_layout()
                    self._takeover = sub.partitioned
                    self._backlog = True
                if not self.keys:
                    if not wait:
                        return None
                    await asyncio.sleep(min(claim_every, 1.0))
                    continue
                if self._takeover:
                    await self._claim(0, everything=True)
                    self._takeover, self._backlog = False, True
                    continue
                now = loop.time()
                if now >= self._next_claim:
                    claimed, more = await self._claim(sub.ext.claim_idle)
                    self._next_claim = now if more else now + claim_every
                    self._backlog = self._backlog or claimed
                    continue
                if self._backlog:
                    reply = await self.link.call(*self._read_pending)
                    if not any(entries for _, entries in reply):
                        self._backlog = False
                        continue
                elif not wait:
                    return None
                else:
                    reply = await self._read_new(max(1, int((self._next_claim - now) * 1000)))
                    if reply is None:
                        continue
                sub.client.recovered()
                batch = await self._batch(reply)
                if batch is not None:
                    return batch
        except _UNREACHABLE as exc:
            sub.client.lost(f"binding {sub.name}", exc)
            raise Disconnected(f"read failed: {exc}") from exc
        except ResponseError as exc:
            if _gone(exc):
                await self._provision_again(exc)
            raise

    async def _provision_again(self, exc: ResponseError) -> None:
        """The stream or the group went (deleted, or Redis restarted without persistence):
        create the group again; the consumer is then opened afresh."""
        log.warning("binding %s: %s; creating the group again", self.label, exc)
        with contextlib.suppress(*_ADMIN_ERRORS):
            await self.sub.provision()
        raise Disconnected(f"the group was missing: {exc}") from exc

    async def _read_new(
        self, until_claim_ms: int, on_sent: Callable[[], None] | None = None
    ) -> Any:
        block = min(self.sub.ext.block, until_claim_ms)
        self.client_id = await self.link.client_id()
        self.reading = True
        try:
            if self._interrupted:
                return None
            return await self.link.call(
                *self._read_head, str(block).encode(), *self._read_tail, on_sent=on_sent
            )
        finally:
            self.reading = False

    def interrupt(self) -> None:
        self._interrupted = True
        if self._unblocking is None or self._unblocking.done():
            self._unblocking = asyncio.get_running_loop().create_task(self._unblock())

    async def _unblock(self) -> None:
        """CLIENT UNBLOCK the read in progress until it returned: a read sent but not yet
        blocking when we look is caught on the next round."""
        for _ in range(400):  # about two seconds; a read times out by itself after that
            if not self.reading:
                return
            if self.client_id is not None:
                await self.sub.client.unblock(self.client_id)
            await asyncio.sleep(0.005)

    async def _claim(self, min_idle: int, everything: bool = False) -> tuple[bool, bool]:
        """XAUTOCLAIM entries idle for ``min_idle`` ms into our pending list (read next as
        our backlog, in entry order); returns (claimed any, more to scan)."""
        sub = self.sub
        count = str(sub.ext.batch_size).encode()
        claimed = 0
        more = False
        for key in self.keys:
            cursor = self._cursors.get(key, _NONE)
            while True:
                reply = await self.link.call(
                    b"XAUTOCLAIM", key, sub.group.encode(), self.name, str(min_idle).encode(),
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
                self.label,
                claimed,
                "y" if claimed == 1 else "ies",
                sub.group,
                "" if everything else f" for more than {min_idle} ms (a consumer died?)",
            )
        return claimed > 0, more

    async def _batch(self, reply: Any) -> Batch | None:
        """The entries of a read as a batch; entries trimmed away while pending are
        acknowledged at once (there is nothing left to deliver)."""
        messages: list[Message[bytes]] = []
        entries = Entries()
        unreadable: dict[int, Exception] = {}
        for key, found in reply:
            partition = self.partition_of.get(key)
            for entry_id, fields in found:
                if fields is None:  # trimmed away while pending: nothing left to deliver
                    entries.gone.append((key, entry_id))
                    continue
                try:
                    payload, headers = decode_fields(fields)
                except Exception as exc:
                    # One entry's fields are beyond reading: it is dead-lettered with the
                    # reason; the stream goes on.
                    unreadable[len(messages)] = exc
                    payload, headers = b"", {}
                messages.append(Message(payload, headers, None, partition))
                entries.refs.append((key, entry_id, fields))
        if entries.gone:
            log.warning(
                "binding %s: %d pending entr%s had been deleted from the stream (MAXLEN or "
                "XTRIM) before being processed",
                self.label,
                len(entries.gone),
                "y" if len(entries.gone) == 1 else "ies",
            )
            if not messages:
                await self._ack(entries, set())
                return None
        return Batch(messages, entries, unreadable or None)

    # -- settling --------------------------------------------------------------------------

    async def settle(
        self, batch: Batch, failed: Sequence[tuple[int, Exception]], transaction: Any = None
    ) -> None:
        entries: Entries = batch.token
        keep: set[int] = set()
        if failed:
            keep = await self._dead_letter(entries, failed)
            if keep:
                self._backlog = True  # kept pending: read again
        await self._ack(entries, keep)

    async def _ack(self, entries: Entries, keep: set[int]) -> None:
        sub = self.sub
        acks: dict[bytes, list[bytes]] = {}
        for i, (key, entry_id, _) in enumerate(entries.refs):
            if i not in keep:
                acks.setdefault(key, []).append(entry_id)
        for key, entry_id in entries.gone:
            acks.setdefault(key, []).append(entry_id)
        group = sub.group.encode()
        commands: list[Command] = [(b"XACK", key, group, *ids) for key, ids in acks.items()]
        if not commands:
            return
        # XACK is idempotent and the pending list lives in Redis, so across a reconnect
        # the ack is simply sent again: no redelivery for a blip after the work was done.
        replies = await sub.client.with_reconnect(self.link, commands, f"binding {sub.name}: ack")
        for reply in replies:
            if isinstance(reply, ResponseError):
                log.error("binding %s: acknowledgement refused: %s", self.label, reply)

    async def _dead_letter(
        self, entries: Entries, failed: Sequence[tuple[int, Exception]]
    ) -> set[int]:
        """XADD the failures to the DLQ; return the indexes NOT dead-lettered (kept
        pending, to be tried again, rather than acknowledged and lost)."""
        sub = self.sub
        last = type(failed[-1][1]).__name__
        if not sub.ext.enable_dlq:
            log.error(
                "binding %s: dropping %d failed message(s) (enable-dlq is false); last error: %s",
                self.label,
                len(failed),
                last,
            )
            return set()
        commands: list[Command] = []
        for i, exc in failed:
            key, entry_id, fields = entries.refs[i]
            reason: dict[str, Any] = exception_headers(exc)
            reason[ORIGINAL_TOPIC] = sub.spec.destination
            if not sub.anonymous:
                reason[ORIGINAL_GROUP] = sub.group
            partition = self.partition_of.get(key)
            if partition is not None:
                reason[ORIGINAL_PARTITION] = partition
            reason[ORIGINAL_STREAM] = key.decode("utf-8", "replace")
            reason[ORIGINAL_ID] = entry_id.decode()
            if len(fields) % 2:  # unreadable fields: kept as they came, after the reason
                flat = [*encode_headers(reason), b"x-original-fields", b"\x00".join(fields)]
            else:
                entry = dict(zip(fields[::2], fields[1::2], strict=True))
                extra = encode_headers(reason)
                entry.update(zip(extra[::2], extra[1::2], strict=True))
                flat = [x for pair in entry.items() for x in pair]
            commands.append((b"XADD", sub.dlq_key, b"*", *flat))
        replies = await sub.client.with_reconnect(
            self.link, commands, f"binding {sub.name}: dead-letter"
        )
        refused = {failed[j][0] for j, r in enumerate(replies) if isinstance(r, ResponseError)}
        if refused:
            log.error(
                "binding %s: %d failed message(s) could not be dead-lettered (%s); they stay "
                "pending and are tried again",
                self.label,
                len(refused),
                next(r for r in replies if isinstance(r, ResponseError)),
            )
        log.warning(
            "binding %s: %d failed message(s) dead-lettered to '%s'; last error: %s",
            self.label,
            len(failed) - len(refused),
            sub.dlq_name,
            last,
        )
        return refused

    async def redeliver(self, batches: Sequence[Batch]) -> None:
        self._backlog = True  # nothing was acknowledged: read our pending entries again

    async def pause(self) -> None:
        return None

    async def resume(self) -> None:
        return None

    async def close(self) -> None:
        """Forget this consumer in Redis if it holds nothing (one that still holds entries
        stays, so they can be claimed), and close the connection."""
        task, self._unblocking = self._unblocking, None
        if task is not None and not task.done():
            task.cancel()
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            if self.client_id is not None:
                with contextlib.suppress(*_ADMIN_ERRORS):
                    await self.sub.client.unblock(self.client_id)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(waiting, 5)
        sub = self.sub
        if not sub.anonymous:
            group = sub.group.encode()
            for key in self.keys:
                try:
                    held = await self.link.call(
                        b"XPENDING", key, group, b"-", b"+", b"1", self.name
                    )
                    if not held:
                        await self.link.call(b"XGROUP", b"DELCONSUMER", key, group, self.name)
                except _ADMIN_ERRORS as exc:
                    log.debug("binding %s: consumer not removed: %s", self.label, exc)
        await self.link.close()
