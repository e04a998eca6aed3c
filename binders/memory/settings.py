"""Configuration schema of the memory binder."""

from __future__ import annotations

from pydantic import Field

from binder_core.limits import MEMORY_DLQ_CAPACITY, MEMORY_IDLE_DESTINATIONS
from binder_core.properties import Props


class MemoryEnvironment(Props):
    """``stream.binders.<name>.environment`` (or ``stream.memory.binder``) for type memory."""

    buffer_size: int = Field(
        1024,
        ge=1,
        description="Messages a group may hold before producers wait (back-pressure).",
    )
    max_batch: int = Field(256, ge=1, description="Most messages handed to the core at once.")
    drain_timeout: int = Field(
        30_000,
        ge=0,
        description="On stop, ms to wait for running bindings to process what the memory "
        "binder still holds (it cannot keep messages past the process).",
    )
    dlq_capacity: int = Field(
        MEMORY_DLQ_CAPACITY,
        ge=1,
        description="Dead letters a dead-letter destination keeps until read; past it the "
        "oldest are dropped, with a warning.",
    )
    idle_destinations: int = Field(
        MEMORY_IDLE_DESTINATIONS,
        ge=1,
        description="Destinations nobody subscribes to that are remembered; past it the "
        "oldest are forgotten (they hold no messages).",
    )


class MemoryConsumerProperties(Props):
    """``stream.memory.bindings.<name>.consumer``."""

    enable_dlq: bool = Field(True, description="Dead-letter messages whose retries ran out.")
    dlq_name: str | None = Field(
        None, description="Dead-letter destination; default error.<destination>.<group>."
    )

    def for_dead_letters(
        self, destination: str, group: str | None
    ) -> MemoryConsumerProperties | None:
        """A consumer of a dead-letter destination (``error.<destination>.<group>``) has
        none of its own unless it asks for one (``error.error...``)."""
        if "enable_dlq" in self.model_fields_set or not destination.startswith("error."):
            return None
        return self.model_copy(update={"enable_dlq": False})
