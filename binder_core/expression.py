"""Expressions over a message: a small, safe language in SpEL's spelling, never ``eval``.

What Spring users write in ``partition-key-expression``, ``routing-key-expression`` and
``routing-expression`` works here:

- paths over the message: ``payload``, ``payload.symbol``, ``payload.lines[0].sku``,
  ``headers['x-key']``, ``headers.type`` (a step reads a mapping key, a list index or a
  public attribute; nothing is called, so an expression can only read what the message
  holds, and a missing step gives null);
- literals: ``'text'`` / ``"text"`` (a quote doubled inside is one quote), ``42``,
  ``2.5``, ``true``, ``false``, ``null``;
- arithmetic ``+ - * / %`` (``/`` between whole numbers truncates, as in Java; ``+``
  with text joins text), comparisons ``== != < <= > >=`` (also ``eq ne lt le gt ge``),
  ``and`` / ``&&``, ``or`` / ``||``, ``not`` / ``!``, ``cond ? a : b``, Elvis ``a ?: b``,
  parentheses.

The text is parsed once into a tree of closures (precedence climbing over the grammar
below); what runs per message is those closures. Text that is not in the language is an
``ExpressionError`` naming the position; a value that does not fit an operator when the
expression runs (text minus a number, a null operand) is an ``EvaluationError``.

Grammar, loosest first::

    expr     := or ('?' expr ':' expr | '?:' expr)?
    or       := and (('or' | '||') and)*
    and      := compare (('and' | '&&') compare)*
    compare  := sum (('==' | '!=' | '<' | '<=' | '>' | '>=') sum)?
    sum      := product (('+' | '-') product)*
    product  := unary (('*' | '/' | '%') unary)*
    unary    := ('-' | '+' | 'not' | '!') unary | primary
    primary  := literal | path | '(' expr ')'
    path     := ('payload' | 'headers') ('.' name | '?.' name | '[' expr ']')*
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Evaluates an expression on (payload, headers).
Expression = Callable[[Any, Mapping[str, Any]], Any]

#: Longest expression text accepted, and deepest nesting of operators and parentheses:
#: an expression is configuration, not a program.
MAX_LENGTH = 2000
MAX_DEPTH = 40

_ROOTS = ("payload", "headers")


class ExpressionError(ValueError):
    """The expression text is not in the language."""


class EvaluationError(ValueError):
    """An expression met a value its operators cannot take (text minus a number, a null
    operand, a division by zero)."""


# -- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "str", "name", "op", "end"
    text: str
    pos: int
    value: Any = None


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<num>\d+\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?[LlDdFf]?)
  | (?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\?\.|\?:|==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.\[\]()])
    """,
    re.VERBOSE,
)
_WORD_OPS = {
    "and": "&&",
    "or": "||",
    "not": "!",
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "div": "/",
    "mod": "%",
}
_LITERALS = {"true": True, "false": False, "null": None}


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos] in "'\"":
                raise _error(text, pos, "this text has no closing quote")
            raise _error(text, pos, f"unexpected {text[pos]!r}")
        kind = match.lastgroup or ""
        word = match.group()
        if kind == "num":
            digits = word.rstrip("LlDdFf")
            number: Any = float(digits) if any(c in digits for c in ".eE") else int(digits)
            if word[-1:] in "DdFf":
                number = float(number)
            out.append(_Token("num", word, pos, number))
        elif kind == "str":
            quote = word[0]
            out.append(_Token("str", word, pos, word[1:-1].replace(quote * 2, quote)))
        elif kind == "name" and word.lower() in _WORD_OPS:
            out.append(_Token("op", _WORD_OPS[word.lower()], pos))
        elif kind == "name":
            out.append(_Token("name", word, pos))
        elif kind == "op":
            out.append(_Token("op", word, pos))
        pos = match.end()
    out.append(_Token("end", "", len(text)))
    return out


