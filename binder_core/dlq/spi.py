"""Dead-letter access: what a binder may offer so that ``binder dlq`` (and the management
endpoint) can list, show, replay and purge its dead letters through one code path.

Optional: a binder offers it with a ``dead_letters()`` method (``DeadLetterAccess``). The
core does the rest once, for every binder, plugins included: reading reasons from the
headers, selecting by reason or time, the replay count, refusing a message replayed too
often, acknowledging only what was confirmed, progress.

The primitives are chosen so that a replay killed at any moment loses nothing: a letter
is read without being removed, the replayed copy is published and confirmed, and only then
is the letter acknowledged (removed, committed). What was in flight when the process died
is read again by the next run and replayed once more: at most the letters in flight are
duplicated, never lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from binder_core.errors import BinderException
from binder_core.message import Message
from binder_core.spi import ConsumerSpec


class NoDeadLetterQueue(BinderException):
    """The dead-letter queue asked for does not exist on the broker."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as read from its queue."""

    #: Where it sits in its queue, for people: ``0@42`` (Kafka partition@offset), a
    #: stream entry id, a position in the scan.
    id: str
    #: Payload and headers as the dead letter carries them (reason headers included).
    message: Message[bytes]
    #: When it was dead-lettered, in seconds since the epoch, when the broker tells.
    timestamp: float | None = None
    #: The binder's own handle (offsets, delivery tag, entry id): the core never looks.
    handle: Any = None


@runtime_checkable
class DeadLetterQueue(Protocol):
    """One dead-letter queue, opened for reading.

    ``read`` goes through the letters that were there when the queue was opened, oldest
    first, without removing any; letters added meanwhile (including the ones ``append``
    adds) are left for the next opening, so a replay always ends.
    """

    #: The broker's name of the queue (topic, queue, stream).
    name: str

    async def size(self) -> int | None:
        """Letters waiting now (``None`` when the broker cannot tell without reading).
        Letters this reader holds may not be counted (RabbitMQ counts ready messages):
        ask before reading."""

    async def read(self, limit: int) -> Sequence[DeadLetter]:
        """The next letters, at most ``limit``; empty once every letter there at opening
        was read."""

    async def ack(self, letters: Sequence[DeadLetter]) -> None:
        """Remove ``letters`` for good. Called only after what replaced them (the replayed
        copy, or the copy appended back) was confirmed. Letters read and never acknowledged
        stay in the queue."""

    def target(self, letter: DeadLetter, to: str | None) -> str | None:
        """Where a replay of ``letter`` goes, for people (``to`` itself, or where the
        letter came from); ``None`` when the letter does not say (it is then not
        replayed)."""

    async def replay(
        self, messages: Sequence[tuple[DeadLetter, Message[bytes]]], to: str | None
    ) -> Sequence[Exception | None]:
        """Publish each message (the core's replay copy of its letter) to where the letter
        came from, or to destination ``to``; return once each was confirmed (``None``) or
        refused (why), one entry per message, in order."""

    async def append(self, messages: Sequence[Message[bytes]]) -> Sequence[Exception | None]:
        """Add messages at the end of this queue (a letter put back with a reason);
        return once each was confirmed or refused."""

    async def purge(self) -> int:
        """Remove every letter; return how many were removed (or were there)."""

    async def close(self) -> None:
        """Release the queue; letters read and not acknowledged stay where they were."""


@runtime_checkable
class DeadLetters(Protocol):
    """A binder's dead-letter queues."""

    def locate(self, spec: ConsumerSpec) -> str | None:
        """The dead-letter queue of a consumer binding, named as the binder names it, or
        ``None`` when the binding has none (anonymous, dead-lettering off)."""

    async def discover(self) -> Sequence[str]:
        """Dead-letter queues found on the broker by the binder's naming convention (what
        a broker cannot list is simply not found)."""

    async def open(self, name: str) -> DeadLetterQueue:
        """Open queue ``name``; raise ``NoDeadLetterQueue`` when the broker has none."""


@runtime_checkable
class DeadLetterAccess(Protocol):
    """A binder that offers its dead letters (optional part of the Binder SPI)."""

    def dead_letters(self) -> DeadLetters:
        """The binder's dead-letter queues (the binder is started)."""


def access(binder: object) -> DeadLetters | None:
    """The dead letters of ``binder``, or ``None`` when it does not offer them."""
    if isinstance(binder, DeadLetterAccess):
        return binder.dead_letters()
    return None
