"""How a Kafka binder's clients connect: security protocol, TLS context and SASL login.

The settings come from the typed ``security-protocol``, ``ssl``, ``sasl`` and ``jaas``
sections, or from Kafka's own names in the binder's ``configuration`` map (what a Spring
Cloud Stream application already has: ``security.protocol``, ``sasl.mechanism``,
``sasl.jaas.config``, ``ssl.truststore.location`` of a PEM file). Two different values for
one setting are a configuration error, so a forgotten line never silently wins. Every client
of a binder shares the result, one ``ssl.SSLContext`` included.

When no broker can be reached, ``diagnose`` opens one connection itself to tell a setting
that can never work (an untrusted certificate, a refused login, TLS against a plain
listener) from a broker that is merely down, so start-up stops at once with the setting to
check instead of retrying for the whole ``health-timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from binder_core.errors import Problem
from binders.kafka.settings import KafkaEnvironment

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: aiokafka arguments (after renaming Kafka's names) that this module owns.
SECURITY_KEYS = frozenset(
    {
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_jaas_config",
        "ssl_cafile",
        "ssl_capath",
        "ssl_cadata",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_truststore_type",
        "ssl_keystore_type",
    }
)

#: Kafka's names for what aiokafka calls differently.
RENAMES = {
    "ssl_endpoint_identification_algorithm": "ssl_check_hostname",
    "ssl_truststore_location": "ssl_cafile",
    "ssl_keystore_location": "ssl_certfile",
    "ssl_key_password": "ssl_password",
}

_LOGIN_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": "PLAIN",
    "org.apache.kafka.common.security.scram.ScramLoginModule": "SCRAM",
}
_JAAS = re.compile(r"^\s*(?P<module>[\w.$]+)\s+(?P<flag>\w+)(?P<options>.*?);?\s*$", re.DOTALL)
_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|(\S+?))(?=\s|;|$)')


@dataclass(frozen=True)
class Security:
    """The resolved connection security of one binder."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def kwargs(self) -> dict[str, Any]:
        """The aiokafka arguments for every kind of client."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            out["ssl_context"] = self.ssl_context
        if self.sasl:
            out["sasl_mechanism"] = self.mechanism
            out["sasl_plain_username"] = self.username
            out["sasl_plain_password"] = self.password
        return out


class _Sources:
    """Where each setting came from, to report a value given twice and to name the key to
    fix."""

    def __init__(self, problems: list[Problem], source: str) -> None:
        self.problems = problems
        self.source = source
        self.values: dict[str, list[tuple[str, Any]]] = {}

    def add(self, name: str, path: str, value: Any) -> None:
        if value is not None:
            self.values.setdefault(name, []).append((path, value))

    def path(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[0][0] if found else None

    def get(self, name: str) -> Any:
        found = self.values.get(name)
        if not found:
            return None
        if len({str(value) for _, value in found}) > 1:
            paths = " and ".join(path for path, _ in found)
            self.problem(found[-1][0], f"set differently in {paths}: keep one")
        return found[0][1]

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, self.source))


def resolve(
    binder: str,
    env: KafkaEnvironment,
    mapped: Mapping[str, tuple[str, Any]],
    problems: list[Problem],
) -> Security:
    """The binder's connection security from its typed settings and the security entries
    of its ``configuration`` map (``mapped``: aiokafka name -> (key path, value)). Adds a
    problem for each setting that cannot work; reads password and certificate files."""
    s = _Sources(problems, f"kafka binder '{binder}'")
    for name, (path, value) in mapped.items():
        if name == "sasl_jaas_config":
            _add_jaas_text(s, path, value)
        elif name in ("ssl_truststore_type", "ssl_keystore_type"):
            if str(value).strip().upper() != "PEM":
                s.problem(
                    path,
                    f"only PEM files can be read here, not {value}: export the store to PEM "
                    "(keytool -exportcert -rfc, or openssl pkcs12 -nodes)",
                )
        else:
            s.add(name, path, value)
    s.add("security_protocol", "security-protocol", env.security_protocol)
    s.add("sasl_mechanism", "sasl.mechanism", env.sasl.mechanism)
    s.add("sasl_plain_username", "sasl.username", env.sasl.username)
    if env.sasl.password is not None:
        s.add("sasl_plain_password", "sasl.password", env.sasl.password.get_secret_value())
    if env.sasl.password_file is not None:
        secret = read_secret(env.sasl.password_file, "sasl.password-file", s)
        s.add("sasl_plain_password", "sasl.password-file", secret)
    if env.jaas is not None:
        _add_jaas(s, "jaas", env.jaas.login_module, env.jaas.options)
    ssl_settings = env.ssl
    s.add("ssl_cafile", "ssl.ca-file", ssl_settings.ca_file)
    s.add("ssl_certfile", "ssl.cert-file", ssl_settings.cert_file)
    s.add("ssl_keyfile", "ssl.key-file", ssl_settings.key_file)
    if ssl_settings.key_password is not None:
        s.add("ssl_password", "ssl.key-password", ssl_settings.key_password.get_secret_value())
    if "check_hostname" in ssl_settings.model_fields_set:
        s.add("ssl_check_hostname", "ssl.check-hostname", ssl_settings.check_hostname)

    protocol = str(s.get("security_protocol") or "PLAINTEXT").strip().upper()
    if protocol not in PROTOCOLS:
        s.problem(
            s.path("security_protocol") or "security-protocol",
            f"unknown security protocol '{protocol}' (valid: {', '.join(PROTOCOLS)})",
        )
        return Security()
    security = Security(protocol)
    names = ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
    sasl_values = [s.get(n) for n in names]
    if protocol.startswith("SASL_"):
        mechanism = str(sasl_values[0] or "").strip().upper()
        username, password = (None if v is None else str(v) for v in sasl_values[1:])
        if mechanism not in MECHANISMS:
            where = s.path("sasl_mechanism") or "sasl.mechanism"
            got = f"'{mechanism}' is not supported" if mechanism else "needed"
            s.problem(where, f"{got} with {protocol} (valid: {', '.join(MECHANISMS)})")
        if not username:
            s.problem("sasl.username", f"needed with {protocol}")
        if password is None and env.sasl.password_file is None:  # (a bad file is reported)
            s.problem("sasl.password", f"needed with {protocol} (or sasl.password-file)")
        security = Security(protocol, mechanism, username, password)
    elif any(v is not None for v in sasl_values):
        s.problem(
            next((p for p in map(s.path, names) if p), "sasl"),
            f"a SASL login is set but security-protocol is {protocol}, which does not log "
            "in: set security-protocol: SASL_SSL (or SASL_PLAINTEXT)",
        )
    tls_files = [n for n in ("ssl_cafile", "ssl_capath", "ssl_cadata", "ssl_certfile") if s.path(n)]
    if security.tls:
        security = replace(security, ssl_context=_ssl_context(s))
    elif tls_files:
        s.problem(
            s.path(tls_files[0]) or "ssl",
            f"TLS files are set but security-protocol is {protocol}, which does not use "
            "TLS: set security-protocol: SSL (or SASL_SSL)",
        )
    return security


def read_secret(path: str, key: str, s: _Sources) -> str | None:
    """A password from a file (a mounted secret): its text without the trailing newline."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        s.problem(key, f"cannot read '{path}': {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:
        s.problem(key, f"'{path}' is not UTF-8 text")
        return None
    secret = text.rstrip("\r\n")
    if not secret:
        s.problem(key, f"'{path}' is empty")
        return None
    return secret


def _add_jaas(s: _Sources, path: str, module: str, options: Mapping[str, Any]) -> None:
    kind = _LOGIN_MODULES.get(module.strip())
    if kind is None:
        s.problem(
            f"{path}.login-module" if path == "jaas" else path,
            f"login module '{module}' is not supported: use PlainLoginModule or "
            "ScramLoginModule (org.apache.kafka.common.security.plain/scram)",
        )
        return
    if kind == "PLAIN":
        s.add("sasl_mechanism", path, "PLAIN")
    for option, name in (("username", "sasl_plain_username"), ("password", "sasl_plain_password")):
        value = options.get(option)
        if value is not None:
            secret = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            s.add(name, f"{path}.options.{option}" if path == "jaas" else path, str(secret))


def _add_jaas_text(s: _Sources, path: str, text: Any) -> None:
    """``sasl.jaas.config`` as Spring apps write it: ``<LoginModule> required
    username="..." password="...";`` (read as data, never evaluated)."""
    match = _JAAS.match(str(text))
    if match is None or match["flag"] != "required":
        s.problem(path, "expected '<LoginModule> required' and its username and password options")
        return
    options = {
        m.group(1): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
        for m in _JAAS_OPTION.finditer(match["options"])
    }
    _add_jaas(s, path, match["module"], options)


def _ssl_context(s: _Sources) -> ssl.SSLContext | None:
    """The TLS context, each file loaded separately so a failure names its key."""
    from aiokafka.helpers import create_ssl_context

    ca_names = ("ssl_cafile", "ssl_capath", "ssl_cadata")
    cafile, capath, cadata = map(s.get, ca_names)
    certfile, keyfile, password = map(s.get, ("ssl_certfile", "ssl_keyfile", "ssl_password"))
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile, capath=capath, cadata=cadata)
    except (OSError, ssl.SSLError, ValueError) as exc:
        key = next((p for p in map(s.path, ca_names) if p), "ssl.ca-file")
        s.problem(key, f"cannot load the CA certificates from '{cafile or capath}': {_why(exc)}")
        return None
    check = s.get("ssl_check_hostname")
    if check is not None:
        context.check_hostname = str(check).strip().lower() not in ("false", "", "none")
    if keyfile is not None and certfile is None:
        s.problem(s.path("ssl_keyfile") or "ssl.key-file", "needs ssl.cert-file, its certificate")
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile, password)
        except (OSError, ssl.SSLError, ValueError) as exc:
            key = s.path("ssl_certfile") or "ssl.cert-file"
            hint = " (check key-file and key-password)" if isinstance(exc, ssl.SSLError) else ""
            s.problem(
                key,
                f"cannot load the client certificate '{certfile}' and its key: {_why(exc)}{hint}",
            )
            return None
    return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# -- diagnosing a failed start-up ----------------------------------------------------------