def _error(text: str, pos: int, what: str) -> ExpressionError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return ExpressionError(f"'{shown}': {what} at position {pos}")


# -- parsing -----------------------------------------------------------------------------------

#: Binary operators by how tightly they bind (higher binds tighter).
_BINARY = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
}
_COMPARE = 3
_TIGHTEST = 5


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    @property
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect(self, op: str) -> None:
        token = self.take()
        if token.kind != "op" or token.text != op:
            found = "the end" if token.kind == "end" else repr(token.text)
            raise _error(self.text, token.pos, f"expected {op!r}, found {found}")

    def parse(self) -> Expression:
        node = self.expr()
        token = self.peek
        if token.kind != "end":
            raise _error(self.text, token.pos, f"unexpected {token.text!r}")
        return node

    def _deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(self.text, self.peek.pos, f"nested deeper than {MAX_DEPTH} levels")

    def expr(self) -> Expression:
        self._deeper()
        try:
            node = self.binary(1)
            token = self.peek
            if token.kind == "op" and token.text == "?:":
                self.take()
                return _elvis(node, self.expr())
            if token.kind == "op" and token.text == "?":
                self.take()
                yes = self.expr()
                self.expect(":")
                no = self.expr()
                return _choose(node, yes, no)
            return node
        finally:
            self.depth -= 1

    def binary(self, level: int) -> Expression:
        """Precedence climbing: operands bind to the tighter operators first."""
        if level > _TIGHTEST:
            return self.unary()
        left = self.binary(level + 1)
        while True:
            token = self.peek
            if token.kind != "op" or _BINARY.get(token.text) != level:
                return left
            self.take()
            right = self.binary(level + 1)
            left = _operator(token.text, left, right)
            if level == _COMPARE:  # a < b < c is not meaningful: one comparison per level
                after = self.peek
                if after.kind == "op" and _BINARY.get(after.text) == _COMPARE:
                    raise _error(
                        self.text, after.pos, "comparisons do not chain; use and between them"
                    )

    def unary(self) -> Expression:
        token = self.peek
        if token.kind == "op" and token.text in ("-", "+", "!"):
            self.take()
            self._deeper()
            try:
                operand = self.unary()
            finally:
                self.depth -= 1
            if token.text == "!":
                return _not(operand)
            return _negate(operand) if token.text == "-" else _plus(operand)
        return self.primary()

    def primary(self) -> Expression:
        token = self.take()
        if token.kind in ("num", "str"):
            return _constant(token.value)
        if token.kind == "op" and token.text == "(":
            node = self.expr()
            self.expect(")")
            return node
        if token.kind == "name":
            word = token.text
            if word.lower() in _LITERALS:
                return _constant(_LITERALS[word.lower()])
            if word in _ROOTS:
                return self.path(word)
            if self.peek.kind == "op" and self.peek.text == "(":
                raise _error(self.text, token.pos, f"{word}(): functions cannot be called")
            raise _error(
                self.text,
                token.pos,
                f"unknown name '{word}'; an expression starts from payload or headers (for "
                "example payload.symbol or headers['x-key']), or is a literal",
            )
        if token.kind == "end":
            raise _error(self.text, token.pos, "the expression ends too early")
        raise _error(self.text, token.pos, f"unexpected {token.text!r}")

    def path(self, root: str) -> Expression:
        steps: list[Expression | str | int] = []
        while True:
            token = self.peek
            if token.kind != "op" or token.text not in (".", "?.", "["):
                break
            self.take()
            if token.text == "[":
                index = self.expr()
                self.expect("]")
                value = _constant_value(index)
                steps.append(value if isinstance(value, str | int) else index)
                continue
            name = self.take()
            if name.kind != "name":
                found = "the end" if name.kind == "end" else repr(name.text)
                raise _error(self.text, name.pos, f"expected a name after '.', found {found}")
            if self.peek.kind == "op" and self.peek.text == "(":
                raise _error(
                    self.text,
                    name.pos,
                    f"{name.text}(): methods cannot be called; read a value instead "
                    "(payload.id, headers['key'])",
                )
            steps.append(name.text)
        return _path(root == "headers", tuple(steps))


