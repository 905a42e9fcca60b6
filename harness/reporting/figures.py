"""What the report's pictures show, read off the typed results: pure, no markup.

* :func:`rbac_grid`: AUTHZ-001's calls as a grid, methods x principals, each cell the
  declared policy and the observed code.
* :func:`coverage_by_family`: declared probes per control family, run, not applicable or
  not run, and why not.
* :func:`tls_summary`: versions, suites by strength, groups and the certificate's lifetime,
  from TLS-001...004 and CERT-003.
* :func:`run_record` and :func:`since_last`: one run for ``evidence.history_dir``'s trend,
  and what changed since the run before.

Everything is read from the observations' own fields (``probe``, ``observed``, ``ref``),
in the words the checks write them; an observation in another shape is left out of the
picture, never guessed at (the tables below the pictures still list it).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.history import RunRecord
from harness.outcome import Observation, ProbeResult, Status
from harness.reporting.model import ControlResult, Results

# -- AUTHZ-001 as a grid ------------------------------------------------------------------

#: ``clinician (allowed) -> /pkg.Svc/Method`` (judge_matrix's words for one call).
_MATRIX_CALL = re.compile(r"^(?P<who>.+) \((?P<policy>allowed|not allowed)\) -> (?P<method>/\S+)$")
#: ``matrix entry for /pkg.Svc/Method``: a protected method without an entry.
_GAP = re.compile(r"^matrix entry for (?P<method>/\S+)$")
#: ``PERMISSION_DENIED (7) with 0 response message(s)``: the code's name.
_CODE = re.compile(r"^(?P<code>[A-Z][A-Z_]+) \(\d+\)")
ALLOW, DENY, NO_ENTRY = "allow", "deny", "no entry"


@dataclass(frozen=True)
class RbacCell:
    """One (method, principal) call: what the matrix declares, what came back, the verdict.

    ``policy`` is ``allow`` or ``deny``; ``code`` the gRPC status name (or the observed text
    when it carries none); ``status`` the observation's verdict, so a FAIL is a mismatch.
    """

    policy: str
    code: str
    status: Status
    observed: str
    request_id: str | None = None

    @property
    def mismatch(self) -> bool:
        """The service did not do what the matrix declares."""
        return self.status is Status.FAIL


@dataclass(frozen=True)
class RbacGrid:
    """AUTHZ-001's calls: methods (rows) x principals (columns), in the order made."""

    status: Status
    methods: tuple[str, ...]
    principals: tuple[str, ...]
    cells: Mapping[tuple[str, str], RbacCell]
    gaps: tuple[str, ...] = ()

    @property
    def mismatches(self) -> int:
        """Cells where the service did not do what the matrix declares."""
        return sum(1 for c in self.cells.values() if c.mismatch)


def rbac_grid(control: ControlResult | None) -> RbacGrid | None:
    """AUTHZ-001's grid, or ``None`` when it made no matrix call (not run, no matrix)."""
    if control is None:
        return None
    cells: dict[tuple[str, str], RbacCell] = {}
    methods: dict[str, None] = {}
    principals: dict[str, None] = {}
    gaps = []
    for o in control.observations:
        gap = _GAP.match(o.probe)
        if gap and o.status is Status.FAIL:
            gaps.append(gap.group("method"))
            methods.setdefault(gap.group("method"))
        call = _MATRIX_CALL.match(o.probe)
        if call is None:
            continue
        method, who = call.group("method"), call.group("who")
        methods.setdefault(method)
        principals.setdefault(who)
        policy = ALLOW if call.group("policy") == "allowed" else DENY
        cells[(method, who)] = RbacCell(
            policy, code_of(o.observed), o.status, o.observed, o.request_id
        )
    if not cells and not gaps:
        return None
    return RbacGrid(control.status, tuple(methods), tuple(principals), cells, tuple(gaps))


def code_of(observed: str) -> str:
    """The gRPC status name an observation starts with, else the text itself, shortened."""
    m = _CODE.match(observed)
    if m:
        return m.group("code")
    return observed if len(observed) <= 24 else observed[:23] + "\u2026"


