"""``junit.xml``: one test case per control, control ID, status and citation as properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.outcome import Status
from harness.reporting.model import ControlResult, Results


def render_junit(results: Results) -> bytes:
    """The JUnit XML document: FAIL and ATTESTATION MISSING fail, SKIP and INCONCLUSIVE skip."""
    counts = results.totals
    suite = ET.Element(
        "testsuite",
        name="hipaa-grpc",
        tests=str(len(results.controls)),
        failures=str(counts.get(Status.FAIL, 0) + counts.get(Status.ATTESTATION_MISSING, 0)),
        errors=str(counts.get(Status.ERROR, 0)),
        skipped=str(counts.get(Status.SKIP, 0) + counts.get(Status.INCONCLUSIVE, 0)),
        timestamp=str(results.run.started),
    )
    for c in results.controls:
        _testcase(suite, c)
    xml: bytes = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    return xml


def _testcase(suite: ET.Element, c: ControlResult) -> None:
    case = ET.SubElement(suite, "testcase", classname=f"hipaa.{c.family}", name=f"{c.id} {c.title}")
    props = ET.SubElement(case, "properties")
    severity = c.severity.value if c.severity else ""
    for name, value in (
        ("hipaa_control", c.id),
        ("hipaa_status", c.status.value),
        ("hipaa_severity", severity),
        ("hipaa_citation", c.citation),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    text = "\n".join(
        f"{o.status.value} {o.probe}: observed {o.observed}; expected {o.expected}"
        for o in c.observations
    )
    for probe_id, repro in c.reproducers:  # the commands that send the failing call again
        text += f"\nReproduce {probe_id}:\n" + "\n".join(f"  {line}" for line in repro.lines())
    if c.status in (Status.FAIL, Status.ATTESTATION_MISSING):
        ET.SubElement(case, "failure", message=c.summary, type=severity).text = text
    elif c.status is Status.ERROR:
        ET.SubElement(case, "error", message=c.summary).text = text
    elif c.status in (Status.SKIP, Status.INCONCLUSIVE):
        ET.SubElement(case, "skipped", message=f"{c.status.value}: {c.summary}")
