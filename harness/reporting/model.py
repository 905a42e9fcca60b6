"""The typed results: one run, one result per control, the document ``results.json`` holds.

Every writer takes a :class:`Results`; the pytest plugin ships one :class:`ControlResult`
per test through xdist as :meth:`ControlResult.to_json` and rebuilds it with
:meth:`ControlResult.from_json`. JSON is written in schema 2.0 (the key order is the one
``results.json`` has always had); :meth:`Results.from_json` also reads schema 1.0, which
had no ``probes``, no ``probe_coverage`` and no observation ``ref``, and writes a document
it read back in the version it came in. A failing probe's entry may carry a
``reproducer`` (:class:`Reproducer`): the command that re-sends what the harness sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from harness.catalogue import CATALOGUE, Control, Severity
from harness.outcome import (
    Observation,
    Outcome,
    ProbeResult,
    Status,
    observation_dict,
    probe_dict,
)

SCHEMA_VERSION = "2.0"
#: Schema versions ``report diff`` and ``report verify`` still read (older bundles).
READABLE_SCHEMAS = ("1.0", "2.0")
DISCLAIMER = (
    "Automated testing provides evidence about specific technical behaviours of one endpoint "
    "at one point in time; it is not a determination of HIPAA compliance."
)
#: Statuses that are findings (SARIF results, ``report diff``).
FINDING_STATUSES = (Status.FAIL, Status.WARN, Status.ATTESTATION_MISSING)
EVIDENCE_CONTROL = "EVID-001"

Json = dict[str, Any]

_RUN_KEYS = (
    "target",
    "address",
    "transport",
    "profile",
    "seed",
    "started",
    "finished",
    "operator",
    "pytest_exit_status",
)


def standards_of(citation: str) -> tuple[str, ...]:
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
    return tuple(found)


def catalogued(control_id: str) -> Control:
    """The catalogue's control, or a bare one for an ID the catalogue does not hold."""
    control = CATALOGUE.get(control_id)
    if control is not None:
        return control
    return Control(control_id, "", "", (), Severity.MEDIUM, "", True)


def _severity(value: object) -> Severity | None:
    return Severity(value) if value else None


def _severity_json(severity: Severity | None) -> str | None:
    return severity.value if severity else None


def _check_version(version: object) -> str:
    if version not in READABLE_SCHEMAS:
        readable = ", ".join(READABLE_SCHEMAS)
        raise ValueError(f"schema version {version!r} is not one I read ({readable})")
    return str(version)


