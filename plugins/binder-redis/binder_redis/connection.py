"""Dedicated Redis connections that send a batch of commands in one write and read the
replies in order: one round trip per batch, whatever its size.

We use redis-py's connection class (its protocol, TLS, AUTH and SELECT handling) but not
its client: the client's retries would silently resend a half-applied batch, and its reply
parsing builds a dict per stream entry that we would only take apart again. Replies here
are RESP2 as sent, on every redis-py version from 5 on.

A ``Link`` is owned by one task at a time (a consumer worker, a producer send); after a
connection error redis-py has closed the socket, and the next command reconnects.
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from binder_redis.settings import RedisEnvironment

#: Errors after which the same command may well succeed on a new connection.
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,  # a replica promoted under us: the next connection finds the primary
    OSError,
)

#: A command: its arguments, every one of them ``bytes``.
Command = Sequence[bytes]
ConnectionFactory = Callable[[float], AbstractConnection]


def connection_factory(env: RedisEnvironment, binder_name: str) -> ConnectionFactory:
    """``make(socket_timeout)`` -> a new, not yet connected redis-py connection."""
    common: dict[str, Any] = {
        "socket_connect_timeout": env.connection_timeout,
        "socket_keepalive": True,
        "client_name": env.client_name or f"binder:{binder_name}",
        "protocol": 2,
        "retry": Retry(NoBackoff(), 0),  # we retry whole batches ourselves, knowingly
    }
    cls: type[AbstractConnection]
    if env.url is not None:
        pool = ConnectionPool.from_url(env.url.get_secret_value(), **common)
        cls, kwargs = pool.connection_class, dict(pool.connection_kwargs)
    else:
        kwargs = {
            **common,
            "host": env.host,
            "port": env.port,
            "db": env.db,
            "username": env.username,
            "password": env.password.get_secret_value() if env.password else None,
        }
        cls = Connection
        tls = env.ssl
        if tls.enabled:
            cls = SSLConnection
            kwargs.update(
                ssl_ca_certs=tls.ca_file,
                ssl_certfile=tls.cert_file,
                ssl_keyfile=tls.key_file,
                ssl_password=tls.key_password.get_secret_value() if tls.key_password else None,
                ssl_cert_reqs=_ssl.CERT_REQUIRED if tls.verify else _ssl.CERT_NONE,
                ssl_check_hostname=tls.verify,
            )

    def make(socket_timeout: float) -> AbstractConnection:
        return cls(**{**kwargs, "socket_timeout": socket_timeout})

    return make


def pack(commands: Sequence[Command]) -> bytes:
    """RESP2 for a batch of commands. redis-py's packer accepts any type and splits large
    values into separate writes; ours takes only bytes and builds one buffer, several times
    faster, and a batch goes out in a single write."""
    out: list[bytes] = []
    add = out.append
    for command in commands:
        add(b"*%d\r\n" % len(command))
        for arg in command:
            add(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


class Link:
    """One connection; ``call`` sends one command, ``batch`` many in one round trip."""

    def __init__(self, make: ConnectionFactory, socket_timeout: float) -> None:
        self._conn = make(socket_timeout)
        self._id: int | None = None

    @property
    def connected(self) -> bool:
        """Whether the socket is open (it may still turn out dead on the next command)."""
        return bool(self._conn.is_connected)

    async def call(self, *args: bytes, on_sent: Callable[[], None] | None = None) -> Any:
        """One command's reply; an error reply raises ``ResponseError``."""
        (reply,) = await self.batch((args,), on_sent)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def batch(
        self, commands: Sequence[Command], on_sent: Callable[[], None] | None = None
    ) -> list[Any]:
        """Send every command in one write, read every reply. An error reply is returned
        in its place as a ``ResponseError``; a connection error raises (the connection is
        closed then, and nothing tells which commands the server applied)."""
        conn = self._conn
        if not conn.is_connected:
            self._id = None
        try:
            await conn.send_packed_command(pack(commands), check_health=False)
            if on_sent is not None:
                on_sent()
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            # Replies may be left unread on this socket: it cannot be used again.
            self._id = None
            await conn.disconnect(nowait=True)
            raise

    async def client_id(self) -> int:
        """This connection's CLIENT ID (what CLIENT UNBLOCK names); connects if needed."""
        if self._id is None or not self._conn.is_connected:
            self._id = int(await self.call(b"CLIENT", b"ID"))
        return self._id

    async def close(self) -> None:
        """Close the socket."""
        self._id = None
        await self._conn.disconnect(nowait=True)
