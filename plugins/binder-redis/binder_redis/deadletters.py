"""Dead-letter access for ``binder dlq``, through the core's dead-letter SPI
(``binder_core.dlq.spi``): the dead-letter streams ``<destination>.<group>.dlq`` (or a
binding's ``dlq-name``), key-prefix applied.

Entries are read with XRANGE, up to the last entry there when the stream was opened, and
removed with XDEL once their replayed copy was confirmed (the XADD's reply). The entry id
tells when the letter was dead-lettered. A replay without ``--to`` goes back to the stream
it came from (``x-original-stream``: the partition stream of a partitioned destination).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from binder_core.deadletter import ORIGINAL_TOPIC
from binder_core.dlq.letters import text
from binder_core.dlq.spi import DeadLetter, NoDeadLetterQueue
from binder_core.errors import DeliveryError
from binder_core.message import Message
from binder_core.spi import ConsumerSpec
from binder_redis.connection import Command
from binder_redis.consumer import ORIGINAL_STREAM
from binder_redis.fields import PAYLOAD, FieldsError, decode_fields, encode_headers
from binder_redis.settings import RedisConsumerProperties

if TYPE_CHECKING:
    from binder_redis.binder import RedisBinder

_SUFFIX = ".dlq"


class RedisDeadLetters:
    """The dead-letter streams of one Redis binder."""

    def __init__(self, binder: RedisBinder) -> None:
        self._binder = binder
        self._client = binder.client

    def locate(self, spec: ConsumerSpec) -> str | None:
        ext = spec.extension if isinstance(spec.extension, RedisConsumerProperties) else None
        ext = ext or RedisConsumerProperties()
        if not ext.enable_dlq:
            return None
        return ext.dlq_name or f"{spec.destination}.{spec.group or 'anonymous'}{_SUFFIX}"

    async def discover(self) -> Sequence[str]:
        prefix = self._client.environment.key_prefix.encode()
        found: set[str] = set()
        cursor = b"0"
        while True:
            reply = await self._client.control(
                b"SCAN", cursor, b"MATCH", prefix + b"*" + _SUFFIX.encode(), b"TYPE", b"stream"
            )
            cursor, keys = _pair(reply)
            found.update(k[len(prefix) :].decode("utf-8", "replace") for k in keys)
            if cursor in (b"0", 0):
                return sorted(found)

    async def open(self, name: str) -> RedisDeadLetterQueue:
        key = self._client.key(name)
        kind = await self._client.control(b"TYPE", key)
        if kind not in (b"stream", "stream"):
            raise NoDeadLetterQueue(
                f"no stream '{name}' on redis binder '{self._binder.name}'"
                + ("" if kind in (b"none", "none") else f" (it is a {text(kind)})")
            )
        last = await self._client.control(b"XREVRANGE", key, b"+", b"-", b"COUNT", b"1")
        end = last[0][0] if last else None  # type: ignore[index]
        return RedisDeadLetterQueue(self, name, key, end)


class RedisDeadLetterQueue:
    """One dead-letter stream, read up to the entry that was last when it was opened."""

    def __init__(self, owner: RedisDeadLetters, name: str, key: bytes, end: bytes | None) -> None:
        self.name = name
        self._owner = owner
        self._client = owner._client
        self._key = key
        self._end = end
        self._after = b"-"
        self._link = self._client.link()

    async def size(self) -> int | None:
        return _int(await self._client.control(b"XLEN", self._key))

    async def read(self, limit: int) -> Sequence[DeadLetter]:
        if self._end is None:
            return []
        start = self._after if self._after == b"-" else b"(" + self._after
        reply = await self._client.control(
            b"XRANGE", self._key, start, self._end, b"COUNT", str(limit).encode()
        )
        out: list[DeadLetter] = []
        for entry_id, fields in reply:  # type: ignore[attr-defined]
            self._after = entry_id
            try:
                payload, headers = decode_fields(fields)
            except FieldsError:
                payload, headers = b"", {"x-unreadable-fields": b"\x00".join(fields)}
            millis = int(entry_id.split(b"-", 1)[0])
            out.append(
                DeadLetter(entry_id.decode(), Message(payload, headers), millis / 1000, entry_id)
            )
        if not out or self._after == self._end:
            self._end = None  # every entry there when opened was read
        return out

    async def ack(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            await self._client.control(b"XDEL", self._key, *(x.handle for x in letters))

    def target(self, letter: DeadLetter, to: str | None) -> str | None:
        headers = letter.message.headers
        return to or text(headers.get(ORIGINAL_TOPIC)) or text(headers.get(ORIGINAL_STREAM))

    def _stream(self, letter: DeadLetter, to: str | None) -> bytes | None:
        if to is not None:
            return self._client.key(to)
        stream = text(letter.message.headers.get(ORIGINAL_STREAM))
        if stream:
            return stream.encode()
        topic = text(letter.message.headers.get(ORIGINAL_TOPIC))
        return self._client.key(topic) if topic else None

    async def replay(
        self, messages: Sequence[tuple[DeadLetter, Message[bytes]]], to: str | None
    ) -> Sequence[Exception | None]:
        results: list[Exception | None] = [None] * len(messages)
        commands: list[Command] = []
        where: list[int] = []
        for i, (letter, msg) in enumerate(messages):
            stream = self._stream(letter, to)
            if stream is None:
                results[i] = DeliveryError(
                    "the letter does not say where it came from: replay it with --to"
                )
                continue
            commands.append(_xadd(stream, msg))
            where.append(i)
        for i, reply in zip(where, await self._send(commands), strict=True):
            results[i] = reply
        return results

    async def append(self, messages: Sequence[Message[bytes]]) -> Sequence[Exception | None]:
        return await self._send([_xadd(self._key, m) for m in messages])

    async def _send(self, commands: list[Command]) -> list[Exception | None]:
        if not commands:
            return []
        replies = await self._client.with_reconnect(self._link, commands, "dead-letter replay")
        return [
            DeliveryError(f"Redis refused the entry: {r}") if isinstance(r, ResponseError) else None
            for r in replies
        ]

    async def purge(self) -> int:
        removed = await self._client.control(b"XTRIM", self._key, b"MAXLEN", b"0")
        self._end = None
        return _int(removed)

    async def close(self) -> None:
        await self._link.close()


def _xadd(stream: bytes, msg: Message[bytes]) -> Command:
    return (b"XADD", stream, b"*", PAYLOAD, msg.payload, *encode_headers(msg.headers))


def _int(reply: object) -> int:
    return int(reply) if isinstance(reply, int | bytes | str) else 0


def _pair(reply: object) -> tuple[bytes, list[bytes]]:
    if not isinstance(reply, list | tuple) or len(reply) != 2:
        return b"0", []
    cursor: bytes = reply[0]
    keys: list[bytes] = list(reply[1])
    return cursor, keys
