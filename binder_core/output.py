"""The outbound side of a binding: encoding, headers and partition selection in front of a
binder's producer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from binder_core.conversion import Encoder
from binder_core.expression import compile_expression, select_partition
from binder_core.message import CONTENT_TYPE, Message
from binder_core.properties import ProducerProperties
from binder_core.spi import Producer


class Output:
    """Turns what a function returned into ``Message[bytes]`` and sends batches of them.

    Everything that does not depend on the value (content type, key expression, partition
    count) is resolved here once, so ``message()`` is the only per-value work.
    """

    def __init__(
        self,
        binding: str,
        destination: str,
        producer: Producer,
        encoder: Encoder,
        content_type: str,
        props: ProducerProperties,
    ) -> None:
        self.binding = binding
        self.destination = destination
        self.producer = producer
        self._encode = encoder
        self._content_type = content_type
        self._key = (
            compile_expression(props.partition_key_expression)
            if props.partition_key_expression
            else None
        )
        self._count = props.partition_count

    def message(self, value: Any) -> Message[bytes]:
        """The wire message for one returned value (a ``Message`` keeps its headers)."""
        if isinstance(value, Message):
            payload, headers = value.payload, dict(value.headers)
            headers.setdefault(CONTENT_TYPE, self._content_type)
        else:
            payload, headers = value, {CONTENT_TYPE: self._content_type}
        out = Message(self._encode(payload), headers)
        if self._key is not None:
            key = self._key(payload, headers)
            out.key = key
            if key is not None and self._count > 1:
                out.partition = select_partition(key, self._count)
        return out

    async def send(self, messages: Sequence[Message[bytes]]) -> None:
        """Send and wait for the broker's confirmation of all of them."""
        if messages:
            await self.producer.send(messages)
