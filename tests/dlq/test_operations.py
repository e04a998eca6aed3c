"""``binder dlq``'s operations on every binder, through the dead-letter SPI: list, show,
replay (all, by reason, by count, refused past --max-replays), purge. Each test makes its
dead letters the way an app does (the core's consumer loop dead-letters what its handle
fails) and checks what arrives where the letters are replayed."""

from __future__ import annotations

import re

from binder_core.dlq import operations
from binder_core.dlq.letters import REPLAY_COUNT, REPLAY_REFUSED, replay_count
from binder_core.dlq.view import describe
from tests.dlq.conftest import Lab, gather


def _payloads(good: int, bad: int, ugly: int = 0) -> list[bytes]:
    return (
        [f"good-{i}".encode() for i in range(good)]
        + [f"bad-{i}".encode() for i in range(bad)]
        + [f"ugly-{i}".encode() for i in range(ugly)]
    )


async def test_list_counts_and_groups_the_reasons(lab: Lab) -> None:
    await lab.dead_letter(_payloads(3, 5, 2), bad=7)
    queue = await lab.open()
    try:
        stats = await operations.stats(queue, "orders-in-0")
    finally:
        await queue.close()
    assert stats.count == 7
    assert stats.scanned == 7
    assert stats.reasons[0] == ("ValueError: bad price: not a number", 5)
    assert stats.reasons[1][1] == 2 and stats.reasons[1][0].startswith("KeyError")
    if lab.kind in ("kafka", "redis"):  # the broker records when each letter came
        assert stats.oldest is not None and stats.newest is not None
        assert stats.oldest <= stats.newest
    # Listing reads and leaves every letter in place.
    assert await lab.size() == 7


async def test_discover_finds_the_queue_where_the_broker_can_list(lab: Lab) -> None:
    await lab.dead_letter(_payloads(0, 1), bad=1)
    found = await lab.dead_letters.discover()
    if lab.kind == "rabbit":
        assert found == []  # AMQP cannot list queues: they come from the configuration
    else:
        assert lab.queue_name in found


async def test_show_gives_reasons_headers_and_a_safe_payload(lab: Lab) -> None:
    binding = await lab.consume(lambda m: ValueError("refused"))
    await lab.send([b"bad\x1b[31mred\x00", bytes(range(200, 256)) + b"\xff" * 300])
    await lab.wait_dead(2)
    await binding.stop()
    queue = await lab.open()
    try:
        letters = await operations.select(queue, operations.Selection(), 10)
    finally:
        await queue.close()
    assert len(letters) == 2
    first, second = (describe(x, payload_bytes=64) for x in letters)
    assert first["reason"] == "ValueError: refused"
    assert "\x1b" not in first["payload"]["text"] and "\\x1b" in first["payload"]["text"]
    assert "\x00" not in first["payload"]["text"]
    assert "hex" in second["payload"] and second["payload"]["truncated"]
    assert second["payload"]["size"] == 356
    assert len(second["payload"]["hex"]) == 128
    assert "x-exception-stacktrace" not in first["headers"]
    assert "x-exception-message" in first["headers"]
    assert first["origin"]


async def test_replay_sends_every_letter_back_then_removes_it(lab: Lab) -> None:
    await lab.dead_letter(_payloads(2, 6), bad=6)
    await lab.consume(lambda m: None)  # the cause is fixed: everything is processed now
    queue = await lab.open()
    try:
        summary = await operations.replay(queue, operations.Selection(), chunk_size=4)
    finally:
        await queue.close()
    assert (summary.replayed, summary.failed, summary.kept, summary.refused) == (6, 0, 0, 0)
    await gather(lab, 6)
    assert sorted(m.payload for m in lab.received) == sorted(_payloads(0, 6))
    for m in lab.received:
        assert replay_count(m.headers) == 1
        assert "x-exception-message" not in m.headers
    assert await lab.size() == 0


