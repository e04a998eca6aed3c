"""The Spring Cloud Stream app of the interoperability tests: built with Maven, run as a JVM.

``tests/interop/spring-app`` is a plain Spring Boot app with both Stream binders and a few
function beans (see its ``InteropApplication``). It is built once into a Boot jar, with its
own Maven repository in ``tests/interop/.m2`` (ignored by git), and rebuilt only when a
source is newer than the jar. Each test run starts it as ``java -jar`` with Spring properties
on the command line (which functions, their destinations and groups, which binder), and
stops it at the end: no JVM outlives the fixture that started it.

The app's consumers print one ``RECEIVED {json}`` line per message (its payload and every
header with its Java type); ``SpringApp.received`` reads them back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "spring-app"
JAR = PROJECT / "target" / "spring-app.jar"
MAVEN_REPO = HERE / ".m2"
#: The line Spring Boot logs once the context, and so every binding, is up.
STARTED = "Started InteropApplication"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
_RECEIVED = "RECEIVED "


class SpringUnavailable(Exception):
    """The Spring app cannot be built here (no JDK or Maven, or the build failed)."""


def _sources() -> list[Path]:
    return [PROJECT / "pom.xml", *(p for p in (PROJECT / "src").rglob("*") if p.is_file())]


def jar_is_current() -> bool:
    """Whether the jar exists and is newer than the pom and every source."""
    if not JAR.is_file():
        return False
    built = JAR.stat().st_mtime
    return all(p.stat().st_mtime <= built for p in _sources())


def build_jar(log: Path, say: Callable[[str], None] = print) -> Path:
    """The Boot jar, built first if a source changed since (Maven's output to ``log``).

    The first build downloads Spring Boot, Spring Cloud Stream and both binders into
    ``tests/interop/.m2`` (about 100 MB); later builds need no network."""
    if jar_is_current():
        return JAR
    missing = [tool for tool in ("java", "javac", "mvn") if shutil.which(tool) is None]
    if missing:
        raise SpringUnavailable(
            f"cannot build the Spring app: {', '.join(missing)} not found (install a JDK 17 "
            "and Maven: apt-get install openjdk-17-jdk-headless maven)"
        )
    say(f"building the Spring app of the interoperability tests with Maven ({PROJECT}, log: {log})")
    started = time.monotonic()
    argv = [
        "mvn", "-B", "--no-transfer-progress",
        f"-Dmaven.repo.local={MAVEN_REPO}",
        "-f", str(PROJECT / "pom.xml"),
        "package", "-DskipTests",
    ]  # fmt: skip
    with log.open("w") as out:
        result = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=900
        )
    if result.returncode != 0 or not JAR.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SpringUnavailable(f"Maven could not build the Spring app (log: {log}):\n{tail}")
    say(f"built {JAR} in {time.monotonic() - started:.0f} s")
    return JAR


@dataclass(frozen=True)
class Received:
    """One message a consumer of the Spring app got."""

    consumer: str
    payload: bytes
    #: header name -> (Java class name, value as text; byte arrays as their bytes)
    headers: dict[str, tuple[str, Any]]

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    def header(self, name: str) -> Any:
        """A header's value (``bytes`` for a ``byte[]``, else its ``toString``)."""
        return self.headers[name][1]

    def java_type(self, name: str) -> str:
        return self.headers[name][0]


def _parse(line: str) -> Received:
    data = json.loads(line[len(_RECEIVED) :])
    headers: dict[str, tuple[str, Any]] = {}
    for name, entry in data["headers"].items():
        value: Any = entry["value"]
        if entry["type"] == "[B":
            value = base64.b64decode(value)
        headers[name] = (entry["type"], value)
    return Received(data["consumer"], base64.b64decode(data["payloadBase64"]), headers)


#: The JVMs running now, whose logs a failing test's report shows.
RUNNING: list[SpringApp] = []


class SpringApp:
    """One JVM running the Spring app with ``properties`` (``--key=value`` each)."""

    def __init__(self, jar: Path, properties: Mapping[str, object], log: Path) -> None:
        RUNNING.append(self)
        self.log = log
        self.properties = {k: str(v) for k, v in properties.items()}
        argv = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-jar", str(jar)]
        # A free port for the web server the Stream starters bring along: several JVMs
        # may run at once, and 8080 may belong to something else on the machine.
        argv += [f"--{k}={v}" for k, v in {"server.port": "0", **self.properties}.items()]
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        """The end of the log, or from Spring Boot's failure report (or its first ERROR)
        when there is one: the lines that say why."""
        text = self.output.splitlines()
        for marker in ("APPLICATION FAILED TO START", " ERROR "):
            found = next((i for i, line in enumerate(text) if marker in line), None)
            if found is not None:
                return "\n".join(text[max(found - 2, 0) : found + lines])
        return "\n".join(text[-lines:])

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_started(self, timeout: float = START_TIMEOUT) -> None:
        """Return once Spring Boot logged that it started; fail if the JVM exits first or
        the deadline passes (the log's end in the message)."""
        deadline = time.monotonic() + timeout
        while STARTED not in self.output:
            if not self.running():
                raise AssertionError(
                    f"the Spring app exited with {self.proc.returncode} before it started "
                    f"(log: {self.log}):\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the Spring app did not start within {timeout:.0f} s (log: {self.log}):\n"
                    f"{self.tail()}"
                )
            time.sleep(0.1)

    def received(self, consumer: str | None = None) -> list[Received]:
        """What the app's consumers printed so far (one consumer's only, if named)."""
        got = [_parse(line) for line in self.output.splitlines() if line.startswith(_RECEIVED)]
        return [r for r in got if consumer is None or r.consumer == consumer]

    async def wait_received(
        self, consumer: str, count: int, timeout: float = 60.0, match: str | None = None
    ) -> list[Received]:
        """At least ``count`` messages received by ``consumer`` (whose text contains
        ``match``, when given); fails at the deadline with what did arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = [r for r in self.received(consumer) if match is None or match in r.text]
            if len(got) >= count:
                return got
            if loop.time() > deadline or not self.running():
                raise AssertionError(
                    f"Spring's {consumer} received {len(got)} of {count} messages"
                    f"{f' containing {match!r}' if match else ''} "
                    f"(log: {self.log}):\n{self.tail(30)}"
                )
            await asyncio.sleep(0.1)

    def problems(self, lines: int = 40) -> str:
        """The log's WARN and ERROR lines (the last ``lines`` of them)."""
        found = [line for line in self.output.splitlines() if " WARN " in line or " ERROR " in line]
        return "\n".join(found[-lines:]) or "(no WARN or ERROR lines)"

    def stop(self) -> int:
        """SIGTERM (Spring closes its bindings), SIGKILL if it has not exited in time."""
        if self in RUNNING:
            RUNNING.remove(self)
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode
