"""The binder's way to Redis: connections, the outage log, retries with back-off, and the
administrative commands (groups, partition counts) every other part uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from redis.exceptions import ResponseError

from binder_core.errors import BinderException
from binder_redis.connection import TRANSIENT, Command, Link, connection_factory
from binder_redis.settings import RedisEnvironment

log = logging.getLogger(__name__)


class RedisUnavailableError(BinderException):
    """Redis could not be reached (for longer than the binder was told to keep trying)."""


def backoff(failures: int, cap_ms: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures, at most ``cap_ms``."""
    return min(0.05 * 2.0 ** min(failures, 10), cap_ms / 1000)


class RedisClient:
    """One Redis server (or one endpoint that fronts it), as a binder instance uses it."""

    def __init__(self, name: str, environment: RedisEnvironment) -> None:
        self.name = name
        self.environment = environment
        self._make = connection_factory(environment, name)
        self._prefix = environment.key_prefix
        self._control: Link | None = None
        self._control_lock = asyncio.Lock()
        self._down = False

    @property
    def up(self) -> bool:
        """False from the first failed command of an outage until one works again."""
        return not self._down

    async def connect(self) -> None:
        """Open the control connection (PING), or say why not."""
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

    async def close(self) -> None:
        """Close the control connection."""
        if self._control is not None:
            await self._control.close()
            self._control = None

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
