"""``BinderDriver``: one binder driven directly, as a binder's own tests drive it.

It binds consumers to plain handles and producers that send ``Message[bytes]`` batches,
through the same consumer loop and outputs an app runs on, and on ``close`` stops what it
bound before it closes the binder. Anything else is the binder's own (attributes pass
through), so a test can still look at what only that binder has.
"""

from __future__ import annotations

import contextlib
from typing import Any

from binder_core.consumer import ConsumerBinding, Handle, Processor
from binder_core.kit import bind_consumer, bind_producer
from binder_core.output import Output
from binder_core.spi import Binder, ConsumerSpec, ProducerSpec


class BinderDriver:
    """Wraps a binder: ``consumer(spec, handle)``, ``producer(spec)``, ``close()``."""

    def __init__(self, binder: Binder) -> None:
        self.binder = binder
        self.bindings: list[ConsumerBinding] = []
        self.producers: list[Output] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.binder, name)

    async def start(self) -> None:
        """Start the binder."""
        await self.binder.start()

    async def consumer(self, spec: ConsumerSpec, handle: Handle | Processor) -> ConsumerBinding:
        """A consumer binding feeding ``handle``, started unless ``auto-startup`` is off."""
        binding = await bind_consumer(self.binder, spec, handle)
        self.bindings.append(binding)
        return binding

    async def producer(self, spec: ProducerSpec) -> Output:
        """A producer whose ``send`` returns once the broker confirmed the batch."""
        output = await bind_producer(self.binder, spec)
        self.producers.append(output)
        return output

    async def close(self) -> None:
        """Stop the bindings, close the producers, then the binder."""
        bindings, self.bindings = self.bindings, []
        for binding in bindings:
            with contextlib.suppress(Exception):
                await binding.stop()
        producers, self.producers = self.producers, []
        for producer in producers:
            with contextlib.suppress(Exception):
                await producer.close()
        await self.binder.close()
