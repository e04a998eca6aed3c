"""Headers that tell why a message was dead-lettered, named as Spring Cloud Stream names
them so that tools and services on either side read them alike.

Dead letters are read by people who may not own the payload (operators, other teams), and
brokers bound header sizes: the reason is bounded (``limits.EXCEPTION_MESSAGE_LENGTH``,
``limits.STACK_TRACE_LENGTH``), a cut says how much was left out, and a pydantic
``ValidationError`` is described without the input values it would otherwise quote.
"""

from __future__ import annotations

import traceback

from pydantic import ValidationError

from binder_core.limits import EXCEPTION_MESSAGE_LENGTH, STACK_TRACE_LENGTH

EXCEPTION_MESSAGE = "x-exception-message"
EXCEPTION_FQCN = "x-exception-fqcn"
EXCEPTION_STACKTRACE = "x-exception-stacktrace"
ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
ORIGINAL_GROUP = "x-original-group"

#: Validation errors listed in a reason; the count of all of them is always given.
_ERRORS_SHOWN = 10

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def exception_headers(exc: BaseException) -> dict[str, str]:
    """The reason headers for a message that failed with ``exc``."""
    cls = type(exc)
    return {
        EXCEPTION_MESSAGE: truncate(describe(exc) or cls.__name__, EXCEPTION_MESSAGE_LENGTH),
        EXCEPTION_FQCN: f"{cls.__module__}.{cls.__qualname__}",
        EXCEPTION_STACKTRACE: truncate(stack_trace(exc), STACK_TRACE_LENGTH, keep_end=True),
    }


def describe(exc: BaseException) -> str:
    """The text of ``exc`` fit for a dead-letter header: a pydantic ``ValidationError`` as
    where and what failed, without the input values it quotes by default."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)
        lines = [f"{len(errors)} validation error{'s' if len(errors) != 1 else ''} for {exc.title}"]
        for e in errors[:_ERRORS_SHOWN]:
            where = ".".join(str(p) for p in e["loc"]) or "(value)"
            lines.append(f"{where}: {e['msg']} [type={e['type']}]")
        if len(errors) > _ERRORS_SHOWN:
            lines.append(f"... and {len(errors) - _ERRORS_SHOWN} more")
        return "\n".join(lines)
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails must still be dead-lettered
        return f"<{type(exc).__name__}: its message could not be read>"


def stack_trace(exc: BaseException) -> str:
    """The trace Python would print for ``exc``, causes first, with each exception's text
    as ``describe`` gives it."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts: list[str] = []
    for error, follows in reversed(chain):
        if error.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(error.__traceback__))
        cls = type(error)
        name = (
            cls.__qualname__
            if cls.__module__ in ("builtins", "__main__")
            else f"{cls.__module__}.{cls.__qualname__}"
        )
        text = describe(error)
        parts.append(f"{name}: {text}\n" if text else f"{name}\n")
        parts.append(follows)
    return "".join(parts)


def truncate(text: str, limit: int, keep_end: bool = False) -> str:
    """``text`` in at most ``limit`` characters; a cut is marked with how many characters
    were left out. ``keep_end`` keeps the end instead of the start (a Python trace ends
    with the exception that was raised)."""
    if len(text) <= limit:
        return text
    room = limit - len(_marker(len(text)))
    left_out = len(text) - room
    if keep_end:
        return f"[truncated, {left_out} chars] ...{text[len(text) - room :]}"
    return f"{text[:room]}... [truncated, {left_out} chars]"


def _marker(left_out: int) -> str:
    # As long as either marker could be for ``left_out`` characters or fewer.
    return f"... [truncated, {left_out} chars]"
