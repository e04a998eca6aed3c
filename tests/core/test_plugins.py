"""Plugins cannot take over a binder type or a converter by hook order: two providers of
one binder type are an error naming both, unless configuration chooses one."""

from __future__ import annotations

from typing import Any

import pytest

from binder_core.config import load_config
from binder_core.errors import BinderException, ConfigError
from binder_core.hookspecs import hookimpl
from binder_core.plugins import load_plugins
from binder_core.spi import Binder, BinderType, Converter
from binders.kafka.settings import KafkaEnvironment


def _impostor(name: str, environment: Any) -> Binder:
    raise BinderException("the impostor was used")


class TakeOverFirst:
    """A plugin that tries to be called first for the kafka type and for JSON."""

    __name__ = "takeover_first"

    @hookimpl(tryfirst=True)
    def binder_types(self) -> list[BinderType]:
        return [BinderType("kafka", _impostor, KafkaEnvironment, description="impostor")]

    @hookimpl(tryfirst=True)
    def message_converters(self) -> list[Converter]:
        return [Converter("application/json", lambda b: "evil", lambda v: b"evil")]


class TakeOverLast(TakeOverFirst):
    __name__ = "takeover_last"

    @hookimpl(trylast=True)
    def binder_types(self) -> list[BinderType]:
        return [BinderType("kafka", _impostor, KafkaEnvironment, description="impostor")]


def _load(registry: Any, tree: dict[str, Any] | None = None) -> Any:
    return load_config(
        None, [], [], registry.binder_types, environ={}, properties=tree, read_files=False
    )


@pytest.mark.parametrize("plugin", [TakeOverFirst(), TakeOverLast()])
def test_a_second_provider_of_a_binder_type_is_an_error_naming_both(plugin: object) -> None:
    registry = load_plugins(extra=[plugin])
    assert "kafka" not in registry.binder_types
    assert [i.distribution for i in registry.binder_types.conflicts["kafka"]] == [
        "binder",
        "(registered in code)",
    ]
    with pytest.raises(ConfigError) as exc:
        _load(registry)
    text = exc.value.render()
    assert (
        "stream.binder-types.kafka: binder type 'kafka' is provided by '(registered in code)' "
        "and 'binder'; choose one with stream.binder-types.kafka: <distribution>" in text
    )


def test_configuration_chooses_the_provider() -> None:
    registry = load_plugins(extra=[TakeOverFirst()])
    _load(registry, {"stream": {"binder-types": {"kafka": "binder"}}})
    assert registry.binder_types["kafka"].description != "impostor"
    assert registry.binder_types.origin("kafka").distribution == "binder"  # type: ignore[union-attr]
    _load(registry, {"stream": {"binder_types": {"kafka": "(registered in code)"}}})
    assert registry.binder_types["kafka"].description == "impostor"


def test_a_choice_that_fits_nothing_is_reported() -> None:
    registry = load_plugins()
    with pytest.raises(ConfigError) as exc:
        _load(registry, {"stream": {"binder-types": {"kafka": "someone-else", "kafak": "x"}}})
    text = exc.value.render()
    assert "stream.binder-types.kafka: 'someone-else' does not provide binder type 'kafka'" in text
    assert "provided by 'binder'" in text
    assert "stream.binder-types.kafak: no installed distribution provides binder type 'kafak'" in (
        text
    )
    assert "did you mean 'kafka'?" in text


def test_the_core_keeps_its_converters_whatever_the_hook_order() -> None:
    registry = load_plugins(extra=[TakeOverFirst()])
    assert registry.converters["application/json"].decode(b'{"a": 1}') == {"a": 1}
    assert registry.origin["converter:application/json"].distribution == "binder"
    assert "already provided by binder" in registry.failures["takeover_first"]


def test_one_provider_per_type_needs_no_choice() -> None:
    registry = load_plugins()
    assert not registry.binder_types.conflicts
    assert {"kafka", "memory", "rabbit"} <= set(registry.binder_types)
    _load(registry)
