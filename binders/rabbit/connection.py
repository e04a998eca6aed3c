"""Connections to RabbitMQ on the running event loop, and their recovery.

pika's ``AsyncioConnection`` runs its I/O as callbacks on the app's own loop: nothing blocks,
and no thread hand-off is paid per batch (measured: as fast as a plain ``SelectConnection``
loop, while a second thread would only contend for the GIL). Here its callbacks become
awaitables, and every awaitable fails with ``ChannelLost`` when its channel or connection
goes, so nothing waits forever on a broker that restarted.

A ``Connection`` reconnects by itself with back-off (trying the addresses in order, as
Spring does), runs its recovery hooks (re-declare topology) and only then lets waiting
channel users through, so consumers never subscribe to a queue that is not there yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pika
from pika import exceptions as pika_exc
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from binder_core.errors import BinderException
from binders.rabbit.internals import CoalescingConnection
from binders.rabbit.parameters import describe, parameters, tls_failure
from binders.rabbit.settings import RabbitEnvironment

log = logging.getLogger(__name__)

#: Channel-level reply codes that mean "this will fail again": access refused, not found,
#: resource locked, precondition failed. Anything else (a lost connection, a forced close)
#: is worth another try once the connection is back.
PERMANENT_CODES = frozenset({403, 404, 405, 406})
FIRST_RETRY_DELAY = 0.1
#: The longest pause between two attempts of a retry loop that has no setting of its own.
LONGEST_RETRY_DELAY = 5.0
#: What pika raises synchronously, before anything reaches the broker: an argument it
#: cannot encode (a name over 255 bytes, a value of no AMQP type) or a call in the wrong
#: state. The same call fails the same way every time.
LOCAL_ERRORS: tuple[type[Exception], ...] = (pika_exc.AMQPError, ValueError, TypeError)


class Backoff:
    """Growing pauses between the attempts of a retry loop.

    Every loop that can retry awaits one of these: a failure that repeats at once would
    otherwise keep the event loop busy forever (nothing else runs, not even the handler
    of Ctrl-C)."""

    def __init__(self, first: float = FIRST_RETRY_DELAY, longest: float = LONGEST_RETRY_DELAY):
        self._first = first
        self._next = first
        self._longest = max(longest, first)

    async def wait(self) -> None:
        """Sleep for the next pause."""
        delay, self._next = self._next, min(self._next * 2, self._longest)
        await asyncio.sleep(delay)

    def reset(self) -> None:
        """Start again from the first pause (after a success)."""
        self._next = self._first


class ConnectError(BinderException):
    """RabbitMQ could not be reached (or refused the login) at any configured address.

    ``permanent`` when trying again cannot help: the broker refused the login or the
    virtual host.
    """

    def __init__(self, text: str, permanent: bool = False) -> None:
        super().__init__(text)
        self.permanent = permanent


class ChannelLost(Exception):
    """A channel closed under a pending operation.

    ``permanent`` when the broker closed it for something that will fail again (a missing
    exchange, a queue declared with other arguments); otherwise the connection went and the
    operation is worth repeating after recovery.
    """

    def __init__(self, text: str, code: int | None = None, permanent: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.permanent = permanent


def local_error(exc: Exception) -> ChannelLost:
    """The permanent ``ChannelLost`` for an error pika raised before sending anything."""
    if isinstance(exc, pika_exc.ShortStringTooLong):
        value = str(exc.args[0]) if exc.args else ""
        shown = value if len(value) <= 40 else value[:40] + "..."
        text = f"'{shown}' is longer than the 255 bytes AMQP allows for a name"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return ChannelLost(text, permanent=True)


def lost_from(reason: BaseException | str) -> ChannelLost:
    """The ``ChannelLost`` for pika's close reason."""
    if isinstance(reason, pika_exc.ChannelClosedByBroker):
        code = int(reason.reply_code)
        return ChannelLost(str(reason.reply_text), code, code in PERMANENT_CODES)
    if isinstance(reason, pika_exc.ChannelClosed | pika_exc.ConnectionClosed):
        return ChannelLost(str(reason.reply_text), int(reason.reply_code))
    return ChannelLost(str(reason) or type(reason).__name__)


