"""A Python app and a real Spring Cloud Stream app on one broker, Kafka and RabbitMQ each.

One Spring JVM per broker serves the whole module: it binds several of its functions, each
to destinations of its own, with Spring's defaults everywhere except what a Spring user
would have to set for the case (destinations, groups, the binder, a DLQ, a partitioned
output). Each test runs a Python app against one of those bindings and checks what each
side wrote on the broker and what the other side read.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from binder_core.expression import java_hash, select_partition
from binder_core.message import Message
from tests.interop import router_app
from tests.interop.conftest import StartSpring
from tests.interop.pyapp import python_app, warm_spring_consumer
from tests.interop.spring import SpringApp
from tests.interop.wire import KafkaWire, RabbitWire, Raw, Wire, header_text
from tests.support import eventually

pytestmark = pytest.mark.interop

PARTITIONS = 4


@dataclass(frozen=True)
class Names:
    """The destinations of the module's Spring JVM (one set per broker)."""

    words: str
    shouted: str
    work: str
    keys: str
    spring_parts: str
    python_parts: str
    orders: str
    invoices: str
    fragile: str
    fragile_out: str
    py_fragile: str
    to_label: str
    labelled: str
    routed: str


@pytest.fixture(scope="module")
def names(module_name: Callable[[str], str]) -> Names:
    return Names(
        words=module_name("words"),
        shouted=module_name("shouted"),
        work=module_name("work"),
        keys=module_name("keys"),
        spring_parts=module_name("spring-parts"),
        python_parts=module_name("python-parts"),
        orders=module_name("orders"),
        invoices=module_name("invoices"),
        fragile=module_name("fragile"),
        fragile_out=module_name("fragile-out"),
        py_fragile=module_name("py-fragile"),
        to_label=module_name("to-label"),
        labelled=module_name("labelled"),
        routed=module_name("routed"),
    )


def _bindings(**bindings: dict[str, object]) -> dict[str, str]:
    """Spring's ``spring.cloud.stream.bindings.<name>.<key>`` properties."""
    out: dict[str, str] = {}
    for binding, props in bindings.items():
        for key, value in props.items():
            out[f"spring.cloud.stream.bindings.{binding.replace('_', '-')}.{key}"] = str(value)
    return out


@pytest.fixture(scope="module")
def spring(wire: Wire, names: Names, module_spring: StartSpring) -> Iterator[SpringApp]:
    """The module's Spring app on ``wire``'s broker."""
    asyncio.run(wire.prepare(names.work, PARTITIONS))
    properties = {
        "spring.cloud.function.definition": (
            "uppercase;invoice;inbox;fragile;echo;share;deadLetters;label"
        ),
        **wire.spring_binder(),
        **_bindings(
            uppercase_in_0={"destination": names.words, "group": "spring"},
            uppercase_out_0={"destination": names.shouted},
            invoice_in_0={"destination": names.orders, "group": "spring"},
            invoice_out_0={"destination": names.invoices},
            inbox_in_0={"destination": names.orders, "group": "audit"},
            fragile_in_0={"destination": names.fragile, "group": "spring"},
            fragile_out_0={"destination": names.fragile_out},
            echo_in_0={"destination": names.keys, "group": "spring"},
            echo_out_0={
                "destination": names.spring_parts,
                "producer.partition-key-expression": "payload",
                "producer.partition-count": PARTITIONS,
            },
            share_in_0={"destination": names.work, "group": "workers"},
            deadLetters_in_0={"group": "spring"},
            label_in_0={"destination": names.to_label, "group": "spring"},
            label_out_0={"destination": names.labelled},
        ),
        **wire.spring_dlq_on("fragile-in-0"),
        **wire.spring_reads_dlq("deadLetters-in-0", wire.dead_letters(names.py_fragile, "python")),
    }
    yield module_spring(properties)


# -- Python -> Spring uppercase -> Python ---------------------------------------------------


async def test_python_to_spring_uppercase_and_back(
    wire: Wire, names: Names, spring: SpringApp
) -> None:
    words = ["hello", "straße", "naïve", "日本語", "emoji 😀"]
    got: list[Message[str]] = []

    def shouted(message: Message[str]) -> None:
        got.append(message)

    async with (
        python_app(
            wire,
            {"shouted": shouted},
            {"shouted-in-0": {"destination": names.shouted, "group": "python"}},
        ) as app,
        wire.tap(names.words) as sent,
        wire.tap(names.shouted) as answered,
    ):
        for word in words:
            await app.bridge.send(names.words, word)
        await eventually(lambda: len(got) >= len(words), f"{len(words)} answers from Spring")
        ours = await sent.take(len(words))
        theirs = await answered.take(len(words))

    # Java's toUpperCase(Locale.ROOT) and Python's upper() agree on these, ß -> SS included.
    assert sorted(m.payload for m in got) == sorted(w.upper() for w in words)
    assert sorted(r.body.decode() for r in ours) == sorted(words)
    # What each side labels a string with, on the wire; each reads the other's.
    assert {wire.content_type(r) for r in ours} == {_ours("text/plain", wire)}
    assert {wire.content_type(r) for r in theirs} == {"application/json"}
    assert {m.headers["contentType"] for m in got} == {"application/json"}


