"""``hipaa-grpc report diff``: new, fixed and unchanged findings between two results."""

from __future__ import annotations

from dataclasses import dataclass

from harness.reporting.model import Results


@dataclass(frozen=True)
class Diff:
    """Control IDs, sorted: findings that are new (or changed status), fixed, unchanged."""

    new: tuple[str, ...]
    fixed: tuple[str, ...]
    unchanged: tuple[str, ...]


def diff(old: Results, new: Results) -> Diff:
    """What changed between two runs' findings (FAIL, WARN, ATTESTATION MISSING)."""
    a, b = old.findings(), new.findings()
    return Diff(
        new=tuple(sorted(k for k in b if a.get(k) != b[k])),
        fixed=tuple(sorted(k for k in a if k not in b)),
        unchanged=tuple(sorted(k for k in b if a.get(k) == b[k])),
    )
