"""The Binder SPI: the one seam every broker goes through.

A binder owns only what differs per broker: provisioning, moving bytes with broker
confirmation, acknowledging, dead-lettering. Conversion, retry, partition selection and
lifecycle belong to the core, so they behave the same on every broker.

The SPI moves batches: a consumer hands the core whatever the broker delivered in one go and
acknowledges once per batch; a producer's ``send`` pipelines a batch and returns once the
broker confirmed all of it (a ``StagingProducer`` may also take a batch's outputs in slices
while the core is still making them). That is what keeps the framework close to a
hand-written loop.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

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


#: Per input message: ``None`` when it was processed (outputs confirmed), or the final error
#: after the core's retries were exhausted; the binder dead-letters those.
Outcome = Exception | None

#: The core's side of a consumer binding. The binder calls it with one delivered batch and
#: acknowledges the whole batch once it returns. If it raises (the app is stopping, an output
#: could not be confirmed), nothing of the batch may be acknowledged: it is redelivered.
Handle = Callable[[Sequence[Message[bytes]]], Awaitable[Sequence[Outcome]]]

#: Optional, for binders that overlap batches. A binder may set it, in the task that calls
#: a ``Handle``, to a callable; the core calls it once, from inside the handle, when the
#: batch is processed and its outputs are being handed to the producer, so all that is
#: left is waiting for their confirmations: the user's function will not run again for this
#: batch. The binder may then start the next batch (acknowledging in order). Not called
#: when there is nothing to send, in batch mode (a failed send runs the function again),
#: or when the batch fails before its outputs are sent.
PROCESSED: ContextVar[Callable[[], None] | None] = ContextVar("binder_processed", default=None)


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    """Everything a binder needs to bind a producer."""

    binding: str
    destination: str
    properties: ProducerProperties = field(default_factory=ProducerProperties)
    #: The binder's own producer properties (``stream.<type>.bindings.<name>.producer``),
    #: an instance of the model the binder type registered, or ``None`` for its defaults.
    extension: BaseModel | None = None


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """Everything a binder needs to bind a consumer."""

    binding: str
    destination: str
    group: str | None
    properties: ConsumerProperties = field(default_factory=ConsumerProperties)
    extension: BaseModel | None = None


@runtime_checkable
class Producer(Protocol):
    """Sends batches to one destination."""

    async def send(self, messages: Sequence[Message[bytes]]) -> None:
        """Send all messages; return only once the broker confirmed every one of them.

        Raises when any message could not be confirmed (nacked, unroutable, too large).
        """

    async def close(self) -> None:
        """Flush and release the producer."""


@runtime_checkable
class Stage(Protocol):
    """The outputs of one input batch, handed to a producer in slices as the core makes
    them, confirmed together at the end (see ``StagingProducer``)."""

    async def add(self, messages: Sequence[Message[bytes]]) -> int | None:
        """Hand a slice over to the broker client without waiting for its confirmation.
        May wait while the client has no room (that paces the core to the broker). A
        ``DeliveryError`` refuses this slice; anything else fails the whole batch.

        Returns how many more messages the producer would like before the next ``add``
        (for example what fills the batch it is building), or ``None`` for the core's
        default slice; the core ends its next slice about there."""

    async def confirm(self) -> Sequence[Exception | None]:
        """Send whatever is still held back and return once every slice was confirmed or
        refused: one entry per ``add``, ``None`` (all of it confirmed) or the
        ``DeliveryError`` that refused some of it (the core then finds, message by message,
        which outputs). Raises when confirmations could not be had (a timeout, a lost
        connection): the input batch is then delivered again."""


@runtime_checkable
class StagingProducer(Producer, Protocol):
    """Optional: a ``Producer`` that also takes a batch's outputs in slices.

    With only ``send``, the core runs the function over a whole input batch and then sends
    all outputs at once, so the broker round trips follow the processing. A producer whose
    client pipelines (Kafka's keeps a request in flight while the next batch fills) can
    offer ``stage``: the core then hands over each slice of outputs as soon as it is made
    and awaits all confirmations before returning the outcomes, so the round trips
    overlap the processing. At-least-once is unchanged: the input batch is acknowledged
    only after every output was confirmed, and only inputs whose outputs were refused fail.
    """

    def stage(self) -> Stage | None:
        """A fresh stage for one input batch, or ``None`` to be sent with ``send``."""


class BindingState(enum.StrEnum):
    """Lifecycle of a consumer binding, as ``binder bindings`` shows it."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@runtime_checkable
class Binding(Protocol):
    """A bound consumer that can be controlled at run time."""

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
class Binder(Protocol):
    """Turns destinations into producers and consumer bindings on one broker."""

    name: str
    capabilities: frozenset[Capability]

    async def start(self) -> None:
        """Connect. Called once, before any producer or consumer is bound."""

    async def producer(self, spec: ProducerSpec) -> Producer:
        """Provision the destination (and ``required-groups``) and return a producer."""

    async def consumer(self, spec: ConsumerSpec, handle: Handle) -> Binding:
        """Provision destination and group, and return a started (unless
        ``auto-startup`` is false) binding that feeds ``handle``."""

    async def close(self) -> None:
        """Stop what is left and disconnect."""


#: Builds a binder from its validated ``environment`` (the model its type registered).
BinderFactory = Callable[[str, Any], Binder]

#: Checks a destination or group name against the broker's rules: called with the kind of
#: name (``"destination"`` or ``"group"``) and the name; returns what is wrong, or ``None``.
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