# -- probe coverage -----------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyCoverage:
    """The declared probes of one family: how many ran, did not apply, did not run and why.

    ``why`` maps each reason a probe did not run (with what would enable it) to the IDs of
    the probes it kept back.
    """

    family: str
    ran: int
    not_applicable: int
    not_run: int
    why: Mapping[str, tuple[str, ...]]

    @property
    def declared(self) -> int:
        """Every declared probe of the family."""
        return self.ran + self.not_applicable + self.not_run


def coverage_by_family(controls: Iterable[ControlResult]) -> tuple[FamilyCoverage, ...]:
    """One entry per family with declared probes, in the order the families first occur."""
    families: dict[str, list[ProbeResult]] = {}
    for c in controls:
        if c.probes:
            families.setdefault(c.family, []).extend(c.probes)
    return tuple(_family(name, probes) for name, probes in families.items())


def _family(name: str, probes: Sequence[ProbeResult]) -> FamilyCoverage:
    why: dict[str, list[str]] = {}
    ran = not_applicable = 0
    for p in probes:
        if p.ran:
            ran += 1
        elif not p.applies:
            not_applicable += 1
        else:
            reason = p.reason or p.status.value.lower()
            if p.enable:
                reason += f" (enable with {p.enable})"
            why.setdefault(reason, []).append(p.id)
    not_run = len(probes) - ran - not_applicable
    return FamilyCoverage(name, ran, not_applicable, not_run, {k: tuple(v) for k, v in why.items()})


# -- TLS ------------------------------------------------------------------------------------

_HANDSHAKES = re.compile(r"^sslyze (?P<version>(?:SSL|TLS) \d\.\d) handshakes")
_SUITE = re.compile(r"^(?P<version>TLS 1\.[23]) suite (?P<name>\S+)$")
_GROUP = re.compile(r"^supported group (?P<name>\S+)$")
_WINDOW = re.compile(
    r"^(?P<start>\d{4}-\d\d-\d\d \d\d:\d\d) \.\. (?P<end>\d{4}-\d\d-\d\d \d\d:\d\d)"
)
#: Versions in the order shown.
TLS_VERSIONS = ("SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3")
#: Suite strengths in the order shown: allowed, weak (not AEAD or outside the list), broken.
STRONG, WEAK, BROKEN, UNJUDGED = "strong", "weak", "broken", "unjudged"


@dataclass(frozen=True)
class Seen:
    """One thing the TLS scan saw (a version, a suite, a group), what of it, and the verdict."""

    name: str
    observed: str
    status: Status
    kind: str = ""


@dataclass(frozen=True)
class CertLife:
    """The leaf's validity window (UTC), days left, and CERT-003's verdict on it."""

    not_before: dt.datetime
    not_after: dt.datetime
    days_left: float
    status: Status

    @property
    def lifetime_days(self) -> float:
        """``notAfter - notBefore`` in days."""
        return (self.not_after - self.not_before).total_seconds() / 86400


@dataclass(frozen=True)
class TlsSummary:
    """The TLS scan at a glance; ``versions`` in :data:`TLS_VERSIONS` order."""

    versions: tuple[Seen, ...]
    suites: tuple[Seen, ...]
    groups: tuple[Seen, ...]
    cert: CertLife | None

    def by_strength(self) -> dict[str, int]:
        """Accepted suites per strength."""
        return dict(Counter(s.kind for s in self.suites))


def tls_summary(results: Results) -> TlsSummary | None:
    """The summary, or ``None`` when no TLS control observed anything (plaintext, not run)."""
    versions: dict[str, Seen] = {}
    for cid in ("TLS-001", "TLS-002"):
        for o in _observations(results, cid):
            m = _HANDSHAKES.match(o.probe)
            if m:
                versions[m.group("version")] = Seen(m.group("version"), o.observed, o.status)
    suites = [_suite(o) for o in _observations(results, "TLS-003") if _SUITE.match(o.probe)]
    groups = [
        Seen(m.group("name"), o.observed, o.status)
        for o in _observations(results, "TLS-004")
        if (m := _GROUP.match(o.probe))
    ]
    cert = cert_life(_observations(results, "CERT-003"))
    if not (versions or suites or groups or cert):
        return None
    ordered = tuple(versions[v] for v in TLS_VERSIONS if v in versions)
    return TlsSummary(ordered, tuple(suites), tuple(groups), cert)


def _observations(results: Results, control_id: str) -> tuple[Observation, ...]:
    control = results.control(control_id)
    return control.observations if control is not None else ()


