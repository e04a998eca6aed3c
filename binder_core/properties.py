"""The configuration schema: pydantic models for the ``stream:`` tree.

Keys are kebab-case as in Spring Cloud Stream; snake_case is accepted too. Every model
forbids unknown keys, because a typo that is silently ignored (as Spring does) is a
production incident waiting for its day. Binder plugins derive their own models from
``Props`` so their keys follow the same rules.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

from binder_core.limits import DYNAMIC_DESTINATION_CACHE_SIZE


def kebab(name: str) -> str:
    """The kebab-case spelling of a Python field name."""
    return name.replace("_", "-")


def canonical(key: str) -> str:
    """The form two keys are compared in: case and ``-``/``_`` do not matter, so a binding
    named in YAML, in an environment variable or in a function name meets itself."""
    return key.lower().replace("_", "-")


class Props(BaseModel):
    """Base of every configuration model: kebab-case keys, snake_case accepted, no
    unknown keys, immutable once validated."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(
            validation_alias=lambda n: AliasChoices(kebab(n), n),
            serialization_alias=kebab,
        ),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def _canonical_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {canonical(str(k)): v for k, v in value.items()}
    return value


class ConsumerProperties(Props):
    """Common consumer properties (``stream.bindings.<name>.consumer``)."""

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


class ProducerProperties(Props):
    """Common producer properties (``stream.bindings.<name>.producer``)."""

    partition_key_expression: str | None = Field(
        None, description="Path to the partition key: payload.symbol, headers['x-key']."
    )
    partition_count: int = Field(1, ge=1, description="Partitions of the destination.")
    required_groups: list[str] = Field(
        default_factory=list,
        description="Groups provisioned with the destination, so nothing sent before their "
        "first consumer is lost.",
    )


class BindingProperties(Props):
    """One binding (``stream.bindings.<name>``)."""

    destination: str | None = Field(None, description="Topic/exchange; default: binding name.")
    group: str | None = Field(None, description="Consumer group; absent = anonymous.")
    content_type: str = Field("application/json", description="Payload content type.")
    binder: str | None = Field(None, description="Binder name or type; default-binder if absent.")
    error_handler_definition: str | None = Field(
        None,
        description="A function of the app that receives each message whose retries ran out "
        "(a FailedMessage), instead of the dead-letter queue.",
    )
    consumer: ConsumerProperties = Field(default_factory=ConsumerProperties)
    producer: ProducerProperties = Field(default_factory=ProducerProperties)


class BinderInstanceProperties(Props):
    """A named binder instance (``stream.binders.<name>``)."""

    type: str = Field(description="Installed binder type: memory, kafka, rabbit, ...")
    environment: dict[str, Any] = Field(
        default_factory=dict, description="The binder type's own settings."
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
    """``stream.function``."""

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


class PollerProperties(Props):
    """``stream.poller``: how suppliers that return a value are polled."""

    fixed_delay: int = Field(1000, ge=0, description="Delay between polls, ms.")
    initial_delay: int = Field(0, ge=0, description="Delay before the first poll, ms.")
    max_messages_per_poll: int = Field(1, ge=1, description="Calls per poll.")


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


class StreamProperties(Props):
    """The ``stream:`` tree. Binder-type sections (``stream.kafka``, ...) are validated
    separately against the models their plugins register."""

    function: FunctionProperties = Field(default_factory=FunctionProperties)
    default_binder: str | None = Field(
        None, description="Binder for bindings without binder:; memory when only it exists."
    )
    binders: dict[str, BinderInstanceProperties] = Field(default_factory=dict)
    bindings: dict[str, BindingProperties] = Field(default_factory=dict)
    default: BindingProperties = Field(
        default_factory=BindingProperties, description="Defaults for every binding."
    )
    poller: PollerProperties = Field(default_factory=PollerProperties)
    instance_index: int = Field(0, ge=0, description="This instance's index.")
    instance_count: int = Field(1, ge=1, description="Number of instances of this app.")
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

    _keys = field_validator("bindings", "binders", mode="before")(_canonical_keys)


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
