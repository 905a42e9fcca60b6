"""``report.html``: one self-contained page (inline CSS and SVG, no scripts, no fetches).

One function per section: the head and run table, the totals, the pictures (the trend
across runs, AUTHZ-001's grid, the TLS summary, probe coverage per family), the roll-up by
standard, one table per control family (attestation, probes, observations per control),
EVID-001. A Content-Security-Policy in the head forbids every fetch, so even text from
the target cannot make the page load anything. The pictures' data come from
:mod:`~harness.reporting.figures`; their markup is here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources

from harness import __version__
from harness.outcome import Observation, ProbeResult, Status
from harness.reporting import figures
from harness.reporting.figures import (
    CertLife,
    Changes,
    FamilyCoverage,
    RbacGrid,
    Seen,
    TlsSummary,
    Trend,
)
from harness.reporting.model import (
    DISCLAIMER,
    AttestationRecord,
    ControlResult,
    Evidence,
    Reproducer,
    Results,
    StandardRollup,
)

_e = html.escape
#: Nothing may be fetched: no scripts, images, fonts, frames or connections; inline styles only.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
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


def stylesheet() -> str:
    """The stylesheet of every page the harness writes (``harness/report.css``)."""
    return (resources.files("harness") / "report.css").read_text(encoding="utf-8")


def _md(text: str) -> str:
    """Escape ``text`` for HTML, rendering the catalogue's `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def badge(status: Status | str) -> str:
    """A status as a coloured label."""
    text = status.value if isinstance(status, Status) else status
    css = "MISSING" if text == Status.ATTESTATION_MISSING.value else text
    return f'<span class="s {_e(css)}">{_e(text)}</span>'


