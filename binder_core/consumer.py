"""The consumer loop, written once for every binder.

Per consumer (``concurrency`` of them per binding), one task drives a binder's ``Source``:
fetch a batch, process it (convert, invoke with retries, hand the outputs over), wait for the
outputs' confirmations, dead-letter the failures and acknowledge, strictly in delivery
order. When the source allows it (``Source.overlap``), the next batch is fetched and
processed while the previous batch's outputs wait for their confirmations.

Nothing here may stop a stream for good. A batch the core cannot finish (an output not
confirmed, a dead letter refused for a reason that may pass) is given back and delivered
again after a back-off; a source that fails under the loop is closed (which gives back
what it held), reported, and opened again with back-off, while readiness says so. Only a
``Permanent`` error (a refused login, a queue declared differently) ends a consumer.

At-least-once comes from the order of the steps: a batch is acknowledged only after every
output was confirmed and every dead letter was confirmed; whatever was fetched and not
acknowledged when the process dies is delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from binder_core.errors import ConversionError
from binder_core.message import Message
from binder_core.output import TRANSACTION
from binder_core.pipeline import Work
from binder_core.spi import (
    Batch,
    BindingState,
    Disconnected,
    Outcome,
    Permanent,
    Source,
    Subscription,
)

log = logging.getLogger(__name__)

#: The core's side of a consumer binding in its simplest form: a batch of messages in, one
#: outcome per message out (``None`` for processed). Tests and the conformance suite drive
#: binders with it.
Handle = Callable[[Sequence[Message[bytes]]], Awaitable[Sequence[Outcome]]]

#: How long a starting binding waits for its consumers' first subscription before it
#: reports them as still trying (readiness stays false until they are in).
START_WAIT = 60.0

#: Seconds to wait for a given-back batch's outputs before the loop goes on without them.
_ABANDON_WAIT = 30.0


def redelivery_delay(failures: int) -> float:
    """Seconds to wait before the next batch after ``failures`` batches in a row could not
    be finished, or before opening a failed consumer again: 0.2 s doubling up to 10 s."""
    return min(0.1 * 2.0 ** min(failures, 7), 10.0)


@runtime_checkable
class Processor(Protocol):
    """What the loop runs over each batch (``binder_core.pipeline.Pipeline``)."""

    async def process(self, batch: Batch, transaction: Any = None) -> Work:
        """Run the function over the batch and hand its outputs over."""

    async def finish(self, work: Work) -> list[Outcome]:
        """Wait for the outputs' confirmations; one outcome per message."""

    def settled(self, work: Work) -> None:
        """The batch was acknowledged (what it wrote to state is the state now)."""

    def given_back(self) -> None:
        """The running consumer task gave back every batch it had not acknowledged, or
        aborted their transaction: they are processed again."""


class HandleProcessor:
    """A ``Processor`` over a plain ``Handle`` (no outputs of its own)."""

    def __init__(self, handle: Handle) -> None:
        self._handle = handle

    async def process(self, batch: Batch, transaction: Any = None) -> Work:
        unreadable = batch.unreadable
        if not unreadable:
            return Work(batch, list(await self._handle(batch.messages)), transaction)
        keep = [i for i in range(len(batch.messages)) if i not in unreadable]
        answers = iter(await self._handle([batch.messages[i] for i in keep]))
        outcomes: list[Outcome] = [
            _unreadable(unreadable[i]) if i in unreadable else next(answers)
            for i in range(len(batch.messages))
        ]
        return Work(batch, outcomes, transaction)

    async def finish(self, work: Work) -> list[Outcome]:
        return work.outcomes

    def settled(self, work: Work) -> None:
        pass

    def given_back(self) -> None:
        pass


def _unreadable(exc: Exception) -> Exception:
    return exc if isinstance(exc, ConversionError) else ConversionError(str(exc))


