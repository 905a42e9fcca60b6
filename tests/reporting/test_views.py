"""The views read the typed results: HTML shows every probe, SARIF and JUnit the findings.

The pictures are read from what the judges themselves write (AUTHZ-001's matrix calls,
the TLS scan, CERT-003), so a judge that changes its words breaks a test here.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import xml.etree.ElementTree as ET
from dataclasses import replace

import grpc
import pytest

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks.authz import judge_matrix
from harness.checks.cert import judge_days_left, judge_lifetime, judge_validity
from harness.checks.tls import (
    judge_cipher,
    judge_groups,
    judge_legacy_versions,
    judge_tls12,
    judge_tls13,
)
from harness.history import HistoryError, RunRecord, record_run, runs
from harness.outcome import Observation, Status
from harness.plans.calls import Call
from harness.principals import Principal
from harness.reporting import figures
from harness.reporting.bundle import bundle_files, verify, write_bundle
from harness.reporting.html import render_html
from harness.reporting.junit import render_junit
from harness.reporting.markdown import render_summary
from harness.reporting.model import ControlResult, Evidence
from harness.reporting.results import with_evidence
from harness.reporting.sarif import render_sarif
from harness.tls import LEGACY_VERSIONS, Suite, TlsFacts, profile
from targets.pki import CertificateAuthority
from tests.checks.recorded import answer, certs

from .factory import REFL_REPRODUCER, finished, passed, refl_failed, refl_reproduced


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


# -- the pictures -----------------------------------------------------------------------------

SVC = "/acme.charts.v2.Charts"
GET, LIST, GONE = f"{SVC}/GetChart", f"{SVC}/ListCharts", f"{SVC}/PurgeCharts"
MATRIX = {GET: frozenset({"nurse", "auditor"}), LIST: frozenset({"nurse"})}
WHO = ("nurse", "auditor", "no-roles")


def _matrix_call(who: str, method: str, code: grpc.StatusCode) -> tuple[Call, CallResult]:
    body = (b"\x0a\x03c-1",) if code == grpc.StatusCode.OK else ()
    return Call(who, method, (b"",), Principal(who)), answer(code, *body, method=method)


def authz_001() -> ControlResult:
    """AUTHZ-001 as judge_matrix writes it: the auditor lists charts (a mismatch), and
    PurgeCharts has no matrix entry."""
    ok, denied = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
    codes = {
        (GET, "nurse"): ok,
        (GET, "auditor"): ok,
        (LIST, "nurse"): ok,
        (LIST, "auditor"): ok,  # the matrix says no
    }
    calls = [
        _matrix_call(who, m, codes.get((m, who), denied)) for m in (GET, LIST, GONE) for who in WHO
    ]
    observations = judge_matrix(MATRIX, [GET, LIST, GONE], calls)
    return ControlResult.of(
        CATALOGUE["AUTHZ-001"], Status.FAIL, "mismatch", observations=observations
    )


def test_the_rbac_grid_shows_policy_and_code_with_mismatches_marked() -> None:
    grid = figures.rbac_grid(authz_001())
    assert grid is not None
    assert grid.methods == (GONE, GET, LIST)
    assert grid.principals == WHO
    cell = grid.cells[(LIST, "auditor")]
    assert (cell.policy, cell.code, cell.mismatch) == ("deny", "OK", True)
    assert (grid.cells[(GET, "nurse")].policy, grid.cells[(GET, "nurse")].code) == ("allow", "OK")
    assert grid.cells[(GET, "no-roles")].code == "PERMISSION_DENIED"
    assert grid.mismatches == 1
    assert grid.gaps == (GONE,)
    assert (GONE, "nurse") not in grid.cells  # not judged: the method has no entry
    page = render_html(finished(authz_001()))
    assert "<table id='rbac-grid' class='rbac'>" in page
    assert page.count("class='cell FAIL mismatch'") == 1
    assert "no matrix entry" in page


def test_no_grid_without_matrix_calls() -> None:
    assert figures.rbac_grid(None) is None
    assert figures.rbac_grid(passed("AUTHZ-001")) is None
    assert "AUTHZ-001 made no matrix call" in render_html(finished(passed("AUTHZ-001")))


def test_probe_coverage_per_family_says_why_a_probe_did_not_run() -> None:
    (refl,) = figures.coverage_by_family([refl_failed()])
    assert (refl.family, refl.ran, refl.not_applicable, refl.not_run) == (
        "Reflection and admin surface",
        1,
        0,
        1,
    )
    ((why, ids),) = refl.why.items()
    assert ids == ("REFL-001(b)",)
    assert "surface.channelz" in why
    page = render_html(finished(refl_failed()))
    assert "<h2 id='coverage'>" in page
    assert "REFL-001(b)" in page


def _tls_results(leaf_days: int = 30) -> tuple[ControlResult, ...]:
    """TLS-001...004 and CERT-003 as their judges write them: one broken TLS 1.2 suite."""
    strong = Suite("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDH", 256, "secp256r1")
    facts = TlsFacts(
        target="127.0.0.1:50051 (SNI localhost)",
        versions={**dict.fromkeys(LEGACY_VERSIONS, False), "TLS 1.2": True, "TLS 1.3": True},
        suites={"TLS 1.2": (strong,), "TLS 1.3": (Suite("TLS_AES_128_GCM_SHA256"),)},
        groups=("X25519", "secp256r1"),
    )
    prof = profile("hipaa-strict")
    now = dt.datetime.now(dt.timezone.utc)
    leaf = certs(
        CertificateAuthority("Views").issue(
            ("localhost",), valid_from=-dt.timedelta(days=10), valid_for=dt.timedelta(leaf_days)
        )
    )[0]
    suites = [
        judge_cipher("TLS 1.2", strong.name, prof).of("tls12"),
        judge_cipher("TLS 1.2", "TLS_RSA_WITH_RC4_128_SHA", prof).of("tls12"),
        judge_cipher("TLS 1.3", "TLS_AES_128_GCM_SHA256", prof).of("tls13"),
    ]
    made = {
        "TLS-001": [o.of("1") for o in judge_legacy_versions(facts)],
        "TLS-002": [judge_tls13(facts).of("tls13"), judge_tls12(facts, prof).of("tls12")],
        "TLS-003": suites,
        "TLS-004": [o.of("groups") for o in judge_groups(facts, prof)],
        "CERT-003": [
            judge_validity(leaf, now).of("validity"),
            judge_lifetime(leaf, prof).of("lifetime"),
            judge_days_left(leaf, now, 14).of("expiry"),
        ],
    }
    return tuple(
        ControlResult.of(CATALOGUE[cid], Status.PASS, "", observations=obs)
        for cid, obs in made.items()
    )


def test_the_tls_summary_reads_versions_suites_groups_and_lifetime_left() -> None:
    summary = figures.tls_summary(finished(*_tls_results()))
    assert summary is not None
    assert [v.name for v in summary.versions] == list(figures.TLS_VERSIONS)
    assert {v.name: v.observed for v in summary.versions}["TLS 1.0"] == "refused"
    assert summary.by_strength() == {"strong": 2, "broken": 1}
    assert [g.name for g in summary.groups] == ["X25519", "secp256r1"]
    assert summary.cert is not None
    assert 19 < summary.cert.days_left < 21
    assert round(summary.cert.lifetime_days) == 30
    page = render_html(finished(*_tls_results()))
    assert "<h2 id='tls-summary'>" in page
    assert "<div id='cert-life'>" in page
    assert "class='st-broken'" in page


def test_no_tls_summary_without_tls_observations() -> None:
    assert figures.tls_summary(finished(refl_failed())) is None


def _record(report_id: str, finished_at: str, **statuses: str) -> RunRecord:
    base = {"REFL-001": "PASS", "AUTHZ-001": "PASS", "TLS-001": "PASS"}
    base.update({k.replace("_", "-"): v for k, v in statuses.items()})
    severities = {k: "high" for k, v in base.items() if v == "FAIL"}
    return RunRecord(report_id, finished_at, "spawn:reference", base, severities)


def test_run_records_accumulate_in_the_history_dir(tmp_path) -> None:
    one = _record("r1", "2026-11-01T00:00:00Z", REFL_001="FAIL")
    two = _record("r2", "2026-11-02T00:00:00Z")
    assert record_run(tmp_path, one) == (one,)
    assert record_run(tmp_path, two) == (one, two)
    assert record_run(tmp_path, replace(two, finished="later")) == (
        one,
        replace(two, finished="later"),
    )
    assert len(record_run(tmp_path, _record("r3", "x"), keep=2)) == 2
    (tmp_path / "runs.json").write_text("{}")
    with pytest.raises(HistoryError, match="not a JSON list"):
        runs(tmp_path)


def test_the_trend_shows_every_run_and_what_changed_since_the_last() -> None:
    before = _record("r1", "2026-11-01T00:00:00Z", REFL_001="FAIL", AUTHZ_001="INCONCLUSIVE")
    now = _record("r2", "2026-11-02T00:00:00Z", TLS_001="FAIL")
    assert figures.findings_by_severity(before)["high"] == 1
    assert figures.statuses_of(before) == {"PASS": 1, "FAIL": 1, "INCONCLUSIVE": 1}
    changes = figures.since_last((before, now))
    assert changes is not None
    assert changes.new == (("TLS-001", "PASS", "FAIL"),)
    assert changes.fixed == (("REFL-001", "FAIL", "PASS"),)
    assert changes.other == (("AUTHZ-001", "INCONCLUSIVE", "PASS"),)
    page = render_html(finished(refl_failed()), figures.Trend((before, now)))
    assert "<svg id='trend-findings'" in page
    assert "<svg id='trend-controls'" in page
    assert "1 new finding(s), 1 fixed, 1 other change(s)" in page
    assert "evidence.history_dir</code> to keep" in render_html(finished(refl_failed()))


def test_a_bundle_with_past_runs_draws_this_run_last() -> None:
    past = figures.Trend((_record("r0", "2026-11-01T00:00:00Z"),))
    files = bundle_files(finished(refl_failed()), {}, past=past)
    page = files["report.html"].decode()
    assert "2 run(s) in <code>evidence.history_dir</code>" in page
    assert "Since the last run (2026-11-01T00:00:00Z" in page
    record = figures.record_of(json.loads(files["results.json"]))
    assert record.statuses["REFL-001"] == "FAIL"
    assert record.severities["REFL-001"] == "high"


def test_the_page_forbids_every_fetch_and_escapes_target_text() -> None:
    hostile = ControlResult.of(
        CATALOGUE["AUTHZ-001"],
        Status.FAIL,
        "",
        observations=[
            Observation(
                "<img src=x> (allowed) -> /a.B/C", "<script>x</script>", "", Status.FAIL
            ).of("allowed")
        ],
    )
    page = render_html(finished(hostile))
    assert "Content-Security-Policy" in page
    assert "default-src 'none'" in page
    assert "<script>" not in page
    assert "<img" not in page


def test_a_failing_probe_shows_its_reproducer() -> None:
    page = render_html(finished(refl_reproduced()))
    assert "<div class='repro'><b>Reproduce</b> (expect <code>OK (0)</code>)" in page
    assert html.escape(REFL_REPRODUCER.grpcurl) in page
    assert html.escape(REFL_REPRODUCER.replay) in page
    assert "class='repro'" not in render_html(finished(refl_failed()))
