"""Mistakes of placement the guide used to make itself: a common binding property under a
binder type's section, and a Kafka codec that is not installed. Each is one problem at
start-up naming the key and the fix, never a failure at the first send."""

from __future__ import annotations

import sys

import pytest

from binder_core.config import load_config
from binder_core.errors import ConfigError
from binder_core.plugins import load_plugins

TYPES = load_plugins().binder_types


def _problems(tree: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(None, (), (), TYPES, environ={}, properties=tree, read_files=False)
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [("producer", "required-groups", ["audit"]), ("consumer", "max-attempts", 5)],
)
def test_a_common_property_under_a_binder_type_says_where_it_belongs(
    kind: str, key: str, value: object
) -> None:
    tree = {"stream": {"rabbit": {"bindings": {"totals-out-0": {kind: {key: value}}}}}}
    [problem] = _problems(tree)
    assert f"stream.rabbit.bindings.totals-out-0.{kind}.{key}" in problem
    assert f"use stream.bindings.totals-out-0.{kind}.{key}" in problem


def test_an_unknown_key_under_a_binder_type_still_suggests_the_nearest() -> None:
    tree = {"stream": {"rabbit": {"bindings": {"x-in-0": {"consumer": {"prefech": 5}}}}}}
    [problem] = _problems(tree)
    assert "unknown key (did you mean 'prefetch'?)" in problem


@pytest.mark.parametrize("codec", ["lz4", "snappy", "zstd"])
def test_a_kafka_codec_that_is_not_installed_stops_start_up(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cramjam", None)  # as if not installed
    tree = {
        "stream": {
            "kafka": {"bindings": {"totals-out-0": {"producer": {"compression-type": codec}}}}
        }
    }
    [problem] = _problems(tree)
    assert "stream.kafka.bindings.totals-out-0.producer.compression-type" in problem
    assert f"{codec} compression needs the codec library cramjam" in problem
    assert "pip install 'binder[kafka-codecs]'" in problem


def test_gzip_needs_no_codec_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cramjam", None)
    tree = {
        "stream": {
            "kafka": {"bindings": {"totals-out-0": {"producer": {"compression-type": "gzip"}}}}
        }
    }
    load_config(None, (), (), TYPES, environ={}, properties=tree, read_files=False)
