"""Polled consumers (Spring's ``PollableMessageSource``): the app pulls a message when it
wants one, instead of a function being called for each.

``stream.pollable-source: orders`` (several: ``orders;payments``) binds ``orders-in-0``
like any input (destination, group, binder, retries and dead letters from its binding
properties), but nothing consumes it until the app asks::

    source = pollable("orders-in-0")
    handled = await source.poll(handle, Order)   # handle(order) -> acknowledged; raises ->
                                                 # retried, then dead-lettered; False: none
    received = await source.receive(Order, timeout=1.0)
    if received is not None:
        ...
        await received.ack()                     # or: await received.reject(error)

Messages arrive in delivery order; acknowledgements reach the broker in that order too:
a message fetched in the same broker batch as one still undecided is acknowledged when
that one is. Whatever is undecided when the app stops is delivered again.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from binder_core.arguments import argument_maker
from binder_core.errors import BinderException
from binder_core.functions import FunctionInfo, Kind
from binder_core.message import Message
from binder_core.retry import RetryPolicy
from binder_core.spi import Batch, Converter, Source, Subscription


class PollingError(BinderException):
    """A polled source was used in a way it cannot serve."""


class Received:
    """One polled message: its value (converted to the type asked for), the message as
    received, and its acknowledgement."""

    def __init__(self, poller: PolledSource, slot: int, value: Any, message: Message[bytes]):
        self._poller = poller
        self._slot = slot
        self.value = value
        self.message = message
        self.decided = False

    async def ack(self) -> None:
        """Processed: acknowledge (with the rest of its broker batch, in order)."""
        await self._poller.decide(self, None)

    async def reject(self, error: Exception) -> None:
        """Failed for good: dead-letter it with ``error`` as the reason."""
        await self._poller.decide(self, error)


class PolledSource:
    """One pollable input binding."""

    def __init__(
        self,
        binding: str,
        subscription: Subscription,
        content_type: str,
        converters: dict[str, Converter],
        policy: RetryPolicy,
    ) -> None:
        self.binding = binding
        self.subscription = subscription
        self._content_type = content_type
        self._converters = converters
        self._policy = policy
        self._source: Source | None = None
        self._batch: Batch | None = None
        self._next = 0  # the next message of the batch to hand out
        self._outcomes: list[Exception | bool | None] = []  # False: not decided yet
        self._converters_by_type: dict[Any, Callable[[Message[bytes]], Any]] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def _argument(self, wanted: Any) -> Callable[[Message[bytes]], Any]:
        found = self._converters_by_type.get(wanted)
        if found is None:
            message = wanted is Message
            info = FunctionInfo(
                name=self.binding,
                fn=lambda v: v,
                kind=Kind.CONSUMER,
                is_async=False,
                is_generator=False,
                is_async_generator=False,
                reactive=False,
                input_type=Any if message else wanted,
                wants_message=message,
                batch=False,
            )
            found = self._converters_by_type[wanted] = argument_maker(
                info, self._content_type, self._converters
            )
        return found

    async def receive(self, type: Any = bytes, timeout: float = 0.0) -> Received | None:
        """The next message converted to ``type`` (``Message`` for the raw message), or
        ``None`` when none arrives within ``timeout`` seconds. A message that cannot be
        converted is dead-lettered and the next one is tried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        argument = self._argument(type)
        async with self._lock:
            while True:
                if self._closed:
                    raise PollingError(f"binding {self.binding} is closed")
                batch = self._batch
                if batch is None or self._next >= len(batch.messages):
                    if batch is not None and False in self._outcomes:
                        raise PollingError(
                            f"binding {self.binding}: decide (ack or reject) the messages "
                            "already received before receiving more of this broker batch"
                        )
                    batch = await self._fetch(deadline - loop.time())
                    if batch is None:
                        return None
                slot = self._next
                self._next += 1
                message = batch.messages[slot]
                unreadable = (batch.unreadable or {}).get(slot)
                try:
                    if unreadable is not None:
                        raise unreadable
                    value = argument(message)
                except Exception as exc:
                    await self._decide(slot, exc)
                    continue
                return Received(self, slot, value, message)

    async def poll(self, handler: Callable[[Any], Any], type: Any = bytes) -> bool:
        """Take one message, if any is there now, and run ``handler`` on it with the
        binding's retry policy: acknowledged when it returns, dead-lettered when its
        retries run out. False when no message was waiting."""
        received = await self.receive(type)
        if received is None:
            return False
        attempt = 1
        while True:
            try:
                result = handler(received.value)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                if not self._policy.should_retry(exc, attempt):
                    await received.reject(exc)
                    return True
                await asyncio.sleep(self._policy.delay(attempt))
                attempt += 1
                continue
            await received.ack()
            return True

    async def _fetch(self, wait: float) -> Batch | None:
        source = self._source
        if source is None:
            source = self._source = self.subscription.source(0)
            await source.open()
        batch = await source.fetch(False)
        if batch is None and wait > 0:
            try:
                batch = await asyncio.wait_for(self._wait(source), wait)
            except TimeoutError:
                source.interrupt()
                batch = None
        if batch is not None:
            self._batch, self._next = batch, 0
            self._outcomes = [False] * len(batch.messages)
        return batch

    @staticmethod
    async def _wait(source: Source) -> Batch | None:
        while True:
            batch = await source.fetch(True)
            if batch is not None:
                return batch

    async def decide(self, received: Received, outcome: Exception | None) -> None:
        """Record ``received``'s fate; settle its broker batch once every message of it is
        decided."""
        if received.decided:
            raise PollingError(f"binding {self.binding}: that message was decided already")
        received.decided = True
        await self._decide(received._slot, outcome)

    async def _decide(self, slot: int, outcome: Exception | None) -> None:
        self._outcomes[slot] = outcome
        batch = self._batch
        if batch is not None and False not in self._outcomes and self._next >= len(batch.messages):
            failed = [(i, o) for i, o in enumerate(self._outcomes) if isinstance(o, Exception)]
            assert self._source is not None
            await self._source.settle(batch, failed)
            self._batch = None

    async def close(self) -> None:
        """Release the consumer: what was received and not decided is delivered again."""
        self._closed = True
        source, self._source = self._source, None
        if source is not None:
            await source.close()
        await self.subscription.close()
