"""``hipaa-grpc report merge``: one page and one results file over many evidence bundles.

A platform team runs the harness once per service (one CI job each) and merges the bundles
in one more job. Each bundle is first checked as ``hipaa-grpc report verify`` checks it; a
bundle that fails is listed with its problems and none of its results are merged (no cell,
no finding, no age). The others give:

* a heat map, services x HIPAA standards, each cell the worst status among the standard's
  controls (a FAIL by its severity) with the failing control IDs;
* the worst findings across the estate (FAIL by severity, then WARN, then ATTESTATION
  MISSING);
* the stalest runs (oldest ``finished`` first).

:func:`merge` reads; :func:`fleet_json` and :func:`fleet_html` are its two views;
:func:`write_fleet` writes them (``fleet.json``, ``index.html``). Bundles are read in
parallel processes when there are many (``verify`` hashes and self-scans every file).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.reporting.bundle import verified
from harness.reporting.html import CSP, badge, stylesheet
from harness.reporting.model import DISCLAIMER, FINDING_STATUSES

FLEET_SCHEMA = "hipaa-grpc-fleet/1.0"
HTML_FILE, JSON_FILE = "index.html", "fleet.json"
#: How a heat-map cell ranks what its controls did, worst first.
LEVELS = (
    "critical",
    "high",
    "medium",
    "low",
    "ERROR",
    "ATTESTATION MISSING",
    "INCONCLUSIVE",
    "WARN",
    "PASS",
    "ATTESTED",
    "SKIP",
)
_SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_FINDING_RANK = {s.value: i for i, s in enumerate(FINDING_STATUSES)}
#: Bundles read in one process below this many; above it, in one process per CPU.
PARALLEL_FROM = 32
#: Rows the page shows of the worst findings and of the stalest runs (the JSON has all).
SHOWN = 50


@dataclass(frozen=True)
class Finding:
    """One finding of one service."""

    bundle: str
    target: str
    control: str
    title: str
    status: str
    severity: str
    summary: str

    def rank(self) -> tuple[int, int, str, str]:
        """Sort key: FAIL before WARN before ATTESTATION MISSING, then by severity."""
        return (
            _FINDING_RANK.get(self.status, 9),
            _SEVERITY_RANK.get(self.severity, 4),
            self.control,
            self.target,
        )


@dataclass(frozen=True)
class Cell:
    """One service x standard: the worst level of its automated controls; every control by status.

    Attestations (manual controls) are listed too, but set the level only for a standard
    with no automated control.
    """

    level: str
    controls: Mapping[str, tuple[str, ...]]

    @property
    def failing(self) -> tuple[str, ...]:
        """The controls that FAILed."""
        return self.controls.get("FAIL", ())

    @property
    def unattested(self) -> int:
        """Manual controls of the standard with no valid attestation."""
        return len(self.controls.get("ATTESTATION MISSING", ()))


@dataclass(frozen=True)
class Service:
    """One bundle: verified and read, or the problems ``verify`` found (then nothing else)."""

    bundle: str
    problems: tuple[str, ...] = ()
    target: str = ""
    report_id: str = ""
    finished: str = ""
    totals: Mapping[str, int] | None = None
    cells: Mapping[str, Cell] | None = None
    findings: tuple[Finding, ...] = ()
    standards: Mapping[str, str] | None = None

    @property
    def verified(self) -> bool:
        """``verify`` found no problem: its results are merged."""
        return not self.problems

    @property
    def failing(self) -> tuple[str, ...]:
        """Its FAILed controls, in catalogue order."""
        return tuple(f.control for f in self.findings if f.status == "FAIL")


@dataclass(frozen=True)
class Fleet:
    """Every bundle merged (or refused), the standards seen (ID, name), and when."""

    generated: dt.datetime
    services: tuple[Service, ...]
    standards: tuple[tuple[str, str], ...]

    @property
    def merged(self) -> tuple[Service, ...]:
        """The verified services."""
        return tuple(s for s in self.services if s.verified)

    @property
    def refused(self) -> tuple[Service, ...]:
        """The bundles that failed ``verify``."""
        return tuple(s for s in self.services if not s.verified)

    def worst_findings(self) -> list[Finding]:
        """Every finding of every verified service, worst first."""
        return sorted((f for s in self.merged for f in s.findings), key=Finding.rank)

    def stalest(self) -> list[tuple[Service, float | None]]:
        """Verified services, oldest run first, with its age in days (``None``: unknown)."""
        aged = [(s, age_days(s.finished, self.generated)) for s in self.merged]
        return sorted(aged, key=lambda pair: -1.0 if pair[1] is None else -pair[1])


def age_days(finished: str, now: dt.datetime) -> float | None:
    """Days from an RFC 3339 ``finished`` to ``now`` (``None`` when it does not parse)."""
    try:
        when = dt.datetime.fromisoformat(finished.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return (now - when).total_seconds() / 86400


# -- reading --------------------------------------------------------------------------------


def merge(bundles: Sequence[Path], now: dt.datetime | None = None) -> Fleet:
    """Verify and read every bundle (in order) into one fleet."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if len(bundles) >= PARALLEL_FROM and (os.cpu_count() or 1) > 1:
        with ProcessPoolExecutor() as pool:
            services = tuple(pool.map(read_bundle, bundles, chunksize=16))
    else:
        services = tuple(read_bundle(b) for b in bundles)
    standards: dict[str, str] = {}
    for service in services:
        standards.update(service.standards or {})
    return Fleet(now, services, tuple(sorted(standards.items(), key=_standard_order)))


