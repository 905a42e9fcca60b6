"""AUDIT-* judges on recorded calls and hand-built audit events, no server.

Events come in two shapes: the bundled reference's (flat names, RFC 3339 ``ts``, code
names) and another stack's (nested names through ``audit.field_map``, epoch
milliseconds, outcomes spelt ``PermissionDenied`` or as numbers).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2

from harness.audit import (
    ByTuple,
    Events,
    Fields,
    appended,
    by_request_id,
    load_anchor,
    outcome_code,
    parse_time,
    save_anchor,
)
from harness.canary import CanarySet
from harness.checks import audit as checks
from harness.checks import registered
from harness.config import Config
from harness.outcome import NotApplicable, Status
from harness.plans.calls import Call
from harness.plans.canaries import (
    UNDATED,
    Callers,
    alert_seen,
    alert_state,
    field_paths,
    method_plan,
)
from harness.tokens import parse
from tests.checks.recorded import answer, by_ref, settled, statuses

OK, DENIED, UNAUTH = (
    grpc.StatusCode.OK,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)
NOW = 1_790_000_000.0  # a fixed wall-clock time for the calls
REFERENCE = Fields({"timestamp": "ts"})
#: Another stack: nested actor and RPC, epoch milliseconds, its own outcome words.
OTHER = Fields(
    {
        "identity": "actor.sub",
        "method": "rpc.fullMethod",
        "resource": "target.id",
        "outcome": "result",
        "request_id": "correlation.requestId",
        "timestamp": "time",
        "source": "client.ip",
        "action": "verb",
    },
    {"Forbidden": "PERMISSION_DENIED", "Unauthorized": 16},
    "epoch_ms",
)


def call(code=OK, *, method="/pkg.Svc/GetRecord", principal="clin", at=NOW, elapsed=0.02):
    return replace(
        answer(code, method=method, principal=principal, elapsed_s=elapsed), started_at=at
    )


def ref_event(c, *, identity="u-clin-01", at=None, outcome=None, **changes) -> dict[str, Any]:
    """An event as the bundled reference writes it."""
    when = dt.datetime.fromtimestamp(at if at is not None else c.started_at, dt.timezone.utc)
    event = {
        "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": c.request_id,
        "identity": identity,
        "method": c.method,
        "action": "read",
        "resource": "p-0001",
        "outcome": outcome or c.code.name,
        "source": "ipv4:127.0.0.1:50000",
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


def other_event(c, *, identity="u-clin-01", outcome="Success", ms=None) -> dict[str, Any]:
    """The same facts as another stack logs them."""
    return {
        "actor": {"sub": identity, "type": "user"},
        "rpc": {"fullMethod": c.method},
        "target": {"id": "p-0001"},
        "result": outcome,
        "correlation": {"requestId": c.request_id},
        "time": ms if ms is not None else int(c.started_at * 1000) + 10,
        "client": {"ip": "10.0.0.7"},
        "verb": "READ",
    }


# -- the reader: field map, outcomes, timestamps ------------------------------------------


def test_fields_read_nested_names_through_the_field_map():
    c = call()
    e = other_event(c, outcome="Forbidden")
    assert OTHER(e, "identity") == "u-clin-01"
    assert OTHER(e, "request_id") == c.request_id
    assert OTHER(e, "missing") is None
    assert OTHER.outcome(e) == DENIED
    assert OTHER.time(e).sub_second
    assert by_request_id([e, {"x": 1}], [c.request_id, "other"], OTHER) == {
        c.request_id: [e],
        "other": [],
    }


@pytest.mark.parametrize(
    ("spelling", "code"),
    [
        ("PERMISSION_DENIED", DENIED),
        ("permission_denied", DENIED),
        ("PermissionDenied", DENIED),  # Go's and .NET's code string
        ("7", DENIED),
        (7, DENIED),
        ("Unauthenticated", UNAUTH),
        (16, UNAUTH),
        ("OK", OK),
        (True, None),
        ("denied", None),
        (None, None),
    ],
)
def test_outcomes_are_understood_in_any_case_and_as_numbers(spelling, code):
    assert outcome_code(spelling) == code


def test_outcome_map_maps_a_services_own_words():
    assert outcome_code("403", {"403": "PERMISSION_DENIED"}) == DENIED
    assert outcome_code("Unauthorized", {"Unauthorized": 16}) == UNAUTH
    assert outcome_code("Forbidden") is None


@pytest.mark.parametrize(
    ("value", "time_format", "when", "sub_second"),
    [
        ("2026-11-22T12:00:00.123Z", "auto", "2026-11-22T12:00:00.123000+00:00", True),
        ("2026-11-22T13:00:00.5+01:00", "rfc3339", "2026-11-22T12:00:00.500000+00:00", True),
        ("2026-11-22T12:00:00Z", "auto", "2026-11-22T12:00:00+00:00", False),
        (1795348800, "epoch_s", "2026-11-22T12:00:00+00:00", False),
        (1795348800.25, "epoch_s", "2026-11-22T12:00:00.250000+00:00", True),
        (1795348800250, "epoch_ms", "2026-11-22T12:00:00.250000+00:00", True),
        (1795348800250000, "auto", "2026-11-22T12:00:00.250000+00:00", True),
        ("1795348800250", "epoch_ms", "2026-11-22T12:00:00.250000+00:00", True),
        (1795348800250000000, "epoch_ns", "2026-11-22T12:00:00.250000+00:00", True),
    ],
)
def test_unambiguous_timestamps(value, time_format, when, sub_second):
    stamp = parse_time(value, time_format)
    assert stamp is not None
    assert stamp.at.isoformat() == when
    assert stamp.sub_second is sub_second


@pytest.mark.parametrize(
    ("value", "time_format"),
    [
        ("2026-11-22T12:00:00.123", "auto"),  # no zone: ambiguous
        ("2026-11-22 12:00", "auto"),
        ("22/11/2026 12:00:00", "auto"),
        (1795348800250, "rfc3339"),  # a number where RFC 3339 is declared
        ("2026-11-22T12:00:00.123Z", "epoch_ms"),  # text where epoch is declared
        (True, "auto"),
        (None, "auto"),
    ],
)
def test_ambiguous_or_undeclared_timestamps_are_refused(value, time_format):
    assert parse_time(value, time_format) is None


# -- AUDIT-001 ----------------------------------------------------------------------------


def test_audit_001_every_call_with_one_event_passes():
    calls = [call(OK), call(DENIED), call(UNAUTH, principal=None)]
    events = {c.request_id: [ref_event(c)] for c in calls}
    obs = checks.judge_reconciliation(calls, events, 1)
    assert by_ref(settled("AUDIT-001", obs)) == {"read": [Status.PASS], "denied": [Status.PASS]}
    assert settled("AUDIT-001", obs).status is Status.PASS


def test_audit_001_a_denied_call_without_an_event_fails_high():
    allowed, denied = call(OK), call(DENIED)
    obs = checks.judge_reconciliation([allowed, denied], {allowed.request_id: [{}]}, 1)
    out = settled("AUDIT-001", obs)
    assert out.status is Status.FAIL
    assert out.severity.value == "high"
    fail = next(o for o in obs if o.status is Status.FAIL)
    assert (fail.ref, fail.request_id, fail.observed) == (
        "denied",
        denied.request_id,
        "no audit event",
    )


def test_audit_001_duplicates_fail_low():
    c, d = call(OK), call(DENIED)
    obs = checks.judge_reconciliation([c, d], {c.request_id: [{}, {}], d.request_id: [{}]}, 1)
    out = settled("AUDIT-001", obs)
    assert (out.status, out.severity.value) == (Status.FAIL, "low")
    assert checks.judge_reconciliation([c], {c.request_id: [{}, {}]}, 2)[-1].status is Status.PASS


def test_audit_001_writes_are_their_own_optional_probe():
    read, write, denied = call(OK), call(OK, method="/pkg.Svc/Update"), call(DENIED)
    events = {c.request_id: [{}] for c in (read, write, denied)}
    obs = checks.judge_reconciliation([read, write, denied], events, 1, {"/pkg.Svc/Update"})
    assert set(by_ref(settled("AUDIT-001", obs))) == {"read", "write", "denied"}
    assert checks.call_kind(write, {"/pkg.Svc/Update"}) == "write"
    assert checks.call_kind(call(UNAUTH, method="/pkg.Svc/Update"), {"/pkg.Svc/Update"}) == "denied"


def test_audit_001_zero_reconciled_calls_is_not_a_pass():
    """Known weakness, now closed: nothing reconciled used to PASS ("0 calls reconciled")."""
    out = settled("AUDIT-001", checks.judge_reconciliation([], {}, 1))
    assert out.status is Status.INCONCLUSIVE


def test_audit_001_only_allowed_calls_leave_the_denied_probe_unrun():
    c = call(OK)
    out = settled("AUDIT-001", checks.judge_reconciliation([c], {c.request_id: [{}]}, 1))
    assert out.status is Status.INCONCLUSIVE
    assert "AUDIT-001(denied)" in out.summary


def test_audit_001_unreached_calls_owe_no_event_and_leave_it_inconclusive():
    journal = [
        call(grpc.StatusCode.UNAVAILABLE),
        call(grpc.StatusCode.DEADLINE_EXCEEDED),
        call(grpc.StatusCode.RESOURCE_EXHAUSTED),  # the client library's own size limit
        call(OK, method="/pkg.Svc/NotPhi"),
    ]
    calls = checks.phi_calls(journal, ["/pkg.Svc/GetRecord"])
    assert calls == []
    out = settled("AUDIT-001", checks.judge_reconciliation(calls, {}, 1))
    assert out.status is Status.INCONCLUSIVE


def _edge(code, text, **kw):
    """A proxy's own answer to a call (nginx's page, no grpc-status): never the service's."""
    return replace(call(code, **kw), details=text)


def test_audit_owes_no_event_for_a_proxy_answer():
    """nginx's 400 (a duplicate authorization header), its 401 and a lost status: no call
    reached the service, so none owes an event (AUDIT-001) or is a refusal to audit
    (AUDIT-003); the forged-sub burst judges only calls that reached it."""
    lost = "Stream removed (Data frame with END_STREAM flag received)"
    journal = [
        _edge(grpc.StatusCode.INTERNAL, "Received http2 header with status: 400"),
        _edge(UNAUTH, "unexpected HTTP status code received from server: 401 (Unauthorized)"),
        _edge(grpc.StatusCode.INTERNAL, lost),
    ]
    assert checks.phi_calls(journal, ["/pkg.Svc/GetRecord"]) == []
    assert checks.judge_refusals(journal[1:2], {}, OTHER) == []
    service = call(UNAUTH, principal=None)
    assert checks.phi_calls([*journal, service], ["/pkg.Svc/GetRecord"]) == [service]


