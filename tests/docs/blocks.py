"""The fenced code blocks of the guide (docs/**/*.md) and of README.md, with what the page
says about each in a ``<!-- check: ... -->`` comment on the line before it.

A check comment holds clauses separated by ``;``:

- ``skip REASON``: a deliberate fragment (or a command that installs or starts something);
  not run, counted and listed with its reason (the rest of the comment).
- ``output``: what a command prints, or a diagram; not code.
- ``id NAME``: run by a dedicated test in tests/docs/ that asks for the block by NAME (a
  broker set-up started against the real broker, a walk-through of commands).
- ``pytest ARGS``: arguments for running a test-file block with pytest (``-k ...``).
- ``needs BROKER``: the block needs kafka, rabbit or redis (the markers of the suite).

A block without a comment is run by its language (see ``test_snippets``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
_CHECK = re.compile(r"^\s*<!--\s*check:\s*(?P<body>.*?)\s*-->\s*$")
_TITLE = re.compile(r"""title=(?:"([^"]*)"|'([^']*)'|(\S+))""")


@dataclass(frozen=True)
class Check:
    """What a ``<!-- check: ... -->`` comment says."""

    skip: str | None = None
    output: bool = False
    id: str | None = None
    pytest_args: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    @classmethod
    def parse(cls, body: str, where: str) -> Check:
        skip = None
        output = False
        ident = None
        args: tuple[str, ...] = ()
        needs: tuple[str, ...] = ()
        clauses = [c.strip() for c in body.split(";")]
        for n, clause in enumerate(clauses):
            word, _, rest = clause.partition(" ")
            rest = rest.strip()
            if not clause:
                continue
            if word == "skip":  # the reason is the rest of the comment, semicolons and all
                reason = "; ".join([rest, *clauses[n + 1 :]]).strip("; ")
                if not reason:
                    raise ValueError(f"{where}: 'skip' needs a reason")
                skip = reason
                break
            elif word == "output":
                output = True
            elif word == "id":
                if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", rest):
                    raise ValueError(f"{where}: 'id' needs a name like kafka-example")
                ident = rest
            elif word == "pytest":
                args = tuple(shlex.split(rest))
            elif word == "needs":
                needs = tuple(n.strip() for n in rest.split(","))
                unknown = set(needs) - {"kafka", "rabbit", "redis"}
                if unknown:
                    raise ValueError(f"{where}: 'needs' takes kafka, rabbit, redis: {unknown}")
            else:
                raise ValueError(
                    f"{where}: unknown check clause {word!r} (skip, output, id, pytest, needs)"
                )
        return cls(skip, output, ident, args, needs)


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    title: str | None
    text: str
    check: Check = field(default_factory=Check)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def __str__(self) -> str:
        return self.where


def pages() -> list[Path]:
    """README.md and every page of the guide, in a stable order."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@cache
def blocks_of(page: Path) -> tuple[Block, ...]:
    """The fenced blocks of one page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent, fence, info = opened["indent"], opened["fence"], opened["info"].strip()
        language, _, attributes = info.partition(" ")
        title_match = _TITLE.search(attributes)
        title = next((g for g in title_match.groups() if g), None) if title_match else None
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence[0] * len(fence))
            and lines[j].strip().strip(fence[0]) == ""
        ):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"{page.relative_to(ROOT)}:{i + 1}: code block never closed")
        where = f"{page.relative_to(ROOT)}:{i + 1}"
        check = Check()
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0:
            comment = _CHECK.match(lines[k])
            if comment is not None:
                check = Check.parse(comment["body"], where)
        out.append(Block(page, i + 1, language.lower(), title, "\n".join(body) + "\n", check))
        i = j + 1
    return tuple(out)


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks_of(page)]


def by_id(ident: str) -> Block:
    """The block marked ``<!-- check: id NAME -->``; exactly one may carry a name."""
    found = [b for b in all_blocks() if b.check.id == ident]
    assert len(found) == 1, f"{len(found)} blocks carry check id {ident!r}: {found}"
    return found[0]


def commands(block: Block) -> list[str]:
    """The commands of a shell block: comments and blank lines dropped, ``\\`` continued."""
    out: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((pending + line).strip())
        pending = ""
    return out
