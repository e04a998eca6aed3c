"""The configuration schema: pydantic models for the ``stream:`` tree.

Keys are kebab-case as in Spring Cloud Stream; camelCase, snake_case and the other
spellings Spring Boot's relaxed binding accepts are matched to them before validation
(``binder_core.relaxed``). Every model forbids unknown keys, because a typo that is
silently ignored (as Spring does) is a production incident waiting for its day. Binder
plugins derive their own models from ``Props`` so their keys follow the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from binder_core.limits import DYNAMIC_DESTINATION_CACHE_SIZE


def kebab(name: str) -> str:
    """The kebab-case spelling of a Python field name."""
    return name.replace("_", "-")


_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def kebab_key(key: str) -> str:
    """The kebab-case spelling of a key written any way Spring accepts it:
    ``maxAttempts``, ``max_attempts`` and ``MAX_ATTEMPTS`` -> ``max-attempts``."""
    return _HUMP.sub("-", key).lower().replace("_", "-")


def loose(key: str) -> str:
    """The form Spring Boot compares property names in: case, ``-`` and ``_`` ignored, so
    ``autoAddPartitions``, ``auto-add-partitions``, ``auto_add_partitions`` and
    ``AUTO_ADD_PARTITIONS`` are one key (and ``|`` is dropped, as in ``canonical``)."""
    return key.lower().replace("-", "").replace("_", "").replace("|", "")


def canonical(key: str) -> str:
    """The form two names (bindings, binders) are compared in: case and ``-``/``_`` do not
    matter, so a binding named in YAML, in an environment variable or in a function name
    meets itself. ``|`` is dropped, so Spring's composed name ``uppercase|echo-in-0`` is
    the binding ``uppercaseecho-in-0``."""
    return key.lower().replace("_", "-").replace("|", "")


@dataclass(frozen=True, slots=True)
class SpringOnly:
    """A Spring property a model knows by name but does not implement: ``accepts`` are
    the values that mean what this framework does anyway (so a Spring file that sets them
    works unchanged); any other value is refused at start-up with ``reason``."""

    reason: str
    accepts: tuple[Any, ...] = ()

    def allows(self, value: Any) -> bool:
        """Whether ``value`` means what we do anyway (text compared ignoring case)."""
        for accepted in self.accepts:
            if accepted is ANY_VALUE:
                return True
            if isinstance(accepted, bool) or isinstance(value, bool):
                if _as_bool(value) is accepted:
                    return True
            elif isinstance(accepted, str) and isinstance(value, str):
                if value.strip().lower().replace("_", "-") == accepted.lower().replace("_", "-"):
                    return True
            elif value == accepted or str(value).strip() == str(accepted):
                return True
        return False


@dataclass(frozen=True, slots=True)
class SpringDefault:
    """Where one of our defaults deliberately differs from Spring's: Spring's value, and
    why ours is different (``binder config`` marks such a value; the guide lists them)."""

    value: Any
    why: str


#: In ``SpringOnly.accepts``: every value means what we do anyway (a setting that only
#: matters with another one we refuse, or one we always behave as).
ANY_VALUE: Any = type("AnyValue", (), {"__repr__": lambda self: "any value"})()


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


#: A problem a model finds in itself after validation: the key path below the model and
#: what is wrong (see ``Props.config_problems``).
ModelProblem = tuple[tuple[str, ...], str]


class Props(BaseModel):
    """Base of every configuration model: kebab-case keys, other spellings matched to
    them, no unknown keys, immutable once validated.

    Two hooks for what a field's type cannot say: ``spring_only`` names Spring properties
    the model does not implement (with the values that mean our behaviour anyway), and
    ``config_problems`` reports problems found by looking at the whole validated model
    (a client settings map checked against the client library), each at its own key
    path, all at once.
    """

    model_config = ConfigDict(
        alias_generator=AliasGenerator(
            validation_alias=lambda n: AliasChoices(kebab(n), n),
            serialization_alias=kebab,
        ),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    #: Spring property (kebab-case) -> why it is refused, and the values it may keep.
    spring_only: ClassVar[Mapping[str, SpringOnly]] = {}
    #: Field (kebab-case) -> Spring's default, where ours deliberately differs.
    spring_defaults: ClassVar[Mapping[str, SpringDefault]] = {}
    #: On a binder's environment model: Spring Boot's prefix for its connection
    #: properties (``rabbitmq`` for ``spring.rabbitmq.*``) and the model that reads them,
    #: whose ``environment()`` gives them as this model's keys (and where each came from).
    spring_boot: ClassVar[tuple[str, type[BaseModel]] | None] = None

    def config_problems(self) -> Sequence[ModelProblem]:
        """Problems found in the validated model: (key path below it, message)."""
        return ()


_UNITS_MS = {
    "ns": 1e-6,
    "us": 1e-3,
    "ms": 1.0,
    "s": 1000.0,
    "m": 60_000.0,
    "h": 3_600_000.0,
    "d": 86_400_000.0,
}
_SIMPLE_DURATION = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_TIMEDELTA = TypeAdapter(timedelta)


def duration_ms(value: Any, unit_ms: float = 1.0) -> Any:
    """A duration as Spring Boot reads one, in milliseconds: a plain number (in
    ``unit_ms``, milliseconds unless a ``time-unit`` says otherwise), ``500ms``, ``5s``,
    ``1m``, ``2h``, ``1d``, or ISO-8601 (``PT5S``). Anything else is left for the field's
    own validation to refuse."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _whole(value * unit_ms)
    if not isinstance(value, str):
        return value
    match = _SIMPLE_DURATION.match(value)
    if match is not None:
        number, unit = float(match[1]), match[2].lower()
        if not unit:
            return _whole(number * unit_ms)
        if unit in _UNITS_MS:
            return _whole(number * _UNITS_MS[unit])
        raise ValueError(f"unknown unit '{match[2]}' (use ns, us, ms, s, m, h or d)")
    if value.strip().upper().startswith("P"):
        try:
            return _whole(_TIMEDELTA.validate_python(value.strip()).total_seconds() * 1000)
        except ValidationError:
            raise ValueError(f"'{value}' is not an ISO-8601 duration") from None
    return value


