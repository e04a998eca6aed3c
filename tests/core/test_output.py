"""What a function returns, as the wire message a binder gets: headers, key, partition."""

from __future__ import annotations

from collections.abc import Sequence

from binder_core.conversion import encoder_for, message_converters
from binder_core.message import Message
from binder_core.output import Output
from binder_core.properties import ProducerProperties


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message[bytes]] = []

    async def send(self, messages: Sequence[Message[bytes]]) -> None:
        self.sent.extend(messages)

    async def close(self) -> None:
        return None


def output(**props: object) -> Output:
    converters = {c.content_type: c for c in message_converters()}
    return Output(
        "f-out-0",
        "dest",
        Recorder(),
        encoder_for("text/plain", converters),
        "text/plain",
        ProducerProperties.model_validate(props),
    )


def test_a_returned_message_keeps_its_key_partition_and_headers() -> None:
    wire = output().message(Message("hi", {"h": "v"}, key=b"k1", partition=3))
    assert (wire.payload, wire.key, wire.partition) == (b"hi", b"k1", 3)
    assert wire.headers["h"] == "v"
    assert wire.headers["contentType"] == "text/plain"


def test_a_key_expression_decides_over_the_returned_key() -> None:
    out = output(**{"partition-key-expression": "headers['sym']", "partition-count": 4})
    wire = out.message(Message("hi", {"sym": "ACME"}, key=b"ignored"))
    assert wire.key == "ACME"
    assert wire.partition is not None and 0 <= wire.partition < 4
    again = out.message(Message("other", {"sym": "ACME"}))
    assert again.partition == wire.partition


def test_a_plain_value_gets_no_key() -> None:
    wire = output().message("hi")
    assert (wire.payload, wire.key, wire.partition) == (b"hi", None, None)
