"""The dead-letter operations, written once over the ``DeadLetterQueue`` primitives: the
statistics of ``list``, the letters of ``show``, ``replay`` and ``purge``. The command
line runs them against a broker binder, the management endpoint inside a running app;
both print the same results.

A replay handles one chunk at a time: read, select, publish the replayed copies and wait
for their confirmations, put back (confirmed) the letters replayed too often, and only
then acknowledge. A replay killed half-way leaves every letter it had not acknowledged in
the queue; the next run replays the letters of the chunk in flight once more.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from binder_core.dlq import letters
from binder_core.dlq.spi import DeadLetter, DeadLetterQueue
from binder_core.message import Message

#: Letters read, published and acknowledged per round trip of a replay.
CHUNK = 200
#: Letters a ``list`` reads per queue to find reasons and times (``size`` counts them all).
SCAN_LIMIT = 100_000
#: Reasons ``list`` shows per queue.
TOP_REASONS = 3
#: Default of ``--max-replays``: replays of one message before it is put back instead.
MAX_REPLAYS = 3


@dataclass(frozen=True)
class Selection:
    """Which letters an operation takes: by reason (substring, any case, or a regular
    expression searched in the full reason), by dead-letter time, and at most ``count``."""

    reason: str | None = None
    pattern: re.Pattern[str] | None = None
    since: float | None = None
    until: float | None = None
    count: int | None = None

    @property
    def by_time(self) -> bool:
        """Whether a time range was asked for."""
        return self.since is not None or self.until is not None

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` is selected (``count`` aside). A letter without a time is
        outside any time range."""
        if self.by_time:
            when = letter.timestamp
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        if self.reason is not None or self.pattern is not None:
            why = letters.reason(letter.message.headers)
            if self.reason is not None and self.reason.lower() not in why.lower():
                return False
            if self.pattern is not None and self.pattern.search(why) is None:
                return False
        return True


