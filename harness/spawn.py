"""Starting a bundled target in a child process, and always stopping it.

The child runs ``python -m targets serve NAME+DEFECTS`` in its own process group, prints one
``HIPAA-TARGET-READY {json}`` line when it listens, and exits when its stdin closes, so it
cannot outlive the harness even if the harness is killed. :func:`stop` (also registered
with :mod:`atexit`) terminates the group and removes the work directory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.config import Config, load_config
from harness.errors import HarnessError, TargetError
from harness.target import TargetSpec

READY_PREFIX = "HIPAA-TARGET-READY "
_READY_LINE = re.compile(re.escape(READY_PREFIX) + r"(.*)$")
_LIVE: list[Spawned] = []


@dataclass
class Spawned:
    """A running bundled target."""

    spec: TargetSpec
    process: subprocess.Popen[bytes]
    workdir: Path
    host: str
    port: int
    config_path: Path

    def alive(self) -> bool:
        """True while the child process runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process group, wait, kill if needed, remove the work directory."""
        if self in _LIVE:
            _LIVE.remove(self)
        _terminate(self.process, timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def spawn(spec: TargetSpec, *, timeout: float = 30.0) -> Spawned:
    """Start the bundled target ``spec`` names and wait until it listens.

    Raises:
        TargetError: it exited or did not become ready within ``timeout`` seconds; the
            message carries the last line it wrote to stderr.
    """
    assert spec.bundled is not None
    workdir = Path(tempfile.mkdtemp(prefix="hipaa-target-"))
    name = "+".join((spec.bundled, *spec.defects))
    stderr_path = workdir / "target.stderr"
    cmd = [
        sys.executable,
        "-m",
        "targets",
        "serve",
        name,
        "--workdir",
        str(workdir),
        "--exit-on-stdin-eof",
        "--remove-workdir",
    ]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        ready = _wait_ready(process, timeout)
    except BaseException as exc:
        _terminate(process, 2.0)
        tail = _last_line(stderr_path)
        shutil.rmtree(workdir, ignore_errors=True)
        if isinstance(exc, TargetError):
            raise TargetError(f"{exc}{': ' + tail if tail else ''}") from None
        raise
    host, _, port = ready["address"].rpartition(":")
    spawned = Spawned(spec, process, workdir, host, int(port), Path(ready["config"]))
    _LIVE.append(spawned)
    return spawned


def spawn_configured(
    spec: TargetSpec, user_config: Config, *, timeout: float = 30.0
) -> tuple[Spawned, TargetSpec, Config]:
    """Spawn ``spec``; the target, the spec at its address and its config under the user's.

    Raises:
        TargetError: it did not start (:func:`spawn`).
        ConfigError: its generated config does not load (the target is stopped first).
    """
    spawned = spawn(spec, timeout=timeout)
    try:
        config = load_config(spawned.config_path).overlay(user_config)
    except HarnessError:
        spawned.stop()
        raise
    return spawned, spec.at(spawned.host, spawned.port), config


def await_line(
    process: subprocess.Popen[bytes], pattern: re.Pattern[str], timeout: float
) -> re.Match[str]:
    """The first line ``process`` writes to its stdout that ``pattern`` matches.

    Raises:
        EOFError: the process closed its stdout (exited) first.
        TimeoutError: no such line within ``timeout`` seconds.
    """
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if found := pattern.match(line):
                    return found
    raise TimeoutError


def _wait_ready(process: subprocess.Popen[bytes], timeout: float) -> dict[str, str]:
    try:
        found = await_line(process, _READY_LINE, timeout)
    except EOFError:
        code = process.wait()
        raise TargetError(f"bundled target exited with code {code} before it was ready") from None
    except TimeoutError:
        raise TargetError(f"bundled target was not ready within {timeout:g} s") from None
    data: dict[str, str] = json.loads(found.group(1))
    return data


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


@atexit.register
def _stop_all() -> None:
    for spawned in list(_LIVE):
        spawned.stop(timeout=2.0)
