"""The evidence bundle: what a compliance lead hands an auditor, and what CI reads.

:func:`build_results` turns per-test control results into ``results.json`` (every control
of the catalogue, a roll-up by HIPAA standard, attestations); the ``render_*`` functions
write the other views of the same data; :func:`write_bundle` writes them all atomically
with a manifest and ``SHA256SUMS``; :func:`verify` and :func:`diff` serve
``hipaa-grpc report verify|diff``. Nothing here imports pytest.

Every text that came from the target passes :func:`redact` first, and the bundle is
self-scanned (EVID-001) for bearer tokens, private keys and canaries before it is written.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import html
import json
import os
import platform
import re
import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from harness import __version__
from harness.canary import holds_standalone
from harness.catalogue import CATALOGUE, Control

SCHEMA_VERSION = "2.0"
#: Schema versions ``report diff`` and ``report verify`` still read (older bundles).
READABLE_SCHEMAS = ("1.0", "2.0")
DISCLAIMER = (
    "Automated testing provides evidence about specific technical behaviours of one endpoint "
    "at one point in time; it is not a determination of HIPAA compliance."
)
FINDING_STATUSES = ("FAIL", "WARN", "ATTESTATION MISSING")
#: When several tests speak for one control, the first of these that occurs wins.
_PRECEDENCE = ("ERROR", "FAIL", "INCONCLUSIVE", "WARN", "PASS", "SKIP")
_STANDARDS = {
    "164.312(a)": "Access control",
    "164.312(b)": "Audit controls",
    "164.312(c)": "Integrity",
    "164.312(d)": "Person or entity authentication",
    "164.312(e)": "Transmission security",
    "164.308(a)": "Administrative safeguards",
    "164.308(b)": "Business associate contracts",
    "164.314(a)": "Business associate contracts",
    "164.316(b)": "Documentation",
    "164.502(b)": "Minimum necessary",
    "164.514(b)": "De-identification",
    "164.514(d)": "Minimum necessary",
}
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_PACKAGES = (
    "pytest-hipaa-grpc",
    "pytest",
    "grpcio",
    "protobuf",
    "sslyze",
    "hypothesis",
    "atheris",
    "PyJWT",
    "cryptography",
)


# -- redaction ----------------------------------------------------------------------------


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and anything shaped like a JWT replaced by its hash."""

    def mark(value: str) -> str:
        return f"<redacted sha256:{hashlib.sha256(value.encode()).hexdigest()[:12]}>"

    for secret in sorted((s for s in secrets if len(s) >= 8), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, mark(secret))
    return _JWT.sub(lambda m: mark(m.group(0)), text)


