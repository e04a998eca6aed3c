"""Function kinds come from signatures; definitions parse as Spring's."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Iterator

import pytest

from binder_core.functions import Kind, inspect_function, resolve_definition
from binder_core.message import Message


def supplier() -> int:
    return 1


def consumer(x: str) -> None:
    pass


def function(x: str) -> str:
    return x


async def async_function(x: dict[str, int]) -> list[int]:
    return list(x.values())


def splitter(line: str) -> Iterator[str]:
    yield from line.split()


async def stream(items: AsyncIterator[int]) -> AsyncIterator[int]:
    async for i in items:
        yield i


def with_headers(msg: Message[dict[str, int]]) -> None:
    pass


def batch(items: list[str]) -> int:
    return len(items)


def two(a: int, b: int) -> int:
    return a + b


def test_kinds() -> None:
    assert inspect_function("s", supplier).kind is Kind.SUPPLIER
    assert inspect_function("c", consumer).kind is Kind.CONSUMER
    assert inspect_function("f", function).kind is Kind.FUNCTION
    info = inspect_function("a", async_function)
    assert (info.kind, info.is_async, info.input_type) == (Kind.FUNCTION, True, dict[str, int])
    assert inspect_function("g", splitter).is_generator
    info = inspect_function("r", stream)
    assert (info.reactive, info.is_async_generator, info.input_type) == (True, True, int)
    info = inspect_function("h", with_headers)
    assert (info.wants_message, info.input_type) == (True, dict[str, int])
    info = inspect_function("b", batch)
    assert (info.batch, info.input_type) == (True, str)


def test_two_parameters_are_refused_with_a_reason() -> None:
    with pytest.raises(TypeError, match="takes 2 parameters"):
        inspect_function("two", two)


def module(**fns: object) -> types.ModuleType:
    mod = types.ModuleType("m")
    for name, fn in fns.items():
        setattr(mod, name, fn)
    return mod


def test_composition_names_and_bindings() -> None:
    defs, problems = resolve_definition(
        "function|function;supplier;consumer",
        module(function=function, supplier=supplier, consumer=consumer),
    )
    assert problems == []
    assert [d.name for d in defs] == ["functionfunction", "supplier", "consumer"]
    assert defs[0].input_binding() == "functionfunction-in-0"
    assert [d.kind for d in defs] == [Kind.FUNCTION, Kind.SUPPLIER, Kind.CONSUMER]


def test_unknown_function_is_reported_with_suggestion() -> None:
    _, problems = resolve_definition("functon", module(function=function))
    assert "no function 'functon'" in problems[0].message
    assert "did you mean 'function'?" in problems[0].message


def test_consumer_cannot_be_composed_in_the_middle() -> None:
    _, problems = resolve_definition(
        "consumer|function", module(consumer=consumer, function=function)
    )
    assert "can only come last" in problems[0].message
