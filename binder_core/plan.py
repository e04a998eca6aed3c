"""From configuration and an app module to the bindings to create: names, destinations,
groups, binders and properties, with every problem found before anything connects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from binder_core.config import AppConfig
from binder_core.conversion import is_json, media_type
from binder_core.errors import ConfigError, Problem, closest, did_you_mean
from binder_core.expression import ExpressionError, compile_expression
from binder_core.functions import Definition, candidates, find_function, resolve_definition
from binder_core.names import binding_name_problems
from binder_core.properties import BindingProperties, canonical
from binder_core.routing import ROUTER, router_info
from binder_core.spi import Converter

#: Spring's binding names: ``<function>-in-<index>`` and ``<function>-out-<index>``.
_SPRING_NAME = re.compile(r"^(?P<fn>.+)-(?P<dir>in|out)-(?P<index>\d+)$")


@dataclass(frozen=True)
class BindingPlan:
    """One binding as it will be created; also what ``binder bindings`` prints."""

    name: str
    direction: str  # "in" or "out"
    definition: str  # the function (composition) it belongs to; "" for StreamBridge
    destination: str  # as configured: several destinations of a consumer as a,b
    group: str | None
    binder: str  # binder instance name
    binder_type: str
    properties: BindingProperties
    extension: BaseModel | None

    @property
    def content_type(self) -> str:
        """The binding's content type."""
        return self.properties.content_type

    @property
    def destinations(self) -> tuple[str, ...]:
        """Each destination (a consumer bound to ``a,b`` has two)."""
        return (
            tuple(self.destination.split(",")) if "," in self.destination else (self.destination,)
        )


@dataclass(frozen=True)
class AppPlan:
    """Everything an app will bind."""

    definitions: list[Definition]
    inputs: dict[str, BindingPlan]  # definition name -> its (first) input binding
    outputs: dict[str, BindingPlan]  # definition name -> its (first) output binding
    bridge: dict[str, BindingPlan]  # configured bindings no function uses (StreamBridge)
    #: Bindings ``-in-1``, ``-in-2``, ... / ``-out-1``, ... of multi-binding functions.
    more_inputs: dict[str, list[BindingPlan]] = field(default_factory=dict)
    more_outputs: dict[str, list[BindingPlan]] = field(default_factory=dict)
    #: Input bindings the app polls itself (``stream.pollable-source``), by name.
    pollable: dict[str, BindingPlan] = field(default_factory=dict)
    #: Tables a function reads (``Table[T]`` parameters): definition name -> (function.
    #: parameter, binding), bound as the inputs after the function's own (``-in-1``, ...).
    tables: dict[str, list[tuple[str, BindingPlan]]] = field(default_factory=dict)

    def all(self) -> list[BindingPlan]:
        """Every binding, inputs first."""
        more_in = [p for plans in self.more_inputs.values() for p in plans]
        more_out = [p for plans in self.more_outputs.values() for p in plans]
        tables = [p for pairs in self.tables.values() for _, p in pairs]
        return [
            *self.inputs.values(),
            *more_in,
            *tables,
            *self.outputs.values(),
            *more_out,
            *self.bridge.values(),
            *self.pollable.values(),
        ]

    def inputs_of(self, definition: str) -> list[BindingPlan]:
        """A definition's input bindings, by index."""
        first = self.inputs.get(definition)
        return [first, *self.more_inputs.get(definition, [])] if first is not None else []

    def outputs_of(self, definition: str) -> list[BindingPlan]:
        """A definition's output bindings, by index."""
        first = self.outputs.get(definition)
        return [first, *self.more_outputs.get(definition, [])] if first is not None else []

    def binders(self) -> set[str]:
        """Binder instances the app uses."""
        return {b.binder for b in self.all()}


def plan_binding(
    config: AppConfig, name: str, direction: str, definition: str, force_binder: str | None
) -> BindingPlan:
    """The plan for binding ``name``, its properties merged from ``stream.default``."""
    props = config.binding(name)
    binder = force_binder or props.binder or config.default_choice()[0]
    binder_type = config.instance_type(binder) if binder in config.stream.binders else binder
    return BindingPlan(
        name=name,
        direction=direction,
        definition=definition,
        destination=props.destination or name,
        group=props.group,
        binder=binder,
        binder_type=binder_type,
        properties=props,
        extension=config.extension(binder_type, name),
    )