def _ours(content_type: str, wire: Wire) -> str:
    """How our binder writes a content type: as Spring writes a MimeType header on Kafka
    (JSON-quoted), as the AMQP content-type property on RabbitMQ."""
    return f'"{content_type}"' if isinstance(wire, KafkaWire) else content_type


# -- one consumer group, a Spring member and a Python member ---------------------------------


async def test_spring_and_python_share_one_group(
    wire: Wire, names: Names, spring: SpringApp
) -> None:
    total = 200
    seen: list[str] = []

    def work(item: str) -> None:
        seen.append(item)

    producer: dict[str, Any] = {"destination": names.work}
    rabbit: dict[str, Any] = {}
    if isinstance(wire, KafkaWire):
        producer["producer"] = {"partition-key-expression": "payload", "partition-count": 4}
    else:
        # Spring's group queue has no dead-letter exchange (its auto-bind-dlq is false):
        # declare it the same way.
        rabbit = {"work-in-0": {"consumer": {"auto-bind-dlq": False}}}
    before = len(spring.received("share"))
    items = [f"item-{i}" for i in range(total)]
    async with python_app(
        wire,
        {"work": work},
        {"work-in-0": {"destination": names.work, "group": "workers"}, "tasks": producer},
        rabbit,
    ) as app:
        if isinstance(wire, RabbitWire):
            await warm_spring_consumer(
                app, "work-in-0", spring, "share", names.work, f"{names.work}.workers",
                wire.address,
            )  # fmt: skip
            before = len(spring.received("share"))
        for item in items:
            await app.bridge.send("tasks", item)

        def spring_got() -> list[str]:
            return [r.text for r in spring.received("share")[before:]]

        await eventually(
            lambda: len(seen) + len(spring_got()) >= total, f"{total} items between both"
        )
    spring_items = spring_got()
    counts = Counter(seen + spring_items)
    print(f"{wire.name}: Python took {len(seen)}, Spring took {len(spring_items)} of {total}")
    assert sorted(counts) == sorted(items)
    assert max(counts.values()) == 1, "an item was handled twice"
    assert seen and spring_items, "one member did all the work"
    # Once the Python member left, Spring's member has nothing more to redo: every item
    # was acknowledged or committed by whichever member took it.
    await _group_is_done(wire, names.work, "workers", total)
    assert len(spring.received("share")[before:]) == len(spring_items)


async def _group_is_done(wire: Wire, destination: str, group: str, total: int) -> None:
    """Every message of ``destination`` (``total`` of them, all it ever held) acknowledged
    by the group: its queue empty on RabbitMQ, its committed offsets summing to ``total``
    on Kafka."""
    if isinstance(wire, RabbitWire):
        await eventually(
            lambda: asyncio.to_thread(_queue_empty, wire.address, f"{destination}.{group}"),
            f"queue {destination}.{group} empty",
        )
        return
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=wire.address)
    await admin.start()
    try:

        async def committed() -> bool:
            offsets = await admin.list_consumer_group_offsets(group)
            mine = [o.offset for tp, o in offsets.items() if tp.topic == destination]
            return sum(mine) == total

        await eventually(committed, f"group {group} to commit all {total} of {destination}")
    finally:
        await admin.close()


def _queue_empty(url: str, queue: str) -> bool:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = connection.channel().queue_declare(queue, passive=True).method
        return int(ok.message_count) == 0
    finally:
        connection.close()


# -- partitioned producers on both sides -----------------------------------------------------

#: Keys whose partition a naive port of Java's hashing would get wrong: one whose hashCode
#: is Integer.MIN_VALUE (Spring's selector maps it to 0), characters outside the BMP
#: (hashed as two UTF-16 code units), non-ASCII, negative hashes.
KEYS = [
    "polygenelubricants",
    "emoji 😀",
    "𝄞 clef",
    "straße",
    "日本語",
    *(f"key-{i}" for i in range(40)),
]


