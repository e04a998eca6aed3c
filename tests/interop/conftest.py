"""Fixtures of the interoperability tests: the Spring app's jar (built on first use), Spring
JVMs started with properties and always stopped, and the broker each module runs on.

A Spring app that cannot be built (no JDK or Maven here) skips its tests, or with
``CI=true`` fails them; a built app that does not start always fails.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest

from tests.brokers import make_unique_namer, require_broker, skip_or_fail
from tests.interop.spring import RUNNING, SpringApp, SpringUnavailable, build_jar
from tests.interop.wire import Wire, make_wire

StartSpring = Callable[[Mapping[str, object]], SpringApp]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows the WARN and ERROR lines of every Spring JVM running."""
    report = yield
    if report.failed:
        for app in RUNNING:
            report.sections.append((f"Spring app log {app.log}", app.problems()))
    return report


@pytest.fixture(scope="session")
def spring_jar(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Spring app's Boot jar, built with Maven when a source is newer than it (said on
    the terminal, output captured or not: the first build takes a while)."""
    log = tmp_path_factory.getbasetemp() / "spring-app-maven.log"
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if terminal is not None:
            terminal.write_line(f"\n{line}")

    try:
        return build_jar(log, say)
    except SpringUnavailable as exc:
        skip_or_fail(str(exc), "a Spring app that cannot be built fails")
        raise  # not reached: the call above skips or fails


def _starter(jar: Path, folder: Path) -> tuple[StartSpring, list[SpringApp]]:
    started: list[SpringApp] = []

    def start(properties: Mapping[str, object]) -> SpringApp:
        app = SpringApp(jar, properties, folder / f"spring-{len(started)}.log")
        started.append(app)
        app.wait_started()
        return app

    return start, started


@pytest.fixture
def start_spring(spring_jar: Path, tmp_path: Path) -> Iterator[StartSpring]:
    """``start_spring(properties)``: a started Spring JVM, stopped after the test."""
    start, started = _starter(spring_jar, tmp_path)
    try:
        yield start
    finally:
        for app in started:
            app.stop()


@pytest.fixture(scope="module")
def module_spring(
    spring_jar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartSpring]:
    """As ``start_spring``, for a JVM that serves every test of a module."""
    start, started = _starter(spring_jar, tmp_path_factory.mktemp("spring"))
    try:
        yield start
    finally:
        for app in started:
            app.stop()


BROKER_PARAMS = [
    pytest.param("kafka", marks=pytest.mark.kafka, id="kafka"),
    pytest.param("rabbit", marks=pytest.mark.rabbit, id="rabbit"),
]


@pytest.fixture(scope="module", params=BROKER_PARAMS)
def wire(request: pytest.FixtureRequest) -> Wire:
    """The broker of this run of the module (each module runs once per broker)."""
    name: str = request.param
    return make_wire(name, require_broker(request.config, name))


@pytest.fixture(scope="module")
def module_name(request: pytest.FixtureRequest, wire: Wire) -> Callable[[str], str]:
    """Unique broker-safe names for a module's shared JVM (deleted at the session's end)."""
    return make_unique_namer(f"{request.module.__name__}::{wire.name}")
