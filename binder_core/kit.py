"""Driving a binder without an app: a consumer fed to a plain handle, a producer that sends
``Message[bytes]`` batches. What the conformance suite, the benchmarks and binder tests use,
through the same consumer loop and outputs an app runs on."""

from __future__ import annotations

from binder_core.consumer import ConsumerBinding, Handle, HandleProcessor, Processor
from binder_core.conversion import OCTET, ToBytes
from binder_core.output import Output
from binder_core.spi import Binder, ConsumerSpec, ProducerSpec


async def bind_consumer(
    binder: Binder, spec: ConsumerSpec, handle: Handle | Processor
) -> ConsumerBinding:
    """Provision ``spec`` and return its binding, started unless ``auto-startup`` is false.

    ``handle`` gets each batch and answers one outcome per message (``None``: processed;
    an exception: dead-letter it); a ``Processor`` (the core's pipeline) may stand instead.
    """
    subscription = await binder.provision_consumer(spec)
    processor = handle if isinstance(handle, Processor) else HandleProcessor(handle)
    binding = ConsumerBinding(spec.binding, subscription, processor, spec.properties.concurrency)
    if spec.properties.auto_startup:
        await binding.start()
    return binding


async def bind_producer(binder: Binder, spec: ProducerSpec) -> Output:
    """Provision ``spec`` and return an output whose ``send`` takes ``Message[bytes]``
    batches as they are and returns once the broker confirmed them."""
    sink = await binder.provision_producer(spec)
    return Output(
        spec.binding,
        spec.destination,
        sink,
        ToBytes(bytes, OCTET),
        OCTET,
        spec.properties,
    )