def _redact_tree(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_redact_tree(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _redact_tree(v, secrets) for k, v in value.items()}
    return value


# -- results ------------------------------------------------------------------------------


def standards_of(citation: str) -> list[str]:
    """HIPAA standards a citation names: ``D: 164.312(e)(1), (e)(2)(ii)`` -> ``164.312(e)``."""
    found: list[str] = []
    section = ""
    for m in re.finditer(r"(164\.\d+)?((?:\([a-z0-9]+\))+)", citation):
        section = m.group(1) or section
        letter = re.match(r"\(([a-z])\)", m.group(2))
        if section and letter:
            key = f"{section}({letter.group(1)})"
            if key not in found:
                found.append(key)
    return found


def _merge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One control's result from the tests that speak for it (worst status wins)."""
    rows = sorted(
        rows, key=lambda r: _PRECEDENCE.index(r["status"]) if r["status"] in _PRECEDENCE else 0
    )
    first = dict(rows[0])
    first["observations"] = [o for r in rows for o in r.get("observations", [])]
    first["probes"] = [p for r in rows for p in r.get("probes", [])]
    first["tests"] = sorted({t for r in rows for t in r.get("tests", [])})
    return first


def build_results(
    rows: Iterable[Mapping[str, Any]],
    run: Mapping[str, Any],
    attestations: list[dict[str, Any]] | None,
    *,
    registered: Iterable[str],
    secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """The content of ``results.json``.

    Args:
        rows: One per test that carried a control: control, status, severity, summary,
            observations, tests (node IDs).
        run: Target, address, transport, profile, seed, started, finished.
        attestations: From :func:`harness.attest.attestation_results`, or ``None`` when no
            attestation file was given (every ATT control is then ATTESTATION MISSING).
        registered: Control IDs that have a check in this harness version.
        secrets: Tokens used in the run: never written, wherever they appear.
    """
    by_control: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_control.setdefault(str(row["control"]), []).append(dict(row))
    checks = set(registered)
    att = {a["control"]: a for a in attestations or []}
    controls = []
    for control in CATALOGUE.values():
        if control.id in by_control:
            result = _merge(by_control[control.id])
        elif not control.automated:
            result = att.get(control.id) or {
                "status": "ATTESTATION MISSING",
                "severity": "high",
                "summary": "no attestation file given (--hipaa-attestations)",
                "attestation": None,
            }
        elif control.id == "EVID-001":
            continue  # decided when the bundle is written
        else:
            reason = (
                "not selected in this run"
                if control.id in checks
                else f"no check in pytest-hipaa-grpc {__version__} yet"
            )
            result = {"status": "SKIP", "severity": None, "summary": reason}
        controls.append(_control_entry(control, result))
    data = {
        "schema_version": SCHEMA_VERSION,
        "report_id": str(uuid.uuid4()),
        "disclaimer": DISCLAIMER,
        "run": dict(run),
        "controls": controls,
    }
    redacted: dict[str, Any] = _redact_tree(data, tuple(secrets))
    _finish(redacted)
    return redacted


def _control_entry(control: Control, result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": control.id,
        "title": control.title,
        "family": control.family,
        "citation": control.citation,
        "standards": standards_of(control.citation),
        "checklist": list(control.checklist),
        "automated": control.automated,
        "default_severity": control.severity.value,
        "status": result["status"],
        "severity": result.get("severity"),
        "summary": result.get("summary", ""),
        "observations": list(result.get("observations", [])),
        "probes": list(result.get("probes", [])),
        "tests": list(result.get("tests", [])),
        "attestation": result.get("attestation"),
    }


def _finish(data: dict[str, Any]) -> None:
    """Totals and the roll-up by HIPAA standard, from the controls."""
    totals: dict[str, int] = {}
    for c in data["controls"]:
        totals[c["status"]] = totals.get(c["status"], 0) + 1
    data["totals"] = totals
    data["probe_coverage"] = probe_coverage(data["controls"])
    rollup: dict[str, dict[str, Any]] = {}
    for c in data["controls"]:
        for std in c["standards"]:
            entry = rollup.setdefault(
                std,
                {
                    "standard": std,
                    "name": _STANDARDS.get(std, ""),
                    "controls": [],
                    "counts": {},
                    "worst_failure": None,
                    "attestations": {},
                },
            )
            entry["controls"].append(c["id"])
            if c["automated"]:
                entry["counts"][c["status"]] = entry["counts"].get(c["status"], 0) + 1
                if c["status"] == "FAIL":
                    entry["worst_failure"] = _worse(entry["worst_failure"], c["severity"])
            else:
                entry["attestations"][c["id"]] = c["status"]
    data["rollup"] = [
        rollup[k] for k in sorted(rollup, key=lambda s: (not s.startswith("164.312"), s))
    ]


def probe_coverage(controls: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Probes declared, run (judged or tried), and required ones that did not run."""
    probes = [p for c in controls for p in c.get("probes", [])]
    ran = [p for p in probes if p["status"] not in ("SKIP", "ERROR")]
    missing = [p for p in probes if p["required"] and p["status"] in ("SKIP", "ERROR")]
    return {"declared": len(probes), "run": len(ran), "required_not_run": len(missing)}


def coverage_line(coverage: Mapping[str, int]) -> str:
    """``probe coverage: 180 of 190 probes run; 3 required probes did not run``."""
    line = f"probe coverage: {coverage['run']} of {coverage['declared']} probes run"
    if coverage.get("required_not_run"):
        line += f"; {coverage['required_not_run']} required probes did not run"
    return line


def _worse(a: str | None, b: str | None) -> str | None:
    order = (None, "low", "medium", "high", "critical")
    return a if order.index(a) >= order.index(b if b in order else None) else b


# -- views --------------------------------------------------------------------------------


def _css() -> str:
    return (resources.files("harness") / "report.css").read_text(encoding="utf-8")


def _md(text: str) -> str:
    """Escape ``text`` for HTML, rendering the catalogue's `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _badge(status: str) -> str:
    css = "MISSING" if status == "ATTESTATION MISSING" else status
    return f'<span class="s {html.escape(css)}">{html.escape(status)}</span>'


def render_html(data: Mapping[str, Any], evidence: Mapping[str, Any]) -> str:
    """``report.html``: one self-contained page (inline CSS, no scripts, no fetches)."""
    e = html.escape
    run = data["run"]
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>HIPAA technical safeguards: {e(str(run.get('target', '')))}</title>",
        f"<style>{_css()}</style></head><body>",
        "<h1>HIPAA technical safeguards: conformance report</h1>",
        f"<p class='meta'>pytest-hipaa-grpc {e(__version__)} &middot; "
        f"report {e(data['report_id'])}</p>",
        "<table class='meta'>",
    ]
    for label, key in (
        ("Target", "target"),
        ("Address", "address"),
        ("Transport", "transport"),
        ("TLS profile", "profile"),
        ("Seed", "seed"),
        ("Started (UTC)", "started"),
        ("Finished (UTC)", "finished"),
        ("Operator", "operator"),
    ):
        out.append(f"<tr><td>{label}</td><td><code>{e(str(run.get(key, '')))}</code></td></tr>")
    out.append("</table>")
    out.append(f"<p class='disclaimer'>{e(DISCLAIMER)}</p>")
    if evidence.get("status") != "PASS":
        out.append(
            "<p class='invalid'>REPORT INVALID (EVID-001): "
            f"{e(str(evidence.get('summary', '')))}</p>"
        )
    totals = " &middot; ".join(f"{_badge(k)} {v}" for k, v in sorted(data["totals"].items()))
    out.append(f"<p>{totals}</p>")
    if "probe_coverage" in data:
        out.append(f"<p>{e(coverage_line(data['probe_coverage']))}</p>")
    out.append(
        "<h2>By HIPAA standard</h2><table><tr><th>Standard</th><th>Automated controls</th>"
        "<th>Worst failure</th><th>Attestations</th></tr>"
    )
    for r in data["rollup"]:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(r["counts"].items())) or "none"
        atts = ", ".join(f"{k} {v}" for k, v in r["attestations"].items()) or ""
        out.append(
            f"<tr><td><b>{e(r['standard'])}</b> {e(r['name'])}</td><td>{e(counts)}</td>"
            f"<td>{e(r['worst_failure'] or '')}</td><td>{e(atts)}</td></tr>"
        )
    out.append("</table>")
    families: dict[str, list[Mapping[str, Any]]] = {}
    for c in data["controls"]:
        families.setdefault(c["family"], []).append(c)
    for family, controls in families.items():
        out.append(
            f"<h2>{e(family)}</h2><table class='controls'>"
            "<tr><th>Control</th><th>Status</th><th>Finding</th></tr>"
        )
        for c in controls:
            sev = f"<div class='sev'>severity {e(c['severity'])}</div>" if c.get("severity") else ""
            body = [f"<b>{e(c['summary'])}</b>" if c["summary"] else ""]
            if c.get("attestation"):
                a = c["attestation"]
                body.append(
                    f"<div class='obs'>Attested by {e(a['attested_by'])} {e(a['role'])}, "
                    f"{e(a['date'])}, valid until {e(a['valid_until'])}; "
                    f"evidence {e(a['evidence'])} sha256:{e(a['evidence_sha256'][:16])}&hellip;"
                    f"<br>{e(a['statement'])}</div>"
                )
            if c.get("probes"):
                body.append(_probes_html(c["probes"], c["status"]))
            if c["observations"]:
                rows = "".join(
                    f"<tr><td>{_badge(o['status'])}</td><td><b>Sent:</b> {e(o['probe'])}"
                    + (
                        f" <span class='sev'>[request-id {e(o['request_id'])}]</span>"
                        if o.get("request_id")
                        else ""
                    )
                    + f"<br><b>Observed:</b> {e(o['observed'])}"
                    + f"<br><b>Expected:</b> {e(o['expected'])}</td></tr>"
                    for o in c["observations"]
                )
                shown = " open" if c["status"] in ("FAIL", "ERROR", "INCONCLUSIVE") else ""
                body.append(
                    f"<details{shown}><summary>{len(c['observations'])} probe(s)</summary>"
                    f"<table class='obs'>{rows}</table></details>"
                )
            out.append(
                f"<tr><td><b>{e(c['id'])}</b><br>{_md(c['title'])}"
                f"<div class='sev'>{e(c['citation'])}</div></td>"
                f"<td>{_badge(c['status'])}{sev}</td><td>{''.join(body)}</td></tr>"
            )
        out.append("</table>")
    out.append(
        "<h2>Evidence integrity (EVID-001)</h2>"
        f"<p>{_badge(str(evidence.get('status')))} {e(str(evidence.get('summary', '')))}</p>"
    )
    out.append("</body></html>")
    return "\n".join(out)


def _probes_html(probes: list[Mapping[str, Any]], status: str) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{_badge(p['status'])}</td><td><b>{e(p['id'])}</b> {e(p['title'])}"
        + ("" if p["required"] else " <span class='sev'>(optional)</span>")
        + (f"<br>{e(p['reason'])}" if p.get("reason") else "")
        + (f"<br><b>Enable with:</b> <code>{e(p['enable'])}</code>" if p.get("enable") else "")
        + "</td></tr>"
        for p in probes
    )
    ran = sum(1 for p in probes if p["status"] not in ("SKIP", "ERROR"))
    shown = " open" if status in ("INCONCLUSIVE", "SKIP") else ""
    return (
        f"<details{shown}><summary>{ran} of {len(probes)} declared probe(s) run</summary>"
        f"<table class='obs'>{rows}</table></details>"
    )


