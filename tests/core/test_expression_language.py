"""The expression language Spring users write in partition-key, routing-key and routing
expressions: literals, arithmetic, comparisons and logic over payload and headers, parsed
once, never evaluated as code; any text is either an expression or a clear error."""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binder_core.expression import (
    MAX_DEPTH,
    EvaluationError,
    ExpressionError,
    compile_expression,
)

PAYLOAD = {"id": 7, "symbol": "ACME", "price": 2.5, "lines": [{"sku": "x1"}], "ok": True}
HEADERS = {"partitionKey": 3, "type": "order", "name": "it's"}


def run(text: str, payload: Any = PAYLOAD, headers: Any = HEADERS) -> Any:
    return compile_expression(text)(payload, headers)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("headers['partitionKey'] - 1", 2),  # Spring's partitioning guide
        ("'myRoutingKey'", "myRoutingKey"),  # a quoted literal routing key
        ('"double"', "double"),
        ("'it''s'", "it's"),  # a doubled quote is one quote, as in SpEL
        ("42", 42),
        ("2.5", 2.5),
        ("10L", 10),
        ("true", True),
        ("null", None),
        ("1 + 2 * 3", 7),  # precedence
        ("(1 + 2) * 3", 9),
        ("2 * 3 % 4", 2),  # left to right at one level
        ("10 - 4 - 3", 3),
        ("-7 / 2", -3),  # Java's integer division truncates
        ("-7 % 3", -1),  # and its remainder keeps the dividend's sign
        ("7 / 2.0", 3.5),
        ("payload.id % 2", 1),
        ("payload.id div 2", 3),
        ("'key-' + payload.id", "key-7"),  # + with text joins text
        ("payload.symbol + '-' + headers.type", "ACME-order"),
        ("payload.id > 5", True),
        ("payload.id ge 8", False),
        ("payload.symbol == 'ACME'", True),
        ("payload.symbol != 'ACME'", False),
        ("'a' < 'b'", True),
        ("payload.ok and payload.id > 5", True),
        ("payload.ok && !payload.ok", False),
        ("not payload.ok or true", True),
        ("headers.type == 'order' ? 'orders' : 'other'", "orders"),
        ("headers['missing'] ?: 'fallback'", "fallback"),
        ("headers['type'] ?: 'fallback'", "order"),
        ("payload.lines[0].sku", "x1"),
        ("payload['lines'][0]['sku']", "x1"),
        ("headers[payload.symbol == 'ACME' ? 'type' : 'name']", "order"),
        ("headers.name", "it's"),
        ("payload?.symbol", "ACME"),
        ("payload.nothing.deeper", None),
        ("1 == true", False),  # a number is not a boolean
    ],
)
def test_spring_forms(text: str, value: Any) -> None:
    assert run(text) == value


def test_a_constant_is_computed_once() -> None:
    expression = compile_expression("'myRoutingKey'")
    assert expression(object(), {}) == "myRoutingKey"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("payload.id()", "methods cannot be called"),
        ("payload.symbol.toUpperCase()", "methods cannot be called"),
        ("hashCode(payload)", "functions cannot be called"),
        ("T(java.lang.System).exit(1)", "functions cannot be called"),
        ("os.environ", "unknown name 'os'"),
        ("#root.payload", "unexpected '#'"),
        ("payload.id = 3", "unexpected '='"),
        ("1 < 2 < 3", "comparisons do not chain"),
        ("'open", "no closing quote"),
        ("payload +", "ends too early"),
        ("(payload.id", "expected ')'"),
        ("payload.", "expected a name after '.'"),
        ("1 / 0", "division by zero"),
        ("", "empty"),
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "nested deeper"),
        ("1" * 3000, "at most"),
    ],
)
def test_refusals_name_the_problem(text: str, said: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        compile_expression(text)
    assert said in str(exc.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("headers['type'] - 1", "cannot subtract text"),
        ("headers['missing'] - 1", "cannot subtract null"),
        ("payload.id / (payload.id - 7)", "division by zero"),
        ("payload.id and true", "needs true or false"),
        ("payload.symbol > 3", "cannot compare (>) text"),
        ("headers[payload.price]", "an index must be text or a whole number"),
    ],
)
def test_values_that_do_not_fit_fail_when_evaluated(text: str, said: str) -> None:
    expression = compile_expression(text)
    with pytest.raises(EvaluationError) as exc:
        expression(PAYLOAD, HEADERS)
    assert said in str(exc.value)


def test_bytes_headers_join_as_text() -> None:
    assert run("'k-' + headers.raw", headers={"raw": b"v"}) == "k-v"


# -- fuzzing: any text is a compiled expression or an ExpressionError --------------------

_WORDS = ["payload", "headers", "and", "or", "not", "true", "null", "?:", "?.", "=="]
_ALPHABET = st.sampled_from(
    [*"payloadheaders.[]()'\"0123456789+-*/%<>=!?:&| _abcxyz#$\\\n", *_WORDS]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_any_text_compiles_or_is_refused_clearly(text: str) -> None:
    try:
        expression = compile_expression(text)
    except ExpressionError as exc:
        assert str(exc)
        return
    try:
        expression(PAYLOAD, HEADERS)
    except EvaluationError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_unicode_never_escapes_as_another_error(text: str) -> None:
    with contextlib.suppress(ExpressionError):
        compile_expression(text)


_NUMBERS = st.integers(min_value=-1000, max_value=1000)


@settings(max_examples=300, deadline=None)
@given(
    _NUMBERS, _NUMBERS, _NUMBERS, st.sampled_from(["+", "-", "*"]), st.sampled_from(["+", "-", "*"])
)
def test_arithmetic_agrees_with_python_precedence(
    a: int, b: int, c: int, op1: str, op2: str
) -> None:
    text = f"headers.a {op1} headers.b {op2} headers.c"
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    product_first = op2 == "*" and op1 != "*"
    expected = ops[op1](a, b * c) if product_first else ops[op2](ops[op1](a, b), c)
    assert run(text, headers={"a": a, "b": b, "c": c}) == expected


@settings(max_examples=300, deadline=None)
@given(_NUMBERS, _NUMBERS.filter(lambda n: n != 0))
def test_division_and_remainder_are_javas(a: int, b: int) -> None:
    q = run("headers.a / headers.b", headers={"a": a, "b": b})
    r = run("headers.a % headers.b", headers={"a": a, "b": b})
    assert q == math.trunc(a / b)
    assert q * b + r == a