def test_audit_001_each_phi_method_needs_an_allowed_and_a_denied_call():
    get, put, other = "/pkg.Svc/GetRecord", "/pkg.Svc/PutRecord", "/pkg.Svc/ListRecords"
    calls = [call(OK, method=get), call(DENIED, method=get), call(UNAUTH, method=other)]
    events = {c.request_id: [{}] for c in calls}
    obs = checks.judge_reconciliation(calls, events, 1, {put})
    obs += checks.judge_coverage(calls, [get, other, put], {put}, mutations=False)
    out = settled("AUDIT-001", obs)
    # ListRecords was only ever refused: its allowed read was never reconciled
    assert out.status is Status.INCONCLUSIVE
    assert other in out.summary
    write = next(o for o in obs if o.ref == "write")
    assert (write.status, write.expected) == (Status.SKIP, "safety.allow_mutations")
    assert checks.judge_coverage(calls, [get]) == []


class Recorded:
    """A run that has already made its calls: its journal, its memo, its config."""

    def __init__(self, config: dict[str, Any], journal: list[Any]) -> None:
        self.config = Config(config)
        self.journal = journal
        self.memos: dict[str, Any] = {}

    def calls(self):
        return list(self.journal)

    def memo(self, key, compute):
        if key not in self.memos:
            self.memos[key] = compute()
        return self.memos[key]


def test_audit_001_judges_its_own_calls_not_the_whole_journal(tmp_path, monkeypatch):
    """Its verdict no longer depends on what other controls sent before it (order, -k)."""
    read, denied = call(OK), call(DENIED)
    unauth = call(UNAUTH, principal=None)
    other = call(OK)  # a call another control made (a LIMIT-002 burst, a fuzz input)
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(ref_event(c)) + "\n" for c in (read, denied, unauth)))
    monkeypatch.setattr(checks, "planted_calls", lambda run: ([], []))
    monkeypatch.setattr(checks, "authn_basic_calls", lambda run: [(None, unauth)])
    monkeypatch.setattr(checks, "authz_matrix_calls", lambda run: [(None, read), (None, denied)])
    config = {"audit": {"source": str(log), "phi_methods": [read.method]}}
    config["audit"]["delivery_timeout_s"] = 0
    for journal in ([read, denied, unauth], [other, read, denied, unauth, other]):
        run: Any = Recorded(config, journal)
        found = checks._matched(run)
        assert found.calls == [unauth, read, denied]
        obs = checks.judge_reconciliation(found.calls, found.events, 1)
        assert settled("AUDIT-001", obs).status is Status.PASS


# -- AUDIT-002 ----------------------------------------------------------------------------


def truths(*pairs):
    return [(checks.Truth(c, subject, action), e) for c, e, subject, action in pairs]


def test_audit_002_reference_events_pass_every_bullet():
    a, d, u = call(OK), call(DENIED), call(UNAUTH, principal=None)
    pairs = truths(
        (a, ref_event(a), "u-clin-01", None),
        (d, ref_event(d), "u-clin-01", None),
        (u, ref_event(u, identity=""), None, None),
    )
    out = settled("AUDIT-002", checks.judge_content(pairs, REFERENCE))
    assert out.status is Status.PASS
    assert {p.id.split("(")[1].rstrip(")"): p.status for p in out.probes}["action"] is Status.SKIP


def test_audit_002_another_stacks_events_pass_through_the_field_map():
    a, d = call(OK), call(DENIED)
    pairs = truths(
        (a, other_event(a, outcome="Success"), "u-clin-01", "READ"),
        (d, other_event(d, outcome="Forbidden"), "u-clin-01", "READ"),
    )
    fields = replace(OTHER, outcomes={**OTHER.outcomes, "Success": 0})
    obs = checks.judge_content(pairs, fields)
    assert set(statuses(obs)) == {Status.PASS}
    assert settled("AUDIT-002", obs, "audit.action_map").status is Status.PASS


def test_audit_002_missing_source_and_resource_fail_high():
    a = call(OK)
    pairs = truths((a, ref_event(a, source=None, resource=None), "u-clin-01", None))
    obs = checks.judge_content(pairs, REFERENCE)
    failed = {o.ref: o.observed for o in obs if o.status is Status.FAIL}
    assert failed == {"source": "no source", "resource": "no resource"}
    out = settled("AUDIT-002", obs)
    assert (out.status, out.severity.value) == (Status.FAIL, "high")


@pytest.mark.parametrize(
    ("changes", "ref"),
    [
        ({"identity": "shared-service"}, "identity"),
        ({"method": "GetRecord"}, "method"),
        ({"outcome": "PERMISSION_DENIED"}, "outcome"),
        ({"request_id": "someone-else"}, "request_id"),
        ({"ts": "2026-11-22T12:00:00.123"}, "timestamp"),  # no zone
        ({"action": "write"}, "action"),
    ],
)
def test_audit_002_each_wrong_bullet_fails_its_probe(changes, ref):
    a = call(OK)
    pairs = truths((a, ref_event(a, **changes), "u-clin-01", "read"))
    failed = [o.ref for o in checks.judge_content(pairs, REFERENCE) if o.status is Status.FAIL]
    assert failed == [ref]


def test_audit_002_identity_is_not_judged_for_unauthenticated_calls():
    u = call(UNAUTH)
    obs = checks.judge_content(truths((u, ref_event(u, identity=""), "u-clin-01", None)), REFERENCE)
    assert "identity" not in {o.ref for o in obs}


def test_audit_002_expected_actions_by_path_or_by_kind():
    actions = checks.expected_actions(
        {"/pkg.Svc/Get": "patient.read", "write": "WRITE"},
        ["/pkg.Svc/Get", "/pkg.Svc/Put", "/pkg.Svc/List"],
        {"/pkg.Svc/Put"},
    )
    assert actions == {"/pkg.Svc/Get": "patient.read", "/pkg.Svc/Put": "WRITE"}


def injection_call():
    return Call("log-injection value in /pkg.Svc/GetRecord.id", "/pkg.Svc/GetRecord", (b"",))


MARK = "hipaa-inj-0000002a"


def written(*lines: str) -> checks.Written:
    return checks.Written.of([("audit.jsonl", "\n".join(lines).encode() + b"\n")], MARK)


def escaped_event(**extra) -> str:
    """The injection call's event, the value escaped inside it (as json.dumps writes it)."""
    return json.dumps({"request_id": "r-1", "resource": checks.injection(MARK), **extra})


def raw_event() -> str:
    """The same event written by naive string formatting: the value raw inside it."""
    return '{"request_id": "r-1", "resource": "' + checks.injection(MARK) + '"}'


@pytest.mark.parametrize(
    ("matched", "lines", "status"),
    [
        ([{}], [escaped_event()], Status.PASS),
        ([{}], [escaped_event(), '{"forged": 1, "outcome": "OK"}'], Status.FAIL),
        ([{}], raw_event().split("\n"), Status.FAIL),  # a raw newline split the event
        ([], [], Status.FAIL),
        ([{}, {}], [escaped_event(), escaped_event()], Status.FAIL),
    ],
)
def test_audit_002_injection(matched, lines, status):
    obs = checks.judge_injection(injection_call(), answer(OK), matched, written(*lines))
    assert (obs.ref, obs.status) == ("injection", status)


def test_audit_002_injection_ignores_non_json_lines_the_value_did_not_make():
    """A service's own banner or a log line of another shape is not the value's doing."""
    lines = ["# audit log opened", escaped_event(), "2026-11-22 INFO rotated"]
    got = written(*lines)
    assert (got.forged, got.split, got.other) == (0, 0, 2)
    obs = checks.judge_injection(injection_call(), answer(OK), [{}], got)
    assert obs.status is Status.PASS
    assert "2 other non-JSON line(s)" in obs.observed


def test_audit_002_injection_finds_every_piece_of_a_split_record():
    got = written(*raw_event().split("\n"))
    assert (got.forged, got.split) == (1, 2)
    value = checks.injection(MARK)
    for piece in ('\n{"outcome":"OK","forged":1}', "\r\n", "\u2028", "\x1b[2J"):
        assert piece in value
    assert "A" * 4096 in value


def test_audit_002_injection_judges_only_what_the_source_gained():
    old = b'{"forged": 1}\nnot json\n'  # an earlier run's mess
    new = escaped_event().encode() + b"\n"
    gained = appended([("audit.jsonl", old)], [("audit.jsonl", old + new)])
    assert gained == [("audit.jsonl", new)]
    assert checks.Written.of(gained, MARK) == checks.Written(0, 0, 0)
    # a source rewritten meanwhile is new whole
    assert appended([("a", b"xyz")], [("a", b"abc")]) == [("a", b"abc")]


def test_audit_002_injection_that_never_reached_is_inconclusive():
    result = answer(grpc.StatusCode.UNAVAILABLE, details="upstream connect error or disconnect")
    obs = checks.judge_injection(injection_call(), result, [], written())
    assert obs.status is Status.INCONCLUSIVE


# -- AUDIT-003 ----------------------------------------------------------------------------


def test_audit_003_refusals_recorded_as_refusals_in_any_spelling():
    d, u, a = call(DENIED), call(UNAUTH, principal=None), call(OK)
    events = {
        d.request_id: [other_event(d, outcome="Forbidden")],
        u.request_id: [other_event(u, outcome="Unauthorized")],
        a.request_id: [other_event(a, outcome="Success")],
    }
    obs = checks.judge_refusals([d, u, a], events, OTHER)
    assert statuses(obs) == [Status.PASS]


def test_audit_003_a_refusal_logged_as_success_fails():
    d = call(DENIED)
    obs = checks.judge_refusals([d], {d.request_id: [ref_event(d, outcome="OK")]}, REFERENCE)
    assert (obs[0].status, obs[0].request_id) == (Status.FAIL, d.request_id)


def test_audit_003_a_refused_call_with_no_event_fails():
    """A denied access is an auditable event: no event for it is not a pass."""
    d, u = call(DENIED), call(UNAUTH, principal=None)
    obs = checks.judge_refusals([d, u], {d.request_id: [ref_event(d)]}, REFERENCE)
    out = settled("AUDIT-003", obs)
    assert by_ref(out)["refusals"] == [Status.FAIL]
    assert (obs[0].request_id, obs[0].severity.value) == (u.request_id, "medium")
    assert out.status is Status.FAIL
    # none audited at all (no-audit-on-deny): a finding, not an actor left to judge
    nothing = checks.judge_refusals([d, u], {}, OTHER)
    assert statuses(nothing) == [Status.FAIL]
    assert "2 refused call(s) with no audit event" in nothing[0].observed


