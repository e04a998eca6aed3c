"""Confirmation bookkeeping of one published batch, fed the answers RabbitMQ may give in any
order (no broker needed: these are the tag arithmetic's edge cases)."""

from __future__ import annotations

import asyncio

from pika import BasicProperties

from binders.rabbit.headers import TableProperties, headers_of
from binders.rabbit.publisher import _Batch

PROPS = BasicProperties()


def batch(n: int, first: int = 1) -> _Batch:
    items = [("rk", f"m{i}".encode(), PROPS) for i in range(n)]
    return _Batch(first, items, asyncio.get_running_loop().create_future())


async def test_multiple_ack_settles_a_prefix_and_then_the_rest() -> None:
    b = batch(5, first=11)
    assert not b.settle_upto(13, True, "")
    assert b.unconfirmed() == [3, 4]
    assert b.settle_upto(15, True, "")
    assert b.reasons == {}


async def test_single_acks_out_of_order() -> None:
    b = batch(3)
    assert not b.settle_one(3, True, "")
    assert not b.settle_one(1, True, "")
    assert b.unconfirmed() == [1]
    assert b.settle_one(2, True, "")


async def test_nacks_are_failures_with_a_reason() -> None:
    b = batch(4)
    assert not b.settle_one(2, False, "nack")
    assert b.settle_upto(4, False, "nack-multi")
    assert b.reasons == {0: "nack-multi", 1: "nack", 2: "nack-multi", 3: "nack-multi"}


async def test_a_returned_message_fails_when_its_ack_comes_even_after_later_acks() -> None:
    b = batch(3)
    assert b.mark_returned("rk", b"m0", None, "unroutable", exact=False)
    assert not b.settle_one(2, True, "")
    assert not b.settle_one(3, True, "")
    assert b.settle_one(1, True, ""), "the returned message's ack completes the batch"
    assert b.reasons == {0: "unroutable"}


async def test_a_multiple_ack_over_a_returned_message_keeps_it_failed() -> None:
    b = batch(3)
    assert b.mark_returned("rk", b"m1", None, "unroutable", exact=False)
    assert b.settle_upto(3, True, "")
    assert b.reasons == {1: "unroutable"}


async def test_identical_messages_are_returned_oldest_first() -> None:
    items = [("rk", b"same", PROPS), ("rk", b"same", PROPS)]
    b = _Batch(1, items, asyncio.get_running_loop().create_future())
    assert b.mark_returned("rk", b"same", None, "r1", exact=False)
    assert b.mark_returned("rk", b"same", None, "r2", exact=False)
    assert not b.mark_returned("rk", b"same", None, "r3", exact=False)
    assert b.reasons == {0: "r1", 1: "r2"}


def test_header_tables_encode_what_pika_cannot_and_read_back() -> None:
    import datetime
    from decimal import Decimal

    headers = {
        "s": "värde", "i": 42, "big": 2**40, "neg": -(2**35), "f": 0.25, "t": True,
        "b": b"\x00\xff", "d": Decimal("-1.25"), "none": None, "list": [1, "x", 2.5],
        "nested": {"deep": {"x": 1.5}},
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    }  # fmt: skip
    props = TableProperties(content_type="application/json", delivery_mode=2, headers=headers)
    encoded = b"".join(props.encode())
    assert headers_of(encoded, 0) == headers
    decoded = BasicProperties()
    decoded.decode(encoded)  # pika reads our encoding (bar the doubles, which we re-read)
    assert decoded.content_type == "application/json" and decoded.delivery_mode == 2
    assert decoded.headers["s"] == "värde" and decoded.headers["b"] == b"\x00\xff"