def render_junit(data: Mapping[str, Any]) -> bytes:
    """``junit.xml``: one testcase per control, control ID and citation as properties."""
    counts = data["totals"]
    suite = ET.Element(
        "testsuite",
        name="hipaa-grpc",
        tests=str(len(data["controls"])),
        failures=str(counts.get("FAIL", 0) + counts.get("ATTESTATION MISSING", 0)),
        errors=str(counts.get("ERROR", 0)),
        skipped=str(counts.get("SKIP", 0) + counts.get("INCONCLUSIVE", 0)),
        timestamp=str(data["run"].get("started", "")),
    )
    for c in data["controls"]:
        case = ET.SubElement(
            suite, "testcase", classname=f"hipaa.{c['family']}", name=f"{c['id']} {c['title']}"
        )
        props = ET.SubElement(case, "properties")
        for name, value in (
            ("hipaa_control", c["id"]),
            ("hipaa_status", c["status"]),
            ("hipaa_severity", c["severity"] or ""),
            ("hipaa_citation", c["citation"]),
        ):
            ET.SubElement(props, "property", name=name, value=str(value))
        text = "\n".join(
            f"{o['status']} {o['probe']}: observed {o['observed']}; expected {o['expected']}"
            for o in c["observations"]
        )
        if c["status"] in ("FAIL", "ATTESTATION MISSING"):
            ET.SubElement(
                case, "failure", message=c["summary"], type=c["severity"] or ""
            ).text = text
        elif c["status"] == "ERROR":
            ET.SubElement(case, "error", message=c["summary"]).text = text
        elif c["status"] in ("SKIP", "INCONCLUSIVE"):
            ET.SubElement(case, "skipped", message=f"{c['status']}: {c['summary']}")
    xml: bytes = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    return xml


