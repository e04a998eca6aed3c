"""StreamBridge checks a dynamic destination name before anything is created: names come
from code, perhaps from a request."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from binder_core.bridge import StreamBridge, check_destination_name
from binder_core.errors import BinderException
from binder_core.limits import DESTINATION_NAME_BYTES
from binder_core.plugins import load_plugins
from binder_core.testing import TestApp


def noop(value: Any) -> None:
    return None


def destinations(app: TestApp) -> set[str]:
    assert app.app is not None
    return set(app.app.binders["memory"].broker.destinations)  # type: ignore[attr-defined]


async def test_a_one_megabyte_name_is_refused_before_anything_is_created() -> None:
    async with TestApp({"noop": noop}) as app:
        before = destinations(app)
        with pytest.raises(BinderException) as caught:
            await StreamBridge.current().send("d" * 1_000_000, {"a": 1})
        assert f"at most {DESTINATION_NAME_BYTES}" in str(caught.value)
        assert len(str(caught.value)) < 300  # the error quotes the start of the name only
        assert destinations(app) == before


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "non-empty"),
        ("orders\nFORGED log line", "control characters"),
        ("tab\there", "control characters"),
        ("é" * (DESTINATION_NAME_BYTES // 2 + 1), "bytes long"),
        ("x" * (DESTINATION_NAME_BYTES + 1), "bytes long"),
    ],
)
def test_names_the_core_refuses(name: str, problem: str) -> None:
    found = check_destination_name(name)
    assert found is not None and problem in found


def test_names_the_core_accepts() -> None:
    for name in ("orders", "x" * DESTINATION_NAME_BYTES, "prix-€", "a.b_c-d/e"):
        assert check_destination_name(name) is None


async def test_the_binder_types_naming_rules_apply_to_dynamic_names() -> None:
    seen: list[tuple[str, str]] = []

    def no_dots(kind: str, name: str) -> str | None:
        seen.append((kind, name))
        return "dots are not allowed here" if "." in name else None

    registry = load_plugins()
    memory = registry.binder_types["memory"]
    registry.binder_types["memory"] = dataclasses.replace(memory, check_name=no_dots)
    async with TestApp({"noop": noop}, registry=registry) as app:
        await StreamBridge.current().send("audit-events", {"a": 1})
        with pytest.raises(BinderException, match="dots are not allowed here") as caught:
            await StreamBridge.current().send("audit.events", {"a": 1})
        assert "'audit.events' on binder 'memory'" in str(caught.value)
        assert "audit.events" not in destinations(app)
        # (the app's own binding, noop-in-0, was checked when the app was planned)
        sends = [entry for entry in seen if entry[1] != "noop-in-0"]
        assert sends == [("destination", "audit-events"), ("destination", "audit.events")]