def render_html(results: Results, trend: Trend | None = None) -> str:
    """The page: every section, in order; ``trend`` when ``evidence.history_dir`` is set."""
    evidence = _evidence_of(results)
    out = [
        *_head(results),
        *_verdict(results, evidence),
        *_trend(trend),
        *_rbac(figures.rbac_grid(results.control("AUTHZ-001"))),
        *_tls(figures.tls_summary(results)),
        *_coverage(figures.coverage_by_family(results.controls)),
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
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>HIPAA technical safeguards: {_e(str(run.get('target', '')))}</title>",
        f"<style>{stylesheet()}</style></head><body>",
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
    out.append("<p>" + " &middot; ".join(f"{badge(k)} {v}" for k, v in counts) + "</p>")
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
        body.append(_probes_html(c.probes, c.status, dict(c.reproducers)))
    if c.observations:
        body.append(_observations_html(c.observations, c.status))
    return (
        f"<tr><td><b>{_e(c.id)}</b><br>{_md(c.title)}"
        f"<div class='sev'>{_e(c.citation)}</div></td>"
        f"<td>{badge(c.status)}{sev}</td><td>{''.join(body)}</td></tr>"
    )


def _attestation_html(a: AttestationRecord) -> str:
    return (
        f"<div class='obs'>Attested by {_e(a.attested_by)} {_e(a.role)}, "
        f"{_e(a.date)}, valid until {_e(a.valid_until)}; "
        f"evidence {_e(a.evidence)} sha256:{_e(a.evidence_sha256[:16])}&hellip;"
        f"<br>{_e(a.statement)}</div>"
    )


def _probes_html(
    probes: Sequence[ProbeResult], status: Status, reproducers: Mapping[str, Reproducer]
) -> str:
    """The declared probes: status, ID, title, why one did not run, what enables it.

    A failing probe with a reproducer shows the commands that re-send what was sent.
    """
    rows = "".join(
        f"<tr><td>{badge(p.status)}</td><td><b>{_e(p.id)}</b> {_e(p.title)}"
        + ("" if p.required else " <span class='sev'>(optional)</span>")
        + (f"<br>{_e(p.reason)}" if p.reason else "")
        + (f"<br><b>Enable with:</b> <code>{_e(p.enable)}</code>" if p.enable else "")
        + (_reproducer_html(reproducers[p.id]) if p.id in reproducers else "")
        + "</td></tr>"
        for p in probes
    )
    ran = sum(1 for p in probes if p.ran)
    shown = " open" if status in (Status.INCONCLUSIVE, Status.SKIP) else ""
    return (
        f"<details{shown}><summary>{ran} of {len(probes)} declared probe(s) run</summary>"
        f"<table class='obs'>{rows}</table></details>"
    )


def _reproducer_html(r: Reproducer) -> str:
    """The commands that re-send what the harness sent, and what they should get."""
    lines = []
    if r.fill:
        fill = ", ".join(f"<code>${_e(f)}</code>" for f in r.fill)
        lines.append(f"<div>Set first: {fill}</div>")
    for label, command in (("grpcurl", r.grpcurl), ("replay", r.replay), ("re-run", r.rerun)):
        if command:
            lines.append(f"<div class='sev'>{label}</div><pre>{_e(command)}</pre>")
    if r.note:
        lines.append(f"<div class='sev'>{_e(r.note)}</div>")
    expect = f" (expect <code>{_e(r.code)}</code>)" if r.code else ""
    return f"<div class='repro'><b>Reproduce</b>{expect}{''.join(lines)}</div>"


def _observations_html(observations: Sequence[Observation], status: Status) -> str:
    """Every probe made: what was sent (with its request ID), observed and expected."""
    rows = "".join(
        f"<tr><td>{badge(o.status)}</td><td><b>Sent:</b> {_e(o.probe)}"
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
        f"<p>{badge(evidence.status)} {_e(evidence.summary)}</p>"
    ]


# -- pictures (inline SVG and CSS) ----------------------------------------------------------


def _css_of(status: str) -> str:
    """The CSS class of a status (``ATTESTATION MISSING`` has no space in its class)."""
    return "MISSING" if status == Status.ATTESTATION_MISSING.value else status


def _hbar(parts: Sequence[tuple[str, int, str]], label: str) -> str:
    """A stacked horizontal bar: ``(css class, count, what)`` per part, in order."""
    total = sum(n for _, n, _ in parts) or 1
    x, rects = 0.0, []
    for css, n, what in parts:
        if n <= 0:
            continue
        w = 100 * n / total
        rects.append(
            f"<rect class='{_e(css)}' x='{x:.2f}' y='0' width='{w:.2f}' height='10'>"
            f"<title>{_e(what)}: {n}</title></rect>"
        )
        x += w
    return (
        "<svg class='hbar' viewBox='0 0 100 10' preserveAspectRatio='none' role='img' "
        f"aria-label='{_e(label)}'>{''.join(rects)}</svg>"
    )


def _legend(keys: Iterable[tuple[str, str]]) -> str:
    """Swatches: ``(css class, name)`` each."""
    return (
        "<p class='legend'>"
        + " ".join(
            f"<span class='item'><span class='key {_e(css)}'></span>{_e(name)}</span>"
            for css, name in keys
        )
        + "</p>"
    )


#: Column charts: the plot's height, a column's pitch and width, the left margin.
_PLOT_H, _PITCH, _BAR_W, _LEFT = 110.0, 34, 22, 34


def _columns(
    columns: Sequence[tuple[str, Sequence[tuple[str, str, int]]]], chart_id: str, label: str
) -> str:
    """A stacked column chart: one ``(label, [(css class, what, count), ...])`` per column."""
    top = max((sum(n for _, _, n in parts) for _, parts in columns), default=0) or 1
    ticks = _time_labels([name for name, _ in columns])
    width = _LEFT + _PITCH * len(columns) + 8
    out = [
        f"<svg id='{chart_id}' class='chart' viewBox='0 0 {width} 150' width='{width * 1.5:.0f}' "
        f"height='225' role='img' aria-label='{_e(label)}'>",
        f"<line class='axis' x1='{_LEFT - 4}' y1='10' x2='{_LEFT - 4}' y2='{10 + _PLOT_H}'/>",
        f"<text class='tick' x='{_LEFT - 7}' y='16' text-anchor='end'>{top}</text>",
        f"<text class='tick' x='{_LEFT - 7}' y='{10 + _PLOT_H}' text-anchor='end'>0</text>",
    ]
    for i, (name, parts) in enumerate(columns):
        x, y = _LEFT + _PITCH * i, 10 + _PLOT_H
        for css, what, n in parts:
            if n <= 0:
                continue
            h = _PLOT_H * n / top
            y -= h
            out.append(
                f"<rect class='{_e(css)}' x='{x}' y='{y:.2f}' width='{_BAR_W}' "
                f"height='{h:.2f}'><title>{_e(name)}: {n} {_e(what)}</title></rect>"
            )
        total = sum(n for _, _, n in parts)
        out.append(
            f"<text class='tick' x='{x + _BAR_W / 2}' y='{y - 3:.2f}' "
            f"text-anchor='middle'>{total}</text>"
            f"<text class='tick' x='{x + _BAR_W / 2}' y='{20 + _PLOT_H}' "
            f"text-anchor='middle'>{_e(ticks[i])}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _time_labels(times: Sequence[str]) -> list[str]:
    """Labels under columns of ISO times: ``MM-DD`` when the days differ, else ``HH:MM``."""
    days = [t[5:10] for t in times]
    if len(set(days)) == len(days):
        return days
    return [t[11:16] or t[:6] for t in times]


#: Runs the trend shows (the newest).
TREND_RUNS = 20


def _trend(trend: Trend | None) -> list[str]:
    """Findings by severity and controls by status per run, and what changed since the last."""
    out = ["<h2 id='trend'>Across runs</h2>"]
    if trend is None:
        out.append(
            "<p class='sev'>Set <code>evidence.history_dir</code> to keep a record of each "
            "run there and see the findings and controls move from run to run.</p>"
        )
        return out
    if trend.problem:
        out.append(f"<p class='invalid'>Run history: {_e(trend.problem)}</p>")
    shown = trend.records[-TREND_RUNS:]
    sev = [
        (r.finished, [(f"sev-{k}", k, n) for k, n in figures.findings_by_severity(r).items()])
        for r in shown
    ]
    statuses = [
        (r.finished, [(_css_of(k), k, n) for k, n in figures.statuses_of(r).items()]) for r in shown
    ]
    out += [
        f"<p>{len(trend.records)} run(s) in <code>evidence.history_dir</code>; "
        f"the last {len(shown)} shown, oldest first.</p>",
        "<div class='charts'><figure><figcaption>Findings by severity</figcaption>",
        _columns(sev, "trend-findings", "findings by severity per run"),
        _legend((f"sev-{s}", s) for s in figures.SEVERITIES),
        "</figure><figure><figcaption>Controls by status</figcaption>",
        _columns(statuses, "trend-controls", "controls by status per run"),
        _legend((_css_of(s.value), s.value) for s in Status),
        "</figure></div>",
        _changes(figures.since_last(trend.records)),
    ]
    return out


def _changes(changes: Changes | None) -> str:
    """New and fixed findings, then (folded) every other status change, since the run before."""
    if changes is None:
        return (
            "<div id='since-last'><p>Since the last run: this is the first run recorded.</p></div>"
        )
    b = changes.before
    head = (
        f"Since the last run ({_e(b.finished)}, <code>{_e(b.target)}</code>): "
        f"{len(changes.new)} new finding(s), {len(changes.fixed)} fixed, "
        f"{len(changes.other)} other change(s)"
    )
    findings = _change_rows((("NEW", changes.new), ("FIXED", changes.fixed)))
    other = _change_rows((("CHANGED", changes.other),))
    if other:
        other = (
            f"<details><summary>{len(changes.other)} other status change(s)</summary>"
            f"{other}</details>"
        )
    return f"<div id='since-last'><p>{head}.</p>{findings}{other}</div>"


def _change_rows(kinds: Iterable[tuple[str, Iterable[tuple[str, str, str]]]]) -> str:
    rows = [
        f"<tr><td>{kind}</td><td><b>{_e(cid)}</b></td>"
        f"<td>{badge(was)} &rarr; {badge(now)}</td></tr>"
        for kind, entries in kinds
        for cid, was, now in entries
    ]
    return f"<table class='obs'>{''.join(rows)}</table>" if rows else ""


def _rbac(grid: RbacGrid | None) -> list[str]:
    """AUTHZ-001 as a grid: methods x principals, the declared policy and the observed code."""
    out = ["<h2 id='rbac'>Who can call what (AUTHZ-001)</h2>"]
    if grid is None:
        out.append("<p class='sev'>AUTHZ-001 made no matrix call (see its row below).</p>")
        return out
    out.append(
        f"<p>{badge(grid.status)} {len(grid.cells)} call(s), one per method and principal: "
        f"each cell is the policy <code>auth.rbac_matrix</code> declares and the code the "
        f"service answered; <b>{grid.mismatches} mismatch(es)</b>"
        + (f", {len(grid.gaps)} method(s) without a matrix entry" if grid.gaps else "")
        + ".</p><div class='scroll'><table id='rbac-grid' class='rbac'><tr><th>Method</th>"
        + "".join(f"<th>{_e(p)}</th>" for p in grid.principals)
        + "</tr>"
    )
    last = None
    for method in grid.methods:
        service, _, name = method.strip("/").rpartition("/")
        if service != last:
            span = len(grid.principals) + 1
            out.append(f"<tr><th class='svc' colspan='{span}'>{_e(service)}</th></tr>")
            last = service
        gap = "<br><span class='mark'>no matrix entry</span>" if method in grid.gaps else ""
        cells = "".join(_rbac_cell(grid.cells.get((method, p))) for p in grid.principals)
        out.append(f"<tr><th title='{_e(method)}'>{_e(name)}{gap}</th>{cells}</tr>")
    out.append("</table></div>")
    out.append(_legend((("PASS", "as declared"), ("FAIL", "mismatch"))))
    return out


def _rbac_cell(cell: figures.RbacCell | None) -> str:
    if cell is None:
        return "<td class='cell none'>&ndash;</td>"
    mark = " mismatch" if cell.mismatch else ""
    title = cell.observed + (f" [request-id {cell.request_id}]" if cell.request_id else "")
    flag = "<span class='mark'>&#x2717; mismatch</span>" if cell.mismatch else ""
    return (
        f"<td class='cell {_e(_css_of(cell.status.value))}{mark}' title='{_e(title)}'>"
        f"<span class='pol'>{_e(cell.policy)}</span><span class='code'>{_e(cell.code)}</span>"
        f"{flag}</td>"
    )


def _pill(seen: Seen, text: str) -> str:
    css = {Status.PASS: "ok", Status.FAIL: "bad", Status.WARN: "warn"}.get(seen.status, "unk")
    return f"<span class='pill {css}' title='{_e(seen.observed)}'>{_e(text)}</span>"


def _tls(summary: TlsSummary | None) -> list[str]:
    """Versions, suites by strength, groups, and the certificate's lifetime left."""
    out = ["<h2 id='tls-summary'>TLS at a glance</h2>"]
    if summary is None:
        out.append("<p class='sev'>No TLS control observed the handshake (see TLS-001...).</p>")
        return out
    strengths = summary.by_strength()
    parts = [
        (f"st-{k}", strengths.get(k, 0), k)
        for k in (figures.STRONG, figures.WEAK, figures.BROKEN, figures.UNJUDGED)
    ]
    out += [
        "<div class='tls'><div><h3>Protocol versions</h3><p>",
        " ".join(_pill(v, f"{v.name}: {_short(v.observed)}") for v in summary.versions)
        or "not measured",
        "</p><h3>Key-exchange groups</h3><p>",
        " ".join(_pill(g, g.name) for g in summary.groups) or "not measured",
        f"</p></div><div><h3>Accepted suites by strength</h3>{_hbar(parts, 'suites by strength')}",
        _legend((css, f"{what} {n}") for css, n, what in parts),
        "<ul class='suites'>",
        *(f"<li>{_pill(s, s.kind)} <code>{_e(s.name)}</code></li>" for s in summary.suites),
        "</ul></div>",
        _cert(summary.cert),
        "</div>",
    ]
    return out


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _cert(cert: CertLife | None) -> str:
    """The leaf's lifetime as a bar: time used, time left."""
    if cert is None:
        return "<div><h3>Certificate</h3><p class='sev'>CERT-003 did not read the leaf.</p></div>"
    life = cert.lifetime_days
    left = max(0.0, min(cert.days_left, life))
    used = max(0.0, life - left)
    bar = _hbar(
        [
            ("cert-used", round(used * 100), "days used x100"),
            ("cert-left", round(left * 100), "days left x100"),
        ],
        "certificate lifetime left",
    )
    return (
        f"<div id='cert-life'><h3>Certificate lifetime</h3>{bar}"
        f"<p>{badge(cert.status)} <b>{cert.days_left:.1f} days left</b> of {life:.0f}; "
        f"valid {cert.not_before:%Y-%m-%d} &ndash; {cert.not_after:%Y-%m-%d}</p></div>"
    )


def _coverage(families: Sequence[FamilyCoverage]) -> list[str]:
    """Declared probes per family: run, not applicable, not run, and why not."""
    out = [
        "<h2 id='coverage'>Probe coverage by family</h2>",
        _legend((("cov-ran", "run"), ("cov-na", "not applicable"), ("cov-not", "not run"))),
        "<table class='coverage'><tr><th>Family</th><th>Probes</th><th></th>"
        "<th>Why not run</th></tr>",
    ]
    for f in families:
        parts = [
            ("cov-ran", f.ran, "run"),
            ("cov-na", f.not_applicable, "not applicable"),
            ("cov-not", f.not_run, "not run"),
        ]
        why = "".join(
            f"<li>{_e(reason)}: {_e(', '.join(ids))}</li>" for reason, ids in f.why.items()
        )
        out.append(
            f"<tr><td><b>{_e(f.family)}</b></td><td>{_hbar(parts, f.family + ' probes')}</td>"
            f"<td class='nums'>{f.ran} run, {f.not_applicable} n/a, {f.not_run} not run "
            f"of {f.declared}</td><td>{f'<ul>{why}</ul>' if why else ''}</td></tr>"
        )
    out.append("</table>")
    return out