def _whole(ms: float) -> int | float:
    return int(ms) if float(ms).is_integer() else ms


def _millis(value: Any) -> Any:
    return duration_ms(value)


#: Milliseconds, written as Spring Boot writes a duration (``1000``, ``1s``, ``PT1S``).
Millis = Annotated[int, BeforeValidator(_millis)]


def _canonical_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {canonical(str(k)): v for k, v in value.items()}
    return value


#: Spring's ``HeaderMode``: how headers travel (the behaviour belongs to each binder).
HeaderMode = Literal["headers", "none", "embeddedHeaders"]


def _header_mode(value: Any) -> Any:
    if isinstance(value, str):
        spelled = {loose(m): m for m in ("headers", "none", "embeddedHeaders")}
        return spelled.get(loose(value.strip()), value)
    return value


def _one_index(props: Any, where: str) -> None:
    """``instance-index-list`` with one index means ``instance-index``; several would
    need one subscription per index, which no binder makes."""
    indexes = props.instance_index_list
    if not indexes:
        return
    if len(indexes) > 1:
        raise ValueError(
            f"instance-index-list {list(indexes)}: one instance consuming several partition "
            "indexes is not supported; run one instance per index (instance-index), or "
            "let Kafka assign partitions (partitioned: false)"
        )
    if props.instance_index is None or where == "stream":
        if props.instance_index not in (None, indexes[0], 0):
            raise ValueError("instance-index and instance-index-list disagree: keep one")
        object.__setattr__(props, "instance_index", indexes[0])
        props.__pydantic_fields_set__.add("instance_index")
    elif props.instance_index != indexes[0]:
        raise ValueError("instance-index and instance-index-list disagree: keep one")


