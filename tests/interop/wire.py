"""What differs between Kafka and RabbitMQ in the interoperability tests, behind one shape.

A ``Wire`` says how each side reaches one broker (the Python app's binder section, the
Spring app's binder properties), where each side's dead letters go by default and how each
side consumes a dead-letter destination as an ordinary binding, and gives a raw view of a
destination (``tap``) that reads what is on the broker independently of either framework:
records of a topic on Kafka, a queue of the test's own bound to the exchange on RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

DEADLINE = 30.0


@dataclass
class Raw:
    """One message as it is on the broker."""

    body: bytes
    #: Kafka: record headers as bytes; RabbitMQ: the AMQP headers table as pika reads it.
    headers: dict[str, Any]
    #: RabbitMQ's content-type property (None on Kafka, which has no such field).
    content_type: str | None
    #: Kafka: the partition; RabbitMQ: the routing key.
    where: int | str


@dataclass
class Wire:
    """One broker as both sides see it."""

    name: str
    address: str
    made: list[str] = field(default_factory=list)

    # -- reaching the broker ----------------------------------------------------------------

    def python_binder(self) -> dict[str, Any]:
        """``stream.binders.<name>`` for the Python app."""
        raise NotImplementedError

    def spring_binder(self) -> dict[str, str]:
        """Spring properties that choose this binder and point it at the broker."""
        raise NotImplementedError

    async def prepare(self, destination: str, partitions: int) -> None:
        """Make a destination with this many partitions before anyone binds to it."""

    # -- dead letters -----------------------------------------------------------------------

    def dead_letters(self, destination: str, group: str) -> str:
        """Where both sides dead-letter by default, on Kafka a topic, on RabbitMQ a queue."""
        raise NotImplementedError

    def spring_dlq_on(self, binding: str) -> dict[str, str]:
        """Spring's switch for dead-lettering on one consumer binding (off by default)."""
        raise NotImplementedError

    def spring_reads_dlq(self, binding: str, dlq: str) -> dict[str, str]:
        """Spring properties binding ``binding`` to the dead-letter destination ``dlq``."""
        raise NotImplementedError

    def python_reads_dlq(self, dlq: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(common, binder-specific) consumer binding properties to read ``dlq``."""
        raise NotImplementedError

    # -- looking at the broker --------------------------------------------------------------

    def tap(
        self, destination: str, keys: Sequence[str] = ("#",)
    ) -> contextlib.AbstractAsyncContextManager[Tap]:
        """A raw reader of ``destination``. On RabbitMQ it sees only what is published after
        it opened, through a queue of its own bound with ``keys``."""
        raise NotImplementedError

    def content_type(self, raw: Raw) -> str | None:
        """The content type exactly as written on the wire."""
        raise NotImplementedError

    async def close(self) -> None:
        """Delete what ``prepare`` made (the session's clean-up deletes the rest)."""


class Tap:
    """Collects raw messages of one destination."""

    async def take(self, count: int, timeout: float = DEADLINE) -> list[Raw]:
        raise NotImplementedError


# -- Kafka --------------------------------------------------------------------------------


class KafkaWire(Wire):
    def python_binder(self) -> dict[str, Any]:
        return {"type": "kafka", "environment": {"bootstrap-servers": self.address}}

    def spring_binder(self) -> dict[str, str]:
        return {
            "spring.cloud.stream.default-binder": "kafka",
            "spring.cloud.stream.kafka.binder.brokers": self.address,
        }

    async def prepare(self, destination: str, partitions: int) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.address)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(destination, partitions, 1)])
            self.made.append(destination)
        finally:
            await admin.close()

    def dead_letters(self, destination: str, group: str) -> str:
        return f"error.{destination}.{group}"

    def spring_dlq_on(self, binding: str) -> dict[str, str]:
        return {f"spring.cloud.stream.kafka.bindings.{binding}.consumer.enable-dlq": "true"}

    def spring_reads_dlq(self, binding: str, dlq: str) -> dict[str, str]:
        return {f"spring.cloud.stream.bindings.{binding}.destination": dlq}

    def python_reads_dlq(self, dlq: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"destination": dlq}, {}

    @contextlib.asynccontextmanager
    async def tap(self, destination: str, keys: Sequence[str] = ("#",)) -> AsyncIterator[Tap]:
        tap = KafkaTap(self.address, destination)
        try:
            yield tap
        finally:
            await tap.close()

    def content_type(self, raw: Raw) -> str | None:
        value = raw.headers.get("contentType")
        return None if value is None else value.decode()

    async def produce(
        self, topic: str, values: Sequence[bytes], partitions: Sequence[int] | None = None
    ) -> None:
        """Raw records, each to the given partition (none: the client's choice)."""
        producer = AIOKafkaProducer(bootstrap_servers=self.address, acks="all")
        await producer.start()
        try:
            sent = [
                await producer.send(
                    topic, v, partition=None if partitions is None else partitions[i]
                )
                for i, v in enumerate(values)
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()


class KafkaTap(Tap):
    """Reads a topic from its beginning, every partition."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.got: list[Raw] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE
            while not consumer.partitions_for_topic(self.topic):
                if loop.time() > deadline:
                    raise AssertionError(f"topic {self.topic} does not exist")
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
            parts = [
                TopicPartition(self.topic, p) for p in consumer.partitions_for_topic(self.topic)
            ]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
        return self._consumer

    async def take(self, count: int, timeout: float = DEADLINE) -> list[Raw]:
        consumer = await self._start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.got) < count:
            if loop.time() > deadline:
                raise AssertionError(f"read {len(self.got)} of {count} records of {self.topic}")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    headers = {k: bytes(v) for k, v in r.headers}
                    self.got.append(Raw(r.value, headers, None, r.partition))
        return list(self.got)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


# -- RabbitMQ -----------------------------------------------------------------------------


class RabbitWire(Wire):
    def _url(self) -> Any:
        return urlsplit(self.address)

    def python_binder(self) -> dict[str, Any]:
        return {"type": "rabbit", "environment": {"uri": self.address}}

    def spring_binder(self) -> dict[str, str]:
        url = self._url()
        vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
        return {
            "spring.cloud.stream.default-binder": "rabbit",
            "spring.rabbitmq.host": url.hostname or "127.0.0.1",
            "spring.rabbitmq.port": str(url.port or 5672),
            "spring.rabbitmq.username": unquote(url.username or "guest"),
            "spring.rabbitmq.password": unquote(url.password or "guest"),
            "spring.rabbitmq.virtual-host": vhost,
        }

    def dead_letters(self, destination: str, group: str) -> str:
        return f"{destination}.{group}.dlq"

    def spring_dlq_on(self, binding: str) -> dict[str, str]:
        return {f"spring.cloud.stream.rabbit.bindings.{binding}.consumer.auto-bind-dlq": "true"}

    # A DLQ is a queue bound to the DLX (a direct exchange) by the name of the queue it
    # serves: a consumer binding with the DLX as its destination, the DLQ's name as its
    # queue, and that routing key declares exactly what the dead-lettering side declares.
    def spring_reads_dlq(self, binding: str, dlq: str) -> dict[str, str]:
        rabbit = f"spring.cloud.stream.rabbit.bindings.{binding}.consumer"
        return {
            f"spring.cloud.stream.bindings.{binding}.destination": "DLX",
            f"spring.cloud.stream.bindings.{binding}.group": dlq,
            f"{rabbit}.queue-name-group-only": "true",
            f"{rabbit}.exchange-type": "direct",
            f"{rabbit}.binding-routing-key": dlq.removesuffix(".dlq"),
        }

    def python_reads_dlq(self, dlq: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"destination": "DLX", "group": dlq}, {
            "queue-name-group-only": True,
            "exchange-type": "direct",
            "binding-routing-key": dlq.removesuffix(".dlq"),
            "auto-bind-dlq": False,
        }

    @contextlib.asynccontextmanager
    async def tap(self, destination: str, keys: Sequence[str] = ("#",)) -> AsyncIterator[Tap]:
        tap = RabbitTap(self.address, destination, keys)
        await asyncio.to_thread(tap.open)
        try:
            yield tap
        finally:
            await asyncio.to_thread(tap.close)

    def content_type(self, raw: Raw) -> str | None:
        return raw.content_type


class RabbitTap(Tap):
    """An exclusive queue of the test's own bound to the destination's exchange."""

    def __init__(self, url: str, exchange: str, keys: Sequence[str]) -> None:
        self.url = url
        self.exchange = exchange
        self.keys = list(keys)
        self.queue = f"tap-{uuid.uuid4().hex[:12]}"
        self.got: list[Raw] = []
        self._connection: Any = None

    def open(self) -> None:
        self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = self._connection.channel()
        channel.queue_declare(self.queue, exclusive=True)
        for key in self.keys:
            channel.queue_bind(self.queue, self.exchange, key)
        self._channel = channel

    def _drain(self) -> None:
        while True:
            method, props, body = self._channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return
            headers = dict(props.headers or {})
            self.got.append(Raw(body, headers, props.content_type, method.routing_key))

    async def take(self, count: int, timeout: float = DEADLINE) -> list[Raw]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await asyncio.to_thread(self._drain)
            if len(self.got) >= count:
                return list(self.got)
            if loop.time() > deadline:
                raise AssertionError(f"{len(self.got)} of {count} messages reached {self.exchange}")
            await asyncio.sleep(0.1)

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()


def header_text(value: Any) -> str:
    """A header value as text, whichever way the broker carried it."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def make_wire(name: str, address: str) -> Wire:
    return KafkaWire(name, address) if name == "kafka" else RabbitWire(name, address)
