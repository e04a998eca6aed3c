"""The core's processing of one consumer batch: convert each message, run the function with
one retry policy, hand the outputs to the output's outbox, and work out per message whether
it succeeded once the broker confirmed (or refused) the outputs.

Two steps, so the consumer loop can overlap them: ``process`` runs the function over the
batch and hands the outputs over (in slices, as the outbox asks, so the broker's round trips
overlap the processing); ``finish`` waits for the confirmations and returns the outcomes.
Single messages, batch mode and stream (async-generator) functions all go through the same
retry loop and produce the same per-message outcomes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import functools
import logging
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from binder_core.arguments import argument_maker
from binder_core.calls import compose, compose_sync, single_function
from binder_core.errors import ConversionError, DeliveryError
from binder_core.failures import ErrorHandler, FailedMessage
from binder_core.functions import Definition
from binder_core.message import Message
from binder_core.output import Output
from binder_core.retry import RetryPolicy
from binder_core.spi import Batch, Converter, Outbox, Outcome
from binder_core.state import Store
from binder_core.streams import StreamDriver
from binder_core.tracing import Tracing

log = logging.getLogger(__name__)

#: Where a path that may trace runs untraced.
_UNTRACED = contextlib.nullcontext(None)

#: Inputs processed between two hand-overs when the outbox gives no hint of its own.
_SLICE = 16


@dataclass(slots=True)
class Work:
    """One batch between ``process`` and ``finish``."""

    batch: Batch
    outcomes: list[Outcome]
    transaction: Any = None
    #: Every output of the batch, in input order, and the end index of each input's share.
    outputs: list[Message[bytes]] = field(default_factory=list)
    spans: list[int] = field(default_factory=list)
    outbox: Outbox | None = None
    #: The output binding the outputs went to.
    output: Output | None = None
    #: Batch mode: the outputs belong to every input of the batch alike.
    shared: bool = False
    #: A function with several outputs: one lane per output binding.
    lanes: list[Lane] | None = None
    #: Each store's changes made by this batch (applied once it is acknowledged).
    state: list[tuple[Store[Any], dict[str, Any]]] | None = None


@dataclass(slots=True)
class Lane:
    """The outputs of one batch for one output binding of a multi-output function."""

    output: Output
    outbox: Outbox
    to_wire: Callable[[Any], Message[bytes]]
    messages: list[Message[bytes]] = field(default_factory=list)
    spans: list[int] = field(default_factory=list)


class Pipeline:
    """Processes the batches of one consumer binding."""

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
        more_outputs: Sequence[Output] = (),
        input_index: int = 0,
        stream: StreamDriver | None = None,
        native_decoding: bool = False,
        ignore_headers: bool = False,
    ) -> None:
        self.binding = binding
        self.definition = definition
        self.policy = policy
        self.output = output
        first = definition.first
        if input_index or first.inputs > 1:
            # One input of a stream function over several: this input's item type.
            item = first.input_types[input_index]
            wants_message = typing.get_origin(item) is Message or item is Message
            if wants_message:
                item = (typing.get_args(item) or (Any,))[0]
            first = dataclasses.replace(first, input_type=item, wants_message=wants_message)
        self._arg = _spring_modes(
            argument_maker(first, content_type, converters),
            first.wants_message,
            native_decoding,
            ignore_headers,
        )
        self._apply = compose(definition, blocking)
        self._run_sync = compose_sync(definition, blocking)
        self._single = single_function(definition, blocking)
        self._batch = batch or definition.first.batch
        self._input = input_index
        self._stream = stream or (
            StreamDriver(definition.first, blocking) if definition.first.reactive else None
        )
        #: Every output binding, by index, when the function has several (else empty).
        self.lanes: list[Output] = (
            [output, *more_outputs] if output is not None and more_outputs else []
        )
        #: Attempts after a first one failed, for metrics.
        self.retries = 0
        #: The app's error handler for this binding (``error-handler-definition``).
        self.error_handler: ErrorHandler | None = None
        #: Stores the function keeps (``use_state``), and their changelogs' outputs.
        self._stores: list[Store[Any]] = []
        self._changelogs: dict[str, Output] = {}
        #: Spans for this binding's messages, when the app traces (``use_tracing``).
        self.tracing: Tracing | None = None
        #: A returned value -> the message to send (and, when tracing, its publish span).
        self._to_wire: Callable[[Any], Message[bytes]] | None = (
            output.message if output is not None else None
        )

    def use_state(self, stores: list[Store[Any]], changelogs: dict[str, Output]) -> None:
        """The function keeps ``stores`` (changes confirmed with the batch on ``changelogs``,
        by store name, when the binder makes state durable)."""
        self._stores = stores
        self._changelogs = changelogs

    def settled(self, work: Work) -> None:
        """The batch was acknowledged: its state changes are the state now."""
        if work.state:
            for store, changes in work.state:
                store.settle(changes)

    def given_back(self) -> None:
        """The consumer task running gave its unacknowledged batches back (or aborted their
        transaction): what they wrote to the stores is forgotten; they are processed again."""
        for store in self._stores:
            store.forget()

    def read_with(self, step: Callable[[Message[bytes]], Message[bytes]]) -> None:
        """Run ``step`` on each received message before its conversion (CloudEvents: the
        event's data and attributes); what ``step`` raises is a conversion failure."""
        convert = self._arg

        def argument(msg: Message[bytes]) -> Any:
            return convert(step(msg))

        self._arg = argument

    @property
    def streaming(self) -> bool:
        """Whether the function is a stream function (it holds an item between reads)."""
        return self._stream is not None

    def use_tracing(self, tracing: Tracing) -> None:
        """Trace this binding: a process span per message, outputs carrying its context."""
        self.tracing = tracing
        if self.output is not None:
            self._to_wire = _wire(self.output, traced=True)

    async def close(self) -> None:
        """End a stream function's input, sending what it yields while finishing."""
        if self._stream is not None and self._input == 0:
            produced = await self._stream.close()
            if produced and self.lanes:
                for lane, values in zip(self.lanes, _split(produced, len(self.lanes)), strict=True):
                    if values:
                        await lane.send([lane.message(v) for v in values])
            elif produced and self.output is not None:
                await self.output.send([self.output.message(v) for v in produced])

    # -- the two steps -----------------------------------------------------------------

    async def process(self, batch: Batch, transaction: Any = None) -> Work:
        """Run the function over ``batch`` and hand its outputs over."""
        unreadable = batch.unreadable
        if unreadable:
            return await self._with_unreadable(batch, unreadable, transaction)
        if self._stores:
            return await self._each_stateful(batch, transaction)
        if self.lanes:
            return await self._each_lanes(batch, transaction)
        if self.tracing is not None:
            return await self._traced(batch, transaction)
        if self._stream is not None:
            return await self._each(batch, transaction, self._feed_stream)
        if self._batch:
            return await self._whole(batch, transaction)
        return await self._each(batch, transaction, None)

    async def finish(self, work: Work) -> list[Outcome]:
        """Wait for the outputs' confirmations; return one outcome per input message
        (after the error handler, when there is one, took the failures)."""
        outcomes = await self._confirmed(work)
        handler = self.error_handler
        if handler is not None and outcomes.count(None) != len(outcomes):
            messages = work.batch.messages
            for i, outcome in enumerate(outcomes):
                if outcome is None:
                    continue
                failed = FailedMessage(messages[i], outcome, self.binding)
                if await handler.handle(failed) and not handler.then_dead_letter:
                    outcomes[i] = None
        return outcomes

    async def _confirmed(self, work: Work) -> list[Outcome]:
        outcomes = await self._outputs_confirmed(work)
        if work.state:
            await self._write_changelogs(work)
        return outcomes

    async def _write_changelogs(self, work: Work) -> None:
        """The batch's state changes go to the stores' changelogs once its outputs are
        confirmed: a changelog never holds a change whose outputs could still be lost (an
        instance killed in between restores the state from before the batch, and the
        batch, not committed, is processed again)."""
        assert work.state is not None
        boxes: list[Outbox] = []
        for store, changes in work.state:
            changelog = self._changelogs.get(store.name)
            if changelog is None:
                continue
            box = changelog.outbox(work.transaction)
            await box.add(
                [
                    Message(
                        # No payload: a tombstone (compaction removes the key).
                        None if value is None else store.encode(value),  # type: ignore[arg-type]
                        {},
                        key.encode("utf-8"),
                        partition,
                    )
                    for partition, key, value in Store.changes(changes)
                ]
            )
            boxes.append(box)
        for box in boxes:
            results = await box.confirm()
            refused = next((r for r in results if r is not None), None)
            if refused is not None:
                # State that cannot be made durable: the batch is delivered again.
                raise DeliveryError(f"a store's changelog refused a change: {refused}")

    async def _outputs_confirmed(self, work: Work) -> list[Outcome]:
        if work.lanes:
            for lane in work.lanes:
                await self._confirm_lane(work, lane)
            return work.outcomes
        outbox = work.outbox
        if outbox is None or not work.outputs:
            return work.outcomes
        results = await outbox.confirm()
        if results.count(None) == len(results):
            return work.outcomes
        failed = [j for j, r in enumerate(results) if r is not None]
        if work.shared:
            # Batch mode: the outputs are the whole batch's; the batch fails as one.
            error = _delivery_error(results[failed[0]])
            return [error if o is None else o for o in work.outcomes]
        await self._find_refused(work, failed, results)
        return work.outcomes

    # -- shapes of functions -----------------------------------------------------------

    async def _each(
        self,
        batch: Batch,
        transaction: Any,
        feed: Callable[[Any], Awaitable[list[Any]]] | None,
    ) -> Work:
        # The hot path: one pass over the batch with everything bound to locals, the user
        # function called directly when it is a plain ``def``; only a failure leaves it
        # for the retry loop. Outputs go to the outbox in slices: one input at first, then
        # as many as the outbox says fill its next broker batch (or all the rest at once).
        messages = batch.messages
        outcomes: list[Outcome] = []
        work = Work(batch, outcomes, transaction)
        output = self.output
        arg, single, run_sync, apply = self._arg, self._single, self._run_sync, self._apply
        add_outcome = outcomes.append
        if feed is not None:
            single = run_sync = None
            apply = feed
        if output is None:
            for msg in messages:
                try:
                    if single is not None:
                        single(arg(msg))
                    elif run_sync is not None:
                        run_sync(arg(msg))
                    else:
                        await apply(arg(msg))
                    add_outcome(None)
                except Exception as exc:
                    add_outcome(await self._retry(msg, exc, None, apply))
            return work
        to_wire = self._to_wire
        assert to_wire is not None
        pending, spans = work.outputs, work.spans
        add_span, add_output = spans.append, pending.append
        outbox = work.outbox = output.outbox(transaction)
        work.output = output
        handed, lo, end, step = 0, 0, len(messages), 1
        while lo < end:
            hi = min(end, lo + step)
            for msg in messages[lo:hi] if lo or hi < end else messages:
                try:
                    if single is not None:
                        value = single(arg(msg))
                        if value is not None:
                            add_output(to_wire(value))
                    else:
                        values = (
                            run_sync(arg(msg)) if run_sync is not None else await apply(arg(msg))
                        )
                        if values:
                            pending.extend([to_wire(v) for v in values])
                    add_outcome(None)
                except Exception as exc:
                    add_outcome(await self._retry(msg, exc, pending, apply))
                add_span(len(pending))
            if len(pending) > handed:
                hint = await outbox.add(pending[handed:] if handed else pending)
                handed = len(pending)
                step = end if hint is None else max(1, hint)
            lo = hi
        return work

    async def _traced(self, batch: Batch, transaction: Any) -> Work:
        """``process`` with spans: one for the batch, one per message (child of the span
        that published it), and a publish span per output, whose context it carries."""
        tracing = self.tracing
        assert tracing is not None
        messages = batch.messages
        with tracing.receive(len(messages)) as receive:
            if self._batch and self._stream is None:
                with tracing.process(messages, receive) as span:
                    work = await self._whole(batch, transaction)
                    failure = next((o for o in work.outcomes if o is not None), None)
                    if failure is not None:
                        tracing.failed(span, failure)
                return work
            outcomes: list[Outcome] = []
            work = Work(batch, outcomes, transaction)
            output, to_wire, arg = self.output, self._to_wire, self._arg
            apply = self._feed_stream if self._stream is not None else self._apply
            pending, spans = work.outputs, work.spans
            for msg in messages:
                with tracing.process((msg,), receive) as span:
                    try:
                        values = await apply(arg(msg))
                        if to_wire is not None and values:
                            pending.extend([to_wire(v) for v in values])
                        outcome: Outcome = None
                    except Exception as exc:
                        outcome = await self._retry(
                            msg, exc, pending if to_wire is not None else None, apply
                        )
                    if outcome is not None:
                        tracing.failed(span, outcome)
                outcomes.append(outcome)
                spans.append(len(pending))
            if output is not None:
                await _hand_over(work, output, pending, transaction)
            return work

    async def _each_stateful(self, batch: Batch, transaction: Any) -> Work:
        """A function that keeps state: a message's store changes are kept when it is
        processed and forgotten when an attempt fails; the batch's changes go to the
        changelogs once its outputs are confirmed, and become the state once the batch is
        acknowledged."""
        stores = self._stores
        layers = [store.begin() for store in stores]
        outcomes: list[Outcome] = []
        work = Work(batch, outcomes, transaction)
        to_wire, arg, apply = self._to_wire, self._arg, self._apply
        pending, spans = work.outputs, work.spans

        async def attempt(msg: Message[bytes]) -> list[Any]:
            for layer in layers:
                layer.message = {}  # a fresh attempt starts from the state
            values = await apply(arg(msg))
            return [to_wire(v) for v in values] if to_wire is not None else []

        tracing = self.tracing
        try:
            with tracing.receive(len(batch.messages)) if tracing else _UNTRACED as receive:
                for msg in batch.messages:
                    for layer in layers:
                        layer.partition = msg.partition or 0
                    outcome: Outcome = None
                    with tracing.process((msg,), receive) if tracing else _UNTRACED as span:
                        try:
                            made = await attempt(msg)
                        except Exception as exc:
                            result = await self._attempts(exc, functools.partial(attempt, msg))
                            made = [] if isinstance(result, Exception) else result
                            if isinstance(result, Exception):
                                outcome = result
                                if tracing:
                                    tracing.failed(span, outcome)
                    for layer in layers:
                        Store.message_done(layer, outcome is None)
                    pending.extend(made)
                    outcomes.append(outcome)
                    spans.append(len(pending))
        finally:
            changed = [(store, store.end()) for store in stores]
        work.state = [(store, changes) for store, changes in changed if changes is not None]
        if self.output is not None:
            await _hand_over(work, self.output, pending, transaction)
        return work

    async def _feed_stream(self, value: Any) -> list[Any]:
        assert self._stream is not None
        return await self._stream.feed(value, self._input)

    async def _each_lanes(self, batch: Batch, transaction: Any) -> Work:
        """A function with several outputs: each value it returns is a tuple whose
        positions go to ``fn-out-0``, ``fn-out-1``, ... (``None``: nothing there). One
        outbox per output; an input is processed once every output it made is confirmed."""
        outcomes: list[Outcome] = []
        work = Work(batch, outcomes, transaction)
        traced = self.tracing is not None
        lanes = [Lane(o, o.outbox(transaction), _wire(o, traced)) for o in self.lanes]
        work.lanes = lanes
        arg = self._arg
        apply = self._feed_stream if self._stream is not None else self._apply
        for msg in batch.messages:
            try:
                self._fan(await apply(arg(msg)), lanes)
                outcome: Outcome = None
            except Exception as exc:

                async def again(msg: Message[bytes] = msg) -> list[Any]:
                    return await apply(arg(msg))

                result = await self._attempts(exc, again)
                outcome = result if isinstance(result, Exception) else None
                if outcome is None:
                    try:
                        self._fan(result, lanes)  # type: ignore[arg-type]
                    except Exception as failed:
                        outcome = self._failed(failed, 1)
            outcomes.append(outcome)
            for lane in lanes:
                lane.spans.append(len(lane.messages))
        for lane in lanes:
            if lane.messages:
                await lane.outbox.add(lane.messages)
        return work

    def _fan(self, values: Sequence[Any], lanes: list[Lane]) -> None:
        """Spread returned tuples over the outputs; all or nothing for one input."""
        n = len(lanes)
        made: list[list[Message[bytes]]] = [[] for _ in lanes]
        for value in values:
            if not isinstance(value, tuple) or len(value) != n:
                raise ConversionError(
                    f"a function with {n} outputs returns a tuple of {n} values (None "
                    f"for nothing), not {type(value).__name__}"
                    + (f" of {len(value)}" if isinstance(value, tuple) else "")
                )
            for k, item in enumerate(value):
                if item is not None:
                    made[k].append(lanes[k].to_wire(item))
        for lane, messages in zip(lanes, made, strict=True):
            lane.messages.extend(messages)

    async def _confirm_lane(self, work: Work, lane: Lane) -> None:
        if not lane.messages:
            return
        results = await lane.outbox.confirm()
        lane.output.sent += results.count(None)
        if results.count(None) == len(results):
            return
        failed = [j for j, r in enumerate(results) if r is not None]
        await self._resend_alone(work, lane.output, lane.messages, lane.spans, failed, results)

    async def _whole(self, batch: Batch, transaction: Any) -> Work:
        """Batch mode: the function takes the batch as a list. Messages that cannot be
        converted fail alone (dead-lettered); the function runs on the rest."""
        messages = batch.messages
        outcomes: list[Outcome] = [None] * len(messages)
        work = Work(batch, outcomes, transaction, shared=True)
        values: list[Any] = []
        arg = self._arg
        for i, msg in enumerate(messages):
            try:
                values.append(arg(msg))
            except Exception as exc:
                outcomes[i] = self._failed(_as_conversion_error(exc), 1)
        if not values:
            return work
        apply = self._apply
        try:
            produced = await apply(values)
        except Exception as exc:
            result = await self._attempts(exc, lambda: apply(values))
            if isinstance(result, Exception):
                return Work(
                    batch,
                    [result if o is None else o for o in outcomes],
                    transaction,
                    shared=True,
                )
            produced = result
        # A batch function returns one value, a list of values, or None.
        if len(produced) == 1 and isinstance(produced[0], list):
            produced = produced[0]
        if self.output is not None and produced:
            to_wire = self._to_wire
            assert to_wire is not None
            try:
                work.outputs = [to_wire(v) for v in produced]
            except Exception as exc:
                error = self._failed(exc, 1)
                work.outcomes = [error if o is None else o for o in outcomes]
                return work
            work.outbox = self.output.outbox(transaction)
            work.output = self.output
            await work.outbox.add(work.outputs)
        return work

    async def _with_unreadable(self, batch: Batch, unreadable: Any, transaction: Any) -> Work:
        """A batch holding messages the binder could not read: those fail as conversion
        errors without reaching the function; the others are processed as usual."""
        keep = [i for i in range(len(batch.messages)) if i not in unreadable]
        inner = Batch([batch.messages[i] for i in keep], batch.token)
        work = await self.process(inner, transaction)
        outcomes: list[Outcome] = []
        spans: list[int] = []
        pos = 0
        for i in range(len(batch.messages)):
            if i in unreadable:
                outcomes.append(self._failed(_as_conversion_error(unreadable[i]), 1))
                spans.append(spans[-1] if spans else 0)
            else:
                outcomes.append(work.outcomes[pos])
                if work.spans:
                    spans.append(work.spans[pos])
                pos += 1
        work.batch, work.outcomes = batch, outcomes
        if work.spans:
            work.spans = spans
        return work

    # -- retries and refusals ------------------------------------------------------------

    async def _retry(
        self,
        msg: Message[bytes],
        exc: Exception,
        pending: list[Message[bytes]] | None,
        apply: Callable[[Any], Awaitable[list[Any]]],
    ) -> Outcome:
        """Attempt 1 of one message failed with ``exc``: retry it (its outputs join
        ``pending``) or give up with the final error."""
        arg = self._arg
        to_wire = self._to_wire if pending is not None else None

        async def again() -> list[Any]:
            values = await apply(arg(msg))
            return [to_wire(v) for v in values] if to_wire is not None else values

        result = await self._attempts(exc, again)
        if isinstance(result, Exception):
            return result
        if pending is not None:
            pending.extend(result)
        return None

    async def _attempts(
        self, exc: Exception, again: Callable[[], Awaitable[list[Any]]]
    ) -> list[Any] | Exception:
        """The one retry loop: attempt 1 failed with ``exc``; back off and call ``again``
        until it works or the policy gives up (the final error is returned)."""
        attempt = 1
        while True:
            if not self.policy.should_retry(exc, attempt):
                return self._failed(exc, attempt)
            await self._back_off(exc, attempt)
            attempt += 1
            try:
                return await again()
            except Exception as failed:
                exc = failed

    async def _find_refused(
        self, work: Work, failed: list[int], results: Sequence[Exception | None]
    ) -> None:
        assert self.output is not None
        await self._resend_alone(work, self.output, work.outputs, work.spans, failed, results)

    async def _resend_alone(
        self,
        work: Work,
        output: Output,
        outputs: list[Message[bytes]],
        spans: list[int],
        failed: list[int],
        results: Sequence[Exception | None],
    ) -> None:
        """The broker refused some outputs. A refusal may cover more than the culprit (a
        whole broker batch), so each input with a refused output sends its outputs again on
        its own: only those the broker still refuses fail (and are dead-lettered)."""
        outcomes = work.outcomes
        suspects = sorted({bisect.bisect_right(spans, j) for j in failed})
        log.warning(
            "binding %s: the broker refused outputs of %d input(s) (%s); sending them again "
            "one input at a time",
            output.binding,
            len(suspects),
            type(results[failed[0]]).__name__,
        )
        for i in suspects:
            if outcomes[i] is not None:
                continue
            start, end = spans[i - 1] if i else 0, spans[i]
            box = output.outbox(work.transaction)
            await box.add(outputs[start:end])
            again = await box.confirm()
            refused = next((r for r in again if r is not None), None)
            if refused is not None:
                outcomes[i] = self._failed(_delivery_error(refused), 1)

    async def _back_off(self, exc: Exception, attempt: int) -> None:
        self.retries += 1
        delay = self.policy.delay(attempt)
        log.info(
            "binding %s: attempt %d of %d failed (%s); retrying in %.3fs",
            self.binding,
            attempt,
            self.policy.max_attempts,
            type(exc).__name__,
            delay,
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("binding %s: attempt %d failed with: %s", self.binding, attempt, exc)
        await asyncio.sleep(delay)

    def _failed(self, exc: Exception, attempt: int) -> Exception:
        # The exception's text may quote the payload (a validation error's input): it is
        # logged at DEBUG only; the dead letter carries it, bounded.
        log.warning(
            "binding %s: giving up after %d attempt%s: %s",
            self.binding,
            attempt,
            "" if attempt == 1 else "s",
            type(exc).__name__,
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("binding %s: the last attempt failed with: %s", self.binding, exc)
        return exc


def _as_conversion_error(exc: BaseException) -> Exception:
    if isinstance(exc, ConversionError):
        return exc
    if isinstance(exc, RecursionError):
        return ConversionError("input nested too deeply to convert")
    error = ConversionError(f"cannot convert the message: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _delivery_error(exc: Exception | None) -> Exception:
    if isinstance(exc, DeliveryError):
        return exc
    return DeliveryError(f"the broker refused an output: {type(exc).__name__}: {exc}")


def _wire(output: Output, traced: bool) -> Callable[[Any], Message[bytes]]:
    """A returned value -> the message for ``output`` (with its publish span when traced)."""
    message = output.message
    if not traced:
        return message
    publish = output.publish

    def traced_message(value: Any) -> Message[bytes]:
        return publish(message(value))

    return traced_message


def _split(values: Sequence[Any], n: int) -> list[list[Any]]:
    """Tuples returned by a multi-output function, spread per output (``None``: skipped;
    anything else than an ``n``-tuple is left out with a warning)."""
    out: list[list[Any]] = [[] for _ in range(n)]
    for value in values:
        if not isinstance(value, tuple) or len(value) != n:
            log.warning("a value that is not a tuple of %d was left out", n)
            continue
        for k, item in enumerate(value):
            if item is not None:
                out[k].append(item)
    return out


def _spring_modes(
    convert: Callable[[Message[bytes]], Any],
    wants_message: bool,
    native: bool,
    no_headers: bool,
) -> Callable[[Message[bytes]], Any]:
    """Spring's ``use-native-decoding`` (the function gets the payload as the client
    delivered it: bytes, no conversion) and ``header-mode: none`` (incoming headers are
    not read)."""
    if not native and not no_headers:
        return convert

    def argument(msg: Message[bytes]) -> Any:
        if no_headers:
            msg = Message(msg.payload, {}, msg.key, msg.partition)
        if not native:
            return convert(msg)
        return msg if wants_message else msg.payload

    return argument


async def _hand_over(
    work: Work, output: Output, pending: list[Message[bytes]], transaction: Any
) -> None:
    """A batch's outputs, made all at once, go into an outbox of their own."""
    work.outbox = output.outbox(transaction)
    work.output = output
    if pending:
        await work.outbox.add(pending)
