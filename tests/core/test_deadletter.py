"""Dead-letter reasons: bounded, marked when cut, and without the input values a pydantic
validation error would quote."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from binder_core.deadletter import (
    EXCEPTION_FQCN,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    exception_headers,
    truncate,
)
from binder_core.limits import EXCEPTION_MESSAGE_LENGTH, STACK_TRACE_LENGTH
from binder_core.testing import TestApp

ONE_ATTEMPT = {"stream": {"default": {"consumer": {"max-attempts": 1}}}}


class Card(BaseModel):
    number: int
    holder: str


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def left_out(text: str) -> int:
    found = re.search(r"\[truncated, (\d+) chars\]", text)
    assert found is not None, text[-80:]
    return int(found.group(1))


def test_a_long_reason_is_cut_at_the_limit_and_says_how_much_was_left_out() -> None:
    text = "x" * 100_000
    headers = exception_headers(raised(ValueError(text)))
    message = headers[EXCEPTION_MESSAGE]
    assert len(message) <= EXCEPTION_MESSAGE_LENGTH
    assert message.endswith("chars]")
    kept = len(message.split("... [truncated")[0])
    assert kept + left_out(message) == len(text)


def test_a_short_reason_is_kept_whole() -> None:
    assert exception_headers(raised(KeyError("k")))[EXCEPTION_MESSAGE] == "'k'"
    assert exception_headers(raised(RuntimeError()))[EXCEPTION_MESSAGE] == "RuntimeError"


def test_truncate_at_every_length_keeps_the_limit() -> None:
    text = "abcdefghij" * 50
    for limit in range(40, len(text) + 2):
        for keep_end in (False, True):
            cut = truncate(text, limit, keep_end)
            assert len(cut) <= limit
            if cut != text:
                kept = len(cut) - len(f"... [truncated, {left_out(cut)} chars]")
                assert kept + left_out(cut) == len(text)


def test_a_long_trace_keeps_its_end_where_the_exception_is() -> None:
    cause: BaseException | None = None
    for step in range(300):
        try:
            raise KeyError(f"step {step}") from cause
        except KeyError as exc:
            cause = exc
    trace = exception_headers(_with_cause(ValueError("the last one"), cause))[EXCEPTION_STACKTRACE]
    assert len(trace) <= STACK_TRACE_LENGTH
    assert trace.startswith("[truncated, ")
    assert trace.rstrip().endswith("ValueError: the last one")


def _with_cause(exc: BaseException, cause: BaseException | None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as caught:
        return caught


def test_a_validation_error_is_described_without_the_input_values() -> None:
    secret = "-".join(["4111", "1111", "hunter2"])  # not in the source line that raises
    try:
        Card.model_validate({"number": secret, "holder": None})
    except ValidationError as exc:
        wrapped = RuntimeError("could not read the card")
        wrapped.__cause__ = exc
        headers = {**exception_headers(exc), **{"wrapped": exception_headers(wrapped)}}
    message = headers[EXCEPTION_MESSAGE]
    assert "2 validation errors for Card" in message
    assert "number: Input should be a valid integer" in message
    assert "holder: Input should be a valid string" in message
    for text in (message, headers[EXCEPTION_STACKTRACE], str(headers["wrapped"])):
        assert "hunter2" not in text and "4111" not in text
    assert "The above exception was the direct cause" in str(headers["wrapped"])


def test_an_exception_whose_text_cannot_be_read_is_still_described() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    headers = exception_headers(raised(Broken()))
    assert "Broken" in headers[EXCEPTION_MESSAGE]
    assert headers[EXCEPTION_FQCN].endswith("Broken")


async def test_dead_letters_carry_a_bounded_reason_without_the_payload() -> None:
    def charge(order: dict[str, Any]) -> None:
        if order.get("huge"):
            raise ValueError("refused: " + "y" * 50_000)
        Card.model_validate(order)

    async with TestApp({"charge": charge}, properties=ONE_ATTEMPT) as app:
        await app.send("charge-in-0", {"huge": True})
        await app.send("charge-in-0", {"number": "secret-4111", "holder": "Ann"})
        dlq = app.dead_letter_destination("charge-in-0")
        huge, invalid = await app.receive_all(dlq, 2)
        assert len(huge.headers[EXCEPTION_MESSAGE]) <= EXCEPTION_MESSAGE_LENGTH
        assert left_out(huge.headers[EXCEPTION_MESSAGE]) > 40_000
        assert "number: Input should be a valid integer" in invalid.headers[EXCEPTION_MESSAGE]
        assert "secret-4111" not in invalid.headers[EXCEPTION_MESSAGE]
        assert "secret-4111" not in invalid.headers[EXCEPTION_STACKTRACE]
