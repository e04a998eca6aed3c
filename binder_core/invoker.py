"""The core's side of a consumer binding: convert, run the function with retries, send
the outputs, and tell the binder per message whether it succeeded.

One mechanism for every shape of function: single messages, batch mode and stream
(async-generator) functions all retry with the same policy and hand the same per-message
outcomes to the binder, which dead-letters the failures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from binder_core.conversion import Decoder, decoder_for, media_type
from binder_core.errors import DeliveryError
from binder_core.functions import Definition, FunctionInfo
from binder_core.message import CONTENT_TYPE, Message
from binder_core.output import Output
from binder_core.retry import RetryPolicy
from binder_core.spi import PROCESSED, Converter, Handle, Outcome, Stage

log = logging.getLogger(__name__)

Apply = Callable[[Any], Awaitable[list[Any]]]


#: Distinct ``contentType`` header values whose decoder is remembered per binding.
_DECODER_CACHE = 64

#: Inputs processed between two hand-overs of their outputs to a staging producer that
#: gives no hint of its own.
_SLICE = 16


def argument_maker(
    info: FunctionInfo, content_type: str, converters: dict[str, Converter]
) -> Callable[[Message[bytes]], Any]:
    """Message -> the argument the function declares. A message's own ``contentType``
    header wins over the binding's, as in Spring.

    The decoder is looked up by the header's exact value in a small per-binding table, so a
    stream whose messages all carry the same header parses it once, not once per message.
    """
    default = decoder_for(info.input_type, content_type, converters)
    default_mt = media_type(content_type)
    by_header: dict[Any, Decoder] = {}

    def resolve(ct: Any) -> Decoder:
        mt = media_type(ct)
        if mt == default_mt or (mt not in converters and not mt.endswith("+json")):
            found = default
        else:
            found = decoder_for(info.input_type, mt, converters)
        try:
            if len(by_header) < _DECODER_CACHE:
                by_header[ct] = found
        except TypeError:  # an unhashable header value: decided afresh each time
            pass
        return found

    def decoder(msg: Message[bytes]) -> Decoder:
        ct = msg.headers.get(CONTENT_TYPE)
        if ct is None:
            return default
        try:
            found = by_header.get(ct)
        except TypeError:
            found = None
        return found if found is not None else resolve(ct)

    if info.wants_message:
        return lambda msg: Message(decoder(msg)(msg.payload), msg.headers, msg.key, msg.partition)

    def argument(msg: Message[bytes]) -> Any:
        ct = msg.headers.get(CONTENT_TYPE)
        if ct is None:
            return default(msg.payload)
        try:
            found = by_header.get(ct)
        except TypeError:
            found = None
        return (found if found is not None else resolve(ct))(msg.payload)

    return argument


def _call_sync(part: FunctionInfo, value: Any, out: list[Any]) -> None:
    result = part.fn(value)
    if part.is_generator:
        out.extend(v for v in result if v is not None)
    elif result is not None:
        out.append(result)


async def _call(part: FunctionInfo, value: Any, out: list[Any]) -> None:
    if part.is_async:
        result = await part.fn(value)
        if result is not None:
            out.append(result)
    elif part.is_async_generator:
        async for v in part.fn(value):
            if v is not None:
                out.append(v)
    else:
        _call_sync(part, value, out)


def _chain(parts: tuple[FunctionInfo, ...]) -> Callable[[Any], list[Any]]:
    """``value -> outputs`` through synchronous functions, on the calling thread."""

    def run_sync(value: Any) -> list[Any]:
        values = [value]
        for part in parts:
            nxt: list[Any] = []
            for v in values:
                _call_sync(part, v, nxt)
            values = nxt
            if not values:
                break
        return values

    return run_sync


def _all_sync(definition: Definition) -> bool:
    return all(not (p.is_async or p.is_async_generator) for p in definition.parts)


def compose(definition: Definition, blocking: bool) -> Apply:
    """``value -> outputs`` through every function of a composition. ``None`` ends the
    chain for that value (a filter); a generator fans out."""
    parts = definition.parts
    all_sync = _all_sync(definition)
    run_sync = _chain(parts)

    if all_sync and blocking:

        async def in_thread(value: Any) -> list[Any]:
            return await asyncio.to_thread(run_sync, value)

        return in_thread
    if all_sync:

        async def on_loop(value: Any) -> list[Any]:
            return run_sync(value)

        return on_loop

    async def run_async(value: Any) -> list[Any]:
        values = [value]
        for part in parts:
            nxt: list[Any] = []
            for v in values:
                if blocking and not (part.is_async or part.is_async_generator):
                    await asyncio.to_thread(_call_sync, part, v, nxt)
                else:
                    await _call(part, v, nxt)
            values = nxt
            if not values:
                break
        return values

    return run_async


def compose_sync(definition: Definition, blocking: bool) -> Callable[[Any], list[Any]] | None:
    """What ``compose`` builds, without the coroutine, when every part is a plain function
    run on the loop: the hot path then calls it directly instead of creating and awaiting
    a coroutine per message. None when some part must be awaited or sent to a thread."""
    if blocking or not _all_sync(definition):
        return None
    return _chain(definition.parts)


def single_function(definition: Definition, blocking: bool) -> Callable[[Any], Any] | None:
    """The user function itself, when the definition is one plain ``def`` returning one
    value (the common case): no composition machinery is needed per message."""
    if blocking or len(definition.parts) != 1:
        return None
    part = definition.parts[0]
    if part.is_async or part.is_generator or part.is_async_generator or part.reactive:
        return None
    return part.fn


class Invoker:
    """Builds the ``Handle`` a binder calls for one consumer binding."""

    def __init__(
        self,
        binding: str,
        definition: Definition,
        content_type: str,
        converters: dict[str, Converter],
        policy: RetryPolicy,
        output: Output | None,
        blocking: bool = False,
        batch: bool = False,
    ) -> None:
        self.binding = binding
        self.definition = definition
        self.policy = policy
        self.output = output
        self._arg = argument_maker(definition.first, content_type, converters)
        self._apply = compose(definition, blocking)
        self._run_sync = compose_sync(definition, blocking)
        self._single = single_function(definition, blocking)
        self._batch = batch or definition.first.batch
        self._stream = (
            StreamDriver(definition.first, blocking) if definition.first.reactive else None
        )

    @property
    def handle(self) -> Handle:
        """The callable handed to the binder."""
        if self._stream is not None:
            return self._handle_stream
        return self._handle_batch if self._batch else self._handle

    async def close(self) -> None:
        """End a stream function's input, sending what it yields while finishing."""
        if self._stream is not None:
            produced = await self._stream.close()
            if produced and self.output is not None:
                await self.output.send([self.output.message(v) for v in produced])

    async def _handle(self, batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        # The hot path: one pass over the batch with everything bound to locals, the user
        # function called directly when it is a plain ``def``; only a failure leaves it for
        # the retry loop. Outputs are sent together, once, after the whole batch.
        outcomes: list[Outcome] = []
        pending: list[Message[bytes]] = []
        spans: list[int] = []  # end index in pending of each message's outputs
        to_wire = self.output.message if self.output is not None else None
        arg, single, run_sync = self._arg, self._single, self._run_sync
        add_outcome, add_span, add_output = outcomes.append, spans.append, pending.append
        if single is not None and to_wire is None:
            # A plain consumer: no outputs to track.
            for msg in batch:
                try:
                    single(arg(msg))
                    add_outcome(None)
                except Exception as exc:
                    add_outcome(await self._retry(msg, exc, pending))
            return outcomes
        if self.output is not None and self.output.staging:
            stage = self.output.stage()
            if stage is not None:
                return await self._handle_staged(batch, stage)
        for msg in batch:
            try:
                if single is not None:
                    value = single(arg(msg))
                    if value is not None and to_wire is not None:
                        add_output(to_wire(value))
                else:
                    values = (
                        run_sync(arg(msg)) if run_sync is not None else await self._apply(arg(msg))
                    )
                    if to_wire is not None and values:
                        pending.extend([to_wire(v) for v in values])
                add_outcome(None)
            except Exception as exc:
                add_outcome(await self._retry(msg, exc, pending))
            add_span(len(pending))
        if pending:
            await self._send(pending, spans, outcomes)
        return outcomes

    async def _handle_staged(
        self, batch: Sequence[Message[bytes]], stage: Stage
    ) -> Sequence[Outcome]:
        # ``_handle`` for a producer that takes outputs in slices: the outputs of each
        # slice of inputs are handed over as soon as they are made, so the broker works on
        # them while the next slice is processed. A slice ends where the producer said its
        # current batch would be full (one input to begin with, ``_SLICE`` if it gives no
        # hint), so hand-overs happen about once per broker batch, not per message. The
        # outcomes are returned only after ``confirm``: at-least-once as with ``send``.
        assert self.output is not None
        outcomes: list[Outcome] = []
        pending: list[Message[bytes]] = []
        spans: list[int] = []
        slices: list[tuple[int, int]] = []  # the inputs [lo, hi) of each slice handed over
        refused: set[int] = set()  # slices whose hand-over the producer refused outright
        to_wire = self.output.message
        arg, single, run_sync = self._arg, self._single, self._run_sync
        add_outcome, add_span, add_output = outcomes.append, spans.append, pending.append
        handed, lo, end, step = 0, 0, len(batch), 1
        while lo < end:
            hi = min(end, lo + step)
            for msg in batch[lo:hi]:
                try:
                    if single is not None:
                        value = single(arg(msg))
                        if value is not None:
                            add_output(to_wire(value))
                    else:
                        values = (
                            run_sync(arg(msg))
                            if run_sync is not None
                            else await self._apply(arg(msg))
                        )
                        if values:
                            pending.extend([to_wire(v) for v in values])
                    add_outcome(None)
                except Exception as exc:
                    add_outcome(await self._retry(msg, exc, pending))
                add_span(len(pending))
            if len(pending) > handed:
                slices.append((lo, hi))
                try:
                    step = await stage.add(pending[handed:]) or _SLICE
                except DeliveryError:
                    refused.add(len(slices) - 1)
                handed = len(pending)
            lo = hi
        processed = PROCESSED.get()
        if processed is not None:
            processed()
        confirmed = await stage.confirm()
        retry = [
            i
            for k, (first, stop) in enumerate(slices)
            if k in refused or confirmed[k] is not None
            for i in range(first, stop)
        ]
        if retry:
            log.warning(
                "binding %s: the broker refused outputs; retrying them message by message",
                self.output.binding,
            )
            await self._resend(pending, spans, outcomes, retry)
        return outcomes

    async def _retry(
        self, msg: Message[bytes], exc: Exception, pending: list[Message[bytes]]
    ) -> Outcome:
        """Attempt 1 failed with ``exc``: retry with back-off until it works (its outputs
        join ``pending``) or the policy gives up (the final error is returned)."""
        to_wire = self.output.message if self.output is not None else None
        attempt = 1
        while True:
            if not self.policy.should_retry(exc, attempt):
                self._failed(exc, attempt)
                return exc
            await self._back_off(exc, attempt)
            attempt += 1
            try:
                values = await self._apply(self._arg(msg))
                if to_wire is not None:
                    pending.extend([to_wire(v) for v in values])
                return None
            except Exception as again:
                exc = again

    async def _handle_batch(self, batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        attempt = 1
        while True:
            try:
                values = await self._apply([self._arg(m) for m in batch])
                # A batch function returns one value, a list of values, or None.
                if len(values) == 1 and isinstance(values[0], list):
                    values = values[0]
                if self.output is not None and values:
                    await self.output.send([self.output.message(v) for v in values])
                return [None] * len(batch)
            except DeliveryError as exc:
                self._failed(exc, attempt)
                return [exc] * len(batch)
            except Exception as exc:
                if not self.policy.should_retry(exc, attempt):
                    self._failed(exc, attempt)
                    return [exc] * len(batch)
                await self._back_off(exc, attempt)
                attempt += 1

    async def _handle_stream(self, batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        assert self._stream is not None
        outcomes: list[Outcome] = []
        pending: list[Message[bytes]] = []
        spans: list[int] = []
        for msg in batch:
            attempt = 1
            while True:
                try:
                    values = await self._stream.feed(self._arg(msg))
                    if self.output is not None:
                        pending.extend([self.output.message(v) for v in values])
                    outcomes.append(None)
                    break
                except Exception as exc:
                    if not self.policy.should_retry(exc, attempt):
                        self._failed(exc, attempt)
                        outcomes.append(exc)
                        break
                    await self._back_off(exc, attempt)
                    attempt += 1
            spans.append(len(pending))
        if pending:
            await self._send(pending, spans, outcomes)
        return outcomes

    async def _send(
        self, pending: list[Message[bytes]], spans: list[int], outcomes: list[Outcome]
    ) -> None:
        assert self.output is not None
        processed = PROCESSED.get()
        if processed is not None:
            processed()
        try:
            await self.output.send(pending)
            return
        except DeliveryError as exc:
            log.warning(
                "binding %s: the broker refused outputs (%s); retrying them message by message",
                self.output.binding,
                exc,
            )
        await self._resend(pending, spans, outcomes, range(len(spans)))

    async def _resend(
        self,
        pending: list[Message[bytes]],
        spans: list[int],
        outcomes: list[Outcome],
        inputs: Iterable[int],
    ) -> None:
        """Send the outputs of ``inputs`` again, each input's on its own, to find whose
        the broker refuses: only those inputs fail (and are dead-lettered); the others
        are confirmed and acknowledged."""
        assert self.output is not None
        for i in inputs:
            start, end = spans[i - 1] if i else 0, spans[i]
            if end > start and outcomes[i] is None:
                try:
                    await self.output.send(pending[start:end])
                except DeliveryError as exc:
                    outcomes[i] = exc

    async def _back_off(self, exc: Exception, attempt: int) -> None:
        delay = self.policy.delay(attempt)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "binding %s: attempt %d of %d failed (%s: %s); retrying in %.3fs",
                self.binding,
                attempt,
                self.policy.max_attempts,
                type(exc).__name__,
                exc,
                delay,
            )
        await asyncio.sleep(delay)

    def _failed(self, exc: Exception, attempt: int) -> None:
        log.warning(
            "binding %s: giving up after %d attempt%s: %s: %s",
            self.binding,
            attempt,
            "" if attempt == 1 else "s",
            type(exc).__name__,
            exc,
        )


_END = object()


class _Feed:
    """The ``AsyncIterator`` a stream function reads; it tells the driver each time the
    function asks for the next item, which is how outputs are matched to inputs."""

    def __init__(self, driver: StreamDriver) -> None:
        self._driver = driver

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> Any:
        return await self._driver.next_item()


class StreamDriver:
    """Runs a stream (reactive) function as one long-lived task fed one item at a time.

    An input counts as processed when the function asks for the next one; what it yielded
    in between are that input's outputs. If the function raises, the item fails like any
    other (retry, then dead-letter) and the function is started afresh for the next
    attempt: its state is lost, its input is not.
    """

    def __init__(self, info: FunctionInfo, blocking: bool) -> None:
        self._info = info
        self._task: asyncio.Task[None] | None = None
        self._pulled: asyncio.Future[Any] | None = None  # resolved when the fn asks again
        self._item: asyncio.Future[Any] | None = None  # the item the fn is waiting for
        self._produced: list[Any] = []
        self._lock = asyncio.Lock()

    async def next_item(self) -> Any:
        loop = asyncio.get_running_loop()
        self._item = loop.create_future()
        if self._pulled is not None and not self._pulled.done():
            self._pulled.set_result(None)
        value = await self._item
        if value is _END:
            raise StopAsyncIteration
        return value

    async def _run(self) -> None:
        pulled = self._pulled
        try:
            if self._info.is_async_generator:
                async for value in self._info.fn(_Feed(self)):
                    if value is not None:
                        self._produced.append(value)
            else:
                await self._info.fn(_Feed(self))
        except BaseException as exc:
            current = self._pulled
            if current is not None and not current.done():
                current.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            current = self._pulled
            if current is not None and not current.done():
                current.set_result(_END)
        del pulled

    async def _ensure_started(self) -> None:
        if self._task is not None and not self._task.done():
            return
        loop = asyncio.get_running_loop()
        self._pulled = loop.create_future()
        self._item = None
        self._task = loop.create_task(self._run(), name=f"stream:{self._info.name}")
        await self._pulled  # runs the function up to its first read

    async def feed(self, value: Any) -> list[Any]:
        """Give the function one item; return what it yielded before asking for more."""
        async with self._lock:
            await self._ensure_started()
            loop = asyncio.get_running_loop()
            self._pulled = loop.create_future()
            assert self._item is not None
            self._item.set_result(value)
            try:
                await self._pulled
            finally:
                produced, self._produced = self._produced, []
            return produced

    async def close(self) -> list[Any]:
        """End the input; return what the function yields while it finishes."""
        async with self._lock:
            if self._task is None or self._task.done():
                return []
            loop = asyncio.get_running_loop()
            self._pulled = loop.create_future()
            if self._item is not None and not self._item.done():
                self._item.set_result(_END)
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except Exception as exc:
                log.warning("stream function %s did not finish cleanly: %s", self._info.name, exc)
            produced, self._produced = self._produced, []
            return produced
