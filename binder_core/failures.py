"""Error handlers: a function of the app that receives each message whose retries ran out,
with what went wrong (Spring's ``error-handler-definition``, its error channels).

``stream.bindings.<name>.error-handler-definition`` names the function for one binding;
``stream.default.error-handler-definition`` for every binding. The handler runs instead of
the dead-letter destination (as in Spring): a message it handles is acknowledged. If the
handler raises, or ``consumer.dead-letter-after-error-handler`` is true, the message is
dead-lettered as well, so nothing is dropped because a handler failed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from binder_core.message import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """A message whose retries ran out, as an error handler receives it."""

    #: The message as it was received: payload bytes and headers.
    message: Message[bytes]
    #: The final error (its type and text: the text may quote the payload).
    error: Exception
    #: The input binding it failed on.
    binding: str

    @property
    def reason(self) -> str:
        """The error in one line: ``Type: text``."""
        return f"{type(self.error).__name__}: {self.error}"


class ErrorHandler:
    """Calls the app's handler function for a failed message."""

    def __init__(self, name: str, fn: Callable[..., Any], then_dead_letter: bool) -> None:
        self.name = name
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn)
        #: Whether the message also goes to the dead-letter destination after the handler.
        self.then_dead_letter = then_dead_letter

    async def handle(self, failed: FailedMessage) -> bool:
        """Whether the handler took care of it (it returned without raising)."""
        try:
            result = self._fn(failed)
            if self._is_async or asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            log.error(
                "binding %s: error handler %s failed (%s); the message is dead-lettered",
                failed.binding,
                self.name,
                type(exc).__name__,
            )
            log.debug("error handler %s raised: %s", self.name, exc)
            return False
        return True
