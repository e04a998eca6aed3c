"""The Kafka producer path against a real broker: records go out in whole batches (in order
per partition), a record Kafka refuses is a ``DeliveryError`` traced to the inputs that
made it, and the core hands a batch's outputs over while it is still processing it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from binder_core.conversion import encoder_for, message_converters
from binder_core.errors import DeliveryError
from binder_core.functions import Definition, inspect_function
from binder_core.message import Message
from binder_core.output import Output
from binder_core.pipeline import Pipeline
from binder_core.properties import ProducerProperties
from binder_core.retry import RetryPolicy
from binder_core.spi import Batch, Outcome, ProducerSpec
from binder_core.testing.driver import BinderDriver
from binders.kafka.binder import KafkaBinder
from binders.kafka.settings import KafkaEnvironment, KafkaProducerProperties
from tests.kafka.conftest import DEADLINE, Kit
from tests.support import eventually

pytestmark = pytest.mark.kafka

#: Kafka refuses record batches above this on the topics made with ``_small_records``.
LIMIT = 3000


@pytest.fixture
async def binder(kit: Kit) -> AsyncIterator[KafkaBinder]:
    env = KafkaEnvironment.model_validate(
        {"bootstrap-servers": kit.bootstrap, "health-timeout": 20}
    )
    b = BinderDriver(KafkaBinder("kafka", env))
    await b.start()
    try:
        yield b
    finally:
        await b.close()


def _small_records(**configuration: Any) -> KafkaProducerProperties:
    return KafkaProducerProperties.model_validate(
        {
            "topic": {"properties": {"max.message.bytes": str(LIMIT)}},
            "configuration": configuration,
        }
    )


def _invoker(fn: Callable[[str], Awaitable[str]], producer: Output, topic: str) -> Pipeline:
    """The core's pipeline around ``fn`` (text in, text out, no retries)."""
    converters = {c.content_type: c for c in message_converters()}
    output = Output(
        "fn-out-0",
        topic,
        producer.sink,
        encoder_for("text/plain", converters),
        "text/plain",
        ProducerProperties(),
    )
    definition = Definition("fn", (inspect_function("fn", fn),))
    policy = RetryPolicy(max_attempts=1, initial_ms=0, max_ms=0)
    return Pipeline("fn-in-0", definition, "text/plain", converters, policy, output)


async def _run(pipeline: Pipeline, messages: list[Message[bytes]]) -> list[Outcome]:
    """One batch through the pipeline, as the consumer loop runs it."""
    return await pipeline.finish(await pipeline.process(Batch(messages)))


async def test_many_batches_keep_order_per_partition(binder: KafkaBinder, kit: Kit) -> None:
    topic = kit.name("batches")
    producer = await binder.producer(
        ProducerSpec("out", topic, ProducerProperties(partition_count=3))
    )
    pad = b"x" * 300  # about 50 records a batch: 3000 records make many
    unkeyed = [Message(b"%d:" % i + pad) for i in range(1500)]
    keyed = [Message(b"%d:" % i + pad, key=f"k{i % 7}") for i in range(1500, 3000)]
    await producer.send(unkeyed)
    await producer.send(keyed)
    records = await kit.read(topic, 3000)
    assert len(records) == 3000
    order: dict[int, list[int]] = defaultdict(list)
    keys: dict[bytes | None, set[int]] = defaultdict(set)
    for r in records:
        order[r.partition].append(int(r.value.split(b":")[0]))
        keys[r.key].add(r.partition)
    assert all(seq == sorted(seq) for seq in order.values()), "order kept per partition"
    # Records without a key fill a batch of one partition, then of the next: one send's
    # batches spread over the partitions (a produce request carries one per partition).
    assert keys[None] == {0, 1, 2}, "records without a key spread, a batch at a time"
    unkeyed_runs = [
        [int(r.value.split(b":")[0]) for r in records if r.partition == p and r.key is None]
        for p in range(3)
    ]
    assert all(len(run) >= 40 for run in unkeyed_runs), "whole batches, not single records"
    assert all(len(parts) == 1 for key, parts in keys.items() if key is not None)


