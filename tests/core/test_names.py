"""Destination and group names checked against each broker's rules at configuration load:
one more problem in the single start-up report, with its key path."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path
from typing import Any

import pytest

from binder_core.config import load_config
from binder_core.errors import ConfigError
from binder_core.plan import make_plan
from binder_core.plugins import load_plugins
from binders.kafka.plugin import check_name as kafka
from binders.memory.plugin import check_name as memory
from binders.rabbit.plugin import check_name as rabbit

REGISTRY = load_plugins()
ROOT = Path(__file__).resolve().parents[2]


def test_kafka_topic_names() -> None:
    assert kafka("destination", "a" * 249) is None
    assert kafka("destination", "orders.v1_x-y") is None
    assert "at most 249" in str(kafka("destination", "a" * 250))
    assert "found ' ', '/'" in str(kafka("destination", "a b/c"))
    assert "found 'é'" in str(kafka("destination", "café"))
    for name in (".", ".."):
        assert "not allowed" in str(kafka("destination", name))
    assert "cannot be empty" in str(kafka("destination", ""))
    assert "cannot be empty" in str(kafka("group", ""))
    assert kafka("group", "any group / id") is None  # group ids are free-form
    assert kafka("subscription", "x" * 10_000) is None


def test_rabbit_names_count_utf8_bytes_and_the_derived_queues() -> None:
    assert rabbit("destination", "d" * 255) is None
    assert "256 bytes" in str(rabbit("destination", "d" * 256))
    assert "256 bytes" in str(rabbit("destination", "é" * 128))  # 128 characters
    assert "256 bytes" in str(rabbit("group", "g" * 256))
    assert rabbit("subscription", "q" * 251) is None  # + ".dlq" is 255
    assert "dead-letter queue" in str(rabbit("subscription", "q" * 252))


def test_memory_refuses_a_megabyte_name() -> None:
    assert memory("destination", "m" * 1024) is None
    assert "1,048,576 characters" in str(memory("destination", "m" * 1024 * 1024))
    assert "cannot be empty" in str(memory("group", ""))


def test_redis_bounds_its_keys() -> None:
    # The plugin's source, not the copy pip installed into the environment.
    source = ROOT / "plugins" / "binder-redis" / "binder_redis" / "plugin.py"
    spec = importlib.util.spec_from_file_location("binder_redis_plugin_source", source)
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    redis = plugin.check_name
    assert redis("destination", "r" * 1024) is None
    assert "1,025 bytes" in str(redis("destination", "r" * 1025))
    assert "cannot be empty" in str(redis("group", ""))


def _load(tree: dict[str, Any], overrides: tuple[str, ...] = ()) -> Any:
    return load_config(
        None,
        [],
        list(overrides),
        REGISTRY.binder_types,
        environ={},
        properties=tree,
        read_files=False,
    )


def test_bad_names_are_problems_in_the_one_report_with_key_paths(tmp_path: Path) -> None:
    long = "d" * 200
    tree = {
        "stream": {
            "bindings": {
                "a-in-0": {"destination": "bad topic", "group": "", "binder": "kafka"},
                "b-out-0": {
                    "destination": long,
                    "binder": "rabbit",
                    "producer": {"required-groups": ["g" * 60]},
                },
                "c-in-0": {"destination": "ok", "destnation": "typo"},
            },
            "kafka": {"bindings": {"a-in-0": {"consumer": {"dlq-name": "."}}}},
        }
    }
    with pytest.raises(ConfigError) as exc:
        _load(tree)
    text = exc.value.render()
    assert text.startswith("configuration has 5 problems:"), text
    assert (
        "stream.bindings.a-in-0.destination: destination 'bad topic' is not a valid kafka name"
        in text
    )
    assert "stream.bindings.a-in-0.group: group '' is not a valid kafka name" in text
    assert "stream.kafka.bindings.a-in-0.consumer.dlq-name: dead-letter destination '.'" in text
    assert "stream.bindings.b-out-0.producer.required-groups: queue 'dddd" in text
    assert "(261 characters) is not a valid rabbit name" in text
    assert "stream.bindings.c-in-0.destnation: unknown key" in text


def test_a_megabyte_destination_is_refused_without_being_echoed() -> None:
    huge = "m" * (1024 * 1024)
    with pytest.raises(ConfigError) as exc:
        _load({}, (f"stream.bindings.f-out-0.destination={huge}",))
    text = exc.value.render()
    assert "stream.bindings.f-out-0.destination" in text and "1,048,576 characters" in text
    assert len(text) < 1000


def test_a_binding_only_a_function_defines_is_checked_when_the_app_is_planned() -> None:
    module = types.ModuleType("names_app")

    def shout(word: str) -> str:
        return word.upper()

    module.shout = shout  # type: ignore[attr-defined]
    tree = {
        "stream": {
            "default-binder": "kafka",
            "function": {"definition": "shout", "bindings": {"shout-out-0": "loud words"}},
        }
    }
    config = _load(tree)
    with pytest.raises(ConfigError) as exc:
        make_plan(config, module, REGISTRY.converters)
    text = exc.value.render()
    assert (
        "stream.bindings.loud words.destination: destination (the binding's name) 'loud words' "
        "is not a valid kafka name" in text
    )
