"""The views read the typed results: HTML shows every probe, SARIF and JUnit the findings."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace

from harness.catalogue import Severity
from harness.outcome import Status
from harness.reporting.bundle import bundle_files, verify, write_bundle
from harness.reporting.html import render_html
from harness.reporting.junit import render_junit
from harness.reporting.markdown import render_summary
from harness.reporting.model import Evidence
from harness.reporting.results import with_evidence
from harness.reporting.sarif import render_sarif

from .factory import finished, passed, refl_failed


def test_html_shows_every_declared_probe() -> None:
    page = render_html(finished(refl_failed(), passed("AUTHZ-001")))
    assert "<b>REFL-001(a)</b> reflection v1 and v1alpha" in page
    assert "<b>REFL-001(b)</b> channelz <span class='sev'>(optional)</span>" in page
    assert "<b>Enable with:</b> <code>surface.channelz</code>" in page
    assert "1 of 2 declared probe(s) run" in page
    assert "[request-id rid-1]" in page
    assert "probe coverage: 4 of 6 probes run" in page  # with EVID-001's three of four
    assert "<b>EVID-001(self-scan)</b>" in page
    assert "<script" not in page
    assert "REPORT INVALID" not in page


def test_html_marks_the_report_invalid_when_evid_001_failed() -> None:
    results = finished(passed("AUTHZ-001"))
    bad = with_evidence(
        replace(results, controls=results.controls[:-1]),
        Evidence(Status.FAIL, "results.json: holds a bearer token", Severity.MEDIUM),
    )
    assert "REPORT INVALID (EVID-001): results.json: holds a bearer token" in render_html(bad)


def test_junit_sarif_and_summary_carry_the_finding() -> None:
    results = finished(refl_failed(), passed("AUTHZ-001"))
    cases = {
        c.get("name", "").split()[0]: c
        for c in ET.fromstring(render_junit(results)).iter("testcase")
    }
    props = {p.get("name"): p.get("value") for p in cases["REFL-001"].iter("property")}
    assert (props["hipaa_status"], props["hipaa_severity"]) == ("FAIL", "high")
    assert cases["REFL-001"].find("failure") is not None
    sarif = render_sarif(results)["runs"][0]
    assert [r["ruleId"] for r in sarif["results"] if r["properties"]["status"] == "FAIL"] == [
        "REFL-001"
    ]
    summary = render_summary(results)
    assert "| REFL-001 " in summary
    assert "Evidence integrity (EVID-001): PASS" in summary


def test_a_written_bundle_verifies(tmp_path) -> None:
    files = bundle_files(finished(refl_failed()), {}, canaries=["MRN-CC-CANARY1"])
    assert json.loads(files["results.json"])["evidence"]["status"] == "PASS"
    write_bundle(tmp_path / "b", files)
    assert verify(tmp_path / "b") == []
