"""Finding the functions an app binds and telling their kind from their signatures.

No decorator and no framework import: a parameterless function is a supplier, one whose
return annotation is ``None`` is a consumer, anything else is a function. ``async def``,
generators and async generators work for each kind; a function whose parameter is an
``AsyncIterator[T]`` is a stream-to-stream (reactive) function.
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from binder_core.errors import Problem, did_you_mean
from binder_core.message import Message
from binder_core.state import GlobalTable, Store, Table


class Kind(enum.StrEnum):
    """What a function is bound as."""

    SUPPLIER = "supplier"
    FUNCTION = "function"
    CONSUMER = "consumer"


_ASYNC_ITERS = {
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
    typing.AsyncIterator,
    typing.AsyncIterable,
    typing.AsyncGenerator,
}
_ITERS = {
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    typing.Iterator,
    typing.Iterable,
    typing.Generator,
}


@dataclass(frozen=True)
class FunctionInfo:
    """One user function and what its signature says about it."""

    name: str
    fn: Callable[..., Any]
    kind: Kind
    is_async: bool  # a coroutine function (awaited per call)
    is_generator: bool  # a sync generator (many outputs per call)
    is_async_generator: bool
    reactive: bool  # takes an AsyncIterator: a stream-to-stream function
    input_type: Any  # the payload type the parameter declares (inside Message / list)
    wants_message: bool  # parameter is Message[T]
    batch: bool  # parameter is list[T]: batch mode
    #: Inputs: one, or several for a stream function over several ``AsyncIterator``s
    #: (Spring's multi-input functions: ``fn-in-0``, ``fn-in-1``, ...).
    inputs: int = 1
    #: The payload type of each input (``input_type`` is the first's).
    input_types: tuple[Any, ...] = ()
    #: Outputs: one, or several for a function returning (or yielding) a ``tuple[A, B]``
    #: whose positions are ``fn-out-0``, ``fn-out-1``, ...; ``None`` at a position sends
    #: nothing there.
    outputs: int = 1
    #: State the function keeps or reads: (parameter name, "store", "table" or
    #: "global-table", value type), in the order of its parameters.
    state: tuple[tuple[str, str, Any], ...] = ()

    @property
    def has_input(self) -> bool:
        """Whether the function takes messages."""
        return self.kind is not Kind.SUPPLIER

    @property
    def has_output(self) -> bool:
        """Whether the function produces messages."""
        return self.kind is not Kind.CONSUMER


@dataclass(frozen=True)
class Definition:
    """One entry of ``stream.function.definition``: a function or a composition."""

    name: str  # Spring's joined name: parse|enrich -> parseenrich
    parts: tuple[FunctionInfo, ...]

    @property
    def first(self) -> FunctionInfo:
        """The function that receives input."""
        return self.parts[0]

    @property
    def last(self) -> FunctionInfo:
        """The function whose result is the output."""
        return self.parts[-1]

    @property
    def kind(self) -> Kind:
        """The kind of the whole composition."""
        if not self.first.has_input:
            return Kind.SUPPLIER if self.last.has_output else Kind.CONSUMER
        return Kind.FUNCTION if self.last.has_output else Kind.CONSUMER

    def input_binding(self, index: int = 0) -> str:
        """Spring's default input binding name."""
        return f"{self.name}-in-{index}"

    def output_binding(self, index: int = 0) -> str:
        """Spring's default output binding name."""
        return f"{self.name}-out-{index}"

    @property
    def inputs(self) -> int:
        """How many input bindings the definition has."""
        return self.first.inputs if self.first.has_input else 0

    @property
    def outputs(self) -> int:
        """How many output bindings the definition has."""
        return self.last.outputs if self.last.has_output else 0