class ConsumerProperties(Props):
    """Common consumer properties (``stream.bindings.<name>.consumer``)."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "retry-template-name": SpringOnly(
            "names a Spring bean; set max-attempts and the back-off-* properties instead"
        ),
    }

    max_attempts: int = Field(3, ge=1, description="Attempts per message, the first included.")
    back_off_initial_interval: int = Field(1000, ge=0, description="First retry delay, ms.")
    back_off_multiplier: float = Field(2.0, ge=1.0, description="Growth of the retry delay.")
    back_off_max_interval: int = Field(10000, ge=0, description="Largest retry delay, ms.")
    default_retryable: bool = Field(
        True, description="Whether exceptions not named in retryable-exceptions are retried."
    )
    retryable_exceptions: dict[str, bool] = Field(
        default_factory=dict,
        description="Exception class names (simple or qualified, matched along the class "
        "hierarchy) mapped to whether they are retried.",
    )
    concurrency: int = Field(1, ge=1, description="Consumers processing this binding at once.")
    partitioned: bool = Field(False, description="Consume only this instance's partitions.")
    instance_index: int | None = Field(
        None, ge=0, description="This instance's index; default stream.instance-index."
    )
    instance_count: int | None = Field(
        None, ge=1, description="Number of instances; default stream.instance-count."
    )
    instance_index_list: list[int] | None = Field(
        None,
        description="Spring's list of partition indexes for this instance: one index "
        "(the same as instance-index); several are refused.",
    )
    batch_mode: bool = Field(False, description="Hand the function a list of payloads.")
    auto_startup: bool = Field(True, description="Start consuming at start-up.")
    blocking: bool = Field(
        False, description="Run the function in a worker thread, so it cannot stall the loop."
    )
    dead_letter_after_error_handler: bool = Field(
        False,
        description="With an error-handler-definition: dead-letter a failed message after "
        "the handler took it too (default: the handler instead of the dead-letter queue).",
    )
    multiplex: bool = Field(
        False,
        description="Spring's flag for one consumer over several destinations "
        "(destination: a,b); each destination gets its own subscription in the same group "
        "either way, under this one binding.",
    )
    use_native_decoding: bool = Field(
        False,
        description="Hand the payload to the function as the client library decoded it, "
        "not converted by content-type.",
    )
    header_mode: HeaderMode | None = Field(
        None, description="headers, none or embeddedHeaders; default: the binder's."
    )

    _mode = field_validator("header_mode", mode="before")(_header_mode)

    @model_validator(mode="after")
    def _index_list(self) -> ConsumerProperties:
        _one_index(self, "binding")
        return self


#: Java's ``TimeUnit`` names, as Spring's poller ``time-unit`` takes them.
TimeUnit = Literal[
    "NANOSECONDS", "MICROSECONDS", "MILLISECONDS", "SECONDS", "MINUTES", "HOURS", "DAYS"
]
_UNIT_MS: dict[str, float] = {
    "NANOSECONDS": 1e-6,
    "MICROSECONDS": 1e-3,
    "MILLISECONDS": 1.0,
    "SECONDS": 1000.0,
    "MINUTES": 60_000.0,
    "HOURS": 3_600_000.0,
    "DAYS": 86_400_000.0,
}


class PollerProperties(Props):
    """``stream.poller`` (Spring's ``spring.integration.poller``), or one output binding's
    ``producer.poller``: how suppliers that return a value are polled."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "cron": SpringOnly(
            "cron triggers are not supported; poll with fixed-delay (and initial-delay)"
        ),
        "receive-timeout": SpringOnly(
            "applies to pollable channels, which suppliers are not", accepts=(0,)
        ),
    }

    fixed_delay: Millis = Field(
        1000, ge=0, description="Delay between polls, ms (or a duration: 2s, PT2S)."
    )
    initial_delay: Millis = Field(
        0, ge=0, description="Delay before the first poll, ms (or a duration)."
    )
    max_messages_per_poll: int = Field(1, ge=1, description="Calls per poll.")
    time_unit: TimeUnit = Field(
        "MILLISECONDS", description="Unit of fixed-delay and initial-delay given as numbers."
    )

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unit_key = next((k for k in data if loose(str(k)) == "timeunit"), None)
        if unit_key is None:
            return data
        unit = str(data[unit_key]).strip().upper()
        if unit not in _UNIT_MS:
            return data  # the field refuses it, naming the valid units
        out = dict(data)
        out[unit_key] = unit
        for key, value in data.items():
            if loose(str(key)) in ("fixeddelay", "initialdelay"):
                out[key] = duration_ms(value, _UNIT_MS[unit])
        return out


