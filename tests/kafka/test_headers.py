"""Header mapping as Spring Cloud Stream's Kafka binder does it (no broker needed)."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

from binders.kafka.deadletter import dead_letter
from binders.kafka.headers import JSON_TYPES, decode_headers, encode_headers
from binders.kafka.producer import encode_key


def test_spring_written_headers_are_read_back_typed() -> None:
    """What a Spring Cloud Stream app puts on a record (BinderHeaderMapper)."""
    raw = (
        ("contentType", b'"application/json"'),  # MimeType: JSON-quoted
        ("correlation", b"abc-123"),  # String: raw since Spring for Apache Kafka 2.3
        ("attempt", b"3"),
        ("price", b"9.5"),
        ("urgent", b"true"),
        ("blob", b"\xff\x00"),  # byte[]: raw, not typed
        (
            JSON_TYPES,
            json.dumps(
                {
                    "contentType": "java.lang.String",
                    "correlation": "java.lang.String",
                    "attempt": "java.lang.Integer",
                    "price": "java.lang.Double",
                    "urgent": "java.lang.Boolean",
                }
            ).encode(),
        ),
    )
    assert decode_headers(raw) == {
        "contentType": "application/json",
        "correlation": "abc-123",
        "attempt": 3,
        "price": 9.5,
        "urgent": True,
        "blob": b"\xff\x00",
    }


def test_untyped_headers_stay_bytes_and_unknown_types_never_build_objects() -> None:
    raw = (
        ("plain", b"text"),
        ("evil", b'{"a": 1}'),
        (JSON_TYPES, b'{"evil": "com.example.Gadget"}'),
    )
    assert decode_headers(raw) == {"plain": b"text", "evil": {"a": 1}}


def test_written_as_spring_writes_them() -> None:
    wire = dict(
        encode_headers(
            {"contentType": "text/plain", "name": "x", "n": 1, "id": "dropped", "none": None}
        )
    )
    assert wire["contentType"] == b'"text/plain"'
    assert wire["name"] == b"x"
    assert wire["n"] == b"1"
    assert "id" not in wire and "none" not in wire
    assert json.loads(wire[JSON_TYPES]) == {
        "contentType": "java.lang.String",
        "name": "java.lang.String",
        "n": "java.lang.Integer",
    }


def test_round_trip_and_caches_hand_out_fresh_dicts() -> None:
    headers = {"contentType": "application/json", "k": b"v", "n": -5, "f": 1.5, "b": False}
    raw = tuple(encode_headers(headers))
    first = decode_headers(raw)
    assert first == headers
    first["mutated"] = True
    assert decode_headers(raw) == headers
    assert encode_headers({"list": [1, 2]})[0] == ("list", b"[1, 2]")


def test_keys() -> None:
    assert encode_key(None) is None
    assert encode_key(b"\x01") == b"\x01"
    assert encode_key("é") == "é".encode()
    assert encode_key(42) == b"42"


def test_dead_letter_replaces_old_reasons_and_keeps_old_origins() -> None:
    record = SimpleNamespace(
        topic="orders",
        partition=5,
        offset=1234,
        timestamp=1700000000000,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        headers=(
            ("kafka_dlt-exception-message", b"an older failure"),
            ("kafka_dlt-original-topic", b"upstream"),
            ("contentType", b'"application/json"'),
            (JSON_TYPES, b'{"contentType":"java.lang.String"}'),
        ),
    )
    letter = dead_letter(record, RuntimeError("now"), "billing", dlq_partitions=3)
    assert letter.partition is None  # the DLQ has no partition 5: the key decides
    names = [k for k, _ in letter.headers]
    assert names.count("kafka_dlt-exception-message") == 1
    assert names.count("kafka_dlt-original-topic") == 2  # appended, as Spring does
    h = dict(letter.headers)
    assert h["kafka_dlt-exception-message"] == b"now"
    assert struct.unpack(">i", h["kafka_dlt-original-partition"]) == (5,)
    assert struct.unpack(">q", h["kafka_dlt-original-offset"]) == (1234,)
    typed = decode_headers(tuple(letter.headers))
    assert typed["contentType"] == "application/json"
    assert typed["x-original-offset"] == 1234
    assert typed["x-original-group"] == "billing"
    assert "kafka_dlt-exception-stacktrace" not in dict(
        dead_letter(record, RuntimeError("now"), None, 8, brief=True).headers
    )
