"""The CloudEvents codec against the ``cloudevents`` package's own encoders and decoders:
what the package writes we read, what we write the package reads; and every malformed
event is a ConversionError (dead-lettered with its reason, never retried)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings import amqp, kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from binder_core.cloudevents import CloudEvents
from binder_core.errors import ConversionError
from binder_core.message import CONTENT_TYPE, Message

KAFKA = CloudEvents("binary", "ce_", "/shop/orders-out-0", "shop.orders-out-0")
AMQP = CloudEvents("binary", "cloudEvents:", "/shop/orders-out-0", "shop.orders-out-0")
WHEN = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def event(data: Any = None, **extra: Any) -> CloudEvent:
    attrs = {
        "id": "A-1",
        "source": "/shop",
        "type": "com.example.order",
        "time": WHEN,
        "datacontenttype": "application/json",
        **extra,
    }
    return CloudEvent(attrs, {"id": 7, "symbol": "ACME"} if data is None else data)


def test_a_kafka_binary_event_of_the_package_is_read() -> None:
    wire = kafka.to_binary(event(subject="s-1"), JSONFormat())
    msg = KAFKA.incoming(Message(wire.value, dict(wire.headers)))
    assert json.loads(msg.payload) == {"id": 7, "symbol": "ACME"}
    assert msg.headers[CONTENT_TYPE] == "application/json"
    assert dict(msg.ce) == {
        "id": "A-1",
        "source": "/shop",
        "type": "com.example.order",
        "specversion": "1.0",
        "time": "2024-05-01T12:00:00Z",
        "subject": "s-1",
    }


@pytest.mark.parametrize("codec", [KAFKA, AMQP])
def test_a_structured_event_of_the_package_is_read(codec: CloudEvents) -> None:
    wire = kafka.to_structured(event(), JSONFormat())
    headers = {CONTENT_TYPE: wire.headers["content-type"].decode()}
    msg = codec.incoming(Message(wire.value, headers))
    assert json.loads(msg.payload) == {"id": 7, "symbol": "ACME"}
    assert msg.ce["id"] == "A-1" and msg.ce["type"] == "com.example.order"
    assert msg.headers[f"{codec.prefix}id"] == "A-1"


def test_an_amqp_binary_event_of_the_package_is_read() -> None:
    wire = amqp.to_binary(event(), JSONFormat())  # cloudEvents_ names, time in ms
    headers = {**wire.application_properties, CONTENT_TYPE: wire.properties["content-type"]}
    msg = AMQP.incoming(Message(wire.application_data, headers))
    assert msg.ce["id"] == "A-1"
    assert json.loads(msg.payload)["symbol"] == "ACME"


def test_binary_events_we_write_are_read_by_the_package() -> None:
    out = KAFKA.outgoing(Message(b'{"id":7}', {CONTENT_TYPE: "application/json", "x": "1"}))
    assert out.headers["ce_source"] == "/shop/orders-out-0"
    assert out.headers["x"] == "1"
    wire = kafka.KafkaMessage(
        {k: str(v).encode() for k, v in out.headers.items()}, None, out.payload
    )
    got = kafka.from_binary(wire, JSONFormat())
    assert got.get_source() == "/shop/orders-out-0"
    assert got.get_type() == "shop.orders-out-0"
    assert got.get_specversion() == "1.0"
    assert got.get_datacontenttype() == "application/json"
    assert got.get_data() == {"id": 7}
    assert abs((got.get_time() or WHEN).timestamp() - datetime.now(UTC).timestamp()) < 60
    assert len(got.get_id()) == 36  # a UUID

    out = AMQP.outgoing(Message(b'{"id":7}', {CONTENT_TYPE: "application/json"}))
    assert "cloudEvents:id" in out.headers and "ce_id" not in out.headers
    table = {k: v for k, v in out.headers.items() if k != CONTENT_TYPE}
    got = amqp.from_binary(
        amqp.AMQPMessage({"content-type": "application/json"}, table, out.payload), JSONFormat()
    )
    assert got.get_type() == "shop.orders-out-0"
    assert got.get_data() == {"id": 7}


@pytest.mark.parametrize(
    ("content_type", "payload", "data"),
    [
        ("application/json", b'{"id":7}', {"id": 7}),
        ("text/plain", b"hello", "hello"),
        ("application/octet-stream", b"\x00\xff", b"\x00\xff"),
    ],
)
def test_structured_events_we_write_are_read_by_the_package(
    content_type: str, payload: bytes, data: Any
) -> None:
    codec = CloudEvents("structured", "ce_", "/shop/x", "shop.x")
    out = codec.outgoing(Message(payload, {CONTENT_TYPE: content_type}))
    assert out.headers[CONTENT_TYPE] == "application/cloudevents+json"
    got = JSONFormat().read(None, out.payload)
    assert got.get_source() == "/shop/x" and got.get_datacontenttype() == content_type
    assert got.get_data() == data
    # ... and back through our reader, to the same payload.
    back = codec.incoming(out)
    assert back.payload == payload and back.headers[CONTENT_TYPE] == content_type


def test_attributes_a_function_sets_are_kept() -> None:
    out = KAFKA.outgoing(Message(b"{}", {CONTENT_TYPE: "application/json", "ce_type": "mine"}))
    assert out.headers["ce_type"] == "mine"
    assert out.headers["ce_source"] == "/shop/orders-out-0"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (Message(b"{}", {"ce_id": b"1"}), "required attributes source, type, specversion"),
        (
            Message(
                b"{}", {"ce_id": "1", "ce_source": "/s", "ce_type": "t", "ce_specversion": "0.3"}
            ),
            "specversion '0.3' is not supported",
        ),
        (
            Message(
                b"{}",
                {
                    "ce_id": "1",
                    "ce_source": "/s",
                    "ce_type": "t",
                    "ce_specversion": "1.0",
                    "ce_time": "noon",
                },
            ),
            "not an RFC 3339 timestamp",
        ),
        (Message(b"{", {CONTENT_TYPE: "application/cloudevents+json"}), "is not JSON"),
        (Message(b"[1]", {CONTENT_TYPE: "application/cloudevents+json"}), "not an object"),
        (
            Message(
                b'{"specversion":"1.0","id":"1","source":"/s"}',
                {CONTENT_TYPE: "application/cloudevents+json"},
            ),
            "required attribute type missing",
        ),
        (
            Message(
                b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"%%"}',
                {CONTENT_TYPE: "application/cloudevents+json"},
            ),
            "data_base64 is not base64",
        ),
        (Message(b"x", {CONTENT_TYPE: "application/cloudevents+avro"}), "cannot be read"),
        (Message(b"{}", {CONTENT_TYPE: "application/json"}), "not a CloudEvent"),
    ],
)
def test_a_malformed_event_is_a_conversion_failure(message: Message[bytes], reason: str) -> None:
    with pytest.raises(ConversionError, match=reason.replace("(", r"\(")):
        KAFKA.incoming(message)


def test_base64_data_of_a_structured_event_becomes_the_payload() -> None:
    body = {
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "t",
        "datacontenttype": "application/octet-stream",
        "data_base64": base64.b64encode(b"\x01\x02").decode(),
    }
    msg = KAFKA.incoming(
        Message(json.dumps(body).encode(), {CONTENT_TYPE: "application/cloudevents+json"})
    )
    assert msg.payload == b"\x01\x02"
    assert msg.headers[CONTENT_TYPE] == "application/octet-stream"


def test_a_plain_message_has_no_attributes() -> None:
    assert dict(Message(b"", {"contentType": "x"}).ce) == {}