def read_bundle(path: Path) -> Service:
    """One bundle: its problems if ``verify`` finds any, else its results, read."""
    name = str(path)
    if not path.is_dir():
        return Service(name, (f"{path}: no such directory",))
    problems, data = verified(path)
    if problems or data is None:
        return Service(name, tuple(problems) or ("results.json: unread",), target=_target_of(path))
    return service_of(name, data)


def _target_of(path: Path) -> str:
    """The target a refused bundle names, if its results.json still says (shown, not used)."""
    try:
        return str(json.loads((path / "results.json").read_text())["run"]["target"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def service_of(bundle: str, data: Mapping[str, Any]) -> Service:
    """A verified bundle's ``results.json`` as the fleet shows it."""
    run = data["run"]
    target = str(run.get("target", ""))
    controls = {str(c["id"]): c for c in data["controls"]}
    findings = tuple(
        Finding(
            bundle,
            target,
            cid,
            str(c.get("title", "")),
            str(c["status"]),
            str(c.get("severity") or ""),
            str(c.get("summary", "")),
        )
        for cid, c in controls.items()
        if c["status"] in _FINDING_RANK
    )
    rollup = data.get("rollup", ())
    judged = _judged(controls.values())
    cells = {str(r["standard"]): _cell(r["controls"], judged) for r in rollup}
    return Service(
        bundle,
        target=target,
        report_id=str(data.get("report_id", "")),
        finished=str(run.get("finished", "")),
        totals={str(k): int(v) for k, v in data.get("totals", {}).items()},
        cells=cells,
        findings=findings,
        standards={str(r["standard"]): str(r.get("name", "")) for r in rollup},
    )


_RANK = {level: i for i, level in enumerate(LEVELS)}
_LEAST = len(LEVELS) - 1


def _judged(controls: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, int, bool]]:
    """Control ID -> (status, level rank, automated), a FAIL ranked by its severity."""
    out = {}
    for c in controls:
        status = str(c["status"])
        level = str(c.get("severity") or "high") if status == "FAIL" else status
        out[str(c["id"])] = (status, _RANK.get(level, _LEAST), bool(c.get("automated", True)))
    return out


def _cell(ids: Iterable[str], judged: Mapping[str, tuple[str, int, bool]]) -> Cell:
    """The worst level among the automated controls of ``ids`` (a FAIL by its severity).

    The attestations' level counts only when the standard has no automated control.
    Every control is listed by status.
    """
    by_status: dict[str, list[str]] = {}
    worst = {True: _LEAST, False: _LEAST}
    automated_seen = False
    for cid in ids:
        if cid not in judged:
            continue
        status, rank, automated = judged[cid]
        by_status.setdefault(status, []).append(cid)
        worst[automated] = min(worst[automated], rank)
        automated_seen = automated_seen or automated
    level = LEVELS[worst[automated_seen]]
    return Cell(level, {k: tuple(v) for k, v in by_status.items()})


def _standard_order(item: tuple[str, str]) -> tuple[str, ...]:
    """164.312 (the technical safeguards) first, then the others in numeric order."""
    standard = item[0]
    return ("0" if standard.startswith("164.312") else "1", standard)


# -- the views ------------------------------------------------------------------------------


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _finding_json(f: Finding) -> dict[str, str]:
    return {
        "bundle": f.bundle,
        "target": f.target,
        "control": f.control,
        "status": f.status,
        "severity": f.severity,
        "summary": f.summary,
    }


def _service_json(s: Service, now: dt.datetime) -> dict[str, Any]:
    if not s.verified:
        return {"bundle": s.bundle, "verified": False, "problems": list(s.problems)}
    cells = s.cells or {}
    return {
        "bundle": s.bundle,
        "verified": True,
        "target": s.target,
        "report_id": s.report_id,
        "finished": s.finished,
        "age_days": age_days(s.finished, now),
        "totals": dict(s.totals or {}),
        "failing": list(s.failing),
        "standards": {
            k: {"worst": c.level, "controls": {st: list(ids) for st, ids in c.controls.items()}}
            for k, c in cells.items()
        },
        "findings": [_finding_json(f) for f in s.findings],
    }


def fleet_json(fleet: Fleet) -> dict[str, Any]:
    """``fleet.json``: every bundle (refused ones with their problems) and the roll-ups."""
    return {
        "schema": FLEET_SCHEMA,
        "generated": _stamp(fleet.generated),
        "harness_version": __version__,
        "disclaimer": DISCLAIMER,
        "bundles": len(fleet.services),
        "merged": len(fleet.merged),
        "refused": [s.bundle for s in fleet.refused],
        "standards": [{"standard": k, "name": n} for k, n in fleet.standards],
        "services": [_service_json(s, fleet.generated) for s in fleet.services],
        "worst_findings": [_finding_json(f) for f in fleet.worst_findings()],
        "stalest": [
            {"bundle": s.bundle, "target": s.target, "finished": s.finished, "age_days": age}
            for s, age in fleet.stalest()
        ],
    }


_e = html.escape


def fleet_html(fleet: Fleet) -> str:
    """``index.html``: self-contained (inline CSS, no scripts, no fetches), like report.html."""
    merged, refused = len(fleet.merged), len(fleet.refused)
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        "<title>HIPAA technical safeguards: fleet</title>",
        f"<style>{stylesheet()}</style></head><body class='wide'>",
        "<h1>HIPAA technical safeguards: fleet view</h1>",
        f"<p class='meta'>pytest-hipaa-grpc {_e(__version__)} &middot; merged "
        f"{_e(_stamp(fleet.generated))} &middot; {merged} bundle(s) merged, "
        f"{refused} refused</p>",
        f"<p class='disclaimer'>{_e(DISCLAIMER)}</p>",
        *_refused_html(fleet.refused),
        *_heat_html(fleet),
        *_worst_html(fleet.worst_findings()),
        *_stalest_html(fleet.stalest()),
        "</body></html>",
    ]
    return "\n".join(out)


