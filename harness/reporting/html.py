"""``report.html``: one self-contained page (inline CSS, no scripts, no fetches).

One function per section: the head and run table, the totals, the roll-up by standard,
one table per control family (attestation, probes, observations per control), EVID-001.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from importlib import resources

from harness import __version__
from harness.outcome import Observation, ProbeResult, Status
from harness.reporting.model import (
    DISCLAIMER,
    AttestationRecord,
    ControlResult,
    Evidence,
    Results,
    StandardRollup,
)

_e = html.escape
_RUN_ROWS = (
    ("Target", "target"),
    ("Address", "address"),
    ("Transport", "transport"),
    ("TLS profile", "profile"),
    ("Seed", "seed"),
    ("Started (UTC)", "started"),
    ("Finished (UTC)", "finished"),
    ("Operator", "operator"),
)


def _css() -> str:
    return (resources.files("harness") / "report.css").read_text(encoding="utf-8")


def _md(text: str) -> str:
    """Escape ``text`` for HTML, rendering the catalogue's `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _badge(status: Status | str) -> str:
    text = status.value if isinstance(status, Status) else status
    css = "MISSING" if text == Status.ATTESTATION_MISSING.value else text
    return f'<span class="s {_e(css)}">{_e(text)}</span>'


def render_html(results: Results) -> str:
    """The page: every section, in order."""
    evidence = _evidence_of(results)
    out = [
        *_head(results),
        *_verdict(results, evidence),
        *_rollup(results.rollup),
        *_families(results.controls),
        *_integrity(evidence),
        "</body></html>",
    ]
    return "\n".join(out)


def _evidence_of(results: Results) -> Evidence:
    if results.evidence is None:
        raise ValueError("EVID-001 is not decided yet: render the bundle's results")
    return results.evidence


def _head(results: Results) -> list[str]:
    """Title, styles, heading, and the run: target, address, profile, times, operator."""
    run = results.run.to_json()
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>HIPAA technical safeguards: {_e(str(run.get('target', '')))}</title>",
        f"<style>{_css()}</style></head><body>",
        "<h1>HIPAA technical safeguards: conformance report</h1>",
        f"<p class='meta'>pytest-hipaa-grpc {_e(__version__)} &middot; "
        f"report {_e(results.report_id)}</p>",
        "<table class='meta'>",
    ]
    for label, key in _RUN_ROWS:
        out.append(f"<tr><td>{label}</td><td><code>{_e(str(run.get(key, '')))}</code></td></tr>")
    out.append("</table>")
    return out


def _verdict(results: Results, evidence: Evidence) -> list[str]:
    """The disclaimer, REPORT INVALID when EVID-001 failed, totals, probe coverage."""
    out = [f"<p class='disclaimer'>{_e(DISCLAIMER)}</p>"]
    if not evidence.valid:
        out.append(f"<p class='invalid'>REPORT INVALID (EVID-001): {_e(evidence.summary)}</p>")
    counts = sorted((s.value, n) for s, n in results.totals.items())
    out.append("<p>" + " &middot; ".join(f"{_badge(k)} {v}" for k, v in counts) + "</p>")
    if results.probe_coverage is not None:
        out.append(f"<p>{_e(results.probe_coverage.line())}</p>")
    return out


def _rollup(rollup: Iterable[StandardRollup]) -> list[str]:
    """The table by HIPAA standard."""
    out = [
        "<h2>By HIPAA standard</h2><table><tr><th>Standard</th><th>Automated controls</th>"
        "<th>Worst failure</th><th>Attestations</th></tr>"
    ]
    for r in rollup:
        counts = sorted((s.value, n) for s, n in r.counts.items())
        said = ", ".join(f"{n} {s}" for s, n in counts) or "none"
        atts = ", ".join(f"{k} {s.value}" for k, s in r.attestations.items())
        worst = r.worst_failure.value if r.worst_failure else ""
        out.append(
            f"<tr><td><b>{_e(r.standard)}</b> {_e(r.name)}</td><td>{_e(said)}</td>"
            f"<td>{_e(worst)}</td><td>{_e(atts)}</td></tr>"
        )
    out.append("</table>")
    return out


