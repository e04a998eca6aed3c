"""The Kafka binder through the plain SPI, against a real broker: provisioning, headers and
keys, groups, ordering, partitions, dead letters, redelivery, pause/resume, stop/start."""

from __future__ import annotations

import asyncio
import struct
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from binder_core.errors import ConfigError
from binder_core.message import Message
from binder_core.pipeline import Work
from binder_core.properties import ConsumerProperties, ProducerProperties
from binder_core.spi import (
    Batch,
    Binder,
    BindingState,
    Capability,
    ConsumerSpec,
    Outcome,
    ProducerSpec,
)
from binder_core.testing.driver import BinderDriver
from binders.kafka.binder import KafkaBinder
from binders.kafka.provisioning import ProvisioningError
from binders.kafka.settings import (
    KafkaConsumerProperties,
    KafkaEnvironment,
)
from tests.kafka.conftest import DEADLINE, Kit
from tests.support import eventually

pytestmark = pytest.mark.kafka


def make_binder(bootstrap: str, **settings: Any) -> Any:
    """A Kafka binder driven as the core drives it (consumers fed to plain handles)."""
    env = KafkaEnvironment.model_validate(
        {"bootstrap-servers": bootstrap, "health-timeout": 20, **settings}
    )
    return BinderDriver(KafkaBinder("kafka", env))


@pytest.fixture
async def binder(kit: Kit) -> AsyncIterator[KafkaBinder]:
    """A started binder; closed before ``kit`` deletes the test's topics."""
    b = make_binder(kit.bootstrap)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


class Collector:
    """A handle that records what it is given; ``fail`` decides per message."""

    def __init__(self, fail: Callable[[Message[bytes]], Exception | None] | None = None) -> None:
        self.messages: list[Message[bytes]] = []
        self.batches: list[int] = []
        self._fail = fail

    async def __call__(self, batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        self.batches.append(len(batch))
        outcomes: list[Outcome] = []
        for msg in batch:
            error = self._fail(msg) if self._fail else None
            if error is None:
                self.messages.append(msg)
            outcomes.append(error)
        return outcomes

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]


def consumer_spec(
    topic: str,
    group: str | None,
    binding: str = "in",
    ext: KafkaConsumerProperties | None = None,
    **props: Any,
) -> ConsumerSpec:
    return ConsumerSpec(binding, topic, group, ConsumerProperties.model_validate(props), ext)


async def test_capabilities_and_spi_shape(binder: KafkaBinder) -> None:
    assert isinstance(binder.binder, Binder)
    assert binder.capabilities >= {
        Capability.GROUPS,
        Capability.ORDERING,
        Capability.PARTITIONS,
        Capability.DEAD_LETTER,
        Capability.PAUSE,
        Capability.PERSISTENCE,
        Capability.CROSS_PROCESS,
        Capability.REQUIRED_GROUPS,
        Capability.TRANSACTIONS,
    }


