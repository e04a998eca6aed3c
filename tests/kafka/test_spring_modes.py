"""Spring's use-native-encoding / use-native-decoding and header-mode on Kafka: what goes on
the wire, read raw with the plain client."""

from __future__ import annotations

from typing import Any

import pytest

from binder_core.errors import ConfigError
from binder_core.message import Message
from tests.kafka.conftest import Kit, binder_tree, running_app
from tests.support import eventually

pytestmark = pytest.mark.kafka


async def test_native_encoding_sends_the_payload_as_it_is_without_a_content_type(
    kit: Kit,
) -> None:
    source, out, group = kit.name("src"), kit.name("out"), kit.name("g")
    await kit.create(source)
    got: list[Any] = []

    def passthrough(raw: bytes) -> bytes:
        got.append(raw)
        return raw[::-1]

    stream: dict[str, Any] = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "passthrough"},
        "bindings": {
            "passthrough-in-0": {
                "destination": source,
                "group": group,
                "content-type": "application/json",
                "consumer": {"use-native-decoding": True},
            },
            "passthrough-out-0": {
                "destination": out,
                "producer": {"use-native-encoding": True},
            },
        },
    }
    async with running_app({"passthrough": passthrough}, stream):
        # Not JSON although the binding says JSON: native decoding does not convert it.
        await kit.produce(source, [b"\x00not json\xff"])
        [record] = await kit.read(out, 1)
    assert got == [b"\x00not json\xff"]
    assert record.value == b"\xffnosj ton\x00"
    assert "contentType" not in dict(record.headers or [])


async def test_header_mode_none_writes_and_reads_no_headers(kit: Kit) -> None:
    source, out, group = kit.name("src"), kit.name("out"), kit.name("g")
    await kit.create(source)
    seen: list[dict[str, Any]] = []

    def relay(msg: Message[str]) -> Message[str]:
        seen.append(dict(msg.headers))
        return Message(msg.payload.upper(), {"x-added": "1"})

    stream: dict[str, Any] = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "relay"},
        "bindings": {
            "relay-in-0": {
                "destination": source,
                "group": group,
                "content-type": "text/plain",
                "consumer": {"header-mode": "none"},
            },
            "relay-out-0": {
                "destination": out,
                "content-type": "text/plain",
                "producer": {"header-mode": "none"},
            },
        },
    }
    async with running_app({"relay": relay}, stream):
        await kit.produce(source, [b"hi"], headers=[("x-incoming", b"1")])
        [record] = await kit.read(out, 1)
        await eventually(lambda: bool(seen), "the function to run")
    assert seen == [{}]
    assert record.value == b"HI"
    assert not record.headers


async def test_native_decoding_into_a_typed_parameter_stops_start_up(kit: Kit) -> None:
    def typed(n: int) -> None:
        return None

    stream: dict[str, Any] = {
        **binder_tree(kit.bootstrap),
        "function": {"definition": "typed"},
        "bindings": {
            "typed-in-0": {"destination": kit.name("x"), "consumer": {"use-native-decoding": True}},
        },
    }
    with pytest.raises(ConfigError, match="native decoding hands it the payload"):
        async with running_app({"typed": typed}, stream):
            pass