@dataclass
class QueueStats:
    """One queue as ``binder dlq list`` shows it."""

    queue: str
    binding: str | None = None
    count: int | None = None
    oldest: float | None = None
    newest: float | None = None
    #: (short reason, letters), most frequent first.
    reasons: list[tuple[str, int]] = field(default_factory=list)
    #: Letters read to find reasons and times; fewer than ``count`` when the scan stopped.
    scanned: int = 0
    #: Why the queue could not be read, instead of the figures.
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = asdict(self)
        out["reasons"] = [{"reason": r, "count": n} for r, n in self.reasons]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueueStats:
        """Back from ``as_dict`` (a management endpoint's answer)."""
        reasons = [(str(r["reason"]), int(r["count"])) for r in data.get("reasons", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["reasons"] = reasons
        return cls(**known)


@dataclass
class ReplaySummary:
    """What a replay did."""

    queue: str
    #: Letters read (selected or not).
    scanned: int = 0
    #: Replayed, confirmed and removed from the queue.
    replayed: int = 0
    #: Replayed too often: put back at the end of the queue with the reason.
    refused: int = 0
    #: Not selected: left where they are.
    kept: int = 0
    #: The broker refused the replayed copy: left where they are.
    failed: int = 0
    #: Why the first failure failed.
    first_error: str | None = None
    #: Selected in a dry run (nothing was sent or removed).
    would_replay: int = 0
    dry_run: bool = False
    #: Letters by where they were replayed to.
    targets: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplaySummary:
        """Back from ``as_dict``."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


async def stats(
    queue: DeadLetterQueue, binding: str | None = None, scan_limit: int = SCAN_LIMIT
) -> QueueStats:
    """Count, oldest, newest and the most frequent reasons of ``queue`` (read, not
    changed: every letter stays)."""
    out = QueueStats(queue.name, binding, await queue.size())
    reasons: Counter[str] = Counter()
    while out.scanned < scan_limit:
        chunk = await queue.read(min(CHUNK, scan_limit - out.scanned))
        if not chunk:
            break
        for letter in chunk:
            out.scanned += 1
            reasons[letters.short_reason(letter.message.headers)] += 1
            when = letter.timestamp
            if when is not None:
                out.oldest = when if out.oldest is None else min(out.oldest, when)
                out.newest = when if out.newest is None else max(out.newest, when)
    if out.count is None or (out.scanned < scan_limit and out.scanned > out.count):
        out.count = out.scanned
    out.reasons = reasons.most_common(TOP_REASONS)
    return out


async def select(queue: DeadLetterQueue, selection: Selection, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` selected letters, oldest first (read, not changed)."""
    found: list[DeadLetter] = []
    wanted = limit if selection.count is None else min(limit, selection.count)
    while len(found) < wanted:
        chunk = await queue.read(CHUNK)
        if not chunk:
            break
        found.extend(letter for letter in chunk if selection.matches(letter))
    return found[:wanted]


#: Told after each chunk of a replay: letters handled so far (read, whatever became of them).
Progress = Callable[[int], None]


async def replay(
    queue: DeadLetterQueue,
    selection: Selection,
    to: str | None = None,
    max_replays: int = MAX_REPLAYS,
    dry_run: bool = False,
    progress: Progress | None = None,
    chunk_size: int = CHUNK,
) -> ReplaySummary:
    """Replay the selected letters of ``queue`` to where they came from (or ``to``).

    Each replayed copy carries ``x-replay-count`` one higher than its letter. A letter
    whose count already reached ``max_replays`` is not replayed: it goes back to the end of
    the queue with ``x-replay-refused`` saying why. A letter is acknowledged (removed) only
    once its copy was confirmed.
    """
    summary = ReplaySummary(queue.name, dry_run=dry_run)
    left = selection.count
    while left is None or left > 0:
        chunk = await queue.read(chunk_size)
        if not chunk:
            break
        summary.scanned += len(chunk)
        chosen: list[DeadLetter] = []
        for letter in chunk:
            if (left is None or len(chosen) < left) and selection.matches(letter):
                chosen.append(letter)
            else:
                summary.kept += 1
        if left is not None:
            left -= len(chosen)
        if dry_run:
            summary.would_replay += len(chosen)
            if progress is not None:
                progress(summary.scanned)
            continue
        await _replay_chunk(queue, chosen, to, max_replays, summary)
        if progress is not None:
            progress(summary.scanned)
    return summary


async def _replay_chunk(
    queue: DeadLetterQueue,
    chosen: Sequence[DeadLetter],
    to: str | None,
    max_replays: int,
    summary: ReplaySummary,
) -> None:
    going = [x for x in chosen if letters.replay_count(x.message.headers) < max_replays]
    too_often = [x for x in chosen if letters.replay_count(x.message.headers) >= max_replays]
    done: list[DeadLetter] = []
    if going:
        copies = [(x, letters.replay_copy(x)) for x in going]
        results = await queue.replay(copies, to)
        for letter, result in zip(going, results, strict=True):
            if result is None:
                done.append(letter)
                summary.replayed += 1
                target = queue.target(letter, to) or "?"
                summary.targets[target] = summary.targets.get(target, 0) + 1
            else:
                _failed(summary, result)
    if too_often:
        back: list[Message[bytes]] = [letters.refused_copy(x, max_replays) for x in too_often]
        results = await queue.append(back)
        for letter, result in zip(too_often, results, strict=True):
            if result is None:
                done.append(letter)
                summary.refused += 1
            else:
                _failed(summary, result)
    if done:
        await queue.ack(done)


def _failed(summary: ReplaySummary, error: Exception) -> None:
    summary.failed += 1
    if summary.first_error is None:
        summary.first_error = f"{type(error).__name__}: {error}"


def parse_time(value: str, now: float | None = None) -> float:
    """``--since`` / ``--until``: an ISO 8601 time (UTC unless it says otherwise) or a
    duration ago (``90s``, ``15m``, ``2h``, ``3d``); seconds since the epoch. Raises
    ``ValueError`` with what is accepted."""
    from datetime import UTC, datetime

    now = time.time() if now is None else now
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if match:
        amount = float(match.group(1))
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now - amount * unit
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"'{value}' is neither an ISO 8601 time (2024-05-01T12:00:00Z) nor a duration "
            "ago (90s, 15m, 2h, 3d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
