"""A Kafka producer refuses at once after ``close``: it never reaches for the shared client,
which may be stopped by then or serve other bindings, and a caller that keeps sending gets
the same clear error every time instead of waiting on a closed client."""

from __future__ import annotations

from typing import Any

import pytest

from binder_core.errors import DeliveryError, ProducerClosedError
from binder_core.message import Message
from binders.kafka.producer import KafkaProducer


class _Slot:
    """A client slot that fails the test if anything asks it for its client."""

    released = 0

    @property
    def client(self) -> Any:
        raise AssertionError("a closed producer reached for the client")

    async def renew(self, broken: Any) -> None:
        raise AssertionError("a closed producer renewed the client")


async def test_send_and_stage_after_close_raise_at_once() -> None:
    slot = _Slot()

    async def release() -> None:
        slot.released += 1

    producer = KafkaProducer(object(), "orders", slot, sync=False, release=release)  # type: ignore[arg-type]
    await producer.close()
    assert slot.released == 1
    for _ in range(3):
        with pytest.raises(ProducerClosedError, match="topic 'orders': its producer is closed"):
            await producer.send([Message(b"x", {})])
        with pytest.raises(ProducerClosedError):
            producer.stage()
    await producer.close()  # closing twice is harmless
    assert slot.released == 1
    # Not a refusal of the message: the core must deliver its input again, not dead-letter it.
    assert not issubclass(ProducerClosedError, DeliveryError)
