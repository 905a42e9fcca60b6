"""OSCAL assessment results: valid against NIST's schema of the version they declare."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytest.importorskip("trestle")  # compliance-trestle needs Python 3.11+

from trestle.oscal import OSCAL_VERSION
from trestle.oscal import assessment_results as ar

from harness.reporting.bundle import bundle_files, verify, write_bundle
from harness.reporting.model import Results
from harness.reporting.oscal import FILE, NS, render_oscal

from .factory import finished, passed, refl_failed, refl_reproduced
from .test_signing import run_pytest

SCHEMA = Path(__file__).parent.parent / "schemas" / "oscal_assessment-results_schema-1.2.1.json"


def _compile(pattern: str) -> Any:
    try:
        import regex  # \p{L} as the schema means it

        return regex.compile(pattern)
    except ImportError:
        return re.compile(pattern.replace(r"\p{L}", r"[^\W\d_]").replace(r"\p{N}", r"\d"))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if isinstance(instance, str) and not _compile(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": _pattern})


def errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    found = Validator(schema, format_checker=checker).iter_errors(document)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in found]


def document(*controls: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(render_oscal(finished(*controls)))
    return data


def test_the_schema_is_the_version_the_document_declares() -> None:
    schema = json.loads(SCHEMA.read_text())
    doc = document(refl_reproduced(), passed("AUTHZ-001"))
    declared = doc["assessment-results"]["metadata"]["oscal-version"]
    assert declared == OSCAL_VERSION
    assert schema["$id"] == f"http://csrc.nist.gov/ns/oscal/{declared}/oscal-ar-schema.json"


def test_the_document_validates_against_nists_schema() -> None:
    doc = document(refl_reproduced(), passed("AUTHZ-001"))
    assert errors(doc) == []
    ar.AssessmentResults.model_validate(doc["assessment-results"])  # trestle reads it back


def test_the_schema_check_is_not_vacuous() -> None:
    doc = document(refl_failed())
    doc["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] = "meh"
    del doc["assessment-results"]["metadata"]["last-modified"]
    doc["assessment-results"]["results"][0]["observations"][0]["uuid"] = "not-a-uuid"
    found = " ".join(errors(doc))
    assert "last-modified" in found
    assert "meh" in found
    assert "not-a-uuid" in found


def test_controls_become_observations_and_decided_ones_findings() -> None:
    doc = document(refl_failed(), passed("AUTHZ-001"))["assessment-results"]
    result = doc["results"][0]
    reviewed = result["reviewed-controls"]["control-selections"][0]["include-controls"]
    assert {"control-id": "refl-001"} in reviewed
    observed = {o["title"].split()[0]: o for o in result["observations"]}
    assert len(observed) == len(reviewed)  # every control, judged or not
    props = {(p["name"], p["value"]) for p in observed["REFL-001"]["props"]}
    assert ("hipaa-citation", "S: 164.312(a)(1), 164.308(a)(1)(ii)(B)") in props
    assert ("hipaa-standard", "164.312(a)") in props
    assert ("status", "fail") in props
    assert all(p["ns"] == NS for p in observed["REFL-001"]["props"])
    findings = {f["target"]["target-id"]: f for f in result["findings"]}
    assert findings["refl-001"]["target"]["status"]["state"] == "not-satisfied"
    assert findings["authz-001"]["target"]["status"]["state"] == "satisfied"
    assert "tls-001" not in findings  # SKIP here: nobody judged it, so no finding either way
    assert "att-001" in findings  # ATTESTATION MISSING is a finding
    related = findings["refl-001"]["related-observations"][0]["observation-uuid"]
    assert related == observed["REFL-001"]["uuid"]


def test_the_same_results_give_the_same_document() -> None:
    results = finished(refl_failed(), passed("AUTHZ-001"))
    assert render_oscal(results) == render_oscal(results)
    again = Results.from_json(json.loads(json.dumps(results.to_json())))  # a bundle read back
    assert render_oscal(again) == render_oscal(results)


def test_the_bundle_holds_it_when_asked_and_verify_covers_it(tmp_path) -> None:
    results = finished(refl_reproduced(), passed("AUTHZ-001"))
    assert FILE not in bundle_files(results, {})
    files = bundle_files(results, {}, oscal=True)
    assert FILE in files
    assert f"  {FILE}" in files["SHA256SUMS"].decode()
    write_bundle(tmp_path / "b", files)
    assert verify(tmp_path / "b") == []


@pytest.mark.slow
def test_hipaa_oscal_writes_a_valid_document_for_a_run(tmp_path) -> None:
    args = ("--hipaa-target=spawn:reference+reflection", "-k", "REFL_001", "-p", "no:xdist")
    done = run_pytest(tmp_path, *args, "--hipaa-report=out", "--hipaa-oscal")
    assert done.returncode == 1, done.stdout[-2000:]  # REFL-001 fails on this variant
    doc = json.loads((tmp_path / "out" / FILE).read_text())
    assert errors(doc) == []
    findings = {
        f["target"]["target-id"]: f for f in doc["assessment-results"]["results"][0]["findings"]
    }
    assert findings["refl-001"]["target"]["status"]["state"] == "not-satisfied"
    alone = run_pytest(tmp_path, *args, "--hipaa-oscal")
    assert "--hipaa-oscal writes into the bundle" in alone.stderr + alone.stdout
