"""Exchanges, queues and bindings, named and argued as Spring Cloud Stream's Rabbit binder
declares them, so a Python service and a Spring service meet on the same broker objects.

::

    producer ──► exchange <destination> (topic, durable)
                   │ binding-routing-key (# ; partitioned: <destination>-<n>)
                   ▼
                 queue <destination>.<group>[-<n>]  (durable; x-dead-letter-exchange=DLX,
                   │                                 x-dead-letter-routing-key=<queue>)
                   │ failures: republished (or rejected) to
                   ▼
                 exchange DLX (direct) ──<queue>──► queue <destination>.<group>.dlq

Every declaration is remembered, so after a reconnection the whole topology is declared
again before any consumer subscribes (an anonymous queue does not outlive its connection,
and a broker may have been reset).
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from binder_core.errors import BinderException
from binders.rabbit.connection import Backoff, Chan, ChannelLost, Connection
from binders.rabbit.settings import (
    RabbitCommonProperties,
    RabbitConsumerProperties,
    RabbitProducerProperties,
)

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "DLX"

#: AMQP 0-9-1 carries exchange and queue names and routing keys as short strings.
MAX_NAME_BYTES = 255


class ProvisioningError(BinderException):
    """RabbitMQ refused to declare an exchange, queue or binding (``code``: its reply code,
    406 for one that exists with other settings)."""

    def __init__(self, text: str, code: int | None = None) -> None:
        super().__init__(text)
        self.code = code


@dataclass(frozen=True, slots=True)
class ConsumerQueue:
    """What a consumer binding consumes from and dead-letters to."""

    exchange: str
    queue: str
    anonymous: bool
    dlx: str | None  # where failures are republished; None: reject instead
    dlq_routing_key: str  # routing key of republished failures
    #: Whether RabbitMQ dead-letters a rejected message from this queue: it was declared
    #: here with binder's x-dead-letter-exchange (not adopted without it).
    rejects_to_dlx: bool = False


class Topology:
    """Declares through one admin channel and replays every declaration after recovery."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._chan: Chan | None = None
        self._declared: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        #: Queues that existed with other arguments and are used as they are.
        self.adopted: set[str] = set()
        connection.on_recover(self.redeclare)

    async def _channel(self, wait: bool) -> Chan:
        chan = self._chan
        if chan is None or chan.closed is not None:
            chan = await (self._connection.channel() if wait else self._connection.open_channel())
            self._chan = chan
        return chan

    async def _do(self, op: str, kwargs: dict[str, Any], wait: bool = True) -> None:
        try:
            chan = await self._channel(wait)
            await chan.rpc(getattr(chan.raw, op), **kwargs)
        except ChannelLost as exc:
            if exc.permanent:
                raise ProvisioningError(_explain(op, kwargs, exc), exc.code) from exc
            raise

    async def _declare(
        self, key: tuple[Any, ...], op: str, kwargs: dict[str, Any], adopt: bool = False
    ) -> None:
        _check_names(op, kwargs)
        backoff = Backoff()
        while True:
            try:
                await self._do(op, kwargs)
                break
            except ProvisioningError as exc:
                if not (adopt and _exists_otherwise(exc)):
                    raise
                kwargs = await self._adopt(op, kwargs)
                break
            except ChannelLost as exc:
                # The connection went mid-way: declare again once it is back. ``_do``
                # raised what cannot succeed; this waits, so nothing that fails again at
                # once can spin here.
                log.debug("rabbit: %s interrupted (%s); trying again", op, exc)
                await backoff.wait()
        self._declared[key] = (op, kwargs)

    async def _adopt(self, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """An exchange or queue exists with other settings: use it as it is (a passive
        declare proves it exists), say once what differs, and redeclare it passively after
        a reconnect."""
        name_key = "exchange" if op == "exchange_declare" else "queue"
        passive = {name_key: kwargs[name_key], "passive": True}
        await self._do(op, passive)
        if name_key == "queue":
            self.adopted.add(kwargs[name_key])
        wanted = ", ".join(
            f"{k}={v!r}" for k, v in kwargs.items() if k != name_key and v not in (None, {})
        )
        log.warning(
            "rabbit: %s '%s' exists with other settings than binder declares (%s); using it "
            "as it is (declare-mode: strict refuses instead). Without the arguments binder "
            "wants, RabbitMQ itself does not dead-letter from it: binder's republishing "
            "still does",
            name_key,
            kwargs[name_key],
            wanted or "defaults",
        )
        return passive

    async def exchange(
        self, name: str, kind: str, durable: bool, auto_delete: bool, adopt: bool = False
    ) -> None:
        """Declare an exchange (``adopt``: use one that exists with other settings)."""
        await self._declare(
            ("exchange", name),
            "exchange_declare",
            {
                "exchange": name,
                "exchange_type": kind,
                "durable": durable,
                "auto_delete": auto_delete,
            },
            adopt,
        )

    async def queue(
        self,
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        adopt: bool = False,
    ) -> None:
        """Declare a queue (``adopt``: use one that exists with other settings)."""
        await self._declare(
            ("queue", name),
            "queue_declare",
            {
                "queue": name,
                "durable": durable,
                "exclusive": exclusive,
                "auto_delete": auto_delete,
                "arguments": arguments or None,
            },
            adopt,
        )

    async def bind(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any] | None = None
    ) -> None:
        """Bind a queue to an exchange."""
        await self._declare(
            ("bind", queue, exchange, routing_key),
            "queue_bind",
            {
                "queue": queue,
                "exchange": exchange,
                "routing_key": routing_key,
                "arguments": arguments or None,
            },
        )

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and forget it (and its bindings) for recovery."""
        for key in [k for k in self._declared if k[1] == name and k[0] in ("queue", "bind")]:
            del self._declared[key]
        try:
            await self._do("queue_delete", {"queue": name}, wait=False)
        except ChannelLost as exc:
            log.debug("rabbit: queue %s not deleted (%s)", name, exc)

    async def redeclare(self) -> None:
        """Declare everything again (recovery hook; runs before channels are handed out)."""
        self._chan = None
        for op, kwargs in list(self._declared.values()):
            try:
                await self._do(op, kwargs, wait=False)
            except ProvisioningError as exc:
                log.error("rabbit: after reconnecting, %s", exc)

    async def close(self) -> None:
        """Close the admin channel."""
        chan, self._chan = self._chan, None
        if chan is not None:
            await chan.close()

    # --- Spring's topology -------------------------------------------------------------

    async def provision_producer(
        self,
        destination: str,
        ext: RabbitProducerProperties,
        required_groups: list[str],
        partition_count: int,
    ) -> str:
        """Declare the exchange and the required groups' queues; return the exchange name."""
        exchange = ext.prefix + destination
        adopt = ext.declare_mode == "adopt"
        if ext.declare_exchange:
            await self.exchange(
                exchange, ext.exchange_type, ext.exchange_durable, ext.exchange_auto_delete, adopt
            )
        for group in required_groups:
            base = ext.prefix + group if ext.queue_name_group_only else f"{exchange}.{group}"
            if partition_count <= 1:
                await self._dlq(base, base, ext, republish=False)
                if ext.bind_queue:
                    await self.queue(base, arguments=queue_arguments(base, ext), adopt=adopt)
                    for key in _keys(ext) or ["#"]:
                        await self._bind(base, exchange, key, ext)
            else:
                for index in range(partition_count):
                    name = f"{base}-{index}"
                    await self._dlq(base, name, ext, republish=False)
                    if ext.bind_queue:
                        await self.queue(name, arguments=queue_arguments(name, ext), adopt=adopt)
                        for key in _keys(ext) or [destination]:
                            await self._bind(name, exchange, f"{key}-{index}", ext)
        return exchange

    async def provision_consumer(
        self,
        destination: str,
        group: str | None,
        ext: RabbitConsumerProperties,
        partitioned: bool,
        index: int,
    ) -> ConsumerQueue:
        """Declare exchange, queue, bindings and dead-lettering for one consumer binding."""
        anonymous = not group
        label = anonymous_name(ext.anonymous_group_prefix) if anonymous else str(group)
        base = label if ext.queue_name_group_only else f"{destination}.{label}"
        exchange = ext.prefix + destination
        adopt = ext.declare_mode == "adopt"
        if ext.declare_exchange:
            await self.exchange(
                exchange, ext.exchange_type, ext.exchange_durable, ext.exchange_auto_delete, adopt
            )
        queue = ext.prefix + base
        partitioned = partitioned and not anonymous
        if partitioned:
            queue += f"-{index}"
        durable = not anonymous and ext.durable_subscription
        if ext.bind_queue:
            args = queue_arguments(queue, ext) if durable else transient_arguments(queue, ext)
            if anonymous:
                # Exclusive (gone with its connection, like Spring's anonymous queue) but not
                # auto-delete, so pausing the binding (cancelling its consumer) keeps it.
                await self.queue(queue, durable=False, exclusive=True, arguments=args)
            elif durable:
                await self.queue(queue, arguments=args, adopt=adopt)
            else:
                await self.queue(queue, durable=False, auto_delete=True, arguments=args)
            keys = _keys(ext)
            if partitioned:
                for key in keys or [destination]:
                    await self._bind(queue, exchange, f"{key}-{index}", ext)
            else:
                for key in keys or ["#"]:
                    await self._bind(queue, exchange, key, ext)
        dlx: str | None = None
        republish = ext.republish_to_dlq
        rejects = durable and ext.auto_bind_dlq and ext.bind_queue and queue not in self.adopted
        if durable and ext.auto_bind_dlq:
            adopted = queue in self.adopted
            await self._dlq(ext.prefix + base, queue, ext, republish=republish or adopted)
            dlx = dead_letter_exchange(ext)
        elif not anonymous and ext.dead_letter_exchange is not None:
            dlx = ext.dead_letter_exchange  # the user's own DLX, declared elsewhere
        if dlx is not None and not republish and not rejects:
            # Rejecting would drop the failure: the queue has no dead-letter exchange of
            # binder's (adopted as it was, or never given one). Republish it instead.
            log.warning(
                "rabbit: queue '%s' does not dead-letter what is rejected from it, so "
                "binding's failures are republished to '%s' (republish-to-dlq: false "
                "cannot apply)",
                queue,
                dlx,
            )
            republish = True
        return ConsumerQueue(
            exchange=exchange,
            queue=queue,
            anonymous=anonymous,
            dlx=dlx if republish else None,
            dlq_routing_key=ext.dead_letter_routing_key or queue,
            rejects_to_dlx=rejects,
        )

    async def _bind(self, queue: str, exchange: str, key: str, ext: RabbitCommonProperties) -> None:
        if ext.exchange_type == "fanout":
            key = ""
        elif ext.exchange_type == "headers":
            await self.bind(queue, exchange, "", dict(ext.queue_binding_arguments))
            return
        await self.bind(queue, exchange, key, dict(ext.queue_binding_arguments) or None)

    async def _dlq(
        self, base: str, queue: str, ext: RabbitCommonProperties, republish: bool
    ) -> None:
        """Spring's autoBindDlq: DLX, ``<base>.dlq``, bound with the queue's name (and with
        the base name when republishing, which does not know about partitions)."""
        if not ext.auto_bind_dlq:
            return
        dlq = ext.dead_letter_queue_name or f"{base}.dlq"
        await self.queue(dlq, arguments=dlq_arguments(ext))
        dlx = dead_letter_exchange(ext)
        if ext.declare_dlx:
            await self.exchange(dlx, ext.dead_letter_exchange_type, True, False)
        await self.bind(dlq, dlx, ext.dead_letter_routing_key or queue)
        if republish and base != queue:
            await self.bind(dlq, dlx, base)


