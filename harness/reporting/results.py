"""From the tests' results to :class:`~harness.reporting.model.Results`.

Every control of the catalogue gets exactly one entry: the worst of the tests that spoke
for it, its attestation, or SKIP with the reason it was not tested (never PASS). Then the
totals, the probe coverage and the roll-up by HIPAA standard.
"""

from __future__ import annotations

import datetime as dt
import getpass
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from harness import __version__
from harness.catalogue import CATALOGUE, Control, Severity
from harness.cloud import PARTLY_AUTOMATES
from harness.outcome import ProbeResult, Status
from harness.reporting.model import (
    EVIDENCE_CONTROL,
    ControlResult,
    Evidence,
    ProbeCoverage,
    Results,
    RunInfo,
    StandardRollup,
)
from harness.reporting.redact import redact

#: When several tests speak for one control, the first of these that occurs wins.
_PRECEDENCE = (
    Status.ERROR,
    Status.FAIL,
    Status.INCONCLUSIVE,
    Status.WARN,
    Status.PASS,
    Status.SKIP,
)
STANDARDS = {
    "164.312(a)": "Access control",
    "164.312(b)": "Audit controls",
    "164.312(c)": "Integrity",
    "164.312(d)": "Person or entity authentication",
    "164.312(e)": "Transmission security",
    "164.308(a)": "Administrative safeguards",
    "164.308(b)": "Business associate contracts",
    "164.314(a)": "Business associate contracts",
    "164.316(b)": "Documentation",
    "164.502(b)": "Minimum necessary",
    "164.514(b)": "De-identification",
    "164.514(d)": "Minimum necessary",
}
NO_ATTESTATION_FILE = "no attestation file given (--hipaa-attestations)"


def merge(results: Sequence[ControlResult]) -> ControlResult:
    """One control's result from the tests that speak for it (worst status wins).

    The worst test's status, severity and summary; every test's observations and probes
    (worst first); the tests' node IDs, sorted.
    """

    def rank(r: ControlResult) -> int:
        return _PRECEDENCE.index(r.status) if r.status in _PRECEDENCE else 0

    ordered = sorted(results, key=rank)
    return replace(
        ordered[0],
        observations=tuple(o for r in ordered for o in r.observations),
        probes=tuple(p for r in ordered for p in r.probes),
        tests=tuple(sorted({t for r in ordered for t in r.tests})),
    )


def _untested(
    control: Control, attestations: Mapping[str, ControlResult] | None, checks: set[str]
) -> ControlResult:
    """A control no test spoke for: its attestation, ATTESTATION MISSING, or SKIP."""
    if not control.automated:
        if attestations is not None and control.id in attestations:
            return attestations[control.id]
        return ControlResult.of(
            control, Status.ATTESTATION_MISSING, NO_ATTESTATION_FILE, severity=Severity.HIGH
        )
    if control.id in checks:
        return ControlResult.of(control, Status.SKIP, "not selected in this run")
    return ControlResult.of(
        control, Status.SKIP, f"no check in pytest-hipaa-grpc {__version__} yet"
    )


def build_results(
    results: Iterable[ControlResult],
    run: RunInfo,
    attestations: Iterable[ControlResult] | None,
    *,
    registered: Iterable[str],
    secrets: Iterable[str] = (),
    seed: int | None = None,
) -> Results:
    """Every control of the catalogue but EVID-001 (the bundle decides that one), redacted.

    Args:
        results: One per test that carried a control (its node ID in ``tests``).
        run: Target, address, transport, profile, seed, started, finished, operator.
        attestations: From :func:`harness.attest.attestation_results`, or ``None`` when no
            attestation file was given (every ATT control is then ATTESTATION MISSING).
        registered: Control IDs that have a check in this harness version.
        secrets: Tokens used in the run: never written, wherever they appear.
        seed: The run's seed: its canaries are masked wherever they appear.
    """
    by_control: dict[str, list[ControlResult]] = {}
    for result in results:
        by_control.setdefault(result.id, []).append(result)
    checks = set(registered)
    attested = {a.id: a for a in attestations} if attestations is not None else None
    controls = []
    for control in CATALOGUE.values():
        if control.id in by_control:
            controls.append(merge(by_control[control.id]).with_control(control))
        elif control.id != EVIDENCE_CONTROL:
            controls.append(_untested(control, attested, checks))
    controls = partly_automated(controls)
    tidy = redact((run, tuple(controls)), secrets, seed=seed)
    return finish(str(uuid.uuid4()), tidy[0], tidy[1])


