"""Configuration schema of the memory binder."""

from __future__ import annotations

from pydantic import Field

from binder_core.properties import Props


class MemoryEnvironment(Props):
    """``stream.binders.<name>.environment`` (or ``stream.memory.binder``) for type memory."""

    buffer_size: int = Field(
        10_000,
        ge=1,
        description="Messages a group may hold before producers wait (back-pressure).",
    )
    max_batch: int = Field(256, ge=1, description="Most messages handed to the core at once.")


class MemoryConsumerProperties(Props):
    """``stream.memory.bindings.<name>.consumer``."""

    enable_dlq: bool = Field(True, description="Dead-letter messages whose retries ran out.")
    dlq_name: str | None = Field(
        None, description="Dead-letter destination; default error.<destination>.<group>."
    )