async def test_a_later_outbox_never_overtakes_an_earlier_ones_last_records(
    binder: KafkaBinder, kit: Kit
) -> None:
    """The core processes the next poll before it confirms the previous one: the earlier
    outbox's last, partly filled batch reaches the partition before any batch of the
    later outbox, so order per partition holds across polls."""
    topic = kit.name("overlap")
    producer = await binder.producer(ProducerSpec("out", topic))
    first, second = producer.sink.outbox(), producer.sink.outbox()
    early = [Message(b"a%d" % i) for i in range(5)]  # far from filling a 16 KiB batch
    late = [Message(b"b%d:" % i + b"x" * 300) for i in range(200)]  # several full batches
    await first.add(early)
    await second.add(late)
    assert await second.confirm() == [None] * 200
    assert await first.confirm() == [None] * 5
    records = await kit.read(topic, 205)
    assert [r.value for r in records] == [m.payload for m in early + late]


async def test_a_refused_record_is_a_delivery_error_and_the_producer_goes_on(
    binder: KafkaBinder, kit: Kit
) -> None:
    """A record larger than the topic takes is refused before it is sent: the records
    around it go out, and later sends work (a batch Kafka itself refused would have left
    a gap in the idempotent producer's sequence numbers, failing every later batch)."""
    topic = kit.name("refused")
    producer = await binder.producer(ProducerSpec("out", topic, extension=_small_records()))
    small = [Message(b"%d" % i * 100) for i in range(100)]  # several batches under the limit
    with pytest.raises(DeliveryError, match=r"max\.message\.bytes"):
        await producer.send([*small[:50], Message(b"b" * (2 * LIMIT)), *small[50:]])
    await producer.send([Message(b"d")])
    records = await kit.read(topic, 101)
    assert [r.value for r in records] == [m.payload for m in small] + [b"d"]
    assert producer.sink.slot.renewals == 0, "a record refused before sending broke nothing"


async def test_a_record_over_max_request_size_is_refused_before_sending(
    binder: KafkaBinder, kit: Kit
) -> None:
    topic = kit.name("toolarge")
    ext = KafkaProducerProperties.model_validate({"configuration": {"max_request_size": 2048}})
    producer = await binder.producer(ProducerSpec("out", topic, extension=ext))
    with pytest.raises(DeliveryError, match="max_request_size"):
        await producer.send([Message(b"z" * 4096)])
    await producer.send([Message(b"ok")])
    assert [r.value for r in await kit.read(topic, 1)] == [b"ok"]


async def test_a_record_over_the_default_limits_is_refused_alone(
    binder: KafkaBinder, kit: Kit
) -> None:
    """With the default limits (1 MiB requests and topic records), only a record above
    them is refused; one far above the batch size but under them goes out alone."""
    topic = kit.name("huge")
    producer = await binder.producer(ProducerSpec("out", topic))
    sent = [Message(b"a"), Message(b"m" * 200_000), Message(b"c")]
    with pytest.raises(DeliveryError, match="refused"):
        await producer.send([sent[0], Message(b"h" * (1 << 20)), *sent[1:]])
    records = await kit.read(topic, 3)
    assert [r.value for r in records] == [m.payload for m in sent]


async def test_outputs_reach_kafka_while_the_batch_is_still_processed(
    binder: KafkaBinder, kit: Kit
) -> None:
    """The core hands full batches of outputs over as it goes: before the last input of
    a batch is processed, outputs of the first ones are already on the topic."""
    topic = kit.name("staged")
    producer = await binder.producer(ProducerSpec("out", topic))
    seen_before_last: list[int] = []

    async def fn(word: str) -> str:
        if word == "last":
            # Outputs of earlier inputs fill several 16 KiB batches: they must arrive
            # while this input is still being processed.
            async def arrived() -> bool:
                return await kit.count(topic) > 0

            await eventually(arrived, "an output to reach Kafka before the batch ended", DEADLINE)
            seen_before_last.append(await kit.count(topic))
        return word * 400

    invoker = _invoker(fn, producer, topic)
    batch = [Message(f"w{i:02d}".encode()) for i in range(40)] + [Message(b"last")]
    outcomes = await _run(invoker, batch)
    assert outcomes == [None] * 41
    assert seen_before_last and seen_before_last[0] >= 1
    records = await kit.read(topic, 41)
    assert [r.value for r in records] == [m.payload * 400 for m in batch]


