"""Configuration schema of the Kafka binder, under Spring Cloud Stream Kafka's names.

``stream.kafka.binder`` (type-wide) and ``stream.binders.<name>.environment`` share
``KafkaEnvironment``; ``stream.kafka.bindings.<name>.consumer|producer`` are
``KafkaConsumerProperties`` and ``KafkaProducerProperties``. This module must stay cheap to
import (it is loaded with the plugin): no aiokafka here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from binder_core.properties import Millis, ModelProblem, Props, SpringDefault, SpringOnly

#: Where Spring's Kafka binder dead-letters by default: ``error.<destination>.<group>``.
DLQ_PREFIX = "error."

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


#: Kafka's (de)serializer settings, as aiokafka spells them.
_SERDE_KEYS = frozenset(
    {"key_serializer", "value_serializer", "key_deserializer", "value_deserializer"}
)
#: Kafka's own (de)serializers that do what the binder does anyway: records carry bytes
#: (text as UTF-8), which native encoding and decoding hand over as they are.
_BYTES_SERDES = frozenset(
    f"{kind}{role}"
    for kind in ("String", "ByteArray", "Bytes", "ByteBuffer")
    for role in ("Serializer", "Deserializer")
)


def _serdes(value: Any) -> Any:
    """A client settings map without Kafka's byte and text (de)serializers (the binder
    moves bytes, so they mean what it does anyway: a Spring file with
    ``value.serializer: ...StringSerializer`` works); any other serializer is refused."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, setting in value.items():
        name = str(key).strip().lower().replace(".", "_").replace("-", "_")
        if name not in _SERDE_KEYS:
            out[key] = setting
            continue
        simple = str(setting).strip().rsplit(".", 1)[-1]
        if simple not in _BYTES_SERDES:
            raise ValueError(
                f"{key}: {setting} is not supported: records carry bytes (text as UTF-8), "
                "which the core converts by content-type, or hands over as they are with "
                "use-native-encoding / use-native-decoding (Kafka's String and ByteArray "
                "serializers mean just that)"
            )
    return out


def _map_problems(raw: Mapping[str, Any], role: str) -> list[ModelProblem]:
    """A binding's ``configuration`` map checked against the aiokafka client it goes to
    (the names its constructor takes, the binder's own settings refused), at start-up."""
    if not raw:
        return []
    from binder_core.errors import ConfigError
    from binders.kafka.clients import ClientConfig

    try:
        ClientConfig("check", KafkaEnvironment()).check_binding(raw, role, "check")
    except ConfigError as exc:
        prefix = f"stream.kafka.bindings.check.{role}."
        return [(tuple(p.path.removeprefix(prefix).split(".")), p.message) for p in exc.problems]
    return []


