"""Reading the configuration sources and layering them, remembering where each value came
from so that errors and ``binder config`` can name the file and line, the environment
variable or the ``--set`` option behind it.

Lowest to highest: ``application.yaml``, ``application-<profile>.yaml`` per active profile
(in the order given), environment variables, ``--set KEY=VALUE``.

Spring Boot's reading rules apply to every source, so a Spring file works as written:

- a dotted key inside YAML is a path (``function.definition: x`` is
  ``function: {definition: x}``); brackets keep dots in a key (``[security.protocol]``);
- ``spring.cloud.stream.*`` is ``stream.*``, ``spring.cloud.function.*`` is
  ``stream.function.*`` and ``spring.integration.poller.*`` is ``stream.poller.*``;
- keys are compared ignoring case, ``-`` and ``_`` (``maxAttempts`` meets ``max-attempts``
  from another file);
- Spring's environment variables (``SPRING_CLOUD_STREAM_KAFKA_BINDER_BROKERS``) are read
  as well as ours (``STREAM__KAFKA__BINDER__BROKERS``);
- ``${key}`` and ``${ENV_VAR:default}`` placeholders are replaced once every source is
  read (by lookup, never by evaluation).
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

from binder_core.errors import Problem, closest, did_you_mean
from binder_core.properties import kebab_key, loose

Path_ = tuple[str, ...]

#: Environment variables are read for these top-level sections, plus every top-level
#: section a configuration file defines (the app's own settings).
ENV_ROOTS = ("stream", "spring")
PROFILES_ENV = "BINDER_PROFILES"
#: Spring's variable for the active profiles, read when ``BINDER_PROFILES`` is not set.
SPRING_PROFILES_ENV = "SPRING_PROFILES_ACTIVE"


class RunOn(str):
    """A key read from a Spring environment variable (``SPRING_CLOUD_STREAM_...``) whose
    ``_``-separated words still hold several key levels (``bindings_input_destination``):
    where one key ends and the next begins is decided by the schema when the tree is
    validated (``binder_core.relaxed``), as Spring Boot decides it."""

    __slots__ = ()


def key_of(path: Sequence[str]) -> Path_:
    """The form a key path is recorded in: each key compared ignoring case, ``-`` and
    ``_``, and dotted keys (a client setting such as ``sasl.jaas.config``) split into
    their parts, as they are in the tree."""
    out: list[str] = []
    for part in path:
        out.extend(loose(p) for p in str(part).split(".") if p)
    return tuple(out)


@dataclass
class Layered:
    """The merged tree plus, per key path (``key_of``), the source that set it last and
    the rank of that source (later sources rank higher)."""

    tree: dict[str, Any] = field(default_factory=dict)
    sources: dict[Path_, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    #: ``A__B`` variables whose section no source names (see ``merge_env``).
    unread_env: dict[str, str] = field(default_factory=dict)
    ranks: dict[Path_, int] = field(default_factory=dict)
    #: Key paths the schema moved (a Spring environment variable's run-on key, an alias):
    #: where the value now is -> where a source wrote it.
    moved: dict[Path_, Path_] = field(default_factory=dict)
    #: Values that were a placeholder, by key path: the text as written.
    placeholders: dict[Path_, str] = field(default_factory=dict)
    #: Problems found while merging (a key set twice in one source).
    problems: list[Problem] = field(default_factory=list)
    _rank: int = 0

    def _find(self, path: Sequence[str], table: Mapping[Path_, Any]) -> Any:
        key = key_of(path)
        while key:
            if key in table:
                return table[key]
            moved = self._moved_from(key)
            if moved is not None and moved in table:
                return table[moved]
            key = key[:-1]
        return None

    def _moved_from(self, key: Path_) -> Path_ | None:
        for n in range(len(key), 0, -1):
            origin = self.moved.get(key[:n])
            if origin is not None:
                return (*origin, *key[n:])
        return None

    def source_of(self, path: Sequence[str]) -> str:
        """Where the value at ``path`` (or its nearest set ancestor) came from."""
        found = self._find(path, self.sources)
        return "default" if found is None else str(found)

    def exact_source(self, path: Sequence[str]) -> str | None:
        """Where the value at exactly ``path`` came from; None when no source set it."""
        key = key_of(path)
        if key in self.sources:
            return self.sources[key]
        moved = self._moved_from(key)
        return self.sources.get(moved) if moved is not None else None

    def rank_of(self, path: Sequence[str]) -> int:
        """The rank of the source that set ``path`` (or its nearest set ancestor); 0 when
        none did. Of two spellings of one key, the higher rank wins."""
        found = self._find(path, self.ranks)
        return 0 if found is None else int(found)

    def move(self, written: Sequence[str], now: Sequence[str]) -> None:
        """Note that the value a source wrote at ``written`` is validated at ``now``."""
        a, b = key_of(written), key_of(now)
        if a != b:
            self.moved[b] = a

    def next_source(self) -> None:
        """Start a new source: what follows ranks above everything merged so far."""
        self._rank += 1

    def merge(
        self,
        data: Mapping[str, Any],
        sources: Mapping[Path_, str],
        label: str,
        same_source: bool = False,
    ) -> None:
        """Lay ``data`` over the tree; ``sources`` gives finer labels (file:line) per path.
        Spring's prefixes (``spring.cloud.stream``, ...) are moved to ours first. With
        ``same_source`` it ranks as the merge before it (one environment)."""
        if not same_source:
            self._rank += 1
        data = expand_dotted(data, label, self.problems)
        data, sources = spring_aliases(data, sources, label, self.problems)
        _merge(self.tree, data, (), _Record(self.sources, self.ranks, sources, label, self._rank))


@dataclass
class _Record:
    """Where one merge writes its labels and ranks."""

    labels: dict[Path_, str]
    ranks: dict[Path_, int]
    fine: Mapping[Path_, str]
    label: str
    rank: int

    def set(self, path: Path_) -> None:
        self.labels[path] = self.fine.get(path, self.label)
        self.ranks[path] = self.rank

    def drop_under(self, path: Path_) -> None:
        n = len(path)
        for stale in [p for p in self.labels if p[:n] == path]:
            del self.labels[stale]
            self.ranks.pop(stale, None)


def _merge(base: dict[str, Any], top: Mapping[str, Any], prefix: Path_, rec: _Record) -> None:
    by_loose = {loose(str(k)): k for k in base}
    for key, value in top.items():
        path = (*prefix, *key_of([key]))
        existing = by_loose.get(loose(str(key)))
        if existing is not None and isinstance(base[existing], dict) and isinstance(value, dict):
            rec.set(path)
            _merge(base[existing], value, path, rec)
            continue
        if existing is not None:
            del base[existing]
        base[key if existing is None else existing] = _copy(value)
        by_loose[loose(str(key))] = key if existing is None else existing
        _record_all(path, value, rec)


def _record_all(path: Path_, value: Any, rec: _Record) -> None:
    # A replaced subtree loses the labels of what it replaced: drop stale ones first.
    rec.drop_under(path)
    rec.set(path)
    if isinstance(value, dict):
        for k, v in value.items():
            _record_all((*path, *key_of([k])), v, rec)


def expand_dotted(
    data: Mapping[str, Any], label: str, problems: list[Problem], path: Path_ = ()
) -> dict[str, Any]:
    """``data`` with every dotted key read as a path, as Spring Boot reads any property
    source (``{'function.definition': x}`` is ``{'function': {'definition': x}}``);
    brackets keep a dot inside a key (``'[security.protocol]'``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        text = str(key)
        if isinstance(value, dict):
            value = expand_dotted(value, label, problems, (*path, text))
        if not isinstance(key, RunOn) and ("." in text or "[" in text):
            segments = split_key(text) or [text]
        else:
            segments = [key]
        if not _insert(out, segments, value):
            problems.append(
                Problem(".".join((*path, *map(str, segments))), "key given twice", label)
            )
    return out


#: Spring's prefixes and where they live here: the tree under each moves to ours.
SPRING_PREFIXES: tuple[tuple[Path_, Path_], ...] = (
    (("spring", "cloud", "stream"), ("stream",)),
    (("spring", "cloud", "function"), ("stream", "function")),
    (("spring", "integration", "poller"), ("stream", "poller")),
)


def spring_aliases(
    data: Mapping[str, Any], marks: Mapping[Path_, str], label: str, problems: list[Problem]
) -> tuple[dict[str, Any], dict[Path_, str]]:
    """``data`` with Spring's prefixes moved to ours (see ``SPRING_PREFIXES``), and the
    labels of what moved moved with it. A key given under both names in one source is a
    problem: which one was meant cannot be told."""
    if not any(loose(str(k)) == "spring" for k in data):
        return dict(data), dict(marks)
    tree: dict[str, Any] = _copy(dict(data))
    out_marks = dict(marks)
    for spring_path, ours in SPRING_PREFIXES:
        moved = _detach(tree, spring_path)
        if moved is None:
            continue
        old, new = key_of(spring_path), key_of(ours)
        for path in [p for p in out_marks if p[: len(old)] == old]:
            out_marks[(*new, *path[len(old) :])] = out_marks.pop(path)
        target = tree
        for part in ours:
            key = next((k for k in target if loose(str(k)) == loose(part)), part)
            if not isinstance(target.get(key), dict):
                if key in target:
                    problems.append(
                        Problem(".".join(ours), "must be a mapping", marks.get(new, label))
                    )
                target[key] = {}
            target = target[key]
        if not isinstance(moved, dict):
            problems.append(
                Problem(".".join(spring_path), "must be a mapping", marks.get(old, label))
            )
            continue
        for twice in _overlay(target, moved, ours):
            where = out_marks.get(key_of(twice), label)
            problems.append(
                Problem(
                    ".".join(twice),
                    f"set twice in one source, as {'.'.join(spring_path)}.* and "
                    f"{'.'.join(ours)}.*: keep one",
                    where,
                )
            )
    return tree, out_marks


def _detach(tree: dict[str, Any], path: Path_) -> Any:
    """Remove and return the value at ``path`` (keys matched loosely), pruning mappings
    left empty; None when absent."""
    trail: list[tuple[dict[str, Any], str]] = []
    node: Any = tree
    for part in path:
        if not isinstance(node, dict):
            return None
        key = next((k for k in node if loose(str(k)) == loose(part)), None)
        if key is None:
            return None
        trail.append((node, key))
        node = node[key]
    holder, key = trail[-1]
    value = holder.pop(key)
    for holder, key in reversed(trail[:-1]):
        if not (isinstance(holder[key], dict) and not holder[key]):
            break
        del holder[key]
    return value


def _overlay(target: dict[str, Any], top: Mapping[str, Any], path: Path_) -> list[Path_]:
    """Merge ``top`` into ``target``; the key paths both set (as leaves) are returned,
    in kebab-case."""
    twice: list[Path_] = []
    by_loose = {loose(str(k)): k for k in target}
    for key, value in top.items():
        sub = (*path, kebab_key(str(key)))
        existing = by_loose.get(loose(str(key)))
        if existing is None:
            target[key] = value
            by_loose[loose(str(key))] = key
        elif isinstance(target[existing], dict) and isinstance(value, dict):
            twice += _overlay(target[existing], value, sub)
        else:
            twice.append(sub)
            target[existing] = value
    return twice


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
            written = str(scalars.construct_object(key_node))
            # A dotted key is a path, as Spring Boot reads YAML: function.definition: x
            # is function: {definition: x}. Brackets keep a dot inside one key.
            segments = split_key(written) if ("." in written or "[" in written) else [written]
            segments = segments or [written]
            sub = (*path, *key_of(segments))
            for n in range(len(path) + 1, len(sub) + 1):
                marks.setdefault(sub[:n], line)
            marks[sub] = line
            value = _construct(value_node, sub, label, marks, problems, scalars)
            # A segment that keeps a dot (written in brackets) stays bracketed, so that
            # reading dotted keys again when the tree is merged keeps it whole.
            segments = [f"[{seg}]" if "." in seg else seg for seg in segments]
            if not _insert(out, segments, value):
                problems.append(
                    Problem(".".join((*path, *segments)), "key given twice", marks[sub])
                )
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path, label, marks, problems, scalars) for v in node.value]
    return scalars.construct_object(node)