def test_audit_003_no_refused_call_is_nothing_to_judge():
    assert checks.judge_refusals([call(OK)], {}, REFERENCE) == []


def test_audit_003_forged_sub_named_as_actor_fails():
    burst = [call(UNAUTH, principal=None) for _ in range(3)]
    named = {r.request_id: [ref_event(r, identity="forged-1")] for r in burst}
    empty = {r.request_id: [ref_event(r, identity="")] for r in burst}
    assert checks.judge_actor(burst, named, "forged-1", REFERENCE).status is Status.FAIL
    assert checks.judge_actor(burst, empty, "forged-1", REFERENCE).status is Status.PASS
    other = {r.request_id: [other_event(r, identity="forged-1")] for r in burst}
    assert checks.judge_actor(burst, other, "forged-1", OTHER).status is Status.FAIL


def test_audit_003_a_burst_that_never_arrived_is_inconclusive():
    burst = [answer(grpc.StatusCode.UNAVAILABLE, details="no healthy upstream")] * 3
    assert checks.judge_actor(burst, {}, "forged-1", REFERENCE).status is Status.INCONCLUSIVE


@pytest.mark.parametrize(
    ("alert_type", "throttled", "seen", "problem", "status"),
    [
        ("auth_failure_burst", False, True, "", Status.PASS),
        ("auth_failure_burst", False, False, "", Status.FAIL),
        (None, True, False, "", Status.PASS),  # LIMIT-002 throttling counts
        (
            "auth_failure_burst",
            False,
            False,
            "audit.source x: Permission denied",
            Status.INCONCLUSIVE,
        ),
        (None, False, False, "", Status.SKIP),
    ],
)
def test_audit_003_alert(alert_type, throttled, seen, problem, status):
    assert checks.judge_alert(alert_type, throttled, seen, problem).status is status


def test_audit_003_without_an_alert_type_it_is_inconclusive_naming_the_key():
    d = call(DENIED)
    obs = checks.judge_refusals([d], {d.request_id: [ref_event(d)]}, REFERENCE)
    burst = [call(UNAUTH, principal=None)]
    obs += [
        checks.judge_actor(
            burst, {b.request_id: [ref_event(b)] for b in burst}, "forged-1", REFERENCE
        ),
        checks.judge_alert(None, False, False, ""),
    ]
    out = settled("AUDIT-003", obs)
    assert out.status is Status.INCONCLUSIVE
    assert "audit.alert_type" in out.summary


def test_audit_003_a_burst_without_events_has_no_actor_to_judge():
    burst = [call(UNAUTH, principal=None)]
    got = checks.judge_actor(burst, {}, "forged-1", REFERENCE)
    assert (got.status, got.ref) == (Status.INCONCLUSIVE, "actor")


def test_audit_003_forged_token_claims_the_sub_with_a_broken_signature():
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1LWNsaW4tMDEifQ.c2lnbmF0dXJlLWJ5dGVz"
    base = parse(token)
    forged = parse(checks.forged_token(base, "forged-1"))
    assert forged.claims["sub"] == "forged-1"
    assert forged.header == base.header
    assert forged.segments[2] != base.segments[2]


def test_alert_seen_matches_the_alert_value_and_its_time():
    since = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    new = json.dumps({"type": "auth_failure_burst", "time": int(NOW * 1000) + 5})
    old = json.dumps({"type": "auth_failure_burst", "time": int(NOW * 1000) - 90_000})
    mention = json.dumps({"note": "not an auth_failure_burst"})
    fields = Fields({"timestamp": "time"}, {}, "epoch_ms")
    assert alert_seen([("a", f"{old}\n{new}\n".encode())], "auth_failure_burst", since, fields)
    assert not alert_seen(
        [("a", f"{old}\n{mention}\n".encode())], "auth_failure_burst", since, fields
    )
    assert not alert_seen(
        [("a", b"auth_failure_burst not json\n")], "auth_failure_burst", since, fields
    )


def test_alert_seen_reads_an_alert_nested_in_another_stacks_event():
    since = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    event = {
        "meta": {"time": int(NOW * 1000) + 5},
        "security": {"alerts": [{"kind": "auth_failure_burst", "count": 20}]},
    }
    fields = Fields({"timestamp": "meta.time"}, {}, "epoch_ms")
    chunk = [("a", json.dumps(event).encode() + b"\n")]
    assert alert_seen(chunk, "auth_failure_burst", since, fields)


def test_alert_seen_reads_an_otlp_export_as_audit_format_says():
    since = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)

    def export(nanos: int) -> bytes:
        record = {
            "timeUnixNano": str(nanos),
            "attributes": [{"key": "event.name", "value": {"stringValue": "auth_failure_burst"}}],
        }
        logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}
        return json.dumps(logs).encode() + b"\n"

    fields = Fields(kind="otlp")
    fresh, stale = int(NOW * 1e9) + 5_000_000, int(NOW * 1e9) - 5_000_000_000
    assert alert_seen(
        [("otlp", export(stale) + export(fresh))], "auth_failure_burst", since, fields
    )
    assert alert_state([("otlp", export(stale))], "auth_failure_burst", since, fields) == ""


def test_an_alert_whose_time_cannot_be_read_is_not_fresh():
    since = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    undated = json.dumps({"alert": "auth_failure_burst", "when": "yesterday-ish"})
    chunk = [("a", undated.encode() + b"\n")]
    fields = Fields({"timestamp": "when"})
    assert not alert_seen(chunk, "auth_failure_burst", since, fields)
    assert alert_state(chunk, "auth_failure_burst", since, fields) == UNDATED
    assert alert_state([("a", b"{}\n")], "auth_failure_burst", since, fields) == ""


# -- AUDIT-004 ----------------------------------------------------------------------------


def sequential(n=10):
    return [call(OK, at=NOW + i * 0.05) for i in range(n)]


#: The harness's offset, bounded by SNTP before and after the calls.
SNTP_BOUND = checks.ClockOffset(0.0, 0.002)


def bounded(clock=SNTP_BOUND, server="127.0.0.1:123"):
    """The ntp probe's observation for a clock bounded before and after the calls."""
    return checks.judge_clock([(clock, ""), (clock, "")], server)


def test_audit_004_timely_precise_ordered_events_pass():
    calls = sequential()
    events = {c.request_id: [ref_event(c, at=c.started_at + 0.01)] for c in calls}
    obs = checks.judge_timestamps(calls, events, REFERENCE, 1.0, SNTP_BOUND)
    assert settled("AUDIT-004", [*obs, bounded()], "clock.ntp_server").status is Status.PASS


def test_audit_004_epoch_milliseconds_of_another_stack_pass():
    calls = sequential()
    events = {c.request_id: [other_event(c)] for c in calls}
    obs = checks.judge_timestamps(calls, events, OTHER, 1.0, SNTP_BOUND)
    assert settled("AUDIT-004", [*obs, bounded()], "clock.ntp_server").status is Status.PASS


def test_audit_004_without_a_bound_on_its_own_clock_it_never_passes():
    """The row: INCONCLUSIVE if the harness cannot bound its own offset (it passed before)."""
    calls = sequential()
    events = {c.request_id: [ref_event(c, at=c.started_at + 0.01)] for c in calls}
    obs = checks.judge_timestamps(calls, events, REFERENCE, 1.0)
    out = settled("AUDIT-004", obs)
    assert out.status is Status.INCONCLUSIVE
    assert "clock.ntp_server" in out.summary


def test_audit_004_a_clock_five_minutes_fast_fails_delta():
    calls = sequential()
    events = {c.request_id: [ref_event(c, at=c.started_at + 300)] for c in calls}
    obs = checks.judge_timestamps(calls, events, REFERENCE, 1.0)
    assert {o.ref for o in obs if o.status is Status.FAIL} == {"delta"}
    assert settled("AUDIT-004", obs).status is Status.FAIL


def test_audit_004_whole_seconds_fail_precision():
    calls = sequential()
    events = {c.request_id: [other_event(c, ms=None)] for c in calls}
    fields = replace(OTHER, time_format="epoch_s")
    for c in calls:
        events[c.request_id][0]["time"] = int(c.started_at)
    obs = checks.judge_timestamps(calls, events, fields, 1.0)
    assert [o.ref for o in obs if o.status is Status.FAIL] == ["precision"]


def test_audit_004_events_out_of_call_order_fail():
    calls = sequential(3)
    events = {c.request_id: [ref_event(c, at=NOW + 0.1 - i * 0.04)] for i, c in enumerate(calls)}
    obs = checks.judge_timestamps(calls, events, REFERENCE, 1.0)
    assert [o.ref for o in obs if o.status is Status.FAIL] == ["order"]


def test_audit_004_calls_without_events_are_inconclusive():
    calls = [call(OK), call(grpc.StatusCode.DEADLINE_EXCEEDED)]
    obs = checks.judge_timestamps(calls, {}, REFERENCE, 1.0)
    assert set(statuses(obs)) == {Status.INCONCLUSIVE}
    assert settled("AUDIT-004", obs).status is Status.INCONCLUSIVE


# -- AUDIT-004 (ntp): the harness's own clock ----------------------------------------------


def sntp_answer(request: bytes, server_ahead_s: float, *, stratum: int = 2, mode: int = 4) -> bytes:
    """A server's reply to ``request``, its clock ``server_ahead_s`` ahead of ours."""
    now = time.time() + server_ahead_s
    secs, frac = divmod(now + 2_208_988_800, 1)
    ntp = struct.pack("!II", int(secs), int(frac * 2**32))
    return bytes([0x20 | mode, stratum]) + bytes(22) + request[40:48] + ntp + ntp


@pytest.fixture
def fake_ntp():
    """A time server on 127.0.0.1 whose clock runs 2.5 s ahead; yields its address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            for _ in range(2):
                data, peer = sock.recvfrom(512)
                sock.sendto(sntp_answer(data, 2.5), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    thread.join(5)


def test_audit_004_sntp_measures_the_offset_of_a_local_server(fake_ntp):
    offset, problem = checks.measure_offset(fake_ntp)
    assert problem == ""
    assert offset.offset_s == pytest.approx(2.5, abs=0.2)
    assert 0 <= offset.uncertainty_s < 0.2


def test_audit_004_sntp_without_an_answer_cannot_bound_the_clock():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        offset, problem = checks.measure_offset(f"127.0.0.1:{silent.getsockname()[1]}", 0.2)
    assert offset is None
    assert "timeout" in problem.lower()


@pytest.mark.parametrize(
    "reply",
    [
        lambda req: sntp_answer(req, 0, stratum=0),  # kiss-of-death
        lambda req: sntp_answer(req, 0, mode=3),  # a client's packet, not a server's
        lambda req: sntp_answer(req, 0)[:24] + bytes(8) + sntp_answer(req, 0)[32:],  # no echo
        lambda req: b"\x24\x02",  # short
    ],
)
def test_audit_004_sntp_refuses_what_is_no_valid_answer(reply):
    request = checks.sntp_request(time.time())
    assert checks.sntp_offset(reply(request), request, time.time(), time.time()) is None


def test_audit_004_the_offset_corrects_the_harness_clock():
    calls = sequential()
    # the service keeps true time; the harness runs 30 s slow (the server is 30 s ahead)
    events = {c.request_id: [ref_event(c, at=c.started_at + 30)] for c in calls}
    clock = checks.ClockOffset.of(checks.ClockOffset(30.0, 0.01), checks.ClockOffset(30.2, 0.01))
    assert clock.uncertainty_s == pytest.approx(0.11)
    obs = checks.judge_timestamps(calls, events, REFERENCE, 1.0, clock)
    obs.append(checks.judge_clock([(clock, "")], "ntp.example:123"))
    assert settled("AUDIT-004", obs, "clock.ntp_server").status is Status.PASS
    uncorrected = checks.judge_timestamps(calls, events, REFERENCE, 1.0)
    assert settled("AUDIT-004", uncorrected).status is Status.FAIL


def test_audit_004_an_unbounded_clock_leaves_it_inconclusive_not_failed():
    calls = sequential()
    events = {c.request_id: [ref_event(c, at=c.started_at + 300)] for c in calls}
    obs = checks.judge_timestamps(calls, events, REFERENCE, 1.0, checks.UNBOUNDED)
    obs.append(checks.judge_clock([(None, "clock.ntp_server x: timeout")], "x"))
    out = settled("AUDIT-004", obs, "clock.ntp_server")
    assert out.status is Status.INCONCLUSIVE
    assert [o.status for o in obs if o.ref == "delta"] == [Status.SKIP]


# -- AUDIT-004 (ntp) without a time server: the kernel's own NTP discipline ------------------

SYNCED = checks.KernelClock(state=0, status=0x2001, maxerror_us=12_500)  # PLL | NANO bits


@pytest.mark.parametrize(
    ("kernel", "bound"),
    [
        (SYNCED, 0.0125),
        (checks.KernelClock(1, 0x2011, 400), 0.0004),  # TIME_INS: a leap second pending
        (checks.KernelClock(5, 0x0040, 16_000_000), None),  # STA_UNSYNC, as this host is
        (checks.KernelClock(0, 0x0041, 3_000), None),  # STA_UNSYNC with TIME_OK
        (checks.KernelClock(5, 0x0001, 3_000), None),  # TIME_ERROR
        (checks.KernelClock(0, 0x0001, 16_000_000), None),  # maxerror unknown
        (None, None),  # no adjtimex (not Linux)
    ],
)
def test_audit_004_the_kernel_bounds_the_offset_only_when_synchronised(kernel, bound):
    offset, why = checks.kernel_bound(kernel)
    if bound is None:
        assert offset is None
        assert why.startswith("no clock.ntp_server, and the kernel")
    else:
        assert (offset, why) == (checks.ClockOffset(0.0, bound), "")


def test_audit_004_a_synchronised_kernel_clock_lets_it_pass_without_a_time_server():
    calls = sequential()
    events = {c.request_id: [ref_event(c, at=c.started_at + 0.01)] for c in calls}
    offset, _ = checks.kernel_bound(SYNCED)
    obs = checks.judge_timestamps(calls, events, REFERENCE, 1.0, offset)
    obs.append(checks.judge_clock([(offset, ""), (offset, "")], None))
    assert settled("AUDIT-004", obs).status is Status.PASS


def test_audit_004_an_unsynchronised_kernel_clock_names_clock_ntp_server():
    calls = sequential()
    events = {c.request_id: [ref_event(c, at=c.started_at + 300)] for c in calls}
    unsynced = checks.kernel_bound(checks.KernelClock(5, 0x0040, 16_000_000))
    obs = checks.judge_timestamps(calls, events, REFERENCE, 1.0, checks.UNBOUNDED)
    obs.append(checks.judge_clock([unsynced, unsynced], None))
    out = settled("AUDIT-004", obs)
    assert out.status is Status.INCONCLUSIVE  # five minutes off, but whose clock is off?
    ntp = next(p for p in out.probes if p.id.endswith("(ntp)"))
    assert (ntp.status, ntp.enable) == (Status.SKIP, "clock.ntp_server")


def test_audit_004_reads_this_hosts_kernel_clock():
    """The real adjtimex call (read-only) answers on Linux, whatever the host's state."""
    kernel = checks.kernel_clock()
    if sys.platform != "linux":
        assert kernel is None
        return
    assert kernel is not None
    assert 0 <= kernel.state <= 5
    offset, why = checks.kernel_bound(kernel)
    assert (offset is None) == bool(why)


# -- AUDIT-005 ----------------------------------------------------------------------------


DEFAULT_CHAIN = checks.ChainSpec()


def chained(n, spec=DEFAULT_CHAIN, fields=("seq", "prev_hash", "hash")):
    seq_f, prev_f, hash_f = fields
    spec = replace(spec, seq_field=seq_f, prev_field=prev_f, hash_field=hash_f)
    prev, out = spec.genesis, []
    for i in range(1, n + 1):
        record = {"ts": "2026-11-22T12:00:00.000Z", "request_id": f"r{i}", seq_f: i, prev_f: prev}
        if not seq_f:
            del record[seq_f]
        record[hash_f] = prev = spec.digest(prev, record)
        out.append(record)
    return out