def make_plan(
    config: AppConfig,
    module: ModuleType,
    converters: dict[str, Converter],
    force_binder: str | None = None,
) -> AppPlan:
    """Resolve functions and bindings; raise ``ConfigError`` with every problem found."""
    layered = config.layered
    function = config.stream.function
    routing = function.routing.enabled or bool(function.routing_expression)
    definitions: list[Definition]
    problems: list[Problem]
    others = routing or bool((config.stream.pollable_source or "").strip())
    if others and not (function.definition or "").strip():
        definitions, problems = [], []  # the router or polled sources alone
    else:
        definitions, problems = resolve_definition(function.definition, module)
    if routing:
        definitions.append(Definition(ROUTER, (router_info(),)))
        problems.extend(_routing_problems(config, module))
    for i, p in enumerate(problems):
        problems[i] = Problem(p.path, p.message, layered.source_of(p.path.split(".")))
    renames = config.stream.function.bindings
    inputs: dict[str, BindingPlan] = {}
    outputs: dict[str, BindingPlan] = {}
    more_inputs: dict[str, list[BindingPlan]] = {}
    more_outputs: dict[str, list[BindingPlan]] = {}
    tables: dict[str, list[tuple[str, BindingPlan]]] = {}
    used: set[str] = set()
    defaults: set[str] = set()
    for d in definitions:
        names = [("in", d.input_binding(i), i, "") for i in range(d.inputs)]
        read = [
            f"{part.name}.{param}"
            for part in d.parts
            for param, kind, _ in part.state
            if kind != "store"
        ]
        names += [("in", d.input_binding(d.inputs + j), -1, p) for j, p in enumerate(read)]
        names += [("out", d.output_binding(i), i, "") for i in range(d.outputs)]
        for direction, default_name, index, table in names:
            defaults.add(canonical(default_name))
            name = renames.get(canonical(default_name), default_name)
            used.add(canonical(name))
            plan = plan_binding(config, name, direction, d.name, force_binder)
            if table:
                tables.setdefault(d.name, []).append((table, plan))
            elif index == 0:
                (inputs if direction == "in" else outputs)[d.name] = plan
            else:
                more = more_inputs if direction == "in" else more_outputs
                more.setdefault(d.name, []).append(plan)

    path: tuple[str, ...]
    for alias in renames:
        if alias not in defaults:
            path = ("stream", "function", "bindings", alias)
            near = closest(alias, sorted(defaults))
            hint = f" (did you mean '{near}'?)" if near else ""
            problems.append(
                Problem(
                    ".".join(path),
                    f"renames '{alias}', which no function in the definition has{hint}",
                    layered.source_of(path),
                )
            )

    pollable: dict[str, BindingPlan] = {}
    for source in (config.stream.pollable_source or "").split(";"):
        if source.strip():
            default_name = f"{source.strip()}-in-0"
            defaults.add(canonical(default_name))
            name = renames.get(canonical(default_name), default_name)
            used.add(canonical(name))
            pollable[name] = plan_binding(config, name, "in", "", force_binder)

    bridge: dict[str, BindingPlan] = {}
    declared = {canonical(f"{fn}-out-0") for fn in config.stream.output_bindings}
    for name in config.stream.bindings:
        if name in used:
            continue
        near = None if canonical(name) in declared else _typo_of(name, used)
        path = ("stream", "bindings", name)
        if near is not None:
            problems.append(
                Problem(
                    ".".join(path),
                    f"no function has binding '{name}' (did you mean '{near}'?)",
                    layered.source_of(path),
                )
            )
            continue
        spring = _SPRING_NAME.match(name)
        if spring is not None and spring["dir"] == "in":
            # StreamBridge only sends: an input binding no function has would be made an
            # output, silently; it is a function missing from the definition.
            problems.append(
                Problem(
                    ".".join(path),
                    f"no function in stream.function.definition has input binding '{name}': "
                    f"add {spring['fn']} to the definition, or remove the binding",
                    layered.source_of(path),
                )
            )
            continue
        bridge[name] = plan_binding(config, name, "out", "", force_binder)
    # Spring's output-bindings: producers StreamBridge finds bound from the start.
    for fn in config.stream.output_bindings:
        name = f"{fn}-out-0"
        if canonical(name) not in used and canonical(name) not in bridge:
            bridge[canonical(name)] = plan_binding(config, name, "out", "", force_binder)

    app_plan = AppPlan(
        definitions, inputs, outputs, bridge, more_inputs, more_outputs, pollable, tables
    )
    for binding in app_plan.all():
        problems.extend(_check(binding, config, converters, force_binder))
        problems.extend(_spring_mode_problems(binding, app_plan, config))
        handler = binding.properties.error_handler_definition
        own = config.stream.bindings.get(canonical(binding.name))
        if binding.name in app_plan.pollable and own is not None and own.error_handler_definition:
            path = ("stream", "bindings", binding.name, "error-handler-definition")
            problems.append(
                Problem(
                    ".".join(path),
                    "a polled source has no error handler: the app decides each message "
                    "itself (ack, or reject to dead-letter it); remove the key",
                    layered.source_of(path),
                )
            )
        elif handler and binding.direction == "in" and find_function(module, handler) is None:
            path = ("stream", "bindings", binding.name, "error-handler-definition")
            problems.append(
                Problem(
                    ".".join(path),
                    f"no function '{handler}' in module '{module.__name__}'"
                    + did_you_mean(handler, _callables(module)),
                    layered.source_of(path),
                )
            )
    if problems:
        raise ConfigError(problems, config=config)
    return app_plan


