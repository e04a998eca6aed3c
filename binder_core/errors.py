"""Errors written for users: what went wrong, where, and what to do about it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from binder_core.secrets import mask_text


class BinderException(Exception):
    """Base of every error this framework raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem, located as precisely as we can."""

    path: str  # dotted key path, for example stream.bindings.uppercase-in-0.group
    message: str
    source: str | None = None  # file[:line], environment variable, or --set

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return mask_text(f"{where}{self.path}: {self.message}")


class ConfigError(BinderException):
    """Start-up stopped because the configuration is wrong. Carries every problem found,
    so a user fixes them all in one round rather than one per run.

    ``config`` is what could be validated despite the problems (an ``AppConfig`` whose
    bad parts are left at their defaults), so that the next step (planning the bindings
    of an app) can still add its own problems to the same report."""

    def __init__(self, problems: Iterable[Problem], config: Any = None) -> None:
        self.problems = list(problems)
        self.config = config
        super().__init__(self.render())

    def render(self) -> str:
        """The text shown to the user: one line (or a few) per problem."""
        n = len(self.problems)
        head = f"configuration has {n} problem{'s' if n != 1 else ''}:"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


class ConversionError(BinderException):
    """A payload could not be converted to or from the type a function declares.

    Not retried by default: the same bytes fail the same way every time, so the message
    goes straight to the dead-letter destination.
    """


class PartitionKeyError(ConversionError):
    """A partitioned producer could not key a message: its partition key expression gave
    null, or failed on the message's values. Spring fails such a send too. The same
    message fails the same way every time, so it is not retried: the input it came from
    is dead-lettered with this reason."""


class DeliveryError(BinderException):
    """A broker refused, could not route, or did not confirm a message."""


class ProducerClosedError(BinderException):
    """A send on a producer that was closed (or is closing).

    Raised at once, so a caller that keeps sending cannot spin. Not a ``DeliveryError``:
    the message was not refused, the producer is gone (the app is stopping, or a dynamic
    destination's producer was evicted), so the input it came from is delivered again
    rather than dead-lettered."""


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``word``, if any is near enough to be a likely typo."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A "did you mean ...?" suffix for an unknown name, or a list of valid names when none
    is close; empty when there is nothing to suggest."""
    options = sorted(set(choices))
    if not options:
        return ""
    near = closest(word, options)
    if near is not None:
        return f" (did you mean '{near}'?)"
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" (valid: {shown})"
