"""``results.sarif``: SARIF 2.1.0, one rule per control, one result per finding."""

from __future__ import annotations

from typing import Any

from harness import __version__
from harness.outcome import Status
from harness.reporting.model import ControlResult, Json, Results

_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}


def render_sarif(results: Results) -> Json:
    """The SARIF log (a JSON object) for code-scanning dashboards."""
    run = results.run
    rules = [_rule(c) for c in results.controls]
    found = [_result(i, c, run.target) for i, c in enumerate(results.controls) if c.is_finding]
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
                        "startTimeUtc": run.started,
                        "endTimeUtc": run.finished,
                    }
                ],
                "results": found,
                "properties": {"report_id": results.report_id, "target": run.target},
            }
        ],
    }


def _rule(c: ControlResult) -> Json:
    """One rule per control, from the catalogue."""
    return {
        "id": c.id,
        "shortDescription": {"text": c.title},
        "fullDescription": {"text": f"{c.title}. HIPAA: {c.citation}"},
        "defaultConfiguration": {"level": _LEVEL[c.default_severity.value]},
        "properties": {
            "citation": c.citation,
            "checklist": list(c.checklist),
            "severity": c.default_severity.value,
            "automated": c.automated,
        },
    }


def _result(index: int, c: ControlResult, target: str) -> Json:
    """One result per finding (FAIL, WARN, ATTESTATION MISSING)."""
    severity = (c.severity or c.default_severity).value
    location: dict[str, Any] = {
        "logicalLocations": [{"fullyQualifiedName": target, "kind": "resource"}]
    }
    properties: Json = {
        "status": c.status.value,
        "severity": c.severity.value if c.severity else None,
        "probes": len(c.observations),
    }
    if c.reproducers:  # the commands that send the failing calls again
        properties["reproducers"] = [
            {"probe": probe_id, **repro.to_json()} for probe_id, repro in c.reproducers
        ]
    return {
        "ruleId": c.id,
        "ruleIndex": index,
        "kind": "fail",
        "level": "note" if c.status is Status.WARN else _LEVEL.get(severity, "error"),
        "message": {"text": f"{c.id} {c.status.value}: {c.summary}"},
        "locations": [location],
        "properties": properties,
    }
