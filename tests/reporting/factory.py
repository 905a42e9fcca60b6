"""Small typed results for the reporting tests: no server, no pytest run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.catalogue import CATALOGUE, Severity
from harness.outcome import Observation, Outcome, Probe, ProbeResult, Status, settle
from harness.reporting.bundle import decide_evidence
from harness.reporting.model import ControlResult, Reproducer, Results, RunInfo
from harness.reporting.results import build_results, with_evidence

RUN = RunInfo(
    target="spawn:reference",
    address="127.0.0.1:5000",
    transport="TLS 1.3",
    profile="hipaa-strict",
    seed=7,
    started="2026-01-01T00:00:00Z",
    finished="2026-01-01T00:01:00Z",
    operator="tester",
    pytest_exit_status=1,
)


def refl_failed() -> ControlResult:
    """REFL-001 FAIL with one observation and its declared probes (one optional, not run)."""
    control = CATALOGUE["REFL-001"]
    seen = Observation(
        "ServerReflectionInfo list_services",
        "services disclosed: 3",
        "UNIMPLEMENTED",
        Status.FAIL,
        Severity.HIGH,
        request_id="rid-1",
    ).of("a")
    outcome = Outcome.from_observations(control, [seen], passed="reflection off")
    declared = (
        Probe("a", "reflection v1 and v1alpha"),
        Probe("b", "channelz", required=False, needs=("surface.channelz",)),
    )
    settled = settle(outcome, declared, lambda key: False)
    return ControlResult.from_outcome(settled, tests=["suites/test_surface.py::test_REFL_001"])


#: What REFL-001(a)'s failing call re-sends (reflection answers whoever asks).
REFL_REPRODUCER = Reproducer(
    code="OK (0)",
    request_id="rid-1",
    method="/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    grpcurl=(
        "grpcurl -cacert ca.pem -authority localhost -H 'x-request-id: rid-1' "
        '-d \'{"listServices": ""}\' 127.0.0.1:5000 '
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    ),
    replay=(
        "hipaa-grpc replay 127.0.0.1:5000 --cacert ca.pem --authority localhost "
        "--method /grpc.reflection.v1.ServerReflection/ServerReflectionInfo "
        "--request-b64 OgA= --expect 'OK (0)'"
    ),
    rerun="pytest --hipaa-target=spawn:reference --hipaa-seed=7 -k REFL_001",
)


def refl_reproduced() -> ControlResult:
    """REFL-001 FAIL whose failing probe carries a reproducer."""
    return replace(refl_failed(), reproducers=(("REFL-001(a)", REFL_REPRODUCER),))


def passed(control_id: str, *probes: ProbeResult) -> ControlResult:
    return ControlResult.of(
        CATALOGUE[control_id],
        Status.PASS,
        "held",
        probes=probes,
        tests=[f"suites/t.py::test_{control_id}"],
    )


def finished(*results: ControlResult) -> Results:
    """The document as the bundle writes it (EVID-001 decided)."""
    built = build_results(results, RUN, None, registered=[r.id for r in results])
    return with_evidence(built, decide_evidence(built))


def as_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """``results.json`` data as the 1.0 schema wrote it: no probes, no coverage, no refs.

    Changes ``data`` in place, and returns it.
    """
    data["schema_version"] = "1.0"
    del data["probe_coverage"]
    for c in data["controls"]:
        del c["probes"]
        for o in c["observations"]:
            del o["ref"]
    return data
