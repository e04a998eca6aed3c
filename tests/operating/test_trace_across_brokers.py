"""One trace across two brokers, on the real ones: a supplier publishes to Kafka, a function
reads it and publishes to RabbitMQ, a consumer reads that. Every publish and process span
shares the supplier's trace id, each process span's parent is the publish span before it,
and the records on the wire (read raw from Kafka and from a RabbitMQ queue) carry the
``traceparent`` of their publish span. Dead letters keep the ``traceparent`` the failed
message arrived with, on both brokers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from binder_core.tracing import TRACEPARENT, use_provider
from tests.kafka.conftest import Kit, running_app
from tests.rabbit.conftest import Admin
from tests.support import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.rabbit]

#: A trace context that no span of this process made (as another service would send it).
UPSTREAM = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans of the apps started in the test, through an SDK provider handed to binder."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    use_provider(provider)
    yield spans
    use_provider(None)
    provider.shutdown()


@pytest.fixture
def admin(rabbit_url: str) -> Iterator[Admin]:
    made = Admin(rabbit_url)
    yield made
    made.cleanup()


def binders(kit: Kit, rabbit_url: str) -> dict[str, Any]:
    return {
        "kafka": {"type": "kafka", "environment": {"bootstrap-servers": kit.bootstrap}},
        "rabbit": {"type": "rabbit", "environment": {"uri": rabbit_url}},
    }


def wire(span: ReadableSpan) -> str:
    """The ``traceparent`` a message published under ``span`` carries."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_one_trace_from_a_supplier_through_kafka_and_rabbitmq(
    kit: Kit, admin: Admin, rabbit_url: str, exporter: InMemorySpanExporter
) -> None:
    words, shouts, group = kit.name("words"), kit.name("shouts"), kit.name("g")
    admin.track(shouts, group, "raw")
    got: list[str] = []

    def tick() -> Iterator[str]:
        yield "hello"

    def shout(word: str) -> str:
        return word.upper()

    def keep(word: str) -> None:
        got.append(word)

    text = {"content-type": "text/plain"}
    stream = {
        "function": {"definition": "tick;shout;keep"},
        "default-binder": "kafka",
        "binders": binders(kit, rabbit_url),
        "bindings": {
            "tick-out-0": {"destination": words, **text},
            "shout-in-0": {"destination": words, "group": group, **text},
            # A second group on the RabbitMQ side, for the test to read the message raw.
            "shout-out-0": {
                "destination": shouts,
                "binder": "rabbit",
                "producer": {"required-groups": ["raw"]},
                **text,
            },
            "keep-in-0": {"destination": shouts, "group": group, "binder": "rabbit", **text},
        },
    }

    def named(name: str) -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.name == name]

    async with running_app({"tick": tick, "shout": shout, "keep": keep}, stream):
        await eventually(lambda: got == ["HELLO"], "the word through both brokers")
        await eventually(lambda: named(f"process {shouts}"), "the last process span")

    [published] = named(f"publish {words}")
    [shouting] = named(f"process {words}")
    [republished] = named(f"publish {shouts}")
    [keeping] = named(f"process {shouts}")
    chain = [published, shouting, republished, keeping]
    assert published.parent is None, "the supplier's publish span starts the trace"
    assert {s.context.trace_id for s in chain} == {published.context.trace_id}
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert [s.kind for s in chain] == [
        trace.SpanKind.PRODUCER,
        trace.SpanKind.CONSUMER,
        trace.SpanKind.PRODUCER,
        trace.SpanKind.CONSUMER,
    ]
    assert [s.attributes["messaging.system"] for s in chain] == [
        "kafka",
        "kafka",
        "rabbitmq",
        "rabbitmq",
    ]
    assert shouting.attributes["messaging.consumer.group.name"] == group
    # Each process span is linked to the receive span of its batch.
    for process, receive in ((shouting, f"receive {words}"), (keeping, f"receive {shouts}")):
        [batch] = named(receive)
        assert [link.context.span_id for link in process.links] == [batch.context.span_id]

    # On the wire: the Kafka record and the RabbitMQ message carry their publish span.
    [record] = await kit.read(words, 1)
    assert dict(record.headers)[TRACEPARENT] == wire(published).encode()
    [(_, properties, body)] = await asyncio.to_thread(admin.drain, f"{shouts}.raw")
    assert body == b"HELLO"
    assert properties.headers[TRACEPARENT] == wire(republished)


async def test_dead_letters_keep_the_traceparent_they_arrived_with(
    kit: Kit, admin: Admin, rabbit_url: str, exporter: InMemorySpanExporter
) -> None:
    topic, exchange, group = kit.name("orders"), kit.name("orders"), kit.name("g")
    admin.track(exchange, group)

    def refuse(word: str) -> None:
        raise ValueError("refused")

    text = {"content-type": "text/plain"}
    stream = {
        "function": {"definition": "refuse_kafka;refuse_rabbit"},
        "default-binder": "kafka",
        "binders": binders(kit, rabbit_url),
        "default": {"consumer": {"max-attempts": 1}},
        "bindings": {
            "refuse_kafka-in-0": {"destination": topic, "group": group, **text},
            "refuse_rabbit-in-0": {
                "destination": exchange,
                "group": group,
                "binder": "rabbit",
                **text,
            },
        },
    }
    functions = {"refuse_kafka": refuse, "refuse_rabbit": refuse}
    async with running_app(functions, stream):
        await kit.produce(topic, [b"one"], headers=[(TRACEPARENT, UPSTREAM.encode())])
        props = pika.BasicProperties(content_type="text/plain", headers={TRACEPARENT: UPSTREAM})
        await asyncio.to_thread(admin.publish, exchange, "one", b"one", props)
        [dead] = await kit.read(f"error.{topic}.{group}", 1)
        dlq = f"{exchange}.{group}.dlq"
        await eventually(lambda: admin.depth(dlq), f"the dead letter in {dlq}")
    assert dict(dead.headers)[TRACEPARENT] == UPSTREAM.encode()
    [(_, properties, _)] = await asyncio.to_thread(admin.drain, dlq)
    assert properties.headers[TRACEPARENT] == UPSTREAM
    # The failed process spans belong to the upstream trace, marked as errors.
    failed = [s for s in exporter.get_finished_spans() if s.name.startswith("process ")]
    assert len(failed) == 2
    for span in failed:
        assert f"{span.context.trace_id:032x}" == UPSTREAM.split("-")[1]
        assert not span.status.is_ok