async def test_round_trip_of_payload_key_partition_and_typed_headers(
    binder: KafkaBinder, kit: Kit
) -> None:
    topic = kit.name("roundtrip")
    producer = await binder.producer(
        ProducerSpec("out", topic, ProducerProperties(partition_count=3))
    )
    assert await kit.partitions(topic) == 3
    got = Collector()
    await binder.consumer(consumer_spec(topic, kit.name("g")), got)
    headers = {
        "contentType": "application/json",
        "text": "héllo",
        "raw": b"\x00\x01",
        "count": 7,
        "big": 2**40,
        "ratio": 0.25,
        "flag": True,
    }
    await producer.send(
        [
            Message(b'{"n":1}', headers, key="k-1", partition=2),
            Message(b'{"n":2}', {}, key=b"k-2", partition=0),
            Message(b'{"n":3}', {}, key=42, partition=1),
            Message(b'{"n":4}', {}, key=None, partition=None),
        ]
    )
    await eventually(lambda: len(got.messages) == 4, what="4 messages")
    by_payload = {m.payload: m for m in got.messages}
    first = by_payload[b'{"n":1}']
    assert first.headers == headers
    assert type(first.headers["count"]) is int and type(first.headers["flag"]) is bool
    assert (first.key, first.partition) == (b"k-1", 2)
    assert (by_payload[b'{"n":2}'].key, by_payload[b'{"n":2}'].partition) == (b"k-2", 0)
    assert (by_payload[b'{"n":3}'].key, by_payload[b'{"n":3}'].partition) == (b"42", 1)
    assert by_payload[b'{"n":4}'].key is None
    # On the wire as Spring's header mapper writes it.
    records = await kit.read(topic, 4)
    wire = dict(next(r for r in records if r.value == b'{"n":1}').headers)
    assert wire["contentType"] == b'"application/json"'
    assert wire["text"] == "héllo".encode()
    assert wire["raw"] == b"\x00\x01"
    assert wire["count"] == b"7"
    types = __import__("json").loads(wire["spring_json_header_types"])
    assert types == {
        "contentType": "java.lang.String",
        "text": "java.lang.String",
        "count": "java.lang.Integer",
        "big": "java.lang.Long",
        "ratio": "java.lang.Double",
        "flag": "java.lang.Boolean",
    }


async def test_key_without_partition_uses_kafkas_partitioner(binder: KafkaBinder, kit: Kit) -> None:
    """Keys land where the Java client's murmur2 partitioner puts them, so a Spring producer
    and this one agree on a key's partition."""
    from aiokafka.partitioner import murmur2

    topic = kit.name("keyed")
    producer = await binder.producer(
        ProducerSpec("out", topic, ProducerProperties(partition_count=4))
    )
    keys = [f"key-{i}" for i in range(20)]
    await producer.send([Message(b"v", {}, key=k) for k in keys])
    records = await kit.read(topic, 20)
    for r in records:
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 4


async def test_groups_compete_and_broadcast(binder: KafkaBinder, kit: Kit) -> None:
    topic = kit.name("groups")
    await kit.create(topic, 4)
    workers, other = kit.name("workers"), kit.name("other")
    a, b, c = Collector(), Collector(), Collector()
    await binder.consumer(consumer_spec(topic, workers, "a"), a)
    await binder.consumer(consumer_spec(topic, workers, "b"), b)
    await binder.consumer(consumer_spec(topic, other, "c"), c)
    await kit.produce(
        topic, [f"m{i}".encode() for i in range(200)], keys=[f"{i}".encode() for i in range(200)]
    )
    await eventually(lambda: len(a.messages) + len(b.messages) == 200, what="group of two")
    await eventually(lambda: len(c.messages) == 200, what="other group")
    assert sorted(a.payloads + b.payloads) == sorted(f"m{i}".encode() for i in range(200))
    assert a.messages and b.messages, "both members of the group got partitions"
    assert {m.partition for m in a.messages}.isdisjoint({m.partition for m in b.messages})
    assert sorted(c.payloads) == sorted(a.payloads + b.payloads)