def render_sarif(data: Mapping[str, Any]) -> dict[str, Any]:
    """``results.sarif``: SARIF 2.1.0, one rule per control, one result per finding."""
    level = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
    rules, results = [], []
    for index, c in enumerate(data["controls"]):
        rules.append(
            {
                "id": c["id"],
                "shortDescription": {"text": c["title"]},
                "fullDescription": {"text": f"{c['title']}. HIPAA: {c['citation']}"},
                "defaultConfiguration": {"level": level[c["default_severity"]]},
                "properties": {
                    "citation": c["citation"],
                    "checklist": c["checklist"],
                    "severity": c["default_severity"],
                    "automated": c["automated"],
                },
            }
        )
        if c["status"] in FINDING_STATUSES:
            results.append(
                {
                    "ruleId": c["id"],
                    "ruleIndex": index,
                    "kind": "fail",
                    "level": "note"
                    if c["status"] == "WARN"
                    else level.get(c["severity"] or c["default_severity"], "error"),
                    "message": {"text": f"{c['id']} {c['status']}: {c['summary']}"},
                    "locations": [
                        {
                            "logicalLocations": [
                                {
                                    "fullyQualifiedName": str(data["run"].get("target", "")),
                                    "kind": "resource",
                                }
                            ]
                        }
                    ],
                    "properties": {
                        "status": c["status"],
                        "severity": c["severity"],
                        "probes": len(c["observations"]),
                    },
                }
            )
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "pytest-hipaa-grpc",
                        "version": __version__,
                        "informationUri": "https://pypi.org/project/pytest-hipaa-grpc/",
                        "rules": rules,
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "startTimeUtc": data["run"].get("started"),
                        "endTimeUtc": data["run"].get("finished"),
                    }
                ],
                "results": results,
                "properties": {"report_id": data["report_id"], "target": data["run"].get("target")},
            }
        ],
    }


