"""The Redis Streams binder: destinations are streams, groups are consumer groups.

Topology, for destination ``ticks`` and the default ``key-prefix`` ``binder:``:

* stream ``binder:ticks`` (or ``binder:ticks-<n>`` for each partition ``n`` when a producer's
  ``partition-count`` is above 1); producers XADD to it, pipelined, one round trip a batch;
* consumer group ``<group>`` on it, created (XGROUP CREATE ... MKSTREAM) by the first
  consumer or by a producer's ``required-groups``; an anonymous binding gets a group of its
  own, ``anonymous.<random>``, deleted when it stops;
* dead letters in stream ``binder:ticks.<group>.dlq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence

from redis.exceptions import ResponseError

from binder_core.errors import BinderException, DeliveryError
from binder_core.message import Message
from binder_core.spi import (
    Binding,
    Capability,
    ConsumerSpec,
    Handle,
    Producer,
    ProducerSpec,
)
from binder_redis.binding import RedisBinding, backoff
from binder_redis.connection import TRANSIENT, Command, Link, connection_factory
from binder_redis.fields import PAYLOAD, encode_headers
from binder_redis.settings import (
    RedisConsumerProperties,
    RedisEnvironment,
    RedisProducerProperties,
)

log = logging.getLogger(__name__)

#: XGROUP CREATE start id of groups a producer's required-groups creates: the beginning,
#: so even what was sent before the producer bound is kept for them.
EARLIEST = b"0"


class RedisUnavailableError(BinderException):
    """Redis could not be reached (for longer than the binder was told to keep trying)."""


class RedisProducer:
    """XADDs batches to one destination's stream(s); returns once Redis replied to all."""

    def __init__(
        self, binder: RedisBinder, destination: str, keys: list[bytes], ext: RedisProducerProperties
    ) -> None:
        self._binder = binder
        self._destination = destination
        self._keys = keys
        self._trim: tuple[bytes, ...] = (
            (b"MAXLEN", b"~", str(ext.max_length).encode()) if ext.max_length else ()
        )
        self._round_robin = itertools.count()
        self._idle: list[Link] = []  # one link per concurrent send, reused

    def _commands(self, messages: Sequence[Message[bytes]]) -> list[Command]:
        keys, trim = self._keys, self._trim
        if len(keys) == 1:
            head = (b"XADD", keys[0], *trim, b"*", PAYLOAD)
            return [(*head, m.payload, *encode_headers(m.headers)) for m in messages]
        n, rr = len(keys), self._round_robin
        return [
            (
                b"XADD",
                keys[(next(rr) if m.partition is None else m.partition) % n],
                *trim,
                b"*",
                PAYLOAD,
                m.payload,
                *encode_headers(m.headers),
            )
            for m in messages
        ]

    async def send(self, messages: Sequence[Message[bytes]]) -> None:
        if not messages:
            return
        commands = self._commands(messages)
        link = self._idle.pop() if self._idle else self._binder.link()
        try:
            replies = await self._binder.with_reconnect(link, commands, "send")
        finally:
            self._idle.append(link)
        refused = [r for r in replies if isinstance(r, ResponseError)]
        if refused:
            raise DeliveryError(
                f"Redis refused {len(refused)} of {len(messages)} message(s) for "
                f"'{self._destination}': {refused[0]}"
            )

    async def close(self) -> None:
        links, self._idle = self._idle, []
        for link in links:
            await link.close()


