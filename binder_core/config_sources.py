"""Reading the configuration sources and layering them, remembering where each value came
from so that errors and ``binder config`` can name the file and line, the environment
variable or the ``--set`` option behind it.

Lowest to highest: ``application.yaml``, ``application-<profile>.yaml`` per active profile
(in the order given), environment variables, ``--set KEY=VALUE``.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from binder_core.errors import Problem, did_you_mean
from binder_core.properties import canonical

Path_ = tuple[str, ...]

#: Environment variables are read for these top-level sections, plus every top-level
#: section a configuration file defines (the app's own settings).
ENV_ROOTS = ("stream",)
PROFILES_ENV = "BINDER_PROFILES"


@dataclass
class Layered:
    """The merged tree plus, per canonical key path, the source that set it last."""

    tree: dict[str, Any] = field(default_factory=dict)
    sources: dict[Path_, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    #: ``A__B`` variables whose section no source names (see ``merge_env``).
    unread_env: dict[str, str] = field(default_factory=dict)

    def source_of(self, path: Sequence[str]) -> str:
        """Where the value at ``path`` (or its nearest set ancestor) came from."""
        key = tuple(canonical(str(p)) for p in path)
        while key:
            if key in self.sources:
                return self.sources[key]
            key = key[:-1]
        return "default"

    def exact_source(self, path: Sequence[str]) -> str | None:
        """Where the value at exactly ``path`` came from; None when no source set it."""
        return self.sources.get(tuple(canonical(str(p)) for p in path))

    def merge(self, data: Mapping[str, Any], sources: Mapping[Path_, str], label: str) -> None:
        """Lay ``data`` over the tree; ``sources`` gives finer labels (file:line) per path."""
        _merge(self.tree, data, (), self.sources, sources, label)


def _merge(
    base: dict[str, Any],
    top: Mapping[str, Any],
    prefix: Path_,
    record: dict[Path_, str],
    fine: Mapping[Path_, str],
    label: str,
) -> None:
    by_canon = {canonical(str(k)): k for k in base}
    for key, value in top.items():
        path = (*prefix, canonical(str(key)))
        existing = by_canon.get(canonical(str(key)))
        if existing is not None and isinstance(base[existing], dict) and isinstance(value, dict):
            record[path] = fine.get(path, label)
            _merge(base[existing], value, path, record, fine, label)
            continue
        if existing is not None:
            del base[existing]
        base[key if existing is None else existing] = _copy(value)
        _record_all(path, value, record, fine, label)


def _record_all(
    path: Path_, value: Any, record: dict[Path_, str], fine: Mapping[Path_, str], label: str
) -> None:
    # A replaced subtree loses the labels of what it replaced: drop stale ones first.
    for stale in [p for p in record if p[: len(path)] == path]:
        del record[stale]
    record[path] = fine.get(path, label)
    if isinstance(value, dict):
        for k, v in value.items():
            _record_all((*path, canonical(str(k))), v, record, fine, label)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


#: Deepest nesting a configuration file may have; real ones stay under ten levels.
MAX_DEPTH = 64
#: Most values (keys, scalars, lists, mappings) a document may expand to once its aliases
#: are followed: an "alias bomb" of a few hundred bytes is refused before it is expanded.
MAX_VALUES = 100_000


class LimitError(yaml.MarkedYAMLError):
    """A document over one of the limits above, or one with a recursive alias."""


class _Loader(yaml.SafeLoader):
    """The safe loader, composing with a depth limit and counting what the document's
    aliases expand to, in time linear in the document (nothing is expanded here)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._total = 0  # values composed so far, each alias counted as what it expands to
        self._sizes: dict[int, int] = {}  # id(node) -> values it expands to

    def _count(self, n: int, mark: Any) -> None:
        self._total += n
        if self._total > MAX_VALUES:
            raise LimitError(
                None,
                None,
                f"the document expands to more than {MAX_VALUES:,} values once its aliases "
                "are followed (an alias bomb?); refused without expanding it",
                mark,
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:  # the anchored value is still being read: it contains itself
                raise LimitError(
                    None,
                    None,
                    f"recursive alias *{event.anchor}: it refers to a value that contains it",
                    typing.cast(Any, event.start_mark),
                )
            self._count(size, event.start_mark)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        before = self._total
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._total - before + 1
        self._count(1, event.start_mark)
        return node


def _compose(text: str) -> yaml.Node | None:
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def read_yaml(file: Path) -> tuple[dict[str, Any], dict[Path_, str], list[Problem]]:
    """Parse one YAML file into a tree and a ``file:line`` label per key path."""
    label = str(file)
    try:
        data = file.read_bytes()
    except OSError as exc:
        return {}, {}, [Problem("(file)", f"cannot read: {exc.strerror}", label)]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return (
            {},
            {},
            [
                Problem(
                    "(file)",
                    f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column}; "
                    "save the file as UTF-8",
                    f"{label}:{line}",
                )
            ],
        )
    try:
        node = _compose(text)
    except LimitError as exc:
        return {}, {}, [Problem("(file)", str(exc.problem), _where(label, exc))]
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or str(exc)
        return {}, {}, [Problem("(file)", f"not valid YAML: {reason}", _where(label, exc))]
    except RecursionError:  # a backstop: the limits above should always come first
        return {}, {}, [Problem("(file)", "nested too deeply to read", label)]
    if node is None:
        return {}, {}, []
    if not isinstance(node, yaml.MappingNode):
        return {}, {}, [Problem("(file)", "the top level must be a mapping of keys", label)]
    marks: dict[Path_, str] = {}
    problems: list[Problem] = []
    tree = _construct(node, (), label, marks, problems, yaml.SafeLoader(""))
    return tree, marks, problems


