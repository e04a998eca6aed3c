"""Keyed state for functions, kept durable by the binder, and tables read from a topic.

A function declares what it keeps as a parameter typed ``Store[T]`` (after its input), and
what it reads as ``Table[T]`` or ``GlobalTable[T]``::

    def price_alerts(tick: Tick, refs: Store[Reference], limits: GlobalTable[Limit]) -> ...:
        ref = refs.get(tick.symbol)
        ...
        refs[tick.symbol] = Reference(price=tick.price)

Keys are the function's choice; choose what the input is partitioned by (the symbol
here), so that a key's state lives with its partition. On a binder with the ``state``
capability (Kafka) each store is backed by a compacted changelog topic,
``<group>.<function>.<store>.changelog``, partitioned like the input. A batch's changes go
to it once the batch's outputs are confirmed and before its input is committed (in the
same transaction when transactions are on); the partitions a consumer is assigned are
restored from it before any of their input is processed, and partitions it loses are
dropped. On other binders a store lives in the process (lost when it stops).

Changes are transactional per message and per batch: what a failed attempt wrote is
forgotten, and so is what a batch that is given back wrote, so a message delivered again
is processed against the state from before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from binder_core.committed import Committed, Encoded, InMemory
from binder_core.message import Message

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A change that removes the key (a tombstone in the changelog).
_DELETED: Any = object()


class _Writing:
    """What one consumer task's batch has written so far (per store)."""

    __slots__ = ("batch", "message", "partition")

    def __init__(self) -> None:
        self.batch: dict[str, tuple[int, Any]] = {}
        self.message: dict[str, tuple[int, Any]] = {}
        self.partition = 0


