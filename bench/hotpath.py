"""``python -m bench.hotpath BINDER [SIZE] [--runs N]`` and ``--summarize PROFILE``

Where the time of the hot path goes. The full benchmark interleaves the framework with the
hand-written loop and the Java anchors, so a profile of it mixes them all; this runs only
the framework side of one consume-process-produce case, several times, for a profiler to
watch::

    py-spy record -r 500 -f raw -o prof.txt -- python -m bench.hotpath kafka medium
    python -m bench.hotpath --summarize prof.txt

The summary sorts every sample by the function it was in (its leaf), grouped by who owns
that code (the framework, the broker client, pydantic, asyncio), leaving out what the run
spends outside the measured loop: filling the input, reading the output back, imports.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

#: Frames whose samples are set-up or checking, not the loop being measured.
_OUTSIDE = (
    "_input",
    "_check_output",
    "_create",
    "_new_topic",
    "_find_and_load",
    ".open (bench",
    ".close (bench",
)


def _owner(leaf: str) -> str:
    """The group a sample's innermost frame belongs to."""
    name, _, where = leaf.partition(" (")
    path = where.rsplit(":", 1)[0]
    if "select (selectors" in leaf:
        return "waiting for the broker (epoll)"
    if "pydantic" in path or "arguments.py:93" in leaf or "output.py:153" in leaf:
        # The two lines that call pydantic-core's validator and to_json directly.
        return "pydantic: JSON decode and validate, encode"
    for client in ("aiokafka", "pika", "aiormq"):
        if f"{client}/" in path:
            return f"{client}: {path.split('/', 1)[1]}"
    if path.startswith(("binder_core/", "binders/")):
        return f"framework: {path}"
    if path.startswith("asyncio/"):
        return f"asyncio: {name}"
    return f"other: {name} ({path})" if path else "other: native code"


def summarize(profile: Path, top: int = 25) -> str:
    """Share of the loop's samples per owner, from a py-spy ``--format raw`` file."""
    shares: Counter[str] = Counter()
    outside = 0
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(marker in frame for frame in frames for marker in _OUTSIDE):
            outside += int(count)
            continue
        shares[_owner(frames[-1])] += int(count)
    total = sum(shares.values())
    if not total:
        return f"{profile}: no samples of the loop"
    groups: Counter[str] = Counter()
    for owner, n in shares.items():
        groups[owner.split(":", 1)[0]] += n
    lines = [f"{total} samples in the loop ({outside} outside it, left out)", ""]
    lines += [f"{100 * n / total:5.1f}%  {group}" for group, n in groups.most_common()]
    lines += ["", f"top {top}:"]
    lines += [f"{100 * n / total:5.1f}%  {owner}" for owner, n in shares.most_common(top)]
    return "\n".join(lines)


async def _framework_only(binder: str, size: str, runs: int, n: int) -> None:
    from bench.__main__ import _suite
    from bench.workload import FULL

    suite = _suite(binder)
    await suite.open()
    try:
        count = n or FULL.count(binder, size)
        for _ in range(runs):
            measure = await suite.framework("process", size, count, 0)
            print(
                f"{binder} {size}: {measure.rate:,.0f} msg/s, CPU {measure.cpu_us:.1f} µs/msg",
                flush=True,
            )
    finally:
        await suite.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("binder", nargs="?", choices=("memory", "kafka", "rabbit"))
    parser.add_argument("size", nargs="?", default="small", choices=("small", "medium"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--messages", type=int, default=0, help="per run (default: the full plan's)"
    )
    parser.add_argument("--summarize", type=Path, metavar="PROFILE")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if not args.binder:
        parser.error("name a binder, or --summarize a profile")
    asyncio.run(_framework_only(args.binder, args.size, args.runs, args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