def test_audit_005_the_reference_chain_verifies():
    events = chained(5)
    # the reference's own formula, spelled out
    body = {k: v for k, v in events[0].items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert events[0]["hash"] == hashlib.sha256(b"0" * 64 + b"\n" + canonical.encode()).hexdigest()
    chain = checks.verify_chain(events, checks.ChainSpec())
    assert (chain.links, chain.gaps, chain.numbered) == ([], [], 5)
    obs = [*checks.judge_chain(chain, 5), checks.judge_anchor(events[:3], events)]
    assert settled("AUDIT-005", obs).status is Status.PASS


def test_audit_005_a_wrong_link_fails_links():
    events = chained(8)
    events[6] = {**events[6], "hash": hashlib.sha256(b"skipped").hexdigest()}
    obs = checks.judge_chain(checks.verify_chain(events, checks.ChainSpec()), 8)
    assert {o.ref for o in obs if o.status is Status.FAIL} == {"links"}


def test_audit_005_a_removed_record_is_a_gap_and_a_broken_link():
    events = chained(6)
    del events[3]
    chain = checks.verify_chain(events, checks.ChainSpec())
    assert chain.gaps == ["seq jumps from 3 to 5"]
    assert chain.links


def test_audit_005_another_chain_layout_verifies():
    spec = checks.ChainSpec.of(
        {"algorithm": "sha512", "link": "prev-in-record", "genesis": "GENESIS"}
    )
    events = chained(4, spec, ("n", "previous", "digest"))
    spec = replace(spec, seq_field="n", prev_field="previous", hash_field="digest")
    assert checks.verify_chain(events, spec) == checks.Chain([], [], 4)
    events[2]["previous"] = "x"
    assert checks.verify_chain(events, spec).links


def test_audit_005_unsupported_chain_settings_are_named():
    assert checks.ChainSpec.of({"canonicalization": "jcs"}).unsupported == ""
    assert "md5" in checks.ChainSpec.of({"algorithm": "md5"}).unsupported
    assert "c14n" in checks.ChainSpec.of({"canonicalization": "c14n"}).unsupported
    assert checks.ChainSpec.of({"canonicalization": "json-sorted-compact"}).unsupported == ""
    assert "hash_field" in checks.ChainSpec.of({"hash_field": ""}).unsupported
    raw = {"canonicalization": "raw-line", "link": "prev-in-record"}
    assert "raw line" in checks.ChainSpec.of(raw).unsupported
    assert checks.ChainSpec.of({**raw, "hash_field": ""}).unsupported == ""


def test_audit_005_chain_problems_keeps_the_benchmarks_signature():
    run: Any = SimpleNamespace(config=Config({"audit": {"hash_chain": {"algorithm": "sha256"}}}))
    events = tuple(chained(3))
    assert checks.chain_problems(run, events) == []
    assert checks.chain_problems(run, events[:1] + events[2:]) != []


def test_audit_005_a_rewritten_log_loses_its_anchor():
    before = chained(40)
    after = chained(12)  # truncated and rewritten with a fresh chain
    assert checks.judge_anchor(before, after).status is Status.FAIL
    obs = checks.judge_chain(checks.verify_chain(after, checks.ChainSpec()), 12)
    obs.append(checks.judge_anchor(before, after))
    assert settled("AUDIT-005", obs).status is Status.FAIL


def test_audit_005_nothing_to_anchor_or_verify_is_not_a_pass():
    assert checks.judge_chain(checks.Chain([], [], 0), 0) == []
    obs = [checks.judge_anchor([], chained(3))]
    assert settled("AUDIT-005", obs).status in (Status.INCONCLUSIVE, Status.SKIP)
    unnumbered = chained(3, fields=("", "prev_hash", "hash"))
    assert all("" not in e for e in unnumbered)
    chain = checks.verify_chain(unnumbered, checks.ChainSpec())
    obs = [*checks.judge_chain(chain, 3), checks.judge_anchor(unnumbered[:1], unnumbered)]
    assert settled("AUDIT-005", obs).status is Status.INCONCLUSIVE


def test_audit_005_the_previous_runs_anchor_must_survive_until_this_run(tmp_path):
    """The row's cross-run anchor: a log truncated and rewritten between runs fails."""
    spec = checks.ChainSpec()
    first_run = chained(40)
    anchor = checks.anchor_of(first_run, spec)
    assert anchor == {"seq": 40, "hash": first_run[-1]["hash"]}
    assert save_anchor(tmp_path, "audit.jsonl", anchor) == ""
    previous, problem = load_anchor(tmp_path, "audit.jsonl")
    assert (previous, problem) == (anchor, "")
    assert load_anchor(tmp_path, "another source") == (None, "")
    grown = chained(90)  # the same chain, grown: the anchor is still there
    assert checks.judge_previous(previous, grown, spec).status is Status.PASS
    rewritten = chained(12)  # truncated and rewritten with a fresh chain between runs
    failed = checks.judge_previous(previous, rewritten, spec)
    assert (failed.ref, failed.status, failed.severity.value) == ("previous", Status.FAIL, "high")
    obs = [*checks.judge_chain(checks.verify_chain(rewritten, spec), 12)]
    obs += [checks.judge_anchor(rewritten[:5], rewritten), failed]
    assert settled("AUDIT-005", obs).status is Status.FAIL


def test_audit_005_no_earlier_anchor_is_nothing_to_compare(tmp_path):
    assert checks.judge_previous(None, chained(3), checks.ChainSpec()).status is Status.SKIP
    (tmp_path / "audit-anchors.json").write_text("[1, 2]")
    _, problem = load_anchor(tmp_path, "audit.jsonl")
    assert "not a JSON object" in problem


# -- AUDIT-006 ----------------------------------------------------------------------------


def test_audit_006_a_log_that_only_grows_passes():
    before = Events(tuple(chained(5)))
    after = Events(tuple(chained(55)))
    assert statuses(checks.judge_growth(before, after, 50)) == [Status.PASS, Status.PASS]


def test_audit_006_a_rewritten_or_shrunk_log_fails():
    before = Events(tuple(chained(40)))
    after = Events(tuple(chained(30)))
    obs = checks.judge_growth(before, after, 50)
    assert statuses(obs) == [Status.FAIL, Status.FAIL]


def test_audit_006_no_calls_is_nothing_to_judge():
    out = settled("AUDIT-006", checks.judge_growth(Events(()), Events(()), 0))
    assert out.status is not Status.PASS


def aws(mode="COMPLIANCE", *, enabled="Enabled", **retention):
    """``aws s3api get-object-lock-configuration`` output."""
    rule = {"DefaultRetention": {"Mode": mode, **(retention or {"Days": 2200})}}
    return json.dumps({"ObjectLockConfiguration": {"ObjectLockEnabled": enabled, "Rule": rule}})


@pytest.mark.parametrize(
    ("output", "problem", "status"),
    [
        (b'{"locked": true, "retention_days": 2200}', "", Status.PASS),
        (b'{"locked": false, "retention_days": 2200}', "", Status.FAIL),
        (b'{"locked": true, "retention_days": 30}', "", Status.FAIL),
        (b'{"locked": true, "retention_days": "forever"}', "", Status.FAIL),
        # S3 Object Lock, as the AWS CLI prints it
        (aws().encode(), "", Status.PASS),
        (aws(Years=7).encode(), "", Status.PASS),
        (aws(Years=5).encode(), "", Status.FAIL),  # 1825 days
        (aws("GOVERNANCE").encode(), "", Status.FAIL),  # bypassable with a permission
        (aws(enabled="Disabled").encode(), "", Status.FAIL),
        (b'{"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled"}}', "", Status.FAIL),
        (json.dumps(json.loads(aws())["ObjectLockConfiguration"]).encode(), "", Status.PASS),
        # an Azure container immutability policy (az CLI, and the ARM resource)
        (b'{"immutabilityPeriodSinceCreationInDays": 2200, "state": "Locked"}', "", Status.PASS),
        (b'{"immutabilityPeriodSinceCreationInDays": 2200, "state": "Unlocked"}', "", Status.FAIL),
        (
            b'{"name": "default", "properties": {"immutabilityPeriodSinceCreationInDays": 2200,'
            b' "state": "Locked", "allowProtectedAppendWrites": true}}',
            "",
            Status.PASS,
        ),
        # a Cloud Storage bucket's retention policy (seconds, as JSON text)
        (
            b'{"retentionPolicy": {"isLocked": true, "retentionPeriod": "190080000"}}',
            "",
            Status.PASS,
        ),
        (b'{"retentionPolicy": {"retentionPeriod": "190080000"}}', "", Status.FAIL),
        (b'{"retentionPolicy": {"isLocked": true, "retentionPeriod": "86400"}}', "", Status.FAIL),
        # nothing the harness can read
        (b"Object Lock: COMPLIANCE", "", Status.INCONCLUSIVE),
        (b"[]", "", Status.INCONCLUSIVE),
        (b'{"versioning": "Enabled"}', "", Status.INCONCLUSIVE),
        (b"", "", Status.INCONCLUSIVE),
        (None, "audit.storage_probe_cmd command exited 2", Status.INCONCLUSIVE),
    ],
)
def test_audit_006_storage_probe(output, problem, status):
    obs = checks.judge_storage(output, problem, 2190)
    assert (obs.ref, obs.status) == ("b", status)


def test_audit_006_management_rpcs_must_be_refused():
    attempt = Call("audit management as admin", "/audit.v1.Audit/DeleteEvent", (b"",))
    obs = checks.judge_mgmt(
        [
            (attempt, answer(grpc.StatusCode.PERMISSION_DENIED)),
            (attempt, answer(grpc.StatusCode.UNIMPLEMENTED, details="unknown service")),
            (attempt, answer(OK, b"\x08\x01")),
            (attempt, answer(grpc.StatusCode.UNAVAILABLE)),
        ]
    )
    assert statuses(obs) == [Status.PASS, Status.PASS, Status.FAIL, Status.INCONCLUSIVE]
    assert {o.ref for o in obs} == {"a"}
    assert obs[2].severity.value == "high"


@pytest.mark.parametrize(
    ("result", "status", "severity"),
    [
        # grpc-go's answer for a service it does not register
        (
            answer(grpc.StatusCode.UNIMPLEMENTED, details="unknown service audit.v1.Admin"),
            Status.PASS,
            None,
        ),
        # Envoy's RBAC filter in front of a Java service
        (
            answer(grpc.StatusCode.PERMISSION_DENIED, details="RBAC: access denied"),
            Status.PASS,
            None,
        ),
        # the caller got past authorisation to the lookup: the store would have let it
        (answer(grpc.StatusCode.NOT_FOUND, details="event not found"), Status.FAIL, "medium"),
        # a principal's valid token read as no credentials: the wrong refusal
        (answer(grpc.StatusCode.UNAUTHENTICATED), Status.FAIL, "low"),
        (answer(grpc.StatusCode.DEADLINE_EXCEEDED), Status.INCONCLUSIVE, None),
    ],
)
def test_audit_006_management_answers_of_other_stacks(result, status, severity):
    attempt = Call("audit management as auditor", "/audit.v1.Admin/UpdateEvent", (b"",))
    [obs] = checks.judge_mgmt([(attempt, result)])
    assert (obs.status, obs.severity.value if obs.severity else None) == (status, severity)


def test_audit_006_attempts_name_an_event_the_harness_made():
    """(a) tries delete and update "on an event": one its own calls made, by seq or request ID."""
    events = chained(4)
    target = checks.own_event(events, ["r2", "r3", "elsewhere"], REFERENCE)
    assert target["request_id"] == "r3"
    assert checks.own_event(events, ["nope"], REFERENCE) is None
    keys = checks.event_keys(target, "seq", REFERENCE)
    assert keys == {"seq": 3, "request_id": "r3"}
    # another stack: nested request IDs (correlation.requestId), records numbered by "offset"
    nested = {"offset": 17, "correlation": {"requestId": "abc"}}
    assert checks.event_keys(nested, "offset", OTHER) == {"offset": 17, "requestId": "abc"}
    # DeleteAuditEventRequest-like: uint64 seq; UpdateEvent-like: a string request_id field
    by_seq = error_details_pb2.QuotaFailure.Violation  # subject, description: strings only
    aimed = by_seq.FromString(checks.aim(by_seq, b"", {"subject": "r3", "seq": 3}))
    assert aimed.subject == "r3"
    template = error_details_pb2.RetryInfo  # no field by those names: unchanged
    assert checks.aim(template, b"", keys) == b""


def test_audit_006_a_numbered_request_is_aimed_at_the_events_seq():
    cls = descriptor_pb2.UninterpretedOption  # positive_int_value: uint64, string_value: bytes
    keys = {"positive_int_value": 3, "identifier_value": "r3", "string_value": "r3"}
    aimed = cls.FromString(checks.aim(cls, cls(double_value=1.5).SerializeToString(), keys))
    assert (aimed.positive_int_value, aimed.identifier_value) == (3, "r3")
    assert aimed.double_value == 1.5  # the rest of the template stays
    assert aimed.string_value == b""  # bytes are not text: left alone


def test_audit_006_the_events_must_survive_the_attempts():
    before = Events(tuple(chained(5)))
    grown = Events(tuple(chained(8)))  # the refusals were audited: the log only grew
    assert checks.judge_kept(before, grown).status is Status.PASS
    edited = [dict(e) for e in chained(8)]
    edited[0]["outcome"] = "OK"
    assert checks.judge_kept(before, Events(tuple(edited))).status is Status.FAIL
    assert checks.judge_kept(before, Events(tuple(chained(8)[1:]))).status is Status.FAIL
    empty = checks.judge_kept(Events(()), grown)
    assert (empty.status, empty.observed) == (
        Status.INCONCLUSIVE,
        "the log held no event to protect",
    )
    unread = checks.judge_kept(before, Events((), "audit.source audit.jsonl: Permission denied"))
    assert unread.status is Status.INCONCLUSIVE


def test_audit_006_passes_only_when_a_or_b_judged_the_store():
    before, after = Events(tuple(chained(5))), Events(tuple(chained(55)))
    grown = checks.judge_growth(before, after, 50)
    alone = [*grown, checks.judge_shown(grown)]
    out = settled("AUDIT-006", alone, "audit.source", "audit.mgmt_methods")
    assert out.status is Status.INCONCLUSIVE  # (c) did not run: growth shows no store rule
    attempt = Call("audit management as admin", "/audit.v1.Admin/DeleteEvent", (b"",))
    refusals = checks.judge_mgmt([(attempt, answer(grpc.StatusCode.PERMISSION_DENIED))])
    refusals.append(checks.judge_kept(before, after))
    shown = [*grown, *refusals, checks.judge_shown(refusals)]
    assert settled("AUDIT-006", shown, "audit.source", "audit.mgmt_methods").status is (Status.PASS)
    unseen = [checks.judge_kept(Events(()), after)]  # (a) could not be observed
    assert checks.judge_shown(unseen).status is Status.SKIP


def test_audit_006_growth_alone_never_passes():
    """Before: the before/after growth heuristic alone passed AUDIT-006; now (c) SKIPs."""
    with pytest.raises(NotApplicable) as skipped:
        checks.append_only(Recorded({"audit": {"source": "audit.jsonl"}}, []))
    assert "audit.mgmt_methods" in str(skipped.value)
    assert "audit.storage_probe_cmd" in str(skipped.value)
    assert "ATT-004" in str(skipped.value)


def test_audit_006_runs_the_storage_probe_command():
    printed = json.loads(aws())
    command = [sys.executable, "-c", f"import json; print(json.dumps({printed!r}))"]
    config = {"audit": {"storage_probe_cmd": command, "min_retention_days": 2190}}
    outcome = checks.append_only(Recorded(config, []))
    passed = settled("AUDIT-006", outcome.observations, "audit.storage_probe_cmd")
    assert passed.status is Status.PASS
    config["audit"]["min_retention_days"] = 3000
    outcome = checks.append_only(Recorded(config, []))
    assert [(o.ref, o.status) for o in outcome.observations] == [
        ("b", Status.FAIL),
        ("c", Status.PASS),
    ]
    config["audit"]["storage_probe_cmd"] = [sys.executable, "-c", "import sys; sys.exit(3)"]
    outcome = checks.append_only(Recorded(config, []))
    assert [(o.ref, o.status) for o in outcome.observations] == [
        ("b", Status.INCONCLUSIVE),
        ("c", Status.SKIP),
    ]
    out = settled("AUDIT-006", outcome.observations, "audit.storage_probe_cmd")
    assert out.status is Status.INCONCLUSIVE


# -- canary planting: a canary that did not take is not planted ---------------------------


def test_field_paths_are_split_per_method():
    paths = field_paths(
        ["/p.S/Update", "/p.S/Get"],
        {"names": ["/p.S/Update.patient.given_name"], "ssn": ["/p.S/Other.ssn", "/p.S/Get.ssn"]},
    )
    assert paths == {"/p.S/Update": [("names", "patient.given_name")], "/p.S/Get": [("ssn", "ssn")]}


def test_a_canary_field_that_does_not_take_is_not_planted():
    """Known weakness, now closed: set_path's False was ignored and the call counted."""
    c = CanarySet.for_seed(7)
    cls = error_details_pb2.ErrorInfo  # string fields reason and domain; metadata is a map
    calls, notes = method_plan(
        "/p.S/M", cls, "{}", [("names", "nope"), ("ssn", "metadata")], c, Callers(None, None)
    )
    assert calls == []
    assert [n.status for n in notes] == [Status.SKIP, Status.SKIP]
    calls, notes = method_plan(
        "/p.S/M", cls, "{}", [("names", "reason"), ("ssn", "nope")], c, Callers(None, None)
    )
    assert [k for k, _ in calls] == ["valid", "denied"]
    assert "nope" in notes[0].expected
    sent = cls.FromString(calls[0][1].requests[0])
    assert sent.reason == c.value("names")


def test_the_invalid_canary_call_breaks_a_date_that_took():
    c = CanarySet.for_seed(7)
    paths = [("names", "reason"), ("dates", "domain")]
    calls, _ = method_plan(
        "/p.S/M", error_details_pb2.ErrorInfo, '{"domain": "x"}', paths, c, Callers(None, None)
    )
    assert [k for k, _ in calls] == ["valid", "invalid", "denied"]
    bad = error_details_pb2.ErrorInfo.FromString(calls[1][1].requests[0])
    assert bad.domain == f"not-a-date-{c.nonce}"
    assert bad.reason == c.value("names")


# -- declared probes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control_id", "probes"),
    [
        ("AUDIT-001", [("read", True), ("write", False), ("denied", True)]),
        (
            "AUDIT-002",
            [
                ("identity", True),
                ("method", True),
                ("resource", True),
                ("action", False),
                ("outcome", True),
                ("request_id", True),
                ("timestamp", True),
                ("source", True),
                ("injection", False),
            ],
        ),
        ("AUDIT-003", [("refusals", True), ("actor", True), ("alert", True)]),
        ("AUDIT-004", [("delta", True), ("precision", True), ("order", True), ("ntp", True)]),
        ("AUDIT-005", [("links", True), ("seq", True), ("anchor", True), ("previous", False)]),
        ("AUDIT-006", [("a", False), ("b", False), ("c", True), ("run", False)]),
    ],
)
def test_declared_probes_match_the_catalogue_row(control_id, probes):
    assert [(p.ref, p.required) for p in registered()[control_id].probes] == probes