# -- the tree: closures ------------------------------------------------------------------------


class _Constant:
    """A literal (kept findable, so that a literal index is resolved at parse time)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, payload: Any, headers: Mapping[str, Any]) -> Any:
        return self.value


def _constant(value: Any) -> Expression:
    return _Constant(value)


def _constant_value(node: Expression) -> Any:
    return node.value if isinstance(node, _Constant) else _NOT_CONSTANT


_NOT_CONSTANT: Any = object()


def _path(from_headers: bool, steps: tuple[Expression | str | int, ...]) -> Expression:
    if all(isinstance(s, str | int) for s in steps):
        fixed = steps

        def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
            value: Any = headers if from_headers else payload
            for step in fixed:
                value = _step(value, step)  # type: ignore[arg-type]
                if value is None:
                    return None
            return value

        return evaluate

    def dynamic(payload: Any, headers: Mapping[str, Any]) -> Any:
        value: Any = headers if from_headers else payload
        for step in steps:
            key = step(payload, headers) if callable(step) else step
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise EvaluationError(f"an index must be text or a whole number, not {_kind(key)}")
            value = _step(value, key)
            if value is None:
                return None
        return value

    return dynamic


def _step(value: Any, step: str | int) -> Any:
    if isinstance(step, int):
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return value[step] if -len(value) <= step < len(value) else None
        if isinstance(value, Mapping):
            return value.get(step, value.get(str(step)))
        return None
    if isinstance(value, Mapping):
        return value.get(step)
    if step.startswith("_"):
        return None  # private attributes are not part of a payload's data
    found = getattr(value, step, None)
    return None if callable(found) else found


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return f"a {type(value).__name__}"


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvaluationError(f"cannot {what} {_kind(value)}: a number is needed")
    return value


def _truth(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise EvaluationError(f"'{what}' needs true or false, not {_kind(value)}")
    return value


def _negate(operand: Expression) -> Expression:
    def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
        return -_number(operand(payload, headers), "negate")

    return _folded(evaluate, operand)


def _plus(operand: Expression) -> Expression:
    def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
        return _number(operand(payload, headers), "take the sign of")

    return _folded(evaluate, operand)


def _not(operand: Expression) -> Expression:
    def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
        return not _truth(operand(payload, headers), "not")

    return _folded(evaluate, operand)


def _elvis(value: Expression, fallback: Expression) -> Expression:
    def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
        found = value(payload, headers)
        return fallback(payload, headers) if found is None else found

    return _folded(evaluate, value, fallback)


def _choose(condition: Expression, yes: Expression, no: Expression) -> Expression:
    def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
        if _truth(condition(payload, headers), "?:"):
            return yes(payload, headers)
        return no(payload, headers)

    return _folded(evaluate, condition, yes, no)


def _java_div(a: int | float, b: int | float) -> int | float:
    if b == 0:
        raise EvaluationError("division by zero")
    if isinstance(a, int) and isinstance(b, int):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    return a / b


def _java_mod(a: int | float, b: int | float) -> int | float:
    if b == 0:
        raise EvaluationError("division by zero")
    if isinstance(a, int) and isinstance(b, int):
        return a - b * _java_div(a, b)
    return math.fmod(a, b)


_ARITHMETIC: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "-": ("subtract", lambda a, b: a - b),
    "*": ("multiply", lambda a, b: a * b),
    "/": ("divide", _java_div),
    "%": ("take the remainder of", _java_mod),
}


def _operator(op: str, left: Expression, right: Expression) -> Expression:
    evaluate: Expression
    if op == "+":

        def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
            a, b = left(payload, headers), right(payload, headers)
            if isinstance(a, str) or isinstance(b, str):
                return _text(a) + _text(b)
            return _number(a, "add") + _number(b, "add")

    elif op in _ARITHMETIC:
        what, fn = _ARITHMETIC[op]

        def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
            return fn(_number(left(payload, headers), what), _number(right(payload, headers), what))

    elif op == "&&":

        def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
            return _truth(left(payload, headers), "and") and _truth(right(payload, headers), "and")

    elif op == "||":

        def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
            return _truth(left(payload, headers), "or") or _truth(right(payload, headers), "or")

    elif op == "==":

        def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
            return _equal(left(payload, headers), right(payload, headers))

    elif op == "!=":

        def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
            return not _equal(left(payload, headers), right(payload, headers))

    else:
        compare = _ORDER[op]

        def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
            a, b = left(payload, headers), right(payload, headers)
            if isinstance(a, str) and isinstance(b, str):
                return compare(a, b)
            return compare(_number(a, f"compare ({op})"), _number(b, f"compare ({op})"))

    return _folded(evaluate, left, right)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _folded(evaluate: Expression, *operands: Expression) -> Expression:
    """``evaluate`` itself, or its value once when every operand is a literal (so a
    constant expression, ``'myRoutingKey'`` or ``2 * 3``, costs nothing per message; one
    that always fails, ``1 / 0``, fails when it is compiled)."""
    if all(isinstance(o, _Constant) for o in operands):
        try:
            return _Constant(evaluate(None, {}))
        except EvaluationError as exc:
            raise ExpressionError(str(exc)) from None
    return evaluate


def compile_expression(text: str) -> Expression:
    """Parse ``text`` once; the returned function is what runs per message."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {_kind(text)}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is {len(text):,} characters; at most {MAX_LENGTH:,}")
    if not text.strip():
        raise ExpressionError("the expression is empty")
    return _Parser(text).parse()