def anonymous_name(prefix: str) -> str:
    """``<prefix><base64url uuid>``, as Spring AMQP's Base64UrlNamingStrategy names them."""
    raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
    return f"{prefix}{raw}"


def dead_letter_exchange(ext: RabbitCommonProperties) -> str:
    """The DLX: ``dead-letter-exchange`` or ``<prefix>DLX``."""
    return ext.dead_letter_exchange or ext.prefix + DEAD_LETTER_EXCHANGE


def queue_arguments(queue: str, ext: RabbitCommonProperties) -> dict[str, Any]:
    """Arguments of a group queue: dead-lettering (with auto-bind-dlq) plus limits."""
    args: dict[str, Any] = {}
    if ext.auto_bind_dlq:
        args["x-dead-letter-exchange"] = dead_letter_exchange(ext)
        args["x-dead-letter-routing-key"] = ext.dead_letter_routing_key or queue
    args.update(_extra_arguments(ext, dlq=False))
    return args


def dlq_arguments(ext: RabbitCommonProperties) -> dict[str, Any]:
    """Arguments of a DLQ: its own dead-lettering (for delayed redelivery) plus limits."""
    args: dict[str, Any] = {}
    if ext.dlq_dead_letter_exchange is not None:
        args["x-dead-letter-exchange"] = ext.dlq_dead_letter_exchange
    if ext.dlq_dead_letter_routing_key is not None:
        args["x-dead-letter-routing-key"] = ext.dlq_dead_letter_routing_key
    args.update(_extra_arguments(ext, dlq=True))
    return args


