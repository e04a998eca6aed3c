"""The partition key path language and Spring-compatible partition selection."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from binder_core.expression import (
    ExpressionError,
    compile_expression,
    java_hash,
    select_partition,
)


@dataclass
class Order:
    symbol: str
    lines: list[dict[str, str]]


def test_paths_over_objects_dicts_and_headers() -> None:
    order = Order("ACME", [{"sku": "x1"}])
    assert compile_expression("payload.symbol")(order, {}) == "ACME"
    assert compile_expression("payload.lines[0].sku")(order, {}) == "x1"
    assert compile_expression("payload['symbol']")({"symbol": "S"}, {}) == "S"
    assert compile_expression("headers['x-key']")(None, {"x-key": "k"}) == "k"
    assert compile_expression('headers["x-key"]')(None, {"x-key": "k"}) == "k"
    assert compile_expression("payload")(b"raw", {}) == b"raw"


def test_missing_steps_give_none_not_errors() -> None:
    assert compile_expression("payload.nope.deeper")({"a": 1}, {}) is None
    assert compile_expression("payload.lines[5]")(Order("a", []), {}) is None


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "payload.symbol()",
        "payload.a = 1",
        "T(java.lang.Runtime)",
        "os.environ",
        "",
    ],
)
def test_calls_names_and_assignments_are_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(text)


def test_private_attributes_are_not_reachable() -> None:
    assert compile_expression("payload.__class__")(Order("a", []), {}) is None


def test_hash_matches_java_string_hash_code() -> None:
    # Values of java.lang.String#hashCode / Integer#hashCode
    assert java_hash("hello") == 99162322
    assert java_hash("") == 0
    assert java_hash("polygenelubricants") == -2147483648
    assert java_hash("é€") == 15587
    assert java_hash(42) == 42
    assert select_partition("polygenelubricants", 5) == 0  # Spring maps MIN_VALUE to 0
