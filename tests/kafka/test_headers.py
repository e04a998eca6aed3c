"""Header mapping as Spring Cloud Stream's Kafka binder does it (no broker needed)."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

from binder_core.message import Message
from binders.kafka.consumer import to_messages
from binders.kafka.deadletter import dead_letter
from binders.kafka.headers import JSON_TYPES, decode_headers, encode_headers
from binders.kafka.producer import encode_key, to_records


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


def test_a_poll_decodes_each_records_own_headers_into_its_own_dict() -> None:
    """Consecutive records with equal headers share the decoding, never the dict; a record
    whose headers differ from the previous one's gets its own."""
    json_ct = tuple(encode_headers({"contentType": "application/json"}))
    text_ct = tuple(encode_headers({"contentType": "text/plain", "n": 2}))

    def record(value: bytes | None, raw: tuple[tuple[str, bytes], ...] | None) -> SimpleNamespace:
        # Fresh bytes objects per record, as the consumer hands them out.
        headers = tuple((k, bytes(bytearray(v))) for k, v in raw) if raw else ()
        return SimpleNamespace(value=value, headers=headers, key=b"k", partition=3)

    records = [
        record(b"1", json_ct),
        record(b"2", json_ct),
        record(b"3", text_ct),
        record(None, None),
        record(b"5", json_ct),
    ]
    messages, unreadable = to_messages(records)
    assert unreadable == {}
    assert [m.headers for m in messages] == [
        {"contentType": "application/json"},
        {"contentType": "application/json"},
        {"contentType": "text/plain", "n": 2},
        {},
        {"contentType": "application/json"},
    ]
    assert [m.payload for m in messages] == [b"1", b"2", b"3", b"", b"5"]
    assert {(m.key, m.partition) for m in messages} == {(b"k", 3)}
    messages[0].headers["mutated"] = True
    assert "mutated" not in messages[1].headers
    assert to_messages(records[:2])[0][0].headers == {"contentType": "application/json"}


def test_outputs_get_their_own_headers_encoded() -> None:
    """Equal headers of consecutive outputs are encoded once; different ones each time."""
    plain = {"contentType": "text/plain"}
    messages = [
        Message(b"a", plain),
        Message(b"b", dict(plain)),
        Message(b"c", {"contentType": "text/plain", "n": 1}, key="k"),
        Message(b"d", {}),
        Message(b"e", plain, partition=2),
    ]
    records = to_records(messages)
    assert [r[1] for r in records] == [b"a", b"b", b"c", b"d", b"e"]
    assert [dict(r[2]) for r in records] == [
        dict(encode_headers(plain)),
        dict(encode_headers(plain)),
        dict(encode_headers({"contentType": "text/plain", "n": 1})),
        {},
        dict(encode_headers(plain)),
    ]
    assert [(r[0], r[3]) for r in records] == [(None, None)] * 2 + [(b"k", None)] + [
        (None, None),
        (None, 2),
    ]


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