def inspect_function(name: str, fn: Callable[..., Any]) -> FunctionInfo:
    """Classify ``fn`` from its signature. Raises ``TypeError`` with a user-facing message
    when the signature cannot be bound."""
    target = fn
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)) and callable(fn):
        target = type(fn).__call__  # a callable object: read its __call__
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"'{name}' has no readable signature: {exc}") from None
    try:
        hints = typing.get_type_hints(target)
    except Exception as exc:
        hints = {}
        for p in sig.parameters.values():
            text = p.annotation if isinstance(p.annotation, str) else ""
            if text.split("[", 1)[0].rsplit(".", 1)[-1] in ("Store", "Table", "GlobalTable"):
                raise TypeError(
                    f"'{name}': the type of parameter '{p.name}' ({text}) cannot be read "
                    f"({type(exc).__name__}: {exc}); import it where the function is "
                    "defined, at module level"
                ) from None
    params = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    # Parameters typed Store[T] / Table[T] are state the framework passes, not inputs.
    state: list[tuple[str, str, Any]] = []
    for position, p in enumerate(list(params)):
        origin = typing.get_origin(hints.get(p.name, p.annotation))
        if origin not in _STATE_KINDS:
            continue
        if position == 0 or p.kind is p.POSITIONAL_ONLY:
            raise TypeError(
                f"'{name}': parameter '{p.name}' ({origin.__name__}) must come after "
                "the input and be passable by name (the framework passes it)"
            )
        kind = (typing.get_args(hints[p.name]) or (Any,))[0]
        state.append((p.name, _STATE_KINDS[origin], kind))
        params.remove(p)
    streams = [_stream_item(hints.get(p.name, p.annotation)) for p in params]
    if len(params) > 1 and not all(item is not _NOT_A_STREAM for item in streams):
        raise TypeError(
            f"'{name}' takes {len(params)} parameters; a bound function takes one input "
            "(use Message[T] for payload plus headers), or, as a stream function over "
            "several inputs, one AsyncIterator per input"
        )
    is_async_gen = inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(target)
    is_gen = inspect.isgeneratorfunction(fn) or inspect.isgeneratorfunction(target)
    is_async = (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(target)) and not (
        is_async_gen
    )
    returns = hints.get("return", sig.return_annotation)
    consumer = returns is None or returns is type(None)

    input_type: Any = Any
    wants_message = batch = reactive = False
    if params:
        annotation = hints.get(params[0].name, params[0].annotation)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        origin = typing.get_origin(annotation)
        if origin in _ASYNC_ITERS:
            reactive = True
            annotation = (typing.get_args(annotation) or (Any,))[0]
            origin = typing.get_origin(annotation)
            if not (is_async_gen or is_async):
                raise TypeError(
                    f"'{name}' takes an AsyncIterator, so it must be 'async def' "
                    "(an async generator to produce output)"
                )
        elif origin in (list, collections.abc.Sequence, typing.Sequence) and not reactive:
            batch = True
            annotation = (typing.get_args(annotation) or (Any,))[0]
            origin = typing.get_origin(annotation)
        if annotation is Message or origin is Message:
            wants_message = True
            annotation = (typing.get_args(annotation) or (Any,))[0]
        input_type = annotation
    outputs = 1 if consumer else _output_count(returns)
    input_types = tuple(streams) if len(params) > 1 else (input_type,)
    kind = Kind.SUPPLIER if not params else Kind.CONSUMER if consumer else Kind.FUNCTION
    if state and (reactive or batch or len(params) > 1 or outputs > 1):
        raise TypeError(
            f"'{name}' keeps state ({', '.join(s[0] for s in state)}): it takes one message "
            "at a time (not a list, nor a stream) and returns one output (not a tuple of "
            "outputs)"
        )
    if kind is Kind.SUPPLIER and consumer:
        raise TypeError(f"'{name}' takes no input and returns None: it cannot be bound")
    if reactive and not is_async_gen:
        kind = Kind.CONSUMER
    return FunctionInfo(
        name=name,
        fn=fn,
        kind=kind,
        is_async=is_async,
        is_generator=is_gen,
        is_async_generator=is_async_gen,
        reactive=reactive,
        input_type=input_type,
        wants_message=wants_message,
        batch=batch,
        inputs=max(1, len(params)),
        input_types=input_types,
        outputs=outputs,
        state=tuple(state),
    )


_NOT_A_STREAM = object()

#: Parameter types that are state the framework passes: what FunctionInfo.state calls them.
_STATE_KINDS: dict[Any, str] = {Store: "store", Table: "table", GlobalTable: "global-table"}


def _stream_item(annotation: Any) -> Any:
    """The item type of an ``AsyncIterator[T]`` annotation, or ``_NOT_A_STREAM``."""
    if typing.get_origin(annotation) in _ASYNC_ITERS:
        return (typing.get_args(annotation) or (Any,))[0]
    return _NOT_A_STREAM