async def test_partitioned_producers_pick_the_same_partition(
    wire: Wire, names: Names, spring: SpringApp
) -> None:
    assert java_hash("polygenelubricants") == -(2**31)

    def echo(word: str) -> str:
        return word

    async with (
        python_app(
            wire,
            {"echo": echo},
            {
                "echo-in-0": {"destination": names.keys, "group": "python"},
                "echo-out-0": {
                    "destination": names.python_parts,
                    "producer": {"partition-key-expression": "payload", "partition-count": 4},
                },
            },
        ) as app,
        wire.tap(names.spring_parts) as spring_out,
        wire.tap(names.python_parts) as python_out,
    ):
        for key in KEYS:
            await app.bridge.send(names.keys, key)
        spring_sent = await spring_out.take(len(KEYS))
        python_sent = await python_out.take(len(KEYS))

    def where(raw: Raw, destination: str) -> int:
        if isinstance(raw.where, int):
            return raw.where
        prefix = f"{destination}-"
        assert raw.where.startswith(prefix), raw.where
        return int(raw.where[len(prefix) :])

    spring_chose = {r.body.decode(): where(r, names.spring_parts) for r in spring_sent}
    python_chose = {r.body.decode(): where(r, names.python_parts) for r in python_sent}
    assert set(spring_chose) == set(KEYS)
    assert python_chose == spring_chose
    assert spring_chose == {k: select_partition(k, PARTITIONS) for k in KEYS}
    assert spring_chose["polygenelubricants"] == 0
    assert len(set(spring_chose.values())) == PARTITIONS, "the keys did not spread"


# -- JSON: a Java record and a pydantic model ------------------------------------------------


class Order(BaseModel):
    """Spring's ``record Order(String id, String item, int quantity, double unitPrice)``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    item: str
    quantity: int
    unit_price: float


class Invoice(BaseModel):
    """Spring's ``record Invoice(String orderId, double total, boolean bulk)``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    order_id: str
    total: float
    bulk: bool


async def test_json_record_and_pydantic_model_both_ways(
    wire: Wire, names: Names, spring: SpringApp
) -> None:
    invoices: list[Message[Invoice]] = []

    def billed(invoice: Message[Invoice]) -> None:
        invoices.append(invoice)

    orders = [
        Order(id="o-1", item="widget", quantity=3, unit_price=2.5),
        Order(id="o-2", item="gadget ünïcode", quantity=120, unit_price=0.25),
    ]
    async with (
        python_app(
            wire,
            {"billed": billed},
            {"billed-in-0": {"destination": names.invoices, "group": "python"}},
        ) as app,
        wire.tap(names.orders) as sent,
        wire.tap(names.invoices) as answered,
    ):
        for order in orders:
            await app.bridge.send(names.orders, order)
        await eventually(lambda: len(invoices) >= len(orders), "Spring's invoices")
        ours = await sent.take(len(orders))
        theirs = await answered.take(len(orders))
        audited = await spring.wait_received("inbox", len(orders), match='"o-')

    by_id = {m.payload.order_id: m for m in invoices}
    assert by_id["o-1"].payload == Invoice(order_id="o-1", total=7.5, bulk=False)
    assert by_id["o-2"].payload == Invoice(order_id="o-2", total=30.0, bulk=True)
    assert {m.headers["contentType"] for m in invoices} == {"application/json"}
    # On the wire: our JSON uses the model's aliases (Java's field names), Spring's too.
    assert {wire.content_type(r) for r in ours} == {_ours("application/json", wire)}
    assert {wire.content_type(r) for r in theirs} == {"application/json"}
    assert b'"unitPrice":2.5' in ours[0].body or b'"unitPrice":2.5' in ours[1].body
    assert all(b'"orderId"' in r.body for r in theirs)
    # Spring read our content type as a MimeType, not as a string with quotes in it.
    ours_seen = [r for r in audited if '"o-' in r.text]
    assert {r.java_type("contentType") for r in ours_seen} == {"org.springframework.util.MimeType"}
    assert {r.header("contentType") for r in ours_seen} == {"application/json"}


# -- dead letters, each side reading the other's ---------------------------------------------