def _where(label: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{label}:{mark.line + 1}" if mark is not None else label


def _construct(
    node: yaml.Node,
    path: Path_,
    label: str,
    marks: dict[Path_, str],
    problems: list[Problem],
    scalars: yaml.SafeLoader,
) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = f"{label}:{key_node.start_mark.line + 1}"
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(".".join(path) or "(file)", "a key must be a name", line))
                continue
            key = str(scalars.construct_object(key_node))
            sub = (*path, canonical(key))
            marks[sub] = line
            if key in out:
                problems.append(Problem(".".join(sub), "key given twice", marks[sub]))
            out[key] = _construct(value_node, sub, label, marks, problems, scalars)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path, label, marks, problems, scalars) for v in node.value]
    return scalars.construct_object(node)


def parse_scalar(text: str) -> Any:
    """Values from the environment and ``--set`` are typed as YAML would type them, so
    ``3`` is a number, ``true`` a boolean and ``[a, b]`` a list. Text that is not valid
    YAML, or over the limits of a configuration file, stays the text it is."""
    if not text.strip():
        return text
    try:
        node = _compose(text)
    except (yaml.YAMLError, RecursionError):
        return text
    if node is None:
        return None
    return _construct(node, (), "", {}, [], yaml.SafeLoader(""))


_SEGMENT = re.compile(r"\[([^\]]+)\]|([^.\[\]]+)")


def split_key(key: str) -> list[str]:
    """``stream.kafka.binder.configuration[security.protocol]`` -> its segments; brackets
    protect keys that contain dots."""
    return [m.group(1) or m.group(2) for m in _SEGMENT.finditer(key)]


def nest(segments: Sequence[str], value: Any) -> dict[str, Any]:
    """``['a', 'b'], 1`` -> ``{'a': {'b': 1}}``."""
    tree: Any = value
    for seg in reversed(segments):
        tree = {seg: tree}
    return dict(tree)


def load(
    config_dir: Path | None,
    profiles: Sequence[str] = (),
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
    read_files: bool = True,
) -> tuple[Layered, list[Problem]]:
    """Read every source. ``config_dir`` None means ``./config`` if it exists.

    ``properties`` is a tree laid over the files and the environment (tests use it);
    ``read_files`` False skips the configuration directory altogether.
    """
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    layered = Layered()
    explicit = config_dir is not None
    directory = config_dir if config_dir is not None else Path("config")
    if not read_files:
        directory_ok = False
    elif not directory.is_dir():
        if explicit:
            problems.append(Problem("--config", f"no such directory: {directory}"))
        directory_ok = False
    else:
        directory_ok = True

    active = list(profiles)
    if not active and env.get(PROFILES_ENV):
        active = [p.strip() for p in env[PROFILES_ENV].split(",") if p.strip()]
    layered.profiles = active

    if directory_ok:
        base = _find(directory, "application")
        if base is not None:
            _merge_file(layered, base, problems)
        for profile in active:
            file = _find(directory, f"application-{profile}")
            if file is None:
                known = [
                    p.stem.removeprefix("application-")
                    for p in directory.glob("application-*.y*ml")
                ]
                problems.append(
                    Problem(
                        "--profile",
                        f"profile '{profile}' has no file {directory}/application-{profile}.yaml"
                        + did_you_mean(profile, known),
                    )
                )
                continue
            _merge_file(layered, file, problems)
    elif active:
        problems.append(Problem("--profile", "profiles need a configuration directory"))

    # Variables are read for the sections some other source names; the others are kept
    # aside for app_settings, which may ask for a section no other source has.
    roots = {canonical(k) for k in layered.tree} | set(ENV_ROOTS)
    roots |= {canonical(str(k)) for k in properties or {}}
    for item in overrides:
        head = split_key(item.partition("=")[0].strip())[:1]
        roots |= {canonical(h) for h in head}
    for name in sorted(env):
        parts = name.split("__")
        if len(parts) < 2 or not all(parts):
            continue
        if canonical(parts[0]) not in roots:
            layered.unread_env[name] = env[name]
            continue
        merge_env(layered, name, env[name])

    if properties:
        layered.merge(properties, {}, "properties")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(Problem("--set", f"expected KEY=VALUE, got '{item}'"))
            continue
        segments = split_key(key.strip())
        layered.merge(nest(segments, parse_scalar(value)), {}, f"--set {key.strip()}")
    return layered, problems


def merge_env(layered: Layered, name: str, value: str) -> None:
    """Lay one ``SECTION__KEY__...`` environment variable over the tree."""
    segments = [p.lower() for p in name.split("__")]
    layered.merge(nest(segments, parse_scalar(value)), {}, f"env {name}")


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".yaml", ".yml"):
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _merge_file(layered: Layered, file: Path, problems: list[Problem]) -> None:
    tree, marks, found = read_yaml(file)
    problems.extend(found)
    layered.files.append(file)
    layered.merge(tree, marks, str(file))
