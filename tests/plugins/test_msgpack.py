"""The msgpack converter plugin: discovered from its distribution, decoding into the
model a function declares and encoding its output, on the memory binder; and, without it,
the content type is a start-up configuration error that names the installed converters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from pydantic import BaseModel

from binder_core.errors import ConfigError
from binder_core.plugins import load_plugins
from binder_core.testing import TestApp

MSGPACK = "application/x-msgpack"


class Reading(BaseModel):
    sensor: str
    values: list[float]


class Summary(BaseModel):
    sensor: str
    peak: float
    count: int


def summarize(reading: Reading) -> Summary:
    return Summary(sensor=reading.sensor, peak=max(reading.values), count=len(reading.values))


PROPS = {
    "stream": {
        "bindings": {
            "summarize-in-0": {"destination": "readings", "content-type": MSGPACK},
            "summarize-out-0": {"destination": "summaries", "content-type": MSGPACK},
        }
    }
}


def test_binder_plugins_lists_the_converter_with_its_distribution() -> None:
    binder = str(Path(sys.executable).with_name("binder"))
    out = subprocess.run([binder, "plugins"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert ["application/x-msgpack", "binder-msgpack", "0.1.0"] in [r[:3] for r in rows]
    assert ["redis", "binder-redis", "0.1.0"] in [r[:3] for r in rows]


async def test_a_function_reads_and_writes_msgpack() -> None:
    async with TestApp({"summarize": summarize}, properties=PROPS) as app:
        await app.send("readings", msgpack.packb({"sensor": "t1", "values": [1.5, 9.25, 3.0]}))
        out = await app.receive("summaries")
        assert msgpack.unpackb(out.payload) == {"sensor": "t1", "peak": 9.25, "count": 3}
        assert out.headers["contentType"] == MSGPACK


async def test_bad_msgpack_is_a_conversion_failure_dead_lettered() -> None:
    async with TestApp({"summarize": summarize}, properties=PROPS) as app:
        await app.send("readings", b"\xc1")  # never valid msgpack
        await app.send("readings", msgpack.packb({"sensor": "t2"}))  # no values
        await app.send("readings", msgpack.packb(msgpack.ExtType(5, b"x")))  # extension type
        dlq = app.dead_letter_destination("summarize-in-0")
        dead = await app.receive_all(dlq, 3)
        assert {m.headers["x-exception-fqcn"] for m in dead} == {
            "binder_core.errors.ConversionError"
        }
        assert app.pending("summaries") == 0


async def test_without_the_plugin_the_content_type_fails_at_start_up() -> None:
    registry = load_plugins()
    del registry.converters[MSGPACK]  # as if binder-msgpack were not installed
    with pytest.raises(ConfigError) as err:
        await TestApp({"summarize": summarize}, properties=PROPS, registry=registry).start()
    text = str(err.value)
    assert (
        "stream.bindings.summarize-in-0.content-type: no converter for content type "
        "'application/x-msgpack'; installed: application/json, application/octet-stream, "
        "text/plain"
    ) in text
    assert "summarize-out-0.content-type" in text