def test_optional_probes_name_the_keys_that_enable_them():
    needs = {
        (c, p.ref): p.needs
        for c in ("AUDIT-001", "AUDIT-002", "AUDIT-004", "AUDIT-005", "AUDIT-006")
        for p in registered()[c].probes
        if not p.required
    }
    assert needs == {
        ("AUDIT-001", "write"): ("safety.allow_mutations",),
        ("AUDIT-002", "action"): ("audit.action_map",),
        ("AUDIT-002", "injection"): ("audit.logged_fields",),
        ("AUDIT-005", "previous"): ("evidence.history_dir",),
        ("AUDIT-006", "a"): ("audit.mgmt_methods",),
        ("AUDIT-006", "b"): ("audit.storage_probe_cmd",),
        ("AUDIT-006", "run"): ("audit.source",),
    }


def test_audit_004_needs_a_time_server_to_bound_its_own_clock():
    ntp = next(p for p in registered()["AUDIT-004"].probes if p.ref == "ntp")
    assert (ntp.required, ntp.needs) == (True, ("clock.ntp_server",))


# -- audit.hash_chain: JCS, the previous hash inside the record, raw lines -------------------

SAMPLES = __import__("pathlib").Path(__file__).parent / "audit_samples"
#: The chain of the FHIR sample: written by npm's canonicalize (RFC 8785), seq and previous
#: hash in extensions, no record keeping its own hash.
FHIR_CHAIN = checks.ChainSpec.of(
    {
        "canonicalization": "jcs",
        "link": "prev-in-record",
        "hash_field": "",
        "prev_field": "extension.1.valueString",
        "seq_field": "extension.0.valueInteger",
    }
)


def sample(name: str, kind: str = "jsonl") -> Events:
    from harness.audit import parse_events

    path = SAMPLES / name
    return parse_events([(name, path.read_bytes())], kind)


def test_audit_005_a_jcs_chain_with_the_previous_hash_inside_the_record_verifies():
    log = sample("fhir_r4_jcs_chain.ndjson", "fhir")
    chain = checks.verify_chain(log.events, FHIR_CHAIN, log.lines)
    assert (chain.links, chain.gaps, chain.numbered) == ([], [], 6)
    obs = [*checks.judge_chain(chain, 6), checks.judge_anchor(log.events[:3], log.events)]
    assert settled("AUDIT-005", obs).status is Status.PASS
    # the same records under Python's sorted json.dumps: another byte string, no chain
    python = replace(FHIR_CHAIN, canonicalization="sorted-compact")
    assert checks.verify_chain(log.events, python).links


def test_audit_005_a_record_changed_in_a_jcs_chain_breaks_the_next_link():
    events = [dict(e) for e in sample("fhir_r4_jcs_chain.ndjson", "fhir").events]
    events[2] = {**events[2], "outcomeDesc": "OK", "outcome": "0"}  # a refusal rewritten
    chain = checks.verify_chain(events, FHIR_CHAIN)
    assert chain.links == ["seq 4: extension.1.valueString is not the previous record's hash"]
    obs = checks.judge_chain(chain, len(events))
    assert settled("AUDIT-005", obs).status is Status.FAIL


def test_audit_005_a_jcs_chain_whose_records_keep_their_own_hash_too():
    spec = checks.ChainSpec.of({"canonicalization": "jcs", "link": "prev-in-record"})
    spec = replace(spec, prev_field="prev")
    log = sample("jcs_chain_own_hash.jsonl")
    assert checks.verify_chain(log.events, spec).links == []
    forged = [dict(e) for e in log.events]
    forged[1]["who"] = "u-9"
    assert checks.verify_chain(forged, spec).links == ["seq 2: hash does not verify"]


def test_audit_005_a_raw_line_chain_hashes_the_lines_as_written():
    spec = checks.ChainSpec.of(
        {"canonicalization": "raw-line", "link": "prev-in-record", "hash_field": ""}
    )
    prev, lines = spec.genesis, []
    for i in range(1, 4):  # keys in the writer's order, spaces and all
        lines.append(f'{{"seq": {i}, "prev_hash": "{prev}", "msg": "é"}}')
        prev = hashlib.sha256(lines[-1].encode()).hexdigest()
    from harness.audit import parse_events

    log = parse_events([("a", ("\r\n".join(lines) + "\r\n").encode())])
    assert checks.verify_chain(log.events, spec, log.lines).links == []
    respaced = list(log.lines)
    respaced[0] = respaced[0].replace(": ", ":")  # the same JSON, other bytes
    assert checks.verify_chain(log.events, spec, respaced).links
    assert "no raw line" in checks.verify_chain(log.events, spec).links[0]


def test_audit_005_the_first_record_must_link_to_genesis_and_a_chain_keeps_its_anchor(tmp_path):
    events = [dict(e) for e in sample("fhir_r4_jcs_chain.ndjson", "fhir").events]
    wrong = replace(FHIR_CHAIN, genesis="f" * 64)
    assert checks.verify_chain(events, wrong).links == [
        "the first record does not link to the genesis hash"
    ]
    assert checks.verify_chain(events[2:], FHIR_CHAIN).links == []  # a later segment
    anchor = checks.anchor_of(events[:4], FHIR_CHAIN)
    assert anchor == {"seq": 4, "hash": events[4]["extension"][1]["valueString"]}
    assert checks.judge_previous(anchor, events, FHIR_CHAIN).status is Status.PASS
    events[3] = {**events[3], "action": "D"}
    assert checks.judge_previous(anchor, events, FHIR_CHAIN).status is Status.FAIL


def test_audit_005_numbers_jcs_cannot_represent_are_named_not_raised():
    spec = checks.ChainSpec.of({"canonicalization": "jcs"})
    record = {"seq": 1, "prev_hash": spec.genesis, "n": 10**400, "hash": "x"}
    assert "cannot canonicalise" in checks.verify_chain([record], spec).links[0]
    big = {"seq": 1, "prev_hash": spec.genesis, "n": 10**16}  # a double in JavaScript
    assert (
        spec.canonical(big) == b'{"n":10000000000000000,"prev_hash":"' + b"0" * 64 + b'","seq":1}'
    )


# -- tuple correlation (audit.correlation = "tuple") ---------------------------------------

SUBJECTS = {"clin": "u-clin-01", "admin": "u-admin-01"}
GET = "/pkg.Svc/GetRecord"


def by_tuple(*claimants, per_call=1):
    from harness.audit import ByTuple

    return ByTuple(SUBJECTS, 1.0, claimants, per_call)


def seen(c, *, identity="u-clin-01", delay=0.01, method=None, outcome=None):
    """The event a tuple-correlated service writes for ``c``: no request ID."""
    e = ref_event(c, identity=identity, at=c.started_at + delay, outcome=outcome)
    e.pop("request_id")
    if method is not None:
        e["method"] = method
    return e


