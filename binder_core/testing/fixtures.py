"""pytest fixtures for testing apps, registered as a pytest plugin (entry point
``pytest11``) so an installed binder gives them to every project's tests."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from binder_core.testing.harness import TestApp

AppFactory = Callable[..., Awaitable[TestApp]]


@pytest.fixture
async def binder_app() -> AsyncIterator[AppFactory]:
    """Start apps on the memory binder; every app started is stopped after the test.

    ``app = await binder_app(my_module, properties={...})`` then ``await app.send(...)``
    and ``await app.receive(...)``.
    """
    started: list[TestApp] = []

    async def start(
        module: types.ModuleType | Mapping[str, Callable[..., Any]], **options: Any
    ) -> TestApp:
        app = await TestApp(module, **options).start()
        started.append(app)
        return app

    yield start
    for app in reversed(started):
        await app.stop()