class KafkaProducerProperties(Props):
    """``stream.kafka.bindings.<name>.producer``."""

    spring_defaults: ClassVar[Mapping[str, SpringDefault]] = {
        "close-timeout": SpringDefault(
            30,
            "a stopping app gives up on unconfirmed records sooner; nothing confirmed is "
            "lost, what was not confirmed is sent again from its input",
        ),
    }

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "message-key-expression": SpringOnly(
            "set the record key with partition-key-expression (with partition-count 1 "
            "Kafka's own partitioner then hashes it), or return Message(payload, key=...)"
        ),
        "send-timeout-expression": SpringOnly(
            "sends are confirmed by the broker before the input is acknowledged; bound "
            "them with configuration.request_timeout_ms"
        ),
        "header-patterns": SpringOnly(
            "every header is sent (Spring's default, '*')", accepts=("*", ("*",), ["*"])
        ),
        "use-topic-header": SpringOnly("send to another topic with StreamBridge", accepts=(False,)),
        "record-metadata-channel": SpringOnly("names a Spring channel; there is none here"),
        "transaction-manager": SpringOnly(
            "names a Spring bean; transactions come from the binder's "
            "transaction.transaction-id-prefix"
        ),
        "allow-non-transactional": SpringOnly(
            "a binder with transactions sends every binding's records in them",
            accepts=(False,),
        ),
    }

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

    _serdes = field_validator("configuration", mode="before")(_serdes)

    def config_problems(self) -> Sequence[ModelProblem]:
        return _map_problems(self.configuration, "producer")

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

    spring_defaults: ClassVar[Mapping[str, SpringDefault]] = {
        "enable-dlq": SpringDefault(
            False,
            "a named group's failed records go to error.<destination>.<group>, so none is "
            "skipped silently",
        ),
    }

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "ack-mode": SpringOnly(
            "offsets are committed once per batch, after every record of it was processed "
            "and its outputs confirmed (Spring's BATCH); auto-commit-offset: false leaves "
            "them uncommitted",
            accepts=("BATCH",),
        ),
        "ack-each-record": SpringOnly(
            "offsets are committed once per batch (at-least-once either way)", accepts=(False,)
        ),
        "auto-commit-on-error": SpringOnly(
            "a record whose retries ran out is dead-lettered (or, with enable-dlq: false, "
            "logged and skipped), then committed with its batch"
        ),
        "standard-headers": SpringOnly(
            "the standard kafka_* headers are not added to messages", accepts=("none",)
        ),
        "converter-bean-name": SpringOnly("names a Spring bean; conversion follows content-type"),
        "idle-event-interval": SpringOnly(
            "there are no idle events; binder run --idle-exit stops an idle app"
        ),
        "destination-is-pattern": SpringOnly(
            "a destination is a topic name; list several as a,b", accepts=(False,)
        ),
        "transaction-manager": SpringOnly(
            "names a Spring bean; transactions come from the binder's "
            "transaction.transaction-id-prefix"
        ),
        "tx-commit-recovered": SpringOnly(
            "a dead-lettered record's offset is committed in the transaction", accepts=(True,)
        ),
        "common-error-handler-bean-name": SpringOnly(
            "names a Spring bean; retries and dead letters are the core's"
        ),
        "dlq-producer-properties": SpringOnly(
            "dead letters are sent by the binding's own producer settings (and in its "
            "transaction when there is one)"
        ),
        "trusted-packages": SpringOnly(
            "nothing in a message chooses a type here: a payload becomes the type the "
            "function declares"
        ),
        "reactive-auto-commit": SpringOnly("for Spring's reactive binder", accepts=(False,)),
        "reactive-at-most-once": SpringOnly("for Spring's reactive binder", accepts=(False,)),
    }

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

    _serdes = field_validator("configuration", mode="before")(_serdes)

    def config_problems(self) -> Sequence[ModelProblem]:
        return _map_problems(self.configuration, "consumer")

    def for_dead_letters(
        self, destination: str, group: str | None
    ) -> KafkaConsumerProperties | None:
        """A consumer of a dead-letter topic (``error.<destination>.<group>``) has no
        dead-letter topic of its own unless it asks for one (``error.error...``): what
        fails there is logged and skipped, as Spring does with enable-dlq false."""
        if "enable_dlq" in self.model_fields_set or not destination.startswith(DLQ_PREFIX):
            return None
        return self.model_copy(update={"enable_dlq": False})


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
    """``stream.kafka.binder`` and ``stream.binders.<name>.environment`` for type kafka.

    Spring Boot's ``spring.kafka.*`` connection properties (at the top level, or in an
    instance's ``environment``) are read as well (``KafkaBootProperties``), under these."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "headers": SpringOnly(
            "only applies to Spring's embedded headers; headers travel as Kafka record headers",
            accepts=("", (), []),
        ),
        "header-mapper-bean-name": SpringOnly("names a Spring bean; headers map one to one"),
        "consider-down-when-any-partition-has-no-leader": SpringOnly(
            "health is whether the brokers answer", accepts=(True,)
        ),
        "certificate-store-directory": SpringOnly(
            "TLS files are read where ssl.ca-file and ssl.cert-file name them"
        ),
        "enable-observation": SpringOnly(
            "tracing is stream.tracing (W3C trace context and OpenTelemetry spans)",
            accepts=(False,),
        ),
        "health-indicator-consumer-group": SpringOnly("the health probe uses the admin client"),
        "auto-alter-topics": SpringOnly(
            "topics are created, never altered (auto-add-partitions adds partitions)",
            accepts=(False,),
        ),
        "authorization-exception-retry-interval": SpringOnly(
            "an authorization failure stops start-up at once"
        ),
        "metrics": SpringOnly("consumer lag is a metric of the management endpoint"),
    }

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
        -1,
        ge=-1,
        description="Replication factor of created topics; -1 (Spring's default): the "
        "broker's default.replication.factor.",
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

    _serdes = field_validator(
        "configuration", "consumer_properties", "producer_properties", mode="before"
    )(_serdes)

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

    def config_problems(self) -> Sequence[ModelProblem]:
        """The client settings maps against aiokafka's settings, and the connection
        security (protocol, TLS files, SASL login) as the clients will build it: at
        start-up, not when the first client connects."""
        from binder_core.errors import ConfigError
        from binders.kafka.clients import ClientConfig

        try:
            ClientConfig("check", self)
        except ConfigError as exc:
            return [(tuple(p.path.split(".")), p.message) for p in exc.problems]
        return []


#: The Java key and trust store types Python's ssl module cannot read.
_JAVA_STORES = ("JKS", "PKCS12")


class KafkaBootSsl(Props):
    """``spring.kafka.ssl``: Spring Boot's TLS settings (PEM stores only)."""

    model_config = Props.model_config | {"extra": "forbid"}

    trust_store_location: str | None = None
    trust_store_type: str | None = None
    trust_store_password: SecretStr | None = None
    key_store_location: str | None = None
    key_store_type: str | None = None
    key_store_password: SecretStr | None = None
    key_password: SecretStr | None = None
    protocol: str | None = None
    bundle: str | None = None


