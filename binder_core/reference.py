"""The configuration reference, rendered from the settings models themselves.

``python -m binder_core.reference --write`` writes the guide's reference pages under
``docs/reference/``: ``configuration.md`` for the core's tree, and one page per installed
binder type (``kafka.md``, ``rabbit.md``, ... and ``redis.md`` when the Redis plugin is
installed). A page is only ever written from a model that is installed: the page of a
plugin that is not installed is left as it is, never deleted. A test checks that every page
that can be generated here holds exactly this text, so the reference cannot drift from the
code. Without ``--write`` the pages are printed.
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

from binder_core.plugins import load_plugins
from binder_core.properties import (
    BinderInstanceProperties,
    BindingProperties,
    FunctionProperties,
    PollerProperties,
    StreamProperties,
    kebab,
)
from binder_core.spi import BinderType

#: Where ``--write`` puts the pages when given no directory.
DEFAULT_DIRECTORY = Path("docs/reference")

#: The page of the core's own keys.
CORE_PAGE = "configuration.md"

_GENERATED = (
    "<!-- Generated from the settings models by `python -m binder_core.reference --write`; "
    "do not edit (a test fails when this page is stale). -->"
)

Row = tuple[str, str, str]  # key, default, meaning


def _default(info: Any) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    if value is None or isinstance(value, BaseModel):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable_python(value, fallback=str))


def _model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is dict:
        return None
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _rows(
    prefix: str,
    model: type[BaseModel],
    skip: set[str],
    elsewhere: dict[type[BaseModel], str],
) -> list[Row]:
    """A model's keys, nested models flattened into dotted keys; a nested model listed in
    ``elsewhere`` is one row pointing at the table that already lists its keys."""
    rows: list[Row] = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{kebab(name)}"
        description = (info.description or "").replace("|", "\\|")
        nested = _model(info.annotation)
        if nested is not None and nested in elsewhere:
            rows.append((f"{key}.*", "", f"{description} The keys of {elsewhere[nested]}."))
        elif nested is not None:
            rows += _rows(f"{key}.", nested, set(), elsewhere)
        else:
            rows.append((key, _default(info), description))
    return rows


def _table(rows: list[Row]) -> str:
    return "\n".join(
        [
            "| key | default | meaning |",
            "|---|---|---|",
            *(f"| `{key}` | {default} | {meaning} |" for key, default, meaning in rows),
        ]
    )


def table(prefix: str, model: type[BaseModel], skip: set[str] | None = None) -> str:
    """One Markdown table of a model's keys, nested models flattened into dotted keys."""
    return _table(_rows(prefix, model, skip or set(), {}))


def render_core() -> str:
    """The page of the core's tree: ``stream.*`` and every binding's common keys."""
    parts = [
        _GENERATED,
        "# Configuration reference",
        "Every key of the core's `stream:` tree, with its default. Each binder type adds "
        "its own keys, on its own page: [memory](memory.md), [Kafka](kafka.md), "
        "[RabbitMQ](rabbit.md) and, from the Redis plugin, [Redis](redis.md). How the "
        "configuration is read (files, profiles, environment variables, `--set`) is in "
        "[Configuration](../configuration.md).",
        "## `stream.*`",
        table(
            "stream.", StreamProperties, {"function", "poller", "binders", "bindings", "default"}
        ),
        "## `stream.function.*`",
        table("stream.function.", FunctionProperties),
        "## `stream.poller.*`",
        table("stream.poller.", PollerProperties),
        "## `stream.binders.<name>.*`",
        table("", BinderInstanceProperties),
        "## `stream.bindings.<binding>.*` (and `stream.default.*` for every binding)",
        table("", BindingProperties),
    ]
    return "\n\n".join(parts) + "\n"


def render_binder(name: str, binder_type: BinderType) -> str:
    """The page of one binder type: its environment, then its binding properties. Keys
    the consumer and producer share (same default, same meaning) are listed once."""
    consumer_title = f"`stream.{name}.bindings.<binding>.consumer.*`"
    producer_title = f"`stream.{name}.bindings.<binding>.producer.*`"
    elsewhere: dict[type[BaseModel], str] = {}
    if binder_type.consumer is not None:
        elsewhere[binder_type.consumer] = consumer_title
    if binder_type.producer is not None:
        elsewhere[binder_type.producer] = producer_title
    consumer = _rows("", binder_type.consumer, set(), {}) if binder_type.consumer else []
    producer = _rows("", binder_type.producer, set(), {}) if binder_type.producer else []
    shared = [row for row in consumer if row in producer]
    parts = [
        _GENERATED,
        f"# Binder type `{name}`",
        f"{binder_type.description}." if binder_type.description else "",
        "Keys common to every binder are in the [configuration reference](configuration.md).",
        f"## `stream.{name}.binder.*` and `stream.binders.<name>.environment.*`",
        "The binder's own settings: type-wide under `stream."
        f"{name}.binder`, per binder instance under `environment`.",
        _table(_rows("", binder_type.environment, set(), elsewhere)),
    ]
    if shared:
        parts += [
            f"## {consumer_title} and {producer_title}",
            "Keys a consumer binding and a producer binding both take.",
            _table(shared),
        ]
    for title, rows in ((consumer_title, consumer), (producer_title, producer)):
        own = [row for row in rows if row not in shared]
        if own:
            intro = "Also the keys above." if shared else ""
            parts += [f"## {title}", *([intro] if intro else []), _table(own)]
    return "\n\n".join(part for part in parts if part) + "\n"


def pages() -> dict[str, str]:
    """Every page that can be generated here: the core's and each installed binder
    type's, by file name."""
    out = {CORE_PAGE: render_core()}
    for name, binder_type in sorted(load_plugins().binder_types.items()):
        out[f"{name}.md"] = render_binder(name, binder_type)
    return out


def write(directory: Path) -> list[str]:
    """Write the pages that can be generated into ``directory``; the names of those that
    changed. Pages of binder types not installed here are left alone."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for file_name, text in pages().items():
        path = directory / file_name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(file_name)
    return changed


def main(argv: list[str]) -> int:
    """``python -m binder_core.reference [--write [DIR]]``."""
    if argv[:1] == ["--write"]:
        directory = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIRECTORY
        if directory.suffix == ".md":
            print(
                f"{directory}: the reference is a directory of pages now, e.g. {DEFAULT_DIRECTORY}",
                file=sys.stderr,
            )
            return 2
        changed = write(directory)
        print(f"{directory}: {', '.join(changed) + ' updated' if changed else 'up to date'}")
        return 0
    for text in pages().values():
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
