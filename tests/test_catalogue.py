"""The registry tests itself: catalogue, checks, suites and defects must agree."""

import ast
import re
from pathlib import Path

import pytest

import suites
from harness.catalogue import CATALOGUE, Severity
from harness.checks import registered
from harness.generate import stated_counts
from targets.catalog import BUNDLED

ROOT = Path(__file__).resolve().parents[1]


def test_catalogue_matches_the_document():
    doc = (ROOT / "docs" / "controls.md").read_text()
    ids = re.findall(r"^\| ([A-Z]+-\d{3}) \|", doc, flags=re.M)
    assert list(CATALOGUE) == ids
    automated, manual = stated_counts(doc)  # "There are 51 automated controls (§4) and 9 ..."
    assert len(CATALOGUE.automated()) == automated
    assert len(CATALOGUE.attestations()) == manual


def test_every_control_has_title_citation_and_severity():
    for control in CATALOGUE.values():
        assert control.title
        assert "164." in control.citation, control.id
        assert isinstance(control.severity, Severity)


def test_severity_orders_low_to_critical():
    assert Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert max(Severity.HIGH, Severity.CRITICAL, Severity.LOW) is Severity.CRITICAL


def _suite_tests() -> dict[str, str]:
    """control ID -> suite test function name, from the marker of each suite test."""
    found = {}
    for path in Path(suites.__file__).parent.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "hipaa_control":
                    control_id = deco.args[0].value  # type: ignore[attr-defined]
                    assert control_id not in found, f"{control_id} has two suite tests"
                    found[control_id] = node.name
    return found


def _tripped() -> set[str]:
    return {c for t in BUNDLED.values() for d in t.defects for c in d.trips}


@pytest.mark.parametrize("control_id", sorted(registered()))
def test_every_check_is_complete(control_id):
    check = registered()[control_id]
    assert check.control.automated
    assert check.control.citation
    assert len(check.doc.splitlines()) >= 3, "the docstring must state the procedure"
    tests = _suite_tests()
    assert control_id in tests, f"no suite test carries @pytest.mark.hipaa_control({control_id!r})"
    assert check.control.test_name_fragment in tests[control_id], (
        "the control ID must be in the test name"
    )
    assert control_id in _tripped(), (
        f"no bundled defect trips {control_id}: a check that cannot fail"
    )


def test_every_suite_test_and_defect_names_a_registered_check():
    checks = registered()
    for control_id in _suite_tests():
        assert control_id in checks
    for control_id in _tripped():
        assert control_id in checks, f"a defect claims to trip {control_id}, which has no check"


def test_registering_twice_or_without_docstring_is_refused():
    from harness.checks import check

    with pytest.raises(ValueError, match="already has a check"):
        check("REFL-001")(lambda run: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="needs a docstring"):
        check("EVID-001")(lambda run: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(KeyError, match="unknown control ID"):
        check("NOPE-001")