class ProducerProperties(Props):
    """Common producer properties (``stream.bindings.<name>.producer``)."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "partition-key-extractor-name": SpringOnly(
            "names a Spring bean; use partition-key-expression"
        ),
        "partition-selector-name": SpringOnly(
            "names a Spring bean; the partition is the key's hash modulo partition-count, "
            "as Spring's default selector computes it"
        ),
        "partition-selector-expression": SpringOnly(
            "not supported; the partition is the key's hash modulo partition-count, as "
            "Spring's default selector computes it"
        ),
        "auto-startup": SpringOnly("producers always start with the app", accepts=(True,)),
        "error-channel-enabled": SpringOnly(
            "a send the broker refuses fails the input message, which is retried and "
            "dead-lettered; there is no separate error channel for sends",
            accepts=(False,),
        ),
        "dynamic-partition-updates-enabled": SpringOnly(
            "partition-count is read at start-up", accepts=(False,)
        ),
    }

    partition_key_expression: str | None = Field(
        None,
        description="Expression giving the partition key: payload.symbol, "
        "headers['x-key'], headers['n'] - 1 (literals, arithmetic, comparisons).",
    )
    partition_count: int = Field(1, ge=1, description="Partitions of the destination.")
    partitioned: bool | None = Field(
        None,
        description="As in Spring, a producer is partitioned exactly when it has a "
        "partition-key-expression; when given, this must agree.",
    )
    required_groups: list[str] = Field(
        default_factory=list,
        description="Groups provisioned with the destination, so nothing sent before their "
        "first consumer is lost.",
    )
    poller: PollerProperties | None = Field(
        None, description="This supplier's own poller; default stream.poller."
    )
    use_native_encoding: bool = Field(
        False,
        description="Hand the payload to the client library to encode (a Kafka serializer), "
        "not converted by content-type.",
    )
    header_mode: HeaderMode | None = Field(
        None, description="headers, none or embeddedHeaders; default: the binder's."
    )

    _mode = field_validator("header_mode", mode="before")(_header_mode)

    @field_validator("partition_key_expression")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is not None:
            from binder_core.expression import compile_expression

            compile_expression(value)  # ExpressionError is a ValueError: a problem here
        return value

    @model_validator(mode="after")
    def _partitioned(self) -> ProducerProperties:
        keyed = self.partition_key_expression is not None
        if self.partitioned is True and not keyed:
            raise ValueError(
                "partitioned: true needs partition-key-expression (a producer is "
                "partitioned exactly when it has one, as in Spring)"
            )
        return self


def _destination(value: Any) -> Any:
    """Spring's destination list: ``a,b`` (or a YAML list) names several destinations of
    one consumer binding."""
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str) or "," not in value:
        return value
    names = [part.strip() for part in value.split(",")]
    if not all(names):
        raise ValueError(
            f"'{value}' has an empty destination name between commas; write the names "
            "separated by single commas (a,b)"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"'{value}' names {', '.join(twice)} more than once")
    return ",".join(names)


class BindingProperties(Props):
    """One binding (``stream.bindings.<name>``)."""

    destination: str | None = Field(
        None,
        description="Topic/exchange; default: binding name. A consumer may name several: "
        "a,b (one subscription each, in the same group).",
    )
    group: str | None = Field(None, description="Consumer group; absent = anonymous.")
    content_type: str = Field("application/json", description="Payload content type.")
    binder: str | None = Field(None, description="Binder name or type; default-binder if absent.")
    error_handler_definition: str | None = Field(
        None,
        description="A function of the app that receives each message whose retries ran out "
        "(a FailedMessage), instead of the dead-letter queue.",
    )
    cloudevents: Literal["binary", "structured"] | None = Field(
        None,
        description="Messages are CloudEvents: attributes in headers (binary) or the whole "
        "event as application/cloudevents+json (structured); absent = plain messages.",
    )
    cloudevents_source: str | None = Field(
        None,
        description="CloudEvents source of what this binding sends; default: /APP/BINDING, "
        "APP the app module.",
    )
    cloudevents_type: str | None = Field(
        None, description="CloudEvents type of what this binding sends; default: APP.BINDING."
    )
    consumer: ConsumerProperties = Field(default_factory=ConsumerProperties)
    producer: ProducerProperties = Field(default_factory=ProducerProperties)

    _destinations = field_validator("destination", mode="before")(_destination)

    @property
    def destinations(self) -> tuple[str, ...]:
        """The destinations named (several for ``a,b``); empty when none is."""
        if self.destination is None:
            return ()
        return tuple(self.destination.split(","))


class BinderInstanceProperties(Props):
    """A named binder instance (``stream.binders.<name>``)."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "inherit-environment": SpringOnly(
            "an instance's environment is always laid over the top-level settings of its "
            "type (stream.<type>.binder, spring.rabbitmq.*, spring.kafka.*)",
            accepts=(True,),
        ),
    }

    type: str = Field(description="Installed binder type: memory, kafka, rabbit, ...")
    environment: dict[str, Any] = Field(
        default_factory=dict,
        description="The binder type's own settings (Spring's shape accepted: "
        "spring.rabbitmq.*, spring.cloud.stream.kafka.binder.*).",
        json_schema_extra={"structured": True},
    )
    default_candidate: bool = Field(True, description="May serve bindings without binder:.")


