"""Fixtures for the Spring configuration files: each file is copied as a configuration
directory's ``application.yaml`` and loaded as ``binder run`` loads it, with the
environment a test gives (unique destination names, the brokers' addresses), and an app
is started on it through the core's runtime."""

from __future__ import annotations

import contextlib
import shutil
import types
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from binder_core import app_config
from binder_core.config import AppConfig, load_config
from binder_core.plugins import load_plugins
from binder_core.runtime import App
from tests.kafka.conftest import Kit
from tests.rabbit.conftest import Admin

FILES = Path(__file__).resolve().parent


def config_dir(tmp_path: Path, name: str) -> Path:
    """A configuration directory whose ``application.yaml`` is the Spring file ``name``."""
    directory = tmp_path / Path(name).stem
    directory.mkdir(exist_ok=True)
    shutil.copy(FILES / name, directory / "application.yaml")
    return directory


def load(tmp_path: Path, name: str, env: Mapping[str, str] | None = None) -> AppConfig:
    """The file ``name`` loaded as ``binder run`` loads it, with ``env`` as the
    environment."""
    registry = load_plugins()
    return load_config(config_dir(tmp_path, name), (), (), registry.binder_types, environ=env or {})


def module(**functions: Callable[..., Any]) -> types.ModuleType:
    """An app module holding ``functions``."""
    mod = types.ModuleType("spring_config_app")
    for name, fn in functions.items():
        setattr(mod, name, fn)
    return mod


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, name: str, env: Mapping[str, str], app_module: types.ModuleType
) -> AsyncIterator[App]:
    """An app started on the file ``name``, stopped gracefully after."""
    registry = load_plugins()
    config = load(tmp_path, name, env)
    app_config.use(config.layered)
    app = App(app_module, config, registry)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
        app_config.use(None)


@pytest.fixture
async def kit(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> AsyncIterator[Kit]:
    toolkit = Kit(kafka_bootstrap, unique_name)
    await toolkit.admin.start()
    try:
        yield toolkit
    finally:
        await toolkit.cleanup()


@pytest.fixture
def admin(rabbit_url: str) -> Iterator[Admin]:
    keeper = Admin(rabbit_url)
    yield keeper
    keeper.cleanup()