async def test_only_inputs_whose_outputs_kafka_refuses_fail(binder: KafkaBinder, kit: Kit) -> None:
    topic = kit.name("partly")
    producer = await binder.producer(ProducerSpec("out", topic, extension=_small_records()))

    async def fn(word: str) -> str:
        return word * LIMIT if word.startswith("big") else word * 40

    invoker = _invoker(fn, producer, topic)
    words = [f"big{i}" if i in (5, 31) else f"w{i:02d}" for i in range(60)]
    outcomes = await _run(invoker, [Message(w.encode()) for w in words])
    failed = [w for w, o in zip(words, outcomes, strict=True) if o is not None]
    assert failed == ["big5", "big31"]
    assert all(isinstance(o, DeliveryError) for o in outcomes if o is not None)
    records = await kit.read(topic, 58)
    got = [r.value for r in records]
    assert set(got) == {w.encode() * 40 for w in words if not w.startswith("big")}


class _Client:
    """A producer client that records the batches handed to it (our own logic under test:
    which outbox hands what over)."""

    def __init__(self) -> None:
        self.sent: list[int] = []  # records per batch handed over
        self.alone: list[bytes] = []  # records handed over one by one (``send``)

    def create_batch(self) -> Any:
        from aiokafka.producer.message_accumulator import BatchBuilder

        return BatchBuilder(16384, 0)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> Any:
        self.sent.append(builder.record_count())
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send(self, topic: str, value: bytes, **_: Any) -> Any:
        self.alone.append(value)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_a_few_records_left_at_the_end_join_the_producers_batch_one_by_one() -> None:
    """``send_batch`` waits while the producer still queues a batch of the partition; a few
    records go through ``send``, which adds them to that batch: at low rates, one broker
    round trip instead of two. Many records still go as one batch."""
    from binders.kafka.producer import KafkaSink, ProducerSlot

    client = _Client()

    async def start() -> Any:
        return client

    sink = KafkaSink(object(), "t", ProducerSlot(client, start, 1.0), sync=False)
    few = sink.outbox()
    await few.add([Message(b"a"), Message(b"b"), Message(b"c")])
    assert await few.confirm() == [None] * 3
    assert client.alone == [b"a", b"b", b"c"] and client.sent == []
    many = sink.outbox()
    await many.add([Message(b"m%d" % i) for i in range(20)])
    assert await many.confirm() == [None] * 20
    assert client.sent == [20] and len(client.alone) == 3


async def test_what_an_aborted_transaction_left_unsent_is_never_sent() -> None:
    """Outboxes hand over what earlier ones still hold, but not a transaction's: an attempt
    whose processing failed is aborted, and its unsent records must not be sent later
    (inside the next transaction they would commit twice)."""
    from binders.kafka.producer import KafkaSink, KafkaTransaction, ProducerSlot

    shared, transactional = _Client(), _Client()

    async def start() -> Any:
        return shared

    owner = object()
    sink = KafkaSink(owner, "t", ProducerSlot(shared, start, 1.0), sync=False)
    aborted = sink.outbox(KafkaTransaction(owner, transactional))
    await aborted.add([Message(b"never")])  # a partly filled batch; then the attempt fails
    later = sink.outbox()
    await later.add([Message(b"x" * 300) for i in range(100)])  # fills batches
    assert await later.confirm() == [None] * 100
    assert transactional.sent == [], "the aborted attempt's record stayed unsent"
    assert sum(shared.sent) == 100
