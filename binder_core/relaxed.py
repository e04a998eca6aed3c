"""Spring Boot's relaxed binding: the layered tree fitted to a settings model before it is
validated.

Every source is merged first (``binder_core.config_sources``), with keys as they were
written. Here each mapping is matched to the model it configures:

- a key in any spelling Spring accepts (``maxAttempts``, ``max-attempts``, ``max_attempts``,
  ``MAX_ATTEMPTS``, or a field's alias such as Kafka's ``brokers``) becomes the field's key;
- two spellings of one key from different sources: the later source wins, as if both had
  been written the same way; from one source, that is a problem (which was meant?);
- a run-on key from a Spring environment variable (``bindings_input_destination``) is
  split where the schema says its levels end;
- a map of plain values (a client's ``configuration``) gets its dotted keys back
  (``{max: {poll: {records: 5}}}`` -> ``max.poll.records``), because a dotted key in YAML
  was read as a path;
- a comma-separated string for a list (``required-groups: a,b``) is that list;
- a Spring property the model only knows by name (``spring_only``) is accepted when its
  value means what we do anyway, refused with the reason otherwise;
- an unknown key is a problem with the nearest valid key.

Nothing here validates values: pydantic does that next, on the fitted mapping.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel

from binder_core.config_sources import Layered, RunOn
from binder_core.errors import Problem, did_you_mean
from binder_core.properties import SpringOnly, canonical, kebab, kebab_key, loose
from binder_core.secrets import is_secret, mask_repr

Path_ = tuple[str, ...]

#: For an unknown key: a better message than "unknown key" (where the key belongs), or None.
Elsewhere = Callable[[Path_], str | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """One value a source wrote for a key at the level being fitted."""

    written: Path_  # where a source wrote it (for its rank and its source)
    key: str
    value: Any
    #: Made here from a run-on key: the mapping has no key paths of its own in any source.
    synthetic: bool = False

    def below(self, key: str, value: Any) -> Entry:
        written = self.written if self.synthetic else (*self.written, str(key))
        return Entry(written, key, value, self.synthetic)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A model field as the fitter sees it."""

    name: str
    key: str  # the key pydantic validates it by
    annotation: Any
    structured: bool  # a mapping another model validates later (a binder's environment)


@functools.cache
def fields_of(model: type[BaseModel]) -> dict[str, FieldSpec]:
    """Every spelling of every field of ``model``, loosely: -> the field."""
    out: dict[str, FieldSpec] = {}
    for name, info in model.model_fields.items():
        spellings = [name, kebab(name)]
        key = name
        alias = info.validation_alias
        if isinstance(alias, str):
            key = alias
            spellings.append(alias)
        elif isinstance(alias, AliasChoices):
            choices = [c for c in alias.choices if isinstance(c, str)]
            key = choices[0] if choices else name
            spellings += choices
        elif info.alias:
            key = info.alias
            spellings.append(info.alias)
        extra = info.json_schema_extra
        structured = isinstance(extra, dict) and bool(extra.get("structured"))
        spec = FieldSpec(name, key, info.annotation, structured)
        for spelling in spellings:
            out.setdefault(loose(spelling), spec)
    return out


def spring_only_of(model: type[BaseModel]) -> dict[str, tuple[str, SpringOnly]]:
    """The Spring properties ``model`` knows by name only, loosely: -> (name, rule)."""
    table: Mapping[str, SpringOnly] = getattr(model, "spring_only", {}) or {}
    return {loose(k): (k, rule) for k, rule in table.items()}


def unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def is_model(annotation: Any) -> bool:
    """Whether ``annotation`` is a pydantic model class."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _valid_keys(model: type[BaseModel]) -> set[str]:
    return {kebab(n) for n in model.model_fields} | set(getattr(model, "spring_only", {}))


class Fitter:
    """Fits raw mappings to models, reporting what it finds into ``problems``."""

    def __init__(
        self,
        layered: Layered,
        problems: list[Problem],
        elsewhere: Elsewhere | None = None,
    ) -> None:
        self.layered = layered
        self.problems = problems
        self.elsewhere = elsewhere

    def fit(self, model: type[BaseModel], raw: Any, path: Sequence[str]) -> Any:
        """``raw`` (as merged from the sources) fitted to ``model``; ``path`` is where it
        sits in the tree."""
        if not isinstance(raw, dict):
            return raw
        where = tuple(str(p) for p in path)
        return self._model(model, [Entry((*where, str(k)), k, v) for k, v in raw.items()], where)

    # -- models ----------------------------------------------------------------------------

    def _model(self, model: type[BaseModel], entries: list[Entry], path: Path_) -> dict[str, Any]:
        index = fields_of(model)
        spring = spring_only_of(model)
        groups: dict[str, list[Entry]] = {}
        specs: dict[str, FieldSpec] = {}
        out: dict[str, Any] = {}
        forbid = model.model_config.get("extra") not in ("allow", "ignore")
        for entry in entries:
            lk = loose(str(entry.key))
            spec = index.get(lk)
            if spec is None and isinstance(entry.key, RunOn):
                placed = self._run_on(model, entry)
                if placed is not None:
                    spec, entry = placed
            if spec is not None:
                groups.setdefault(spec.name, []).append(entry)
                specs[spec.name] = spec
            elif lk in spring:
                self._spring_only(*spring[lk], entry, path)
            elif forbid:
                self._unknown(model, entry, path)
            else:
                out[str(entry.key)] = entry.value
        for name, group in groups.items():
            spec = specs[name]
            target = (*path, spec.key)
            for entry in group:
                # A run-on key's value is recorded where it lands, not on the way there.
                if not (entry.synthetic and isinstance(entry.value, dict)):
                    self.layered.move(entry.written, target)
            if spec.structured:
                out[spec.key] = self._structured(group, target)
            else:
                out[spec.key] = self._value(spec.annotation, group, target)
        return out

    def _run_on(self, model: type[BaseModel], entry: Entry) -> tuple[FieldSpec, Entry] | None:
        """Split a run-on key where a field of ``model`` ends and the rest resolves below
        it: ``consumer_max_attempts`` -> ``consumer`` + ``max_attempts``."""
        words = str(entry.key).split("_")
        index = fields_of(model)
        for n in range(len(words) - 1, 0, -1):  # the longest field name first
            spec = index.get("".join(words[:n]))
            if spec is not None and resolves(spec.annotation, words[n:]):
                rest = RunOn("_".join(words[n:]))
                return spec, Entry(entry.written, spec.key, {rest: entry.value}, True)
        return None

    def _spring_only(self, name: str, rule: SpringOnly, entry: Entry, path: Path_) -> None:
        if rule.allows(entry.value):
            return
        at = (*path, name)
        self.layered.move(entry.written, at)
        if rule.accepts:
            shown = ", ".join(_shown(a) for a in rule.accepts)
            what = f"{_shown(entry.value)} is not supported (only {shown}): {rule.reason}"
        else:
            what = f"Spring's {name} is not supported: {rule.reason}"
        self.problems.append(Problem(".".join(at), what, self.layered.source_of(entry.written)))

    def _unknown(self, model: type[BaseModel], entry: Entry, path: Path_) -> None:
        at = (*path, str(entry.key))
        hint = self.elsewhere(at) if self.elsewhere is not None else None
        message = hint or "unknown key" + did_you_mean(
            kebab_key(str(entry.key)), _valid_keys(model)
        )
        self.problems.append(Problem(".".join(at), message, self.layered.source_of(entry.written)))

    # -- values ----------------------------------------------------------------------------

    def _value(self, annotation: Any, group: list[Entry], path: Path_) -> Any:
        annotation = unwrap(annotation)
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if is_model(annotation):
            mappings = [e for e in group if isinstance(e.value, dict)]
            # Mappings merge key by key; only a plain value competes with them.
            if len(mappings) != len(group):
                top = self._winner(group, path)
                if not isinstance(top.value, dict):
                    return top.value
            entries = [m.below(k, v) for m in mappings for k, v in m.value.items()]
            return self._model(annotation, entries, path)
        if origin is dict and args:
            inner = unwrap(args[1])
            if is_model(inner):
                return self._named(inner, group, path)
            if any(isinstance(e.value, dict) for e in group):
                return self._flat_map(group, path)
            return self._winner(group, path).value
        value = self._winner(group, path).value
        if origin in (list, tuple, set, frozenset):
            return _as_list(value, args)
        return value

    def _winner(self, group: list[Entry], path: Path_) -> Entry:
        """Of several values for one key, the one from the highest-ranked source; two
        from one source (``brokers`` and ``bootstrap-servers`` in one file) are a problem."""
        if len(group) == 1:
            return group[0]
        ranked = sorted(group, key=lambda e: self.layered.rank_of(e.written))
        top = ranked[-1]
        rank = self.layered.rank_of(top.written)
        rivals = [
            e
            for e in ranked[:-1]
            if self.layered.rank_of(e.written) == rank and e.written != top.written
        ]
        if rivals:
            spelled = " and ".join(sorted({".".join(e.written) for e in [*rivals, top]}))
            self.problems.append(
                Problem(
                    ".".join(path),
                    f"set twice in one source, as {spelled}: keep one",
                    self.layered.source_of(top.written),
                )
            )
        return top

    def _named(self, model: type[BaseModel], group: list[Entry], path: Path_) -> dict[str, Any]:
        """A map of names to models (bindings, binders): entries of one name in any
        spelling meet; a run-on key splits into a name and a key path below it."""
        by_name: dict[str, list[Entry]] = {}
        spelled: dict[str, tuple[int, str]] = {}
        mappings = [e for e in group if isinstance(e.value, dict)]
        known = {canonical(str(k)) for e in mappings for k in e.value if not isinstance(k, RunOn)}
        for mapping in mappings:
            for key, value in mapping.value.items():
                entry = mapping.below(key, value)
                name = str(key)
                if isinstance(key, RunOn):
                    split = _split_name(model, str(key), known)
                    if split is not None:
                        name, rest = split
                        entry = Entry(entry.written, name, {RunOn(rest): value}, True)
                c = canonical(name)
                by_name.setdefault(c, []).append(entry)
                rank = -1 if entry.synthetic else self.layered.rank_of(entry.written)
                if c not in spelled or rank > spelled[c][0]:
                    spelled[c] = (rank, name)
        out: dict[str, Any] = {}
        for c, entries in by_name.items():
            name = spelled[c][1]
            out[name] = self._value(model, entries, (*path, name))
        return out

    def _flat_map(self, group: list[Entry], path: Path_) -> dict[str, Any]:
        """A map of plain values (``configuration``, ``retryable-exceptions``): nested
        mappings (what dotted keys in YAML became) flattened back to dotted keys; for one
        key, the highest-ranked source wins."""
        found: dict[str, list[Entry]] = {}
        for mapping in group:
            if not isinstance(mapping.value, dict):
                continue
            for dotted, written, value in _flatten(mapping, ()):
                found.setdefault(dotted, []).append(Entry(written, dotted, value))
        return {k: self._winner(v, (*path, k)).value for k, v in found.items()}

    def _structured(self, group: list[Entry], path: Path_) -> Any:
        """A mapping another model validates later: merged (later sources over earlier),
        keys as written."""
        ranked = sorted(group, key=lambda e: self.layered.rank_of(e.written))
        if not all(isinstance(e.value, dict) for e in ranked):
            return ranked[-1].value
        merged: dict[str, Any] = {}
        for entry in ranked:
            _deep_update(merged, entry.value)
        return merged


def _flatten(entry: Entry, prefix: Path_) -> list[tuple[str, Path_, Any]]:
    out: list[tuple[str, Path_, Any]] = []
    for key, value in entry.value.items():
        sub = entry.below(key, value)
        parts = (*prefix, str(key))
        if isinstance(value, dict) and value:
            out += _flatten(sub, parts)
        else:
            out.append((".".join(parts), sub.written, value))
    return out


def _deep_update(base: dict[str, Any], top: Mapping[str, Any]) -> None:
    by_loose = {loose(str(k)): k for k in base}
    for key, value in top.items():
        existing = by_loose.get(loose(str(key)))
        if existing is not None and isinstance(base[existing], dict) and isinstance(value, dict):
            _deep_update(base[existing], value)
            continue
        if existing is not None:
            del base[existing]
        base[key] = value
        by_loose[loose(str(key))] = key


def _as_list(value: Any, args: tuple[Any, ...]) -> Any:
    """Spring's list forms: ``a,b`` and ``{0: a, 1: b}`` (what ``key[0]: a`` became)."""
    if isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
        return [value[k] for k in sorted(value, key=lambda k: int(str(k)))]
    inner = args[0] if args else None
    if isinstance(value, str) and inner in (str, int, float):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int | float) and not isinstance(value, bool) and inner in (int, float):
        return [value]
    return value


def _split_name(model: type[BaseModel], key: str, known: set[str]) -> tuple[str, str] | None:
    """Where a binding's name ends in a run-on key (``input_consumer_max_attempts``):
    a name the map already has, else the longest name whose rest resolves in ``model``."""
    words = key.split("_")
    fits = [
        ("_".join(words[:n]), "_".join(words[n:]))
        for n in range(len(words) - 1, 0, -1)
        if resolves(model, words[n:])
    ]
    for name, rest in fits:
        if canonical(name) in known:
            return name, rest
    return fits[0] if fits else None


def resolves(annotation: Any, words: Sequence[str]) -> bool:
    """Whether the ``_``-separated ``words`` name a key path below ``annotation``."""
    annotation = unwrap(annotation)
    if not words:
        return True
    if is_model(annotation):
        if annotation.model_config.get("extra") == "allow":
            return True  # any key is one of its own
        index = fields_of(annotation)
        spring = spring_only_of(annotation)
        for n in range(len(words), 0, -1):
            head = "".join(words[:n])
            if n == len(words) and head in spring:
                return True
            spec = index.get(head)
            if spec is not None and (spec.structured or resolves(spec.annotation, words[n:])):
                return True
        return False
    if typing.get_origin(annotation) is dict:
        args = typing.get_args(annotation)
        inner = unwrap(args[1]) if args else None
        if is_model(inner):
            return any(resolves(inner, words[n:]) for n in range(1, len(words)))
        return True
    return False


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def value_problem(error: Mapping[str, Any], path: Sequence[str]) -> str:
    """The message for one pydantic error on a value: its text, and the value unless the
    key holds a secret."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        return "required key is missing"
    if not any(is_secret(str(p)) for p in path) and error["type"] != "model_type":
        message += f" (got {mask_repr(error['input'], str(path[-1]) if path else '')})"
    return message
