"""Headers that tell why a message was dead-lettered, named as Spring Cloud Stream names
them so that tools and services on either side read them alike."""

from __future__ import annotations

import traceback

EXCEPTION_MESSAGE = "x-exception-message"
EXCEPTION_FQCN = "x-exception-fqcn"
EXCEPTION_STACKTRACE = "x-exception-stacktrace"
ORIGINAL_TOPIC = "x-original-topic"
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
ORIGINAL_GROUP = "x-original-group"

_MAX_TRACE = 8000  # brokers limit header sizes; the head of a trace is what matters


def exception_headers(exc: BaseException) -> dict[str, str]:
    """The reason headers for a message that failed with ``exc``."""
    cls = type(exc)
    trace = "".join(traceback.format_exception(exc))
    return {
        EXCEPTION_MESSAGE: str(exc) or cls.__name__,
        EXCEPTION_FQCN: f"{cls.__module__}.{cls.__qualname__}",
        EXCEPTION_STACKTRACE: trace[:_MAX_TRACE],
    }