async def test_python_reads_what_spring_dead_lettered(
    wire: Wire, names: Names, spring: SpringApp
) -> None:
    dead: list[Message[str]] = []

    def dlq(message: Message[str]) -> None:
        dead.append(message)

    spring_dlq = wire.dead_letters(names.fragile, "spring")
    common, specific = wire.python_reads_dlq(spring_dlq)
    async with python_app(
        wire,
        {"dlq": dlq},
        {"dlq-in-0": {"group": "python", **common, "content-type": "text/plain"}},
        {"dlq-in-0": {"consumer": specific}} if specific else None,
    ) as app:
        await app.bridge.send(names.fragile, "poison pill")
        # Spring retries three times (1 s, then 2 s back-off) before it dead-letters.
        await eventually(lambda: dead, "Spring's dead letter", timeout=60)

    letter = dead[0]
    assert letter.payload == "poison pill"
    h = letter.headers
    # Spring's RabbitMQ binder writes its retry's "exhausted" message here, the Kafka one
    # the function's own; the stack trace names the function's exception on both.
    assert header_text(h["x-exception-message"])
    trace = header_text(h["x-exception-stacktrace"])
    assert "java.lang.IllegalArgumentException: fragile refuses 'poison pill'" in trace
    if isinstance(wire, KafkaWire):
        assert header_text(h["x-original-topic"]) == names.fragile
        assert int.from_bytes(h["x-original-partition"], "big") == 0
        assert int.from_bytes(h["x-original-offset"], "big") >= 0
        assert header_text(h["x-exception-fqcn"]).startswith("org.springframework")
    else:
        assert h["x-original-exchange"] == names.fragile
        assert h["x-original-routingKey"] == names.fragile
    assert h["contentType"] == "text/plain"


async def test_spring_reads_what_python_dead_lettered(
    wire: Wire, names: Names, spring: SpringApp
) -> None:
    def py_fragile(word: str) -> None:
        if "poison" in word:
            raise ValueError(f"py_fragile refuses {word!r}")

    async with python_app(
        wire,
        {"py_fragile": py_fragile},
        {"py_fragile-in-0": {"destination": names.py_fragile, "group": "python"}},
    ) as app:
        await app.bridge.send(names.py_fragile, "poison dart")
        letters = await spring.wait_received("deadLetters", 1, match="poison dart")

    letter = letters[0]
    assert letter.text == "poison dart"
    assert letter.java_type("x-exception-message") == "java.lang.String"
    assert letter.header("x-exception-message") == "py_fragile refuses 'poison dart'"
    assert letter.header("x-exception-fqcn") == "builtins.ValueError"
    assert "ValueError: py_fragile refuses" in letter.header("x-exception-stacktrace")
    assert str(letter.header("contentType")) == "text/plain"
    if isinstance(wire, KafkaWire):
        assert letter.header("x-original-topic") == names.py_fragile
        assert letter.java_type("x-original-partition") == "java.lang.Integer"
        assert letter.header("x-original-partition") == "0"
        assert letter.header("kafka_dlt-original-topic") == names.py_fragile.encode()
        assert letter.header("kafka_dlt-original-partition") == (0).to_bytes(4, "big")
    else:
        assert letter.header("x-original-exchange") == names.py_fragile
        assert letter.header("x-original-routingKey") == names.py_fragile


# -- routing by Spring's function-definition header ------------------------------------------


async def test_python_router_takes_what_a_spring_producer_labelled(
    wire: Wire, names: Names, spring: SpringApp
) -> None:
    """Spring's ``label`` turns "target:text" into "text" with the header
    ``spring.cloud.function.definition: target``; the Python router calls that function,
    and only one of the app's own."""

    dead: list[Message[str]] = []

    def dlq(message: Message[str]) -> None:
        dead.append(message)

    # The router's dead letters, read by a second app as any dead-letter destination.
    common, specific = wire.python_reads_dlq(wire.dead_letters(names.labelled, "python"))
    async with (
        python_app(
            wire,
            router_app,
            {
                "functionRouter-in-0": {"destination": names.labelled, "group": "python"},
                "functionRouter-out-0": {"destination": names.routed},
            },
            function={"routing": {"enabled": True}},
        ) as router,
        python_app(
            wire,
            {"dlq": dlq},
            {"dlq-in-0": {"group": "reader", **common, "content-type": "text/plain"}},
            {"dlq-in-0": {"consumer": specific}} if specific else None,
        ),
        wire.tap(names.labelled) as labelled,
        wire.tap(names.routed) as routed,
    ):
        for text in ["shout:Hello", "whisper:HeLLo World", "print:ignored", "shout:ünï"]:
            await router.bridge.send(names.to_label, text)
        out = await routed.take(3)
        spring_wrote = await labelled.take(4)
        await eventually(lambda: dead, "the dead letter of the message no function matches")

    assert sorted(r.body.decode() for r in out) == ["HELLO", "hello world", "ÜNÏ"]
    label = "spring.cloud.function.definition"
    assert sorted(header_text(r.headers[label]) for r in spring_wrote) == [
        "print",
        "shout",
        "shout",
        "whisper",
    ]
    assert [m.payload for m in dead] == ["ignored"]
    reason = header_text(dead[0].headers["x-exception-message"])
    assert "print" in reason, reason