def _insert(tree: dict[str, Any], segments: Sequence[str], value: Any) -> bool:
    """Put ``value`` at ``segments`` in ``tree``, merging mappings; False when a key was
    already given (in any spelling: ``maxAttempts`` and ``max-attempts`` are one key)."""
    node = tree
    for i, seg in enumerate(segments):
        key = next((k for k in node if loose(str(k)) == loose(seg)), None)
        last = i == len(segments) - 1
        if key is None:
            node[seg] = value if last else {}
            if last:
                return True
            node = node[seg]
            continue
        if last:
            if isinstance(node[key], dict) and isinstance(value, dict):
                return not _overlay(node[key], value, ())
            return False
        if not isinstance(node[key], dict):
            return False
        node = node[key]
    return True


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
    for variable in (PROFILES_ENV, SPRING_PROFILES_ENV):
        if not active and env.get(variable):
            active = [p.strip() for p in env[variable].split(",") if p.strip()]

    if directory_ok:
        base = _find(directory, "application")
        if base is not None:
            _merge_file(layered, base, problems)
        if not active:
            # Spring Boot activates the profiles its base file names.
            active = _profiles_in(layered.tree)
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
    layered.profiles = active

    # Variables are read for the sections some other source names; the others are kept
    # aside for app_settings, which may ask for a section no other source has. All the
    # environment is one source: two spellings of one key there are a problem.
    roots = {loose(k) for k in layered.tree} | {loose(r) for r in ENV_ROOTS}
    roots |= {loose(str(k)) for k in properties or {}}
    for item in overrides:
        head = split_key(item.partition("=")[0].strip())[:1]
        roots |= {loose(h) for h in head}
    layered.next_source()
    for name in sorted(env):
        parts = name.split("__")
        if len(parts) >= 2 and all(parts):
            if loose(parts[0]) not in roots:
                layered.unread_env[name] = env[name]
                continue
            merge_env(layered, name, env[name], same_source=True)
            continue
        path = spring_variable(name)
        if path is not None:
            layered.merge(nest(path, env[name]), {}, f"env {name}", same_source=True)

    if properties:
        layered.merge(properties, {}, "properties")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(Problem("--set", f"expected KEY=VALUE, got '{item}'"))
            continue
        segments = split_key(key.strip())
        layered.merge(nest(segments, parse_scalar(value)), {}, f"--set {key.strip()}")
    problems.extend(layered.problems)
    layered.problems.clear()
    resolve_placeholders(layered, env, problems)
    _check_spring_cloud(layered, problems)
    return layered, problems


