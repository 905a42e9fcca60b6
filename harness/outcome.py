"""What a check produces: observations, and the outcome derived from them.

A check never decides how it is reported. It returns an :class:`Outcome`; the pytest
plugin, the command line and the report writers each render it their own way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

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
_PRECEDENCE = (Status.ERROR, Status.FAIL, Status.INCONCLUSIVE, Status.WARN, Status.PASS)


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


@dataclass(frozen=True)
class Outcome:
    """The result of one control against one target.

    Attributes:
        control: The catalogued control.
        status: Final status.
        summary: One line that says why.
        observations: Every probe with its verdict (the evidence).
        severity: Severity of the finding (the worst failing observation's).
    """

    control: Control
    status: Status
    summary: str
    observations: tuple[Observation, ...] = field(default_factory=tuple)
    severity: Severity | None = None

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


def observation_dict(o: Observation) -> dict[str, str | None]:
    """JSON form of an observation (what reports and xdist carry)."""
    return {
        "probe": o.probe,
        "observed": o.observed,
        "expected": o.expected,
        "status": o.status.value,
        "severity": o.severity.value if o.severity else None,
        "request_id": o.request_id,
    }


def outcome_dict(outcome: Outcome) -> dict[str, object]:
    """JSON form of an outcome: control ID, status, severity, summary, observations."""
    return {
        "control": outcome.control.id,
        "status": outcome.status.value,
        "severity": outcome.severity.value if outcome.severity else None,
        "summary": outcome.summary,
        "observations": [observation_dict(o) for o in outcome.observations],
    }
