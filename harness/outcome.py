"""What a check produces: observations, and the outcome derived from them.

A check never decides how it is reported. It returns an :class:`Outcome`; the pytest
plugin, the command line and the report writers each render it their own way.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from harness.catalogue import Control, Severity


class Status(str, enum.Enum):
    """Per-control status, as section 6 of the catalogue defines them."""

    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"
    SKIP = "SKIP"
    INCONCLUSIVE = "INCONCLUSIVE"
    ERROR = "ERROR"
    ATTESTED = "ATTESTED"
    ATTESTATION_MISSING = "ATTESTATION MISSING"


# When observations disagree, the outcome takes the first status of this order it meets.
_PRECEDENCE = (Status.FAIL, Status.ERROR, Status.INCONCLUSIVE, Status.WARN, Status.PASS)


@dataclass(frozen=True)
class Observation:
    """One probe of a control and its verdict.

    Attributes:
        probe: What was sent, in words (method, variant, credentials used).
        observed: What came back (status code, message counts, bytes), already redacted.
        expected: What the oracle wanted.
        status: PASS, FAIL, WARN or INCONCLUSIVE for this probe alone.
        severity: Severity of a FAIL or WARN here; ``None`` means the control's own.
        request_id: The request ID the harness sent, when the probe was a gRPC call.
    """

    probe: str
    observed: str
    expected: str
    status: Status
    severity: Severity | None = None
    request_id: str | None = None
    ref: str = ""

    def of(self, ref: str) -> Observation:
        """This observation, filed under the declared probe ``ref`` (``"a"``, ``"V1"``)."""
        return replace(self, ref=ref)


#: What an observation says, and how a probe's reason starts, when the probe does not apply.
NOT_APPLICABLE = "not applicable"


def not_applicable(ref: str, probe: str, why: str) -> Observation:
    """Probe ``ref`` does not apply to this service (``why``): not a gap in the evidence.

    A required probe that does not apply does not hold the control back; a control none
    of whose probes applies is SKIP.
    """
    return Observation(probe, NOT_APPLICABLE, why, Status.SKIP).of(ref)


def filed(ref: str, observations: Iterable[Observation]) -> list[Observation]:
    """Every observation filed under the declared probe ``ref``."""
    return [o.of(ref) for o in observations]


@dataclass(frozen=True)
class Probe:
    """One named probe of a control's procedure: a lettered item of its catalogue row.

    Attributes:
        ref: The catalogue's letter or label (``"a"``, ``"V1"``, ``"health"``).
        title: What it sends or tests, in a few words.
        required: Whether a PASS of the control needs it (catalogue section 6).
        needs: Configuration keys any one of which, when set (truthy), enables the probe;
            empty when it needs nothing beyond what its control needs.
    """

    ref: str
    title: str
    required: bool = True
    needs: tuple[str, ...] = ()

    def id_in(self, control_id: str) -> str:
        """The probe's ID in reports: ``AUTHN-005(b)``."""
        return f"{control_id}({self.ref})" if self.ref else control_id

    @property
    def enabled_by(self) -> str:
        """The keys that would enable it, in words."""
        return " or ".join(self.needs)


#: What a control with no declared probes is judged as: its whole procedure, one probe.
WHOLE = Probe("", "the whole procedure")


@dataclass(frozen=True)
class ProbeResult:
    """What became of one declared probe in this run.

    Attributes:
        id: ``AUTHN-005(b)``.
        title: What the probe tests.
        status: PASS, FAIL, WARN, SKIP (did not run), INCONCLUSIVE or ERROR.
        required: Whether the control's PASS needs it.
        request_ids: The request IDs of the calls it made.
        reason: Why it did not run or could not observe (empty when it was judged).
        enable: The configuration keys that would enable it, when that is why it did not run.
        observations: How many observations it made.
    """

    id: str
    title: str
    status: Status
    required: bool
    request_ids: tuple[str, ...] = ()
    reason: str = ""
    enable: str = ""
    observations: int = 0

    @property
    def ran(self) -> bool:
        """It sent something and judged it (PASS, FAIL or WARN), or tried (INCONCLUSIVE)."""
        return self.status not in (Status.SKIP, Status.ERROR)

    @property
    def applies(self) -> bool:
        """False for a probe that does not apply to this service (not a gap in evidence)."""
        return not (self.status is Status.SKIP and self.reason.startswith(NOT_APPLICABLE))


class NotApplicable(Exception):
    """Raised by a check that does not apply, or lacks what it needs: the control is SKIP."""


class CannotObserve(Exception):
    """Raised by a check that ran but could not observe its outcome: INCONCLUSIVE."""


