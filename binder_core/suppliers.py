"""Driving suppliers: polled functions and (async) generators, sending what they produce
in batches formed while the previous batch is being confirmed.

A supplier goes on whatever one value does. A value the functions composed after it
(``tick|check``) fail on is retried with ``SUPPLIER_RETRY``, then given up; a value that
cannot be encoded is given up at once; a polled supplier that raises is polled again at
the next ``fixed-delay``. Each is logged as an ERROR naming the binding and the exception
type (its text, which may quote data, only at DEBUG). Nothing is dead-lettered: a supplier
has no input to hand back, as in Spring, where a failing poll goes to the error channel
and is logged. Only a generator that raises ends, since a generator cannot go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from binder_core.calls import compose
from binder_core.errors import ConversionError, DeliveryError
from binder_core.functions import Definition
from binder_core.message import Message
from binder_core.output import Output
from binder_core.properties import PollerProperties
from binder_core.retry import RetryPolicy

log = logging.getLogger(__name__)

#: Retries of the functions composed after a supplier, for one value it produced. A
#: supplier has no consumer binding whose retry settings could apply; these are the
#: consumer defaults (3 attempts, 1 s back-off doubling up to 10 s).
SUPPLIER_RETRY = RetryPolicy()

MAX_BATCH = 256
#: Batches of a supplier on their way to the broker at once.
WINDOW = 4
_LINGER = 0.005  # a sync generator's values wait at most this long to join a batch


class BatchingSender:
    """Sends values as they come, without waiting for the confirmation of what went before:
    up to ``window`` batches are on their way at once (handed over in the order they were
    made), and a producer that outruns the broker waits (back-pressure).

    Waiting for one batch's confirmation before handing over the next kept a value made
    during that wait back for a whole broker round trip (RabbitMQ confirms a persistent
    message after its disk write): at 1,000 values a second that doubled the time from
    supplier to consumer."""

    def __init__(self, output: Output, max_batch: int = MAX_BATCH, window: int = WINDOW) -> None:
        self._output = output
        self._max = max_batch
        self._window = window
        self._buffer: list[Message[bytes]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        #: Set once the batch handed over last is with the client: the next one waits for it.
        self._handed: asyncio.Future[None] | None = None
        self.lost = 0
        #: Values that could not be made into messages (encoding, partition key).
        self.unsendable = 0

    async def add(self, values: list[Any]) -> None:
        """Queue values for sending; wait while too many are unconfirmed. A value that
        cannot be made into a message is logged and skipped; the others go on."""
        message = self._output.message
        try:
            made = [message(value) for value in values]
        except Exception:
            # One by one, so that only the values that cannot be sent are left out.
            made = []
            for value in values:
                try:
                    made.append(message(value))
                except Exception as exc:
                    self.unsendable += 1
                    _log_given_up(self._output.binding, "cannot be sent", exc, 1)
        self._buffer.extend(made)
        self._pump()
        while len(self._buffer) >= self._max and self._flushes:
            await asyncio.wait(set(self._flushes), return_when=asyncio.FIRST_COMPLETED)
            self._pump()

    async def drain(self) -> None:
        """Wait until everything added has been confirmed (or reported lost). Cancelled
        (the app stops and its grace ran out: a broker that never confirms, a memory
        group nobody reads), it gives up what is unconfirmed, counted and logged."""
        try:
            self._pump()
            while self._flushes:
                await asyncio.wait(set(self._flushes))
                self._pump()
        except asyncio.CancelledError:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Give up what is not confirmed yet (the supplier was cancelled)."""
        flushes, self._flushes = self._flushes, set()
        for flush in flushes:
            flush.cancel()
        left, self._buffer = len(self._buffer), []
        if flushes or left:
            self.lost += left
            self._output.lost += left
            log.warning(
                "binding %s: stopped before the broker confirmed the last values sent "
                "(%d not yet handed over are dropped)",
                self._output.binding,
                left,
            )

    def _pump(self) -> None:
        """Start a flush for each batch the buffer holds, while the window has room."""
        loop = asyncio.get_running_loop()
        while self._buffer and len(self._flushes) < self._window:
            batch, self._buffer = self._buffer[: self._max], self._buffer[self._max :]
            after, self._handed = self._handed, loop.create_future()
            flush = loop.create_task(self._flush(batch, after, self._handed))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushed)

    def _flushed(self, flush: asyncio.Task[None]) -> None:
        # What waited for room goes now, not when the supplier next makes a value.
        self._flushes.discard(flush)
        if not flush.cancelled():
            self._pump()

    async def _flush(
        self,
        batch: list[Message[bytes]],
        after: asyncio.Future[None] | None,
        handed: asyncio.Future[None],
    ) -> None:
        # Never raises: a supplier must outlive a batch the broker would not take. A batch
        # sent again after a refusal may reach the broker after batches made later.
        try:
            if after is not None:
                await asyncio.shield(after)
            for attempt in range(1, 6):
                try:
                    box = await self._output.hand_over(batch)
                    if not handed.done():
                        handed.set_result(None)
                    await self._output.confirmed(box)
                    break
                except DeliveryError as exc:
                    if attempt == 5:
                        self._lose(batch, exc)
                    else:
                        await asyncio.sleep(0.1 * 2**attempt)
                except Exception as exc:  # a closed producer: trying again cannot help
                    self._lose(batch, exc)
                    break
        finally:
            if not handed.done():
                handed.set_result(None)

    def _lose(self, batch: list[Message[bytes]], exc: Exception) -> None:
        self.lost += len(batch)
        self._output.lost += len(batch)
        log.error(
            "binding %s: %d messages could not be delivered: %s: %s",
            self._output.binding,
            len(batch),
            type(exc).__name__,
            exc,
        )


