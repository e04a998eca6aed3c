"""``binder dlq list | show | replay | purge``: dead letters you can act on.

Against a broker binder the command opens the binder itself; with ``--url`` it asks a
running app's management endpoint, which is how the memory binder's dead letters (kept
in the app's process) are reached. Either way the same operations run
(``dlq/operations.py``) and the same output is printed.

``rich`` (progress bars) is imported by ``replay`` only, so ``binder`` starts as fast as
before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from binder_core.dlq import operations, view
from binder_core.dlq.spi import DeadLetterQueue, DeadLetters, NoDeadLetterQueue, access
from binder_core.errors import BinderException

#: Seconds between two plain progress lines when standard error is not a terminal.
_PROGRESS_EVERY = 1.0


def add_parser(sub: Any, config_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``dlq`` command and its four sub-commands."""
    dlq = sub.add_parser(
        "dlq",
        help="list, show, replay or purge dead letters",
        description="Dead-letter queues of a binder (or, with --url, of a running app): "
        "list them, show their letters, replay them where they came from, purge them. QUEUE "
        "is the dead-letter queue's name or the name of a consumer binding.",
    )
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--binder", metavar="NAME", help="binder instance (default: default-binder)"
        )
        parser.add_argument(
            "--url",
            help="a running app's management endpoint (needed for the memory binder)",
        )
        parser.add_argument(
            "--token-env",
            default="BINDER_MANAGEMENT_TOKEN",
            metavar="VAR",
            help="environment variable holding the endpoint's token",
        )
        config_options(parser)

    def selection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--reason", metavar="TEXT", help="reason contains TEXT (any case)")
        parser.add_argument(
            "--reason-regex", metavar="REGEX", help="reason matches the regular expression"
        )
        parser.add_argument(
            "--since", metavar="TIME", help="dead-lettered at or after TIME (ISO 8601, or 2h ago)"
        )
        parser.add_argument("--until", metavar="TIME", help="dead-lettered at or before TIME")

    listing = actions.add_parser(
        "list", help="dead-letter queues: count, oldest, newest, top reasons"
    )
    listing.add_argument("queues", nargs="*", metavar="QUEUE")
    listing.add_argument("--json", action="store_true", help="print JSON")
    common(listing)

    show = actions.add_parser("show", help="letters with their headers, reasons and payloads")
    show.add_argument("queue", metavar="QUEUE")
    show.add_argument("--limit", type=_count, default=20, metavar="N", help="at most N (20)")
    show.add_argument(
        "--payload-bytes",
        type=_count,
        default=view.PAYLOAD_BYTES,
        metavar="N",
        help=f"payload bytes shown ({view.PAYLOAD_BYTES})",
    )
    show.add_argument("--traces", action="store_true", help="show stack traces too")
    show.add_argument("--json", action="store_true", help="print JSON")
    selection(show)
    common(show)

    replay = actions.add_parser(
        "replay",
        help="send letters back where they came from (or --to), then remove them",
    )
    replay.add_argument("queue", metavar="QUEUE")
    replay.add_argument("--to", metavar="DESTINATION", help="replay to this destination instead")
    replay.add_argument("--count", type=_count, metavar="N", help="replay at most N letters")
    replay.add_argument(
        "--max-replays",
        type=_count,
        default=operations.MAX_REPLAYS,
        metavar="N",
        help="a letter already replayed N times is put back with a reason instead "
        f"(default {operations.MAX_REPLAYS})",
    )
    replay.add_argument(
        "--batch",
        type=_positive,
        default=operations.CHUNK,
        metavar="N",
        help=f"letters per round trip ({operations.CHUNK})",
    )
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    selection(replay)
    common(replay)

    purge = actions.add_parser("purge", help="remove every letter of a queue")
    purge.add_argument("queue", metavar="QUEUE")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    common(purge)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected 1 or more")
    return value


def run(args: argparse.Namespace) -> int:
    """Entry point from ``binder_core.cli``."""
    from binder_core.cli import UsageError

    selection = _selection(args, UsageError)
    if args.url:
        return _remote(args, selection)
    return asyncio.run(_local(args, selection))


def _selection(args: argparse.Namespace, usage: type[Exception]) -> operations.Selection:
    pattern = getattr(args, "reason_regex", None)
    try:
        compiled = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise usage(f"--reason-regex: not a regular expression: {exc}") from None
    times: dict[str, float | None] = {}
    for key in ("since", "until"):
        value = getattr(args, key, None)
        try:
            times[key] = operations.parse_time(value) if value else None
        except ValueError as exc:
            raise usage(f"--{key}: {exc}") from None
    return operations.Selection(
        reason=getattr(args, "reason", None),
        pattern=compiled,
        since=times["since"],
        until=times["until"],
        count=getattr(args, "count", None),
    )


# -- against a binder --------------------------------------------------------------------


