"""The configuration reference, rendered from the settings models themselves.

``python -m binder_core.reference`` prints the Markdown tables the README carries; a test
checks that the README holds exactly this text, so the reference cannot drift from the code.
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

START = "<!-- reference:start -->"
END = "<!-- reference:end -->"


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


def _rows(prefix: str, model: type[BaseModel], skip: set[str]) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        nested = _model(info.annotation)
        if nested is not None:
            rows += _rows(f"{prefix}{kebab(name)}.", nested, set())
            continue
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{kebab(name)}` | {_default(info)} | {description} |")
    return rows


def table(prefix: str, model: type[BaseModel], skip: set[str] | None = None) -> str:
    """One Markdown table of a model's keys, nested models flattened into dotted keys."""
    return "\n".join(
        ["| key | default | meaning |", "|---|---|---|", *_rows(prefix, model, skip or set())]
    )


def render() -> str:
    """The whole reference: the core's tree, then each installed binder type's models."""
    parts = [
        "#### `stream.*`",
        table(
            "stream.", StreamProperties, {"function", "poller", "binders", "bindings", "default"}
        ),
        "#### `stream.function.*`",
        table("stream.function.", FunctionProperties),
        "#### `stream.poller.*`",
        table("stream.poller.", PollerProperties),
        "#### `stream.binders.<name>.*`",
        table("", BinderInstanceProperties),
        "#### `stream.bindings.<binding>.*` (and `stream.default.*` for every binding)",
        table("", BindingProperties),
    ]
    registry = load_plugins()
    for name, binder_type in sorted(registry.binder_types.items()):
        parts += [
            f"#### Binder type `{name}`: `stream.{name}.binder.*` and "
            f"`stream.binders.<name>.environment.*`",
            table("", binder_type.environment),
        ]
        if binder_type.consumer is not None:
            parts += [
                f"#### `stream.{name}.bindings.<binding>.consumer.*`",
                table("", binder_type.consumer),
            ]
        if binder_type.producer is not None:
            parts += [
                f"#### `stream.{name}.bindings.<binding>.producer.*`",
                table("", binder_type.producer),
            ]
    return "\n\n".join(parts)


def write(readme: Path) -> bool:
    """Replace the reference block of ``readme``; True when it changed."""
    text = readme.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    updated = f"{head}{START}\n{render()}\n{END}{tail}"
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        target = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
        print(f"{target}: {'updated' if write(target) else 'already up to date'}")
    else:
        print(render())
