"""``hipaa-grpc report merge``: the fleet view over many bundles.

Fast tests merge bundles written from typed results (one edited after the fact, one
missing); the slow test merges the bundles of real runs of a few detection-matrix rows
and finds each defect's service with exactly the controls the row trips.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.catalogue import Severity
from harness.cli import main
from harness.outcome import Status
from harness.reporting.bundle import bundle_files, write_bundle
from harness.reporting.fleet import LEVELS, fleet_html, fleet_json, merge
from harness.reporting.model import Results
from targets.catalog import BUNDLED
from tests.reporting.factory import RUN, finished, passed, refl_failed

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)


def _bundle(root: Path, name: str, results: Results, target: str, when: str) -> Path:
    results = replace(results, run=replace(RUN, target=target, finished=when))
    write_bundle(root / name, bundle_files(results, {}))
    return root / name


@pytest.fixture
def estate(tmp_path: Path) -> list[Path]:
    """A clean service, one with REFL-001 failing, one edited after its run, one missing."""
    clean = finished(passed("REFL-001"), passed("AUTHZ-001"))
    failing = finished(refl_failed(), passed("AUTHZ-001"))
    bundles = [
        _bundle(tmp_path, "orders", clean, "orders.internal:443", "2026-11-30T12:00:00Z"),
        _bundle(tmp_path, "charts", failing, "charts.internal:443", "2026-10-01T12:00:00Z"),
        _bundle(tmp_path, "edited", failing, "billing.internal:443", "2026-11-29T12:00:00Z"),
        tmp_path / "never-written",
    ]
    summary = bundles[2] / "summary.md"
    summary.write_text(summary.read_text().replace("FAIL", "PASS"))  # hide the finding
    return bundles


def test_a_bundle_that_fails_verify_is_listed_and_never_merged(estate):
    fleet = merge(estate, NOW)
    assert [s.bundle for s in fleet.refused] == [str(estate[2]), str(estate[3])]
    assert fleet.refused[0].problems == ("summary.md: SHA-256 does not match SHA256SUMS",)
    assert fleet.refused[0].target == "billing.internal:443"  # named, not merged
    assert fleet.refused[0].cells is None
    assert {f.target for f in fleet.worst_findings()} == {
        "orders.internal:443",
        "charts.internal:443",
    }
    data = fleet_json(fleet)
    assert data["refused"] == [str(estate[2]), str(estate[3])]
    assert data["services"][2] == {
        "bundle": str(estate[2]),
        "verified": False,
        "problems": ["summary.md: SHA-256 does not match SHA256SUMS"],
    }
    page = fleet_html(fleet)
    assert page.count("NOT VERIFIED: not merged") == 2
    assert "summary.md: SHA-256 does not match SHA256SUMS" in page


def test_the_heat_map_marks_each_standard_by_its_worst_automated_control(estate):
    fleet = merge(estate, NOW)
    orders, charts = fleet.merged
    assert charts.failing == ("REFL-001",)
    access = charts.cells["164.312(a)"]  # REFL-001 cites 164.312(a)(1)
    assert access.level == Severity.HIGH.value
    assert access.failing == ("REFL-001",)
    assert access.unattested == 3  # ATT-002, ATT-006, ATT-007
    assert orders.cells["164.312(a)"].level == Status.PASS.value
    # A standard with manual controls only is as its attestations are.
    assert orders.cells["164.308(b)"].level == Status.ATTESTATION_MISSING.value
    assert set(fleet_json(fleet)["services"][1]["standards"]["164.312(a)"]["controls"]) >= {
        "FAIL",
        "PASS",
        "ATTESTATION MISSING",
    }
    assert all(c.level in LEVELS for s in fleet.merged for c in (s.cells or {}).values())
    assert [std for std, _ in fleet.standards][:2] == ["164.312(a)", "164.312(b)"]


def test_worst_findings_first_and_stalest_runs_first(estate):
    fleet = merge(estate, NOW)
    worst = fleet.worst_findings()
    assert (worst[0].control, worst[0].status, worst[0].target) == (
        "REFL-001",
        "FAIL",
        "charts.internal:443",
    )
    assert {f.status for f in worst[1:]} == {Status.ATTESTATION_MISSING.value}
    stalest = fleet.stalest()
    assert [s.target for s, _ in stalest] == ["charts.internal:443", "orders.internal:443"]
    assert stalest[0][1] == pytest.approx(60.5)


def test_the_page_is_self_contained(estate):
    page = fleet_html(merge(estate, NOW))
    assert "default-src 'none'" in page
    assert "<table id='heat-map' class='heat'>" in page
    assert "<script" not in page
    assert "src=" not in page


def test_the_command_writes_both_files_and_fails_on_a_refused_bundle(estate, tmp_path, capsys):
    assert main(["report", "merge", *map(str, estate[:2]), "-o", str(tmp_path / "a")]) == 0
    assert main(["report", "merge", *map(str, estate), "-o", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert f"NOT MERGED {estate[2]}: summary.md: SHA-256 does not match SHA256SUMS" in out
    assert "2 bundle(s) merged, 2 failed verify" in out
    data = json.loads((tmp_path / "b" / "fleet.json").read_text())
    assert (data["merged"], len(data["refused"])) == (2, 2)
    assert (tmp_path / "b" / "index.html").is_file()


# -- bundles of real runs: a few rows of the detection matrix ----------------------------------

ROWS = ("reflection", "rbac-hole", "plaintext")


@pytest.mark.slow
def test_merge_over_detection_matrix_rows_lists_each_defects_failing_controls(tmp_path):
    defects = {d.name: d for d in BUNDLED["reference"].defects}
    bundles = []
    for row in ROWS:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--hipaa-seed=7",
             f"--hipaa-target=spawn:reference+{row}", f"--hipaa-report={tmp_path / row}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stdout[-3000:]
        bundles.append(tmp_path / row)
    assert main(["report", "merge", *map(str, bundles), "-o", str(tmp_path / "fleet")]) == 0
    data = json.loads((tmp_path / "fleet" / "fleet.json").read_text())
    failing = {s["target"]: s["failing"] for s in data["services"]}
    assert failing == {f"spawn:reference+{row}": list(defects[row].trips) for row in ROWS}
    page = (tmp_path / "fleet" / "index.html").read_text()
    for row in ROWS:
        assert f"<b>spawn:reference+{row}</b>" in page
        for control in defects[row].trips:
            assert control in page
