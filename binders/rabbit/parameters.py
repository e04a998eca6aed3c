"""pika connection parameters from the binder's ``environment``, and where they point (for
logs and errors, without the password)."""

from __future__ import annotations

import contextlib
import ssl

import pika

from binders.rabbit.settings import RabbitEnvironment


def parameters(
    env: RabbitEnvironment, binder_name: str, role: str
) -> list[pika.ConnectionParameters]:
    """One set of pika parameters per address, in the order they are tried. Builds the TLS
    context, which reads files: call it off the event loop."""
    name = env.connection_name or f"binder:{binder_name}"
    client = {"connection_name": f"{name}:{role}", "product": "binder (Python)"}
    timeout = env.connection_timeout
    if env.uri is not None:
        base = pika.URLParameters(env.uri.get_secret_value())
        addresses = [(base.host, base.port)]
        vhost, credentials, ssl_options = base.virtual_host, base.credentials, base.ssl_options
        heartbeat = env.heartbeat if base.heartbeat is None else base.heartbeat
    else:
        tls = env.ssl.enabled
        default_port = env.port or (5671 if tls else 5672)
        addresses = [_host_port(a, default_port) for a in env.addresses] or [
            (env.host, default_port)
        ]
        vhost = env.virtual_host
        credentials = pika.PlainCredentials(env.username, env.password.get_secret_value())
        ssl_options = None
        heartbeat = env.heartbeat
        if tls:
            context = _ssl_context(env)
            ssl_options = pika.SSLOptions(context, addresses[0][0])
    out = []
    for host, port in addresses:
        options = ssl_options
        if options is not None and options.server_hostname != host:
            options = pika.SSLOptions(options.context, host)
        out.append(
            pika.ConnectionParameters(
                host=host,
                port=port,
                virtual_host=vhost,
                credentials=credentials,
                heartbeat=heartbeat,
                ssl_options=options,
                connection_attempts=1,
                socket_timeout=timeout,
                stack_timeout=timeout * 1.5,
                client_properties=client,
            )
        )
    return out


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    address = address.strip().split("://")[-1].split("@")[-1].split("/")[0]
    if address.startswith("["):  # [::1]:5672
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = address.rpartition(":")
    return (host, int(port)) if sep else (address, default_port)


def _ssl_context(env: RabbitEnvironment) -> ssl.SSLContext:
    opts = env.ssl
    context = ssl.create_default_context(cafile=opts.ca_file)
    if not opts.validate_server_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif not opts.verify_hostname:
        context.check_hostname = False
    if opts.cert_file:
        password = opts.key_password.get_secret_value() if opts.key_password else None
        context.load_cert_chain(opts.cert_file, opts.key_file, password)
    return context


def describe(env: RabbitEnvironment) -> str:
    """Where the binder connects, for logs and errors: never the password."""
    if env.uri is not None:
        with contextlib.suppress(Exception):
            p = pika.URLParameters(env.uri.get_secret_value())
            return f"{p.host}:{p.port}{p.virtual_host if p.virtual_host != '/' else ''}"
        return "(uri)"
    port = env.port or (5671 if env.ssl.enabled else 5672)
    hosts = ",".join(env.addresses) or f"{env.host}:{port}"
    vhost = "" if env.virtual_host == "/" else f" vhost {env.virtual_host}"
    return f"{hosts}{vhost} as {env.username}"