def test_tuple_correlation_matches_each_call_to_its_one_event():
    from harness.audit import correlate

    mine = call(OK, method=GET)
    theirs = call(DENIED, method=GET, principal="admin")  # the same moment, another caller
    anon = call(UNAUTH, method=GET, principal=None)
    events = [seen(mine), seen(theirs, identity="u-admin-01"), seen(anon, identity=None)]
    m = correlate(events, [mine, theirs, anon], REFERENCE, by_tuple(mine, theirs, anon))
    assert [len(m.found[c.request_id]) for c in (mine, theirs, anon)] == [1, 1, 1]
    assert m.found[theirs.request_id][0]["identity"] == "u-admin-01"
    assert not any(m.unsure(c.request_id) for c in (mine, theirs, anon))
    obs = checks.judge_reconciliation([mine, theirs, anon], m, 1)
    assert settled("AUDIT-001", obs).status is Status.PASS


def test_tuple_correlation_never_guesses_between_two_calls_alike():
    from harness.audit import correlate

    first, second = call(OK, method=GET), call(OK, method=GET, at=NOW + 0.3)
    both = correlate([seen(first), seen(second)], [first, second], REFERENCE, by_tuple())
    one = correlate([seen(first)], [first, second], REFERENCE, by_tuple())  # one event, two calls
    for m in (both, one):
        assert m.found == {first.request_id: [], second.request_id: []}
        assert "ambiguous" in m.unsure(first.request_id)
        obs = checks.judge_reconciliation([first, second], m, 1)
        assert settled("AUDIT-001", obs).status is Status.INCONCLUSIVE  # never FAIL, never PASS
    apart = call(OK, method=GET, at=NOW + 3.0)  # spaced beyond 2 x tolerance: told apart
    m = correlate([seen(first), seen(apart)], [first, apart], REFERENCE, by_tuple())
    assert all(len(v) == 1 for v in m.found.values())


def test_tuple_correlation_checks_method_identity_and_time():
    from harness.audit import correlate

    c = call(OK, method=GET)
    assert correlate([seen(c, delay=2.5)], [c], REFERENCE, by_tuple()).found[c.request_id] == []
    assert correlate([seen(c, delay=-0.9)], [c], REFERENCE, by_tuple()).found[c.request_id]
    other = seen(c, method="/pkg.Svc/DeleteRecord")
    assert correlate([other], [c], REFERENCE, by_tuple()).found[c.request_id] == []
    for name in ("pkg.Svc/GetRecord", "pkg.Svc.GetRecord", "GetRecord"):
        assert correlate([seen(c, method=name)], [c], REFERENCE, by_tuple()).found[c.request_id]
    who = seen(c, identity="u-admin-01")  # another principal's event
    assert correlate([who], [c], REFERENCE, by_tuple()).found[c.request_id] == []
    # no event at all: a missing event, FAIL
    m = correlate([], [c], REFERENCE, by_tuple(), since=0)
    assert settled("AUDIT-001", checks.judge_reconciliation([c], m, 1)).status is Status.FAIL


def test_tuple_correlation_unverified_calls_take_no_known_subjects_event():
    from harness.audit import correlate

    forged = call(UNAUTH, method=GET, principal=None)
    for identity, fits in ((None, True), ("", True), ("forged-1", True), ("u-clin-01", False)):
        m = correlate([seen(forged, identity=identity)], [forged], REFERENCE, by_tuple())
        assert bool(m.found[forged.request_id]) is fits, identity


def test_tuple_correlation_a_call_accepted_on_a_fixture_token_takes_any_identity():
    from harness.audit import correlate

    break_glass = call(OK, method=GET, principal=None)  # auth.fixtures token in metadata
    event = seen(break_glass, identity="u-clin-01")  # the fixture's user is a principal's too
    assert correlate([event], [break_glass], REFERENCE, by_tuple()).found[break_glass.request_id]


def test_tuple_correlation_an_event_outside_every_window_is_unsure_not_missing():
    from harness.audit import correlate

    c = call(DENIED, method=GET)
    fast = seen(c, delay=300.0)  # the service's clock five minutes fast
    m = correlate([{"method": "x"}, fast], [c], REFERENCE, by_tuple(), since=1)
    assert m.candidates[c.request_id] == []
    assert m.near == {c.request_id: 1}
    assert "outside its time window" in m.unsure(c.request_id)
    obs = checks.judge_refusals([c], m, REFERENCE)
    assert settled("AUDIT-003", obs).status is Status.INCONCLUSIVE
    m = correlate([fast], [c], REFERENCE, by_tuple(), since=1)  # written before the calls
    assert m.unsure(c.request_id) == ""


def test_tuple_correlation_undated_throttled_and_several_events_per_call():
    from harness.audit import correlate

    c = call(OK, method=GET)
    undated = {**seen(c), "ts": "yesterday"}
    assert "ambiguous" in correlate([undated], [c], REFERENCE, by_tuple()).unsure(c.request_id)
    # the harness retried a throttled attempt: its event belongs to no journaled call
    throttled = seen(c, delay=-0.05, outcome="RESOURCE_EXHAUSTED")
    m = correlate([throttled, seen(c)], [c], REFERENCE, by_tuple())
    assert [e["outcome"] for e in m.found[c.request_id]] == ["OK"]
    two = [seen(c), seen(c, delay=0.02)]
    assert correlate(two, [c], REFERENCE, by_tuple()).found[c.request_id] == []
    assert len(correlate(two, [c], REFERENCE, by_tuple(per_call=2)).found[c.request_id]) == 2


def test_tuple_correlation_reads_fhir_events_of_a_node_service():
    from harness.audit import correlate

    fhir = Fields(kind="fhir")
    c = call(DENIED, method="/acme.lab.v1.LabOrders/GetLabOrder")
    at = dt.datetime.fromtimestamp(c.started_at + 0.004, dt.timezone.utc)
    event = {
        "resourceType": "AuditEvent",
        "subtype": [{"system": "urn:x", "code": c.method}],
        "recorded": at.isoformat(timespec="milliseconds"),
        "outcome": "4",
        "outcomeDesc": "PermissionDenied",
        "agent": [{"who": {"identifier": {"value": "u-clin-01"}}, "requestor": True}],
    }
    m = correlate([event], [c], fhir, by_tuple())
    assert m.found[c.request_id] == [event]
    assert [o.status for o in checks.judge_refusals([c], m, fhir)] == [Status.PASS]


def test_paired_events_follow_write_order_whatever_their_clock_says():
    from harness.audit import paired

    calls = [call(OK, method=GET, at=NOW + i * 0.01) for i in range(3)]
    events = [seen(c, delay=300.0) for c in calls]  # five minutes fast
    events.insert(1, seen(calls[0], outcome="RESOURCE_EXHAUSTED"))  # a throttled attempt
    found, problem = paired(events, calls, REFERENCE, SUBJECTS)
    assert problem == ""
    assert [found[c.request_id] for c in calls] == [[e] for e in events if e["outcome"] == "OK"]
    obs = checks.judge_timestamps(calls, found, REFERENCE, 1.0, SNTP_BOUND)
    assert settled("AUDIT-004", obs).status is Status.FAIL  # delta judged, not unmatched
    found, problem = paired(events[:2], calls, REFERENCE, SUBJECTS)
    assert (found, "cannot be paired" in problem) == ({}, True)


def test_audit_002_under_tuple_correlation_the_request_id_bullet_does_not_apply():
    c = call(OK)
    pairs = truths((c, seen(c), "u-clin-01", None))
    obs = checks.judge_content(pairs, REFERENCE, echoed=False)
    assert [o.status for o in obs if o.ref == "request_id"] == [Status.SKIP]
    assert settled("AUDIT-002", obs).status is not Status.FAIL
    assert checks.judge_content(pairs, REFERENCE)[0].ref == "request_id"  # echoed: no ID, FAIL


def test_audit_002_injection_whose_event_cannot_be_told_is_inconclusive_unless_forged():
    result = answer(OK)
    why = "2 event(s) fit the call (method, identity, time): ambiguous"
    clean = written(escaped_event())
    obs = checks.judge_injection(injection_call(), result, [], clean, why)
    assert obs.status is Status.INCONCLUSIVE
    forged = written('{"outcome":"OK","forged":1}')
    assert checks.judge_injection(injection_call(), result, [], forged, why).status is Status.FAIL


class Tupled(Recorded):
    """A recorded run under tuple correlation, with principals whose JWTs name subjects."""

    def __init__(self, config, journal, principals=()):
        super().__init__({"audit": {"correlation": "tuple"}, **config}, journal)
        self.principals = {p.name: p for p in principals}


def jwt_principal(name, sub):
    from harness.principals import Principal

    principal = Principal(name, token_env="UNUSED")
    payload = json.dumps({"sub": sub}).encode()
    b64 = __import__("base64").urlsafe_b64encode(payload).rstrip(b"=").decode()
    principal._token = f"eyJhbGciOiJub25lIn0.{b64}.c2ln"
    return principal


def _answering_ok(sent: list[list[str]]) -> Any:
    """checks.send's stand-in: OK to every call, journalled; each batch's labels to ``sent``."""

    def fake_send(run, calls):
        out = []
        for c in calls:
            r = replace(call(OK, method=c.method, principal=_name(c)), started_at=time.time())
            run.journal.append(r)
            out.append((c, r))
        sent.append([c.label for c in calls])
        return out

    return fake_send


def test_send_apart_spaces_calls_by_one_identity_to_one_method(monkeypatch):
    clin, admin = jwt_principal("clin", "u-clin-01"), jwt_principal("admin", "u-admin-01")
    earlier = replace(call(OK, method=GET), started_at=time.time() - 0.5)
    run: Any = Tupled({"clock": {"tolerance_ms": 1000}}, [earlier], (clin, admin))
    sent, naps = [], []

    monkeypatch.setattr(checks, "send", _answering_ok(sent))
    monkeypatch.setattr(checks.time, "sleep", naps.append)
    calls = [
        Call("a", GET, (b"",), clin),
        Call("b", GET, (b"",), admin),
        Call("c", GET, (b"",), clin),
        Call("d", "/pkg.Svc/Other", (b"",), clin),
    ]
    got = checks.send_apart(run, calls)
    assert [c.label for c, _ in got] == ["a", "b", "c", "d"]
    assert sent == [["a", "b", "d"], ["c"]]  # clin's second GetRecord waits for its own wave
    assert 1.4 < naps[0] <= 2.1
    assert 1.9 < naps[1] <= 2.1
    plain: Any = Recorded({}, [])
    monkeypatch.setattr(checks, "send", lambda run, calls: [(c, None) for c in calls])
    assert len(checks.send_apart(plain, calls)) == 4


def _name(c):
    return c.principal.name if c.principal else None


