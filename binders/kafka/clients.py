"""Building aiokafka clients from the binder's settings.

Spring's ``configuration`` maps take Kafka client properties; here they take aiokafka's
keyword arguments (``fetch_max_wait_ms``, ``request_timeout_ms``). Java-style spellings
(``batch.size``, ``security.protocol``) are accepted too. A key that no aiokafka client knows
is a start-up error, never silently ignored; a key that only some clients know goes to those
(as Spring filters by ConsumerConfig/ProducerConfig names). Connection security (TLS, SASL)
is resolved once per binder by ``binders.kafka.security``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

from binder_core.errors import ConfigError, Problem, did_you_mean
from binders.kafka import security
from binders.kafka.settings import KafkaEnvironment

ROLES = ("admin", "consumer", "producer")

#: Java client names whose aiokafka argument is spelled differently.
_RENAMES = {"batch_size": "max_batch_size", **security.RENAMES}

#: Settings the binder owns: they come from binding properties, never from a map.
_OWNED = {
    "bootstrap_servers": "set bootstrap-servers (or brokers) instead",
    "group_id": "set the binding's group instead",
    "enable_auto_commit": "the binder commits offsets itself, after processing",
    "transactional_id": "set transaction.transaction-id-prefix instead",
    "key_serializer": "the binder moves bytes",
    "value_serializer": "the binder moves bytes",
    "key_deserializer": "the binder moves bytes",
    "value_deserializer": "the binder moves bytes",
    "loop": "not configurable",
    "ssl_context": "set ssl.ca-file, ssl.cert-file and ssl.key-file instead",
}


def normalize(key: str) -> str:
    """``security.protocol`` / ``security-protocol`` -> ``security_protocol``."""
    name = key.strip().lower().replace(".", "_").replace("-", "_")
    return _RENAMES.get(name, name)


@cache
def _parameters(role: str) -> dict[str, inspect.Parameter]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    cls = {"admin": AIOKafkaAdminClient, "consumer": AIOKafkaConsumer}.get(role, AIOKafkaProducer)
    return {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL
    }


def _coerce(value: Any, param: inspect.Parameter) -> Any:
    """YAML and environment variables give strings where aiokafka wants numbers/flags."""
    default = param.default
    if not isinstance(value, str) or default is inspect.Parameter.empty:
        return value
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
    elif isinstance(default, int) and text.lstrip("-").isdigit():
        return int(text)
    elif isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            return value
    return value


def _type_problem(name: str, value: Any, roles: tuple[str, ...]) -> str | None:
    """Why ``value`` does not fit the aiokafka argument ``name``, or None."""
    for role in roles:
        param = _parameters(role).get(name)
        if param is None or param.default is inspect.Parameter.empty or value is None:
            continue
        default = param.default
        coerced = _coerce(value, param)
        if isinstance(default, bool):
            if not isinstance(coerced, bool):
                return f"expected true or false, got {value!r}"
        elif isinstance(default, int) and default is not None:
            if not isinstance(coerced, int) or isinstance(coerced, bool):
                return f"expected a whole number, got {value!r}"
        elif isinstance(default, float) and not isinstance(coerced, int | float):
            return f"expected a number, got {value!r}"
    return None


class ClientConfig:
    """The validated client settings of one binder: what each kind of client gets."""

    def __init__(self, binder: str, env: KafkaEnvironment) -> None:
        self.binder = binder
        self.env = env
        problems: list[Problem] = []
        #: Security entries of the binder-wide map: aiokafka name -> (key path, value).
        self._mapped_security: dict[str, tuple[str, Any]] = {}
        self._common = self._check(env.configuration, "configuration", ROLES, problems)
        self._consumer = self._check(
            env.consumer_properties, "consumer-properties", ("consumer",), problems
        )
        self._producer = self._check(
            env.producer_properties, "producer-properties", ("producer",), problems
        )
        #: One protocol, login and TLS context for every client of this binder.
        self.security = security.resolve(binder, env, self._mapped_security, problems)
        if problems:
            raise ConfigError(problems)

    def _check(
        self, raw: Mapping[str, Any], where: str, roles: tuple[str, ...], problems: list[Problem]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in raw.items():
            name = normalize(str(key))
            path = f"{where}.{key}"
            source = f"kafka binder '{self.binder}'"
            if name in _OWNED:
                problems.append(Problem(path, f"not allowed here: {_OWNED[name]}", source))
            elif name in security.SECURITY_KEYS:
                if where == "configuration":
                    self._mapped_security[name] = (path, value)
                else:
                    problems.append(
                        Problem(
                            path,
                            "not allowed here: every client of a binder connects the same "
                            "way; set it in the binder's configuration, or its "
                            "security-protocol, ssl and sasl settings",
                            source,
                        )
                    )
            elif not any(name in _parameters(r) for r in roles):
                known = {n for r in roles for n in _parameters(r)} | security.SECURITY_KEYS
                problems.append(
                    Problem(
                        path,
                        f"unknown aiokafka client setting '{name}'" + did_you_mean(name, known),
                        source,
                    )
                )
            else:
                bad = _type_problem(name, value, roles)
                if bad:
                    problems.append(Problem(path, bad, source))
                else:
                    out[name] = value
        return out

    def check_binding(self, raw: Mapping[str, Any], role: str, binding: str) -> dict[str, Any]:
        """A binding's ``configuration`` map, validated for one kind of client."""
        problems: list[Problem] = []
        where = f"stream.kafka.bindings.{binding}.{role}.configuration"
        out = self._check(raw, where, (role,), problems)
        if problems:
            raise ConfigError(problems)
        return out

    def kwargs(self, role: str, *layers: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for one aiokafka client: bootstrap servers, the binder's common
        settings, the role's own, then ``layers`` (binding settings), later winning."""
        params = _parameters(role)
        merged: dict[str, Any] = {}
        own = self._consumer if role == "consumer" else self._producer if role == "producer" else {}
        for layer in (self._common, own, *layers):
            for name, value in layer.items():
                if name in params:
                    merged[name] = _coerce(value, params[name])
        merged["bootstrap_servers"] = self.env.servers()
        merged.update(self.security.kwargs())
        merged.setdefault("client_id", f"binder-{self.binder}-{role}")
        return merged

    async def diagnose(self) -> str | None:
        """After the brokers could not be reached: why this binder's settings can never
        connect (an untrusted certificate, a refused login, TLS against a plain listener),
        or None when the brokers may just be down."""
        return await security.diagnose(self.binder, self.env.servers(), self.security)


class _Throttle(logging.Filter):
    """aiokafka logs a warning or an error on every reconnect attempt, ten a second while
    a broker is down. Keep the first of each kind, then one per ``interval`` with a count
    of what was held back, so the log stays readable through an outage."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if len(self._seen) > 2000:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if seen is not None and seen[1] and isinstance(record.args, tuple):
            record.msg = f"{record.msg} (and %d more like this in %.0f s)"
            record.args = (*record.args, seen[1], now - seen[0])
        return True


_THROTTLE = _Throttle()


def throttle_client_logs() -> None:
    """Attach the repeat filter to every aiokafka logger (they log to their own names, and
    a filter on a parent logger does not see its children's records)."""
    import aiokafka.admin
    import aiokafka.consumer.group_coordinator  # noqa: F401  (their loggers exist once imported)

    for name in list(logging.root.manager.loggerDict):
        if name == "aiokafka" or name.startswith("aiokafka."):
            logger = logging.getLogger(name)
            if _THROTTLE not in logger.filters:
                logger.addFilter(_THROTTLE)