@dataclass(frozen=True)
class Outcome:
    """The result of one control against one target.

    Attributes:
        control: The catalogued control.
        status: Final status.
        summary: One line that says why.
        observations: Every probe with its verdict (the evidence).
        severity: Severity of the finding (the worst failing observation's).
        probes: Every declared probe with what became of it (set by the registry).
    """

    control: Control
    status: Status
    summary: str
    observations: tuple[Observation, ...] = field(default_factory=tuple)
    severity: Severity | None = None
    probes: tuple[ProbeResult, ...] = ()

    @classmethod
    def from_observations(
        cls, control: Control, observations: Iterable[Observation], *, passed: str
    ) -> Outcome:
        """Derive the outcome from per-probe verdicts.

        Args:
            control: The control the observations belong to.
            observations: Every probe made, with its verdict.
            passed: The summary line to use when everything passed.

        Returns:
            FAIL if any probe failed, else INCONCLUSIVE if any could not be observed, else
            WARN if any warned, else PASS. The severity is the worst among the probes that
            set the status.
        """
        obs = tuple(observations)
        if not obs:
            return cls.inconclusive(control, "no probe could be made")
        if all(o.status is Status.SKIP for o in obs):
            reasons = "; ".join(f"{o.probe}: needs {o.expected}" for o in obs)
            return cls(control, Status.SKIP, f"nothing could be sent ({reasons})", obs)
        for status in _PRECEDENCE:
            hits = [o for o in obs if o.status is status]
            if not hits:
                continue
            if status is Status.PASS:
                return cls(control, Status.PASS, passed, obs)
            severity = None
            if status in (Status.FAIL, Status.WARN):
                severity = max(o.severity or control.severity for o in hits)
            first = hits[0]
            more = f" (+{len(hits) - 1} more)" if len(hits) > 1 else ""
            summary = f"{first.probe}: {first.observed}{more}"
            return cls(control, status, summary, obs, severity)
        raise AssertionError("unreachable: every observation has a status")  # pragma: no cover

    @classmethod
    def skip(cls, control: Control, reason: str) -> Outcome:
        """The control does not apply or lacks what it needs; ``reason`` says which."""
        return cls(control, Status.SKIP, reason)

    @classmethod
    def inconclusive(
        cls, control: Control, reason: str, observations: Iterable[Observation] = ()
    ) -> Outcome:
        """The harness could not observe the outcome."""
        return cls(control, Status.INCONCLUSIVE, reason, tuple(observations))

    @classmethod
    def error(cls, control: Control, reason: str) -> Outcome:
        """The harness itself failed, or the target could not be used at all."""
        return cls(control, Status.ERROR, reason)

    def render(self) -> str:
        """Human-readable finding: control, status, citation, then every probe."""
        sev = f" ({self.severity.value})" if self.severity else ""
        lines = [
            f"{self.control.id} {self.status.value}{sev}: {self.control.title}",
            f"HIPAA: {self.control.citation}",
            f"Why: {self.summary}",
        ]
        for o in self.observations:
            rid = f" [request-id {o.request_id}]" if o.request_id else ""
            lines.append(
                f"- {o.status.value} {o.probe}{rid}: observed {o.observed}; expected {o.expected}"
            )
        return "\n".join(lines)


# -- probes: from observations to per-probe results, and the control's status from them ---

#: Per-probe precedence: a FAIL anywhere decides the probe (catalogue section 6).
_PROBE_PRECEDENCE = (Status.FAIL, Status.ERROR, Status.INCONCLUSIVE, Status.WARN, Status.PASS)


def probe_results(
    control: Control,
    declared: Sequence[Probe],
    observations: Sequence[Observation],
    configured: Callable[[str], bool],
    *,
    not_run: str = "",
    empty: Callable[[str], bool] = lambda key: False,
) -> tuple[ProbeResult, ...]:
    """Each declared probe with the status its own observations give it.

    A probe with no observation did not run: its reason is ``not_run`` (why the whole check
    stopped) or the configuration it needs, or "not run" when neither says more. A probe
    whose ``needs`` the config declares empty (``limits.bulk_methods = []``: there are
    none), or whose only observations say so, is not applicable.
    """
    declared = tuple(declared) or (WHOLE,)
    out = []
    for probe in declared:
        mine = [o for o in observations if o.ref == probe.ref or probe is WHOLE]
        ids = tuple(dict.fromkeys(o.request_id for o in mine if o.request_id))
        common = (probe.id_in(control.id), probe.title)
        judged = [o for o in mine if o.status is not Status.SKIP]
        if judged:
            status = next(s for s in _PROBE_PRECEDENCE if any(o.status is s for o in judged))
            reason = "" if status is not Status.INCONCLUSIVE else _first(judged, status)
            out.append(ProbeResult(*common, status, probe.required, ids, reason, "", len(mine)))
            continue
        reason, enable = _why_not_run(probe, mine, configured, empty, not_run)
        out.append(
            ProbeResult(*common, Status.SKIP, probe.required, ids, reason, enable, len(mine))
        )
    return tuple(out)


