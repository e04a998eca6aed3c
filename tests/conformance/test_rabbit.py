"""The RabbitMQ binder against the conformance suite, on the real broker."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import pika
import pytest

from binder_core.message import Message
from binder_core.testing.conformance import BinderConformance, Kit, Subject
from tests.restart import restart_rabbit


def _drain_queue(url: str, queue: str, count: int, timeout: float) -> list[Message[bytes]]:
    """Dead letters sit in the queue <destination>.<group>.dlq: read it as an operator would."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        got: list[Message[bytes]] = []
        for method, props, body in channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                break
            got.append(Message(body, dict(props.headers or {})))
            channel.basic_ack(method.delivery_tag)
            if len(got) >= count:
                break
        channel.cancel()
        return got
    finally:
        connection.close()


@pytest.mark.rabbit
class TestRabbitConformance(BinderConformance):
    @pytest.fixture
    def subject(self, rabbit_url: str, unique_name: Callable[[str], str]) -> Subject:
        async def read(kit: Kit, destination: str, group: str, count: int, timeout: float) -> Any:
            return await asyncio.to_thread(
                _drain_queue, rabbit_url, f"{destination}.{group}.dlq", count, timeout
            )

        return Subject(
            "rabbit",
            {"uri": rabbit_url},
            names=unique_name,
            read_dead_letters=read,
            # stop_app + start_app on whatever node listens there (tests/restart.py).
            restart_broker=functools.partial(restart_rabbit, rabbit_url),
        )
