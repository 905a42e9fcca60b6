"""Reading the target's audit events: a JSON-lines file (or glob), or a read-only command.

Field names come from ``audit.field_map`` (identity, method, resource, action, outcome,
request_id, timestamp, source, emergency, reason), so services with other event shapes can
be checked. Unparseable lines are counted, never fatal.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.run import Run

_CMD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Events:
    """Events read from the audit source, or why none could be read."""

    events: tuple[dict[str, Any], ...]
    problem: str = ""
    unparsed: int = 0


def field(run: Run, event: dict[str, Any], name: str) -> Any:
    """The value of logical field ``name`` in ``event``, through ``audit.field_map``.

    A mapped name may be a dotted path into nested objects (``actor.id``).
    """
    path = str(run.config.table("audit.field_map").get(name, name))
    if path in event:
        return event[path]
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_raw(
    source: Path | list[str] | None, what: str = "audit.source"
) -> tuple[list[tuple[str, bytes]], str]:
    """The bytes of a file, a glob's files, or a command's stdout, and a problem if any."""
    if source is None:
        return [], f"no {what} configured"
    if isinstance(source, list):
        try:
            done = subprocess.run(source, capture_output=True, timeout=_CMD_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [], f"{what} command failed: {type(exc).__name__}"
        if done.returncode != 0:
            return [], f"{what} command exited {done.returncode}"
        return [(" ".join(source), done.stdout)], ""
    paths = sorted(glob.glob(str(source))) if glob.has_magic(str(source)) else [str(source)]
    chunks = []
    for path in paths:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device can block forever
                return [], f"{what} {path} is not a regular file: the harness reads files"
            chunks.append((path, Path(path).read_bytes()))
        except OSError as exc:
            return [], f"{what} {path}: {exc.strerror}"
    return chunks, ""


def read(run: Run) -> Events:
    """Every event the source holds now."""
    chunks, problem = read_raw(run.config.get("audit.source"))
    if problem:
        return Events((), problem)
    return parse_events(chunks)


def parse_events(chunks: Iterable[tuple[str, bytes]]) -> Events:
    """JSON-lines events from raw chunks; lines that are not JSON objects are counted."""
    events, unparsed = [], 0
    for _, blob in chunks:
        # JSON lines split on "\n" only: str.splitlines() also splits on U+2028 and
        # friends, which JSON allows unescaped inside strings.
        for line in blob.decode("utf-8", "replace").split("\n"):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                unparsed += 1
                continue
            if isinstance(event, dict):
                events.append(event)
            else:
                unparsed += 1
    return Events(tuple(events), "", unparsed)


def wait_for(run: Run, request_ids: Iterable[str]) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Poll the source until every request ID has an event, or ``audit.delivery_timeout_s``.

    Returns the events per request ID (possibly empty lists) and a problem, if any.
    """
    wanted = set(request_ids)
    deadline = time.monotonic() + float(run.config.get("audit.delivery_timeout_s", 30))
    while True:
        got = read(run)
        found: dict[str, list[dict[str, Any]]] = {rid: [] for rid in wanted}
        for event in got.events:
            rid = field(run, event, "request_id")
            if rid in found:
                found[rid].append(event)
        if got.problem or all(found.values()) or time.monotonic() >= deadline:
            return found, got.problem
        time.sleep(0.1)