def _profiles_in(tree: Mapping[str, Any]) -> list[str]:
    value: Any = tree
    for part in ("spring", "profiles", "active"):
        if not isinstance(value, dict):
            return []
        value = next((v for k, v in value.items() if loose(str(k)) == part), None)
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return []


def _check_spring_cloud(layered: Layered, problems: list[Problem]) -> None:
    """Under ``spring.cloud`` only ``stream`` and ``function`` are ours (and moved); a key
    that is nearly one of them is a typo that would otherwise be ignored."""
    spring = next((v for k, v in layered.tree.items() if loose(str(k)) == "spring"), None)
    cloud = (
        next((v for k, v in spring.items() if loose(str(k)) == "cloud"), None)
        if isinstance(spring, dict)
        else None
    )
    if not isinstance(cloud, dict):
        return
    for key in cloud:
        near = closest(loose(str(key)), ["stream", "function"])
        if near is not None:
            path = ("spring", "cloud", str(key))
            problems.append(
                Problem(
                    ".".join(path),
                    f"unknown key (did you mean 'spring.cloud.{near}'?)",
                    layered.source_of(path),
                )
            )


#: Spring's environment variables (``SPRING_`` and single underscores) and the key path
#: each prefix stands for; the rest of the name is a run-on key (``RunOn``).
SPRING_VARIABLES: tuple[tuple[str, Path_], ...] = (
    ("SPRING_CLOUD_STREAM_", ("stream",)),
    ("SPRING_CLOUD_FUNCTION_", ("stream", "function")),
    ("SPRING_INTEGRATION_POLLER_", ("stream", "poller")),
    ("SPRING_RABBITMQ_", ("spring", "rabbitmq")),
    ("SPRING_KAFKA_", ("spring", "kafka")),
    ("SPRING_APPLICATION_", ("spring", "application")),
)