#: What makes a queue a quorum queue: RabbitMQ refuses these on an exclusive or
#: auto-delete queue.
_QUORUM_ARGUMENTS = ("x-queue-type", "x-delivery-limit", "x-quorum-initial-group-size")


def transient_arguments(queue: str, ext: RabbitCommonProperties) -> dict[str, Any]:
    """Arguments of a queue that lives only as long as its consumer (an anonymous
    subscription's, or a group's without durable-subscription): the limits, but never a
    quorum queue, which RabbitMQ refuses to make exclusive or auto-delete. So quorum
    queues set for every consumer (``stream.rabbit.default.consumer.quorum``) apply to
    the groups, and an app with an anonymous binding still starts."""
    args = _extra_arguments(ext, dlq=False)
    if ext.quorum.enabled:
        for key in _QUORUM_ARGUMENTS:
            args.pop(key, None)
        log.info(
            "queue %s lives only as long as its consumer, so it is a classic queue (a quorum "
            "queue cannot be exclusive or auto-delete)",
            queue,
        )
    return args


def _extra_arguments(ext: RabbitCommonProperties, dlq: bool) -> dict[str, Any]:
    if dlq:
        values = (
            ext.dlq_expires,
            ext.dlq_max_length,
            ext.dlq_max_length_bytes,
            ext.dlq_max_priority,
            ext.dlq_ttl,
            ext.dlq_lazy,
            ext.dlq_overflow_behavior,
            ext.dlq_quorum,
            ext.dlq_single_active_consumer,
        )
    else:
        values = (
            ext.expires,
            ext.max_length,
            ext.max_length_bytes,
            ext.max_priority,
            ext.ttl,
            ext.lazy,
            ext.overflow_behavior,
            ext.quorum,
            ext.single_active_consumer,
        )
    expires, max_length, max_bytes, priority, ttl, lazy, overflow, quorum, single = values
    args: dict[str, Any] = {}
    for key, value in (
        ("x-expires", expires),
        ("x-max-length", max_length),
        ("x-max-length-bytes", max_bytes),
        ("x-max-priority", priority),
        ("x-message-ttl", ttl),
    ):
        if value is not None:
            args[key] = value
    if lazy:
        args["x-queue-mode"] = "lazy"
    if overflow:
        args["x-overflow"] = overflow
    if quorum.enabled:
        args["x-queue-type"] = "quorum"
        if quorum.delivery_limit is not None:
            args["x-delivery-limit"] = quorum.delivery_limit
        if quorum.initial_group_size is not None:
            args["x-quorum-initial-group-size"] = quorum.initial_group_size
    if single:
        args["x-single-active-consumer"] = True
    return args


