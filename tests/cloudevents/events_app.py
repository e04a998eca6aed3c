"""The app of the CloudEvents tests: orders in, orders out, the attributes it saw kept."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from binder_core.message import Message

#: (order, attributes) of every event ``handle`` received, in this process.
SEEN: list[tuple[Order, dict[str, Any]]] = []


class Order(BaseModel):
    id: int
    symbol: str


def handle(order: Message[Order]) -> Order:
    SEEN.append((order.payload, dict(order.ce)))
    return Order(id=order.payload.id, symbol=order.payload.symbol.lower())