def spring_variable(name: str) -> list[str] | None:
    """Where a Spring environment variable goes (``SPRING_CLOUD_STREAM_BINDINGS_INPUT_GROUP``
    -> ``stream`` + run-on ``bindings_input_group``), or None for any other variable."""
    for prefix, path in SPRING_VARIABLES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return [*path, RunOn(name[len(prefix) :].lower())]
    return None


def merge_env(layered: Layered, name: str, value: str, same_source: bool = False) -> None:
    """Lay one ``SECTION__KEY__...`` environment variable over the tree."""
    segments = [p.lower() for p in name.split("__")]
    layered.merge(nest(segments, parse_scalar(value)), {}, f"env {name}", same_source)


# -- placeholders ------------------------------------------------------------------------

#: Deepest chain of placeholders resolved through one another.
MAX_PLACEHOLDER_DEPTH = 32


class _Unresolved(Exception):
    """A placeholder without a value, or one that refers back to itself."""


def resolve_placeholders(layered: Layered, env: Mapping[str, str], problems: list[Problem]) -> None:
    """Replace ``${key}`` and ``${key:default}`` in every value: the key is looked up in
    the configuration (Spring's names work: ``${spring.application.name}``), then in the
    environment (as written, then as Spring spells a key there: ``SPRING_APPLICATION_NAME``),
    then the default is used. A value that is only a placeholder takes the type of what it
    finds (a number stays a number). Nothing is evaluated."""
    resolver = _Resolver(layered.tree, env)

    def walk(node: Any, path: Path_) -> Any:
        if isinstance(node, dict):
            for k in list(node):
                node[k] = walk(node[k], (*path, str(k)))
            return node
        if isinstance(node, list):
            return [walk(v, path) for v in node]
        if isinstance(node, str) and "${" in node:
            try:
                value = resolver.text(node, ())
            except _Unresolved as exc:
                problems.append(Problem(".".join(path), str(exc), layered.source_of(path)))
                return node
            layered.placeholders[key_of(path)] = node
            return value
        return node

    walk(layered.tree, ())


