"""The detection matrix: the compliant reference passes every control, and each named
defect makes exactly the controls it names FAIL, and nothing else.

Each row is a full ``pytest --hipaa-target=spawn:...`` run of the bundled suites, in
process, over real gRPC on 127.0.0.1.
"""

import pytest

from harness.checks import registered
from targets.catalog import BUNDLED

pytestmark = pytest.mark.slow


def control_statuses(pytester, target):
    reprec = pytester.inline_run(f"--hipaa-target={target}", "-p", "no:cacheprovider")
    statuses = {}
    for report in reprec.getreports("pytest_runtest_logreport"):
        props = dict(report.user_properties)
        if "hipaa_status" in props:
            statuses[props["hipaa_control"]] = props["hipaa_status"]
    return statuses


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_compliant_target_passes_every_control(pytester, name):
    statuses = control_statuses(pytester, f"spawn:{name}")
    assert statuses == dict.fromkeys(registered(), "PASS")


ROWS = [(t.name, d.name, d.trips) for t in BUNDLED.values() for d in t.defects]


@pytest.mark.parametrize(("name", "defect", "trips"), ROWS, ids=[f"{n}+{d}" for n, d, _ in ROWS])
def test_defect_fails_exactly_its_controls(pytester, name, defect, trips):
    statuses = control_statuses(pytester, f"spawn:{name}+{defect}")
    expected = {c: ("FAIL" if c in trips else "PASS") for c in registered()}
    assert statuses == expected


def test_defects_combine(pytester):
    statuses = control_statuses(pytester, "spawn:reference+reflection+plaintext")
    assert statuses == {"REFL-001": "FAIL", "TLS-001": "FAIL"}
