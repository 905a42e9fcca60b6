"""The typed model reads what it writes, in schema 2.0 and 1.0."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from harness.catalogue import CATALOGUE
from harness.outcome import Status
from harness.reporting.model import ControlResult, Results, RunInfo

from .factory import (
    REFL_REPRODUCER,
    RUN,
    as_version_1,
    finished,
    passed,
    refl_failed,
    refl_reproduced,
)


def schema(version: str) -> dict[str, Any]:
    text = (resources.files("harness") / "schemas" / f"results-{version}.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def test_control_result_survives_the_xdist_seam() -> None:
    result = refl_failed()
    shipped = json.loads(json.dumps(result.to_json()))  # what execnet carries
    assert ControlResult.from_json(shipped) == result
    assert shipped["observations"][0]["ref"] == "a"
    assert [p["id"] for p in shipped["probes"]] == ["REFL-001(a)", "REFL-001(b)"]


def test_results_round_trip_in_schema_2() -> None:
    results = finished(refl_failed(), passed("AUTHZ-001"))
    data = results.to_json()
    jsonschema.validate(data, schema("2.0"), format_checker=jsonschema.FormatChecker())
    assert list(data) == [
        "schema_version",
        "report_id",
        "disclaimer",
        "run",
        "controls",
        "totals",
        "probe_coverage",
        "rollup",
        "evidence",
    ]
    again = Results.from_json(json.loads(json.dumps(data)))
    assert again == results
    assert again.to_json() == data


def test_a_reproducer_rides_on_its_probe_entry_and_reads_back() -> None:
    results = finished(refl_reproduced(), passed("AUTHZ-001"))
    data = results.to_json()
    jsonschema.validate(data, schema("2.0"), format_checker=jsonschema.FormatChecker())
    refl = next(c for c in data["controls"] if c["id"] == "REFL-001")
    probes = {p["id"]: p for p in refl["probes"]}
    assert probes["REFL-001(a)"]["reproducer"] == REFL_REPRODUCER.to_json()
    assert "reproducer" not in probes["REFL-001(b)"]
    again = Results.from_json(json.loads(json.dumps(data)))
    assert again == results
    control = again.control("REFL-001")
    assert control is not None
    assert control.reproducer("REFL-001(a)") == REFL_REPRODUCER
    assert REFL_REPRODUCER.command.startswith("grpcurl ")


def test_results_of_schema_1_are_read_and_written_back_as_1() -> None:
    data = as_version_1(finished(refl_failed(), passed("AUTHZ-001")).to_json())
    jsonschema.validate(data, schema("1.0"))
    old = Results.from_json(data)
    assert old.schema_version == "1.0"
    assert old.probe_coverage is None
    refl = old.control("REFL-001")
    assert refl is not None
    assert refl.status is Status.FAIL
    assert refl.probes == ()
    assert refl.observations[0].ref == ""
    assert old.findings()["REFL-001"] is Status.FAIL
    assert old.to_json() == data


def test_an_unknown_schema_version_is_refused() -> None:
    data = finished(passed("AUTHZ-001")).to_json()
    data["schema_version"] = "9.9"
    with pytest.raises(ValueError, match=r"schema version '9\.9' is not one I read"):
        Results.from_json(data)


def test_run_info_leaves_out_what_it_does_not_know() -> None:
    assert RunInfo(target="t", seed=1).to_json() == {
        "target": "t",
        "profile": "",
        "seed": 1,
        "started": "",
        "finished": "",
    }
    assert RunInfo.from_json(RUN.to_json()) == RUN


def test_with_control_restamps_the_catalogue_facts() -> None:
    stale = ControlResult.from_json({**refl_failed().to_json(), "title": "old title"})
    fresh = stale.with_control(CATALOGUE["REFL-001"])
    assert fresh.title == CATALOGUE["REFL-001"].title
    assert (fresh.status, fresh.observations, fresh.tests) == (
        stale.status,
        stale.observations,
        stale.tests,
    )
