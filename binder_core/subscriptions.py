"""What the runtime puts around a binder's subscriptions.

- ``MultiSubscription``: one consumer binding over several destinations (Spring's
  ``destination: a,b``). Each destination gets its own subscription from the binder, in
  the binding's group (its own queue, consumer group membership and dead letters, as
  Spring makes one per destination), and one ``ConsumerBinding`` drives them all: its
  consumers are spread over the destinations, so pause, stop, health and metrics treat
  the binding as one.
- ``guard``: a consumer whose opening fails because of its settings (a client that
  refuses an argument, a configuration error found late) cannot succeed by trying again;
  it is reported as ``Permanent``, so the binding fails to start and so does the app,
  instead of retrying for ever while the app says it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from binder_core.errors import ConfigError
from binder_core.spi import Permanent, Source, Subscription

#: Errors from ``Source.open`` that no retry can cure: the settings are wrong.
_SETTINGS_ERRORS = (ConfigError, TypeError, ValueError)


class MultiSubscription:
    """Several subscriptions of one binding, one per destination. Consumer ``i`` of the
    binding reads destination ``i % n``: with ``concurrency`` c, the binding runs
    ``c * n`` consumers, c per destination."""

    def __init__(self, parts: Sequence[Subscription]) -> None:
        if not parts:
            raise ValueError("a multi-destination subscription needs at least one part")
        self.parts = list(parts)
        self.drain_timeout = max(p.drain_timeout for p in self.parts)
        #: Each destination's dead-letter destination, where the binder has one.
        self.dlq_names = [n for n in (getattr(p, "dlq_name", None) for p in self.parts) if n]
        self.dlq_name = self.dlq_names[0] if self.dlq_names else None
        # What the metrics and the memory binder's drain read, where every part has it.
        if all(hasattr(p, "backlog") for p in self.parts):
            self.backlog = self._backlog
        if all(hasattr(p, "waiting") for p in self.parts):
            self.waiting = self._waiting

    def source(self, index: int) -> Source:
        n = len(self.parts)
        return self.parts[index % n].source(index // n)

    async def close(self) -> None:
        results = await asyncio.gather(*(p.close() for p in self.parts), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _backlog(self) -> dict[str, int]:
        figures: dict[str, int] = {}
        for part in self.parts:
            figures.update(await part.backlog())  # type: ignore[attr-defined]
        return figures

    def _waiting(self) -> int:
        return sum(part.waiting() for part in self.parts)  # type: ignore[attr-defined]


class _GuardedSubscription:
    """A subscription whose sources report a settings error at open as ``Permanent``."""

    def __init__(self, inner: Subscription) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def source(self, index: int) -> Source:
        return _GuardedSource(self.inner.source(index))

    async def close(self) -> None:
        await self.inner.close()


class _GuardedSource:
    """A source whose ``open`` turns a settings error into ``Permanent``; everything else
    is the binder's source itself (looked up once, then kept on this object, so the loop
    calls the binder's methods directly)."""

    def __init__(self, inner: Source) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if callable(value):
            setattr(self, name, value)
        return value

    async def open(self) -> None:
        try:
            await self._inner.open()
        except _SETTINGS_ERRORS as exc:
            raise Permanent(f"{type(exc).__name__}: {exc}") from exc


def guard(subscription: Subscription) -> Subscription:
    """``subscription`` with its settings errors at open made permanent."""
    return _GuardedSubscription(subscription)