def _why_not_run(
    probe: Probe,
    mine: Sequence[Observation],
    configured: Callable[[str], bool],
    empty: Callable[[str], bool],
    not_run: str,
) -> tuple[str, str]:
    """Why ``probe`` did not run, and the keys that would enable it (if that is why)."""
    unset = bool(probe.needs) and not any(configured(k) for k in probe.needs)
    if mine and all(o.observed == NOT_APPLICABLE for o in mine):
        return f"{NOT_APPLICABLE}: " + "; ".join(o.expected for o in mine), ""
    if mine:
        said = "; ".join(f"{o.probe}: needs {o.expected}" for o in mine)
        return said, probe.enabled_by if unset else ""
    if unset and all(empty(k) for k in probe.needs):
        declared = " and ".join(probe.needs)
        return f"{NOT_APPLICABLE}: {declared} declared empty", ""
    if unset:
        return f"needs {probe.enabled_by}", probe.enabled_by
    return not_run or "not run", ""


def _first(observations: Sequence[Observation], status: Status) -> str:
    hit = next(o for o in observations if o.status is status)
    return f"{hit.probe}: {hit.observed}"


def settle(
    outcome: Outcome,
    declared: Sequence[Probe],
    configured: Callable[[str], bool],
    empty: Callable[[str], bool] = lambda key: False,
) -> Outcome:
    """The outcome with its probes, and its status derived from them (catalogue section 6).

    A FAIL in any probe fails the control; an ERROR or INCONCLUSIVE probe leaves it so; a
    required probe that did not run makes it INCONCLUSIVE, or SKIP when no probe ran at
    all; a WARN warns; it PASSes only when every required probe passed. An outcome decided
    before any probe (SKIP, INCONCLUSIVE, ERROR without observations) keeps its status, and
    its probes say why they did not run; so does a FAIL, INCONCLUSIVE or SKIP the check
    decided itself (a PASS or WARN is only ever made stricter here).
    """
    control = outcome.control
    if not outcome.observations and outcome.status not in (Status.PASS, Status.WARN):
        probes = probe_results(
            control, declared, (), configured, not_run=outcome.summary, empty=empty
        )
        return replace(outcome, probes=probes)
    probes = probe_results(control, declared, outcome.observations, configured, empty=empty)
    if outcome.status not in (Status.PASS, Status.WARN):
        return replace(outcome, probes=probes)  # a FAIL stands; so does a check's own doubt
    status, summary = _derive(probes, outcome)
    severity = outcome.severity if status is outcome.status else None
    if status is not outcome.status and status in (Status.FAIL, Status.WARN):
        hits = [o for o in outcome.observations if o.status is status]
        severity = max(o.severity or control.severity for o in hits)
    return replace(outcome, status=status, summary=summary, severity=severity, probes=probes)


def _derive(probes: Sequence[ProbeResult], outcome: Outcome) -> tuple[Status, str]:
    for status in (Status.FAIL, Status.ERROR, Status.INCONCLUSIVE):
        if any(p.status is status for p in probes):
            hit = next(p for p in probes if p.status is status)
            return status, f"{hit.id}: {hit.reason or status.value}"
    missing = [p for p in probes if p.required and p.status is Status.SKIP and p.applies]
    if missing:
        said = "; ".join(f"{p.id} ({p.reason})" for p in missing)
        if all(p.status is Status.SKIP for p in probes):
            return Status.SKIP, f"nothing could be sent: {said}"
        return Status.INCONCLUSIVE, f"required probes did not run: {said}"
    if all(p.status is Status.SKIP for p in probes):
        return Status.SKIP, "; ".join(f"{p.id}: {p.reason}" for p in probes)
    if outcome.status is Status.WARN or any(p.status is Status.WARN for p in probes):
        return Status.WARN, outcome.summary
    return Status.PASS, outcome.summary if outcome.status is Status.PASS else "every probe held"


def probe_dict(p: ProbeResult) -> dict[str, object]:
    """JSON form of a probe result."""
    return {
        "id": p.id,
        "title": p.title,
        "status": p.status.value,
        "required": p.required,
        "request_ids": list(p.request_ids),
        "reason": p.reason,
        "enable": p.enable,
        "observations": p.observations,
    }


def observation_dict(o: Observation) -> dict[str, str | None]:
    """JSON form of an observation (what reports and xdist carry)."""
    return {
        "probe": o.probe,
        "observed": o.observed,
        "expected": o.expected,
        "status": o.status.value,
        "severity": o.severity.value if o.severity else None,
        "request_id": o.request_id,
        "ref": o.ref,
    }


def outcome_dict(outcome: Outcome) -> dict[str, object]:
    """JSON form of an outcome: control ID, status, severity, summary, observations."""
    return {
        "control": outcome.control.id,
        "status": outcome.status.value,
        "severity": outcome.severity.value if outcome.severity else None,
        "summary": outcome.summary,
        "observations": [observation_dict(o) for o in outcome.observations],
        "probes": [probe_dict(p) for p in outcome.probes],
    }