def render_summary(data: Mapping[str, Any], evidence: Mapping[str, Any]) -> str:
    """``summary.md``: for a CI job summary."""
    lines = [
        f"## HIPAA technical safeguards: {data['run'].get('target', '')}",
        "",
        "> " + DISCLAIMER,
        "",
        " | ".join(f"**{k}** {v}" for k, v in sorted(data["totals"].items())),
        "",
        "| Control | Status | Severity | Finding |",
        "|---|---|---|---|",
    ]
    for c in data["controls"]:
        if c["status"] in ("PASS", "SKIP", "ATTESTED"):
            continue
        summary = c["summary"].replace("|", "\\|").replace("\n", " ")[:240]
        lines.append(
            f"| {c['id']} {c['title']} | {c['status']} | {c['severity'] or ''} | {summary} |"
        )
    passed = [c["id"] for c in data["controls"] if c["status"] == "PASS"]
    lines += [
        "",
        f"Passed: {', '.join(passed) or 'none'}",
        "",
        coverage_line(data.get("probe_coverage", probe_coverage(data["controls"]))),
        "",
        f"Evidence integrity (EVID-001): {evidence.get('status')}",
    ]
    return "\n".join(lines) + "\n"


def manifest(data: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest.json``: versions, config hash, target, times, operator."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    canonical = json.dumps(config, sort_keys=True, default=str).encode()
    return {
        "report_id": data["report_id"],
        "harness_version": __version__,
        "versions": versions,
        "config_sha256": hashlib.sha256(canonical).hexdigest(),
        "target": data["run"].get("target"),
        "profile": data["run"].get("profile"),
        "started": data["run"].get("started"),
        "finished": data["run"].get("finished"),
        "operator": data["run"].get("operator"),
    }


# -- bundle -------------------------------------------------------------------------------


def self_scan(
    files: Mapping[str, bytes], secrets: Iterable[str], canaries: Iterable[str] = ()
) -> list[str]:
    """Problems: bearer tokens, private keys or canaries in any file but the canary manifest."""
    problems = []
    secrets = [s for s in secrets if len(s) >= 8]
    canaries = [c for c in canaries if c]
    for name, blob in sorted(files.items()):
        if name == "canaries.json":
            continue
        text = blob.decode("utf-8", "replace")
        if _JWT.search(text) or any(s in text for s in secrets):
            problems.append(f"{name}: holds a bearer token")
        if _PRIVATE_KEY.search(text):
            problems.append(f"{name}: holds a private key")
        if any(holds_standalone(blob, c) for c in canaries):
            problems.append(f"{name}: holds a canary value outside canaries.json")
    return problems


def _sums(files: Mapping[str, bytes], extra: Iterable[str] = ()) -> bytes:
    lines = [f"{hashlib.sha256(blob).hexdigest()}  {name}" for name, blob in sorted(files.items())]
    return ("\n".join([*lines, *extra]) + "\n").encode()


def bundle_files(
    data: dict[str, Any],
    config: Mapping[str, Any],
    *,
    secrets: Iterable[str] = (),
    canaries: Iterable[str] = (),
) -> dict[str, bytes]:
    """Every file of the bundle, EVID-001 decided by self-scanning them first."""
    secrets = tuple(secrets)
    canaries = tuple(canaries)
    unfinished = [c["id"] for c in data["controls"] if not c["status"]]
    draft = {"results.json": json.dumps(data).encode()}
    problems = self_scan(draft, secrets, canaries) + [f"{i}: no final status" for i in unfinished]
    evidence = {
        "status": "FAIL" if problems else "PASS",
        "severity": "medium" if problems else None,
        "summary": "; ".join(problems)
        if problems
        else (
            "SHA256SUMS written; every control has a final status; "
            "self-scan found no token, key or canary"
        ),
    }
    control = CATALOGUE["EVID-001"]
    data["controls"].append(_control_entry(control, evidence))
    _finish(data)
    data["evidence"] = {"id": "EVID-001", **evidence}
    files = {
        "results.json": (json.dumps(data, indent=2) + "\n").encode(),
        "report.html": render_html(data, evidence).encode(),
        "junit.xml": render_junit(data),
        "results.sarif": (json.dumps(render_sarif(data), indent=2) + "\n").encode(),
        "summary.md": render_summary(data, evidence).encode(),
        "manifest.json": (json.dumps(manifest(data, config), indent=2) + "\n").encode(),
        "canaries.json": (json.dumps({"canaries": list(canaries)}, indent=2) + "\n").encode(),
    }
    late = self_scan(files, secrets, canaries)
    if late and evidence["status"] == "PASS":  # a view leaked what results.json did not
        raise AssertionError(f"report views leak: {late}")
    attested = [
        "{}  attestation:{}:{}".format(
            c["attestation"]["evidence_sha256"], c["id"], c["attestation"]["evidence"]
        )
        for c in data["controls"]
        if c.get("attestation")
    ]
    files["SHA256SUMS"] = _sums(files, attested)
    return files


def write_bundle(dest: Path, files: Mapping[str, bytes]) -> None:
    """Write the bundle so that ``dest`` holds the previous bundle or the complete new one.

    Files go to a sibling temporary directory, which then replaces ``dest`` by rename.
    """
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.parent / f".{dest.name}.previous"
    if not dest.exists() and old.exists():
        old.rename(dest)  # an earlier run stopped between its two renames
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for name, blob in files.items():
            with (tmp / name).open("wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def verify(directory: Path) -> list[str]:
    """Problems with a bundle: SHA256SUMS mismatches or gaps, and the self-scan."""
    sums = directory / "SHA256SUMS"
    if not sums.is_file():
        return [f"{directory}: no SHA256SUMS (not an evidence bundle)"]
    problems = []
    listed = set()
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.startswith("attestation:"):
            continue
        listed.add(name)
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: listed in SHA256SUMS but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{name}: SHA-256 does not match SHA256SUMS")
    for path in sorted(directory.iterdir()):
        if path.name != "SHA256SUMS" and path.name not in listed:
            problems.append(f"{path.name}: not listed in SHA256SUMS")
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    problems += _schema_problems(files.get("results.json"))
    try:
        canaries = json.loads(files.get("canaries.json", b"{}")).get("canaries", [])
    except ValueError:
        canaries = []
        problems.append("canaries.json: not JSON")
    return problems + self_scan(files, (), canaries)


def _schema_problems(blob: bytes | None) -> list[str]:
    if blob is None:
        return ["results.json: missing"]
    try:
        version = json.loads(blob).get("schema_version")
    except (ValueError, AttributeError):
        return ["results.json: not a JSON object"]
    if version not in READABLE_SCHEMAS:
        readable = ", ".join(READABLE_SCHEMAS)
        return [
            f"results.json: schema version {version!r} is not one this harness reads ({readable})"
        ]
    return []


def findings(data: Mapping[str, Any]) -> dict[str, str]:
    """Control ID -> status, for every control whose status is a finding."""
    return {c["id"]: c["status"] for c in data["controls"] if c["status"] in FINDING_STATUSES}


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """New, fixed and unchanged findings between two results."""
    a, b = findings(old), findings(new)
    new_ = sorted(k for k in b if a.get(k) != b[k])
    fixed = sorted(k for k in a if k not in b)
    same = sorted(k for k in b if a.get(k) == b[k])
    return new_, fixed, same


def now_utc() -> str:
    """The current UTC time, RFC 3339."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def operator() -> str:
    """Who ran the harness (the OS user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