def partly_automated(controls: Sequence[ControlResult]) -> list[ControlResult]:
    """Each manual control a judged CLOUD control covers in part says which, and its status.

    Its own status stays the attestation's (``PARTLY_AUTOMATES``): an attestation is still
    asked for what the provider's API cannot show.
    """
    judged = {c.id: c for c in controls if c.status in (Status.PASS, Status.FAIL, Status.WARN)}
    out = []
    for c in controls:
        covering = [judged[i] for i in PARTLY_AUTOMATES.get(c.id, ()) if i in judged]
        if covering:
            said = ", ".join(f"{x.id} {x.status.value}" for x in covering)
            c = replace(c, summary=f"{c.summary}; partly automated by {said}")
        out.append(c)
    return out


def finish(
    report_id: str,
    run: RunInfo,
    controls: Sequence[ControlResult],
    evidence: Evidence | None = None,
) -> Results:
    """The document: the controls with their totals, probe coverage and roll-up."""
    return Results(
        report_id=report_id,
        run=run,
        controls=tuple(controls),
        totals=totals(controls),
        rollup=rollup(controls),
        probe_coverage=probe_coverage(controls),
        evidence=evidence,
    )


def with_evidence(results: Results, evidence: Evidence) -> Results:
    """``results`` with EVID-001 decided: its control last, totals and roll-up redone."""
    control = ControlResult.of(
        CATALOGUE[EVIDENCE_CONTROL],
        evidence.status,
        evidence.summary,
        severity=evidence.severity,
        probes=evidence_probes(evidence),
    )
    done = finish(results.report_id, results.run, (*results.controls, control), evidence)
    return replace(done, schema_version=results.schema_version, disclaimer=results.disclaimer)


def evidence_probes(evidence: Evidence) -> tuple[ProbeResult, ...]:
    """EVID-001's probes: the self-scan decides; the sums and final statuses are by design.

    Every control result is typed with a final status, and SHA256SUMS is written over every
    file of the bundle (``hipaa-grpc report verify`` re-checks it). The signature covers
    ``results.json`` itself, so this file cannot record it: ``report verify --public-key``
    checks it.
    """
    ids = [f"{EVIDENCE_CONTROL}({ref})" for ref in ("self-scan", "final", "sums", "signature")]
    return (
        ProbeResult(
            ids[0], "no token, key or canary in results.json", evidence.status, True, (), ""
        ),
        ProbeResult(ids[1], "every control has a final status", Status.PASS, True),
        ProbeResult(ids[2], "SHA256SUMS over every file of the bundle", Status.PASS, True),
        ProbeResult(
            ids[3],
            "a signed in-toto statement of the bundle (evidence.signing_key or signing_cmd)",
            Status.SKIP,
            False,
            reason="checked by hipaa-grpc report verify --public-key (it covers this file)",
        ),
    )


def totals(controls: Iterable[ControlResult]) -> dict[Status, int]:
    """How many controls have each status (in the order the statuses first occur)."""
    out: dict[Status, int] = {}
    for c in controls:
        out[c.status] = out.get(c.status, 0) + 1
    return out


def probe_coverage(controls: Iterable[ControlResult]) -> ProbeCoverage:
    """Probes declared, run (judged or tried), and required ones that did not run."""
    probes = [p for c in controls for p in c.probes]
    return ProbeCoverage(
        declared=len(probes),
        run=sum(1 for p in probes if p.ran),
        required_not_run=sum(1 for p in probes if p.required and not p.ran and p.applies),
    )


def _worse(a: Severity | None, b: Severity | None) -> Severity | None:
    if a is None or (b is not None and b > a):
        return b
    return a


def rollup(controls: Iterable[ControlResult]) -> tuple[StandardRollup, ...]:
    """One entry per HIPAA standard cited, 164.312 first."""
    entries: dict[str, StandardRollup] = {}
    for c in controls:
        for std in c.standards:
            e = entries.get(std) or StandardRollup(std, STANDARDS.get(std, ""), (), {}, None, {})
            counts, attestations, worst = dict(e.counts), dict(e.attestations), e.worst_failure
            if c.automated:
                counts[c.status] = counts.get(c.status, 0) + 1
                if c.status is Status.FAIL:
                    worst = _worse(worst, c.severity)
            else:
                attestations[c.id] = c.status
            entries[std] = replace(
                e,
                controls=(*e.controls, c.id),
                counts=counts,
                worst_failure=worst,
                attestations=attestations,
            )
    order = sorted(entries, key=lambda s: (not s.startswith("164.312"), s))
    return tuple(entries[k] for k in order)


def now_utc() -> str:
    """The current UTC time, RFC 3339."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def operator() -> str:
    """Who ran the harness (the OS user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
