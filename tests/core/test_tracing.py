"""Tracing on the memory binder: one trace from a supplier through a function to a consumer,
StreamBridge sends inside it, batch functions linking every message, failures marked, and
nothing at all when the app installed no SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from binder_core import Store, StreamBridge
from binder_core.properties import TracingProperties
from binder_core.testing import TestApp
from binder_core.tracing import TRACEPARENT, enabled, use_provider

EXPORTER = InMemorySpanExporter()


PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture(autouse=True)
def sdk() -> Iterator[None]:
    """An SDK tracer provider handed to binder (not installed globally, so the other tests
    of the session run untraced, as apps without an SDK do)."""
    EXPORTER.clear()
    use_provider(PROVIDER)
    yield
    use_provider(None)


def spans(name: str) -> list[Any]:
    return [s for s in EXPORTER.get_finished_spans() if s.name == name]


def test_auto_means_on_with_an_sdk_and_off_when_told() -> None:
    assert enabled(TracingProperties())
    assert not enabled(TracingProperties(enabled="false"))
    use_provider(None)
    assert not enabled(TracingProperties()), "no SDK installed: no tracing, no cost"


async def test_one_trace_from_supplier_through_function_to_consumer() -> None:
    got: list[str] = []

    def tick() -> str:
        return "hello"

    def shout(word: str) -> str:
        return word.upper()

    def keep(word: str) -> None:
        got.append(word)

    tree = {
        "stream": {
            "function": {"definition": "tick;shout;keep"},
            "poller": {"fixed-delay": 60_000},
            "bindings": {
                "tick-out-0": {"destination": "words", "content-type": "text/plain"},
                "shout-in-0": {"destination": "words", "group": "g", "content-type": "text/plain"},
                "shout-out-0": {"destination": "shouts", "content-type": "text/plain"},
                "keep-in-0": {"destination": "shouts", "group": "g", "content-type": "text/plain"},
            },
        }
    }
    async with TestApp({"tick": tick, "shout": shout, "keep": keep}, properties=tree):
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.01)
    assert got == ["HELLO"]
    [first] = spans("publish words")
    [shouting] = spans("process words")
    [second] = spans("publish shouts")
    [keeping] = spans("process shouts")
    trace_id = first.context.trace_id
    assert {s.context.trace_id for s in (shouting, second, keeping)} == {trace_id}
    assert shouting.parent.span_id == first.context.span_id  # across the broker hop
    assert second.parent.span_id == shouting.context.span_id
    assert keeping.parent.span_id == second.context.span_id
    assert shouting.kind is trace.SpanKind.CONSUMER and first.kind is trace.SpanKind.PRODUCER
    assert shouting.attributes["messaging.system"] == "memory"
    assert shouting.attributes["messaging.destination.name"] == "words"
    [receive] = [s for s in spans("receive words")]
    assert any(link.context.span_id == receive.context.span_id for link in shouting.links)


async def test_stream_bridge_sends_join_the_trace_and_failures_are_marked() -> None:
    async def route(word: str) -> None:
        if word == "bad":
            raise ValueError("no")
        await StreamBridge.current().send("side", word)

    tree = {
        "stream": {
            "default": {"consumer": {"max-attempts": 1}},
            "bindings": {
                "route-in-0": {"destination": "in", "group": "g", "content-type": "text/plain"}
            },
        }
    }
    async with TestApp({"route": route}, properties=tree) as app:
        app.pending("side")
        await app.send("in", "ok", headers={TRACEPARENT: _parent()})
        sent = await app.receive("side")
        await app.send("in", "bad")
        await app.receive(app.dead_letter_destination("route-in-0"))
    processed = spans("process in")
    ok = next(s for s in processed if s.status.is_ok)
    failed = next(s for s in processed if not s.status.is_ok)
    assert ok.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    [published] = spans("publish side")
    assert published.parent.span_id == ok.context.span_id
    assert sent.headers[TRACEPARENT].split("-")[2] == f"{published.context.span_id:016x}"
    assert failed.events[0].name == "exception"


def _parent() -> str:
    return "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_a_batch_function_links_every_message() -> None:
    def count(words: list[str]) -> None:
        return None

    tree = {
        "stream": {
            "bindings": {
                "count-in-0": {
                    "destination": "in",
                    "group": "g",
                    "content-type": "text/plain",
                    "consumer": {"batch-mode": True},
                }
            }
        }
    }
    async with TestApp({"count": count}, properties=tree) as app:
        for _ in range(3):
            await app.send("in", "w", headers={TRACEPARENT: _parent()})
        for _ in range(200):
            if spans("process in"):
                break
            await asyncio.sleep(0.01)
    span = spans("process in")[0]
    linked = {link.context.trace_id for link in span.links}
    assert int("0af7651916cd43dd8448eb211c80319c", 16) in linked


async def test_a_function_that_keeps_state_is_traced_like_any_other() -> None:
    def count(word: str, seen: Store[int]) -> str:
        if word == "bad":
            raise ValueError("no")
        seen[word] = (seen.get(word) or 0) + 1
        return f"{word}={seen[word]}"

    tree = {
        "stream": {
            "default": {"consumer": {"max-attempts": 1}},
            "bindings": {
                "count-in-0": {"destination": "in", "group": "g", "content-type": "text/plain"},
                "count-out-0": {"destination": "out", "content-type": "text/plain"},
            },
        }
    }
    async with TestApp({"count": count}, properties=tree) as app:
        await app.send("in", "a", headers={TRACEPARENT: _parent()})
        sent = await app.receive("out")
        await app.send("in", "bad")
        await app.receive(app.dead_letter_destination("count-in-0"))
    assert sent.payload == b"a=1"
    processed = spans("process in")
    ok = next(s for s in processed if s.status.is_ok)
    failed = next(s for s in processed if not s.status.is_ok)
    assert ok.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    [published] = spans("publish out")
    assert published.parent.span_id == ok.context.span_id
    assert sent.headers[TRACEPARENT].split("-")[2] == f"{published.context.span_id:016x}"
    assert failed.events[0].name == "exception"


async def test_header_mode_none_sends_no_trace_context_but_still_records_the_span() -> None:
    def shout(word: str) -> str:
        return word.upper()

    tree = {
        "stream": {
            "bindings": {
                "shout-in-0": {"destination": "in", "group": "g", "content-type": "text/plain"},
                "shout-out-0": {
                    "destination": "out",
                    "content-type": "text/plain",
                    "producer": {"header-mode": "none"},
                },
            },
        }
    }
    async with TestApp({"shout": shout}, properties=tree) as app:
        await app.send("in", "a", headers={TRACEPARENT: _parent()})
        sent = await app.receive("out")
    assert sent.payload == b"A"
    assert sent.headers == {}, "header-mode none writes no headers, trace context included"
    [published] = spans("publish out")
    assert published.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