def _refused_html(refused: Sequence[Service]) -> list[str]:
    """Bundles that failed ``verify``: listed with their problems, never merged."""
    if not refused:
        return []
    out = [
        f"<h2 id='refused'>Bundles that fail verify ({len(refused)}): not merged</h2>",
        "<p class='invalid'>These bundles were changed after the run, are incomplete or "
        "hold a secret; none of their results appear below.</p>",
        "<table class='controls'><tr><th>Bundle</th><th>Target it names</th><th>Problems</th></tr>",
    ]
    for s in refused:
        problems = "".join(f"<li>{_e(p)}</li>" for p in s.problems)
        out.append(
            f"<tr class='refused'><td><code>{_e(s.bundle)}</code><br>{badge('INVALID')}</td>"
            f"<td>{_e(s.target) or '?'}</td><td><ul>{problems}</ul></td></tr>"
        )
    out.append("</table>")
    return out


def _heat_html(fleet: Fleet) -> list[str]:
    """Services (rows) x HIPAA standards (columns): the worst level of each, failing IDs."""
    head = "".join(f"<th title='{_e(name)}'>{_e(std)}</th>" for std, name in fleet.standards)
    key = " &middot; ".join(f"<b>{_e(std)}</b> {_e(name)}" for std, name in fleet.standards)
    out = [
        "<h2 id='heat'>Services x HIPAA standards</h2>",
        "<p class='legend'>"
        + " ".join(
            f"<span class='item'><span class='key h-{_css(k)}'></span>"
            f"{_e('FAIL ' + k if k in _SEVERITY_RANK else _SHORT.get(k, k))}</span>"
            for k in LEVELS
        )
        + "</p>",
        "<div class='scroll'><table id='heat-map' class='heat'>"
        f"<tr><th>Service</th>{head}<th>Failing controls</th></tr>",
    ]
    for s in fleet.services:
        out.append(_heat_row(s, fleet.standards))
    out.append(
        f"</table></div><p class='sev'>{key}. A cell is the worst status of the "
        "standard's automated controls (a FAIL by its severity), with the failing "
        "controls; manual controls without a valid attestation are counted below it.</p>"
    )
    return out


