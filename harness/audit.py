"""Reading the target's audit events: a JSON-lines file (or glob), or a read-only command.

Field names come from ``audit.field_map`` (identity, method, resource, action, outcome,
request_id, timestamp, source, emergency, reason), so services with other event shapes can
be checked: :class:`Fields` reads an event through the map, understands outcomes spelt as
code names in any case, numbers or the service's own words (``audit.outcome_map``), and
timestamps in RFC 3339 or epoch numbers (``audit.timestamp_format``). Unparseable lines
are counted, never fatal.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import grpc

from harness.config import Config
from harness.run import Run

_CMD_TIMEOUT_S = 15.0

#: ``audit.timestamp_format`` epoch units: how many per second.
EPOCH_UNITS = {"epoch_s": 1, "epoch_ms": 10**3, "epoch_us": 10**6, "epoch_ns": 10**9}
_CODES = {c.name.replace("_", ""): c for c in grpc.StatusCode}
_NUMBERS = {c.value[0]: c for c in grpc.StatusCode}


@dataclass(frozen=True)
class Events:
    """Events read from the audit source, or why none could be read."""

    events: tuple[dict[str, Any], ...]
    problem: str = ""
    unparsed: int = 0


@dataclass(frozen=True)
class Stamp:
    """An event's time: when (UTC), and whether it is given to a fraction of a second."""

    at: dt.datetime
    sub_second: bool


def _rfc3339(value: str) -> Stamp | None:
    text = value.strip()
    if len(text) < 20 or text[10] not in "Tt ":
        return None
    try:
        at = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        return None
    if at.tzinfo is None:  # no zone: ambiguous, however precise
        return None
    return Stamp(at.astimezone(dt.timezone.utc), "." in text[19:])