class RedisBinder:
    """Streams on one Redis server (or one endpoint that fronts it)."""

    capabilities = frozenset(
        {
            Capability.GROUPS,
            Capability.ORDERING,
            Capability.PARTITIONS,
            Capability.DEAD_LETTER,
            Capability.PAUSE,
            Capability.PERSISTENCE,
            Capability.CROSS_PROCESS,
            Capability.REQUIRED_GROUPS,
        }
    )

    def __init__(self, name: str, environment: RedisEnvironment | None = None) -> None:
        self.name = name
        self.environment = env = environment or RedisEnvironment()
        self._make = connection_factory(env, name)
        self._prefix = env.key_prefix
        self._control: Link | None = None
        self._control_lock = asyncio.Lock()
        self._bindings: list[RedisBinding] = []
        self._producers: list[RedisProducer] = []
        self._down = False

    # -- connections ----------------------------------------------------------------------

    def link(self, block_ms: int = 0) -> Link:
        """A new connection; one that waits in blocking reads gets a longer reply timeout."""
        return Link(self._make, self.environment.socket_timeout + block_ms / 1000)

    def lost(self, what: str, exc: BaseException) -> None:
        """Log the first failure of an outage (not every retry of every connection)."""
        if not self._down:
            self._down = True
            log.warning(
                "redis binder %s: connection lost (%s: %s); reconnecting",
                self.name,
                what,
                str(exc) or type(exc).__name__,
            )

    def recovered(self) -> None:
        """Log the end of an outage."""
        if self._down:
            self._down = False
            log.warning("redis binder %s: connection recovered", self.name)

    async def with_reconnect(
        self, link: Link, commands: Sequence[Command], what: str
    ) -> list[object]:
        """Run a batch, reconnecting with back-off for up to ``send-timeout``. A batch cut
        off mid-way is sent again whole: some of it may then exist twice (at-least-once)."""
        env = self.environment
        loop = asyncio.get_running_loop()
        deadline = loop.time() + env.send_timeout / 1000
        failures = 0
        while True:
            try:
                replies = await link.batch(commands)
            except TRANSIENT as exc:
                failures += 1
                self.lost(what, exc)
                left = deadline - loop.time()
                if left <= 0:
                    raise RedisUnavailableError(
                        f"redis binder {self.name}: {what} failed, Redis unreachable for "
                        f"{env.send_timeout} ms: {exc}"
                    ) from exc
                await asyncio.sleep(min(backoff(failures, env.recovery_interval), left))
                continue
            if failures:
                self.recovered()
            return replies

    async def control(self, *command: bytes) -> object:
        """One administrative command on the shared control connection."""
        async with self._control_lock:
            if self._control is None:
                self._control = self.link()
            replies = await self.with_reconnect(self._control, [command], "admin command")
        reply = replies[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def unblock(self, client_id: int) -> None:
        """Interrupt a blocking XREADGROUP as if it had timed out (nothing is delivered).
        One attempt: if Redis is unreachable, the read fails by itself."""
        async with self._control_lock:
            if self._control is None:
                self._control = self.link()
            with contextlib.suppress(ResponseError, *TRANSIENT):
                await self._control.call(b"CLIENT", b"UNBLOCK", str(client_id).encode())

    def key(self, destination: str) -> bytes:
        """The stream key of a destination."""
        return (self._prefix + destination).encode()

    def keys(self, destination: str, partitions: int) -> list[bytes]:
        """The stream keys of a destination: one, or one per partition."""
        if partitions <= 1:
            return [self.key(destination)]
        return [self.key(f"{destination}-{p}") for p in range(partitions)]

    def _partitions_key(self, destination: str) -> bytes:
        return self.key(f"{destination}.partitions")

    async def partitions_of(self, destination: str) -> int:
        """The partition count producers declared for a destination; 0 if none did."""
        raw = await self.control(b"GET", self._partitions_key(destination))
        return int(raw) if isinstance(raw, bytes) and raw.isdigit() else 0

    async def declare_partitions(self, destination: str, count: int) -> None:
        """Record a producer's partition-count, so consumers find the partition streams
        (the largest count declared wins)."""
        if await self.partitions_of(destination) < count:
            await self.control(b"SET", self._partitions_key(destination), str(count).encode())

    async def create_group(self, key: bytes, group: str, start: bytes) -> bool:
        """XGROUP CREATE ... MKSTREAM; False when the group exists (it keeps its position)."""
        try:
            await self.control(b"XGROUP", b"CREATE", key, group.encode(), start, b"MKSTREAM")
        except ResponseError as exc:
            if str(exc).startswith("BUSYGROUP"):
                return False
            raise
        return True

    # -- the SPI --------------------------------------------------------------------------

    async def start(self) -> None:
        env = self.environment
        where = "the configured url" if env.url is not None else f"{env.host}:{env.port}"
        link = self.link()
        try:
            await link.call(b"PING")
        except TRANSIENT as exc:
            await link.close()
            raise RedisUnavailableError(f"cannot reach Redis at {where}: {exc}") from exc
        except ResponseError as exc:  # AUTH or SELECT refused
            await link.close()
            raise RedisUnavailableError(f"Redis at {where} refused the connection: {exc}") from exc
        self._control = link

    async def producer(self, spec: ProducerSpec) -> Producer:
        ext = spec.extension
        ext = ext if isinstance(ext, RedisProducerProperties) else RedisProducerProperties()
        count = spec.properties.partition_count
        keys = self.keys(spec.destination, count)
        if count > 1:
            await self.declare_partitions(spec.destination, count)
        for group in spec.properties.required_groups:
            for key in keys:
                await self.create_group(key, group, EARLIEST)
        producer = RedisProducer(self, spec.destination, keys, ext)
        self._producers.append(producer)
        return producer

    async def consumer(self, spec: ConsumerSpec, handle: Handle) -> Binding:
        ext = spec.extension
        ext = ext if isinstance(ext, RedisConsumerProperties) else RedisConsumerProperties()
        binding = RedisBinding(self, spec, ext, handle)
        await binding.provision()
        self._bindings.append(binding)
        if spec.properties.auto_startup:
            await binding.start()
        return binding

    async def close(self) -> None:
        for binding in self._bindings:
            try:
                await binding.stop()
            except Exception as exc:
                log.error(
                    "redis binder %s: binding %s did not stop cleanly: %s",
                    self.name,
                    binding.name,
                    exc,
                )
        self._bindings.clear()
        for producer in self._producers:
            with contextlib.suppress(Exception):
                await producer.close()
        self._producers.clear()
        if self._control is not None:
            await self._control.close()
            self._control = None