async def diagnose(binder: str, servers: list[str], security: Security) -> str | None:
    """Why the brokers at ``servers`` can never accept this binder's connections, or None
    when nothing says so (a broker that is down or still starting: worth retrying)."""
    for server in servers[:3]:
        host, _, port_text = server.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            continue
        verdict = await _diagnose_one(host.strip("[]"), port, security)
        if verdict is not None:
            return f"kafka binder '{binder}': {server}: {verdict}"
    return None


async def _diagnose_one(host: str, port: int, security: Security) -> str | None:
    from aiokafka import errors
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=5000, **security.kwargs()), 10
        )
    except ssl.SSLCertVerificationError as exc:
        return _untrusted(exc)
    except errors.SaslAuthenticationFailed:
        return (
            f"the broker refused the {security.mechanism} login of user '{security.username}': "
            "check sasl.username and sasl.password (or sasl.password-file)"
        )
    except errors.UnsupportedSaslMechanismError:
        return (
            f"this listener does not offer SASL mechanism {security.mechanism}: "
            "check sasl.mechanism"
        )
    except errors.IllegalSaslStateError:
        return (
            f"this listener takes no SASL login: check security-protocol ({security.protocol}; "
            "SSL or PLAINTEXT?) and the port"
        )
    except ssl.SSLError as exc:
        if await _speaks_kafka(host, port):
            return _plain_listener(security)
        return f"the TLS handshake failed ({_why(exc)}): check the ssl settings"
    except (OSError, TimeoutError, errors.KafkaError) as exc:
        if security.tls:
            alert = exc.__cause__
            if isinstance(alert, ssl.SSLError) and "ALERT" in str(alert.reason or ""):
                # TLS 1.3 reports a refused client certificate only after the handshake
                return (
                    f"the broker ended the TLS session ({str(alert.reason).lower()}): check "
                    "ssl.cert-file and ssl.key-file (a client certificate the broker trusts)"
                )
            if isinstance(exc, ConnectionResetError) and await _speaks_kafka(host, port):
                return _plain_listener(security)
            return None
        if isinstance(exc, errors.KafkaConnectionError) and await _speaks_tls(host, port):
            return (
                f"this is a TLS listener but security-protocol is {security.protocol}: set "
                "security-protocol: SSL (or SASL_SSL) and ssl.ca-file"
            )
        return None
    try:
        await asyncio.wait_for(conn.send(MetadataRequest([])), 10)
    except errors.KafkaConnectionError:
        if not security.sasl:
            return (
                f"the broker closed the connection at the first request: this listener "
                f"probably expects a SASL login (security-protocol is {security.protocol}; "
                "SASL_SSL?)"
            )
        return None
    except (OSError, TimeoutError, errors.KafkaError):
        return None
    finally:
        conn.close()
    return None


