"""Cross-run memory in ``evidence.history_dir``: when the harness first saw a thing.

CERT-003 records certificate serials and KEY-001 signing-key thumbprints. Each kind is one
JSON file mapping an identifier to the UTC time it was first seen, rewritten atomically so
an interrupted run never leaves it half-written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path


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
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            text = {k: v.isoformat() for k, v in sorted(seen.items())}
            tmp.write_text(json.dumps(text, indent=2))
            os.replace(tmp, path)
        except OSError as exc:
            raise HistoryError(f"cannot write {path}: {exc}") from None
    return {i: _aware(seen[i]) for i in ids}


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)
