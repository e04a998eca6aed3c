"""Every code block of README.md and of the guide runs here, so no example can rot.

By language, unless a ``<!-- check: ... -->`` comment says otherwise (``blocks.py``):

- ``python``: a block titled ``.../test_*.py`` is run with pytest in a fresh project (no
  pytest configuration: pytest-asyncio's default strict mode), and must pass; a block
  titled with another path is written there and executed as a file; an untitled block is
  executed (top-level ``await`` allowed). Each page is a project: the titled blocks before
  a block (Python, YAML) are its files.
- ``yaml``: loaded and validated as configuration, against the installed binder types,
  exactly as ``binder run`` validates it; a block titled ``config/.../application-P.yaml``
  is also validated with profile P over the ``application.yaml`` before it.
- ``toml``: parsed.
- ``bash``: every command is checked without being run: ``binder`` commands parse with
  the real command line and name modules, configuration directories and profiles that
  exist; scripts, extras and plugin directories exist.
- A titled block naming a file of this repository must show that file: the same YAML
  data, or Python functions and classes identical to the file's (docstrings aside).

Blocks marked ``id NAME`` run in the dedicated tests (``test_walkthrough``,
``test_broker_examples``); this module checks that each such name is claimed by one.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from binder_core.cli import build_parser
from binder_core.config import load_config
from binder_core.errors import ConfigError
from binder_core.plugins import load_plugins
from tests.docs.blocks import ROOT, Block, all_blocks, blocks_of, commands

_TEST_FILE = ("test_", "_test.py")


def _is_test_file(title: str | None) -> bool:
    name = Path(title or "").name
    return name.endswith(".py") and (name.startswith(_TEST_FILE[0]) or name.endswith(_TEST_FILE[1]))


def runnable(block: Block) -> bool:
    """Whether the generic runner runs this block (rather than skipping it on purpose,
    leaving it to a dedicated test, or it being output)."""
    c = block.check
    return c.skip is None and not c.output and c.id is None


def _param(block: Block) -> Any:
    marks = [getattr(pytest.mark, n) for n in block.check.needs]
    return pytest.param(block, id=block.where, marks=marks)


ALL = all_blocks()
RUN = [b for b in ALL if runnable(b)]
SKIPPED = [b for b in ALL if b.check.skip is not None]


# -- the project a block lives in ------------------------------------------------------------


def _project(block: Block, directory: Path) -> None:
    """Write the titled blocks of ``block``'s page, up to and including it, as files."""
    for earlier in blocks_of(block.page):
        if earlier.line > block.line:
            break
        if earlier.title and (runnable(earlier) or earlier.check.id) and earlier.check.skip is None:
            path = directory / earlier.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(earlier.text, encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory standing for the reader's project (its working directory); blocks run
    in fresh interpreters there, so this repository's own ``apps`` and ``config`` are out
    of sight."""
    return tmp_path


# -- runners by language ----------------------------------------------------------------------


#: Runs one file of the guide in a fresh interpreter (a block may set process-wide state,
#: such as a global tracer provider): top-level ``await`` allowed, as in a notebook.
_RUN_FILE = """
import ast, asyncio, sys
path = sys.argv[1]
code = compile(open(path, encoding="utf-8").read(), path, "exec",
               flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {"__name__": "__doc_snippet__", "__file__": path})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


def run_python(block: Block, project: Path) -> None:
    if _is_test_file(block.title):
        run_pytest(block, project)
        return
    path = project / (block.title or f"snippet_{block.line}.py")
    if not block.title:
        path.write_text(block.text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", _RUN_FILE, str(path)],
        cwd=project, env=_reader_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, f"{block.where} failed:\n{result.stderr[-4000:]}"


def _reader_env() -> dict[str, str]:
    """The environment a reader's shell would have: none of ours."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("STREAM__", "PYTEST_", "MARKET__"))
    }
    env.pop("BINDER_PROFILES", None)
    env.pop("PYTHONPATH", None)
    return env


def run_pytest(block: Block, project: Path) -> None:
    """A test file of the guide, run as its reader would: ``pytest`` in their project,
    with no pytest configuration of ours (strict asyncio mode, no ``tests.brokers``)."""
    assert block.title is not None
    env = _reader_env()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
         "-o", "asyncio_mode=strict",
         *block.check.pytest_args, block.title],
        cwd=project, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, f"{block.where}: pytest failed:\n{tail}"
    assert " passed" in result.stdout, f"{block.where}: no test passed:\n{tail}"


def run_yaml(block: Block, project: Path) -> None:
    tree = yaml.safe_load(block.text)
    assert isinstance(tree, dict), f"{block.where}: a configuration block must be a mapping"
    registry = load_plugins()
    try:
        load_config(
            None, (), (), registry.binder_types, environ={}, properties=tree, read_files=False
        )
        title = Path(block.title or "")
        if block.title and title.name.startswith("application-") and title.suffix == ".yaml":
            profile = title.stem.removeprefix("application-")
            load_config(project / title.parent, [profile], (), registry.binder_types, environ={})
    except ConfigError as exc:
        pytest.fail(f"{block.where}: the configuration is refused:\n{exc.render()}")


def run_toml(block: Block, project: Path) -> None:
    tomllib.loads(block.text)


RUNNERS = {
    "python": run_python,
    "py": run_python,
    "yaml": run_yaml,
    "yml": run_yaml,
    "toml": run_toml,
}
SHELLS = {"bash", "sh", "shell", "console"}


@pytest.mark.parametrize("block", [_param(b) for b in RUN])
def test_block_runs(block: Block, project: Path) -> None:
    _project(block, project)
    if block.language in SHELLS:
        for command in commands(block):
            problem = check_command(command)
            assert problem is None, f"{block.where}: `{command}`: {problem}"
        return
    runner = RUNNERS.get(block.language)
    if runner is None:
        pytest.fail(
            f"{block.where}: nothing runs a {block.language or 'plain'} block; if it is what a "
            "command prints, put <!-- check: output --> before it, if it is a deliberate "
            "fragment <!-- check: skip WHY -->"
        )
    runner(block, project)


# -- titled blocks show the repository's own files -------------------------------------------


def _definitions(source: str) -> dict[str, str]:
    """Top-level functions and classes by name, as AST dumps without docstrings."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for child in ast.walk(node):
                body = getattr(child, "body", None)
                if (
                    isinstance(body, list)
                    and body
                    and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)
                    and len(body) > 1
                ):
                    body.pop(0)
            out[node.name] = ast.dump(node)
    return out


IN_REPO = [
    b
    for b in ALL
    if b.title and (ROOT / b.title).is_file() and b.check.skip is None and not b.check.output
]


@pytest.mark.parametrize("block", [pytest.param(b, id=b.where) for b in IN_REPO])
def test_titled_block_shows_the_repository_file(block: Block) -> None:
    assert block.title is not None
    actual = (ROOT / block.title).read_text(encoding="utf-8")
    if block.language in ("yaml", "yml"):
        assert yaml.safe_load(block.text) == yaml.safe_load(actual), (
            f"{block.where} shows {block.title} with other settings than the file has"
        )
    elif block.language in ("python", "py"):
        shown, real = _definitions(block.text), _definitions(actual)
        assert shown, f"{block.where}: no function or class to compare with {block.title}"
        for name, dump in shown.items():
            assert real.get(name) == dump, f"{block.where}: {name} differs from {block.title}"
    elif block.language == "toml":
        wanted = tomllib.loads(block.text)
        have = tomllib.loads(actual)
        assert _contains(have, wanted), f"{block.where}: not what {block.title} holds"


def _contains(have: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(have, dict) and all(
            k in have and _contains(have[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list) and isinstance(have, list):
        return all(any(_contains(h, w) for h in have) for w in wanted)
    return bool(have == wanted)


# -- shell commands, checked without running them --------------------------------------------

_SCRIPTS = {
    "scripts/brokers": {"up", "down", "restart", "status", "logs", "bounce"},
    "scripts/test": None,
}


def check_command(command: str) -> str | None:
    """What is wrong with one documented command, or None."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in ("&&", "|", ";", "||", "&"):
            parts.append([])
        else:
            parts[-1].append(token)
    for words in filter(None, parts):
        problem = _check_words(words)
        if problem is not None:
            return problem
    return None


def _check_words(words: list[str]) -> str | None:
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]  # VARIABLE=value before the command
    if not words:
        return None
    program = words[0].removeprefix("./")
    for prefix in (".venv/bin/",):
        program = program.removeprefix(prefix)
    args = words[1:]
    if program == "binder":
        return _check_binder(args)
    if program in _SCRIPTS:
        subcommands = _SCRIPTS[program]
        if subcommands is not None and args and args[0] not in subcommands:
            return f"{program} has no sub-command {args[0]!r}"
        return None
    if program in ("python", "python3"):
        if args[:2] == ["-m", "venv"]:
            return None
        if args[:1] == ["-m"] and len(args) > 1:
            module = args[1]
            if module == "pip":
                return _check_pip(args[2:])
            found = (ROOT / module).is_dir() or (ROOT / f"{module}.py").is_file()
            if not found and __import__("importlib").util.find_spec(module) is None:
                return f"no module {module}"
            return None
        return "a python command other than -m MODULE"
    if program == "pip":
        return _check_pip(args)
    if program == "mkdocs":
        if not (ROOT / "mkdocs.yml").is_file():
            return "no mkdocs.yml"
        return None if args[:1] in (["serve"], ["build"]) else "mkdocs serve or build"
    if program in ("curl", "cd", "export", "echo", "printf", "kill"):
        return None
    return f"{program!r} is not a command the guide's checks know; mark the block"


def _check_pip(args: list[str]) -> str | None:
    if not args or args[0] != "install":
        return "only pip install is expected"
    with (ROOT / "pyproject.toml").open("rb") as f:
        extras = set(tomllib.load(f)["project"]["optional-dependencies"])
    for arg in args[1:]:
        if arg.startswith("-"):
            continue
        if arg.startswith(".["):
            wanted = set(arg[2:].rstrip("]").split(","))
            if wanted - extras:
                return f"no extra {sorted(wanted - extras)} in pyproject.toml"
        elif arg.startswith("binder["):
            wanted = set(arg[len("binder[") :].rstrip("]").split(","))
            if wanted - extras:
                return f"no extra {sorted(wanted - extras)} in pyproject.toml"
        elif arg.startswith(("./", "plugins/")) and not (ROOT / arg).is_dir():
            return f"no directory {arg}"
    return None


def _check_binder(args: list[str]) -> str | None:
    parser = build_parser()
    try:
        parsed = parser.parse_args(args)
    except SystemExit:
        return "the binder command line refuses these arguments"
    config = Path(getattr(parsed, "config", None) or "config")
    if hasattr(parsed, "config"):
        if not (ROOT / config).is_dir():
            return f"no configuration directory {config}"
        for profile in getattr(parsed, "profile", []):
            if not (ROOT / config / f"application-{profile}.yaml").is_file():
                return f"no profile {profile} in {config}"
    module = getattr(parsed, "module", None)
    if module and not (ROOT / Path(*module.split("."))).with_suffix(".py").is_file():
        return f"no app module {module} in this repository"
    return None


# -- the count ------------------------------------------------------------------------------


def test_every_block_is_run_or_marked_and_every_id_is_claimed() -> None:
    """Blocks marked ``id`` are claimed by exactly one dedicated test module."""
    sources = {
        p.name: p.read_text(encoding="utf-8")
        for p in (ROOT / "tests" / "docs").glob("test_*.py")
        if p.name != Path(__file__).name
    }
    for block in ALL:
        ident = block.check.id
        if ident is None:
            continue
        claimed = [name for name, text in sources.items() if f'"{ident}"' in text]
        assert len(claimed) == 1, f"{block.where}: check id {ident!r} is run by {claimed}"
    counts = summary()
    assert counts["blocks"] == sum(v for k, v in counts.items() if k != "blocks")


def summary() -> dict[str, int]:
    """How many blocks run here, run in dedicated tests, are skipped on purpose, or are
    output (the session prints it)."""
    return {
        "blocks": len(ALL),
        "run": sum(1 for b in RUN if b.language not in SHELLS),
        "commands checked": sum(1 for b in RUN if b.language in SHELLS),
        "dedicated": sum(1 for b in ALL if b.check.id is not None),
        "skipped": len(SKIPPED),
        "output": sum(
            1 for b in ALL if b.check.output and b.check.skip is None and b.check.id is None
        ),
    }