#: Cell text for the long status names.
_SHORT = {"ATTESTATION MISSING": "UNATTESTED", "INCONCLUSIVE": "INCONCL."}


def _css(level: str) -> str:
    return level.split()[0].lower()


def _heat_row(s: Service, standards: Sequence[tuple[str, str]]) -> str:
    name = f"<b>{_e(s.target or '?')}</b><br><span class='sev'>{_e(s.bundle)}</span>"
    if not s.verified:
        return (
            f"<tr class='refused'><th>{name}</th><td class='h-invalid' "
            f"colspan='{len(standards) + 1}'>NOT VERIFIED: not merged "
            f"({len(s.problems)} problem(s), listed above)</td></tr>"
        )
    cells = []
    for std, _ in standards:
        cell = (s.cells or {}).get(std)
        if cell is None:
            cells.append("<td class='h-none'>&ndash;</td>")
            continue
        said = ", ".join(f"{st} {' '.join(ids)}" for st, ids in cell.controls.items())
        shown = _e(" ".join(cell.failing) or _SHORT.get(cell.level, cell.level))
        if cell.unattested:
            shown += f"<br><span class='att'>+{cell.unattested} unattested</span>"
        cells.append(f"<td class='h-{_css(cell.level)}' title='{_e(said)}'>{shown}</td>")
    failing = " ".join(s.failing) or "none"
    return f"<tr><th>{name}</th>{''.join(cells)}<td class='failing'>{_e(failing)}</td></tr>"


def _worst_html(findings: Sequence[Finding]) -> list[str]:
    out = [
        f"<h2 id='worst'>Worst findings across the estate ({len(findings)})</h2>",
        "<table class='findings'><tr><th>Finding</th><th>Service</th><th>Why</th></tr>",
    ]
    for f in findings[:SHOWN]:
        sev = f"<div class='sev'>severity {_e(f.severity)}</div>" if f.severity else ""
        out.append(
            f"<tr><td>{badge(f.status)}{sev}<b>{_e(f.control)}</b> {_e(f.title)}</td>"
            f"<td><b>{_e(f.target)}</b><br><span class='sev'>{_e(f.bundle)}</span></td>"
            f"<td>{_e(f.summary)}</td></tr>"
        )
    if len(findings) > SHOWN:
        out.append(
            f"<tr><td colspan='3'>&hellip; {len(findings) - SHOWN} more in fleet.json</td></tr>"
        )
    out.append("</table>")
    return out


def _stalest_html(stalest: Sequence[tuple[Service, float | None]]) -> list[str]:
    out = [
        "<h2 id='stalest'>Stalest runs</h2>",
        "<table class='findings'><tr><th>Service</th><th>Finished (UTC)</th><th>Age</th></tr>",
    ]
    for s, age in stalest[:SHOWN]:
        said = "unknown" if age is None else f"{age:.1f} days"
        out.append(
            f"<tr><td><b>{_e(s.target)}</b><br><span class='sev'>{_e(s.bundle)}</span></td>"
            f"<td><code>{_e(s.finished)}</code></td><td>{said}</td></tr>"
        )
    out.append("</table>")
    return out


def json_text(data: Mapping[str, Any]) -> str:
    """``data`` as JSON text: a line per key, and per item of a list (each item compact).

    ``json.dumps`` with ``indent`` encodes in Python, not C: about 0.3 s for the
    ``fleet.json`` of 1,000 services; item by item (in C) it takes a third of that.
    """
    lines = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            items = ",\n    ".join(json.dumps(item) for item in value)
            lines.append(f"  {json.dumps(key)}: [\n    {items}\n  ]")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_fleet(dest: Path, fleet: Fleet) -> None:
    """Write ``index.html`` and ``fleet.json`` into ``dest`` (each replaced atomically)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = {
        JSON_FILE: json_text(fleet_json(fleet)),
        HTML_FILE: fleet_html(fleet),
    }
    for name, text in files.items():
        tmp = dest / f".{name}.partial"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, dest / name)
