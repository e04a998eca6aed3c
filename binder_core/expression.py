"""The partition key expression: a small, safe path language, never ``eval``.

Grammar: a root (``payload`` or ``headers``) followed by steps, each ``.name`` or
``['key']`` / ``["key"]`` / ``[0]``. Examples: ``payload.symbol``,
``headers['x-key']``, ``payload.order.lines[0].sku``. A step reads an attribute or a mapping
key; nothing is called, so an expression can only read what the message holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_STEP = re.compile(
    r"""\.(?P<attr>[A-Za-z_][A-Za-z0-9_-]*)|\[\s*(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<idx>-?\d+))\s*\]"""
)
_ROOTS = ("payload", "headers")

#: Evaluates an expression on (payload, headers).
Expression = Callable[[Any, Mapping[str, Any]], Any]


class ExpressionError(ValueError):
    """The expression text is not in the path language."""


def compile_expression(text: str) -> Expression:
    """Parse ``text`` once; the returned function is what runs per message."""
    source = text.strip()
    root = next((r for r in _ROOTS if source.startswith(r)), None)
    if root is None:
        raise ExpressionError(
            f"'{text}' must start with payload or headers (for example payload.symbol "
            "or headers['x-key'])"
        )
    steps: list[str | int] = []
    pos = len(root)
    while pos < len(source):
        match = _STEP.match(source, pos)
        if match is None:
            raise ExpressionError(
                f"'{text}': unexpected '{source[pos:]}' at position {pos}; steps are "
                ".name or ['key'] or [index]"
            )
        if match["attr"] is not None:
            steps.append(match["attr"])
        elif match["idx"] is not None:
            steps.append(int(match["idx"]))
        else:
            steps.append(match["sq"] if match["sq"] is not None else match["dq"])
        pos = match.end()
    path = tuple(steps)
    from_headers = root == "headers"

    def evaluate(payload: Any, headers: Mapping[str, Any]) -> Any:
        value: Any = headers if from_headers else payload
        for step in path:
            value = _step(value, step)
            if value is None:
                return None
        return value

    return evaluate


def _step(value: Any, step: str | int) -> Any:
    if isinstance(step, int):
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return value[step] if -len(value) <= step < len(value) else None
        return None
    if isinstance(value, Mapping):
        return value.get(step)
    if step.startswith("_"):
        return None  # private attributes are not part of a payload's data
    return getattr(value, step, None)


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
