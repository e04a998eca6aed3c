"""Where a store keeps its committed state: a dictionary (``stream.state.backend: memory``,
the default), or an SQLite file (``sqlite``) for state larger than memory.

Either way the state is a cache of what the changelog holds on a binder that makes stores
durable: an instance restores it from the changelog when it is assigned partitions, so the
SQLite file is written without a journal or syncs and removed when the app stops. Entries
are ``(partition, value)``; a value read from bytes (a restore, or the SQLite file) is an
``Encoded`` until the store reads it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol


class Encoded:
    """A value as bytes, read (validated) when first used."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


Entry = tuple[int, Any]


class Committed(Protocol):
    """What a store asks of its committed state."""

    def get(self, key: str) -> Entry | None: ...
    def remember(self, key: str, entry: Entry) -> None:
        """``key``'s value, read from its bytes: keep it read (if there is room)."""

    def apply(self, changes: Iterable[tuple[str, Entry | None]]) -> None:
        """An acknowledged batch's changes, in order (``None``: the key is removed)."""

    def restore(self, records: Iterable[tuple[str, int, bytes | None]]) -> None:
        """Changelog records, in order: (key, partition, value bytes or None to remove)."""

    def drop(self, partitions: Collection[int]) -> None: ...
    def items(self) -> Iterator[tuple[str, Entry]]: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class InMemory:
    """A dictionary: the fastest, bounded by the process's memory."""

    def __init__(self) -> None:
        self._data: dict[str, Entry] = {}

    def get(self, key: str) -> Entry | None:
        return self._data.get(key)

    def remember(self, key: str, entry: Entry) -> None:
        self._data[key] = entry

    def apply(self, changes: Iterable[tuple[str, Entry | None]]) -> None:
        data = self._data
        for key, entry in changes:
            if entry is None:
                data.pop(key, None)
            else:
                data[key] = entry

    def restore(self, records: Iterable[tuple[str, int, bytes | None]]) -> None:
        data = self._data
        for key, partition, value in records:
            if value:
                data[key] = (partition, Encoded(value))
            else:
                data.pop(key, None)

    def drop(self, partitions: Collection[int]) -> None:
        lost = set(partitions)
        self._data = {k: e for k, e in self._data.items() if e[0] not in lost}

    def items(self) -> Iterator[tuple[str, Entry]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._data = {}


#: Values an SQLite-backed store keeps read in memory (most recently used).
CACHE_ENTRIES = 10_000


class InSqlite:
    """An SQLite file (the standard library's), for state larger than memory: values are
    kept as the JSON the changelog holds, the most recently used ones also read in memory.
    Safe from a function running in a worker thread (``blocking: true``)."""

    def __init__(self, path: Path, encode: Callable[[Any], bytes]) -> None:
        self.path = path
        self._encode = encode
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=MEMORY"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS state "
            "(key TEXT PRIMARY KEY, partition INTEGER NOT NULL, value BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS by_partition ON state (partition)")
        self._db.execute("DELETE FROM state")  # a cache of the changelog: start empty
        self._cache: OrderedDict[str, Entry] = OrderedDict()

    def get(self, key: str) -> Entry | None:
        cache = self._cache
        found = cache.get(key)
        if found is not None:
            cache.move_to_end(key)
            return found
        with self._lock:
            row = self._db.execute(
                "SELECT partition, value FROM state WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else (row[0], Encoded(row[1]))

    def remember(self, key: str, entry: Entry) -> None:
        cache = self._cache
        cache[key] = entry
        cache.move_to_end(key)
        if len(cache) > CACHE_ENTRIES:
            cache.popitem(last=False)

    def apply(self, changes: Iterable[tuple[str, Entry | None]]) -> None:
        last: dict[str, tuple[int, bytes] | None] = {}
        for key, entry in changes:
            self._cache.pop(key, None)
            if entry is None:
                last[key] = None
            else:
                value = entry[1]
                raw = value.raw if type(value) is Encoded else self._encode(value)
                last[key] = (entry[0], raw)
                self.remember(key, entry)
        self._write(last)

    def restore(self, records: Iterable[tuple[str, int, bytes | None]]) -> None:
        last: dict[str, tuple[int, bytes] | None] = {}
        for key, partition, value in records:
            self._cache.pop(key, None)
            last[key] = (partition, value) if value else None
        self._write(last)

    def _write(self, last: dict[str, tuple[int, bytes] | None]) -> None:
        """Each key's last change, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO state (key, partition, value) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET partition = excluded.partition, "
                    "value = excluded.value",
                    [(k, pv[0], pv[1]) for k, pv in last.items() if pv is not None],
                )
                self._db.executemany(
                    "DELETE FROM state WHERE key = ?",
                    [(k,) for k, pv in last.items() if pv is None],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def drop(self, partitions: Collection[int]) -> None:
        lost = sorted(set(partitions))
        if not lost:
            return
        self._cache = OrderedDict((k, e) for k, e in self._cache.items() if e[0] not in lost)
        marks = ",".join("?" * len(lost))
        with self._lock:
            self._db.execute(f"DELETE FROM state WHERE partition IN ({marks})", lost)

    def items(self) -> Iterator[tuple[str, Entry]]:
        with self._lock:
            rows = self._db.execute("SELECT key, partition, value FROM state").fetchall()
        cache = self._cache
        for key, partition, raw in rows:
            yield key, cache.get(key) or (partition, Encoded(raw))

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM state").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