class RoutingProperties(Props):
    """``stream.function.routing``: Spring's router function (``functionRouter``)."""

    enabled: bool = Field(
        False,
        description="Bind functionRouter-in-0/-out-0: each message goes to the function its "
        "spring.cloud.function.definition header (or the routing-expression) names.",
    )
    default_function: str | None = Field(
        None, description="The function for messages nothing else routes; else dead-lettered."
    )
    functions: list[str] = Field(
        default_factory=list,
        description="The functions the router may call; default: the app's public functions.",
    )


class FunctionProperties(Props):
    """``stream.function`` (Spring's ``spring.cloud.function``)."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "scan": SpringOnly("functions come from the app module given to binder run"),
        "ineligible-definitions": SpringOnly(
            "only the functions in definition are bound; list those you want there"
        ),
    }

    definition: str | None = Field(
        None, description="Functions to bind; ';' separates, '|' composes."
    )
    bindings: dict[str, str] = Field(
        default_factory=dict, description="Binding renames: <fn>-in-0: my-input."
    )
    routing_expression: str | None = Field(
        None,
        description="Spring's router: an expression over headers and payload naming the "
        "function each message of functionRouter-in-0 goes to (turns routing on).",
    )
    routing: RoutingProperties = Field(default_factory=RoutingProperties)

    _keys = field_validator("bindings", mode="before")(_canonical_keys)

    @field_validator("routing_expression")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is not None:
            from binder_core.expression import compile_expression

            compile_expression(value)
        return value


class ManagementProperties(Props):
    """``stream.management``: the HTTP endpoint that shows and steers a running app."""

    port: int | None = Field(
        None, ge=0, le=65535, description="Port of the management endpoint; off when unset."
    )
    host: str = Field(
        "127.0.0.1",
        description="Address it listens on; any other than loopback requires a token.",
    )
    token: SecretStr | None = Field(
        None, description="Bearer token every request must carry (Authorization header)."
    )
    token_file: str | None = Field(None, description="File holding the token (first line).")
    token_env: str = Field(
        "BINDER_MANAGEMENT_TOKEN",
        description="Environment variable holding the token, when token and token-file are unset.",
    )
    sample_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between two samples of broker-side figures (Kafka lag, RabbitMQ "
        "queue depth): a scrape never waits on a broker.",
    )


class TracingProperties(Props):
    """``stream.tracing``: W3C trace context in headers and OpenTelemetry spans."""

    enabled: Literal["auto", "true", "false"] = Field(
        "auto",
        description="auto: on when the app installed an OpenTelemetry SDK tracer provider.",
    )


class StateProperties(Props):
    """``stream.state``: where the stores of the app's functions keep what they hold."""

    backend: Literal["memory", "sqlite"] = Field(
        "memory",
        description="memory: a dictionary per store (fastest; the state must fit in memory). "
        "sqlite: an SQLite file per store (Python's own sqlite3) for state larger than "
        "memory, its most recently used values also in memory. Either way a store on Kafka "
        "is restored from its changelog; the file is a cache, removed when the app stops.",
    )
    directory: Path | None = Field(
        None,
        description="Where sqlite stores keep their files; default: a new temporary "
        "directory, removed when the app stops.",
    )