class Chan:
    """A pika channel whose RPCs are awaitable and fail when it closes."""

    def __init__(self, raw: Channel, generation: int) -> None:
        self.raw = raw
        #: Which connection (counted from 1) the channel belongs to: delivery tags of an
        #: older generation are meaningless on a newer one.
        self.generation = generation
        self.closed: ChannelLost | None = None
        self._waiting: set[asyncio.Future[Any]] = set()
        self._close_listeners: list[Callable[[ChannelLost], None]] = []
        raw.add_on_close_callback(self._on_closed)

    def on_close(self, listener: Callable[[ChannelLost], None]) -> None:
        """Call ``listener`` once when the channel closes (at once if it already has)."""
        if self.closed is not None:
            listener(self.closed)
        else:
            self._close_listeners.append(listener)

    def _on_closed(self, _channel: Channel, reason: BaseException) -> None:
        lost = lost_from(reason)
        self.closed = lost
        waiting, self._waiting = self._waiting, set()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(lost)
        listeners, self._close_listeners = self._close_listeners, []
        for listener in listeners:
            try:
                listener(lost)
            except Exception:  # one listener must not keep the others from hearing it
                log.exception("channel close listener failed")

    async def rpc(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a pika channel method that takes ``callback=`` and await that callback."""
        if self.closed is not None:
            raise self.closed
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(frame: Any) -> None:
            if not fut.done():
                fut.set_result(frame)

        self._waiting.add(fut)
        try:
            method(*args, callback=done, **kwargs)
        except LOCAL_ERRORS as exc:
            # Raised before anything was sent: trying again fails the same way at once, so
            # it is permanent (it used to be retried in a loop that never yielded).
            self._waiting.discard(fut)
            raise local_error(exc) from exc
        try:
            return await fut
        finally:
            self._waiting.discard(fut)

    async def close(self) -> None:
        """Close the channel (unacknowledged deliveries go back to their queues)."""
        if self.closed is not None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_close(lambda _lost: resolve(fut, None))
        try:
            self.raw.close()
        except pika_exc.AMQPError:
            return  # already closing, or its connection is gone: nothing more to do
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, 5.0)


Hook = Callable[[], Awaitable[None]]


class Connection:
    """One AMQP connection that comes back by itself.

    ``channel()`` waits while the connection is down; recovery hooks (registered with
    ``on_recover``) run on each new connection before anyone else gets a channel.
    """

    def __init__(self, env: RabbitEnvironment, binder_name: str, role: str) -> None:
        self._env = env
        self._binder = binder_name
        self.role = role
        self._params: list[pika.ConnectionParameters] = []
        self._conn: AsyncioConnection | None = None
        self._up = asyncio.Event()
        self._closing = False
        self._hooks: list[Hook] = []
        self._reconnect_task: asyncio.Task[None] | None = None
        self._gave_up: asyncio.Future[None] | None = None
        self.generation = 0

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called: nothing will be sent through it again."""
        return self._closing

    @property
    def where(self) -> str:
        """The broker address, without secrets."""
        return describe(self._env)

    @property
    def node(self) -> str | None:
        """The address (host:port) of the broker the live connection reached, among
        ``addresses``: which node of a cluster carries it, for logs and health. None while
        disconnected."""
        conn = self._conn
        params = getattr(conn, "params", None) if conn is not None else None
        if params is None:
            return None
        host = str(params.host)
        return f"[{host}]:{params.port}" if ":" in host else f"{host}:{params.port}"

    @property
    def on_node(self) -> str:
        """With several addresses, ``, on host:port`` naming the one in use (else "")."""
        node = self.node
        several = self._env.uri is None and len(self._env.addresses) > 1
        return f", on {node}" if several and node else ""

    @property
    def is_up(self) -> bool:
        """Whether the connection is open and recovered."""
        return self._up.is_set()

    def on_recover(self, hook: Hook) -> None:
        """Run ``hook`` after every reconnection, before channels are handed out again."""
        self._hooks.append(hook)

    async def start(self) -> None:
        """Connect, retrying with back-off for up to ``startup-timeout`` seconds, so an app
        started just before its broker waits for it rather than dying; raise
        ``ConnectError`` after that, or at once when the broker refuses the login."""
        self._params = await asyncio.to_thread(parameters, self._env, self._binder, self.role)
        loop = asyncio.get_running_loop()
        self._gave_up = loop.create_future()
        timeout = self._env.startup_timeout
        deadline = loop.time() + timeout
        delay = FIRST_RETRY_DELAY * 2
        while True:
            try:
                conn = await self._connect()
                break
            except ConnectError as exc:
                remaining = deadline - loop.time()
                if exc.permanent or remaining <= 0:
                    if not exc.permanent and timeout > 0:
                        raise ConnectError(
                            f"{exc} (retried for {timeout:g} s; startup-timeout sets how "
                            "long start-up waits)"
                        ) from None
                    raise
                wait = min(delay, remaining)
                log.warning("rabbit %s: %s; retrying in %.1f s", self.role, exc, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, max(self._env.recovery_interval / 1000.0, delay))
        self._attach(conn)
        self._up.set()

    async def _connect(self) -> AsyncioConnection:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any) -> None:
            if not fut.done():
                fut.set_result(result)

        CoalescingConnection.create_connection(self._params, done, custom_ioloop=loop)
        result = await fut
        if isinstance(result, BaseException):
            raise ConnectError(
                f"cannot connect to RabbitMQ at {self.where}: {_why(result)}",
                permanent=_refused(result),
            )
        assert isinstance(result, AsyncioConnection)
        return result

    def _attach(self, conn: AsyncioConnection) -> None:
        self._conn = conn
        self.generation += 1
        conn.add_on_close_callback(self._on_closed)
        # A resource alarm (memory, disk) makes RabbitMQ stop reading from publishers: say
        # so, since sends then wait without any other sign.
        conn.add_on_connection_blocked_callback(
            lambda _c, frame: log.warning(
                "rabbit %s: RabbitMQ blocked this connection (%s); sends wait until it lifts",
                self.role,
                getattr(frame.method, "reason", "resource alarm"),
            )
        )
        conn.add_on_connection_unblocked_callback(
            lambda _c, _frame: log.info("rabbit %s: RabbitMQ unblocked this connection", self.role)
        )

    def _on_closed(self, conn: AsyncioConnection, reason: BaseException) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._up.clear()
        if self._closing:
            return
        log.warning(
            "rabbit %s connection to %s lost (%s); reconnecting", self.role, self.where, reason
        )
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(
                self._reconnect(), name=f"rabbit:{self._binder}:{self.role}:reconnect"
            )

    async def _reconnect(self) -> None:
        backoff = Backoff(FIRST_RETRY_DELAY, self._env.recovery_interval / 1000.0)
        attempt = 0
        while not self._closing:
            await backoff.wait()
            attempt += 1
            try:
                conn = await self._connect()
            except ConnectError as exc:
                if attempt == 1 or attempt % 10 == 0:
                    log.info("rabbit %s: still reconnecting (%s)", self.role, exc)
                continue
            except Exception:
                # Anything else (pika refusing the parameters) must not end the recovery
                # for good, silently: say so and keep trying.
                log.exception("rabbit %s: reconnecting failed", self.role)
                continue
            self._attach(conn)
            try:
                for hook in self._hooks:
                    await hook()
            except ChannelLost as exc:
                if not (self._alive(conn) and exc.permanent):
                    await self._drop(conn)
                    continue  # the new connection went too: start over
                log.error("rabbit %s: recovery step failed: %s", self.role, exc)
            except Exception:
                log.exception("rabbit %s: recovery step failed", self.role)
            if self._alive(conn):
                self._up.set()
                log.info(
                    "rabbit %s connection to %s recovered%s", self.role, self.where, self.on_node
                )
                return

    async def _drop(self, conn: AsyncioConnection) -> None:
        """Close a new connection whose recovery did not finish, before making another
        (otherwise it would stay open, unused)."""
        if self._alive(conn):
            with contextlib.suppress(pika_exc.AMQPError):
                conn.close()

    def _alive(self, conn: Any) -> bool:
        current: Any = self._conn
        return current is conn and bool(getattr(current, "is_open", False))

    async def open_channel(self) -> Chan:
        """A channel on the current connection, without waiting for recovery (what the
        recovery hooks themselves use). Raises ``ChannelLost`` while disconnected."""
        conn = self._conn
        if conn is None or not conn.is_open:
            raise ChannelLost("not connected")
        fut: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()
        generation = self.generation

        def opened(channel: Channel) -> None:
            if not fut.done():
                fut.set_result(channel)

        try:
            raw = conn.channel(on_open_callback=opened)
        except pika_exc.AMQPError as exc:
            raise ChannelLost(f"cannot open a channel: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise local_error(exc) from exc
        chan = Chan(raw, generation)
        chan.on_close(lambda lost: fail(fut, lost))
        await fut
        return chan

    async def channel(self) -> Chan:
        """A channel on a live, recovered connection; waits while the broker is away.
        Raises ``ChannelLost`` once the connection is closed, or when opening a channel
        fails for good; backs off while it fails on a connection that is up (the channel
        limit reached, the broker closing new channels)."""
        backoff = Backoff()
        while True:
            await self.wait_up()
            try:
                return await self.open_channel()
            except ChannelLost as exc:
                if self._closing or exc.permanent:
                    raise
                if self._up.is_set():
                    log.debug("rabbit %s: cannot open a channel yet (%s)", self.role, exc)
                    await backoff.wait()
                else:
                    await asyncio.sleep(0)  # the connection went: wait_up waits for it

    async def wait_up(self) -> None:
        """Wait until the connection is open and recovered; ``ChannelLost`` once closed."""
        if self._up.is_set():
            return
        if self._closing:
            raise ChannelLost("connection closed", permanent=True)
        gave_up = self._gave_up
        waiter: asyncio.Future[Any] = asyncio.ensure_future(self._up.wait())
        try:
            if gave_up is None:
                await waiter
            else:
                either: set[asyncio.Future[Any]] = {waiter, gave_up}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self._up.is_set():
            raise ChannelLost("connection closed", permanent=True)

    async def close(self) -> None:
        """Close for good: no more reconnecting; waiters get ``ChannelLost``."""
        self._closing = True
        if self._gave_up is not None and not self._gave_up.done():
            self._gave_up.set_result(None)
        task = self._reconnect_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        conn = self._conn
        if conn is None or conn.is_closed:
            return
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.add_on_close_callback(lambda *_: resolve(closed, None))
        with contextlib.suppress(pika_exc.AMQPError):
            conn.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed, 5.0)
        self._up.clear()