class _Resolver:
    def __init__(self, tree: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self._tree = tree
        self._env = env

    def text(self, text: str, stack: tuple[str, ...]) -> Any:
        parts: list[Any] = []
        pos = 0
        while True:
            start = text.find("${", pos)
            if start < 0:
                break
            end = _closing(text, start + 2)
            if end < 0:
                break  # an unterminated ${ is text, as in Spring
            parts.append(text[pos:start])
            parts.append(self._one(text[start + 2 : end], stack))
            pos = end + 1
        parts.append(text[pos:])
        found = [p for p in parts if p != ""]
        if len(found) == 1:
            return found[0]
        return "".join(_as_text(p) for p in found)

    def _one(self, inner: str, stack: tuple[str, ...]) -> Any:
        split = _top_colon(inner)
        key = inner if split < 0 else inner[:split]
        key = _as_text(self.text(key, stack)).strip()
        if key in stack:
            chain = " -> ".join([*stack[stack.index(key) :], key])
            raise _Unresolved(f"placeholder ${{{key}}} refers to itself ({chain})")
        if len(stack) >= MAX_PLACEHOLDER_DEPTH:
            raise _Unresolved(
                f"placeholders nested deeper than {MAX_PLACEHOLDER_DEPTH} levels at ${{{key}}}"
            )
        found = self._lookup(key)
        if found is not _MISSING:
            if isinstance(found, str) and "${" in found:
                return self.text(found, (*stack, key))
            return found
        if split >= 0:
            return self.text(inner[split + 1 :], (*stack, key))
        spelled = _env_name(key)
        raise _Unresolved(
            f"placeholder ${{{key}}} has no value: no key {key} in the configuration and no "
            f"environment variable {spelled}; set one, or give a default: ${{{key}:value}}"
        )

    def _lookup(self, key: str) -> Any:
        if not key:
            return _MISSING
        segments = split_key(key)
        for spring_path, ours in SPRING_PREFIXES:
            n = len(spring_path)
            if [loose(s) for s in segments[:n]] == list(spring_path):
                segments = [*ours, *segments[n:]]
                break
        node: Any = self._tree
        for seg in segments:
            if not isinstance(node, dict):
                node = _MISSING
                break
            node = next((v for k, v in node.items() if loose(str(k)) == loose(seg)), _MISSING)
            if node is _MISSING:
                break
        if node is not _MISSING:
            return node
        for name in (key, _env_name(key)):
            if name in self._env:
                return self._env[name]
        return _MISSING


_MISSING: Any = object()


def _env_name(key: str) -> str:
    """A key as Spring Boot spells it in the environment: ``spring.application.name`` ->
    ``SPRING_APPLICATION_NAME``."""
    return re.sub(r"[.\[\]]+", "_", key).replace("-", "").strip("_").upper()


def _closing(text: str, pos: int) -> int:
    """The index of the ``}`` closing a placeholder whose body starts at ``pos``."""
    depth = 1
    while pos < len(text):
        if text.startswith("${", pos):
            depth += 1
            pos += 2
            continue
        if text[pos] == "}":
            depth -= 1
            if depth == 0:
                return pos
        pos += 1
    return -1


def _top_colon(inner: str) -> int:
    """The ``:`` separating key and default, outside any nested placeholder."""
    depth = 0
    i = 0
    while i < len(inner):
        if inner.startswith("${", i):
            depth += 1
            i += 2
            continue
        if inner[i] == "}":
            depth -= 1
        elif inner[i] == ":" and depth == 0:
            return i
        i += 1
    return -1


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return ""
    return str(value)


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
