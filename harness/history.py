"""Cross-run memory in ``evidence.history_dir``: when the harness first saw a thing.

CERT-003 records certificate serials and KEY-001 signing-key thumbprints. Each kind is one
JSON file mapping an identifier to the UTC time it was first seen, rewritten atomically so
an interrupted run never leaves it half-written. ``runs.json`` keeps one
:class:`RunRecord` per evidence bundle written (each control's status), for the report's
trend across runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class HistoryError(Exception):
    """The history file cannot be read or written; the message says which and why."""


def first_seen(
    directory: Path, kind: str, ids: list[str], now: dt.datetime
) -> dict[str, dt.datetime]:
    """When each of ``ids`` was first seen, recording the new ones as seen ``now``.

    Args:
        directory: ``evidence.history_dir`` (created when missing).
        kind: The file's stem, e.g. ``cert-serials``.
        ids: Identifiers seen in this run.
        now: This run's time (timezone-aware).

    Raises:
        HistoryError: The file is unreadable, not a JSON object of ISO times, or unwritable.
    """
    path = directory / f"{kind}.json"
    try:
        raw = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        seen = {str(k): dt.datetime.fromisoformat(str(v)) for k, v in raw.items()}
    except (OSError, ValueError) as exc:
        raise HistoryError(f"unreadable {path}: {exc}") from None
    fresh = [i for i in ids if i not in seen]
    seen.update(dict.fromkeys(fresh, now))
    if fresh or not path.exists():
        _write(path, {k: v.isoformat() for k, v in sorted(seen.items())})
    return {i: _aware(seen[i]) for i in ids}


def _write(path: Path, data: object) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically (its directory created)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except OSError as exc:
        raise HistoryError(f"cannot write {path}: {exc}") from None


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


#: The file of run records in ``evidence.history_dir``.
RUNS_FILE = "runs.json"
#: Run records kept; the oldest go first.
KEEP_RUNS = 100


@dataclass(frozen=True)
class RunRecord:
    """One evidence bundle as the trend shows it.

    Attributes:
        report_id: The bundle's report ID (a record written again replaces the old one).
        finished: The run's UTC end (ISO 8601).
        target: What was tested.
        statuses: Control ID -> status (``PASS``, ``FAIL``...).
        severities: Control ID -> severity, for the controls whose finding has one.
    """

    report_id: str
    finished: str
    target: str
    statuses: Mapping[str, str]
    severities: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "report_id": self.report_id,
            "finished": self.finished,
            "target": self.target,
            "statuses": dict(self.statuses),
            "severities": dict(self.severities),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """The record from its JSON form (``KeyError``/``TypeError`` when it is not one)."""
        return cls(
            report_id=str(data["report_id"]),
            finished=str(data["finished"]),
            target=str(data["target"]),
            statuses={str(k): str(v) for k, v in dict(data["statuses"]).items()},
            severities={str(k): str(v) for k, v in dict(data.get("severities", {})).items()},
        )


def runs(directory: Path) -> tuple[RunRecord, ...]:
    """The run records in ``directory``, oldest first (none when there is no file yet).

    Raises:
        HistoryError: The file is unreadable or not a list of run records.
    """
    path = directory / RUNS_FILE
    try:
        raw = json.loads(path.read_text()) if path.exists() else []
        if not isinstance(raw, list):
            raise ValueError("not a JSON list")
        return tuple(RunRecord.from_json(r) for r in raw)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HistoryError(f"unreadable {path}: {exc}") from None


def record_run(directory: Path, record: RunRecord, keep: int = KEEP_RUNS) -> tuple[RunRecord, ...]:
    """Add ``record`` to ``directory``'s run records; the records kept, this one last.

    An earlier record with the same report ID is replaced; at most ``keep`` are kept.

    Raises:
        HistoryError: The file is unreadable, or cannot be written.
    """
    kept = [r for r in runs(directory) if r.report_id != record.report_id]
    kept = [*kept, record][-keep:]
    _write(directory / RUNS_FILE, [r.to_json() for r in kept])
    return tuple(kept)
