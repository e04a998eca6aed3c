"""RabbitMQ smoke test with the raw pika client: no binder code involved."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pika
import pytest

pytestmark = pytest.mark.rabbit

DEADLINE_S = 10.0


def test_rabbit_publish_confirm_consume_ack(
    rabbit_url: str, unique_name: Callable[[str], str]
) -> None:
    exchange, queue = unique_name("smoke-ex"), unique_name("smoke-q")
    payload = f"rabbit-smoke-{uuid.uuid4().hex}".encode()

    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(exchange, exchange_type="direct", auto_delete=False)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="smoke")
        try:
            # With confirms on, basic_publish returns once the broker confirmed the message,
            # and raises UnroutableError (mandatory) or NackError otherwise.
            channel.basic_publish(
                exchange,
                "smoke",
                payload,
                properties=pika.BasicProperties(delivery_mode=2, message_id="m-1"),
                mandatory=True,
            )

            received: list[tuple[str | None, bytes]] = []
            deadline = time.monotonic() + DEADLINE_S
            for method, properties, body in channel.consume(queue, inactivity_timeout=0.5):
                if method is None:
                    if time.monotonic() > deadline:
                        break
                    continue
                received.append((properties.message_id, body))
                channel.basic_ack(method.delivery_tag)
                break
            assert channel.cancel() == 0  # nothing was delivered and left unacknowledged
            assert received == [("m-1", payload)]
            assert channel.queue_declare(queue, passive=True).method.message_count == 0
        finally:
            channel.queue_delete(queue)
            channel.exchange_delete(exchange)
    finally:
        connection.close()
