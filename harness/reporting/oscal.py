"""``assessment-results.oscal.json``: the run as an OSCAL assessment-results document.

Built with compliance-trestle's OSCAL models (``trestle.oscal``), which declare the OSCAL
version they implement (``metadata.oscal-version``, :data:`trestle.oscal.OSCAL_VERSION`);
the test suite validates the output against NIST's published JSON schema of that version.

One result for the run (start and end from ``results.json``), reviewing every control of
the catalogue (``reviewed-controls``, by control ID in lower case: OSCAL IDs are tokens):

* one **observation** per control: what the run saw (the summary), how (``TEST`` for an
  automated control, ``EXAMINE`` for an attestation), the probes with their statuses in
  ``relevant-evidence`` (``results.json`` is the evidence), and the control's status,
  severity and HIPAA citation as ``props`` (namespace :data:`NS`);
* one **finding** per control the run decided (PASS or ATTESTED: ``satisfied``; FAIL, WARN
  or ATTESTATION MISSING: ``not-satisfied``), targeting the control's objective and
  citing the HIPAA standards (``hipaa-standard`` props, one per standard) and the
  observation. A control the run could not decide (SKIP, INCONCLUSIVE, ERROR) has an
  observation but no finding: OSCAL's objective states are satisfied or not, and neither
  is true of a control nobody could judge.

UUIDs are derived from the report ID (UUIDv5), so the same results give the same document.
"""

# trestle's pydantic models take field names (populate_by_name) but show mypy the aliases
# (``reviewed-controls``) and every optional field as required: call-arg cannot be checked.
# mypy: disable-error-code="call-arg"

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from trestle.oscal import OSCAL_VERSION
from trestle.oscal import assessment_results as ar
from trestle.oscal import common as oc

from harness import __version__
from harness.outcome import Status
from harness.reporting.model import ControlResult, Results

FILE = "assessment-results.oscal.json"
#: Our props' namespace (OSCAL: a prop outside the OSCAL namespace names its own).
NS = "https://pypi.org/project/pytest-hipaa-grpc/ns/oscal"
_SATISFIED = (Status.PASS, Status.ATTESTED)
_NOT_SATISFIED = (Status.FAIL, Status.WARN, Status.ATTESTATION_MISSING)


def render_oscal(results: Results) -> bytes:
    """The OSCAL assessment-results document (JSON, pretty-printed) of ``results``."""
    document = assessment_results(results)
    data: dict[str, Any] = json.loads(document.oscal_serialize_json(pretty=False))
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def assessment_results(results: Results) -> ar.AssessmentResults:
    """The typed document (trestle's model)."""
    run = results.run
    finished = (
        _when(run.finished) or _when(run.started) or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    )
    started = _when(run.started) or finished
    observations = [_observation(results, c, finished) for c in results.controls]
    findings = [_finding(results, c) for c in results.controls if c.status in _DECIDED]
    result = ar.Result(
        uuid=_uuid(results, "result"),
        title=f"HIPAA technical safeguards: {run.target}",
        description=(
            f"Automated tests of {run.target} (profile {run.profile or 'default'}, seed "
            f"{run.seed}) by pytest-hipaa-grpc {__version__}. {results.disclaimer}"
        ),
        start=started,
        end=finished,
        props=[_prop("report-id", results.report_id), _prop("target", run.target)],
        reviewed_controls=oc.ReviewedControls(
            control_selections=[
                oc.ControlSelections(
                    include_controls=[
                        oc.SelectControlById(control_id=_control_id(c)) for c in results.controls
                    ]
                )
            ]
        ),
        observations=observations or None,
        findings=findings or None,
    )
    return ar.AssessmentResults(
        uuid=_uuid(results, "document"),
        metadata=oc.Metadata(
            title=f"pytest-hipaa-grpc assessment results: {run.target}",
            last_modified=finished,
            version=__version__,
            oscal_version=oc.OscalVersion(oc.StringDatatype(OSCAL_VERSION)),
        ),
        import_ap=ar.ImportAp(
            href="manifest.json",
            remarks=(
                "No OSCAL assessment plan: the harness's run configuration and versions "
                "(manifest.json in this bundle) stand for it."
            ),
        ),
        results=[result],
    )


_DECIDED = (*_SATISFIED, *_NOT_SATISFIED)


def _observation(results: Results, c: ControlResult, collected: dt.datetime) -> oc.Observation:
    props = [
        _prop("control-id", c.id),
        _prop("status", c.status.value.replace(" ", "-").lower()),
        _prop("hipaa-citation", c.citation),
        *[_prop("hipaa-standard", s) for s in c.standards],
    ]
    if c.severity is not None:
        props.append(_prop("severity", c.severity.value))
    evidence = [
        oc.RelevantEvidence(
            href=f"results.json#{c.id}",
            description=f"{p.id} {p.status.value}: {p.title}"
            + (f" ({p.reason})" if p.reason else ""),
        )
        for p in c.probes
    ]
    return oc.Observation(
        uuid=_uuid(results, f"observation/{c.id}"),
        title=f"{c.id} {c.title}",
        description=f"{c.id} {c.status.value}: {c.summary or 'no summary'}",
        props=props,
        methods=["TEST" if c.automated else "EXAMINE"],
        types=["control-objective"],
        relevant_evidence=evidence or None,
        collected=collected,
    )


def _finding(results: Results, c: ControlResult) -> oc.Finding:
    satisfied = c.status in _SATISFIED
    state = oc.ObjectiveStatusStateValidValues.satisfied
    if not satisfied:
        state = oc.ObjectiveStatusStateValidValues.not_satisfied
    props = [
        _prop("hipaa-citation", c.citation),
        *[_prop("hipaa-standard", s) for s in c.standards],
    ]
    if c.severity is not None:
        props.append(_prop("severity", c.severity.value))
    return oc.Finding(
        uuid=_uuid(results, f"finding/{c.id}"),
        title=f"{c.id} {c.title}",
        description=f"{c.status.value}: {c.summary or 'no summary'} (HIPAA {c.citation})",
        props=props,
        target=oc.FindingTarget(
            type=oc.FindingTargetTypeValidValues.objective_id,
            target_id=_control_id(c),
            title=c.title,
            status=oc.ObjectiveStatus(
                state=state,
                reason="pass" if satisfied else "fail",
                remarks=c.status.value,
            ),
        ),
        related_observations=[
            oc.RelatedObservation(observation_uuid=_uuid(results, f"observation/{c.id}"))
        ],
    )


def _prop(name: str, value: str) -> oc.Property:
    return oc.Property(name=name, value=value or "none", ns=NS)  # type: ignore[arg-type]


def _control_id(c: ControlResult) -> str:
    return c.id.lower()


def _uuid(results: Results, what: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:hipaa-grpc:{results.report_id}/{what}"))


def _when(text: str) -> dt.datetime | None:
    """An ISO 8601 time with its zone (``Z`` read as UTC), or ``None``."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)
