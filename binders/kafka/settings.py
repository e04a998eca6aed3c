"""Configuration schema of the Kafka binder, under Spring Cloud Stream Kafka's names.

``stream.kafka.binder`` (type-wide) and ``stream.binders.<name>.environment`` share
``KafkaEnvironment``; ``stream.kafka.bindings.<name>.consumer|producer`` are
``KafkaConsumerProperties`` and ``KafkaProducerProperties``. This module must stay cheap to
import (it is loaded with the plugin): no aiokafka here.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from binder_core.properties import Props

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _aliases(*names: str) -> dict[str, Any]:
    """Field arguments accepting several spellings (a Spring name and a Kafka one)."""
    spellings: list[str] = []
    for name in names:
        spellings += [name, name.replace("-", "_")]
    return {"validation_alias": AliasChoices(*spellings), "serialization_alias": names[0]}


class KafkaTopicProperties(Props):
    """``...producer.topic`` / ``...consumer.topic``: how a topic is created."""

    replication_factor: int | None = Field(
        None, description="Replication factor of this topic; default the binder's."
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        description="Topic configuration used at creation, e.g. retention.ms: '86400000'.",
    )


class KafkaProducerProperties(Props):
    """``stream.kafka.bindings.<name>.producer``."""

    buffer_size: int = Field(
        16384,
        ge=1,
        description="Most bytes batched per partition before sending (batch.size).",
        **_aliases("buffer-size", "batch-size"),
    )
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none", description="Compression of record batches."
    )
    batch_timeout: int = Field(
        0,
        ge=0,
        description="Milliseconds to wait for more records before sending (linger.ms).",
        **_aliases("batch-timeout", "linger-ms"),
    )
    sync: bool = Field(
        False, description="Send one record at a time, each confirmed before the next."
    )
    configuration: dict[str, Any] = Field(
        default_factory=dict, description="Other aiokafka producer settings for this binding."
    )
    topic: KafkaTopicProperties = Field(default_factory=KafkaTopicProperties)
    close_timeout: int = Field(
        10,
        ge=0,
        description="Seconds closing waits for records still unconfirmed (their senders "
        "were never told they were delivered, so nothing confirmed is lost by giving up).",
    )

    @field_validator("compression_type")
    @classmethod
    def _codec_installed(cls, value: str) -> str:
        # aiokafka compresses snappy, lz4 and zstd with cramjam, an optional dependency;
        # without it the first send would fail, long after start-up.
        if value in ("snappy", "lz4", "zstd") and importlib.util.find_spec("cramjam") is None:
            raise ValueError(
                f"{value} compression needs the codec library cramjam, which is not "
                "installed: pip install 'binder[kafka-codecs]' (or use gzip, built in)"
            )
        return value


class KafkaConsumerProperties(Props):
    """``stream.kafka.bindings.<name>.consumer``."""

    start_offset: Literal["earliest", "latest"] | None = Field(
        None,
        description="Where a group without committed offsets starts; default earliest for "
        "a named group, latest for an anonymous one.",
    )
    reset_offsets: bool = Field(
        False, description="Seek to start-offset whenever the binding starts."
    )
    enable_dlq: bool = Field(
        True, description="Dead-letter records whose retries ran out (false: log and skip)."
    )
    dlq_name: str | None = Field(
        None, description="Dead-letter topic; default error.<destination>.<group>."
    )
    dlq_partitions: int | None = Field(
        None, ge=1, description="Partitions of the dead-letter topic; default: the topic's."
    )
    max_poll_records: int = Field(500, ge=1, description="Most records handed over at once.")
    poll_timeout: int = Field(
        5000, ge=1, description="Milliseconds a poll waits for records before polling again."
    )
    auto_commit_offset: bool = Field(
        True,
        description="Commit offsets after each processed batch; false leaves offsets "
        "uncommitted (a restarted group starts again from its last committed position).",
    )
    auto_rebalance_enabled: bool = Field(
        True,
        description="Let the group coordinator spread partitions; false assigns partitions "
        "by instance-index/instance-count, as partitioned does.",
    )
    configuration: dict[str, Any] = Field(
        default_factory=dict, description="Other aiokafka consumer settings for this binding."
    )
    topic: KafkaTopicProperties = Field(default_factory=KafkaTopicProperties)


class KafkaTransactionProperties(Props):
    """``stream.kafka.binder.transaction``."""

    transaction_id_prefix: str | None = Field(
        None,
        description="Enables transactions: each consumer's outputs and offsets are committed "
        "in one Kafka transaction. Unique per app instance.",
    )
    producer: KafkaProducerProperties = Field(
        default_factory=KafkaProducerProperties,
        description="Producer settings of the transactional producers.",
    )


class KafkaSslProperties(Props):
    """``ssl``: TLS to the brokers, from PEM files (what Python's ``ssl`` module reads; a Java
    key store is exported to PEM first). Used when ``security-protocol`` is SSL or SASL_SSL."""

    ca_file: str | None = Field(
        None,
        description="CA certificates (PEM) the brokers' certificates are checked against "
        "(Spring's trust-store-location); default: the system CAs.",
    )
    cert_file: str | None = Field(
        None,
        description="Client certificate chain (PEM) for mutual TLS; may hold its key too.",
    )
    key_file: str | None = Field(None, description="Private key (PEM) of cert-file.")
    key_password: SecretStr | None = Field(
        None, description="Password of an encrypted key-file (never shown)."
    )
    check_hostname: bool = Field(
        True,
        description="Check that each broker's certificate names the host it was reached "
        "by (Kafka's ssl.endpoint.identification.algorithm=https).",
        **_aliases("check-hostname", "verify-hostname"),
    )


class KafkaSaslProperties(Props):
    """``sasl``: the login on SASL_PLAINTEXT and SASL_SSL listeners."""

    mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (Kafka's sasl.mechanism)."
    )
    username: str | None = Field(None, description="User name.")
    password: SecretStr | None = Field(
        None, description="Password (never shown); or password-file, or an environment variable."
    )
    password_file: str | None = Field(
        None,
        description="File holding the password, such as a mounted secret (a trailing "
        "newline is ignored); read at start-up.",
    )

    @field_validator("mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_password(self) -> KafkaSaslProperties:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password-file, not both")
        return self


class KafkaJaasProperties(Props):
    """``jaas``: Spring Cloud Stream's JAAS shape of the SASL login. Only the username and
    password options of Kafka's PLAIN and SCRAM login modules apply."""

    login_module: str = Field(
        "org.apache.kafka.common.security.plain.PlainLoginModule",
        description="PlainLoginModule (mechanism PLAIN) or ScramLoginModule (with "
        "sasl.mechanism SCRAM-SHA-256 or SCRAM-SHA-512).",
    )
    control_flag: Literal["required"] = Field(
        "required", description="Only required (the one flag a client login uses)."
    )
    options: dict[str, SecretStr] = Field(
        default_factory=dict, description="username and password of the login."
    )

    @model_validator(mode="after")
    def _known_options(self) -> KafkaJaasProperties:
        unknown = sorted(set(self.options) - {"username", "password"})
        if unknown:
            raise ValueError(f"options {', '.join(unknown)} are not supported (username, password)")
        return self