def _log_given_up(binding: str, what: str, exc: BaseException, attempts: int) -> None:
    """One ERROR line per value given up: the binding and the exception type; the text,
    which may quote the value, at DEBUG (a ConversionError's text never does)."""
    reason = (
        f"{type(exc).__name__}: {exc}" if isinstance(exc, ConversionError) else (type(exc).__name__)
    )
    log.error(
        "binding %s: a supplied value %s after %d attempt%s (%s); the supplier goes on",
        binding,
        what,
        attempts,
        "" if attempts == 1 else "s",
        reason,
    )
    log.debug("binding %s: the value failed with %r", binding, exc, exc_info=exc)


class SupplierRunner:
    """Runs one supplier definition until it is exhausted or the app stops."""

    def __init__(
        self,
        definition: Definition,
        output: Output,
        poller: PollerProperties,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.definition = definition
        self._output = output
        self._poller = poller
        self._policy = policy or SUPPLIER_RETRY
        self._stopping = asyncio.Event()
        self._sender = BatchingSender(output)
        first = definition.first
        rest = (
            Definition(definition.name, definition.parts[1:]) if len(definition.parts) > 1 else None
        )
        self._rest = compose(rest, blocking=False) if rest is not None else None
        self._first = first
        #: Values given up: the composed functions kept failing on them.
        self.failed = 0

    def stop(self) -> None:
        """Ask the supplier to stop after the value it is producing."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether stop was asked."""
        return self._stopping.is_set()

    async def run(self) -> None:
        """Produce until exhausted or stopped, then wait for confirmations (unless
        cancelled: then what is unconfirmed is given up, counted and logged)."""
        cancelled = False
        try:
            first = self._first
            if first.is_generator:
                await self._from_generator()
            elif first.is_async_generator:
                await self._from_async_generator()
            else:
                await self._polled()
        except Exception as exc:
            # Only a generator gets here: it cannot be resumed once it raised.
            log.error(
                "supplier %s (binding %s) ended: its generator raised %s; what it made "
                "before is sent",
                self.definition.name,
                self._output.binding,
                type(exc).__name__,
            )
            log.debug("supplier %s raised %r", self.definition.name, exc, exc_info=exc)
        except asyncio.CancelledError:
            cancelled = True
            self._sender.abandon()
            raise
        finally:
            if not cancelled:
                await self._sender.drain()

    async def _through(self, value: Any) -> list[Any]:
        """What the functions composed after the supplier make of ``value``: retried with
        the supplier policy, then given up (``[]``) and logged."""
        assert self._rest is not None
        attempt = 1
        while True:
            try:
                return await self._rest(value)
            except Exception as exc:
                if not self._policy.should_retry(exc, attempt) or await self._wait(
                    self._policy.delay(attempt)
                ):
                    self.failed += 1
                    _log_given_up(self._output.binding, "was given up", exc, attempt)
                    return []
                attempt += 1

    async def _emit(self, value: Any) -> None:
        if value is None:
            return
        values = [value] if self._rest is None else await self._through(value)
        if values:
            await self._sender.add(values)

    async def _from_generator(self) -> None:
        started = time.monotonic()
        generator = self._first.fn()
        rest, chunk = self._rest, []
        try:
            # A sync generator never yields to the loop by itself: what it makes is handed
            # on in chunks, at MAX_BATCH values or _LINGER seconds, which is also when the
            # loop lets others run (and a stop is noticed). No coroutine per value.
            for made, value in enumerate(generator, start=1):
                if value is not None:
                    if rest is None:
                        chunk.append(value)
                    else:
                        chunk.extend(await self._through(value))
                # The clock is read every 16 values: a value takes microseconds at least.
                if len(chunk) >= MAX_BATCH or (
                    not made & 15 and time.monotonic() - started > _LINGER
                ):
                    if chunk:
                        ready, chunk = chunk, []
                        await self._sender.add(ready)
                    await asyncio.sleep(0)
                    started = time.monotonic()
                    if self.stopping:
                        break
        finally:
            generator.close()  # its finally blocks run now, not at garbage collection
            if chunk:  # what was made before the end (or an error) is sent all the same
                await self._sender.add(chunk)

    async def _from_async_generator(self) -> None:
        agen = self._first.fn()
        try:
            async for value in agen:
                await self._emit(value)
                if self.stopping:
                    break
        finally:
            await agen.aclose()

    async def _polled(self) -> None:
        fn, is_async = self._first.fn, self._first.is_async
        delay = self._poller.fixed_delay / 1000
        if await self._wait(self._poller.initial_delay / 1000):
            return
        while not self.stopping:
            for _ in range(self._poller.max_messages_per_poll):
                try:
                    value = await fn() if is_async else fn()
                except Exception as exc:
                    # Tolerated: polled again after the delay.
                    log.error(
                        "supplier %s (binding %s) raised %s; polling again in %.3fs",
                        self.definition.name,
                        self._output.binding,
                        type(exc).__name__,
                        delay,
                    )
                    log.debug("supplier %s raised %r", self.definition.name, exc, exc_info=exc)
                    break
                await self._emit(value)
            if await self._wait(delay):
                return

    async def _wait(self, seconds: float) -> bool:
        """Sleep, waking early on stop; True when stopping."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return self.stopping
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
