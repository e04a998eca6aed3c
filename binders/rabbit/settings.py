"""Configuration schema of the RabbitMQ binder.

Property names are Spring Cloud Stream's Rabbit binder names in kebab-case, so a Spring user
finds ``auto-bind-dlq``, ``republish-to-dlq``, ``binding-routing-key``, ``prefetch`` ... where
they expect them. The defaults are Spring's, except where we are deliberately safer (failed
messages are dead-lettered by default) or faster (a larger prefetch). This module imports no
broker library: the plugin imports it at start-up, pika only when a binder is built.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from binder_core.properties import Props

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
    the ``ssl`` settings (CA, client certificate, host name check).
    """

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


class RabbitConsumerProperties(RabbitCommonProperties):
    """``stream.rabbit.bindings.<name>.consumer``."""

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

    @model_validator(mode="after")
    def _batch(self) -> RabbitConsumerProperties:
        if self.batch_size is not None and self.batch_size > self.prefetch:
            raise ValueError("batch-size cannot exceed prefetch (a batch is acknowledged whole)")
        return self


class RabbitProducerProperties(RabbitCommonProperties):
    """``stream.rabbit.bindings.<name>.producer``."""

    delivery_mode: DeliveryMode = Field("PERSISTENT", description="Delivery mode of messages.")
    routing_key: str | None = Field(
        None, description="Static routing key; default the destination (plus -<partition>)."
    )
    routing_key_expression: str | None = Field(
        None,
        description="Routing key from each message: headers['type'] or payload.kind "
        "(path language, JSON payloads).",
    )
    mandatory: bool = Field(
        True,
        description="Publish mandatory: a message no queue takes fails with DeliveryError "
        "instead of being dropped by RabbitMQ.",
    )