def _epoch(value: Any, unit: str) -> Stamp | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if unit == "auto":  # the unit from the magnitude: seconds stay below 1e11 until 5138
        bounds = {"epoch_s": 1e11, "epoch_ms": 1e14, "epoch_us": 1e17}
        unit = next((u for u, bound in bounds.items() if abs(number) < bound), "epoch_ns")
    per_second = EPOCH_UNITS[unit]
    fraction = isinstance(value, float) or (isinstance(value, str) and "." in value)
    try:
        at = dt.datetime.fromtimestamp(number / per_second, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return Stamp(at, per_second > 1 or fraction)


def parse_time(value: Any, time_format: str = "auto") -> Stamp | None:
    """``value`` as an unambiguous time, or None.

    RFC 3339 needs ``Z`` or an offset; an epoch number is UTC by definition, in the unit
    ``time_format`` declares (``epoch_s``/``_ms``/``_us``/``_ns``), or, with ``auto``, the
    unit its magnitude implies. ``rfc3339`` accepts only the text form, an epoch unit only
    numbers (or numeric strings).
    """
    if time_format in ("rfc3339", "auto") and isinstance(value, str):
        stamp = _rfc3339(value)
        if stamp is not None or time_format == "rfc3339":
            return stamp
    if time_format == "auto" or time_format in EPOCH_UNITS:
        return _epoch(value, time_format)
    return None


def outcome_code(
    value: Any, outcome_map: Mapping[str, Any] | None = None
) -> grpc.StatusCode | None:
    """The gRPC code an event's outcome names, or None.

    ``outcome_map`` (``audit.outcome_map``) maps the service's own spellings
    (``PermissionDenied``, ``403``) to codes; code names in any case, with or without
    underscores, and code numbers are understood without it.
    """
    if isinstance(value, bool) or value is None:
        return None
    mapped = (outcome_map or {}).get(str(value))
    if mapped is not None and str(mapped) != str(value):
        return outcome_code(mapped)
    if isinstance(value, int):
        return _NUMBERS.get(value)
    text = str(value).strip()
    if text.isdigit():
        return _NUMBERS.get(int(text))
    return _CODES.get(text.upper().replace("_", "").replace("-", "").replace(" ", ""))


@dataclass(frozen=True)
class Fields:
    """How to read an event: ``audit.field_map``, ``audit.outcome_map``, the time format.

    A mapped name may be a dotted path into nested objects (``actor.id``).
    """

    names: Mapping[str, str] = dc_field(default_factory=dict)
    outcomes: Mapping[str, Any] = dc_field(default_factory=dict)
    time_format: str = "auto"

    @classmethod
    def of(cls, config: Config) -> Fields:
        """The fields a run's configuration declares."""
        return cls(
            {k: str(v) for k, v in config.table("audit.field_map").items()},
            config.table("audit.outcome_map"),
            str(config.get("audit.timestamp_format") or "auto"),
        )

    def __call__(self, event: Mapping[str, Any], name: str) -> Any:
        """The value of logical field ``name`` in ``event`` (None when it has none)."""
        path = self.names.get(name, name)
        if path in event:
            return event[path]
        node: Any = event
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    def outcome(self, event: Mapping[str, Any]) -> grpc.StatusCode | None:
        """The code the event's outcome names."""
        return outcome_code(self(event, "outcome"), self.outcomes)

    def time(self, event: Mapping[str, Any]) -> Stamp | None:
        """The event's timestamp, if it is unambiguous."""
        return parse_time(self(event, "timestamp"), self.time_format)


def field(run: Run, event: dict[str, Any], name: str) -> Any:
    """The value of logical field ``name`` in ``event``, through ``audit.field_map``."""
    return Fields.of(run.config)(event, name)


def by_request_id(
    events: Iterable[Mapping[str, Any]], request_ids: Iterable[str], fields: Fields
) -> dict[str, list[dict[str, Any]]]:
    """The events of each request ID (an empty list for one with none)."""
    found: dict[str, list[dict[str, Any]]] = {rid: [] for rid in request_ids}
    for event in events:
        rid = fields(event, "request_id")
        if isinstance(rid, str) and rid in found:
            found[rid].append(dict(event))
    return found


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


@dataclass(frozen=True)
class Polled:
    """The source as last read while waiting for events: per request ID, parsed, raw."""

    found: dict[str, list[dict[str, Any]]]
    events: Events
    chunks: list[tuple[str, bytes]]
    problem: str = ""


def poll(run: Run, request_ids: Iterable[str]) -> Polled:
    """Read the source until every request ID has an event, or ``audit.delivery_timeout_s``.

    The last read is kept whole (:class:`Polled`), so a check reads the source once.
    """
    wanted = list(dict.fromkeys(request_ids))
    fields = Fields.of(run.config)
    deadline = time.monotonic() + float(run.config.get("audit.delivery_timeout_s", 30))
    while True:
        chunks, problem = read_raw(run.config.get("audit.source"))
        got = Events((), problem) if problem else parse_events(chunks)
        found = by_request_id(got.events, wanted, fields)
        if problem or all(found.values()) or time.monotonic() >= deadline:
            return Polled(found, got, chunks, problem)
        time.sleep(0.1)


def wait_for(run: Run, request_ids: Iterable[str]) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Poll the source until every request ID has an event, or ``audit.delivery_timeout_s``.

    Returns the events per request ID (possibly empty lists) and a problem, if any.
    """
    polled = poll(run, request_ids)
    return polled.found, polled.problem


def appended(
    before: Iterable[tuple[str, bytes]], after: Iterable[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """What each source of ``after`` holds that ``before`` did not: the bytes written since.

    A source that no longer starts with what it held (rewritten, rotated) is new whole.
    """
    earlier = dict(before)
    out = []
    for name, blob in after:
        old = earlier.get(name, b"")
        out.append((name, blob[len(old) :] if blob.startswith(old) else blob))
    return out


def marks(source: Path | list[str] | None, what: str) -> tuple[dict[str, str], str]:
    """A mark of each file of ``source`` (size and mtime), or of a command's output (digest).

    Two marks of a source differ when it was written in between; a file not there has no
    mark. Returns the marks and a problem, if any.
    """
    if source is None:
        return {}, f"no {what} configured"
    if isinstance(source, list):
        chunks, problem = read_raw(source, what)
        return {n: hashlib.sha256(b).hexdigest() for n, b in chunks}, problem
    paths = sorted(glob.glob(str(source))) if glob.has_magic(str(source)) else [str(source)]
    out = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out[path] = f"{st.st_size}:{st.st_mtime_ns}"
    return out, ""


#: Where AUDIT-005 keeps each audit source's last (seq, hash), in ``evidence.history_dir``.
ANCHORS = "audit-anchors.json"


def load_anchor(directory: Path, key: str) -> tuple[dict[str, Any] | None, str]:
    """The anchor an earlier run saved for source ``key`` (None: none), and a problem."""
    path = directory / ANCHORS
    try:
        saved = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        return None, f"unreadable {path}: {exc}"
    if not isinstance(saved, dict):
        return None, f"unreadable {path}: not a JSON object"
    anchor = saved.get(key)
    return (anchor if isinstance(anchor, dict) else None), ""


def save_anchor(directory: Path, key: str, anchor: Mapping[str, Any]) -> str:
    """Record ``anchor`` for source ``key`` (atomically); a problem, if any."""
    path = directory / ANCHORS
    try:
        saved = json.loads(path.read_text()) if path.exists() else {}
        saved = saved if isinstance(saved, dict) else {}
        saved[key] = dict(anchor)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=2, sort_keys=True))
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        return f"cannot write {path}: {exc}"
    return ""