def _keys(ext: RabbitCommonProperties) -> list[str]:
    key = ext.binding_routing_key
    if key is None:
        return []
    if ext.binding_routing_key_delimiter:
        return [k for k in key.split(ext.binding_routing_key_delimiter) if k]
    return [key]


def _check_names(op: str, kwargs: dict[str, Any]) -> None:
    """Refuse, before anything is sent, a name AMQP cannot carry: the broker would never
    see it, and the error would otherwise come from deep inside pika."""
    for field in ("exchange", "queue", "routing_key"):
        name = kwargs.get(field)
        if isinstance(name, str) and len(name.encode("utf-8")) > MAX_NAME_BYTES:
            what = {
                "exchange": "exchange name",
                "queue": "queue name",
                "routing_key": "routing key",
            }
            raise ProvisioningError(
                f"{_what(op, kwargs)}: the {what[field]} is {len(name.encode('utf-8'))} "
                f"bytes long and AMQP allows at most {MAX_NAME_BYTES} (use a shorter "
                "destination, group or prefix)"
            )


def _what(op: str, kwargs: dict[str, Any]) -> str:
    return {
        "exchange_declare": f"declaring exchange '{_short(kwargs.get('exchange'))}'",
        "queue_declare": f"declaring queue '{_short(kwargs.get('queue'))}'",
        "queue_bind": f"binding queue '{_short(kwargs.get('queue'))}' to exchange "
        f"'{_short(kwargs.get('exchange'))}' with key '{_short(kwargs.get('routing_key'))}'",
        "queue_delete": f"deleting queue '{_short(kwargs.get('queue'))}'",
    }.get(op, op)


def _short(name: object) -> str:
    """A name for a message: whole, unless it is too long for AMQP anyway."""
    text = str(name)
    return text if len(text) <= MAX_NAME_BYTES else text[:40] + "..."


def _exists_otherwise(exc: Exception) -> bool:
    """RabbitMQ's 406 for a declaration that differs from what exists ("inequivalent arg").
    The same code refuses arguments that are wrong in themselves (an exclusive quorum
    queue): such a queue does not exist to be adopted or matched."""
    return getattr(exc, "code", None) == 406 and "inequivalent arg" in str(exc)


def _explain(op: str, kwargs: dict[str, Any], exc: ChannelLost) -> str:
    what = _what(op, kwargs)
    hint = ""
    if _exists_otherwise(exc):
        hint = (
            "; it already exists with other settings (type, durability or arguments such as "
            "dead-lettering): make the binding's properties match it, or delete it"
        )
    elif exc.code == 406:
        hint = "; RabbitMQ refused its arguments or properties (its reply says which)"
    elif exc.code == 403:
        hint = "; the user lacks permission on this virtual host"
    elif exc.code == 405:
        hint = "; an exclusive queue of that name is held by another connection"
    return f"{what} failed: {exc}{hint}"
