"""The Binder SPI: what a binder supplies, and nothing more.

The core owns the consumer loop (``binder_core.consumer``): take a batch, convert, invoke,
hand the outputs over, dead-letter the failures, acknowledge in delivery order, back off,
pause, stop and drain, restart a consumer that failed. A binder supplies broker primitives
only:

- ``Binder.provision_consumer`` -> a ``Subscription``, from which the core opens one
  ``Source`` per consumer (``concurrency``): fetch a batch, settle it (dead-letter its
  failures, then acknowledge or commit), give batches back, pause, resume, close;
- ``Binder.provision_producer`` -> a ``Sink``, whose ``Outbox`` takes one input batch's
  outputs (in slices, while the core is still making them) and reports, per message, what
  the broker confirmed;
- ``Binder.health``.

Everything the core must know travels in these calls and their return values; there are
no side channels. The SPI moves batches, never single messages, which is what keeps the
framework close to a hand-written client loop.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from binder_core.errors import BinderException
from binder_core.message import Message
from binder_core.properties import ConsumerProperties, ProducerProperties


class Capability(enum.StrEnum):
    """What a binder can honour by nature; the conformance suite skips, as not applicable,
    only the cases whose capability a binder does not declare."""

    GROUPS = "groups"  # each group gets every message; members of one group compete
    ORDERING = "ordering"  # order kept per partition key
    PARTITIONS = "partitions"  # partition-count / instance-index routing
    DEAD_LETTER = "dead-letter"  # failed messages go to a dead-letter destination
    PAUSE = "pause"  # pause / resume a consumer binding
    PERSISTENCE = "persistence"  # a group's messages outlive the consuming process
    CROSS_PROCESS = "cross-process"  # other processes (binder send / tail) reach it
    REQUIRED_GROUPS = "required-groups"  # a producer can declare groups before consumers
    TRANSACTIONS = "transactions"  # outputs and input offsets committed atomically
    STATE = "state"  # durable keyed state: changelogs replayed when partitions are assigned


#: Per input message: ``None`` when it was processed (outputs confirmed), or the final error
#: after the core's retries were exhausted.
Outcome = Exception | None


class Disconnected(BinderException):
    """A source or sink lost its broker connection. Expected while a broker restarts: the
    core logs it as a warning, backs off and opens the source again."""


class Permanent(BinderException):
    """Raised by ``Source.open`` when trying again cannot help (a refused login, a queue
    declared with other arguments): the binding fails instead of retrying."""


# -- consuming ---------------------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    """What one fetch delivered: the messages, in delivery order, and the binder's own handle
    on them (the core never looks inside ``token``)."""

    messages: Sequence[Message[bytes]]
    #: The binder's record of the batch: offsets, delivery tags, entry ids, its channel.
    token: Any = None
    #: Messages the binder received but could not read (index -> why: header tables too
    #: deep, undecodable headers). They skip the function and are dead-lettered with the
    #: reason, like any conversion failure; the rest of the batch goes on.
    unreadable: Mapping[int, Exception] | None = None


@runtime_checkable
class Source(Protocol):
    """One consumer of a binding, as the core's loop drives it.

    The core calls it from one task at a time. Batches are settled or given back in the
    order they were fetched. Everything fetched and not settled when the source closes is
    delivered again (the broker keeps it unacknowledged, uncommitted or pending).
    """

    #: Whether the core may fetch and process the next batch while the previous one's
    #: outputs wait for their confirmations (RabbitMQ confirms after its disk write).
    overlap: bool

    async def open(self) -> None:
        """Connect and subscribe; return once messages can flow. Raise ``Permanent`` when
        retrying cannot help; anything else is retried by the core with back-off."""

    async def fetch(self, wait: bool) -> Batch | None:
        """The next batch (at most the binder's configured batch size). With ``wait``, wait
        for at least one message; ``None`` when woken by ``interrupt`` (or a poll timed out).
        Without ``wait``, return at once: what is already at hand, or ``None``."""

    def interrupt(self) -> None:
        """Make a waiting ``fetch`` return ``None`` soon (the binding pauses or stops)."""

    async def settle(
        self,
        batch: Batch,
        failed: Sequence[tuple[int, Exception]],
        transaction: Any = None,
    ) -> None:
        """Dead-letter the ``failed`` messages (index in the batch, final error), then
        acknowledge or commit the whole batch. Returns once the dead letters are confirmed;
        raises when they could not be (the core then gives the batch back). Inside a
        ``transaction`` (see ``TransactionalSource``), the dead letters and the input
        positions join it and it is committed."""

    async def redeliver(self, batches: Sequence[Batch]) -> None:
        """Give these batches back, to be delivered again in order: every batch fetched and
        not settled, oldest first (seek back, requeue, or drop the channel)."""

    async def pause(self) -> None:
        """Stop deliveries without giving up the subscription (called with nothing in
        flight); what the binder buffered goes back to the broker."""

    async def resume(self) -> None:
        """Undo ``pause``."""

    async def close(self) -> None:
        """Release the consumer; what it fetched and did not settle is delivered again."""


@runtime_checkable
class TransactionalSource(Source, Protocol):
    """A source whose batches can run in a broker transaction (Kafka): the outputs sent
    through its binder with the transaction, the dead letters and the input positions are
    committed together, or not at all."""

    async def begin(self) -> Any:
        """Start a transaction for the next batch; ``None`` when this source runs without."""

    async def abort(self, transaction: Any) -> None:
        """Abort ``transaction``: nothing sent in it becomes visible."""


class PartitionListener(Protocol):
    """Told by a subscription whose broker assigns partitions (Kafka) when a consumer gets
    or loses some: the core restores and drops state there. ``assigned`` is awaited before
    any record of those partitions is fetched."""

    async def assigned(self, partitions: set[int]) -> None:
        """These partitions are this consumer's now."""

    async def revoked(self, partitions: set[int]) -> None:
        """These partitions are no longer this consumer's."""


@runtime_checkable
class Subscription(Protocol):
    """A provisioned consumer binding: its destination, group and dead-letter topology
    exist; the core opens one ``Source`` per consumer from it."""

    #: Seconds a stopping binding may take to finish the batch in flight.
    drain_timeout: float

    def source(self, index: int) -> Source:
        """The consumer number ``index`` of ``concurrency`` (a new one after each restart)."""

    async def close(self) -> None:
        """After every source closed: release what the binding itself held (an anonymous
        queue, a dead-letter channel)."""


# -- producing ---------------------------------------------------------------------------


@runtime_checkable
class Outbox(Protocol):
    """The outputs of one input batch on their way to one destination."""

    async def add(self, messages: Sequence[Message[bytes]]) -> int | None:
        """Hand messages to the client without waiting for their confirmation. May wait
        while the client has no room (that paces the core to the broker). A message the
        binder refuses (too large, unroutable) is reported by ``confirm``; raise only when
        nothing more can be sent (connection lost, producer closed).

        Returns how many more messages the binder would like before the next ``add`` (what
        fills the batch it is building), or ``None`` to take the rest in one go at the end.
        """

    async def confirm(self) -> Sequence[Exception | None]:
        """Send what is held back; return once each message was confirmed (``None``) or
        refused (its error), one entry per message added, in order. Raise when
        confirmations could not be had at all (a timeout, a lost connection)."""


@runtime_checkable
class Sink(Protocol):
    """Sends to one destination."""

    def outbox(self, transaction: Any = None) -> Outbox:
        """A fresh outbox for one batch of outputs; with a ``transaction`` of this sink's
        binder, the outputs join it."""

    async def close(self) -> None:
        """Flush and release; an outbox opened afterwards raises at once."""


# -- binders -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    """Everything a binder needs to provision a producer."""

    binding: str
    destination: str
    properties: ProducerProperties = field(default_factory=ProducerProperties)
    #: The binder's own producer properties (``stream.<type>.bindings.<name>.producer``),
    #: an instance of the model the binder type registered, or ``None`` for its defaults.
    extension: BaseModel | None = None


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """Everything a binder needs to provision a consumer."""

    binding: str
    destination: str
    group: str | None
    properties: ConsumerProperties = field(default_factory=ConsumerProperties)
    extension: BaseModel | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """Whether a binder's broker answers, and what to tell an operator."""

    up: bool
    detail: str = ""
    #: Connections re-established since the binder started (0 when it never lost one).
    reconnects: int = 0


@runtime_checkable
class Binder(Protocol):
    """Provisions destinations on one broker and makes sources and sinks for them."""

    name: str
    capabilities: frozenset[Capability]

    async def start(self) -> None:
        """Connect. Called once, before anything is provisioned."""

    async def provision_producer(self, spec: ProducerSpec) -> Sink:
        """Create the destination (and ``required-groups``) as needed; return a sink."""

    async def provision_consumer(self, spec: ConsumerSpec) -> Subscription:
        """Create destination, group and dead-letter topology as needed (so nothing sent
        from now on is missed by a named group); return the subscription."""

    async def health(self) -> Health:
        """Whether the broker answers now."""

    async def close(self) -> None:
        """Disconnect. Called after every binding stopped and every sink closed."""


class BindingState(enum.StrEnum):
    """Lifecycle of a consumer binding, as ``binder bindings`` shows it."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@runtime_checkable
class Binding(Protocol):
    """A bound consumer that can be controlled at run time (the core implements it)."""

    name: str

    @property
    def state(self) -> BindingState:
        """Where the binding is in its lifecycle."""

    async def start(self) -> None:
        """Start (or restart after ``stop``) consuming, from the group's position."""

    async def stop(self) -> None:
        """Stop taking messages, finish the batch in flight, acknowledge it, and return."""

    async def pause(self) -> None:
        """Stop fetching new messages without giving up the subscription."""

    async def resume(self) -> None:
        """Undo ``pause``."""


@runtime_checkable
class StateBinder(Binder, Protocol):
    """A binder that keeps state durable (``Capability.STATE``): changelog topics for
    stores, and reading a topic from its beginning for restores and tables. Its
    subscriptions also take a ``PartitionListener`` (``listen``)."""

    async def provision_changelog(self, name: str, like: str) -> Sink:
        """A compacted destination ``name`` with as many partitions as ``like``; messages
        sent to it carry a key and a partition, a ``None`` payload deletes the key."""

    async def provision_table(self, name: str, like: str | None) -> int:
        """Make sure destination ``name`` a table reads exists (created partitioned like
        ``like``, or with one partition, when missing); its partition count."""

    async def partition_count(self, name: str) -> int | None:
        """How many partitions destination ``name`` has (None when it does not exist)."""

    def replay(
        self, name: str, partitions: Collection[int] | None, follow: bool
    ) -> AsyncIterator[Sequence[Message[bytes]] | None]:
        """The messages of ``name`` (of ``partitions``, or all) from the beginning, in
        batches with key and partition; ``None`` once it caught up with the end as it was
        when it began. Without ``follow`` it ends there; with it, it goes on."""


#: Builds a binder from its validated ``environment`` (the model its type registered).
BinderFactory = Callable[[str, Any], Binder]

#: Checks a name against the broker's rules: called with the kind of name
#: (``"destination"``, ``"group"``, or ``"subscription"`` for ``<destination>.<group>``, which
#: brokers that derive a name per group check) and the name; returns what is wrong, or
#: ``None`` (also for kinds the binder does not know).
NameCheck = Callable[[str, str], str | None]


@dataclass(frozen=True, slots=True)
class BinderType:
    """What a plugin registers for a binder type (``type: <name>`` in YAML).

    The models give the schema of the binder's configuration, so a typo in a Kafka or Rabbit
    property is caught at start-up like any other. ``factory`` is called only for binder
    types an app uses, which is what lets a plugin import its broker library lazily.
    """

    name: str
    factory: BinderFactory
    environment: type[BaseModel]
    consumer: type[BaseModel] | None = None
    producer: type[BaseModel] | None = None
    description: str = ""
    #: The broker's naming rules, checked at configuration load (before anything connects).
    check_name: NameCheck | None = None


@dataclass(frozen=True, slots=True)
class Converter:
    """Turns payload bytes of one content type into Python values and back.

    ``decode`` returns plain Python data (dicts, lists, str, numbers); the core then
    validates it into the type the function declares, so no converter ever chooses a type.
    """

    content_type: str
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    description: str = ""
