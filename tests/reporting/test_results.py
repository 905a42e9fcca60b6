"""Every control once: merge, untested controls, totals, probe coverage, roll-up."""

from __future__ import annotations

from dataclasses import replace

from harness import __version__
from harness.catalogue import CATALOGUE, Severity
from harness.outcome import ProbeResult, Status
from harness.reporting.model import ControlResult
from harness.reporting.results import build_results, merge, probe_coverage

from .factory import RUN, finished, passed, refl_failed


def probe(ref: str, status: Status, required: bool = True) -> ProbeResult:
    return ProbeResult(f"AUTHZ-001({ref})", ref, status, required)


def test_probe_coverage_counts_declared_run_and_required_not_run() -> None:
    results = [
        passed("AUTHZ-001", probe("a", Status.PASS), probe("b", Status.INCONCLUSIVE)),
        passed(
            "AUTHZ-002",
            probe("a", Status.SKIP),
            probe("b", Status.ERROR),
            probe("c", Status.SKIP, required=False),
            probe("d", Status.WARN, required=False),
        ),
    ]
    coverage = probe_coverage(results)
    assert (coverage.declared, coverage.run, coverage.required_not_run) == (6, 3, 2)
    assert coverage.line() == "probe coverage: 3 of 6 probes run; 2 required probes did not run"
    # EVID-001 adds its own four: self-scan, final statuses and sums run; signature does not.
    done = finished(*results).probe_coverage
    assert done is not None
    assert (done.declared, done.run, done.required_not_run) == (10, 6, 2)


def test_the_worst_test_speaks_for_the_control_with_everyones_evidence() -> None:
    bad = refl_failed()
    good = replace(bad, status=Status.PASS, severity=None, summary="fine", tests=("b::t",))
    merged = merge([good, bad])
    assert (merged.status, merged.severity, merged.summary) == (
        bad.status,
        bad.severity,
        bad.summary,
    )
    assert merged.observations == bad.observations + good.observations
    assert merged.tests == tuple(sorted({*bad.tests, "b::t"}))


def test_every_control_once_and_never_pass_untested() -> None:
    results = build_results([refl_failed()], RUN, None, registered=["REFL-001", "REFL-002"])
    ids = [c.id for c in results.controls]
    assert len(ids) == len(set(ids)) == len(CATALOGUE) - 1  # EVID-001 is the bundle's
    by_id = {c.id: c for c in results.controls}
    assert by_id["REFL-002"].summary == "not selected in this run"
    untested = next(
        c for c in results.controls if c.automated and c.id not in ("REFL-001", "REFL-002")
    )
    assert untested.status is Status.SKIP
    assert untested.summary == f"no check in pytest-hipaa-grpc {__version__} yet"
    att = by_id["ATT-002"]
    assert (att.status, att.severity) == (Status.ATTESTATION_MISSING, Severity.HIGH)
    assert results.totals[Status.FAIL] == 1


def test_rollup_by_standard_with_the_worst_failure() -> None:
    critical = replace(refl_failed(), severity=Severity.CRITICAL)
    results = finished(critical, passed("AUTHZ-001"))
    rollup = {r.standard: r for r in results.rollup}
    access = rollup["164.312(a)"]
    assert access.name == "Access control"
    assert "REFL-001" in access.controls
    assert access.worst_failure is Severity.CRITICAL
    assert access.counts[Status.FAIL] == 1
    assert results.rollup[0].standard.startswith("164.312")
    evid = results.control("EVID-001")
    assert evid is not None
    assert results.controls[-1] == evid
    assert evid.status is Status.PASS


def test_an_attestation_result_is_used_as_given() -> None:
    attested = ControlResult.of(CATALOGUE["ATT-002"], Status.ATTESTED, "attested")
    results = build_results([], RUN, [attested], registered=[])
    assert results.control("ATT-002") == attested
