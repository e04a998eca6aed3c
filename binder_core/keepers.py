"""Keeping a function's state in step with the partitions its consumer owns: stores restored
from their changelogs and tables read from their topics, before any input of those
partitions is processed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from binder_core.consumer import redelivery_delay
from binder_core.spi import StateBinder
from binder_core.state import Store, Table

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Restore:
    """One restore, for the log, metrics and the benchmark."""

    records: int
    seconds: float

    @property
    def rate(self) -> float:
        """Records per second."""
        return self.records / self.seconds if self.seconds > 0 else float(self.records)


class StateKeeper:
    """The stores of one consumer binding on a binder with the ``state`` capability:
    restored from their changelogs for the partitions a consumer is assigned, dropped for
    those it loses. A ``PartitionListener`` of the binding's subscription.

    A broker that moves every partition at a rebalance (Kafka's eager protocol) reports all
    of them revoked, then the new assignment: only partitions this instance did not hold
    are restored, only those it no longer holds are dropped."""

    def __init__(
        self,
        binding: str,
        binder: StateBinder,
        changelogs: Mapping[str, tuple[Store[Any], str]],
        tables: Mapping[str, tuple[Table[Any], str]] | None = None,
    ) -> None:
        self.binding = binding
        self._binder = binder
        #: store name -> (store, changelog destination)
        self._changelogs = changelogs
        #: table name -> (partitioned table, destination): followed for owned partitions.
        self._tables = tables or {}
        self._followers: dict[str, TableFollower] = {}
        #: Partitions per consumer of the binding (several with concurrency).
        self._owned: set[int] = set()
        self._maybe_lost: set[int] = set()
        self.restores: list[Restore] = []

    @property
    def changelogs(self) -> dict[str, str]:
        """Store name -> its changelog destination."""
        return {name: destination for name, (_, destination) in self._changelogs.items()}

    async def revoked(self, partitions: set[int]) -> None:
        self._maybe_lost |= partitions

    async def assigned(self, partitions: set[int]) -> None:
        lost = self._maybe_lost - partitions
        self._maybe_lost = set()
        if lost:
            for store, _ in self._changelogs.values():
                store.drop(lost)
            self._owned -= lost
            log.info(
                "binding %s: state of partition(s) %s dropped (assigned elsewhere)",
                self.binding,
                _listed(lost),
            )
        new = partitions - self._owned
        if new:
            await self.restore(new)
        self._owned |= partitions
        if self._tables and (new or lost):
            await self._follow(sorted(self._owned))

    async def restore(self, partitions: Collection[int]) -> Restore:
        """Replay the changelogs of ``partitions`` into the stores (from scratch)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        count = 0
        for store, changelog in self._changelogs.values():
            store.drop(partitions)
            async for batch in self._binder.replay(changelog, sorted(partitions), False):
                if batch is None:
                    break
                store.restore(batch)
                count += len(batch)
        done = Restore(count, loop.time() - started)
        self.restores.append(done)
        log.info(
            "binding %s: restored %d changelog record(s) of partition(s) %s in %.2f s",
            self.binding,
            count,
            _listed(partitions),
            done.seconds,
        )
        return done

    async def _follow(self, partitions: list[int]) -> None:
        """Partitioned tables read the partitions the binding holds now (caught up before
        input of them is processed)."""
        for name, (table, destination) in self._tables.items():
            old = self._followers.pop(name, None)
            if old is not None:
                await old.close()
            follower = TableFollower(self._binder, table, destination, partitions)
            self._followers[name] = follower
            await follower.start()

    async def close(self) -> None:
        for follower in self._followers.values():
            await follower.close()
        self._followers.clear()


class TableFollower:
    """Reads a table's topic (some partitions, or all) from the beginning into the table,
    then keeps following it; reading again from the beginning when the broker connection
    fails. A replay builds a fresh copy that replaces the table once it caught up, so a
    function never sees a half-read table."""

    def __init__(
        self,
        binder: StateBinder,
        table: Table[Any],
        destination: str,
        partitions: Collection[int] | None,
    ) -> None:
        self._binder = binder
        self.table = table
        self.destination = destination
        self._partitions = None if partitions is None else sorted(partitions)
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the topic up to its end, then follow it in the background."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"table:{self.table.name}"
        )
        waiter = asyncio.ensure_future(self.caught_up.wait())
        await asyncio.wait([waiter, self._task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self.caught_up.is_set():
            # The follower ended before it caught up: its error, raised.
            self._task.result()

    async def _run(self) -> None:
        failures = 0
        while True:
            fresh: dict[str, Any] | None = {}
            try:
                async for batch in self._binder.replay(
                    self.destination, self._partitions, follow=True
                ):
                    if batch is None:
                        if fresh is not None:
                            self.table.replace(fresh)
                            fresh = None
                            failures = 0
                            self.caught_up.set()
                        continue
                    for message in batch:
                        self.table.apply(message, fresh)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = redelivery_delay(failures)
                log.warning(
                    "table %s: reading %s failed (%s: %s); reading it again in %.1f s",
                    self.table.name,
                    self.destination,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _listed(partitions: Collection[int]) -> str:
    return ",".join(str(p) for p in sorted(partitions))