def _suite(o: Observation) -> Seen:
    """A TLS-003 suite: strong when it passed, broken when critical, weak when it failed."""
    m = _SUITE.match(o.probe)
    assert m is not None
    kind = UNJUDGED
    if o.status is Status.PASS:
        kind = STRONG
    elif o.status is Status.FAIL:
        kind = BROKEN if o.severity is not None and o.severity.value == "critical" else WEAK
    return Seen(f"{m.group('version')} {m.group('name')}", o.observed, o.status, kind)


def cert_life(observations: Iterable[Observation]) -> CertLife | None:
    """CERT-003's validity window and days to expiry, when it observed them."""
    window = days = None
    for o in observations:
        if o.ref == "validity" and (m := _WINDOW.match(o.observed)):
            start, end = (
                dt.datetime.strptime(m.group(k), "%Y-%m-%d %H:%M") for k in ("start", "end")
            )
            window = (start.replace(tzinfo=dt.timezone.utc), end.replace(tzinfo=dt.timezone.utc), o)
        elif o.ref == "expiry":
            try:
                days = float(o.observed)
            except ValueError:
                continue
    if window is None or days is None:
        return None
    return CertLife(window[0], window[1], days, window[2].status)


# -- across runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """The runs ``evidence.history_dir`` holds, oldest first, this one last; or why none.

    ``problem`` says why the records could not be read or written (then ``records`` holds
    at most this run).
    """

    records: tuple[RunRecord, ...]
    problem: str = ""

    def then(self, record: RunRecord) -> Trend:
        """These runs and ``record`` (one with the same report ID replaced)."""
        kept = tuple(r for r in self.records if r.report_id != record.report_id)
        return Trend((*kept, record), self.problem)


def record_of(data: Mapping[str, Any]) -> RunRecord:
    """A run as ``evidence.history_dir`` keeps it, from its ``results.json`` document."""
    run = data.get("run", {})
    controls = data.get("controls", ())
    return RunRecord(
        report_id=str(data.get("report_id", "")),
        finished=str(run.get("finished", "")),
        target=str(run.get("target", "")),
        statuses={str(c["id"]): str(c["status"]) for c in controls},
        severities={str(c["id"]): str(c["severity"]) for c in controls if c.get("severity")},
    )


#: Statuses that are findings, as ``results.json`` spells them.
FINDINGS = ("FAIL", "WARN", "ATTESTATION MISSING")
#: Severities in the order shown; a finding without one is ``unrated``.
SEVERITIES = ("critical", "high", "medium", "low", "unrated")


def findings_by_severity(record: RunRecord) -> dict[str, int]:
    """How many findings of each severity the run had (every severity present, maybe 0)."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for cid, status in record.statuses.items():
        if status in FINDINGS:
            counts[record.severities.get(cid, "unrated")] += 1
    return counts


def statuses_of(record: RunRecord) -> dict[str, int]:
    """How many controls had each status, in the order :class:`Status` lists them."""
    counts = Counter(record.statuses.values())
    return {s.value: counts[s.value] for s in Status if counts[s.value]}


@dataclass(frozen=True)
class Changes:
    """What changed between two runs: findings new and fixed, and other status changes.

    Each entry is ``(control ID, status before, status now)``; a control one run did not
    hold reads as ``"absent"``.
    """

    before: RunRecord
    new: tuple[tuple[str, str, str], ...]
    fixed: tuple[tuple[str, str, str], ...]
    other: tuple[tuple[str, str, str], ...]


def since_last(records: Sequence[RunRecord]) -> Changes | None:
    """What changed from the run before the last one to the last; ``None`` with one run."""
    if len(records) < 2:
        return None
    before, now = records[-2], records[-1]
    new, fixed, other = [], [], []
    for cid in sorted(set(before.statuses) | set(now.statuses)):
        was, is_ = before.statuses.get(cid, "absent"), now.statuses.get(cid, "absent")
        if was == is_:
            continue
        entry = (cid, was, is_)
        if is_ in FINDINGS and was not in FINDINGS:
            new.append(entry)
        elif was in FINDINGS and is_ not in FINDINGS:
            fixed.append(entry)
        else:
            other.append(entry)
    return Changes(before, tuple(new), tuple(fixed), tuple(other))