class Store(Generic[T]):
    """A keyed state store (declare ``name: Store[T]`` as a parameter of a function).

    Reads see, newest first: what the message being processed wrote, what its batch wrote,
    what batches not yet acknowledged wrote, and the committed state. Each consumer task
    writes in its own layer (a context variable), so concurrent consumers of one binding
    and a batch processed while the one before it is confirmed never see each other's
    uncommitted writes undone."""

    def __init__(self, name: str, kind: Any, committed: Committed | None = None) -> None:
        self.name = name
        self._adapter: TypeAdapter[Any] = TypeAdapter(kind)
        #: key -> (partition, value): what acknowledged batches left (a dictionary, or
        #: an SQLite file: ``binder_core.committed``).
        self._committed: Committed = committed if committed is not None else InMemory()
        #: Changes of batches processed and not yet acknowledged, oldest first, with the
        #: task that processed them (a task giving its batches back forgets its own).
        self._pending: list[tuple[object, dict[str, tuple[int, Any]]]] = []
        self._writing: ContextVar[_Writing | None] = ContextVar(f"store:{name}", default=None)

    # -- what functions use ----------------------------------------------------------------

    def _find(self, k: str) -> tuple[int, Any] | None:
        found: tuple[int, Any] | None
        writing = self._writing.get()
        if writing is not None:
            found = writing.message.get(k) or writing.batch.get(k)
            if found is not None:
                return found
        for _, changes in reversed(self._pending):
            found = changes.get(k)
            if found is not None:
                return found
        return self._committed_at(k)

    def _committed_at(self, k: str) -> tuple[int, Any] | None:
        """The committed entry of ``k``, its value read from the changelog's bytes on first
        use (a restore keeps the bytes: most keys of a large store are never read before
        they are written again)."""
        found: tuple[int, Any] | None = self._committed.get(k)
        if found is None or type(found[1]) is not Encoded:
            return found
        try:
            value = self._adapter.validate_json(found[1].raw)
        except ValidationError as exc:
            log.warning(
                "store %s: a changelog value for key %r cannot be read (%d problem(s)); "
                "the key is treated as having none",
                self.name,
                k[:60],
                exc.error_count(),
            )
            self._committed.apply([(k, None)])
            return None
        entry = (found[0], value)
        self._committed.remember(k, entry)
        return entry

    def _all_committed(self) -> dict[str, tuple[int, Any]]:
        """Every committed entry, read."""
        out: dict[str, tuple[int, Any]] = {}
        for k, entry in self._committed.items():
            if type(entry[1]) is Encoded:
                read = self._committed_at(k)
                if read is None:
                    continue
                entry = read
            out[k] = entry
        return out

    def get(self, key: Any, default: T | None = None) -> T | None:
        """The value of ``key`` as the message being processed sees it, or ``default``."""
        found = self._find(str(key))
        if found is None or found[1] is _DELETED:
            return default
        return found[1]  # type: ignore[no-any-return]

    def __getitem__(self, key: Any) -> T:
        found = self._find(str(key))
        if found is None or found[1] is _DELETED:
            raise KeyError(key)
        return found[1]  # type: ignore[no-any-return]

    def __contains__(self, key: Any) -> bool:
        found = self._find(str(key))
        return found is not None and found[1] is not _DELETED

    def __setitem__(self, key: Any, value: T) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def _layer(self) -> _Writing:
        writing = self._writing.get()
        if writing is None:
            raise RuntimeError(
                f"store '{self.name}' is written by its function while it processes a "
                "message, not from elsewhere"
            )
        return writing

    def put(self, key: Any, value: T) -> None:
        """Set ``key``: kept once the message is processed and its batch acknowledged."""
        writing = self._layer()
        writing.message[str(key)] = (writing.partition, self._adapter.validate_python(value))

    def delete(self, key: Any) -> None:
        """Remove ``key`` (kept as ``put`` is)."""
        writing = self._layer()
        writing.message[str(key)] = (writing.partition, _DELETED)

    def items(self) -> Iterator[tuple[str, T]]:
        """Every key and value, as the message being processed sees them."""
        merged = dict(self._all_committed())
        for _, changes in self._pending:
            merged.update(changes)
        writing = self._writing.get()
        if writing is not None:
            merged.update(writing.batch)
            merged.update(writing.message)
        return ((k, v) for k, (_, v) in merged.items() if v is not _DELETED)

    def keys(self) -> Iterator[str]:
        return (k for k, _ in self.items())

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    # -- what the core does ----------------------------------------------------------------

    def begin(self) -> _Writing:
        """A batch starts in this task."""
        writing = _Writing()
        self._writing.set(writing)
        return writing

    def end(self) -> dict[str, tuple[int, Any]] | None:
        """The batch is processed: its changes wait for it to be acknowledged (returned,
        to hand to ``settle``); None when it changed nothing."""
        writing = self._writing.get()
        self._writing.set(None)
        if writing is None or not writing.batch:
            return None
        self._pending.append((_task(), writing.batch))
        return writing.batch

    @staticmethod
    def message_done(writing: _Writing, ok: bool) -> None:
        """The message's changes join its batch (processed) or are forgotten (failed)."""
        if ok and writing.message:
            writing.batch.update(writing.message)
        writing.message = {}

    def settle(self, changes: dict[str, tuple[int, Any]]) -> None:
        """The batch that made ``changes`` was acknowledged: they are the state now."""
        for i, (_, pending) in enumerate(self._pending):
            if pending is changes:
                del self._pending[i]
                break
        self._committed.apply((k, None if pv[1] is _DELETED else pv) for k, pv in changes.items())

    def forget(self) -> None:
        """This task gave its unacknowledged batches back: forget what they wrote (they
        are processed again)."""
        task = _task()
        self._pending = [(t, c) for t, c in self._pending if t is not task]
        writing = self._writing.get()
        if writing is not None:
            self._writing.set(None)

    @staticmethod
    def changes(changes: dict[str, tuple[int, Any]]) -> list[tuple[int, str, Any]]:
        """A batch's changes: (partition, key, value or None for a delete)."""
        return [(p, k, None if v is _DELETED else v) for k, (p, v) in changes.items()]

    def encode(self, value: Any) -> bytes:
        return self._adapter.dump_json(value)

    def restore(self, records: Iterable[Message[bytes]]) -> None:
        """Changelog records, replayed in order (kept as bytes until read)."""
        self._committed.restore(
            (m.key.decode("utf-8", "replace"), m.partition or 0, m.payload)
            for m in records
            if m.key is not None
        )

    def drop(self, partitions: Collection[int]) -> None:
        """Forget the state of partitions this consumer no longer owns."""
        lost = set(partitions)
        self._committed.drop(lost)
        for _, changes in self._pending:
            for k in [k for k, pv in changes.items() if pv[0] in lost]:
                del changes[k]

    def snapshot(self) -> dict[str, Any]:
        """The committed state (what queries show)."""
        return {k: v for k, (_, v) in self._all_committed().items() if v is not _DELETED}

    def lookup(self, key: str) -> tuple[bool, Any]:
        """(found, value) of ``key`` in the committed state (queries)."""
        found = self._committed_at(key)
        return (False, None) if found is None else (True, found[1])

    def size(self) -> int:
        """How many keys the committed state holds (without reading their values)."""
        return len(self._committed)

    def close(self) -> None:
        """The app stops: release what holds the state (an SQLite file is removed)."""
        self._committed.close()


