"""Fixtures for our own tests: real bundled targets on 127.0.0.1 and small loopback servers.

The harness's own fixtures come from its pytest plugin (harness/plugin.py); pytester is
enabled in pyproject.toml (addopts = -p pytester).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from harness.config import Config
from harness.run import Run, RunOptions
from harness.target import parse_target


def open_run(spec: str) -> Run:
    return Run.open(parse_target(spec), Config(), RunOptions(seed=1))


@pytest.fixture(scope="session")
def reference_run() -> Iterator[Run]:
    """The compliant reference target, spawned once for the session."""
    run = open_run("spawn:reference")
    yield run
    run.close()


@pytest.fixture(scope="session")
def reflection_run() -> Iterator[Run]:
    """The reference target with reflection switched on."""
    run = open_run("spawn:reference+reflection")
    yield run
    run.close()


@pytest.fixture
def tcp_server() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start loopback TCP servers whose per-connection behaviour the test supplies."""
    servers: list[socket.socket] = []
    stop = threading.Event()

    def start(handle: Callable[[socket.socket], None]) -> int:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(0.2)
        servers.append(srv)

        def loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except (TimeoutError, OSError):
                    continue
                with conn, contextlib.suppress(OSError):
                    handle(conn)

        threading.Thread(target=loop, daemon=True).start()
        return int(srv.getsockname()[1])

    yield start
    stop.set()
    for srv in servers:
        srv.close()


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def control_statuses(pytester: pytest.Pytester, *args: str) -> dict[str, str]:
    """Run pytest in process with ``args`` and return {control ID: status}."""
    reprec = pytester.inline_run(*args, "--hipaa-seed=7", "-p", "no:cacheprovider")
    statuses = {}
    for report in reprec.getreports("pytest_runtest_logreport"):
        props = dict(report.user_properties)
        if report.when == "teardown" and "hipaa_status" in props:
            statuses[str(props["hipaa_control"])] = str(props["hipaa_status"])
    return statuses