def _output_count(returns: Any) -> int:
    """How many outputs a return annotation declares: a fixed ``tuple[A, B, ...]`` (also
    inside ``Iterator``/``AsyncIterator`` for generators) gives one per position."""
    origin = typing.get_origin(returns)
    if origin in _ITERS or origin in _ASYNC_ITERS:
        returns = (typing.get_args(returns) or (Any,))[0]
        origin = typing.get_origin(returns)
    if origin is tuple:
        args = typing.get_args(returns)
        if len(args) >= 2 and Ellipsis not in args:
            return len(args)
    return 1


def candidates(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """Public functions defined in ``module`` itself (not imported into it)."""
    out: dict[str, Callable[..., Any]] = {}
    for attr, value in vars(module).items():
        if attr.startswith("_") or not inspect.isfunction(value):
            continue
        if getattr(value, "__module__", None) == module.__name__:
            out[attr] = value
    return out


def find_function(module: ModuleType, name: str) -> Callable[..., Any] | None:
    """A function the configuration names: one defined in ``module``, or any public
    callable it holds (imported into it)."""
    found = candidates(module).get(name)
    if found is None and not name.startswith("_"):
        value = getattr(module, name, None)
        found = value if callable(value) else None
    return found


def _public_functions(module: ModuleType) -> list[str]:
    return [n for n, v in vars(module).items() if not n.startswith("_") and inspect.isfunction(v)]


def resolve_definition(
    definition: str | None, module: ModuleType
) -> tuple[list[Definition], list[Problem]]:
    """Parse ``stream.function.definition`` against ``module``.

    Without a definition, a module with exactly one public function binds that function,
    as Spring does with a single function bean.
    """
    available = candidates(module)
    problems: list[Problem] = []
    path = "stream.function.definition"
    if not definition or not definition.strip():
        if len(available) == 1:
            definition = next(iter(available))
        else:
            names = ", ".join(sorted(available)) or "none"
            problems.append(
                Problem(
                    path,
                    f"no function definition and module '{module.__name__}' has "
                    f"{len(available)} public functions ({names}); set "
                    "stream.function.definition",
                )
            )
            return [], problems
    out: list[Definition] = []
    seen: set[str] = set()
    for entry in (e.strip() for e in definition.split(";")):
        if not entry:
            continue
        parts: list[FunctionInfo] = []
        for fname in (p.strip() for p in entry.split("|")):
            fn = available.get(fname) or getattr(module, fname, None)
            if fn is None or not callable(fn):
                problems.append(
                    Problem(
                        path,
                        f"no function '{fname}' in module '{module.__name__}'"
                        + did_you_mean(fname, _public_functions(module)),
                    )
                )
                continue
            try:
                parts.append(inspect_function(fname, fn))
            except TypeError as exc:
                problems.append(Problem(path, str(exc)))
        if len(parts) != len(entry.split("|")):
            continue
        problem = _check_composition(entry, parts)
        if problem:
            problems.append(Problem(path, problem))
            continue
        name = "".join(p.name for p in parts)
        if name in seen:
            problems.append(Problem(path, f"'{entry}' is defined twice"))
            continue
        seen.add(name)
        out.append(Definition(name, tuple(parts)))
    return out, problems


def _check_composition(entry: str, parts: list[FunctionInfo]) -> str | None:
    last = parts[-1]
    if last.has_output and last.outputs > 1 and (not parts[0].has_input or parts[0].batch):
        what = "a supplier" if not parts[0].has_input else "a batch function"
        return (
            f"'{entry}' is {what} returning a tuple of {last.outputs} outputs: only a function "
            "taking one message at a time sends to several output bindings; return a list "
            "to send one JSON array, or send to the others with StreamBridge"
        )
    if len(parts) == 1:
        return None
    for i, part in enumerate(parts):
        if i > 0 and not part.has_input:
            return f"in '{entry}', '{part.name}' is a supplier, so it can only come first"
        if i < len(parts) - 1 and not part.has_output:
            return f"in '{entry}', '{part.name}' is a consumer, so it can only come last"
        if part.reactive or part.batch:
            return f"in '{entry}', '{part.name}' takes a stream or a batch and cannot be composed"
    return None
