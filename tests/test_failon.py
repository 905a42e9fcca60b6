"""--hipaa-fail-on: which control results fail the run."""

import pytest

from harness.catalogue import CATALOGUE, Severity
from harness.errors import UsageError
from harness.failon import DEFAULT, FailOn
from harness.outcome import Status
from harness.reporting.model import ControlResult


def result(control_id: str, status: Status, severity: Severity | None = None) -> ControlResult:
    return ControlResult.of(CATALOGUE[control_id], status, "why", severity=severity)


RESULTS = [
    result("REFL-001", Status.PASS),
    result("REFL-002", Status.FAIL, Severity.LOW),
    result("AUTHN-005", Status.INCONCLUSIVE),
    result("TLS-001", Status.SKIP),
]


def test_the_default_fails_on_any_fail_any_inconclusive_and_any_error():
    fail_on = FailOn.parse(DEFAULT)
    assert fail_on.reasons(RESULTS) == ["REFL-002 FAIL (low)", "AUTHN-005 INCONCLUSIVE"]
    assert fail_on.reasons([*RESULTS[:1], result("ERR-001", Status.ERROR)]) == ["ERR-001 ERROR"]


def test_a_severity_is_the_lowest_that_fails_the_run():
    high = FailOn.parse("high")
    assert high.reasons(RESULTS) == []
    critical = result("AUTHN-001", Status.FAIL, Severity.CRITICAL)
    assert high.reasons([*RESULTS, critical]) == ["AUTHN-001 FAIL (critical)"]


def test_a_fail_without_a_severity_takes_the_controls_default():
    assert FailOn.parse("critical").reasons([result("AUTHN-001", Status.FAIL)]) == [
        "AUTHN-001 FAIL (critical)"
    ]


def test_none_fails_on_nothing():
    assert FailOn.parse("none").reasons(RESULTS) == []


@pytest.mark.parametrize("text", ["", "sometimes", "low,high", "none,error", "HIGH,oops"])
def test_bad_settings_are_usage_errors(text):
    with pytest.raises(UsageError, match="--hipaa-fail-on"):
        FailOn.parse(text)


def test_words_are_case_insensitive():
    assert FailOn.parse(" High , Inconclusive ") == FailOn(
        Severity.HIGH, True, False, "high,inconclusive"
    )