def _typo_of(name: str, used: set[str]) -> str | None:
    """The binding of a function ``name`` was probably meant for, or None: a configured
    binding no function uses is otherwise a StreamBridge output. Only a binding of the
    same direction and index whose function name is close is suggested (``orders-out-0``
    is no typo of ``on-order-in-0``, nor ``notices-out-0`` of ``slow-out-0``)."""
    mine = _SPRING_NAME.match(name)
    if mine is None:
        return closest(name, sorted(used))
    same: dict[str, str] = {}
    for other in used:
        theirs = _SPRING_NAME.match(other)
        if theirs is not None and (theirs["dir"], theirs["index"]) == (mine["dir"], mine["index"]):
            same[theirs["fn"]] = other
    near = closest(mine["fn"], sorted(same))
    return same[near] if near is not None else None


def with_plan_problems(
    error: ConfigError,
    module: ModuleType,
    converters: dict[str, Converter],
    force_binder: str | None = None,
) -> ConfigError:
    """``error`` (from loading the configuration) with the problems planning the app on
    what could be validated finds as well (an unknown function, a binding typo, an
    unknown content type), so one bad value does not hide them until it is fixed. A
    problem at a key already reported is not repeated."""
    if error.config is None:
        return error
    try:
        make_plan(error.config, module, converters, force_binder)
    except ConfigError as more:
        seen = [p.path for p in error.problems]
        extra = [
            p
            for p in more.problems
            if not any(p.path == s or p.path.startswith(f"{s}.") for s in seen)
        ]
        if extra:
            return ConfigError([*error.problems, *extra], config=error.config)
    except Exception:
        return error  # the partial configuration could not be planned: report what we have
    return error


def configured_problems(config: AppConfig, converters: dict[str, Converter]) -> list[Problem]:
    """What planning finds in the configured bindings alone, without the app module
    (``binder config``): content types no converter reads, a default binder that cannot
    be chosen."""
    problems: list[Problem] = []
    for name in config.stream.bindings:
        plan = plan_binding(config, name, "in", "", None)
        problems += [
            p
            for p in _check(plan, config, converters)
            if p.path.endswith((".content-type", ".binder"))
        ]
    return problems