#: Spring Boot's duration settings of a client, and the Kafka setting each one is.
_BOOT_MS = {
    "fetch_max_wait": "fetch.max.wait.ms",
    "heartbeat_interval": "heartbeat.interval.ms",
    "auto_commit_interval": "auto.commit.interval.ms",
    "linger": "linger.ms",
}


class KafkaBootClient(Props):
    """``spring.kafka.consumer`` / ``spring.kafka.producer`` / ``spring.kafka.admin``:
    Spring Boot's client settings. Its kebab-case names are Kafka's dotted ones
    (``max-poll-records`` is ``max.poll.records``); ``properties`` takes Kafka's names."""

    model_config = Props.model_config | {"extra": "allow"}

    properties: dict[str, Any] = Field(default_factory=dict)
    fetch_max_wait: Millis | None = None
    heartbeat_interval: Millis | None = None
    auto_commit_interval: Millis | None = None
    linger: Millis | None = None
    bootstrap_servers: list[str] | None = None

    def kafka_settings(self) -> dict[str, tuple[Any, tuple[str, ...]]]:
        """These settings under Kafka's names (``max-poll-records`` -> ``max.poll.records``,
        a duration -> its ``.ms`` setting, ``properties`` as they are), each with the key
        it was written as."""
        out: dict[str, tuple[Any, tuple[str, ...]]] = {}
        for name, kafka in _BOOT_MS.items():
            value = getattr(self, name)
            if value is not None:
                out[kafka] = (value, (name.replace("_", "-"),))
        if self.bootstrap_servers:
            out["bootstrap.servers"] = (",".join(self.bootstrap_servers), ("bootstrap-servers",))
        for key, value in (self.model_extra or {}).items():
            written = str(key)
            out[written.replace("-", ".").replace("_", ".")] = (value, (written,))
        for key, value in self.properties.items():
            out[key] = (value, ("properties", key))
        return out


class KafkaBootJaas(Props):
    """``spring.kafka.jaas``."""

    enabled: bool = False
    login_module: str = "org.apache.kafka.common.security.plain.PlainLoginModule"
    control_flag: str = "required"
    options: dict[str, SecretStr] = Field(default_factory=dict)


