"""An app whose functions use every conversion type, for the AsyncAPI tests."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from binder_core.message import Message


class Side(Enum):
    BUY = "buy"
    SELL = "sell"


class Order(BaseModel):
    """An order as the shop sends it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": 7, "symbol": "ACME", "side": "buy", "qty": 3}]}
    )

    id: int
    symbol: str = Field(min_length=1, max_length=8)
    side: Side
    qty: int = Field(gt=0)
    note: str | None = None


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool = True


class Pet(BaseModel):
    pet: Cat | Dog = Field(discriminator="kind")
    pair: tuple[int, str]
    tags: set[str] = set()


@dataclasses.dataclass
class Fill:
    order_id: int
    price: float
    venue: str = "X"


def text_in(word: str) -> str:
    return word.upper()


def bytes_in(raw: bytes) -> bytes:
    return raw[::-1]


def dict_in(data: dict[str, Any]) -> list[int]:
    return [len(data)]


def model_in(order: Order) -> Fill:
    return Fill(order.id, 1.0)


def message_in(msg: Message[Order]) -> Message[Fill]:
    return Message(Fill(msg.payload.id, 2.0), {"x": 1})


def batch_in(orders: list[Order]) -> list[Fill]:
    return [Fill(o.id, 3.0) for o in orders]


def split(order: Order) -> tuple[Fill, Order | None]:
    return Fill(order.id, 4.0), None


def pets(pet: Pet) -> None:
    return None


def ticks() -> Iterator[Order]:
    yield Order(id=1, symbol="A", side=Side.SELL, qty=1)


async def streamed(orders: AsyncIterator[Order]) -> AsyncIterator[Fill]:
    async for order in orders:
        yield Fill(order.id, 5.0)


def untyped(value):  # type: ignore[no-untyped-def]
    return value