class ConsumerStatus(enum.StrEnum):
    """Where one consumer of a binding is, as health and readiness report it."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(slots=True)
class Stats:
    """What a binding has done since the process started, counted per batch (never per
    message: this is what metrics and health read)."""

    batches: int = 0
    received: int = 0
    processed: int = 0
    #: Messages whose retries ran out: dead-lettered (or dropped where the binder has no
    #: dead-letter destination configured).
    failed: int = 0
    #: Outputs confirmed by the broker.
    sent: int = 0
    #: Batches given back to the broker to be delivered again.
    redelivered: int = 0
    restarts: int = 0
    #: Seconds spent processing and confirming batches, and when the last one arrived
    #: (the event loop's clock; 0.0 before the first).
    busy_seconds: float = 0.0
    last_received: float = 0.0
    #: Called with each settled batch's duration and size, when metrics are on.
    observe: Callable[[float, int], None] | None = None


class ConsumerBinding:
    """A consumer binding: its consumers' loops, and their control (the SPI ``Binding``)."""

    def __init__(
        self,
        name: str,
        subscription: Subscription,
        processor: Processor,
        concurrency: int = 1,
    ) -> None:
        self.name = name
        self.subscription = subscription
        self.processor = processor
        self.concurrency = max(1, concurrency)
        self.stats = Stats()
        self._state = BindingState.STOPPED
        self._loops: list[_Loop] = []
        self._resumed = asyncio.Event()
        self._halt = asyncio.Event()  # set while stopping: wakes every wait of the loops

    @property
    def state(self) -> BindingState:
        """Where the binding is in its lifecycle."""
        return self._state

    @property
    def stopping(self) -> bool:
        """Whether the binding is stopped or stopping."""
        return self._state is BindingState.STOPPED

    @property
    def paused(self) -> bool:
        """Whether intake is paused."""
        return self._state is BindingState.PAUSED

    @property
    def consumers(self) -> list[ConsumerStatus]:
        """The status of each consumer."""
        return [loop.status for loop in self._loops]

    @property
    def ready(self) -> bool:
        """Whether every consumer is subscribed and running (or the binding is paused)."""
        if self._state is BindingState.STOPPED:
            return False
        return all(s is ConsumerStatus.RUNNING for s in self.consumers)

    async def start(self) -> None:
        """Open the consumers; return once each is subscribed (or, after ``START_WAIT``,
        still trying). Raises when a consumer cannot start for good."""
        if self._state is not BindingState.STOPPED:
            return
        self._state = BindingState.RUNNING
        self._halt.clear()
        self._resumed.set()
        self._loops = [_Loop(self, i) for i in range(self.concurrency)]
        for loop in self._loops:
            loop.start()
        waits = [asyncio.ensure_future(loop.opened.wait()) for loop in self._loops]
        _, pending = await asyncio.wait(waits, timeout=START_WAIT)
        for w in pending:
            w.cancel()
        failed = next((loop.error for loop in self._loops if loop.error is not None), None)
        if failed is not None:
            await self.stop()
            raise failed
        if pending:
            log.warning(
                "binding %s: %d consumer(s) not subscribed after %.0f s; still trying",
                self.name,
                len(pending),
                START_WAIT,
            )

    async def stop(self) -> None:
        """Stop fetching, finish what is in flight (up to the binder's drain timeout),
        acknowledge it, close the consumers."""
        if self._state is BindingState.STOPPED and not self._loops:
            return
        self._state = BindingState.STOPPED
        self._halt.set()
        self._resumed.set()
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.interrupt()
        tasks = [loop.task for loop in loops if loop.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.subscription.drain_timeout)
            if late:
                log.warning(
                    "binding %s: the batch in flight did not finish within %.1f s; stopping "
                    "without acknowledging it (it will be delivered again)",
                    self.name,
                    self.subscription.drain_timeout,
                )
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
        await self.subscription.close()

    async def pause(self) -> None:
        """Stop fetching; the subscription (and a Kafka consumer's partitions) is kept."""
        if self._state is BindingState.RUNNING:
            self._state = BindingState.PAUSED
            self._resumed.clear()
            for loop in self._loops:
                loop.interrupt()

    async def resume(self) -> None:
        """Fetch again from where the binding paused."""
        if self._state is BindingState.PAUSED:
            self._state = BindingState.RUNNING
            self._resumed.set()

    async def wait_resumed(self) -> None:
        """Until ``resume`` or ``stop``."""
        await self._resumed.wait()

    async def sleep(self, seconds: float) -> None:
        """Sleep, waking early when the binding stops. (``asyncio.timeout``: on Python 3.11
        ``wait_for`` can swallow a cancellation that arrives as the wait ends.)"""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._halt.wait()

    @property
    def sources(self) -> list[Source]:
        """The current source of each consumer."""
        return [loop.source for loop in self._loops]

    @property
    def in_flight(self) -> int:
        """Messages fetched and not yet acknowledged."""
        return sum(len(b.messages) for loop in self._loops for b in loop.outstanding)

    @property
    def idle(self) -> bool:
        """Whether no consumer holds a batch (fetched and not yet acknowledged)."""
        return all(not loop.outstanding for loop in self._loops)


