"""Dead-letter access on the memory binder: the dead letters its dead-letter destinations
(``error.<destination>.<group>`` or ``dlq-name``) keep, in the process of the app, so
``binder dlq`` reaches them through the app's management endpoint.

A letter is a reference to the kept message: reading leaves it in place, acknowledging
removes exactly that message. The memory binder records no time of dead-lettering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from binder_core.dlq.letters import original_destination
from binder_core.dlq.spi import DeadLetter, NoDeadLetterQueue
from binder_core.errors import DeliveryError
from binder_core.message import Message
from binder_core.spi import ConsumerSpec
from binders.memory.broker import GroupQueue
from binders.memory.settings import MemoryConsumerProperties

if TYPE_CHECKING:
    from binders.memory.binder import MemoryBinder

#: The group of a dead-letter destination that keeps its dead letters (``binder.DLQ_GROUP``).
KEEPER = "dlq"


class MemoryDeadLetters:
    """The dead-letter destinations of one memory binder."""

    def __init__(self, binder: MemoryBinder) -> None:
        self._binder = binder

    def locate(self, spec: ConsumerSpec) -> str | None:
        ext = spec.extension if isinstance(spec.extension, MemoryConsumerProperties) else None
        ext = ext or MemoryConsumerProperties()
        if not ext.enable_dlq:
            return None
        return ext.dlq_name or f"error.{spec.destination}.{spec.group or 'anonymous'}"

    async def discover(self) -> Sequence[str]:
        broker = self._binder.broker
        return sorted(n for n, d in broker.destinations.items() if KEEPER in d.groups)

    async def open(self, name: str) -> MemoryDeadLetterQueue:
        dest = self._binder.broker.destinations.get(name)
        if dest is None or KEEPER not in dest.groups:
            raise NoDeadLetterQueue(f"no dead-letter destination '{name}' in this app")
        return MemoryDeadLetterQueue(self._binder, name, dest.groups[KEEPER])


class MemoryDeadLetterQueue:
    """The kept dead letters of one destination, as they were when opened."""

    def __init__(self, binder: MemoryBinder, name: str, keeper: GroupQueue) -> None:
        self.name = name
        self._binder = binder
        self._keeper = keeper
        self._snapshot = [m for part in keeper.parts for m in part]
        self._next = 0

    async def size(self) -> int | None:
        return self._keeper.size

    async def read(self, limit: int) -> Sequence[DeadLetter]:
        start, self._next = self._next, min(self._next + limit, len(self._snapshot))
        return [
            DeadLetter(f"#{i + 1}", self._snapshot[i], None, self._snapshot[i])
            for i in range(start, self._next)
        ]

    async def ack(self, letters: Sequence[DeadLetter]) -> None:
        gone = {id(letter.handle) for letter in letters}
        removed = 0
        for part in self._keeper.parts:
            keep = [m for m in part if id(m) not in gone]
            removed += len(part) - len(keep)
            part.clear()
            part.extend(keep)
        self._keeper.size -= removed

    def target(self, letter: DeadLetter, to: str | None) -> str | None:
        return to or original_destination(letter.message.headers)

    async def replay(
        self, messages: Sequence[tuple[DeadLetter, Message[bytes]]], to: str | None
    ) -> Sequence[Exception | None]:
        results: list[Exception | None] = []
        for letter, msg in messages:
            target = self.target(letter, to)
            if target is None:
                results.append(
                    DeliveryError("the letter does not say where it came from: replay it with --to")
                )
                continue
            await self._binder.broker.destination(target).publish([msg])
            results.append(None)
        return results

    async def append(self, messages: Sequence[Message[bytes]]) -> Sequence[Exception | None]:
        await self._binder.broker.destination(self.name).publish(messages)
        return [None] * len(messages)

    async def purge(self) -> int:
        removed = self._keeper.size
        for part in self._keeper.parts:
            part.clear()
        self._keeper.size = 0
        self._next = len(self._snapshot)
        return removed

    async def close(self) -> None:
        self._snapshot = []