async def _local(args: argparse.Namespace, selection: operations.Selection) -> int:
    from binder_core.cli import UsageError, _load, _registry
    from binder_core.spi import Capability

    registry = _registry()
    config = _load(args, registry)
    name = args.binder or config.default_binder
    if name not in config.stream.binders:
        from binder_core.errors import did_you_mean

        raise UsageError(f"no binder named '{name}'" + did_you_mean(name, config.stream.binders))
    type_name = config.instance_type(name)
    binder_type = registry.binder_types[type_name]
    binder = binder_type.factory(name, config.environments.get(name) or binder_type.environment())
    if Capability.CROSS_PROCESS not in binder.capabilities:
        raise UsageError(
            f"binder '{name}' ({type_name}) keeps its dead letters inside the app's process: "
            "ask the running app with --url http://127.0.0.1:PORT (its management endpoint, "
            "stream.management.port)"
        )
    found = access(binder)
    if found is None:
        raise UsageError(
            f"binder '{name}' ({type_name}) offers no dead-letter access (its plugin does not "
            "implement dead_letters())"
        )
    await binder.start()
    try:
        known = _configured(config, name, found)
        if args.dlq_command == "list":
            return await _list_local(args, found, known)
        queue = await _open(found, _resolve(args.queue, known))
        try:
            if args.dlq_command == "show":
                size = await queue.size()  # first: letters being read may not count
                letters = await operations.select(queue, selection, args.limit)
                shown = [view.describe(x, args.payload_bytes, args.traces) for x in letters]
                return _print_letters(args, queue.name, size, shown)
            if args.dlq_command == "replay":
                summary = await _replay(args, queue, selection)
                return _print_summary(args, summary)
            size = await queue.size()
            _confirm(args, queue.name, size)
            removed = await queue.purge()
            print(f"purged {removed} dead letter(s) from {queue.name}")
            return 0
        finally:
            await queue.close()
    finally:
        await binder.close()


def _configured(config: Any, binder: str, found: DeadLetters) -> dict[str, str]:
    """Dead-letter queue -> binding, for the configured consumer bindings on ``binder``."""
    from binder_core.plan import plan_binding
    from binder_core.spi import ConsumerSpec

    out: dict[str, str] = {}
    for name in config.stream.bindings:
        plan = plan_binding(config, name, "in", "", None)
        if plan.binder != binder or (plan.group is None and "-in-" not in name):
            continue
        ext = getattr(plan.extension, "consumer", None)
        for destination in plan.destinations:
            spec = ConsumerSpec(name, destination, plan.group, plan.properties.consumer, ext)
            queue = found.locate(spec)
            if queue is not None:
                out.setdefault(queue, name)
    return out


def _resolve(given: str, known: dict[str, str]) -> str:
    """A queue name, or the binding whose queue it is."""
    from binder_core.properties import canonical

    for queue, binding in known.items():
        if canonical(binding) == canonical(given) and given not in known:
            return queue
    return given


async def _open(found: DeadLetters, name: str) -> DeadLetterQueue:
    try:
        return await found.open(name)
    except NoDeadLetterQueue as exc:
        raise MissingQueue(f"{exc}; 'binder dlq list' shows the queues there are") from None


class MissingQueue(BinderException):
    """The dead-letter queue asked for does not exist."""


async def _list_local(args: argparse.Namespace, found: DeadLetters, known: dict[str, str]) -> int:
    names: dict[str, str | None] = {}
    if args.queues:
        for given in args.queues:
            resolved = _resolve(given, known)
            names[resolved] = known.get(resolved)
    else:
        names.update(known)
        for discovered in await found.discover():
            names.setdefault(discovered, None)
    stats: list[operations.QueueStats] = []
    for queue_name, binding in names.items():
        try:
            queue = await found.open(queue_name)
        except NoDeadLetterQueue:
            if args.queues:
                stats.append(operations.QueueStats(queue_name, binding, error="does not exist"))
            continue
        try:
            stats.append(await operations.stats(queue, binding))
        finally:
            await queue.close()
    return _print_stats(args, stats)


async def _replay(
    args: argparse.Namespace, queue: DeadLetterQueue, selection: operations.Selection
) -> operations.ReplaySummary:
    total = await queue.size()
    reporter = _Reporter(queue.name, total, not args.no_progress and not args.json)
    try:
        return await operations.replay(
            queue,
            selection,
            args.to,
            args.max_replays,
            args.dry_run,
            reporter.update,
            args.batch,
        )
    finally:
        reporter.close()


