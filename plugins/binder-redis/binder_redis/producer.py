"""Producing to Redis Streams: XADD, pipelined, one round trip per slice of outputs; a
partitioned destination has one stream per partition."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from binder_core.errors import DeliveryError, ProducerClosedError
from binder_core.message import Message
from binder_redis.client import RedisClient
from binder_redis.connection import Command, Link
from binder_redis.fields import PAYLOAD, encode_headers
from binder_redis.settings import RedisProducerProperties


class RedisOutbox:
    """The outputs of one input batch: each slice is sent as it is added (a pipelined
    round trip of its own), and ``confirm`` collects Redis's replies."""

    __slots__ = ("_sink", "_tasks")

    def __init__(self, sink: RedisSink) -> None:
        self._sink = sink
        self._tasks: list[asyncio.Future[list[object]]] = []

    async def add(self, messages: Sequence[Message[bytes]]) -> int | None:
        sink = self._sink
        if sink.closed:
            raise ProducerClosedError(
                f"cannot send to '{sink.destination}': its producer is closed"
            )
        self._tasks.append(asyncio.ensure_future(sink.send(sink.commands(messages))))
        return None

    async def confirm(self) -> list[Exception | None]:
        if not self._tasks:
            return []
        replies = await asyncio.gather(*self._tasks)
        destination = self._sink.destination
        return [
            DeliveryError(f"Redis refused a message for '{destination}': {r}")
            if isinstance(r, ResponseError)
            else None
            for batch in replies
            for r in batch
        ]


class RedisSink:
    """XADDs to one destination's stream(s)."""

    def __init__(
        self,
        client: RedisClient,
        destination: str,
        keys: list[bytes],
        ext: RedisProducerProperties,
    ) -> None:
        self._client = client
        self.destination = destination
        self._keys = keys
        self._trim: tuple[bytes, ...] = (
            (b"MAXLEN", b"~", str(ext.max_length).encode()) if ext.max_length else ()
        )
        self._round_robin = itertools.count()
        self._idle: list[Link] = []  # one link per concurrent send, reused
        self.closed = False

    def commands(self, messages: Sequence[Message[bytes]]) -> list[Command]:
        keys, trim = self._keys, self._trim
        if len(keys) == 1:
            head = (b"XADD", keys[0], *trim, b"*", PAYLOAD)
            return [(*head, m.payload, *encode_headers(m.headers)) for m in messages]
        n, rr = len(keys), self._round_robin
        return [
            (
                b"XADD",
                keys[(next(rr) if m.partition is None else m.partition) % n],
                *trim,
                b"*",
                PAYLOAD,
                m.payload,
                *encode_headers(m.headers),
            )
            for m in messages
        ]

    async def send(self, commands: list[Command]) -> list[object]:
        """One pipelined round trip (reconnecting for up to ``send-timeout``)."""
        link = self._idle.pop() if self._idle else self._client.link()
        try:
            return await self._client.with_reconnect(link, commands, "send")
        finally:
            self._idle.append(link)

    def outbox(self, transaction: Any = None) -> RedisOutbox:
        if self.closed:
            raise ProducerClosedError(
                f"cannot send to '{self.destination}': its producer is closed"
            )
        return RedisOutbox(self)

    async def close(self) -> None:
        self.closed = True
        links, self._idle = self._idle, []
        for link in links:
            await link.close()
