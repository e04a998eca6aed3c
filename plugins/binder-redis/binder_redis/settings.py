"""Configuration schema of the Redis Streams binder.

These models are what ``binder`` validates ``stream.binders.<name>.environment`` (and
``stream.redis.binder``) and ``stream.redis.bindings.<name>.consumer|producer`` against, so a
typo fails at start-up with a "did you mean" like any core key. No redis-py import here:
the plugin module imports this at discovery time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from binder_core.properties import Props


class SslProperties(Props):
    """``ssl``: TLS to Redis (``ssl: true`` is short for ``ssl: {enabled: true}``)."""

    enabled: bool = Field(False, description="Connect with TLS (rediss).")
    ca_file: str | None = Field(None, description="CA bundle (PEM); default: system CAs.")
    cert_file: str | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key_file: str | None = Field(None, description="Private key (PEM) of the client certificate.")
    key_password: SecretStr | None = Field(None, description="Password of the private key.")
    verify: bool = Field(
        True, description="Verify the server's certificate and host name (false only in tests)."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class RedisEnvironment(Props):
    """``stream.binders.<name>.environment`` (or ``stream.redis.binder``) for type redis.

    Either ``url`` or the separate keys; ``url`` wins when given.
    """

    url: SecretStr | None = Field(
        None,
        description="redis[s]://[user:password@]host:port/db; wins over host/port/db/... "
        "(masked: it may hold a password).",
    )
    host: str = Field("127.0.0.1", description="Redis host.")
    port: int = Field(6379, ge=1, le=65535, description="Redis port.")
    db: int = Field(0, ge=0, description="Database number.")
    username: str | None = Field(None, description="ACL user name (Redis 6+).")
    password: SecretStr | None = Field(None, description="Password (never logged).")
    ssl: SslProperties = Field(default_factory=SslProperties)
    key_prefix: str = Field(
        "binder:", description="Prefix of every stream key: destination ticks is binder:ticks."
    )
    client_name: str | None = Field(
        None, description="CLIENT SETNAME of every connection; default binder:<binder-name>."
    )
    connection_timeout: float = Field(5.0, gt=0, description="Connect timeout, s.")
    socket_timeout: float = Field(
        10.0, gt=0, description="Longest wait for a reply to a non-blocking command, s."
    )
    recovery_interval: int = Field(
        5000, ge=10, description="Longest pause between reconnection attempts, ms."
    )
    send_timeout: int = Field(
        30_000,
        ge=0,
        description="How long a producer keeps retrying a batch while Redis is unreachable "
        "before the send fails (and the input batch is redelivered), ms.",
    )


class RedisConsumerProperties(Props):
    """``stream.redis.bindings.<name>.consumer``."""

    batch_size: int = Field(
        256, ge=1, description="Entries per XREADGROUP (COUNT), per stream: one XACK each."
    )
    block: int = Field(
        2000,
        ge=1,
        description="XREADGROUP BLOCK, ms. Stop and pause interrupt it at once "
        "(CLIENT UNBLOCK), so this only bounds how often an idle consumer wakes.",
    )
    start_offset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where a named group this binding creates starts: earliest (0, the "
        "stream's whole retained history, as Spring's Kafka binder) or latest ($, only what is "
        "sent after). An existing group keeps its position; anonymous groups start at latest.",
    )
    claim_idle: int = Field(
        30_000,
        ge=100,
        description="Entries another consumer of the group has held unacknowledged this "
        "long, ms, are claimed (XAUTOCLAIM): how a crashed consumer's work is recovered.",
    )
    claim_interval: int | None = Field(
        None, ge=10, description="How often to look for such entries, ms; default claim-idle/2."
    )
    enable_dlq: bool = Field(True, description="Dead-letter messages whose retries ran out.")
    dlq_name: str | None = Field(
        None,
        description="Dead-letter destination (a stream, key-prefix applied); default "
        "<destination>.<group>.dlq (anonymous: <destination>.anonymous.dlq).",
    )
    partition_count: int | None = Field(
        None,
        ge=1,
        description="Partition streams <destination>-<n> of the destination; default: what "
        "its producers declared (followed as it grows), else instance-count when partitioned.",
    )


class RedisProducerProperties(Props):
    """``stream.redis.bindings.<name>.producer``."""

    max_length: int | None = Field(
        None,
        ge=1,
        description="XADD MAXLEN ~ n: approximate trimming of each stream. Default none: "
        "never drop (the stream grows until trimmed some other way).",
    )