def _check(
    plan: BindingPlan,
    config: AppConfig,
    converters: dict[str, Converter],
    force_binder: str | None = None,
) -> list[Problem]:
    layered = config.layered
    base = ("stream", "bindings", plan.name)
    out = []
    path: tuple[str, ...]
    if len(plan.destinations) > 1 and plan.direction == "out":
        path = (*base, "destination")
        out.append(
            Problem(
                ".".join(path),
                f"'{plan.destination}' names several destinations, which only a consumer "
                "binding can have; a producer sends to one destination (send to others "
                "with StreamBridge)",
                layered.source_of(path),
            )
        )
    if force_binder is None and plan.properties.binder is None:
        _, ambiguous = config.default_choice()
        if ambiguous is not None:
            path = (*base, "binder")
            out.append(
                Problem(
                    ".".join(path),
                    f"binding '{plan.name}' names no binder and {ambiguous}",
                    layered.source_of(base),
                )
            )
    mt = media_type(plan.content_type)
    if not (is_json(mt) or mt in converters):
        path = (*base, "content-type")
        installed = ", ".join(sorted(converters))
        out.append(
            Problem(
                ".".join(path),
                f"no converter for content type '{mt}'; installed: {installed}",
                layered.source_of(path),
            )
        )
    binder_type = config.types.get(plan.binder_type)
    if binder_type is not None:
        consumer = getattr(plan.extension, "consumer", None)
        incoming = plan.direction == "in"
        for destination in plan.properties.destinations or (None,):
            out.extend(
                binding_name_problems(
                    binder_type,
                    layered,
                    plan.name,
                    destination,
                    group=plan.group if incoming else None,
                    required_groups=() if incoming else plan.properties.producer.required_groups,
                    dlq_name=getattr(consumer, "dlq_name", None) if incoming else None,
                )
            )
    if plan.binder not in config.stream.binders:
        path = (*base, "binder")
        out.append(
            Problem(
                ".".join(path),
                f"no binder named '{plan.binder}'; known: "
                + ", ".join(sorted(config.stream.binders)),
                layered.source_of(path),
            )
        )
    return out


def _routing_problems(config: AppConfig, module: ModuleType) -> list[Problem]:
    """The router's settings, checked before anything starts."""
    function = config.stream.function
    layered = config.layered
    out: list[Problem] = []
    path: tuple[str, ...]
    if function.routing_expression:
        try:
            compile_expression(function.routing_expression)
        except ExpressionError as exc:
            path = ("stream", "function", "routing-expression")
            out.append(Problem(".".join(path), str(exc), layered.source_of(path)))
    available = candidates(module)
    allowed = function.routing.functions
    for i, name in enumerate(allowed):
        if find_function(module, name) is None:
            path = ("stream", "function", "routing", "functions", str(i))
            out.append(
                Problem(
                    ".".join(path),
                    f"no function '{name}' in module '{module.__name__}'"
                    + did_you_mean(name, available),
                    layered.source_of(path),
                )
            )
    default = function.routing.default_function
    routable = set(allowed) if allowed else set(available)
    if default and (default not in routable or find_function(module, default) is None):
        path = ("stream", "function", "routing", "default-function")
        out.append(
            Problem(
                ".".join(path),
                f"'{default}' is not a function the router may call"
                + did_you_mean(default, allowed or available),
                layered.source_of(path),
            )
        )
    return out


def _callables(module: ModuleType) -> list[str]:
    """Public callables of ``module``: what a configured function name may be."""
    return [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)]


def _spring_mode_problems(plan: BindingPlan, app: AppPlan, config: AppConfig) -> list[Problem]:
    """Header modes and native decoding that cannot work as configured."""
    layered = config.layered
    base = ("stream", "bindings", plan.name)
    incoming = plan.direction == "in"
    side = "consumer" if incoming else "producer"
    props = plan.properties.consumer if incoming else plan.properties.producer
    out: list[Problem] = []
    path: tuple[str, ...]
    if props.header_mode == "embeddedHeaders":
        path = (*base, side, "header-mode")
        out.append(
            Problem(
                ".".join(path),
                "embeddedHeaders is Spring's encoding for brokers without headers (Kafka "
                "before 0.11); Kafka and RabbitMQ carry headers: use headers (the default) "
                "or none",
                layered.source_of(path),
            )
        )
    if incoming and plan.properties.consumer.use_native_decoding:
        definition = next((d for d in app.definitions if d.name == plan.definition), None)
        if definition is not None and definition.first.has_input:
            wanted = definition.first.input_type
            if wanted not in (bytes, Any, object):
                path = (*base, "consumer", "use-native-decoding")
                out.append(
                    Problem(
                        ".".join(path),
                        f"'{definition.first.name}' takes {getattr(wanted, '__name__', wanted)}"
                        ", but native decoding hands it the payload as the client delivered "
                        "it: declare bytes (or Message[bytes])",
                        layered.source_of(path),
                    )
                )
    return out
