"""From configuration and an app module to the bindings to create: names, destinations,
groups, binders and properties, with every problem found before anything connects."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

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


@dataclass(frozen=True)
class BindingPlan:
    """One binding as it will be created; also what ``binder bindings`` prints."""

    name: str
    direction: str  # "in" or "out"
    definition: str  # the function (composition) it belongs to; "" for StreamBridge
    destination: str
    group: str | None
    binder: str  # binder instance name
    binder_type: str
    properties: BindingProperties
    extension: BaseModel | None

    @property
    def content_type(self) -> str:
        """The binding's content type."""
        return self.properties.content_type


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

    def all(self) -> list[BindingPlan]:
        """Every binding, inputs first."""
        more_in = [p for plans in self.more_inputs.values() for p in plans]
        more_out = [p for plans in self.more_outputs.values() for p in plans]
        return [
            *self.inputs.values(),
            *more_in,
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
    binder = force_binder or props.binder or config.default_binder
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
    used: set[str] = set()
    defaults: set[str] = set()
    for d in definitions:
        names = [("in", d.input_binding(i), i) for i in range(d.inputs)]
        names += [("out", d.output_binding(i), i) for i in range(d.outputs)]
        for direction, default_name, index in names:
            defaults.add(canonical(default_name))
            name = renames.get(canonical(default_name), default_name)
            used.add(canonical(name))
            plan = plan_binding(config, name, direction, d.name, force_binder)
            if index == 0:
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
    for name in config.stream.bindings:
        if name in used:
            continue
        near = closest(name, sorted(used))
        if near is not None:
            path = ("stream", "bindings", name)
            problems.append(
                Problem(
                    ".".join(path),
                    f"no function has binding '{name}' (did you mean '{near}'?)",
                    layered.source_of(path),
                )
            )
            continue
        bridge[name] = plan_binding(config, name, "out", "", force_binder)

    app_plan = AppPlan(definitions, inputs, outputs, bridge, more_inputs, more_outputs, pollable)
    for binding in app_plan.all():
        problems.extend(_check(binding, config, converters))
        handler = binding.properties.error_handler_definition
        if handler and binding.direction == "in" and find_function(module, handler) is None:
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
        raise ConfigError(problems)
    return app_plan


def _check(plan: BindingPlan, config: AppConfig, converters: dict[str, Converter]) -> list[Problem]:
    layered = config.layered
    base = ("stream", "bindings", plan.name)
    out = []
    path: tuple[str, ...]
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
    expression = plan.properties.producer.partition_key_expression
    if expression and plan.direction == "out":
        try:
            compile_expression(expression)
        except ExpressionError as exc:
            path = (*base, "producer", "partition-key-expression")
            out.append(Problem(".".join(path), str(exc), layered.source_of(path)))
    binder_type = config.types.get(plan.binder_type)
    if binder_type is not None:
        consumer = getattr(plan.extension, "consumer", None)
        incoming = plan.direction == "in"
        out.extend(
            binding_name_problems(
                binder_type,
                layered,
                plan.name,
                plan.properties.destination,
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