def _families(controls: Iterable[ControlResult]) -> list[str]:
    """One table per catalogue family, in the order the families first occur."""
    families: dict[str, list[ControlResult]] = {}
    for c in controls:
        families.setdefault(c.family, []).append(c)
    out = []
    for family, members in families.items():
        out.append(
            f"<h2>{_e(family)}</h2><table class='controls'>"
            "<tr><th>Control</th><th>Status</th><th>Finding</th></tr>"
        )
        out += [_control_row(c) for c in members]
        out.append("</table>")
    return out


def _control_row(c: ControlResult) -> str:
    """One control: ID, title, citation; status and severity; why, and the evidence."""
    sev = f"<div class='sev'>severity {_e(c.severity.value)}</div>" if c.severity else ""
    body = [f"<b>{_e(c.summary)}</b>" if c.summary else ""]
    if c.attestation:
        body.append(_attestation_html(c.attestation))
    if c.probes:
        body.append(_probes_html(c.probes, c.status))
    if c.observations:
        body.append(_observations_html(c.observations, c.status))
    return (
        f"<tr><td><b>{_e(c.id)}</b><br>{_md(c.title)}"
        f"<div class='sev'>{_e(c.citation)}</div></td>"
        f"<td>{_badge(c.status)}{sev}</td><td>{''.join(body)}</td></tr>"
    )


def _attestation_html(a: AttestationRecord) -> str:
    return (
        f"<div class='obs'>Attested by {_e(a.attested_by)} {_e(a.role)}, "
        f"{_e(a.date)}, valid until {_e(a.valid_until)}; "
        f"evidence {_e(a.evidence)} sha256:{_e(a.evidence_sha256[:16])}&hellip;"
        f"<br>{_e(a.statement)}</div>"
    )


def _probes_html(probes: Sequence[ProbeResult], status: Status) -> str:
    """The declared probes: status, ID, title, why one did not run, what would enable it."""
    rows = "".join(
        f"<tr><td>{_badge(p.status)}</td><td><b>{_e(p.id)}</b> {_e(p.title)}"
        + ("" if p.required else " <span class='sev'>(optional)</span>")
        + (f"<br>{_e(p.reason)}" if p.reason else "")
        + (f"<br><b>Enable with:</b> <code>{_e(p.enable)}</code>" if p.enable else "")
        + "</td></tr>"
        for p in probes
    )
    ran = sum(1 for p in probes if p.ran)
    shown = " open" if status in (Status.INCONCLUSIVE, Status.SKIP) else ""
    return (
        f"<details{shown}><summary>{ran} of {len(probes)} declared probe(s) run</summary>"
        f"<table class='obs'>{rows}</table></details>"
    )


def _observations_html(observations: Sequence[Observation], status: Status) -> str:
    """Every probe made: what was sent (with its request ID), observed and expected."""
    rows = "".join(
        f"<tr><td>{_badge(o.status)}</td><td><b>Sent:</b> {_e(o.probe)}"
        + (f" <span class='sev'>[request-id {_e(o.request_id)}]</span>" if o.request_id else "")
        + f"<br><b>Observed:</b> {_e(o.observed)}"
        + f"<br><b>Expected:</b> {_e(o.expected)}</td></tr>"
        for o in observations
    )
    shown = " open" if status in (Status.FAIL, Status.ERROR, Status.INCONCLUSIVE) else ""
    return (
        f"<details{shown}><summary>{len(observations)} probe(s)</summary>"
        f"<table class='obs'>{rows}</table></details>"
    )


def _integrity(evidence: Evidence) -> list[str]:
    """EVID-001's verdict."""
    return [
        "<h2>Evidence integrity (EVID-001)</h2>"
        f"<p>{_badge(evidence.status)} {_e(evidence.summary)}</p>"
    ]