class _Reporter:
    """Progress of a replay: a bar on a terminal, a line a second otherwise."""

    def __init__(self, queue: str, total: int | None, show: bool) -> None:
        self._queue = queue
        self._total = total
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._plain = show and not sys.stderr.isatty()
        if show and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("replaying {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task(view.safe_text(queue, 80), total=total)
            self._bar.start()

    def update(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
        elif self._plain:
            now = time.monotonic()
            if now - self._last >= _PROGRESS_EVERY or done == self._total:
                self._last = now
                of = f" of {self._total}" if self._total is not None else ""
                print(f"replay {self._queue}: {done}{of} read", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _confirm(args: argparse.Namespace, queue: str, size: int | None) -> None:
    from binder_core.cli import UsageError

    if args.yes:
        return
    what = f"{size} dead letter(s)" if size is not None else "every dead letter"
    if not sys.stdin.isatty():
        raise UsageError(f"purge would remove {what} from {queue}: confirm with --yes")
    answer = input(f"Remove {what} from {queue} for good? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("purge cancelled; nothing was removed")


# -- against a running app ---------------------------------------------------------------


def _remote(args: argparse.Namespace, selection: operations.Selection) -> int:
    from binder_core.remote import call

    quote = urllib.parse.quote
    if args.dlq_command == "list":
        _, answer = call(args.url, "/dead-letters", args.token_env)
        stats = [operations.QueueStats.from_dict(q) for q in answer.get("queues", [])]
        if args.queues:
            stats = [s for s in stats if s.queue in args.queues or s.binding in args.queues]
        return _print_stats(args, stats)
    path = f"/dead-letters/{quote(args.queue, safe='')}"
    options: dict[str, Any] = {
        "reason": selection.reason,
        "pattern": selection.pattern.pattern if selection.pattern else None,
        "since": selection.since,
        "until": selection.until,
    }
    if args.dlq_command == "show":
        query = {k: v for k, v in options.items() if v is not None}
        query.update(limit=args.limit, payload=args.payload_bytes, traces=int(args.traces))
        _, answer = call(args.url, f"{path}?{urllib.parse.urlencode(query)}", args.token_env)
        return _print_letters(args, answer["queue"], answer.get("count"), answer["letters"])
    if args.dlq_command == "replay":
        body = {k: v for k, v in options.items() if v is not None}
        body.update(
            to=args.to, count=selection.count, maxReplays=args.max_replays, dryRun=args.dry_run
        )
        _, answer = call(args.url, f"{path}/replay", args.token_env, body)
        return _print_summary(args, operations.ReplaySummary.from_dict(answer))
    _confirm(args, args.queue, None)
    _, answer = call(args.url, f"{path}/purge", args.token_env, {"confirm": True})
    print(f"purged {answer['purged']} dead letter(s) from {answer['queue']}")
    return 0


# -- output ------------------------------------------------------------------------------


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_stats(args: argparse.Namespace, stats: Sequence[operations.QueueStats]) -> int:
    if args.json:
        print(json.dumps({"queues": [s.as_dict() for s in stats]}, indent=2))
        return 0
    if not stats:
        print("no dead-letter queues found (name them: binder dlq list QUEUE ...)")
        return 0
    from binder_core.cli import _table

    rows = [["QUEUE", "BINDING", "COUNT", "OLDEST", "NEWEST", "TOP REASONS"]]
    for s in stats:
        if s.error is not None:
            rows.append([view.safe_text(s.queue, 120), s.binding or "-", "-", "-", "-", s.error])
            continue
        reasons = "; ".join(f"{n}x {view.safe_text(r, 80)}" for r, n in s.reasons) or "-"
        count = "-" if s.count is None else str(s.count)
        if s.count is not None and s.scanned < s.count:
            reasons += f" (of the first {s.scanned})"
        rows.append(
            [
                view.safe_text(s.queue, 120),
                s.binding or "-",
                count,
                _when(s.oldest),
                _when(s.newest),
                reasons,
            ]
        )
    _table(rows)
    return 0


def _print_letters(
    args: argparse.Namespace, queue: str, count: int | None, letters: Sequence[dict[str, Any]]
) -> int:
    if args.json:
        print(json.dumps({"queue": queue, "count": count, "letters": letters}, indent=2))
        return 0
    total = f"{count} waiting" if count is not None else "count unknown"
    print(f"{view.safe_text(queue, 200)}: {total}, {len(letters)} shown")
    for letter in letters:
        print()
        replays = letter.get("replayCount") or 0
        extra = f"  replayed {replays}x" if replays else ""
        print(f"[{letter['id']}] {_when(letter.get('timestamp'))}{extra}")
        print(f"  reason:  {letter['reason']}")
        if letter.get("origin"):
            print(f"  from:    {view.safe_text(str(letter['origin']), 200)}")
        print("  headers:")
        for name, value in letter["headers"].items():
            print(f"    {name}: {value}")
        payload = letter["payload"]
        cut = " (truncated)" if payload.get("truncated") else ""
        if "text" in payload:
            print(f"  payload: {payload['size']} bytes{cut}: {payload['text']}")
        else:
            print(f"  payload: {payload['size']} bytes, binary{cut}: {payload['hex']}")
    return 0


def _print_summary(args: argparse.Namespace, summary: operations.ReplaySummary) -> int:
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    elif summary.dry_run:
        print(
            f"{summary.queue}: {summary.would_replay} of {summary.scanned} letter(s) would be "
            "replayed (dry run: nothing was sent or removed)"
        )
    else:
        print(
            f"{summary.queue}: replayed {summary.replayed}, put back (replayed too often) "
            f"{summary.refused}, left (not selected) {summary.kept}, failed {summary.failed}"
        )
        for target, n in sorted(summary.targets.items()):
            print(f"  {n} to {view.safe_text(target, 200)}")
        if summary.first_error:
            print(f"  first failure: {view.safe_text(summary.first_error, 500)}")
    return 1 if summary.failed else 0
