"""The detection matrix: the compliant reference passes every control, and each named
defect makes exactly the controls it names FAIL, and nothing else.

Each row is a full ``pytest --hipaa-target=spawn:...`` run of the bundled suites, in
process, over real gRPC on 127.0.0.1.
"""

import pytest

from conftest import control_statuses
from harness.checks import registered
from targets.catalog import BUNDLED, TLS_ONLY, judged_on

#: A blinded control may be SKIP (nothing to judge) or INCONCLUSIVE (cannot observe).
NOT_JUDGED = "SKIP or INCONCLUSIVE"

pytestmark = pytest.mark.slow


def compliant(name: str) -> dict[str, str]:
    """Every control PASS on the compliant target, but those it is not judged on: SKIP (the
    CLOUD controls on a gRPC service without --hipaa-cloud, the gRPC ones on a cloud estate).
    """
    return {c: "PASS" if judged_on(BUNDLED[name], c) else "SKIP" for c in registered()}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_compliant_target_passes_every_control(pytester, name):
    statuses = control_statuses(pytester, f"--hipaa-target=spawn:{name}")
    assert statuses == compliant(name)


ROWS = [(t.name, d) for t in BUNDLED.values() for d in t.defects]


@pytest.mark.parametrize(("name", "defect"), ROWS, ids=[f"{n}+{d.name}" for n, d in ROWS])
def test_defect_fails_exactly_its_controls(pytester, name, defect):
    trips, blinds = defect.trips, defect.blinds
    # White-box fuzzing runs on the compliant rows and where FUZZ-002 is to fail; elsewhere
    # FUZZ-002 is judged by its black-box part alone, which keeps the matrix within budget.
    seconds = defect.fuzz_budget_s if "FUZZ-002" in trips else 0
    budget = [f"--hipaa-fuzz-budget={seconds:g}"] if seconds is not None else []
    statuses = control_statuses(pytester, f"--hipaa-target=spawn:{name}+{defect.name}", *budget)
    expected = {c: ("FAIL" if c in trips else s) for c, s in compliant(name).items()}
    expected = {c: NOT_JUDGED if s == "SKIP" else s for c, s in expected.items()}
    expected.update(dict.fromkeys(blinds, NOT_JUDGED))
    # Judged on some runs only (a third-party tool's reach): PASS or not judged, never FAIL.
    expected.update(dict.fromkeys(defect.unsteady, NOT_JUDGED))
    got = {c: NOT_JUDGED if s in ("SKIP", "INCONCLUSIVE") else s for c, s in statuses.items()}
    got.update({c: NOT_JUDGED for c in defect.unsteady if got.get(c) == "PASS"})
    assert got == expected


def test_defects_combine(pytester):
    statuses = control_statuses(pytester, "--hipaa-target=spawn:reference+reflection+plaintext")
    expected = compliant("reference")
    expected.update({"REFL-001": "FAIL", "TLS-001": "FAIL"})
    expected.update(dict.fromkeys(TLS_ONLY, "SKIP"))
    assert statuses == expected
