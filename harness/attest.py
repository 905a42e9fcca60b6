"""Manual attestations for the controls no endpoint test can observe (ATT-001 ... ATT-009).

``--hipaa-attestations FILE`` names a TOML file with one table per control::

    [ATT-002]
    attested_by = "Jane Roe"
    role = "CISO"
    date = 2026-10-01
    valid_until = 2027-09-30        # at most 12 months after date
    evidence = "KMS-POLICY-2026-10"  # document ID or URI
    evidence_sha256 = "<64 hex digits>"
    statement = "How the safeguard is implemented."

A control without a valid, current attestation is ATTESTATION MISSING (a finding, high).
An attestation is never shown as PASS.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.catalogue import CATALOGUE, Severity
from harness.errors import ConfigError
from harness.outcome import Status
from harness.reporting.model import AttestationRecord, ControlResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_REQUIRED = ("attested_by", "date", "valid_until", "evidence", "evidence_sha256", "statement")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_VALIDITY = dt.timedelta(days=366)


@dataclass(frozen=True)
class Attestation:
    """One control's attestation as given."""

    control: str
    attested_by: str
    role: str
    date: dt.date
    valid_until: dt.date
    evidence: str
    evidence_sha256: str
    statement: str

    def problem(self, today: dt.date) -> str:
        """Why this attestation does not count, or ``""`` when it does."""
        if self.valid_until < today:
            return f"expired on {self.valid_until.isoformat()}"
        if self.date > today:
            return f"dated in the future ({self.date.isoformat()})"
        if self.valid_until - self.date > MAX_VALIDITY:
            return "valid for more than 12 months"
        return ""


def load_attestations(path: Path) -> dict[str, Attestation]:
    """Read and validate an attestation file.

    Raises:
        ConfigError: missing file, bad TOML, unknown control, missing or malformed field.
    """
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, None, f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"not valid TOML: {exc}") from None
    known = {c.id for c in CATALOGUE.attestations()}
    out = {}
    for control, table in data.items():
        if control not in known:
            raise ConfigError(
                source,
                control,
                f"not an attestation control (expected one of {', '.join(sorted(known))})",
            )
        if not isinstance(table, dict):
            raise ConfigError(source, control, "expected a table")
        for name in _REQUIRED:
            if name not in table:
                raise ConfigError(source, f"{control}.{name}", "missing")
        for name in ("date", "valid_until"):
            if not isinstance(table[name], dt.date) or isinstance(table[name], dt.datetime):
                raise ConfigError(
                    source,
                    f"{control}.{name}",
                    f"expected a TOML date (YYYY-MM-DD), got {table[name]!r}",
                )
        for name in ("attested_by", "evidence", "evidence_sha256", "statement", "role"):
            if name in table and not isinstance(table[name], str):
                raise ConfigError(
                    source, f"{control}.{name}", f"expected a string, got {table[name]!r}"
                )
        if not _HEX64.match(table["evidence_sha256"]):
            raise ConfigError(
                source, f"{control}.evidence_sha256", "expected 64 hex digits (SHA-256)"
            )
        unknown = set(table) - set(_REQUIRED) - {"role"}
        if unknown:
            raise ConfigError(source, f"{control}.{sorted(unknown)[0]}", "unknown key")
        out[control] = Attestation(
            control=control,
            attested_by=table["attested_by"],
            role=table.get("role", ""),
            date=table["date"],
            valid_until=table["valid_until"],
            evidence=table["evidence"],
            evidence_sha256=table["evidence_sha256"].lower(),
            statement=table["statement"],
        )
    return out


def attestation_results(
    attestations: dict[str, Attestation], today: dt.date
) -> list[ControlResult]:
    """One result per ATT control: ATTESTED with its details, or ATTESTATION MISSING."""
    results: list[ControlResult] = []
    for control in CATALOGUE.attestations():
        att = attestations.get(control.id)
        problem = "no attestation given" if att is None else att.problem(today)
        if problem or att is None:
            results.append(
                ControlResult.of(
                    control, Status.ATTESTATION_MISSING, problem, severity=Severity.HIGH
                )
            )
            continue
        record = AttestationRecord(
            attested_by=att.attested_by,
            role=att.role,
            date=att.date.isoformat(),
            valid_until=att.valid_until.isoformat(),
            evidence=att.evidence,
            evidence_sha256=att.evidence_sha256,
            statement=att.statement,
        )
        said = "attested, not independently verified by automated testing"
        results.append(ControlResult.of(control, Status.ATTESTED, said, attestation=record))
    return results
