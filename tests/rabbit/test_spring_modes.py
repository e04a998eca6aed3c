"""Spring's use-native-encoding and header-mode on RabbitMQ: what goes on the wire, read
raw with pika."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kafka.conftest import running_app
from tests.rabbit.conftest import Admin
from tests.support import eventually

pytestmark = pytest.mark.rabbit


async def test_native_encoding_and_no_headers_put_the_bare_payload_on_the_wire(
    rabbit_url: str, admin: Admin, unique_name: Any
) -> None:
    source, out = unique_name("src"), unique_name("out")
    admin.track(source, "g")
    admin.track(out, "check")
    seen: list[Any] = []

    def relay(raw: bytes) -> bytes:
        seen.append(raw)
        return raw.upper()

    stream: dict[str, Any] = {
        "default-binder": "rabbit",
        "binders": {"rabbit": {"type": "rabbit", "environment": {"uri": rabbit_url}}},
        "function": {"definition": "relay"},
        "bindings": {
            "relay-in-0": {
                "destination": source,
                "group": "g",
                "consumer": {"use-native-decoding": True, "header-mode": "none"},
            },
            "relay-out-0": {
                "destination": out,
                "producer": {
                    "use-native-encoding": True,
                    "header-mode": "none",
                    "required-groups": ["check"],
                },
            },
        },
    }
    async with running_app({"relay": relay}, stream):
        await asyncio.to_thread(admin.publish, source, "k", b"not json")

        async def arrived() -> bool:
            return await admin.depth(f"{out}.check") == 1

        await eventually(arrived, "the output", 20)
    [(_, props, body)] = await asyncio.to_thread(admin.drain, f"{out}.check")
    assert seen == [b"not json"]
    assert body == b"NOT JSON"
    assert not props.headers and props.content_type is None
