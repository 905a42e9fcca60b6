"""Every view of the bundle shows a failing probe's reproducer; none leaks a token."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from harness.reporting.bundle import bundle_files
from harness.reporting.junit import render_junit
from harness.reporting.markdown import render_summary
from harness.reporting.sarif import render_sarif

from .factory import REFL_REPRODUCER, finished, passed, refl_failed, refl_reproduced


def test_sarif_result_properties_carry_the_reproducer() -> None:
    sarif = render_sarif(finished(refl_reproduced(), passed("AUTHZ-001")))
    (result,) = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "REFL-001"]
    (found,) = result["properties"]["reproducers"]
    assert found == {"probe": "REFL-001(a)", **REFL_REPRODUCER.to_json()}
    plain = render_sarif(finished(refl_failed(), passed("AUTHZ-001")))
    (result,) = [r for r in plain["runs"][0]["results"] if r["ruleId"] == "REFL-001"]
    assert "reproducers" not in result["properties"]  # unchanged where there is none


def test_markdown_lists_the_commands() -> None:
    text = render_summary(finished(refl_reproduced(), passed("AUTHZ-001")))
    assert "### Reproducers" in text
    assert "**REFL-001(a)** (the harness got `OK (0)`)" in text
    assert REFL_REPRODUCER.grpcurl in text
    assert REFL_REPRODUCER.replay in text
    assert "### Reproducers" not in render_summary(finished(refl_failed()))


def test_junit_failure_text_ends_with_the_commands() -> None:
    suite = ET.fromstring(render_junit(finished(refl_reproduced(), passed("AUTHZ-001"))))
    (case,) = [c for c in suite.iter("testcase") if c.get("name", "").startswith("REFL-001")]
    failure = case.find("failure")
    assert failure is not None
    assert "Reproduce REFL-001(a):" in (failure.text or "")
    assert REFL_REPRODUCER.replay in (failure.text or "")


def test_the_bundle_holds_them_and_its_self_scan_stays_clean() -> None:
    files = bundle_files(finished(refl_reproduced(), passed("AUTHZ-001")), {})
    data = json.loads(files["results.json"])
    assert data["evidence"]["status"] == "PASS"
    refl = next(c for c in data["controls"] if c["id"] == "REFL-001")
    assert refl["probes"][0]["reproducer"]["replay"] == REFL_REPRODUCER.replay
