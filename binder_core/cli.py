"""The ``binder`` command line.

Exit codes: 0 success; 1 a runtime failure (a binder could not start, a broker refused, a
destination to read does not exist); 2 a usage or configuration error (nothing was
started); 130 stopped by a second signal; 141 the reader of the output went away (``binder
config | head -1``), as for any command killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import math
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from binder_core import app_config, names
from binder_core.config import AppConfig, load_config
from binder_core.errors import BinderException, ConfigError, Problem, did_you_mean
from binder_core.plugins import Registry, load_plugins
from binder_core.secrets import install_log_filter, mask_text

log = logging.getLogger("binder")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 130, 141


class UsageError(BinderException):
    """The command line or the app module is wrong; nothing was started."""


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="DIR", help="configuration directory (default: ./config)"
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME",
        help="activate a profile: reads DIR/application-NAME.yaml (repeatable; "
        "default: $BINDER_PROFILES)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one key, e.g. stream.bindings.uppercase-in-0.destination=words "
        "(repeatable; highest precedence)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("BINDER_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: INFO or $BINDER_LOG_LEVEL)",
    )


def _remote_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--url",
        required=required,
        help="the running app's management endpoint, e.g. http://127.0.0.1:8081",
    )
    parser.add_argument(
        "--token-env",
        default="BINDER_MANAGEMENT_TOKEN",
        metavar="VAR",
        help="environment variable holding the endpoint's token",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON answer as it is")


def _port(text: str) -> int:
    """``--management-port``: 0 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got '{text}'") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def _seconds(text: str) -> float:
    """``--run-for``: a finite number of seconds, not negative."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a finite number of seconds, 0 or more, got '{text}'"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="binder",
        description="Run plain Python functions bound to message brokers by YAML.",
        epilog="exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, "
        "130 forced stop",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run an app",
        description="Run the functions of APP_MODULE "
        "with the bindings its configuration declares, until SIGINT/SIGTERM.",
    )
    run.add_argument("module", metavar="APP_MODULE", help="dotted module name, e.g. apps.market")
    _config_options(run)
    run.add_argument(
        "--run-for",
        type=_seconds,
        metavar="SECONDS",
        help="stop gracefully after SECONDS (demos, smoke tests)",
    )
    run.add_argument(
        "--idle-exit",
        type=_seconds,
        metavar="SECONDS",
        help="stop gracefully after SECONDS without input (scale to zero)",
    )
    run.add_argument(
        "--management-port",
        type=_port,
        metavar="PORT",
        help="serve health, readiness, bindings and metrics on PORT (stream.management.port; "
        "0 picks a free port)",
    )

    cfg = sub.add_parser(
        "config",
        help="print the effective configuration and its sources",
        description="Print every effective key, its value (secrets masked) and where it came "
        "from; a default that differs from Spring's says Spring's. Exit 2 when binder run "
        "would refuse the configuration; with APP_MODULE its functions' bindings are "
        "checked too.",
    )
    cfg.add_argument("module", nargs="?", metavar="APP_MODULE")
    _config_options(cfg)

    bindings = sub.add_parser(
        "bindings",
        help="list bindings",
        description="Table of bindings: name, direction, destination, "
        "group, binder, content type. With APP_MODULE, the bindings its "
        "functions get; without, those configured.",
    )
    bindings.add_argument("module", nargs="?", metavar="APP_MODULE")
    _config_options(bindings)
    _remote_options(bindings, required=False)

    health = sub.add_parser(
        "health",
        help="readiness of a running app",
        description="Ask a running app (its management endpoint) whether every binder "
        "reaches its broker and every binding runs. Exit 0 when ready, 1 when not.",
    )
    _remote_options(health, required=True)
    for verb, what in (
        ("pause", "stop fetching, keep the subscription"),
        ("resume", "fetch again after pause"),
        ("stop", "stop the binding (finish and acknowledge what is in flight)"),
        ("start", "start a stopped binding"),
    ):
        control = sub.add_parser(
            verb, help=f"{what}, in a running app", description=f"{verb.title()} NAME: {what}."
        )
        control.add_argument("name", metavar="NAME", help="the binding, e.g. uppercase-in-0")
        _remote_options(control, required=True)

    state = sub.add_parser(
        "state",
        help="the stores and tables of a running app",
        description="Read the state a running app keeps (its management endpoint): "
        "'state list' names every store and table; 'state get NAME' shows its entries, "
        "'state get NAME KEY' one value (exit 1 when the key has none). NAME is "
        "function.parameter, or the parameter alone when one function has it.",
    )
    state.add_argument("action", choices=["list", "get"])
    state.add_argument("name", nargs="?", metavar="NAME", help="store or table (for get)")
    state.add_argument("key", nargs="?", metavar="KEY", help="one key (for get)")
    state.add_argument(
        "--limit", type=int, default=100, help="entries shown by 'get NAME' (default 100)"
    )
    _remote_options(state, required=True)

    plugins = sub.add_parser(
        "plugins",
        help="list installed binder types and converters",
        description="Installed binder types and message converters, with "
        "the distribution and version that provide them.",
    )
    plugins.add_argument("--log-level", default="WARNING")

    send = sub.add_parser(
        "send",
        help="send one message to a destination",
        description="Send PAYLOAD to DESTINATION through a binder and wait "
        "for the broker's confirmation.",
    )
    send.add_argument("destination")
    send.add_argument(
        "payload",
        help="the payload text; '-' reads standard input (one trailing newline dropped, "
        "unless --content-type application/octet-stream)",
    )
    send.add_argument(
        "--binder", metavar="NAME", help="binder instance or type (default: default-binder)"
    )
    send.add_argument("--header", action="append", default=[], metavar="K=V")
    send.add_argument(
        "--key",
        metavar="KEY",
        help="the message key (Kafka's record key: what tables and compaction go by); an "
        "empty payload with a key removes it from a table",
    )
    send.add_argument(
        "--content-type",
        metavar="TYPE",
        help="contentType header (default: application/json when the payload is one JSON "
        "document, text/plain for other UTF-8 text, application/octet-stream otherwise)",
    )
    send.add_argument(
        "--required-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="provision GROUP's subscription with the destination (a RabbitMQ queue "
        "<destination>.<GROUP>), so the message waits there for that group (repeatable)",
    )
    _config_options(send)

    tail = sub.add_parser(
        "tail",
        help="print messages arriving at a destination",
        description="Subscribe to DESTINATION and print each message.",
    )
    tail.add_argument("destination")
    tail.add_argument("--binder", metavar="NAME")
    tail.add_argument("--group", help="consume as this group (default: anonymous, sees all)")
    tail.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    _config_options(tail)

    contract = sub.add_parser(
        "asyncapi",
        help="write the app's AsyncAPI 3.0 document",
        description="Write an AsyncAPI 3.0 document of APP_MODULE's channels: its bindings, "
        "destinations, binders (servers, no secrets), groups and the functions' payload types.",
    )
    contract.add_argument("module", metavar="APP_MODULE")
    contract.add_argument(
        "--format", choices=("yaml", "json"), default="yaml", help="yaml (default) or json"
    )
    contract.add_argument("--output", "-o", type=Path, metavar="FILE", help="default: stdout")
    contract.add_argument("--title", help="info.title (default: APP_MODULE)")
    contract.add_argument("--version", default="1.0.0", help="info.version (default 1.0.0)")
    _config_options(contract)

    from binder_core.dlq.command import add_parser as add_dlq

    add_dlq(sub, _config_options)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``binder`` console script."""
    args = build_parser().parse_args(argv)
    # Commands that only talk to a running app (health, pause, ...) have no --log-level.
    level = str(getattr(args, "log_level", "WARNING")).upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    if level != "DEBUG":
        # Broker clients narrate every rebalance and connection at INFO; our binders log
        # what a user needs to know about them.
        for noisy in ("aiokafka", "kafka", "pika", "redis"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    install_log_filter()
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so a reader that went away is seen below
    except BrokenPipeError:
        # The reader of our output went away (binder config | head -1): stop writing, and
        # keep the interpreter's last flush from reporting it again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_PIPE
    except ConfigError as exc:
        print(f"binder: {exc.render()}", file=sys.stderr)
        code = EXIT_USAGE
    except UsageError as exc:
        print(f"binder: {mask_text(str(exc))}", file=sys.stderr)
        code = EXIT_USAGE
    except BinderException as exc:
        print(f"binder: {mask_text(str(exc))}", file=sys.stderr)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


def _registry() -> Registry:
    registry = load_plugins()
    for name, error in registry.failures.items():
        log.warning("plugin %s is not available: %s", name, error)
    return registry


def _load(args: argparse.Namespace, registry: Registry) -> AppConfig:
    config = load_config(args.config, args.profile, args.overrides, registry.binder_types)
    app_config.use(config.layered)
    return config


def import_app(name: str) -> ModuleType:
    """Import the app module from the working directory, with a helpful error."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and not name.startswith(exc.name) and exc.name != name:
            raise UsageError(_import_failure(name, exc, "is it installed?")) from None
        known = [p.stem for p in Path(cwd).glob("*.py")] + [
            f"{d.name}.{p.stem}"
            for d in Path(cwd).iterdir()
            if (d / "__init__.py").exists()
            for p in d.glob("*.py")
            if p.stem != "__init__"
        ]
        raise UsageError(
            f"cannot import app module '{name}' from {cwd}" + did_you_mean(name, known)
        ) from None
    except BinderException:
        raise  # a bad app setting read at import: already a message for the user
    except SyntaxError as exc:
        where = f"{_shown_path(exc.filename)}:{exc.lineno}" if exc.filename else name
        code = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        raise UsageError(
            f"cannot import app module '{name}': {where}: {type(exc).__name__}: {exc.msg}"
            f"{code}; fix the module and run again"
        ) from None
    except Exception as exc:
        raise UsageError(_import_failure(name, exc, "")) from None


def _import_failure(name: str, exc: BaseException, hint: str) -> str:
    """One paragraph for an app module that raised while being imported: where (the
    innermost frame outside the import machinery) and what, without the traceback."""
    where = own = ""
    cwd = str(Path.cwd().resolve())
    tb = exc.__traceback__
    while tb is not None:
        file = tb.tb_frame.f_code.co_filename
        if not file.startswith("<"):  # "<frozen importlib._bootstrap>" and the like
            where = f"{_shown_path(file)}:{tb.tb_lineno}: "
            if str(Path(file).resolve()).startswith(cwd) and ".venv" not in file:
                own = where  # the app's own line beats a library's
        tb = tb.tb_next
    where = own or where
    text = str(exc).strip()
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return (
        f"cannot import app module '{name}': {where}{what}"
        + (f" ({hint})" if hint else "")
        + "; nothing was started"
    )


def _shown_path(file: str) -> str:
    """A file path relative to the working directory when it is inside it."""
    try:
        return str(Path(file).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return file


def cmd_run(args: argparse.Namespace) -> int:
    """``binder run``."""
    from binder_core.runtime import App, run_until_stopped

    if args.management_port is not None:
        args.overrides = [*args.overrides, f"stream.management.port={args.management_port}"]
    registry = _registry()
    try:
        config = _load(args, registry)
    except ConfigError as exc:
        raise _with_plan(exc, args.module, registry) from None
    module = import_app(args.module)
    app = App(module, config, registry)
    try:
        asyncio.run(run_until_stopped(app, args.run_for, args.idle_exit))
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    return EXIT_OK


def _with_plan(error: ConfigError, module_name: str, registry: Registry) -> ConfigError:
    """A configuration error with what planning the app finds as well (an unknown
    function, a binding typo), so that one round of fixes is enough."""
    from binder_core.plan import with_plan_problems

    if error.config is None:
        return error
    app_config.use(error.config.layered)
    try:
        module = import_app(module_name)
    except (UsageError, ConfigError):
        return error
    return with_plan_problems(error, module, registry.converters)


def _flatten(value: Any, prefix: tuple[str, ...], out: list[tuple[tuple[str, ...], Any]]) -> None:
    # Paths stay tuples: a key may hold dots itself (configuration: {sasl.jaas.config: ..}).
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, (*prefix, str(k)), out)
    else:
        out.append((prefix, value))


def cmd_config(args: argparse.Namespace) -> int:
    """``binder config``: every effective key with its value and source.

    The source is where the value was really set: a file and line, an environment
    variable, a ``--set`` option, Spring Boot's ``spring.*`` properties or the type-wide
    ``stream.<type>.binder`` section a binder's environment was laid from; a placeholder
    says which one it was. A default that deliberately differs from Spring's says so. Exit
    status 2 for a configuration ``binder run`` would refuse (with APP_MODULE, the
    functions and bindings it would bind are checked too)."""
    import json

    from binder_core.plan import configured_problems
    from binder_core.properties import canonical
    from binder_core.secrets import mask

    registry = _registry()
    if args.module:
        try:
            config = _load(args, registry)
        except ConfigError as exc:
            raise _with_plan(exc, args.module, registry) from None
        from binder_core.plan import make_plan

        make_plan(config, import_app(args.module), registry.converters)
    else:
        try:
            config = _load(args, registry)
        except ConfigError as exc:
            if exc.config is None:
                raise
            seen = [p.path for p in exc.problems]
            more = [
                p
                for p in configured_problems(exc.config, registry.converters)
                if not any(p.path == s or p.path.startswith(f"{s}.") for s in seen)
            ]
            raise ConfigError([*exc.problems, *more], config=exc.config) from None
    found = configured_problems(config, registry.converters)
    if found:
        raise ConfigError(found, config=config)
    layered = config.layered
    raw_stream = next((v for k, v in layered.tree.items() if canonical(k) == "stream"), None)
    configured = set(config.configured_types)
    stream: dict[str, Any] = config.stream.model_dump(by_alias=True, mode="json")
    origins: dict[tuple[str, ...], tuple[str, ...]] = {}
    differences = _differences(config.stream, ("stream",))
    # A binding's effective properties: stream.default under its own.
    for name in list(stream["bindings"]):
        effective = config.binding(name)
        stream["bindings"][name] = effective.model_dump(by_alias=True, mode="json")
        base: tuple[str, ...] = ("stream", "bindings", name)
        for leaf in _leaves(stream["bindings"][name], ()):
            if layered.exact_source((*base, *leaf)) is None:
                origins[_key_of((*base, *leaf))] = ("stream", "default", *leaf)
    chosen, _ = config.default_choice()
    notes: dict[tuple[str, ...], str] = {}
    if config.stream.default_binder is None:
        stream["default-binder"] = chosen
        why = (
            "the one binder declared"
            if chosen
            in {n for n in config.stream.binders if layered.exact_source(["stream", "binders", n])}
            else f"the one broker binder configured (stream.{chosen} or Spring Boot's properties)"
            if chosen in configured
            else "no broker binder configured"
        )
        notes[("stream", "default-binder")] = f"default: {why}"
    for name in list(stream["binders"]):
        # Every installed type is usable as a binder of its name; list only those in use.
        if layered.exact_source(["stream", "binders", name]) is None and (
            name != config.default_binder
        ):
            del stream["binders"][name]
        elif name in config.environments:
            env = config.environments[name]
            stream["binders"][name]["environment"] = env.model_dump(by_alias=True, mode="json")
            base = ("stream", "binders", str(name), "environment")
            for leaf, origin in config.env_origins.get(name, {}).items():
                origins[_key_of((*base, *leaf))] = origin
            differences.update(_differences(env, base))
    for type_name, section in config.sections.items():
        if type_name not in configured:
            continue
        bindings: dict[str, Any] = {}
        for binding in section.bindings:
            ext = config.extension(type_name, binding)
            if ext is None:
                continue
            bindings[binding] = ext.model_dump(by_alias=True, mode="json")
            differences.update(_differences(ext, ("stream", type_name, "bindings", binding)))
        stream[type_name] = {"bindings": bindings}
    _spell_names(stream, raw_stream, ["bindings", "binders"], list(config.sections))
    tree = {"stream": stream, **{k: v for k, v in layered.tree.items() if k != "stream"}}
    rows: list[tuple[tuple[str, ...], Any]] = []
    _flatten(mask(tree), (), rows)
    out = sys.stdout
    out.write(f"# profiles: {', '.join(layered.profiles) or '(none)'}\n")
    out.write(f"# files: {', '.join(str(f) for f in layered.files) or '(none)'}\n")
    width = max((len(".".join(p)) for p, _ in rows), default=0)
    for path, value in rows:
        shown = value if isinstance(value, str) else json.dumps(value)
        source = _source(layered, origins, path)
        if source is None:
            source = notes.get(path, "default")
            differs = differences.get(path)
            if differs is not None:
                source += f" (Spring: {json.dumps(differs)})"
        out.write(f"{'.'.join(path).ljust(width)} = {shown:<24} # {source}\n")
    return EXIT_OK


def _source(
    layered: Any, origins: dict[tuple[str, ...], tuple[str, ...]], path: tuple[str, ...]
) -> str | None:
    """Where the value at ``path`` was set, or None for a default: a binder's environment
    was laid from other keys (Spring Boot's, ``stream.<type>.binder``), each noted where
    it was written; a placeholder is named with what it resolved."""
    key = _key_of(path)
    written: tuple[str, ...] = path
    for n in range(len(key), 0, -1):
        found = origins.get(key[:n])
        if found is not None:
            written = (*found, *key[n:])
            break
    source = layered.exact_source(written)
    if source is None:
        return None
    placeholder = layered.placeholders.get(_key_of(written))
    return f"{source} ({placeholder})" if placeholder else str(source)


def _leaves(tree: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    if isinstance(tree, dict) and tree:
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*prefix, str(k)))]
    return [prefix]


def _key_of(path: Sequence[str]) -> tuple[str, ...]:
    from binder_core.config_sources import key_of

    return key_of(path)


def _differences(model: Any, prefix: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    """Key paths in ``model`` (and the models inside it) left at a default that differs
    from Spring's on purpose -> Spring's value."""
    from pydantic import BaseModel

    out: dict[tuple[str, ...], Any] = {}
    if not isinstance(model, BaseModel):
        return out
    table = getattr(type(model), "spring_defaults", {}) or {}
    fields_set = model.model_fields_set
    for name, info in type(model).model_fields.items():
        key = info.serialization_alias or name.replace("_", "-")
        value = getattr(model, name, None)
        if key in table and name not in fields_set:
            out[(*prefix, key)] = table[key].value
        if isinstance(value, BaseModel):
            out.update(_differences(value, (*prefix, key)))
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, BaseModel):
                    out.update(_differences(v, (*prefix, key, str(k))))
    return out


def _spell_names(
    stream: dict[str, Any], raw: Any, sections: list[str], binder_types: list[str]
) -> None:
    """Binding and binder names as the configuration wrote them (``price_alerts-in-0``,
    the name Spring gives the binding of function ``price_alerts``), not in the canonical
    form they are matched in (case and ``-``/``_`` ignored), so ``binder config`` and
    ``binder bindings`` print the same name."""
    from binder_core.properties import canonical

    def child(tree: Any, key: str) -> Any:
        if not isinstance(tree, dict):
            return None
        return next((v for k, v in tree.items() if canonical(str(k)) == canonical(key)), None)

    def rename(names: Any, written: Any) -> None:
        if not isinstance(names, dict) or not isinstance(written, dict):
            return
        spelled = {canonical(str(k)): str(k) for k in written}
        renamed = {spelled.get(k, k): v for k, v in names.items()}
        names.clear()
        names.update(renamed)

    for key in sections:
        rename(stream.get(key), child(raw, key))
    for type_name in binder_types:
        section = stream.get(type_name)
        if isinstance(section, dict):
            rename(section.get("bindings"), child(child(raw, type_name), "bindings"))


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def cmd_bindings(args: argparse.Namespace) -> int:
    """``binder bindings``: configured (or, with ``--url``, live in a running app)."""
    from binder_core.plan import make_plan, plan_binding
    from binder_core.properties import canonical

    if args.url:
        return _live_bindings(args)

    registry = _registry()
    config = _load(args, registry)
    if args.module:
        plans = make_plan(config, import_app(args.module), registry.converters).all()
    else:
        raw_stream = next(
            (v for k, v in config.layered.tree.items() if canonical(k) == "stream"), None
        )
        names: dict[str, Any] = dict.fromkeys(config.stream.bindings)
        _spell_names({"bindings": names}, raw_stream, ["bindings"], [])
        plans = [plan_binding(config, n, "-", "", None) for n in names]
    rows = [["NAME", "DIR", "DESTINATION", "GROUP", "BINDER", "CONTENT-TYPE"]]
    for p in plans:
        rows.append(
            [
                p.name,
                p.direction,
                p.destination,
                p.group or "(anonymous)" if p.direction != "out" else "-",
                f"{p.binder} ({p.binder_type})",
                p.content_type,
            ]
        )
    if len(rows) == 1:
        print("no bindings configured (give APP_MODULE to see the bindings of its functions)")
        return EXIT_OK
    _table(rows)
    return EXIT_OK


def _live_bindings(args: argparse.Namespace) -> int:
    from binder_core.remote import call

    _, answer = call(args.url, "/bindings", args.token_env)
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    rows = [["NAME", "DIR", "DESTINATION", "GROUP", "BINDER", "STATE", "RECEIVED", "SENT", "DLQ"]]
    for b in answer:
        rows.append(
            [
                str(b.get("bindingName")),
                "in" if b.get("input") else "out",
                str(b.get("name")),
                str(b.get("group") or "-"),
                str(b.get("binder")),
                str(b.get("state")),
                str(b.get("received", "-")),
                str(b.get("sent", "-")),
                str(b.get("deadLettered", "-")),
            ]
        )
    _table(rows)
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    """``binder health --url``: readiness of a running app."""
    from binder_core.remote import call

    status, answer = call(args.url, "/ready", args.token_env)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"{answer.get('status', '?')} ({args.url})")
        rows = [["", "NAME", "STATUS", "DETAIL"]]
        for name, b in answer.get("binders", {}).items():
            rows.append(["binder", name, b.get("status", "?"), b.get("detail", "")])
        for name, b in answer.get("bindings", {}).items():
            detail = f"{b.get('state')}; consumers: {', '.join(b.get('consumers', []))}"
            rows.append(["binding", name, b.get("status", "?"), detail])
        _table(rows)
    return EXIT_OK if status == 200 else EXIT_FAILURE


def cmd_state(args: argparse.Namespace) -> int:
    """``binder state list|get --url``: the stores and tables of a running app."""
    from binder_core.remote import RemoteError, call

    if args.action == "list":
        _, answer = call(args.url, "/state", args.token_env)
        if args.json:
            print(json.dumps(answer, indent=2))
            return EXIT_OK
        rows = [["NAME", "KIND", "KEYS", "DETAIL"]]
        for entry in answer:
            detail = entry.get("changelog", "")
            restore = entry.get("lastRestore")
            if restore:
                detail += (
                    f" (restored {restore['records']} in {restore['seconds']} s, "
                    f"{restore['recordsPerSecond']}/s)"
                )
            if entry.get("kind") == "store" and not entry.get("durable"):
                detail = "in this process only"
            rows.append([entry["name"], entry["kind"], str(entry["keys"]), detail])
        _table(rows)
        return EXIT_OK
    if not args.name:
        raise RemoteError("binder state get needs NAME (see binder state list)")
    name = urllib.parse.quote(args.name, safe="")
    if args.key is None:
        _, answer = call(args.url, f"/state/{name}?limit={max(0, args.limit)}", args.token_env)
        if args.json:
            print(json.dumps(answer, indent=2))
            return EXIT_OK
        for key, value in answer.get("entries", {}).items():
            print(f"{key}\t{json.dumps(value)}")
        if answer.get("truncated"):
            print(f"... {answer['keys']} keys in all (--limit to see more)", file=sys.stderr)
        return EXIT_OK
    key = urllib.parse.quote(args.key, safe="")
    try:
        _, answer = call(args.url, f"/state/{name}/{key}", args.token_env)
    except RemoteError as exc:
        if "has no value for key" in str(exc):
            print(str(exc).split(": ", 1)[-1], file=sys.stderr)
            return EXIT_FAILURE
        raise
    print(json.dumps(answer, indent=2) if args.json else json.dumps(answer.get("value")))
    return EXIT_OK


def cmd_control(args: argparse.Namespace) -> int:
    """``binder pause|resume|stop|start NAME --url``."""
    from binder_core.remote import call

    state = {"pause": "PAUSED", "resume": "RESUMED", "stop": "STOPPED", "start": "STARTED"}
    _, answer = call(
        args.url,
        f"/bindings/{urllib.parse.quote(args.name, safe='')}",
        args.token_env,
        {"state": state[args.command]},
    )
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"{answer.get('bindingName')}: {answer.get('state')}")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    """``binder plugins``."""
    registry = load_plugins()
    rows = [["BINDER TYPE", "DISTRIBUTION", "VERSION", "DESCRIPTION"]]
    conflicts = registry.binder_types.conflicts
    for name, found in sorted(registry.binder_types.providers.items()):
        for bt, info in sorted(found, key=lambda pair: pair[1].distribution):
            note = bt.description
            if name in conflicts:
                others = " and ".join(i.distribution for i in conflicts[name] if i is not info)
                note = (
                    f"CONFLICT: also provided by {others}; choose with "
                    f"stream.binder-types.{name}: <distribution>"
                )
            rows.append([name, info.distribution, info.version, note])
    _table(rows)
    print()
    rows = [["CONTENT TYPE", "DISTRIBUTION", "VERSION", "DESCRIPTION"]]
    for name, conv in sorted(registry.converters.items()):
        info = registry.origin[f"converter:{name}"]
        rows.append([name, info.distribution, info.version, conv.description])
    _table(rows)
    if registry.failures:
        print()
        for name, error in sorted(registry.failures.items()):
            print(f"failed to load plugin {name}: {error}")
    return EXIT_OK


def _cli_binder(args: argparse.Namespace, registry: Registry, config: AppConfig) -> Any:
    from binder_core.spi import Capability

    name = args.binder or config.default_binder
    if name not in config.stream.binders:
        raise UsageError(f"no binder named '{name}'" + did_you_mean(name, config.stream.binders))
    type_name = config.instance_type(name)
    binder_type = registry.binder_types[type_name]
    group = getattr(args, "group", None)
    asked = [("destination", args.destination)]
    if group is not None:
        asked += [("group", group), ("subscription", f"{args.destination}.{group}")]
    for kind, value in asked:
        problem = names.ask(binder_type, kind, value)
        if problem is not None:
            what = "queue" if kind == "subscription" else kind
            raise UsageError(
                f"{what} {names.shown(value)} is not a valid {type_name} name: {problem}"
            )
    env = config.environments.get(name) or binder_type.environment()
    binder = binder_type.factory(name, env)
    if Capability.CROSS_PROCESS not in binder.capabilities:
        raise UsageError(
            f"binder '{name}' ({type_name}) keeps its destinations inside the process that runs "
            f"the app, so 'binder {args.command}' cannot reach them from here; use a broker "
            "binder, e.g. --binder kafka or --binder rabbit (or --profile kafka)"
        )
    return binder


def _headers(items: Sequence[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError([Problem("--header", f"expected K=V, got '{item}'")])
        headers[key] = value
    return headers


def payload_content_type(payload: bytes) -> str:
    """The ``contentType`` ``binder send`` labels a payload with when not told: JSON only
    when it is one JSON document, so a reader is never told that ``hello`` is JSON."""
    from binder_core.conversion import JSON, OCTET, TEXT, is_json_text

    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return OCTET
    return JSON if is_json_text(text) else TEXT


def _stdin_payload(raw: bytes, content_type: str | None) -> bytes:
    """What ``-`` sends: standard input without the one newline ``echo`` or an editor ends
    it with (as the shell's ``$(...)`` drops it), unless the bytes are declared raw."""
    from binder_core.conversion import OCTET, media_type

    if content_type is not None and media_type(content_type) == OCTET:
        return raw
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    return raw[:-1] if raw.endswith(b"\n") else raw


def cmd_send(args: argparse.Namespace) -> int:
    """``binder send``."""
    from binder_core.errors import DeliveryError
    from binder_core.message import CONTENT_TYPE, Message
    from binder_core.properties import ProducerProperties
    from binder_core.spi import ProducerSpec

    registry = _registry()
    config = _load(args, registry)
    binder = _cli_binder(args, registry, config)
    if args.payload == "-":
        payload = _stdin_payload(sys.stdin.buffer.read(), args.content_type)
    else:
        payload = args.payload.encode()
    content_type = args.content_type or payload_content_type(payload)
    headers: dict[str, Any] = {CONTENT_TYPE: content_type, **_headers(args.header)}
    props = ProducerProperties(required_groups=args.required_group)

    async def send() -> None:
        await binder.start()
        try:
            from binder_core.kit import bind_producer

            producer = await bind_producer(
                binder, ProducerSpec("cli-send", args.destination, props)
            )
            try:
                key = None if args.key is None else args.key.encode("utf-8")
                await producer.send([Message(payload, headers, key)])
            finally:
                await producer.close()
        finally:
            await binder.close()

    try:
        asyncio.run(send())
    except DeliveryError as exc:
        # A broker that routes (RabbitMQ) refuses a message no queue takes: sends are
        # mandatory, so nothing is dropped silently. Say how to give it somewhere to wait.
        if "unroutable" not in str(exc) or args.required_group:
            raise
        raise DeliveryError(
            f"{exc}; nothing consumes '{args.destination}' yet: start its consumer first, or "
            "pass --required-group GROUP so the message waits in that group's queue"
        ) from None
    print(f"sent {len(payload)} bytes ({content_type}) to {args.destination}", file=sys.stderr)
    return EXIT_OK


class MissingDestination(BinderException):
    """A destination to read from does not exist, and reading must not create it."""


async def _require_destination(registry: Registry, binder: Any, destination: str) -> None:
    """Stop ``binder tail`` on a destination the broker does not have, rather than
    provisioning it (which would leave a topic or exchange behind for a typo)."""
    check = registry.hooks.destination_exists(binder=binder, destination=destination)
    if check is None or await check:
        return
    raise MissingDestination(
        f"destination '{destination}' does not exist on binder '{binder.name}'; nothing was "
        "created (check the name and --binder, or start the app that provisions it first)"
    )


def cmd_tail(args: argparse.Namespace) -> int:
    """``binder tail``."""
    from binder_core.message import Message
    from binder_core.properties import ConsumerProperties
    from binder_core.spi import ConsumerSpec, Outcome

    registry = _registry()
    config = _load(args, registry)
    binder = _cli_binder(args, registry, config)

    async def tail() -> None:
        done = asyncio.Event()
        seen = 0

        async def handle(batch: Sequence[Message[bytes]]) -> Sequence[Outcome]:
            nonlocal seen
            for msg in batch:
                if args.count is not None and seen >= args.count:
                    break
                seen += 1
                try:
                    text = msg.payload.decode("utf-8")
                except UnicodeDecodeError:
                    text = msg.payload.hex()
                print(f"{msg.headers} {text}", flush=True)
            if args.count is not None and seen >= args.count:
                done.set()
            return [None] * len(batch)

        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await binder.start()
        try:
            await _require_destination(registry, binder, args.destination)
            spec = ConsumerSpec("cli-tail", args.destination, args.group, ConsumerProperties())
            from binder_core.kit import bind_consumer

            binding = await bind_consumer(binder, spec, handle)
            who = f"group {args.group}" if args.group else "an anonymous subscriber"
            print(
                f"tailing {args.destination} on binder {binder.name} as {who} (Ctrl-C stops)",
                file=sys.stderr,
                flush=True,
            )
            await done.wait()
            await binding.stop()
        finally:
            await binder.close()

    asyncio.run(tail())
    return EXIT_OK


def cmd_asyncapi(args: argparse.Namespace) -> int:
    """``binder asyncapi``: the app's AsyncAPI 3.0 document (``binder_core.asyncapi``)."""
    from binder_core.asyncapi import document, to_yaml
    from binder_core.plan import make_plan

    registry = _registry()
    try:
        config = _load(args, registry)
    except ConfigError as exc:
        raise _with_plan(exc, args.module, registry) from None
    plan = make_plan(config, import_app(args.module), registry.converters)
    doc = document(plan, config, args.title or args.module, args.version)
    text = json.dumps(doc, indent=2) + "\n" if args.format == "json" else to_yaml(doc)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_dlq(args: argparse.Namespace) -> int:
    """``binder dlq``: dead letters listed, shown, replayed, purged (``binder_core.dlq``)."""
    from binder_core.dlq.command import run

    return run(args)


COMMANDS = {
    "run": cmd_run,
    "dlq": cmd_dlq,
    "asyncapi": cmd_asyncapi,
    "config": cmd_config,
    "bindings": cmd_bindings,
    "plugins": cmd_plugins,
    "send": cmd_send,
    "tail": cmd_tail,
    "health": cmd_health,
    "state": cmd_state,
    "pause": cmd_control,
    "resume": cmd_control,
    "stop": cmd_control,
    "start": cmd_control,
}