async def test_a_group_member_with_javas_default_assignors_joins(
    binder: KafkaBinder, kit: Kit
) -> None:
    """Java's consumer (Spring's) offers the range and cooperative-sticky assignors by
    default; a group needs one assignor every member offers, so ours must offer range."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    topic, group = kit.name("mixed"), kit.name("mixed-group")
    await kit.create(topic, 2)
    ours = Collector()
    await binder.consumer(consumer_spec(topic, group, "ours"), ours)
    java_like = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kit.bootstrap,
        group_id=group,
        partition_assignment_strategy=(RangePartitionAssignor,),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        await java_like.start()
        await eventually(lambda: java_like.assignment(), what="the Java-like member's partitions")
        assert len(java_like.assignment()) == 1, "the two members share the two partitions"
    finally:
        await java_like.stop()


async def test_order_per_key_with_concurrency(binder: KafkaBinder, kit: Kit) -> None:
    """concurrency 3 processes partitions in parallel; within a key, order holds."""
    topic = kit.name("order")
    await kit.create(topic, 3)
    got = Collector()
    binding = await binder.consumer(consumer_spec(topic, kit.name("g"), concurrency=3), got)
    keys = [f"key-{k}".encode() for k in range(6)]
    values, value_keys = [], []
    for i in range(300):
        key = keys[i % len(keys)]
        values.append(f"{key.decode()}:{i}".encode())
        value_keys.append(key)
    await kit.produce(topic, values, keys=value_keys)
    await eventually(lambda: len(got.messages) == 300, what="300 messages")
    seen: dict[bytes, list[int]] = defaultdict(list)
    for m in got.messages:
        assert m.key is not None
        seen[m.key].append(int(m.payload.split(b":")[1]))
    for key, sequence in seen.items():
        assert sequence == sorted(sequence), f"order broken for {key!r}"
    assert len(binding.consumers) == 3


async def test_partitioned_consumer_takes_only_its_partitions(
    binder: KafkaBinder, kit: Kit
) -> None:
    topic = kit.name("partitioned")
    await kit.create(topic, 4)
    got = Collector()
    await binder.consumer(
        consumer_spec(topic, kit.name("g"), partitioned=True, instance_index=1, instance_count=2),
        got,
    )
    for p in range(4):
        await kit.produce(topic, [f"p{p}-{i}".encode() for i in range(5)], partition=p)
    await eventually(lambda: len(got.messages) == 10, what="10 messages of partitions 1 and 3")
    assert {m.partition for m in got.messages} == {1, 3}


async def test_dead_letter_record_field_by_field(binder: KafkaBinder, kit: Kit) -> None:
    topic, group = kit.name("dlq"), kit.name("g")
    await kit.create(topic, 3)

    def fail(msg: Message[bytes]) -> Exception | None:
        if msg.payload == b"poison":
            try:
                raise KeyError("inner")
            except KeyError as inner:
                try:
                    raise ValueError("cannot handle poison") from inner
                except ValueError as exc:
                    return exc
        return None

    got = Collector(fail)
    await binder.consumer(consumer_spec(topic, group), got)
    dlq = f"error.{topic}.{group}"
    assert await kit.partitions(dlq) == 3  # provisioned at bind time, partitions as the topic
    original_headers = [("trace", b"t-1"), ("contentType", b"text/plain")]
    await kit.produce(
        topic,
        [b"fine-1", b"poison", b"fine-2"],
        key=b"the-key",
        partition=2,
        headers=original_headers,
    )
    await eventually(lambda: len(got.messages) == 2, what="the two good messages")
    [dead] = await kit.read(dlq, 1)
    [source] = [r for r in await kit.read(topic, 3) if r.value == b"poison"]
    assert (dead.key, dead.value, dead.partition) == (b"the-key", b"poison", 2)
    h = dict(dead.headers)
    assert h["trace"] == b"t-1" and h["contentType"] == b"text/plain"
    assert h["kafka_dlt-original-topic"] == topic.encode()
    assert struct.unpack(">i", h["kafka_dlt-original-partition"]) == (2,)
    assert struct.unpack(">q", h["kafka_dlt-original-offset"]) == (source.offset,)
    assert struct.unpack(">q", h["kafka_dlt-original-timestamp"]) == (source.timestamp,)
    assert h["kafka_dlt-original-timestamp-type"] == b"CreateTime"
    assert h["kafka_dlt-original-consumer-group"] == group.encode()
    assert h["kafka_dlt-exception-fqcn"] == b"builtins.ValueError"
    assert h["kafka_dlt-exception-cause-fqcn"] == b"builtins.KeyError"
    assert h["kafka_dlt-exception-message"] == b"cannot handle poison"
    assert b"ValueError: cannot handle poison" in h["kafka_dlt-exception-stacktrace"]
    # The core's names too, typed, so any binder's dead letters read the same way.
    from binders.kafka.headers import decode_headers

    typed = decode_headers(dead.headers)
    assert typed["x-exception-message"] == "cannot handle poison"
    assert typed["x-exception-fqcn"] == "builtins.ValueError"
    assert "ValueError" in typed["x-exception-stacktrace"]
    assert typed["x-original-topic"] == topic
    assert typed["x-original-partition"] == 2
    assert typed["x-original-offset"] == source.offset
    assert typed["x-original-group"] == group


async def test_enable_dlq_false_logs_and_skips(
    binder: KafkaBinder, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    topic, group = kit.name("nodlq"), kit.name("g")
    got = Collector(lambda m: ValueError("nope") if m.payload == b"bad" else None)
    ext = KafkaConsumerProperties(enable_dlq=False)
    await binder.consumer(consumer_spec(topic, group, ext=ext), got)
    await kit.produce(topic, [b"a", b"bad", b"b"])
    await eventually(lambda: len(got.messages) == 2, what="the good messages")
    assert f"error.{topic}.{group}" not in await kit.topics()
    await eventually(
        lambda: any("enable-dlq is false" in r.getMessage() for r in caplog.records),
        what="the skip to be logged",
    )


async def test_a_raising_handle_gets_the_batch_again(binder: KafkaBinder, kit: Kit) -> None:
    """If handle raises (an output was not confirmed), nothing is committed and the same
    records come again; the final tally has every record exactly once."""
    topic = kit.name("redeliver")
    calls = 0
    got: list[bytes] = []

    async def flaky(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("output not confirmed")
        got.extend(m.payload for m in batch)
        return [None] * len(batch)

    await binder.consumer(consumer_spec(topic, kit.name("g")), flaky)
    await kit.produce(topic, [f"r{i}".encode() for i in range(50)])
    await eventually(lambda: len(got) >= 50, what="50 records")
    assert sorted(got) == sorted(f"r{i}".encode() for i in range(50))
    assert calls >= 3


async def test_pause_resume_and_stop_start_keep_position(binder: KafkaBinder, kit: Kit) -> None:
    topic, group = kit.name("lifecycle"), kit.name("g")
    got, witness = Collector(), Collector()
    binding = await binder.consumer(consumer_spec(topic, group), got)
    await binder.consumer(consumer_spec(topic, kit.name("witness"), "witness"), witness)
    await kit.produce(topic, [b"1", b"2"])
    await eventually(lambda: len(got.messages) == 2, what="first two")

    await binding.pause()
    assert binding.state is BindingState.PAUSED
    await kit.produce(topic, [b"3", b"4"])
    # Another group got them through the same binder and topic: the paused one got none.
    await eventually(lambda: len(witness.messages) == 4, what="the witness group")
    assert len(got.messages) == 2
    await binding.resume()
    assert binding.state.value == "running"
    await eventually(lambda: len(got.messages) == 4, what="resumed messages")

    await binding.stop()
    assert binding.state.value == "stopped"
    await kit.produce(topic, [b"5", b"6", b"7"])
    await binding.start()
    await eventually(lambda: len(got.messages) == 7, what="messages sent while stopped")
    assert got.payloads == [b"1", b"2", b"3", b"4", b"5", b"6", b"7"]


async def test_anonymous_binding_starts_at_latest_and_misses_nothing_after(
    binder: KafkaBinder, kit: Kit
) -> None:
    topic = kit.name("anon")
    await kit.create(topic, 2)
    await kit.produce(topic, [b"old"])
    got = Collector()
    binding = await binder.consumer(consumer_spec(topic, None), got)
    assert binding.subscription.group.startswith("anonymous.")  # type: ignore[attr-defined]
    producer = await binder.producer(ProducerSpec("out", topic))
    await producer.send([Message(f"new-{i}".encode()) for i in range(10)])
    await eventually(lambda: len(got.messages) == 10, what="10 new messages")
    assert b"old" not in got.payloads


async def test_batches_respect_max_poll_records(binder: KafkaBinder, kit: Kit) -> None:
    topic = kit.name("batches")
    await kit.create(topic, 1)
    await kit.produce(topic, [f"b{i}".encode() for i in range(100)])
    got = Collector()
    await binder.consumer(
        consumer_spec(topic, kit.name("g"), ext=KafkaConsumerProperties(max_poll_records=7)), got
    )
    await eventually(lambda: len(got.messages) == 100, what="100 messages")
    assert max(got.batches) <= 7


class Overlapping:
    """A processor (the core's side of a binding) noting, when each batch is confirmed,
    how many batches had been processed by then."""

    def __init__(self) -> None:
        self.processed: list[list[bytes]] = []
        self.ahead: list[int] = []  # per confirmed batch: batches processed after it
        self.done: list[bytes] = []  # settled, in order

    async def process(self, batch: Batch, transaction: Any = None) -> Work:
        self.processed.append([m.payload for m in batch.messages])
        return Work(batch, [None] * len(batch.messages), transaction)

    async def finish(self, work: Work) -> list[Outcome]:
        self.ahead.append(len(self.processed) - len(self.ahead) - 1)
        return work.outcomes

    def settled(self, work: Work) -> None:
        self.done.extend(m.payload for m in work.batch.messages)

    def given_back(self) -> None:
        pass


async def test_the_next_poll_is_processed_while_the_previous_one_is_confirmed(
    binder: KafkaBinder, kit: Kit
) -> None:
    """With ``acks=all`` most of a poll's time was waiting for the acknowledgements of
    its outputs: the core processes the next poll meanwhile, and still settles (commits)
    the polls in order."""
    topic, group = kit.name("overlap"), kit.name("g")
    await kit.create(topic, 1)
    sent = [f"o{i:02d}".encode() for i in range(40)]
    await kit.produce(topic, sent)
    processor = Overlapping()
    ext = KafkaConsumerProperties(max_poll_records=5)
    binding = await binder.consumer(consumer_spec(topic, group, ext=ext), processor)
    await eventually(lambda: len(processor.done) == 40, what="40 records settled")
    assert processor.done == sent
    assert [p for batch in processor.processed for p in batch] == sent
    assert max(processor.ahead) >= 1, "a later poll was processed before one was confirmed"
    await binding.stop()
    again = Collector()
    await binder.consumer(consumer_spec(topic, group), again)
    await kit.produce(topic, [b"after"])
    await eventually(lambda: len(again.messages) == 1, what="the record sent after the stop")
    assert again.payloads == [b"after"], "everything settled was committed"


async def test_producer_needs_enough_partitions(kafka_bootstrap: str, kit: Kit) -> None:
    topic = kit.name("narrow")
    await kit.create(topic, 1)
    strict = make_binder(kafka_bootstrap)
    await strict.start()
    try:
        with pytest.raises(ProvisioningError, match=r"has 1 partition but 3 are required"):
            await strict.producer(ProducerSpec("out", topic, ProducerProperties(partition_count=3)))
    finally:
        await strict.close()
    growing = make_binder(
        kafka_bootstrap, **{"auto-add-partitions": True, "min-partition-count": 2}
    )
    await growing.start()
    try:
        await growing.producer(ProducerSpec("out", topic, ProducerProperties(partition_count=3)))
        assert await kit.partitions(topic) == 3
        fresh = kit.name("fresh")
        await growing.producer(ProducerSpec("out", fresh))
        assert await kit.partitions(fresh) == 2  # min-partition-count on creation
    finally:
        await growing.close()


async def test_no_auto_create_is_a_clear_error(kafka_bootstrap: str, kit: Kit) -> None:
    b = make_binder(kafka_bootstrap, **{"auto-create-topics": False})
    await b.start()
    try:
        with pytest.raises(
            ProvisioningError, match="does not exist and auto-create-topics is false"
        ):
            await b.consumer(consumer_spec(kit.name("missing"), "g"), Collector())
    finally:
        await b.close()


async def test_unknown_client_setting_is_a_config_error(kafka_bootstrap: str) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown aiokafka client setting 'securty_protocol'.*security_protocol"
    ):
        make_binder(kafka_bootstrap, configuration={"securty.protocol": "SSL"})
    with pytest.raises(ConfigError, match="set the binding's group instead"):
        make_binder(kafka_bootstrap, configuration={"group.id": "x"})


async def test_unreachable_broker_fails_start_up_clearly_and_in_bounded_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    b = make_binder(f"127.0.0.1:{port}", **{"health-timeout": 1.5})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(
        ProvisioningError, match=rf"no broker reachable at 127.0.0.1:{port} within 1.5 s"
    ):
        await b.start()
    assert loop.time() - started < 5
    assert any("retrying in" in r.getMessage() for r in caplog.records)
    await b.close()


async def test_message_counts_are_exact_across_many_batches(binder: KafkaBinder, kit: Kit) -> None:
    topic = kit.name("exact")
    producer = await binder.producer(
        ProducerSpec("out", topic, ProducerProperties(partition_count=3))
    )
    got = Collector()
    await binder.consumer(consumer_spec(topic, kit.name("g"), concurrency=2), got)
    for chunk in range(5):
        await producer.send([Message(f"{chunk}-{i}".encode(), key=str(i)) for i in range(400)])
    await eventually(lambda: len(got.messages) >= 2000, what="2000 messages")
    counts = Counter(got.payloads)
    assert len(counts) == 2000 and max(counts.values()) == 1


async def test_reset_offsets_replays_from_the_start_offset(binder: KafkaBinder, kit: Kit) -> None:
    topic, group = kit.name("reset"), kit.name("g")
    first = Collector()
    binding = await binder.consumer(consumer_spec(topic, group, "first"), first)
    await kit.produce(topic, [b"a", b"b", b"c"])
    await eventually(lambda: len(first.messages) == 3, what="first pass")
    await binding.stop()
    again = Collector()
    ext = KafkaConsumerProperties(reset_offsets=True, start_offset="earliest")
    await binder.consumer(consumer_spec(topic, group, "again", ext=ext), again)
    await eventually(lambda: len(again.messages) == 3, what="the replay")
    assert again.payloads == [b"a", b"b", b"c"]


async def test_rebalance_mid_stream_commits_finished_work_first(
    binder: KafkaBinder, kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second member joins while the first holds a batch in flight: the first finishes
    and commits that batch before its partitions move, so the new owner starts exactly
    after it. The batch is held at a gate until the first member's revocation has begun."""
    from binders.kafka.consumer import KafkaSource as Consumer

    topic, group = kit.name("rebalance"), kit.name("g")
    await kit.create(topic, 4)
    seen: list[bytes] = []
    held, gate, revoking = asyncio.Event(), asyncio.Event(), asyncio.Event()
    revoke = Consumer.revoked

    async def observed(self: Consumer, consumer: Any, revoked: set[Any]) -> None:
        if revoked and held.is_set():
            revoking.set()
        await revoke(self, consumer, revoked)

    monkeypatch.setattr(Consumer, "revoked", observed)

    async def slow(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
        if len(seen) >= 100 and not gate.is_set():
            held.set()
            await gate.wait()
        seen.extend(m.payload for m in batch)
        return [None] * len(batch)

    ext = KafkaConsumerProperties(max_poll_records=10)
    await binder.consumer(consumer_spec(topic, group, "first", ext=ext), slow)
    await kit.produce(
        topic, [f"a{i}".encode() for i in range(400)], keys=[b"%d" % i for i in range(400)]
    )
    await asyncio.wait_for(held.wait(), DEADLINE)
    joining = asyncio.ensure_future(
        binder.consumer(consumer_spec(topic, group, "second", ext=ext), slow)
    )
    await asyncio.wait_for(revoking.wait(), DEADLINE)
    assert held.is_set() and not joining.done(), "the rebalance did not wait for the batch"
    gate.set()
    await asyncio.wait_for(joining, DEADLINE)
    await kit.produce(
        topic, [f"b{i}".encode() for i in range(400)], keys=[b"%d" % i for i in range(400)]
    )
    await eventually(lambda: len(set(seen)) == 800, what="all 800 records")
    duplicates = len(seen) - len(set(seen))
    assert duplicates == 0, f"{duplicates} records processed twice across the rebalance"
