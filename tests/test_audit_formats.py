"""Audit readers on recorded event files of the real world (``tests/checks/audit_samples``).

Each format (``audit.format``) is read from a file written as its stack writes it: a FHIR
R4 BALP query event (pretty-printed), FHIR R5 events (NDJSON), OCSF API Activity events,
an OTLP/JSON log export, and zap and pino JSON lines with epoch-millisecond times. Every
logical field comes out normalised: the identity, the full method path, the resource,
the outcome as a gRPC code, the time in UTC, the source and the request ID.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import grpc
import pytest

from harness.audit import READERS, Fields, lookup, parse_events, without
from harness.config import parse_config
from harness.errors import ConfigError

SAMPLES = Path(__file__).parent / "checks" / "audit_samples"
OK, DENIED, UNAUTH = (
    grpc.StatusCode.OK,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)


def read(name: str, kind: str):
    path = SAMPLES / name
    return parse_events([(str(path), path.read_bytes())], kind)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.timezone.utc)


def facts(fields: Fields, event) -> dict[str, object]:
    names = ("identity", "method", "resource", "action", "request_id", "source")
    out: dict[str, object] = {n: fields(event, n) for n in names}
    stamp = fields.time(event)
    out["outcome"] = fields.outcome(event)
    out["at"] = stamp.at if stamp else None
    return out


# -- FHIR AuditEvent -----------------------------------------------------------------------


def test_a_fhir_r4_balp_query_event_is_read_from_its_requestor_and_entities():
    got = read("fhir_r4_balp_query.json", "fhir")  # one resource, pretty-printed
    assert (len(got.events), got.unparsed) == (1, 0)
    event = got.events[0]
    assert facts(Fields(kind="fhir"), event) == {
        "identity": "u-1001",  # agent[requestor=true].who.identifier.value
        "method": "/acme.lab.v1.LabOrders/SearchLabOrders",  # the gRPC path among subtypes
        "resource": "Patient/p-0001",  # not the X-Request-Id entity, not the query
        "action": "E",
        "request_id": "3f1c9a52-6d0e-4b8a-9c11-0d2e5b7a4c90",  # BALP XrequestId entity
        "source": "10.1.2.3",  # the client's (Source Role ID) network address
        "outcome": OK,
        "at": utc("2026-11-30T17:09:55.123+00:00"),
    }
    fields = Fields(kind="fhir")
    assert (fields(event, "emergency"), fields(event, "reason")) == (False, None)
    assert fields.time(event).sub_second


def test_fhir_r4_outcomes_name_a_code_by_outcome_desc_or_through_the_outcome_map():
    base = json.loads((SAMPLES / "fhir_r4_balp_query.json").read_text())
    denied = {**base, "outcome": "4", "outcomeDesc": "PermissionDenied"}
    serious = {**base, "outcome": "8"}
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": denied},
            {"resource": serious},
            {"resource": {"resourceType": "Patient"}},
        ],
    }
    got = parse_events([("bundle", json.dumps(bundle).encode())], "fhir")
    assert [e["id"] for e in got.events] == [base["id"]] * 2
    fields = Fields(kind="fhir")
    assert fields.outcome(got.events[0]) == DENIED
    assert fields(got.events[0], "outcome") == "PermissionDenied"
    # "serious failure" is no particular gRPC code, and never code 8 (RESOURCE_EXHAUSTED)
    assert fields.outcome(got.events[1]) is None
    mapped = Fields(outcomes={"8": "INTERNAL"}, kind="fhir")
    assert mapped.outcome(got.events[1]) == grpc.StatusCode.INTERNAL


def test_fhir_r5_events_are_read_from_code_outcome_detail_and_authorization():
    got = read("fhir_r5.ndjson", "fhir")
    assert (len(got.events), got.unparsed) == (2, 1)  # a Provenance is no audit event
    fields = Fields(kind="fhir")
    denied, emergency = got.events
    assert facts(fields, denied) == {
        "identity": "Practitioner/u-2002",  # who.reference when no identifier
        "method": "/acme.lab.v1.LabOrders/GetLabOrder",  # R5 code.coding
        "resource": "LabOrder/1001",
        "action": "R",
        "request_id": None,
        "source": "192.0.2.10",  # R5 agent.networkString
        "outcome": DENIED,  # outcome.detail's gRPC code, not the coarse 4
        "at": utc("2026-11-30T17:09:55.250+00:00"),
    }
    assert (fields(emergency, "emergency"), fields(emergency, "reason")) == (
        True,
        "patient deteriorating, covering physician",
    )
    assert (fields.outcome(emergency), fields(emergency, "source")) == (OK, "urn:ip:192.0.2.11")


def test_a_field_map_path_overrides_the_fhir_default_and_reaches_into_lists():
    event = read("fhir_r4_balp_query.json", "fhir").events[0]
    fields = Fields({"identity": "agent.0.who.display", "resource": "entity.1.query"}, kind="fhir")
    assert fields(event, "identity") == "lab-portal (grpc-go 1.70)"
    assert fields(event, "resource") == "cGF0aWVudD1QYXRpZW50L3AtMDAwMSZzdGF0dXM9ZmlsbGVk"
    assert fields(event, "action") == "E"  # unmapped: still the format's own


# -- OCSF API Activity ---------------------------------------------------------------------


def test_ocsf_api_activity_events_are_read_and_normalised():
    got = read("ocsf_api_activity.jsonl", "ocsf")
    assert (len(got.events), got.unparsed) == (3, 0)  # an Authentication (3002) event too
    fields = Fields(outcomes={"403": "PERMISSION_DENIED"}, kind="ocsf")
    read_ok, update_denied, authn = got.events
    assert facts(fields, read_ok) == {
        "identity": "u-1001",
        "method": "/acme.lab.v1.LabOrders/GetLabOrder",  # api.service.name + api.operation
        "resource": "1001",
        "action": "Read",
        "request_id": "9b2d7c4e-1f3a-4e5b-8c6d-7e8f9a0b1c2d",
        "source": "10.1.2.3",
        "outcome": OK,
        "at": utc("2026-11-30T17:09:55.123+00:00"),  # time: epoch milliseconds
    }
    assert fields.outcome(update_denied) == DENIED  # status_code 403 via audit.outcome_map
    assert Fields(kind="ocsf").outcome(update_denied) is None  # a failure, but which?
    assert fields(update_denied, "source") == "2001:db8::7"
    assert (fields.outcome(authn), fields(authn, "identity")) == (UNAUTH, None)


def test_ocsf_events_as_one_json_array():
    lines = (SAMPLES / "ocsf_api_activity.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    got = parse_events([("array", json.dumps(events, indent=2).encode())], "ocsf")
    assert (len(got.events), got.unparsed, got.lines) == (3, 0, (None, None, None))


# -- OpenTelemetry log records (OTLP/JSON) -------------------------------------------------


def test_otlp_log_records_are_flattened_with_their_attributes_decoded():
    got = read("otlp_logs.json", "otlp")
    assert (len(got.events), got.unparsed) == (2, 0)
    fields = Fields(kind="otlp")
    first, second = got.events
    assert facts(fields, first) == {
        "identity": "u-2002",  # enduser.id
        "method": "/acme.lab.v1.LabOrders/GetLabOrder",  # rpc.service + rpc.method
        "resource": None,  # no semantic convention: audit.field_map names it
        "action": None,
        "request_id": "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",  # captured request metadata
        "source": "10.1.2.3",
        "outcome": DENIED,  # rpc.grpc.status_code, an int64 as text
        "at": utc("2026-11-30T17:09:55.123456+00:00"),  # timeUnixNano
    }
    assert first["resource"]["service.name"] == "lab-orders"
    assert first["scope"]["name"] == "com.acme.lab.audit"
    assert first["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert lookup(first, "attributes.audit.detail.ratio") == 0.5
    assert lookup(first, "attributes.lab.order_id") == 1001
    mapped = Fields({"resource": "attributes.lab.order_id"}, kind="otlp")
    assert mapped(first, "resource") == 1001
    assert facts(fields, second)["method"] == "/acme.lab.v1.LabOrders/ListLabOrders"
    assert facts(fields, second)["outcome"] == OK  # rpc.response.status_code
    assert facts(fields, second)["identity"] == "u-1001"  # user.id
    assert facts(fields, second)["at"] == utc("2026-11-30T17:09:56.5+00:00")  # observed time


def test_otlp_exports_one_per_line_as_the_collector_file_exporter_writes_them():
    export = json.loads((SAMPLES / "otlp_logs.json").read_text())
    text = (json.dumps(export) + "\n") * 2 + "not json\n"
    got = parse_events([("otlp.jsonl", text.encode())], "otlp")
    assert (len(got.events), got.unparsed, got.lines[0]) == (4, 1, None)


# -- JSON lines: pino and zap --------------------------------------------------------------


def test_pino_lines_with_epoch_milliseconds_through_the_field_map():
    got = read("pino.jsonl", "jsonl")
    assert (len(got.events), got.unparsed) == (2, 2)  # a stack trace's lines are counted
    fields = Fields(
        {
            "identity": "audit.actor",
            "method": "audit.rpc",
            "resource": "audit.record",
            "outcome": "audit.outcome",
            "timestamp": "time",
            "source": "audit.peer",
        },
        time_format="epoch_ms",
    )
    ok, unauth = got.events
    assert facts(fields, ok) == {
        "identity": "u-1001",
        "method": "/acme.lab.v1.LabOrders/GetLabOrder",
        "resource": "1001",
        "action": None,
        "request_id": None,
        "source": "ipv4:10.1.2.3:51234",
        "outcome": OK,
        "at": utc("2026-11-30T17:09:55.123+00:00"),
    }
    assert (fields(unauth, "identity"), fields.outcome(unauth)) == (None, UNAUTH)
    assert got.lines[0] == (SAMPLES / "pino.jsonl").read_text().split("\n")[0]


def test_zap_lines_whose_keys_hold_dots_and_whose_times_are_float_milliseconds():
    got = read("zap.jsonl", "jsonl")
    fields = Fields(
        {
            "identity": "auth.sub",
            "method": "grpc.method",
            "resource": "order.id",
            "outcome": "grpc.code",
            "timestamp": "ts",
            "source": "peer.address",
        },
        time_format="epoch_ms",
    )
    denied, ok = (facts(fields, e) for e in got.events)
    assert denied["identity"] == "u-2002"
    assert denied["method"] == "GetLabOrder"  # grpc-go middleware logs the bare name
    assert denied["outcome"] == DENIED  # grpc-go's "PermissionDenied"
    assert denied["at"] == utc("2026-11-30T17:09:55.123457+00:00")
    assert (ok["outcome"], ok["source"]) == (OK, "127.0.0.1:51235")


# -- paths, and the config keys ------------------------------------------------------------


def test_paths_reach_list_items_and_keys_with_dots_and_without_drops_one_value():
    record = {"a": [{"b": 1}, {"c.d": {"e": 2}}], "x.y": 3, "x": {"y": 4}}
    assert lookup(record, "a.0.b") == 1
    assert lookup(record, "a.1.c.d.e") == 2
    assert lookup(record, "x.y") == 3  # the longest key first
    assert lookup(record, "a.2.b") is None
    assert lookup(record, "a.b") is None
    assert without(record, "a.1.c.d.e") == {"a": [{"b": 1}, {"c.d": {}}], "x.y": 3, "x": {"y": 4}}
    assert without(record, "nowhere") == record
    assert record["a"][1] == {"c.d": {"e": 2}}  # the original is untouched


def test_every_format_the_config_accepts_has_a_reader():
    for kind in ("jsonl", "fhir", "ocsf", "otlp"):
        config = parse_config(f'[audit]\nformat = "{kind}"\n'.encode(), "hipaa.toml", Path("."))
        assert Fields.of(config).kind == kind
        assert kind in READERS


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[audit]\nformat = "cef"', "expected one of jsonl, fhir, ocsf, otlp"),
        ('[audit.hash_chain]\ncanonicalization = "c14n"', "expected one of jcs"),
        ('[audit.hash_chain]\nalgorithm = "md5"', "expected one of sha256"),
        ('[audit.hash_chain]\nlinks = "concat"', "unknown key"),
        ('[audit.hash_chain]\nhash_field = ""', "needs the hash_field"),
        ('[audit.hash_chain]\nlink = "prev-in-record"\nprev_field = ""', "needs the prev_field"),
        (
            '[audit.hash_chain]\ncanonicalization = "raw-line"\nlink = "prev-in-record"',
            "cannot leave its own hash out",
        ),
    ],
)
def test_an_unknown_format_or_an_unverifiable_chain_is_a_config_error(text, says):
    with pytest.raises(ConfigError, match=says):
        parse_config(text.encode(), "hipaa.toml", Path("."))


def test_the_chain_settings_of_both_bundled_references_load():
    for chain in (
        'algorithm = "sha256"\ncanonicalization = "json-sorted-compact"\nseq_field = "seq"',
        'canonicalization = "jcs"\nlink = "prev-in-record"\nhash_field = ""\n'
        'prev_field = "extension.1.valueString"\nseq_field = "extension.0.valueInteger"',
        'canonicalization = "raw-line"\nlink = "prev-in-record"\nhash_field = ""',
    ):
        config = parse_config(f"[audit.hash_chain]\n{chain}\n".encode(), "hipaa.toml", Path("."))
        assert config.table("audit.hash_chain")