class StreamProperties(Props):
    """The ``stream:`` tree (Spring's ``spring.cloud.stream``). Binder-type sections
    (``stream.kafka``, ...) are validated separately against the models their plugins
    register."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "input-bindings": SpringOnly(
            "consumer bindings come from functions; bind a function (or a consumer) to "
            "the destination instead"
        ),
        "binding-retry-interval": SpringOnly(
            "a consumer that cannot bind is opened again with the core's back-off "
            "(0.2 s doubling to 10 s)",
            accepts=(30,),
        ),
        "override-cloud-connectors": SpringOnly("Cloud Foundry connectors do not apply"),
    }

    function: FunctionProperties = Field(default_factory=FunctionProperties)
    default_binder: str | None = Field(
        None,
        description="Binder for bindings without binder:; default: the one broker binder "
        "configured (a stream.<type> section or Spring Boot's spring.rabbitmq / "
        "spring.kafka), memory when none is.",
    )
    binders: dict[str, BinderInstanceProperties] = Field(default_factory=dict)
    bindings: dict[str, BindingProperties] = Field(default_factory=dict)
    default: BindingProperties = Field(
        default_factory=BindingProperties, description="Defaults for every binding."
    )
    poller: PollerProperties = Field(default_factory=PollerProperties)
    instance_index: int = Field(0, ge=0, description="This instance's index.")
    instance_count: int = Field(1, ge=1, description="Number of instances of this app.")
    instance_index_list: list[int] | None = Field(
        None, description="Spring's partition indexes of this instance: one (as instance-index)."
    )
    output_bindings: list[str] = Field(
        default_factory=list,
        description="Output bindings to create at start-up for StreamBridge: 'a;b' binds "
        "a-out-0 and b-out-0 (Spring's output-bindings).",
    )
    dynamic_destinations: list[str] = Field(
        default_factory=list,
        description="Destinations StreamBridge may send to; empty allows any.",
    )
    dynamic_destination_cache_size: int = Field(
        DYNAMIC_DESTINATION_CACHE_SIZE,
        ge=1,
        description="Producers StreamBridge keeps for dynamic destinations.",
    )
    binder_types: dict[str, str] = Field(
        default_factory=dict,
        description="Binder type -> the distribution that provides it, when two installed "
        "distributions provide the same type (binder plugins lists them).",
    )
    pollable_source: str | None = Field(
        None,
        description="Destinations the app polls itself (';' separates): each binds "
        "<name>-in-0, read with binder_core.pollable(name).",
    )
    management: ManagementProperties = Field(default_factory=ManagementProperties)
    tracing: TracingProperties = Field(default_factory=TracingProperties)
    state: StateProperties = Field(default_factory=StateProperties)

    _keys = field_validator("bindings", "binders", mode="before")(_canonical_keys)

    @field_validator("output_bindings", mode="before")
    @classmethod
    def _outputs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [n.strip() for v in value for n in re.split(r"[;,]", str(v)) if n.strip()]
        return value

    @model_validator(mode="after")
    def _index_list(self) -> StreamProperties:
        _one_index(self, "stream")
        return self


def overlay(base: BaseModel, top: BaseModel) -> Any:
    """``top`` over ``base``: every field ``top`` set explicitly wins, nested models merge
    field by field. That is how ``stream.default`` reaches each binding."""
    update: dict[str, Any] = {}
    for name in top.model_fields_set:
        mine, theirs = getattr(top, name), getattr(base, name)
        if isinstance(mine, BaseModel) and isinstance(theirs, BaseModel):
            update[name] = overlay(theirs, mine)
        else:
            update[name] = mine
    merged = base.model_copy(update=update)
    # model_copy does not record fields set; keep them so a further overlay sees them
    object.__setattr__(merged, "__pydantic_fields_set__", base.model_fields_set | set(update))
    return merged