def _untrusted(exc: ssl.SSLCertVerificationError) -> str:
    reason = str(exc.verify_message or exc.reason or exc)
    if "mismatch" in reason.lower():
        return (
            f"the broker's TLS certificate does not name this host ({reason}): use a host "
            "name the certificate holds in bootstrap-servers, or set ssl.check-hostname: false"
        )
    return (
        f"the broker's TLS certificate is not trusted ({reason}): check ssl.ca-file, which "
        "must hold the CA that signed the brokers' certificates"
    )


def _plain_listener(security: Security) -> str:
    return (
        f"this listener does not speak TLS but security-protocol is {security.protocol}: "
        "check the port (the broker's SSL listener) or set security-protocol: PLAINTEXT"
    )


async def _speaks_tls(host: str, port: int) -> bool:
    """Whether a TLS handshake succeeds there (certificate not checked: only whether the
    listener speaks TLS at all)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, ssl_handshake_timeout=5), 10
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)
    return True


async def _speaks_kafka(host: str, port: int) -> bool:
    """Whether a plain (not TLS) Kafka connection works there: an ApiVersions round trip."""
    from aiokafka import errors
    from aiokafka.conn import create_conn

    try:
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=5000), 10)
    except (OSError, TimeoutError, errors.KafkaError):
        return False
    conn.close()
    return True