async def test_replay_by_reason_leaves_the_others_in_place(lab: Lab) -> None:
    await lab.dead_letter(_payloads(0, 4, 3), bad=7)
    await lab.consume(lambda m: None)
    queue = await lab.open()
    try:
        summary = await operations.replay(
            queue, operations.Selection(pattern=re.compile(r"^KeyError")), chunk_size=2
        )
    finally:
        await queue.close()
    assert (summary.replayed, summary.kept) == (3, 4)
    await gather(lab, 3)
    assert sorted(m.payload for m in lab.received) == [b"ugly-0", b"ugly-1", b"ugly-2"]
    assert await lab.size() == 4
    queue = await lab.open()
    try:
        left = await operations.select(queue, operations.Selection(), 100)
    finally:
        await queue.close()
    assert sorted(x.message.payload for x in left) == [f"bad-{i}".encode() for i in range(4)]


async def test_replay_count_limits_how_many(lab: Lab) -> None:
    await lab.dead_letter(_payloads(0, 5), bad=5)
    await lab.consume(lambda m: None)
    queue = await lab.open()
    try:
        summary = await operations.replay(queue, operations.Selection(count=2))
    finally:
        await queue.close()
    assert summary.replayed == 2
    await gather(lab, 2)
    assert await lab.size() == 3


async def test_a_letter_replayed_too_often_goes_back_with_the_reason(lab: Lab) -> None:
    # The cause is not fixed: every replay fails again and is dead-lettered again.
    await lab.dead_letter([b"bad-forever"], bad=1)
    await lab.consume(lambda m: ValueError("still broken"))
    for round_ in range(1, 3):
        queue = await lab.open()
        try:
            summary = await operations.replay(queue, operations.Selection(), max_replays=2)
        finally:
            await queue.close()
        assert summary.replayed == 1, round_
        await lab.wait_dead(1)
        queue = await lab.open()
        try:
            (letter,) = await operations.select(queue, operations.Selection(), 10)
        finally:
            await queue.close()
        assert letter.message.headers[REPLAY_COUNT] in (round_, str(round_), str(round_).encode())
    queue = await lab.open()
    try:
        summary = await operations.replay(queue, operations.Selection(), max_replays=2)
    finally:
        await queue.close()
    assert (summary.replayed, summary.refused) == (0, 1)
    queue = await lab.open()
    try:
        (letter,) = await operations.select(queue, operations.Selection(), 10)
    finally:
        await queue.close()
    assert "--max-replays (2)" in str(letter.message.headers[REPLAY_REFUSED])
    assert "still broken" in describe(letter)["reason"]
    assert await lab.size() == 1


async def test_a_dry_run_changes_nothing(lab: Lab) -> None:
    await lab.dead_letter(_payloads(0, 3), bad=3)
    queue = await lab.open()
    try:
        summary = await operations.replay(queue, operations.Selection(), dry_run=True)
    finally:
        await queue.close()
    assert (summary.would_replay, summary.replayed) == (3, 0)
    assert await lab.size() == 3


async def test_purge_removes_every_letter(lab: Lab) -> None:
    await lab.dead_letter(_payloads(1, 4), bad=4)
    queue = await lab.open()
    try:
        assert await queue.purge() == 4
    finally:
        await queue.close()
    assert await lab.size() == 0
    queue = await lab.open()
    try:
        assert await operations.select(queue, operations.Selection(), 10) == []
    finally:
        await queue.close()


def test_times_are_read_as_iso_or_as_a_duration_ago() -> None:
    assert operations.parse_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert operations.parse_time("2024-05-01T12:00:00") == 1714564800.0
    assert operations.parse_time("90s", now=1000.0) == 910.0
    assert operations.parse_time("2h", now=10_000.0) == 2800.0
    try:
        operations.parse_time("yesterday")
    except ValueError as exc:
        assert "ISO 8601" in str(exc)
    else:
        raise AssertionError("accepted 'yesterday'")