def resolve(fut: asyncio.Future[Any], value: Any) -> None:
    """Set a future's result unless it is already done (callbacks may race)."""
    if not fut.done():
        fut.set_result(value)


def fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Set a future's exception unless it is already done."""
    if not fut.done():
        fut.set_exception(exc)


def _last_cause(exc: BaseException) -> BaseException:
    """The last attempt's error inside pika's connection-workflow error."""
    causes = getattr(exc, "exceptions", None)
    if not causes:
        return exc
    last = causes[-1]
    inner = getattr(last, "exception", None)
    return inner if isinstance(inner, BaseException) else last


def _refused(exc: BaseException) -> bool:
    """Whether the broker answered and said no (login or virtual host), or the TLS
    settings can never work with it (an untrusted certificate, TLS to a plain port): final."""
    refusals = (
        pika_exc.ProbableAuthenticationError,
        pika_exc.AuthenticationError,
        pika_exc.ProbableAccessDeniedError,
    )
    last = _last_cause(exc)
    tls = tls_failure(last)
    return isinstance(last, refusals) or (tls is not None and tls[1])


def _why(exc: BaseException) -> str:
    """The most telling cause of a failed connection workflow, for users."""
    last = _last_cause(exc)
    if isinstance(last, pika_exc.ProbableAuthenticationError | pika_exc.AuthenticationError):
        return "login refused (check username and password)"
    if isinstance(last, pika_exc.ProbableAccessDeniedError):
        return "access refused (check the virtual host and the user's permissions)"
    tls = tls_failure(last)
    if tls is not None:
        return tls[0]
    return f"{type(last).__name__}: {last}"
