"""A Kafka producer refuses at once after ``close``: it never reaches for the shared client,
which may be stopped by then or serve other bindings, and a caller that keeps sending gets
the same clear error every time instead of waiting on a closed client."""

from __future__ import annotations

from typing import Any

import pytest

from binder_core.errors import DeliveryError, ProducerClosedError
from binders.kafka.producer import KafkaSink


class _Slot:
    """A client slot that fails the test if anything asks it for its client."""

    released = 0

    @property
    def client(self) -> Any:
        raise AssertionError("a closed producer reached for the client")

    async def renew(self, broken: Any) -> None:
        raise AssertionError("a closed producer renewed the client")


async def test_an_outbox_after_close_raises_at_once() -> None:
    slot = _Slot()

    async def release() -> None:
        slot.released += 1

    producer = KafkaSink(object(), "orders", slot, sync=False, release=release)  # type: ignore[arg-type]
    await producer.close()
    assert slot.released == 1
    for _ in range(3):
        with pytest.raises(ProducerClosedError, match="topic 'orders': its producer is closed"):
            producer.outbox()
    await producer.close()  # closing twice is harmless
    assert slot.released == 1
    # Not a refusal of the message: the core must deliver its input again, not dead-letter it.
    assert not issubclass(ProducerClosedError, DeliveryError)