# -- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What was tested, how, when and by whom (``results.json`` ``run``).

    The optional fields are left out of the JSON when ``None``.
    """

    target: str = ""
    profile: str = ""
    seed: int = 0
    started: str = ""
    finished: str = ""
    address: str | None = None
    transport: str | None = None
    operator: str | None = None
    pytest_exit_status: int | None = None

    def to_json(self) -> Json:
        """JSON form, in the key order ``results.json`` has."""
        return {k: getattr(self, k) for k in _RUN_KEYS if getattr(self, k) is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunInfo:
        """The run from its JSON form (unknown keys are ignored)."""
        return cls(**{k: data[k] for k in _RUN_KEYS if k in data})


# -- one control --------------------------------------------------------------------------


@dataclass(frozen=True)
class AttestationRecord:
    """A valid attestation as the report shows it (dates in ISO 8601)."""

    attested_by: str
    date: str
    valid_until: str
    evidence: str
    evidence_sha256: str
    statement: str
    role: str = ""

    def to_json(self) -> Json:
        """JSON form."""
        return {
            "attested_by": self.attested_by,
            "role": self.role,
            "date": self.date,
            "valid_until": self.valid_until,
            "evidence": self.evidence,
            "evidence_sha256": self.evidence_sha256,
            "statement": self.statement,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttestationRecord:
        """The attestation from its JSON form."""
        return cls(
            attested_by=str(data["attested_by"]),
            date=str(data["date"]),
            valid_until=str(data["valid_until"]),
            evidence=str(data["evidence"]),
            evidence_sha256=str(data["evidence_sha256"]),
            statement=str(data["statement"]),
            role=str(data.get("role", "")),
        )


def observation_json(o: Observation, version: str = SCHEMA_VERSION) -> Json:
    """JSON form of an observation; schema 1.0 had no ``ref``."""
    out: Json = dict(observation_dict(o))
    if version == "1.0":
        del out["ref"]
    return out


def observation_from_json(data: Mapping[str, Any]) -> Observation:
    """An observation from its JSON form (schema 1.0 or 2.0)."""
    return Observation(
        probe=str(data["probe"]),
        observed=str(data["observed"]),
        expected=str(data["expected"]),
        status=Status(data["status"]),
        severity=_severity(data.get("severity")),
        request_id=data.get("request_id"),
        ref=str(data.get("ref", "")),
    )


@dataclass(frozen=True)
class Reproducer:
    """A ready command that re-sends what the harness sent for one failing probe.

    Credentials never appear: every token is a ``$HIPAA_TOKEN_<principal>`` placeholder
    (listed in ``fill``) the user sets before running the command.

    Attributes:
        request_id: The harness's request ID of the call it re-sends (``""`` for a re-run).
        method: Full method path of that call (``""`` for a re-run).
        code: What the harness got, ``PERMISSION_DENIED (7)``: the command should get it again.
        grpcurl: A ``grpcurl`` line with the request as JSON, or ``""`` when JSON cannot
            carry it (raw or malformed bytes, more than one message, no descriptors).
        replay: A ``hipaa-grpc replay`` line with the request bytes as base64 (or ``""``
            when the call's bytes were not recorded).
        rerun: The command that runs this control again with the same seed: the fallback
            when no single call reproduces the finding.
        fill: The placeholders (environment variables) the user sets first.
        note: What the commands do not carry, in words (``""`` when nothing).
    """

    code: str = ""
    request_id: str = ""
    method: str = ""
    grpcurl: str = ""
    replay: str = ""
    rerun: str = ""
    fill: tuple[str, ...] = ()
    note: str = ""

    @property
    def command(self) -> str:
        """The one command to show first: grpcurl, else replay, else the re-run."""
        return self.grpcurl or self.replay or self.rerun

    def lines(self) -> list[str]:
        """The commands, one per line, for text views (terminal, Markdown)."""
        out = []
        if self.fill:
            out.append("set first: " + ", ".join(f"${name}" for name in self.fill))
        out += [line for line in (self.grpcurl, self.replay) if line]
        if self.rerun and not (self.grpcurl or self.replay):
            out.append(self.rerun)
        if self.note:
            out.append(f"note: {self.note}")
        return out

    def to_json(self) -> Json:
        """JSON form (a probe entry's ``reproducer``)."""
        return {
            "code": self.code,
            "request_id": self.request_id,
            "method": self.method,
            "grpcurl": self.grpcurl,
            "replay": self.replay,
            "rerun": self.rerun,
            "fill": list(self.fill),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reproducer:
        """The reproducer from its JSON form."""
        return cls(
            code=str(data.get("code", "")),
            request_id=str(data.get("request_id", "")),
            method=str(data.get("method", "")),
            grpcurl=str(data.get("grpcurl", "")),
            replay=str(data.get("replay", "")),
            rerun=str(data.get("rerun", "")),
            fill=tuple(str(f) for f in data.get("fill", ())),
            note=str(data.get("note", "")),
        )


def probe_from_json(data: Mapping[str, Any]) -> ProbeResult:
    """A probe result from its JSON form."""
    return ProbeResult(
        id=str(data["id"]),
        title=str(data["title"]),
        status=Status(data["status"]),
        required=bool(data["required"]),
        request_ids=tuple(str(r) for r in data.get("request_ids", ())),
        reason=str(data.get("reason", "")),
        enable=str(data.get("enable", "")),
        observations=int(data.get("observations", 0)),
    )


@dataclass(frozen=True)
class ControlResult:
    """One control's result: the catalogue's facts about it, and what this run found.

    Attributes:
        id, title, family, citation, checklist, automated, default_severity: From the
            catalogue (copied, so a report read back does not depend on this catalogue).
        standards: The HIPAA standards the citation names (``164.312(e)``).
        status: The final status; severity: the finding's, ``None`` when there is none.
        summary: One line that says why.
        observations: Every probe made, with its verdict (the evidence).
        probes: Every declared probe with what became of it.
        tests: Node IDs of the tests that spoke for the control.
        attestation: For an ATTESTED control, the attestation.
        reproducers: Probe ID -> the command that reproduces its finding (FAIL probes);
            in JSON, the probe entry's ``reproducer``. See :meth:`reproducer`.
    """

    id: str
    title: str
    family: str
    citation: str
    standards: tuple[str, ...]
    checklist: tuple[str, ...]
    automated: bool
    default_severity: Severity
    status: Status
    severity: Severity | None = None
    summary: str = ""
    observations: tuple[Observation, ...] = ()
    probes: tuple[ProbeResult, ...] = ()
    tests: tuple[str, ...] = ()
    attestation: AttestationRecord | None = None
    reproducers: tuple[tuple[str, Reproducer], ...] = ()

    def reproducer(self, probe_id: str) -> Reproducer | None:
        """The reproducer of probe ``probe_id`` (``AUTHZ-001(a)``), if it has one."""
        return dict(self.reproducers).get(probe_id)

    @classmethod
    def of(
        cls,
        control: Control,
        status: Status,
        summary: str = "",
        *,
        severity: Severity | None = None,
        observations: Iterable[Observation] = (),
        probes: Iterable[ProbeResult] = (),
        tests: Iterable[str] = (),
        attestation: AttestationRecord | None = None,
    ) -> ControlResult:
        """A result for a catalogued control."""
        return cls(
            id=control.id,
            title=control.title,
            family=control.family,
            citation=control.citation,
            standards=standards_of(control.citation),
            checklist=tuple(control.checklist),
            automated=control.automated,
            default_severity=control.severity,
            status=status,
            severity=severity,
            summary=summary,
            observations=tuple(observations),
            probes=tuple(probes),
            tests=tuple(tests),
            attestation=attestation,
        )

    @classmethod
    def from_outcome(
        cls,
        outcome: Outcome,
        *,
        tests: Iterable[str] = (),
        status: Status | None = None,
        summary: str | None = None,
    ) -> ControlResult:
        """The result of a check's outcome; the test's own ``status``/``summary`` win."""
        return cls.of(
            outcome.control,
            outcome.status if status is None else status,
            outcome.summary if summary is None else summary,
            severity=outcome.severity,
            observations=outcome.observations,
            probes=outcome.probes,
            tests=tests,
        )

    def with_control(self, control: Control) -> ControlResult:
        """This result with the catalogue's facts of ``control`` (the run's verdict kept)."""
        fresh = ControlResult.of(control, self.status)
        return replace(
            fresh,
            severity=self.severity,
            summary=self.summary,
            observations=self.observations,
            probes=self.probes,
            tests=self.tests,
            attestation=self.attestation,
            reproducers=self.reproducers,
        )

    @property
    def is_finding(self) -> bool:
        """FAIL, WARN or ATTESTATION MISSING."""
        return self.status in FINDING_STATUSES

    def to_json(self, version: str = SCHEMA_VERSION) -> Json:
        """JSON form (a ``results.json`` control entry); schema 1.0 had no ``probes``."""
        out: Json = {
            "id": self.id,
            "title": self.title,
            "family": self.family,
            "citation": self.citation,
            "standards": list(self.standards),
            "checklist": list(self.checklist),
            "automated": self.automated,
            "default_severity": self.default_severity.value,
            "status": self.status.value,
            "severity": _severity_json(self.severity),
            "summary": self.summary,
            "observations": [observation_json(o, version) for o in self.observations],
            "probes": [self._probe_json(p) for p in self.probes],
            "tests": list(self.tests),
            "attestation": self.attestation.to_json() if self.attestation else None,
        }
        if version == "1.0":
            del out["probes"]
        return out

    def _probe_json(self, probe: ProbeResult) -> Json:
        """A probe entry, with its ``reproducer`` when it has one."""
        out: Json = dict(probe_dict(probe))
        found = self.reproducer(probe.id)
        if found is not None:
            out["reproducer"] = found.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ControlResult:
        """The result from its JSON form (schema 1.0 or 2.0)."""
        attestation = data.get("attestation")
        probes = data.get("probes", ())
        return cls(
            id=str(data["id"]),
            title=str(data["title"]),
            family=str(data["family"]),
            citation=str(data["citation"]),
            standards=tuple(str(s) for s in data["standards"]),
            checklist=tuple(str(c) for c in data["checklist"]),
            automated=bool(data["automated"]),
            default_severity=Severity(data["default_severity"]),
            status=Status(data["status"]),
            severity=_severity(data.get("severity")),
            summary=str(data.get("summary", "")),
            observations=tuple(observation_from_json(o) for o in data.get("observations", ())),
            probes=tuple(probe_from_json(p) for p in probes),
            tests=tuple(str(t) for t in data.get("tests", ())),
            attestation=AttestationRecord.from_json(attestation) if attestation else None,
            reproducers=tuple(
                (str(p["id"]), Reproducer.from_json(p["reproducer"]))
                for p in probes
                if p.get("reproducer")
            ),
        )


# -- the document -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeCoverage:
    """Probes declared, run (judged or tried), and required ones that did not run."""

    declared: int = 0
    run: int = 0
    required_not_run: int = 0

    def line(self) -> str:
        """``probe coverage: 180 of 190 probes run; 3 required probes did not run``."""
        line = f"probe coverage: {self.run} of {self.declared} probes run"
        if self.required_not_run:
            line += f"; {self.required_not_run} required probes did not run"
        return line

    def to_json(self) -> Json:
        """JSON form."""
        return {
            "declared": self.declared,
            "run": self.run,
            "required_not_run": self.required_not_run,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeCoverage:
        """The coverage from its JSON form."""
        return cls(int(data["declared"]), int(data["run"]), int(data["required_not_run"]))


@dataclass(frozen=True)
class StandardRollup:
    """One HIPAA standard: its controls, the automated ones' statuses, the attestations."""

    standard: str
    name: str
    controls: tuple[str, ...]
    counts: Mapping[Status, int]
    worst_failure: Severity | None
    attestations: Mapping[str, Status]

    def to_json(self) -> Json:
        """JSON form."""
        return {
            "standard": self.standard,
            "name": self.name,
            "controls": list(self.controls),
            "counts": {s.value: n for s, n in self.counts.items()},
            "worst_failure": _severity_json(self.worst_failure),
            "attestations": {k: s.value for k, s in self.attestations.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StandardRollup:
        """The roll-up entry from its JSON form."""
        return cls(
            standard=str(data["standard"]),
            name=str(data["name"]),
            controls=tuple(str(c) for c in data["controls"]),
            counts={Status(s): int(n) for s, n in data["counts"].items()},
            worst_failure=_severity(data.get("worst_failure")),
            attestations={str(k): Status(s) for k, s in data["attestations"].items()},
        )


@dataclass(frozen=True)
class Evidence:
    """EVID-001 as the bundle decided it: PASS, or FAIL with what the self-scan found."""

    status: Status
    summary: str
    severity: Severity | None = None

    @property
    def valid(self) -> bool:
        """Whether the report is valid (EVID-001 passed)."""
        return self.status is Status.PASS

    def to_json(self) -> Json:
        """JSON form (``results.json`` ``evidence``)."""
        return {
            "id": EVIDENCE_CONTROL,
            "status": self.status.value,
            "severity": _severity_json(self.severity),
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evidence:
        """EVID-001 from its JSON form."""
        return cls(Status(data["status"]), str(data["summary"]), _severity(data.get("severity")))


@dataclass(frozen=True)
class Results:
    """The content of ``results.json``: every control of the catalogue, with the roll-ups.

    ``evidence`` is ``None`` until the bundle decides EVID-001; ``probe_coverage`` is
    ``None`` in a schema 1.0 document.
    """

    report_id: str
    run: RunInfo
    controls: tuple[ControlResult, ...]
    totals: Mapping[Status, int]
    rollup: tuple[StandardRollup, ...]
    probe_coverage: ProbeCoverage | None = None
    evidence: Evidence | None = None
    schema_version: str = SCHEMA_VERSION
    disclaimer: str = DISCLAIMER

    def control(self, control_id: str) -> ControlResult | None:
        """The result of one control, if the document has it."""
        return next((c for c in self.controls if c.id == control_id), None)

    def findings(self) -> dict[str, Status]:
        """Control ID -> status, for every control whose status is a finding."""
        return {c.id: c.status for c in self.controls if c.is_finding}

    def to_json(self) -> Json:
        """JSON form, in ``schema_version`` and the key order ``results.json`` has."""
        version = self.schema_version
        out: Json = {
            "schema_version": version,
            "report_id": self.report_id,
            "disclaimer": self.disclaimer,
            "run": self.run.to_json(),
            "controls": [c.to_json(version) for c in self.controls],
            "totals": {s.value: n for s, n in self.totals.items()},
        }
        if self.probe_coverage is not None and version != "1.0":
            out["probe_coverage"] = self.probe_coverage.to_json()
        out["rollup"] = [r.to_json() for r in self.rollup]
        if self.evidence is not None:
            out["evidence"] = self.evidence.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Results:
        """The document from ``results.json`` (schema 1.0 or 2.0).

        Raises:
            ValueError: Another schema version, or a value the schema does not allow.
            KeyError: A required key is missing.
        """
        version = _check_version(data.get("schema_version"))
        coverage = data.get("probe_coverage")
        evidence = data.get("evidence")
        return cls(
            schema_version=version,
            report_id=str(data["report_id"]),
            disclaimer=str(data["disclaimer"]),
            run=RunInfo.from_json(data["run"]),
            controls=tuple(ControlResult.from_json(c) for c in data["controls"]),
            totals={Status(s): int(n) for s, n in data["totals"].items()},
            rollup=tuple(StandardRollup.from_json(r) for r in data["rollup"]),
            probe_coverage=ProbeCoverage.from_json(coverage) if coverage else None,
            evidence=Evidence.from_json(evidence) if evidence else None,
        )
