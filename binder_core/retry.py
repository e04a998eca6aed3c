"""Retry with exponential back-off, owned by the core so it behaves the same on every
binder, in batch mode and for stream functions alike."""

from __future__ import annotations

from dataclasses import dataclass

from binder_core.errors import ConversionError
from binder_core.properties import ConsumerProperties


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try a failed message again, and how long to wait first."""

    max_attempts: int = 3
    initial_ms: int = 1000
    multiplier: float = 2.0
    max_ms: int = 10000
    default_retryable: bool = True
    exceptions: tuple[tuple[str, bool], ...] = ()

    @classmethod
    def from_properties(cls, props: ConsumerProperties) -> RetryPolicy:
        """The policy a consumer binding's properties describe."""
        return cls(
            max_attempts=props.max_attempts,
            initial_ms=props.back_off_initial_interval,
            multiplier=props.back_off_multiplier,
            max_ms=props.back_off_max_interval,
            default_retryable=props.default_retryable,
            exceptions=tuple(props.retryable_exceptions.items()),
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ms = self.initial_ms * self.multiplier ** (attempt - 1)
        return min(ms, self.max_ms) / 1000.0

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt.

        Configured names are matched along the exception's class hierarchy, nearest class
        first, by simple or qualified name; no class is ever imported from configuration.
        Conversion errors are not retried unless configured: the same bytes fail the same
        way every time.
        """
        if self.exceptions:
            table = dict(self.exceptions)
            for cls in type(exc).__mro__:
                for name in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}"):
                    if name in table:
                        return table[name]
        if isinstance(exc, ConversionError):
            return False
        return self.default_retryable

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether to try again after attempt ``attempt`` failed with ``exc``."""
        return attempt < self.max_attempts and self.retryable(exc)
