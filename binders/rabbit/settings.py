"""Configuration schema of the RabbitMQ binder.

Property names are Spring Cloud Stream's Rabbit binder names in kebab-case, so a Spring user
finds ``auto-bind-dlq``, ``republish-to-dlq``, ``binding-routing-key``, ``prefetch`` ... where
they expect them. The defaults are Spring's, except where we are deliberately safer (failed
messages are dead-lettered by default) or faster (a larger prefetch). This module imports no
broker library: the plugin imports it at start-up, pika only when a binder is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from binder_core.properties import (
    ANY_VALUE,
    Millis,
    Props,
    SpringDefault,
    SpringOnly,
    duration_ms,
)

ExchangeType = Literal["topic", "direct", "fanout", "headers"]
DeliveryMode = Literal["PERSISTENT", "NON_PERSISTENT"]


class SslProperties(Props):
    """``ssl``: TLS to the broker (PEM files, as Python's ``ssl`` module reads them). Names
    as Spring Boot's ``spring.rabbitmq.ssl.*``, with PEM files for its key and trust stores."""

    enabled: bool = Field(
        False, description="Connect with TLS; an amqps:// uri or address turns it on by itself."
    )
    ca_file: str | None = Field(
        None, description="CA bundle to verify the broker; default: system CAs."
    )
    cert_file: str | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key_file: str | None = Field(None, description="Private key (PEM) of the client certificate.")
    key_password: SecretStr | None = Field(None, description="Password of the private key.")
    verify_hostname: bool = Field(
        True, description="Check the broker's certificate names its host."
    )
    validate_server_certificate: bool = Field(
        True, description="Verify the broker's certificate at all (false only for tests)."
    )


class RabbitEnvironment(Props):
    """``stream.binders.<name>.environment`` (or ``stream.rabbit.binder``) for type rabbit.

    Either ``uri`` or the separate keys; ``addresses`` (``host:port`` list, tried in order as
    Spring does) overrides ``host``/``port``. An ``amqps://`` uri or address means TLS, with
    the ``ssl`` settings (CA, client certificate, host name check). Spring Boot's
    ``spring.rabbitmq.*`` (at the top level, or in an instance's ``environment``) is read
    as well (``RabbitBootProperties``), under these.
    """

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "admin-addresses": SpringOnly(
            "the management API is not used; queues are found on the broker they are declared on"
        ),
        "nodes": SpringOnly("queues are not placed on particular nodes"),
        "compression-level": SpringOnly("messages are not compressed"),
        "connection-name-prefix": SpringOnly(
            "name the connection with connection-name (binder:<binder-name> by default)"
        ),
    }

    uri: SecretStr | None = Field(
        None,
        description="amqp[s]://user:password@host:port/vhost; wins over the keys below "
        "(but password-file).",
    )
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int | None = Field(None, ge=1, le=65535, description="Broker port; 5672 (5671 with TLS).")
    addresses: list[str] = Field(
        default_factory=list,
        description="host:port list (or comma-separated), tried in order; overrides host/port.",
    )
    virtual_host: str = Field("/", description="Virtual host.")
    username: str = Field("guest", description="User name.")
    password: SecretStr = Field(SecretStr("guest"), description="Password (never logged).")
    password_file: str | None = Field(
        None,
        description="File holding the password, such as a mounted secret (a trailing newline "
        "is ignored); read at start-up, for the user of uri or username.",
    )
    ssl: SslProperties = Field(default_factory=SslProperties)
    heartbeat: int = Field(60, ge=0, description="Requested heartbeat, seconds (0 = none).")
    connection_timeout: float = Field(10.0, gt=0, description="Connect/handshake timeout, s.")
    connection_name: str | None = Field(
        None, description="Name shown in the management UI; default binder:<binder-name>."
    )
    recovery_interval: int = Field(
        5000, ge=100, description="Longest pause between reconnection attempts, ms."
    )
    shutdown_timeout: int = Field(
        30_000,
        ge=0,
        description="On stop, ms a consumer binding may take to finish the batch in flight; "
        "what is still unacknowledged after it is delivered again.",
    )
    startup_timeout: float = Field(
        60.0,
        ge=0,
        description="Seconds start-up keeps retrying an unreachable broker (0: fail at once); "
        "a refused login fails at once.",
    )

    @field_validator("addresses", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [a.strip() for a in value.split(",") if a.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RabbitEnvironment:
        schemes = {s for s in map(_scheme, self.addresses) if s}
        if self.uri is not None:
            uri = urlsplit(self.uri.get_secret_value())
            schemes = {uri.scheme.lower()}
            if self.password_file is not None and uri.password is not None:
                raise ValueError("the uri holds a password and password-file is set: keep one")
            if self.password_file is None and uri.username and uri.password is None:
                raise ValueError("the uri names a user without a password: add password-file")
        if self.password_file is not None and "password" in self.model_fields_set:
            raise ValueError("give password or password-file, not both")
        if not schemes <= {"amqp", "amqps"}:
            raise ValueError(f"unknown scheme {', '.join(sorted(schemes - {'amqp', 'amqps'}))}")
        if len(schemes) > 1:
            raise ValueError("addresses mix amqp:// and amqps://: use one for all")
        explicit = "enabled" in self.ssl.model_fields_set
        if schemes and explicit and self.ssl.enabled != ("amqps" in schemes):
            given = "amqps://" if "amqps" in schemes else "amqp://"
            raise ValueError(
                f"ssl.enabled is {str(self.ssl.enabled).lower()} but the address says "
                f"{given}: drop ssl.enabled, the scheme decides"
            )
        return self

    @property
    def tls(self) -> bool:
        """Whether connections use TLS: an amqps:// uri or address, or ssl.enabled."""
        if self.uri is not None:
            return urlsplit(self.uri.get_secret_value()).scheme.lower() == "amqps"
        schemes = {s for s in map(_scheme, self.addresses) if s}
        return "amqps" in schemes if schemes else self.ssl.enabled


def _scheme(address: str) -> str | None:
    head, sep, _ = address.strip().partition("://")
    return head.lower() if sep else None


class QuorumProperties(Props):
    """``quorum``: declare a quorum queue instead of a classic one."""

    enabled: bool = Field(False, description="Declare x-queue-type: quorum.")
    initial_group_size: int | None = Field(None, ge=1, description="x-quorum-initial-group-size.")
    delivery_limit: int | None = Field(None, ge=0, description="x-delivery-limit.")


class RabbitCommonProperties(Props):
    """What consumers and producers share: exchange, queue and dead-letter topology.

    Producers use the queue settings for their ``required-groups``, so a group declared by a
    producer has the same arguments as when its consumer declares it (RabbitMQ refuses to
    redeclare a queue with other arguments).
    """

    spring_defaults: ClassVar[Mapping[str, SpringDefault]] = {
        "auto-bind-dlq": SpringDefault(
            False,
            "a group's failed messages go to its dead-letter queue, so none is dropped "
            "silently (set false to share a queue a Spring app declared without one)",
        ),
    }

    exchange_type: ExchangeType = Field("topic", description="Type of the destination exchange.")
    declare_mode: Literal["adopt", "strict"] = Field(
        "adopt",
        description="An exchange or queue that exists with other settings (declared by a "
        "Spring app with its defaults, say): adopt uses it as it is, with one warning; strict "
        "stops start-up, as RabbitMQ refuses the declaration.",
    )
    declare_exchange: bool = Field(True, description="Declare the destination exchange.")
    exchange_durable: bool = Field(True, description="Declare the exchange durable.")
    exchange_auto_delete: bool = Field(False, description="Declare the exchange auto-delete.")
    prefix: str = Field("", description="Prefix of every exchange and queue name.")
    queue_name_group_only: bool = Field(
        False, description="Name the queue <group> instead of <destination>.<group>."
    )
    bind_queue: bool = Field(True, description="Declare the queue and bind it to the exchange.")
    binding_routing_key: str | None = Field(
        None, description="Binding key; default # (partitioned: <destination>-<index>)."
    )
    binding_routing_key_delimiter: str | None = Field(
        None, description="Split binding-routing-key on this to bind several keys."
    )
    queue_binding_arguments: dict[str, str] = Field(
        default_factory=dict, description="Arguments of the queue binding (headers exchange)."
    )
    ttl: int | None = Field(None, ge=0, description="x-message-ttl of the queue, ms.")
    expires: int | None = Field(None, ge=1, description="x-expires of the queue, ms.")
    max_length: int | None = Field(None, ge=0, description="x-max-length of the queue.")
    max_length_bytes: int | None = Field(None, ge=0, description="x-max-length-bytes.")
    max_priority: int | None = Field(None, ge=0, le=255, description="x-max-priority.")
    overflow_behavior: str | None = Field(
        None, description="x-overflow: drop-head, reject-publish or reject-publish-dlx."
    )
    lazy: bool = Field(False, description="x-queue-mode: lazy.")
    single_active_consumer: bool = Field(False, description="x-single-active-consumer.")
    quorum: QuorumProperties = Field(default_factory=QuorumProperties)
    auto_bind_dlq: bool = Field(
        True,
        description="Declare DLX and <queue>.dlq and dead-letter the queue to them "
        "(Spring's default is false; ours is true so no failure is dropped).",
    )
    dead_letter_queue_name: str | None = Field(None, description="DLQ name; default <queue>.dlq.")
    dead_letter_exchange: str | None = Field(None, description="DLX name; default <prefix>DLX.")
    dead_letter_exchange_type: ExchangeType = Field("direct", description="Type of the DLX.")
    declare_dlx: bool = Field(True, description="Declare the DLX.")
    dead_letter_routing_key: str | None = Field(
        None, description="Routing key to the DLQ; default the queue name."
    )
    dlq_ttl: int | None = Field(None, ge=0, description="x-message-ttl of the DLQ, ms.")
    dlq_expires: int | None = Field(None, ge=1, description="x-expires of the DLQ, ms.")
    dlq_max_length: int | None = Field(None, ge=0, description="x-max-length of the DLQ.")
    dlq_max_length_bytes: int | None = Field(None, ge=0, description="x-max-length-bytes (DLQ).")
    dlq_max_priority: int | None = Field(None, ge=0, le=255, description="x-max-priority (DLQ).")
    dlq_overflow_behavior: str | None = Field(None, description="x-overflow of the DLQ.")
    dlq_lazy: bool = Field(False, description="x-queue-mode: lazy for the DLQ.")
    dlq_single_active_consumer: bool = Field(False, description="x-single-active-consumer (DLQ).")
    dlq_quorum: QuorumProperties = Field(default_factory=QuorumProperties)
    dlq_dead_letter_exchange: str | None = Field(
        None, description="DLX of the DLQ: with dlq-ttl, expired dead letters go back here."
    )
    dlq_dead_letter_routing_key: str | None = Field(
        None, description="Routing key for dead letters leaving the DLQ."
    )


#: Spring Rabbit properties common to consumers and producers that we do not implement.
_COMMON_SPRING_ONLY: dict[str, SpringOnly] = {
    "delayed-exchange": SpringOnly(
        "the delayed-message exchange plugin is not supported", accepts=(False,)
    ),
    "dlq-binding-arguments": SpringOnly("the DLQ is bound by its routing key only", accepts=({},)),
    "header-patterns": SpringOnly(
        "every header is mapped (Spring's default, '*')", accepts=("*", ("*",), ["*"])
    ),
    "super-stream": SpringOnly("RabbitMQ streams are not supported", accepts=(False,)),
    "transacted": SpringOnly(
        "RabbitMQ transactions are not used: publisher confirms make sends safe",
        accepts=(False,),
    ),
    "stream-message-converter-bean-name": SpringOnly("names a Spring bean"),
}


class RabbitConsumerProperties(RabbitCommonProperties):
    """``stream.rabbit.bindings.<name>.consumer``."""

    spring_defaults: ClassVar[Mapping[str, SpringDefault]] = {
        **RabbitCommonProperties.spring_defaults,
        "prefetch": SpringDefault(
            1,
            "a window of one message allows no batches; 250 lets the consumer take and "
            "acknowledge them in batches, many times faster",
        ),
    }

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        **_COMMON_SPRING_ONLY,
        "acknowledge-mode": SpringOnly(
            "messages are acknowledged by the core after they were processed and their "
            "outputs confirmed (Spring's AUTO); MANUAL and NONE are not supported",
            accepts=("AUTO",),
        ),
        "requeue-rejected": SpringOnly(
            "a message whose retries ran out is dead-lettered (auto-bind-dlq), or rejected "
            "without requeue; requeueing it would deliver it again forever",
            accepts=(False,),
        ),
        "max-concurrency": SpringOnly(
            "consumers do not scale between concurrency and a maximum; set concurrency",
            accepts=(1,),
        ),
        "container-type": SpringOnly(
            "RabbitMQ stream containers are not supported", accepts=("simple", "direct")
        ),
        "missing-queues-fatal": SpringOnly(
            "a missing queue is declared (or, with bind-queue: false, reported) at start-up",
            accepts=(False,),
        ),
        "queue-declaration-retries": SpringOnly(
            "declarations are retried with the core's back-off", accepts=(ANY_VALUE,)
        ),
        "failed-declaration-retry-interval": SpringOnly(
            "declarations are retried with the core's back-off", accepts=(ANY_VALUE,)
        ),
        "frame-max-headroom": SpringOnly(
            "dead letters keep their stack trace short", accepts=(ANY_VALUE,)
        ),
        "consumer-priority": SpringOnly("consumer priorities are not set", accepts=(-1,)),
        "queue-max-priority": SpringOnly("use max-priority", accepts=(-1,)),
        "tx-size": SpringOnly("a batch is acknowledged once (batch-size)", accepts=(1,)),
        "recovery-interval": SpringOnly(
            "set recovery-interval on the binder (the connection recovers, not a consumer)",
            accepts=(ANY_VALUE,),
        ),
    }

    prefetch: int = Field(
        250,
        ge=1,
        description="Unacknowledged deliveries per consumer (QoS); Spring's default is 1, "
        "ours lets batches form.",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Most messages per batch (one ack each); default half the prefetch, so "
        "the next batch arrives while one is processed.",
    )
    durable_subscription: bool = Field(True, description="Declare the group queue durable.")
    republish_to_dlq: bool = Field(
        True, description="Republish failures to the DLQ with exception headers (else reject)."
    )
    republish_delivery_mode: DeliveryMode = Field(
        "PERSISTENT", description="Delivery mode of republished dead letters."
    )
    anonymous_group_prefix: str = Field(
        "anonymous.", description="Name prefix of anonymous (no group) queues."
    )
    exclusive: bool = Field(False, description="Consume exclusively (one consumer per queue).")
    consumer_tag_prefix: str | None = Field(None, description="Prefix of consumer tags.")
    enable_batching: bool = Field(
        False,
        description="Spring's switch for batches assembled by the consumer; here a consumer "
        "always takes up to batch-size messages at once, and batch-mode decides whether "
        "the function gets them as a list.",
    )
    receive_timeout: Millis | None = Field(
        None,
        description="Spring's longest wait for a batch to fill; here a batch is handed over "
        "as soon as messages are at hand, never later.",
    )

    def for_dead_letters(
        self, destination: str, group: str | None
    ) -> RabbitConsumerProperties | None:
        """A consumer of the dead-letter exchange gets no dead-letter queue of its own
        unless it asks for one: its failures would be dead-lettered back to the exchange
        it reads, round and round."""
        dlx = self.dead_letter_exchange or f"{self.prefix}DLX"
        if "auto_bind_dlq" in self.model_fields_set or destination != dlx:
            return None
        return self.model_copy(update={"auto_bind_dlq": False})

    @model_validator(mode="after")
    def _batch(self) -> RabbitConsumerProperties:
        if self.batch_size is not None and self.batch_size > self.prefetch:
            raise ValueError("batch-size cannot exceed prefetch (a batch is acknowledged whole)")
        return self


class RabbitProducerProperties(RabbitCommonProperties):
    """``stream.rabbit.bindings.<name>.producer``."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        **_COMMON_SPRING_ONLY,
        "batching-enabled": SpringOnly(
            "messages are not batched into one AMQP message (a Spring-only format)",
            accepts=(False,),
        ),
        "batch-size": SpringOnly("only with batching-enabled", accepts=(ANY_VALUE,)),
        "batch-buffer-limit": SpringOnly("only with batching-enabled", accepts=(ANY_VALUE,)),
        "batch-timeout": SpringOnly("only with batching-enabled", accepts=(ANY_VALUE,)),
        "batching-strategy-bean-name": SpringOnly("names a Spring bean"),
        "compress": SpringOnly("messages are not compressed", accepts=(False,)),
        "confirm-ack-channel": SpringOnly(
            "confirms are awaited before the input is acknowledged; there is no channel for them"
        ),
        "use-confirm-header": SpringOnly(
            "every send waits for its publisher confirm", accepts=(ANY_VALUE,)
        ),
        "delay-expression": SpringOnly("the delayed-message exchange plugin is not supported"),
        "producer-type": SpringOnly("RabbitMQ streams are not supported", accepts=("AMQP",)),
        "alternate-exchange": SpringOnly(
            "alternate exchanges are not declared; an unroutable message fails its send (mandatory)"
        ),
    }

    delivery_mode: DeliveryMode = Field("PERSISTENT", description="Delivery mode of messages.")
    routing_key: str | None = Field(
        None, description="Static routing key; default the destination (plus -<partition>)."
    )
    routing_key_expression: str | None = Field(
        None,
        description="Routing key from each message: headers['type'], payload.kind, "
        "'fixed-key' (the expression language; payload read as JSON).",
    )
    mandatory: bool = Field(
        True,
        description="Publish mandatory: a message no queue takes fails with DeliveryError "
        "instead of being dropped by RabbitMQ.",
    )

    @field_validator("routing_key_expression")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is not None:
            from binder_core.expression import compile_expression

            compile_expression(value)  # refused at start-up, not at the first send
        return value


#: Java key and trust store types Python's ssl module cannot read.
_JAVA_STORES = ("JKS", "PKCS12")


class RabbitBootSsl(Props):
    """``spring.rabbitmq.ssl``: Spring Boot's TLS settings (PEM stores only)."""

    enabled: bool | None = None
    key_store: str | None = None
    key_store_type: str | None = None
    key_store_password: SecretStr | None = None
    trust_store: str | None = None
    trust_store_type: str | None = None
    trust_store_password: SecretStr | None = None
    validate_server_certificate: bool | None = None
    verify_hostname: bool | None = None
    algorithm: str | None = None
    bundle: str | None = None

    @model_validator(mode="after")
    def _pem(self) -> RabbitBootSsl:
        for kind in ("trust", "key"):
            store_type = getattr(self, f"{kind}_store_type")
            if store_type and store_type.strip().upper() in _JAVA_STORES:
                raise ValueError(
                    f"{kind}-store-type {store_type}: Python's ssl module reads PEM files "
                    "only; export the store to PEM (keytool -exportcert -rfc, or openssl "
                    f"pkcs12 -nodes) and set {kind}-store-type: PEM"
                )
        if self.bundle:
            raise ValueError("SSL bundles are Spring beans; name the PEM files instead")
        return self


def _seconds(value: Any) -> Any:
    """Spring Boot's ``requested-heartbeat``: a duration whose plain numbers are seconds."""
    ms = duration_ms(value, 1000.0)
    return ms / 1000 if isinstance(ms, int | float) and not isinstance(ms, bool) else ms


class RabbitBootProperties(Props):
    """Spring Boot's ``spring.rabbitmq.*`` connection properties, laid under every
    RabbitMQ binder's settings (``stream.rabbit.binder`` and an instance's ``environment``
    win), as Spring's binder takes its connection from Boot."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "listener": SpringOnly(
            "configures Spring AMQP's listener containers, which a binding does not use "
            "(Spring Cloud Stream ignores it too); set stream.rabbit.bindings.<name>.consumer"
        ),
        "template": SpringOnly(
            "configures Spring's RabbitTemplate; send with StreamBridge or a function"
        ),
        "cache": SpringOnly("channels are kept per binding, not cached", accepts=(ANY_VALUE,)),
        "publisher-confirm-type": SpringOnly(
            "every send waits for its publisher confirm", accepts=("correlated", "simple")
        ),
        "publisher-returns": SpringOnly(
            "an unroutable message fails its send (the producer's mandatory)",
            accepts=(ANY_VALUE,),
        ),
        "dynamic": SpringOnly(
            "exchanges and queues are always declared by the binder", accepts=(True,)
        ),
        "address-shuffle-mode": SpringOnly("addresses are tried in order", accepts=("none",)),
        "stream": SpringOnly("RabbitMQ streams are not supported"),
        "channel-rpc-timeout": SpringOnly(
            "channel operations are bounded by connection-timeout", accepts=(ANY_VALUE,)
        ),
        "requested-channel-max": SpringOnly("the broker's limit applies", accepts=(ANY_VALUE,)),
        "max-inbound-message-body-size": SpringOnly(
            "the broker's limit applies", accepts=(ANY_VALUE,)
        ),
    }

    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: SecretStr | None = None
    virtual_host: str | None = None
    addresses: list[str] | None = None
    ssl: RabbitBootSsl = Field(default_factory=RabbitBootSsl)
    connection_timeout: Millis | None = None
    requested_heartbeat: float | None = None

    _heartbeat = field_validator("requested_heartbeat", mode="before")(_seconds)

    def environment(self) -> tuple[dict[str, Any], dict[tuple[str, ...], tuple[str, ...]]]:
        """These settings as a RabbitMQ binder's environment, and where each came from."""
        out: dict[str, Any] = {}
        origins: dict[tuple[str, ...], tuple[str, ...]] = {}

        def put(path: tuple[str, ...], value: Any, written: tuple[str, ...]) -> None:
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
            origins[path] = written

        for key in ("host", "port", "username", "password", "addresses"):
            value = getattr(self, key)
            if value is not None:
                put((key,), value, (key,))
        if self.virtual_host is not None:
            put(("virtual-host",), self.virtual_host, ("virtual-host",))
        if self.connection_timeout is not None:
            put(("connection-timeout",), self.connection_timeout / 1000, ("connection-timeout",))
        if self.requested_heartbeat is not None:
            put(("heartbeat",), int(self.requested_heartbeat), ("requested-heartbeat",))
        ssl = self.ssl
        for ours, theirs in (
            ("enabled", "enabled"),
            ("verify-hostname", "verify-hostname"),
            ("validate-server-certificate", "validate-server-certificate"),
            ("ca-file", "trust-store"),
            ("cert-file", "key-store"),
        ):
            value = getattr(ssl, theirs.replace("-", "_"))
            if value is not None:
                put(("ssl", ours), value, ("ssl", theirs))
        return out, origins


RabbitEnvironment.spring_boot = ("rabbitmq", RabbitBootProperties)
