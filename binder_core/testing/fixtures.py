"""pytest fixtures for testing apps, registered as a pytest plugin (entry point
``pytest11``) so an installed binder gives them to every project's tests.

The fixture is declared with pytest-asyncio's own decorator, so it works whatever the
project's ``asyncio_mode`` is (``strict``, pytest-asyncio's default, needs no setting; an
async test still carries ``@pytest.mark.asyncio`` there, as pytest-asyncio asks). Without
pytest-asyncio installed the plugin still loads, so it never breaks a project's pytest.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from binder_core.testing.harness import TestApp

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - pytest-asyncio is a dependency of binder[testing]
    _async_fixture = pytest.fixture  # type: ignore[assignment]

AppFactory = Callable[..., Awaitable[TestApp]]


@_async_fixture
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
