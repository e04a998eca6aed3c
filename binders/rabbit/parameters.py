"""pika connection parameters from the binder's ``environment``, where they point (for logs
and errors, without the password), and what a failed TLS connection means for the user."""

from __future__ import annotations

import contextlib
import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika
from pika import exceptions as pika_exc

from binder_core.errors import ConfigError, Problem
from binders.rabbit.settings import RabbitEnvironment

_ALERT = re.compile(r"\[SSL: (\w*ALERT\w*)\]")


def parameters(
    env: RabbitEnvironment, binder_name: str, role: str
) -> list[pika.ConnectionParameters]:
    """One set of pika parameters per address, in the order they are tried. Reads the
    password file and builds the TLS context, which read files: call it off the event loop.
    Raises ``ConfigError`` for a file that cannot be read."""
    name = env.connection_name or f"binder:{binder_name}"
    client = {"connection_name": f"{name}:{role}", "product": "binder (Python)"}
    timeout = env.connection_timeout
    source = f"rabbit binder '{binder_name}'"
    password = _read_secret(env.password_file, source) if env.password_file else None
    tls = env.tls
    context = _ssl_context(env, source) if tls else None
    if env.uri is not None:
        base = pika.URLParameters(_with_password_slot(env.uri.get_secret_value()))
        addresses = [(base.host, base.port)]
        vhost, credentials = base.virtual_host, base.credentials
        if password is not None:
            credentials = pika.PlainCredentials(base.credentials.username, password)
        heartbeat = env.heartbeat if base.heartbeat is None else base.heartbeat
    else:
        default_port = env.port or (5671 if tls else 5672)
        addresses = [_host_port(a, default_port) for a in env.addresses] or [
            (env.host, default_port)
        ]
        vhost = env.virtual_host
        secret = password if password is not None else env.password.get_secret_value()
        credentials = pika.PlainCredentials(env.username, secret)
        heartbeat = env.heartbeat
    return [
        pika.ConnectionParameters(
            host=host,
            port=port,
            virtual_host=vhost,
            credentials=credentials,
            heartbeat=heartbeat,
            # each address is checked against its own host name
            ssl_options=pika.SSLOptions(context, host) if context is not None else None,
            connection_attempts=1,
            socket_timeout=timeout,
            stack_timeout=timeout * 1.5,
            client_properties=client,
        )
        for host, port in addresses
    ]


def _with_password_slot(uri: str) -> str:
    """``amqps://user@host`` (the password in password-file) as ``amqps://user:@host``:
    pika cannot parse a user without a password."""
    parts = urlsplit(uri)
    if parts.username is None or parts.password is not None:
        return uri
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:@{host}"))


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    address = address.strip().split("://")[-1].split("@")[-1].split("/")[0]
    if address.startswith("["):  # [::1]:5672
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = address.rpartition(":")
    return (host, int(port)) if sep else (address, default_port)


def _read_secret(path: str, source: str) -> str:
    """The password from a file (a mounted secret), without its trailing newline."""
    try:
        secret = Path(path).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            [Problem("password-file", f"cannot read '{path}': {exc.strerror or exc}", source)]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem("password-file", f"'{path}' is not UTF-8", source)]) from None
    if not secret:
        raise ConfigError([Problem("password-file", f"'{path}' is empty", source)])
    return secret


def _ssl_context(env: RabbitEnvironment, source: str) -> ssl.SSLContext:
    """The TLS context, each file loaded on its own so that a failure names its key."""
    opts = env.ssl
    try:
        context = ssl.create_default_context(cafile=opts.ca_file)
    except (OSError, ssl.SSLError) as exc:
        message = f"cannot load the CA certificates from '{opts.ca_file}': {_file_error(exc)}"
        raise ConfigError([Problem("ssl.ca-file", message, source)]) from None
    if not opts.validate_server_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif not opts.verify_hostname:
        context.check_hostname = False
    if opts.key_file and not opts.cert_file:
        raise ConfigError([Problem("ssl.key-file", "needs ssl.cert-file, its certificate", source)])
    if opts.cert_file:
        password = opts.key_password.get_secret_value() if opts.key_password else None
        try:
            context.load_cert_chain(opts.cert_file, opts.key_file, password)
        except (OSError, ssl.SSLError) as exc:
            hint = " (check key-file and key-password)" if isinstance(exc, ssl.SSLError) else ""
            message = (
                f"cannot load the client certificate '{opts.cert_file}' and its key: "
                f"{_file_error(exc)}{hint}"
            )
            raise ConfigError([Problem("ssl.cert-file", message, source)]) from None
    return context


def _file_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def tls_failure(exc: BaseException) -> tuple[str, bool] | None:
    """What a failed connection attempt means when TLS is involved, for the user, and
    whether trying again could ever help (False: it fails the same way every time).
    None when ``exc`` has nothing to do with TLS."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = str(exc.verify_message or exc.reason or exc)
        if "mismatch" in reason.lower():
            return (
                f"the broker's TLS certificate does not name this host ({reason}): connect by "
                "a name the certificate holds, or set ssl.verify-hostname: false",
                True,
            )
        return (
            f"the broker's TLS certificate is not trusted ({reason}): check ssl.ca-file, "
            "which must hold the CA that signed the broker's certificate",
            True,
        )
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            return (
                "this address does not speak TLS (a plain AMQP port?): use the broker's amqps "
                "port (usually 5671), or connect without TLS",
                True,
            )
        if "CERTIFICATE" in reason.upper():
            return (
                f"the broker refused the TLS client certificate ({reason}): check "
                "ssl.cert-file and ssl.key-file",
                True,
            )
        return f"the TLS handshake failed ({reason}): check the ssl settings", True
    if isinstance(exc, pika_exc.IncompatibleProtocolError):
        alert = _ALERT.search(str(exc))
        if alert is not None:  # TLS 1.3 reports a refused client certificate only here
            return (
                f"the broker ended the TLS session ({alert[1].lower()}): check ssl.cert-file "
                "and ssl.key-file (a client certificate the broker's CA signed)",
                True,
            )
        return (
            "the broker dropped the connection at the AMQP greeting: if this is a TLS port "
            "(usually 5671), use an amqps:// uri or set ssl.enabled: true",
            False,
        )
    return None


def describe(env: RabbitEnvironment) -> str:
    """Where the binder connects, for logs and errors: never the password."""
    tls = " over TLS" if env.tls else ""
    if env.uri is not None:
        with contextlib.suppress(Exception):
            p = pika.URLParameters(env.uri.get_secret_value())
            where = f"{p.host}:{p.port}{p.virtual_host if p.virtual_host != '/' else ''}"
            return f"{where} as {p.credentials.username}{tls}"
        return f"(uri){tls}"
    port = env.port or (5671 if env.tls else 5672)
    hosts = ",".join(_host_port_text(a, port) for a in env.addresses) or f"{env.host}:{port}"
    vhost = "" if env.virtual_host == "/" else f" vhost {env.virtual_host}"
    return f"{hosts}{vhost} as {env.username}{tls}"


def _host_port_text(address: str, default_port: int) -> str:
    host, port = _host_port(address, default_port)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