class KafkaEnvironment(Props):
    """``stream.kafka.binder`` and ``stream.binders.<name>.environment`` for type kafka."""

    bootstrap_servers: list[str] = Field(
        default_factory=lambda: ["localhost:9092"],
        description="Brokers to bootstrap from: a list or a comma-separated string.",
        **_aliases("bootstrap-servers", "brokers"),
    )
    default_broker_port: int = Field(
        9092, ge=1, le=65535, description="Port of a bootstrap server given without one."
    )
    security_protocol: SecurityProtocol | None = Field(
        None,
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (Kafka's security.protocol); "
        "default PLAINTEXT.",
    )
    ssl: KafkaSslProperties = Field(default_factory=KafkaSslProperties)
    sasl: KafkaSaslProperties = Field(default_factory=KafkaSaslProperties)
    jaas: KafkaJaasProperties | None = Field(
        None, description="Spring Cloud Stream's JAAS login (login-module, options)."
    )
    configuration: dict[str, Any] = Field(
        default_factory=dict,
        description="aiokafka client settings for every client (request_timeout_ms, ...); "
        "Kafka's own names work too (security.protocol, sasl.mechanism, sasl.jaas.config, "
        "ssl.truststore.location of a PEM file, ...).",
    )
    consumer_properties: dict[str, Any] = Field(
        default_factory=dict, description="aiokafka settings for consumers only."
    )
    producer_properties: dict[str, Any] = Field(
        default_factory=dict, description="aiokafka settings for producers only."
    )
    auto_create_topics: bool = Field(True, description="Create missing topics.")
    auto_add_partitions: bool = Field(
        False, description="Add partitions to a topic that has fewer than required."
    )
    min_partition_count: int = Field(1, ge=1, description="Fewest partitions a topic gets.")
    replication_factor: int = Field(
        1, ge=-1, description="Replication factor of created topics; -1: the broker's default."
    )
    required_acks: str = Field("all", description="Producer acks: all (or -1), 1 or 0.")
    health_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds start-up keeps retrying an unreachable broker; also the bound "
        "of each provisioning call and of the broker health probe.",
    )
    shutdown_timeout: int = Field(
        10000,
        ge=0,
        description="Milliseconds a stopping binding waits for its batch in flight; after "
        "that the batch is abandoned uncommitted (and redelivered).",
    )
    transaction: KafkaTransactionProperties = Field(default_factory=KafkaTransactionProperties)

    @field_validator("security_protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one host[:port]")
        return value

    @field_validator("required_acks", mode="before")
    @classmethod
    def _acks(cls, value: Any) -> Any:
        text = str(value).strip().lower()
        if text not in ("all", "-1", "0", "1"):
            raise ValueError("must be all, -1, 0 or 1")
        return "all" if text == "-1" else text

    @field_validator("replication_factor")
    @classmethod
    def _replication(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be at least 1, or -1 for the broker's default")
        return value

    def servers(self) -> list[str]:
        """Bootstrap servers, each with a port."""
        return [
            s if ":" in s.rsplit("]", 1)[-1] else f"{s}:{self.default_broker_port}"
            for s in self.bootstrap_servers
        ]

    @property
    def transactional(self) -> bool:
        """Whether consumers run their batches in Kafka transactions."""
        return bool(self.transaction.transaction_id_prefix)