def _task() -> object:
    """The consumer task running (its loop owns the batches it gives back)."""
    try:
        return asyncio.current_task() or _NO_TASK
    except RuntimeError:
        return _NO_TASK


_NO_TASK = object()


class Table(Generic[T]):
    """A read-only view of a topic by key (declare ``name: Table[T]`` after the input):
    every record's latest value, a record with no payload removing its key. Bound as the
    function's next input binding (``<function>-in-1``, ``-in-2``, ...), as Spring's
    Kafka Streams binder binds a KTable.

    On Kafka a ``Table`` holds the partitions of its topic this instance is assigned for the
    function's input (the topics must be partitioned alike, as a KTable's are), restored
    before their input is processed; a ``GlobalTable`` holds every partition in every
    instance. Kept up to date in the background: a function sees it as it is when it runs.
    """

    def __init__(self, name: str, kind: Any) -> None:
        self.name = name
        self._adapter: TypeAdapter[Any] = TypeAdapter(kind)
        self._values: dict[str, Any] = {}
        #: Records applied since start (for metrics and tests).
        self.updates = 0

    def get(self, key: Any, default: T | None = None) -> T | None:
        return self._values.get(str(key), default)

    def __getitem__(self, key: Any) -> T:
        return self._values[str(key)]  # type: ignore[no-any-return]

    def __contains__(self, key: Any) -> bool:
        return str(key) in self._values

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> Iterator[str]:
        return iter(list(self._values))

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._values.items()))

    def apply(self, message: Message[bytes], into: dict[str, Any] | None = None) -> None:
        """One record of the topic (into ``into`` while a replay builds a fresh copy)."""
        values = self._values if into is None else into
        key = message.key
        if key is None:
            return
        k = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if not message.payload:
            values.pop(k, None)
        else:
            try:
                values[k] = self._adapter.validate_json(message.payload)
            except ValidationError as exc:
                log.warning(
                    "table %s: a value for key %r cannot be read (%d problem(s)); skipped",
                    self.name,
                    k[:60],
                    exc.error_count(),
                )
                return
        self.updates += 1

    def replace(self, values: dict[str, Any]) -> None:
        """A replay caught up: its copy is the table now."""
        self._values = values

    def snapshot(self) -> dict[str, Any]:
        return dict(self._values)

    def lookup(self, key: str) -> tuple[bool, Any]:
        return (key in self._values, self._values.get(key))


class GlobalTable(Table[T]):
    """A ``Table`` holding every partition of its topic in every instance (Kafka Streams'
    GlobalKTable): for reference data keyed otherwise than the input."""