class KafkaBootProperties(Props):
    """Spring Boot's ``spring.kafka.*`` connection properties, laid under every Kafka
    binder's settings (``stream.kafka.binder`` and an instance's ``environment`` win):
    ``bootstrap-servers``, ``client-id``, ``security.protocol``, ``ssl.*`` (PEM files),
    ``jaas.*``, ``properties.*`` (Kafka's names) and the client sections ``consumer``,
    ``producer`` and ``admin``."""

    spring_only: ClassVar[Mapping[str, SpringOnly]] = {
        "listener": SpringOnly(
            "configures Spring Kafka's listener containers, which a binding does not use "
            "(Spring Cloud Stream ignores it too); set the binding's consumer properties"
        ),
        "template": SpringOnly(
            "configures Spring's KafkaTemplate; send with StreamBridge or a function"
        ),
        "streams": SpringOnly("Kafka Streams is not supported"),
        "retry": SpringOnly(
            "retries are the binding's (max-attempts, back-off-*), not Spring Kafka's"
        ),
    }

    bootstrap_servers: list[str] | None = None
    client_id: str | None = None
    security: dict[str, Any] = Field(default_factory=dict)
    ssl: KafkaBootSsl = Field(default_factory=KafkaBootSsl)
    jaas: KafkaBootJaas = Field(default_factory=KafkaBootJaas)
    properties: dict[str, Any] = Field(default_factory=dict)
    consumer: KafkaBootClient = Field(default_factory=KafkaBootClient)
    producer: KafkaBootClient = Field(default_factory=KafkaBootClient)
    admin: KafkaBootClient = Field(default_factory=KafkaBootClient)

    @model_validator(mode="after")
    def _stores(self) -> KafkaBootProperties:
        for kind in ("trust", "key"):
            kind_type = getattr(self.ssl, f"{kind}_store_type")
            if kind_type and kind_type.strip().upper() in _JAVA_STORES:
                raise ValueError(
                    f"ssl.{kind}-store-type {kind_type}: Python's ssl module reads PEM files "
                    "only; export the store to PEM (keytool -exportcert -rfc, or openssl "
                    "pkcs12 -nodes) and set ssl.{kind}-store-type: PEM"
                )
        unknown = sorted(set(self.security) - {"protocol"})
        if unknown:
            raise ValueError(f"security.{unknown[0]}: only security.protocol is read here")
        return self

    def environment(self) -> tuple[dict[str, Any], dict[tuple[str, ...], tuple[str, ...]]]:
        """These settings as a Kafka binder's environment, and where each came from."""
        out: dict[str, Any] = {}
        origins: dict[tuple[str, ...], tuple[str, ...]] = {}

        def put(path: tuple[str, ...], value: Any, written: tuple[str, ...]) -> None:
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
            origins[path] = written

        if self.bootstrap_servers:
            put(("bootstrap-servers",), self.bootstrap_servers, ("bootstrap-servers",))
        if self.client_id:
            put(("configuration", "client_id"), self.client_id, ("client-id",))
        if self.security.get("protocol"):
            put(("security-protocol",), self.security["protocol"], ("security", "protocol"))
        ssl = self.ssl
        if ssl.trust_store_location:
            put(("ssl", "ca-file"), ssl.trust_store_location, ("ssl", "trust-store-location"))
        if ssl.key_store_location:
            put(("ssl", "cert-file"), ssl.key_store_location, ("ssl", "key-store-location"))
        if ssl.key_password is not None:
            put(("ssl", "key-password"), ssl.key_password, ("ssl", "key-password"))
        if self.jaas.enabled:
            jaas = {
                "login-module": self.jaas.login_module,
                "control-flag": self.jaas.control_flag,
                "options": dict(self.jaas.options),
            }
            put(("jaas",), jaas, ("jaas",))
        for key, value in self.properties.items():
            put(("configuration", key), value, ("properties", key))
        for role, client in (("consumer", self.consumer), ("producer", self.producer)):
            target = f"{role}-properties"
            for key, (value, written) in client.kafka_settings().items():
                put((target, key), value, (role, *written))
        for key, (value, written) in self.admin.kafka_settings().items():
            put(("configuration", key), value, ("admin", *written))
        return out, origins


KafkaEnvironment.spring_boot = ("kafka", KafkaBootProperties)