def test_wait_for_names_calls_tuple_correlation_cannot_tell_apart(tmp_path):
    from harness import audit

    first, second = call(OK, method=GET), call(OK, method=GET, at=NOW + 0.2)
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(seen(c)) + "\n" for c in (first, second)))
    audit_table = {"source": str(log), "delivery_timeout_s": 0, "correlation": "tuple"}
    audit_table["field_map"] = {"timestamp": "ts"}
    run: Any = Tupled({}, [first, second], (jwt_principal("clin", "u-clin-01"),))
    run.config = Config({"audit": audit_table})
    found, problem = audit.wait_for(run, [first.request_id, second.request_id])
    assert found == {first.request_id: [], second.request_id: []}
    assert "ambiguous" in problem
    polled = audit.poll(run, [first.request_id])
    assert len(polled.matches.candidates[first.request_id]) == 2


# -- tuple correlation under load: ambiguity, resources, calls sent again ------------------

GET_ORDER = "/hipaagrpc.labs.v1.LabOrders/GetLabOrder"


def fhir_event(c, *, identity=None, delay=0.02, resource="*", outcome="Unauthenticated"):
    """The Node reference's FHIR AuditEvent for ``c`` (no request ID)."""
    at = dt.datetime.fromtimestamp(c.started_at + delay, dt.timezone.utc)
    who = {"identifier": {"value": identity}} if identity else {"display": "unauthenticated caller"}
    return {
        "resourceType": "AuditEvent",
        "subtype": [{"system": "urn:hipaagrpc:grpc-method", "code": c.method}],
        "recorded": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": "0" if outcome == "Ok" else "4",
        "outcomeDesc": outcome,
        "agent": [{"who": who, "requestor": True}],
        "entity": [{"what": {"identifier": {"value": resource}}, "role": {"code": "4"}}],
    }


def loaded_run_calls():
    """Recorded under CPU load: AUDIT-001's no-credentials GetLabOrder call, and AUTHN-005's
    held-token call (sent in the background, its token expired: UNAUTHENTICATED too) 89 ms
    after it. Both events name no caller; each fits both calls' windows."""
    mine = call(UNAUTH, method=GET_ORDER, principal=None, elapsed=0.035)
    held = call(UNAUTH, method=GET_ORDER, principal=None, at=NOW + 0.089, elapsed=0.006)
    return mine, held, [fhir_event(mine), fhir_event(held, delay=0.005)]


def test_audit_001_and_003_an_event_another_call_made_ambiguous_is_unsure_not_missing(
    tmp_path, monkeypatch
):
    """Both checks judged the found events alone, so an ambiguous call read as 'no audit
    event': FAIL (high) and FAIL (medium) under load, though the service wrote the event."""
    from harness.audit import correlate

    mine, held, events = loaded_run_calls()
    fhir = Fields(kind="fhir")
    matches = correlate(events, [mine], fhir, ByTuple({}, 1.0, (mine, held)))
    assert matches.found[mine.request_id] == []
    assert matches.ambiguous(mine.request_id)
    table = {"source": str(tmp_path / "a"), "phi_methods": [GET_ORDER], "format": "fhir"}
    config = {"audit": {**table, "correlation": "tuple"}}
    run: Any = Tupled(config, [mine, held])
    run.memos["audit-reconciled"] = checks.Reconciled([mine], matches)
    monkeypatch.setattr(checks, "_writes", lambda run: frozenset())
    monkeypatch.setattr(checks, "bases", lambda run: ([], ""))
    first = checks.every_access_audited(run)
    assert first.status is Status.INCONCLUSIVE
    assert "ambiguous" in first.observations[0].observed
    third = checks.failures_audited_and_alerted(run)
    assert [o.status for o in third.observations if o.ref == "refusals"] == [Status.INCONCLUSIVE]


class FakeClock:
    """time.time/monotonic/sleep for harness.audit: sleeping moves the clock on."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    monotonic = time

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def test_send_matched_sends_a_call_a_background_call_made_ambiguous_again_apart(
    tmp_path, monkeypatch
):
    """The cause under load: AUTHN-005's held-token call, sent by a background thread, fell
    on AUDIT-001's no-credentials call. The call is sent again once that one is clear."""
    from harness import audit

    clock = FakeClock(NOW)
    monkeypatch.setattr(audit, "time", clock)
    log = tmp_path / "audit.jsonl"
    log.write_text("")
    audit_table = {"source": str(log), "format": "fhir", "delivery_timeout_s": 0}
    config = {"audit": {**audit_table, "correlation": "tuple"}, "clock": {"tolerance_ms": 1000}}
    run: Any = Tupled(config, [])
    sent: list[list[str]] = []

    def fake_send(run, calls):
        out = []
        for c in calls:
            r = call(UNAUTH, method=c.method, principal=None, at=clock.now)
            run.journal.append(r)
            with log.open("a") as f:
                f.write(json.dumps(fhir_event(r)) + "\n")
                if not sent:  # the background call, at the same moment, the first time only
                    held = call(UNAUTH, method=c.method, principal=None, at=clock.now + 0.089)
                    run.journal.append(held)
                    f.write(json.dumps(fhir_event(held, delay=0.005)) + "\n")
            out.append((c, r))
        sent.append([c.label for c in calls])
        clock.now += 0.1
        return out

    made, polled = audit.send_matched(run, [Call("no credentials", GET_ORDER, (b"",))], fake_send)
    assert sent == [["no credentials"], ["no credentials"]]
    (_, again), first = made[0], run.journal[0]
    assert again is run.journal[-1]
    assert again.started_at > first.started_at + 2.0
    assert len(polled.found[again.request_id]) == 1
    assert not polled.matches.unsure(again.request_id)
    # Under request-ID correlation nothing is sent twice.
    plain: Any = Recorded({"audit": audit_table}, [])
    sent.clear()
    audit.send_matched(plain, [Call("x", GET_ORDER, (b"",))], fake_send)
    assert sent == [["x"]]


def test_tuple_correlation_tells_calls_apart_by_the_record_their_events_name():
    """AUTHZ-005 on the Node reference: the break-glass read of order 1003 (fixture token:
    any identity) and the physician's read of 1001 share method, caller and time; each
    event names its order, so each call has its own."""
    from harness.audit import correlate

    glass = call(OK, method=GET_ORDER, principal=None)
    own = call(OK, method=GET_ORDER, principal="clin", at=NOW + 0.01)
    unkept = call(OK, method=GET_ORDER, principal="clin", at=NOW + 0.02)
    events = [
        fhir_event(glass, identity="u-clin-01", resource="1003", outcome="Ok"),
        fhir_event(own, identity="u-clin-01", resource="1001", outcome="Ok"),
    ]
    fhir = Fields(kind="fhir")
    by_time = ByTuple(SUBJECTS, 1.0, (glass, own))
    assert correlate(events, [glass, own], fhir, by_time).ambiguous(glass.request_id)
    named = {glass.request_id: frozenset({"1003"}), own.request_id: frozenset({"1001"})}
    by_record = ByTuple(SUBJECTS, 1.0, (glass, own), 1, named, frozenset({"1001", "1003"}))
    m = correlate(events, [glass, own], fhir, by_record)
    assert m.found[glass.request_id] == events[:1]
    assert m.found[own.request_id] == events[1:]
    # An event naming no record the harness knows ("*") is told by method, caller and time.
    star = [fhir_event(own, identity="u-clin-01", outcome="Ok")]
    alone = ByTuple(SUBJECTS, 1.0, (own,), 1, named, by_record.records)
    assert correlate(star, [own], fhir, alone).found[own.request_id] == star
    # A call whose request the harness did not keep may be any record's: still ambiguous.
    with_unkept = ByTuple(SUBJECTS, 1.0, (glass, own, unkept), 1, named, by_record.records)
    assert correlate(events, [glass], fhir, with_unkept).ambiguous(glass.request_id)


def test_correlation_reads_the_records_each_kept_request_names(tmp_path):
    from google.protobuf import wrappers_pb2

    from harness import audit
    from harness.plans.calls import remember

    config = {"authz": {"own_ids": {"clin": ["1001"]}, "foreign_ids": {"clin": [1003]}}}
    run: Any = Tupled(config, [])
    number = wrappers_pb2.Int64Value(value=1003).SerializeToString()
    text = wrappers_pb2.StringValue(value="orders/1001").SerializeToString()
    size = wrappers_pb2.Int32Value(value=5).SerializeToString()
    remember(run, [("a", (number,)), ("b", (text,)), ("c", (size,)), ("d", (b"x" * 70000,))])
    by = audit.correlation(run)
    assert by is not None
    assert by.named == {"a": frozenset({"1003"}), "b": frozenset({"1001"})}
    assert by.records == frozenset({"1001", "1003"})


def test_send_apart_keeps_a_call_on_a_fixture_token_apart_from_every_caller(monkeypatch):
    """Credentials outside a principal (a break-glass token) may be anyone's: the call goes
    alone and waits for every earlier call to its method, whoever made it."""
    clin, admin = jwt_principal("clin", "u-clin-01"), jwt_principal("admin", "u-admin-01")
    earlier = replace(call(OK, method=GET, principal="admin"), started_at=time.time() - 0.5)
    run: Any = Tupled({"clock": {"tolerance_ms": 1000}}, [earlier], (clin, admin))
    sent, naps = [], []

    monkeypatch.setattr(checks, "send", _answering_ok(sent))
    monkeypatch.setattr(checks.time, "sleep", naps.append)
    glass = Call("glass", GET, (b"",), None, (("authorization", "Bearer fixture"),))
    calls = [glass, Call("clin", GET, (b"",), clin), Call("other", "/pkg.Svc/Other", (b"",))]
    got = checks.send_apart(run, calls)
    assert [c.label for c, _ in got] == ["glass", "clin", "other"]
    assert sent == [["glass", "other"], ["clin"]]
    assert 1.4 < naps[0] <= 2.1  # the admin's earlier call: another identity, still waited


def test_matches_of_a_harness_imported_afresh_are_judged_as_matches():
    """pytest's pytester imports the harness afresh in each inline run: the Matches it
    makes are of another class object, and were read as a plain mapping (AttributeError,
    AUDIT-001/003 ERROR in the Node reference's defect rows)."""
    from harness.audit import correlate

    mine, held, events = loaded_run_calls()
    real = correlate(events, [mine], Fields(kind="fhir"), ByTuple({}, 1.0, (mine, held)))
    afresh = SimpleNamespace(
        found=real.found, candidates=real.candidates, unsure=real.unsure, ambiguous=real.ambiguous
    )
    obs = checks.judge_reconciliation([mine], afresh, 1)
    assert settled("AUDIT-001", obs).status is Status.INCONCLUSIVE
    assert [o.status for o in checks.judge_refusals([mine], afresh, REFERENCE)] == [
        Status.INCONCLUSIVE
    ]