class _Loop:
    """One consumer: its source, and the task that drives it."""

    def __init__(self, binding: ConsumerBinding, index: int) -> None:
        self.binding = binding
        self.index = index
        self.label = binding.name if binding.concurrency == 1 else f"{binding.name}#{index}"
        self.source: Source = binding.subscription.source(index)
        self.status = ConsumerStatus.STARTING
        #: Set once the first open succeeded, or failed for good (see ``error``).
        self.opened = asyncio.Event()
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        #: Batches fetched and not yet acknowledged, oldest first, and when each arrived.
        self.outstanding: deque[Batch] = deque()
        self.started: deque[float] = deque()
        self._failures = 0  # batches in a row that could not be finished
        self._fetching = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"consumer:{self.label}"
        )

    def interrupt(self) -> None:
        """Wake a waiting fetch (pause or stop)."""
        with contextlib.suppress(Exception):
            self.source.interrupt()

    # -- supervision ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Keep the consumer running until the binding stops, whatever happens under it."""
        b = self.binding
        restarts = 0
        try:
            while not b.stopping:
                try:
                    await self.source.open()
                except asyncio.CancelledError:
                    raise
                except Permanent as exc:
                    self.error = exc
                    self.status = ConsumerStatus.FAILED
                    log.error("binding %s: cannot consume: %s", self.label, exc)
                    return
                except Exception as exc:
                    restarts += 1
                    await self._reopen(exc, "cannot open its consumer", restarts)
                    continue
                self.status = ConsumerStatus.RUNNING
                self.opened.set()
                if restarts:
                    log.warning("binding %s: consuming again", self.label)
                try:
                    await self._consume()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    restarts += 1
                    await self._reopen(exc, "consumer failed", restarts)
        finally:
            await self._close()
            if self.status is not ConsumerStatus.FAILED:
                self.status = ConsumerStatus.STOPPED
            self.opened.set()

    async def _reopen(self, exc: Exception, what: str, restarts: int) -> None:
        """Report a failed consumer loudly, close it (what it held is delivered again) and
        wait before the supervisor opens a fresh one."""
        b = self.binding
        b.stats.restarts += 1
        self.status = ConsumerStatus.RESTARTING
        delay = redelivery_delay(restarts)
        level = logging.WARNING if isinstance(exc, Disconnected) else logging.ERROR
        log.log(
            level,
            "binding %s: %s (%s: %s); opening it again in %.1f s",
            self.label,
            what,
            type(exc).__name__,
            exc,
            delay,
        )
        await self._close()
        if not b.stopping:
            self.source = b.subscription.source(self.index)
            await b.sleep(delay)

    async def _close(self) -> None:
        if self.outstanding:
            self.binding.processor.given_back()
        self.outstanding.clear()
        self.started.clear()
        try:
            await self.source.close()
        except Exception as exc:
            log.warning("binding %s: consumer did not close cleanly: %s", self.label, exc)

    # -- the loop ------------------------------------------------------------------------

    async def _consume(self) -> None:
        b = self.binding
        source = self.source
        if getattr(source, "transactional", False):
            await self._consume_transactional()
            return
        process = b.processor.process
        overlap = source.overlap
        loop_time = asyncio.get_running_loop().time
        prev: Work | None = None  # processed; its outputs' confirmations are pending
        confirming: asyncio.Future[list[Outcome]] | None = None  # prev's, when awaited already
        try:
            while not b.stopping:
                if b.paused:
                    if prev is not None:
                        await self._finish(prev, confirming)
                        prev = confirming = None
                    await self._hold(source)
                    continue
                batch = await source.fetch(prev is None)
                if batch is None and prev is not None:
                    batch, confirming = await self._next_or_confirmed(source, prev, confirming)
                    if confirming is None:
                        prev = None  # finished (or given back) while waiting for input
                if batch is None:
                    continue
                self.outstanding.append(batch)
                self.started.append(loop_time())
                try:
                    work = await process(batch)
                except Exception as exc:
                    # Nothing of this batch can be finished; the one before it still can.
                    if prev is not None:
                        finished = await self._finish(prev, confirming)
                        prev = confirming = None
                        if not finished:
                            continue  # given back together with this one
                    await self._give_back(exc)
                    continue
                if prev is not None:
                    finished = await self._finish(prev, confirming)
                    prev = confirming = None
                    if not finished:
                        await self._abandon(work)  # given back with the one before it
                        continue
                if overlap:
                    prev = work
                else:
                    await self._finish(work)
                # Let the other consumers on this loop have a turn: a binder whose fetch does
                # not suspend (memory) and a function that never awaits would otherwise keep
                # the loop to themselves.
                await asyncio.sleep(0)
            if prev is not None:
                await self._finish(prev, confirming)  # stopping: the last batch is acknowledged
                prev = confirming = None
        finally:
            if confirming is not None and not confirming.done():
                confirming.cancel()  # the loop failed or was cancelled: given back on close

    async def _next_or_confirmed(
        self, source: Source, prev: Work, confirming: asyncio.Future[list[Outcome]] | None
    ) -> tuple[Batch | None, asyncio.Future[list[Outcome]] | None]:
        """Nothing is buffered while ``prev``'s outputs wait for their confirmations: wait
        for input and for them at once. Waiting for the confirmations first held a message
        arriving meanwhile back by what was left of the broker's round trip (RabbitMQ
        confirms a persistent message after its disk write): at a steady 1,000 messages a
        second, half of them waited so.

        Input first: returns it (``None`` when the fetch was woken or timed out) with the
        confirmations still awaited: ``prev`` is finished after the new batch is
        processed, as when the source had it buffered.
        Confirmations first: ``prev`` is acknowledged at once, while the fetch goes on
        (acknowledging does not touch what is being fetched); returns what the fetch
        brings and ``None``. A batch that must be given back stops the fetch first, so
        that the source is never given back to while it fetches."""
        if confirming is None:
            confirming = asyncio.ensure_future(self.binding.processor.finish(prev))
        fetching = asyncio.ensure_future(source.fetch(True))
        try:
            await asyncio.wait((confirming, fetching), return_when=asyncio.FIRST_COMPLETED)
            if fetching.done():
                return fetching.result(), confirming
            finished = await self._finish(prev, confirming, fetching)
            return (await fetching if finished else None), None
        except BaseException:
            for task in (fetching, confirming):
                if not task.done():
                    task.cancel()
            raise

    async def _hold(self, source: Source) -> None:
        """Paused: nothing is in flight; hand buffered deliveries back and wait."""
        b = self.binding
        await source.pause()
        await b.wait_resumed()
        if not b.stopping:
            await source.resume()

    async def _finish(
        self,
        work: Work,
        confirming: Awaitable[list[Outcome]] | None = None,
        fetching: asyncio.Future[Batch | None] | None = None,
    ) -> bool:
        """Confirm, dead-letter and acknowledge the oldest batch; False when it had to be
        given back (with everything fetched after it). ``confirming``: its confirmations,
        awaited already; ``fetching``: a fetch under way, stopped before a give-back."""
        b = self.binding
        try:
            outcomes = await (b.processor.finish(work) if confirming is None else confirming)
            n = len(outcomes)
            ok = outcomes.count(None)
            failed = [(i, e) for i, e in enumerate(outcomes) if e is not None] if ok != n else []
            await self.source.settle(work.batch, failed)
        except Exception as exc:
            if fetching is not None:
                await self._stop_fetching(fetching)
            await self._give_back(exc)
            return False
        self.outstanding.popleft()
        b.processor.settled(work)
        self._count(work, n, ok, self.started.popleft())
        if self._failures:
            log.info("binding %s: processing again", self.label)
            self._failures = 0
        return True

    async def _stop_fetching(self, fetching: asyncio.Future[Batch | None]) -> None:
        """End a fetch under way (the source hands back what it had not given yet); a batch
        it still brought joins the ones about to be given back."""
        self.source.interrupt()
        try:
            batch = await fetching
        except Exception:
            return  # the source failed: the give-back that follows reports it
        if batch is not None:
            self.outstanding.append(batch)
            self.started.append(asyncio.get_running_loop().time())

    def _count(self, work: Work, n: int, ok: int, started: float) -> None:
        stats = self.binding.stats
        now = asyncio.get_running_loop().time()
        stats.batches += 1
        stats.received += n
        stats.processed += ok
        stats.failed += n - ok
        if work.outputs:
            stats.sent += len(work.outputs)
            if work.output is not None:
                work.output.sent += len(work.outputs)
        stats.busy_seconds += now - started
        stats.last_received = now
        if stats.observe is not None:
            stats.observe(now - started, n)

    async def _give_back(self, exc: Exception) -> None:
        """The oldest batch cannot be finished: give it back with everything fetched after
        it, and wait before fetching again."""
        b = self.binding
        batches = list(self.outstanding)
        self.outstanding.clear()
        self.started.clear()
        b.processor.given_back()
        self._failures += 1
        b.stats.redelivered += len(batches)
        delay = redelivery_delay(self._failures)
        count = sum(len(x.messages) for x in batches)
        log.log(
            logging.WARNING if isinstance(exc, Disconnected) else logging.ERROR,
            "binding %s: batch of %d message%s not processed (%s: %s); delivering it again "
            "in %.1f s",
            self.label,
            count,
            "" if count == 1 else "s",
            type(exc).__name__,
            exc,
            delay,
        )
        await self.source.redeliver(batches)
        await b.sleep(delay)

    async def _abandon(self, work: Work) -> None:
        """A processed batch was given back before it was acknowledged: let its outputs'
        confirmations arrive (they become duplicates, as at-least-once allows), quietly."""
        outbox = work.outbox
        if outbox is not None and work.outputs:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_ABANDON_WAIT):
                    await outbox.confirm()

    # -- transactions --------------------------------------------------------------------

    async def _consume_transactional(self) -> None:
        b = self.binding
        source: Any = self.source
        loop_time = asyncio.get_running_loop().time
        while not b.stopping:
            if b.paused:
                await self._hold(source)
                continue
            batch = await source.fetch(True)
            if batch is None:
                continue
            self.outstanding.append(batch)
            self.started.append(loop_time())
            try:
                outcomes, work = await self._in_transaction(source, batch)
            except Exception as exc:
                await self._give_back(exc)
                continue
            self.outstanding.clear()
            b.processor.settled(work)
            self._count(work, len(outcomes), outcomes.count(None), self.started.popleft())
            self._failures = 0

    async def _in_transaction(self, source: Any, batch: Batch) -> tuple[list[Outcome], Work]:
        """Run the batch in a transaction. If any message failed, nothing its attempts sent
        may become visible: abort, and run the others again in a new transaction; the
        failures are dead-lettered in the one that commits."""
        processor = self.binding.processor
        messages = batch.messages
        todo = list(range(len(messages)))
        dead: dict[int, Exception] = {}
        while True:
            txn = await source.begin()
            token = TRANSACTION.set(txn)
            try:
                if len(todo) == len(messages):
                    part = batch
                else:
                    unreadable = batch.unreadable or {}
                    part = Batch(
                        [messages[i] for i in todo],
                        batch.token,
                        {k: unreadable[i] for k, i in enumerate(todo) if i in unreadable},
                    )
                work = await processor.process(part, txn)
                outcomes = await processor.finish(work)
                failed = {todo[k]: e for k, e in enumerate(outcomes) if e is not None}
                if failed:
                    dead.update(failed)
                    todo = [i for i in todo if i not in failed]
                    await source.abort(txn)
                    processor.given_back()  # its state changes were aborted with it
                    continue
                await source.settle(batch, sorted(dead.items()), txn)
                return [dead.get(i) for i in range(len(messages))], work
            except BaseException:
                with contextlib.suppress(Exception):
                    await source.abort(txn)
                raise
            finally:
                TRANSACTION.reset(token)