def java_hash(key: Any) -> int:
    """The key's hash as Java's ``hashCode`` computes it, so a Python producer picks the same
    partition as a Spring producer for the same key.

    Strings hash their UTF-16 code units (``bytes`` are read as UTF-8 text first); integers
    hash as Jackson would hold them when it reads a JSON number: an ``Integer`` when the
    value fits 32 bits, a ``Long`` when it fits 64, a ``BigInteger`` beyond.
    """
    if isinstance(key, bool):
        return 1231 if key else 1237
    if isinstance(key, int):
        if -(1 << 31) <= key < 1 << 31:
            h = key & _INT
        elif -(1 << 63) <= key < 1 << 63:
            bits = key & _LONG
            h = (bits ^ (bits >> 32)) & _INT
        else:
            h = _big_integer_hash(key)
    else:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        data = text.encode("utf-16-be", "surrogatepass")  # Java hashes UTF-16 code units
        h = 0
        for i in range(0, len(data), 2):
            h = (31 * h + (data[i] << 8 | data[i + 1])) & _INT
    return _signed(h)


_INT = 0xFFFFFFFF
_LONG = 0xFFFFFFFFFFFFFFFF
_MIN_INT = -(1 << 31)


def _signed(h: int) -> int:
    return h - (1 << 32) if h & 0x80000000 else h


def _big_integer_hash(value: int) -> int:
    # BigInteger: 31 * h + each 32-bit word of the magnitude, most significant first,
    # times the sign.
    magnitude = abs(value)
    words = []
    while magnitude:
        words.append(magnitude & _INT)
        magnitude >>= 32
    h = 0
    for word in reversed(words):
        h = (31 * h + word) & _INT
    return (-_signed(h) if value < 0 else h) & _INT


def select_partition(key: Any, count: int) -> int:
    """Spring's default partition selection: the key's ``hashCode``, 0 when that is
    ``Integer.MIN_VALUE`` (whose absolute value is itself, still negative, in Java), then
    ``abs(hash) % count``."""
    h = java_hash(key)
    return 0 if h == _MIN_INT else abs(h) % count
