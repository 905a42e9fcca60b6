"""REDACT-* judges on recorded answers and log bytes, no server.

The answers come as other stacks send them: Go's ``rpc error: code = ... desc = ...``
text, Envoy's ``upstream connect error``, details packed in ``grpc-status-details-bin``,
canaries echoed in trailers. The judges decide by the canary detector and status codes,
never by the reference's wording.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from harness.canary import CanarySet
from harness.checks import redact as checks
from harness.checks import registered
from harness.outcome import Outcome, Status
from harness.plans.calls import Call, bearer
from harness.plans.canaries import Planted
from tests.checks.recorded import answer, by_ref, settled, statuses

C = CanarySet.for_seed(11)
NAME, SSN, ZIP = C.value("given_name"), C.value("ssn"), C.value("zip")


def planted(kind: str, result=None, metadata=(), method="/p.S/Update") -> Planted:
    label = {"valid": f"canaries in {method}", "invalid": f"invalid canary request to {method}"}
    probe = Call(label.get(kind, f"canaries ({kind})"), method, (b"",), None, metadata)
    return Planted(kind, probe, result or answer(grpc.StatusCode.OK))


def three(valid=None, invalid=None, denied=None, method="/p.S/Update") -> list[Planted]:
    return [
        planted("valid", valid or answer(grpc.StatusCode.OK, b"\x0a\x02ok"), method=method),
        planted("invalid", invalid or answer(grpc.StatusCode.INVALID_ARGUMENT), method=method),
        planted("denied", denied or answer(grpc.StatusCode.PERMISSION_DENIED), method=method),
    ]


def status_bin(*details) -> bytes:
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=3, message="invalid", details=packed).SerializeToString()


# -- REDACT-001 ---------------------------------------------------------------------------

CLEAN_LOG = (
    b'{"level":"info","msg":"finished call","grpc.method":"UpdatePatient","grpc.code":"OK"}\n'
    b"2026-11-22T12:00:00Z INFO rpc method=/p.S/Update outcome=OK identity=u-clin-01\n"
)


def test_redact_001_clean_sinks_pass():
    obs = checks.judge_sent(three()) + checks.judge_sinks([("app.log", CLEAN_LOG)], C, ())
    out = settled("REDACT-001", obs)
    assert out.status is Status.PASS
    assert set(by_ref(out)) == {"a", "b", "c", "sinks"}


@pytest.mark.parametrize(
    "line",
    [
        f'{{"msg":"update","patient":{{"given_name":"{NAME}"}}}}',  # zap/logrus JSON
        f"request={base64.b64encode(json.dumps({'name': NAME}).encode()).decode()}",
        f"INFO update ssn={SSN.replace('-', '')}",  # digits only
        f"DEBUG {NAME.lower()}",  # case-folded
    ],
)
def test_redact_001_a_canary_in_any_encoding_fails_critical(line):
    obs = checks.judge_sinks([("app.log", CLEAN_LOG + line.encode() + b"\n")], C, ())
    out = settled("REDACT-001", checks.judge_sent(three()) + obs)
    assert (out.status, out.severity.value) == (Status.FAIL, "critical")
    assert NAME not in out.render()  # hashes, never the line
    assert SSN not in out.render()


def test_redact_001_a_weak_category_alone_on_its_line_warns():
    obs = checks.judge_sinks([("app.log", CLEAN_LOG + f"zip={ZIP}\n".encode())], C, ())
    assert Status.WARN in statuses(obs)
    assert Status.FAIL not in [o.status for o in obs if o.probe == "canary search"]


def test_redact_001_empty_sinks_are_nothing_to_judge():
    obs = checks.judge_sent(three()) + checks.judge_sinks([("app.log", b"")], C, ())
    assert settled("REDACT-001", obs).status is Status.INCONCLUSIVE


def test_redact_001_canary_calls_that_never_arrived_are_inconclusive():
    envoy = answer(grpc.StatusCode.UNAVAILABLE, details="upstream connect error or disconnect")
    obs = checks.judge_sent(three(valid=envoy)) + checks.judge_sinks([("a", CLEAN_LOG)], C, ())
    assert by_ref(settled("REDACT-001", obs))["a"] == [Status.INCONCLUSIVE]
    assert settled("REDACT-001", obs).status is Status.INCONCLUSIVE


def test_redact_001_without_an_invalid_call_it_is_inconclusive():
    calls = [p for p in three() if p.kind != "invalid"]
    obs = checks.judge_sent(calls) + checks.judge_sinks([("a", CLEAN_LOG)], C, ())
    out = settled("REDACT-001", obs)
    assert out.status is Status.INCONCLUSIVE
    assert "REDACT-001(b)" in out.summary


@pytest.mark.parametrize(
    "refusal",
    [
        answer(grpc.StatusCode.UNAUTHENTICATED, details="rpc error: code = Unauthenticated"),
        answer(grpc.StatusCode.PERMISSION_DENIED, details="RBAC: access denied"),  # Envoy
        answer(grpc.StatusCode.RESOURCE_EXHAUSTED, details="Too many requests"),
    ],
)
def test_redact_001_a_valid_call_refused_before_the_handler_did_not_reach(refusal):
    obs = checks.judge_sent(three(valid=refusal)) + checks.judge_sinks([("a", CLEAN_LOG)], C, ())
    out = settled("REDACT-001", obs)
    assert by_ref(out)["a"] == [Status.INCONCLUSIVE]
    assert out.status is Status.INCONCLUSIVE


def test_redact_001_a_sink_the_run_did_not_write_proves_nothing():
    sinks = [("app.log", CLEAN_LOG), ("old.log", CLEAN_LOG)]
    obs = checks.judge_sent(three()) + checks.judge_sinks(sinks, C, ["old.log"])
    out = settled("REDACT-001", obs)
    assert out.status is Status.INCONCLUSIVE
    assert "old.log" in out.summary


def test_redact_001_a_stale_sink_still_fails_on_a_hit():
    stale = [("old.log", CLEAN_LOG + f"name={NAME}\n".encode())]
    out = settled(
        "REDACT-001", checks.judge_sent(three()) + checks.judge_sinks(stale, C, ["old.log"])
    )
    assert out.status is Status.FAIL


def test_unwritten_sinks_are_those_whose_marks_did_not_change():
    before = {"app.log": {"app.log": "10:1"}, "old.log": {"old.log": "5:1"}, "cmd": None}
    after = {"app.log": {"app.log": "42:2"}, "old.log": {"old.log": "5:1"}, "cmd": {"cmd": "x"}}
    assert checks.unwritten(before, after) == ["old.log", "cmd"]
    # a glob entry: a new file appearing counts as written
    glob_before = {"logs/*.log": {"logs/a.log": "1:1"}}
    glob_after = {"logs/*.log": {"logs/a.log": "1:1", "logs/b.log": "3:4"}}
    assert checks.unwritten(glob_before, glob_after) == []
    assert checks.unwritten({"gone": {"gone": "1:1"}}, {"gone": None}) == ["gone"]


def test_sink_marks_change_when_a_file_grows_or_appears(tmp_path):
    from harness.audit import marks

    log = tmp_path / "app.log"
    log.write_bytes(b"one\n")
    first, problem = marks(log, "logs.sinks entry")
    assert problem == ""
    assert marks(log, "logs.sinks entry")[0] == first
    with log.open("ab") as f:
        f.write(b"two\n")
    assert marks(log, "logs.sinks entry")[0] != first
    pattern = tmp_path / "*.log"
    before = marks(pattern, "x")[0]
    (tmp_path / "b.log").write_bytes(b"")
    assert set(marks(pattern, "x")[0]) == set(before) | {str(tmp_path / "b.log")}


# -- REDACT-002 ---------------------------------------------------------------------------


def audit_line(p: Planted, **extra) -> bytes:
    event = {"request_id": p.result.request_id, "resource": "p-0001", **extra}
    return json.dumps(event).encode() + b"\n"


def test_redact_002_references_only_pass():
    calls = three()
    events = {p.result.request_id: [{}] for p in calls}
    chunks = [("audit.jsonl", b"".join(audit_line(p) for p in calls))]
    obs = checks.judge_audit(calls, events, chunks, C, ())
    assert settled("REDACT-002", obs).status is Status.PASS


def test_redact_002_names_and_ssn_in_events_fail_high():
    calls = three()
    events = {p.result.request_id: [{}] for p in calls}
    chunk = audit_line(calls[0], details=f"{NAME} ssn={SSN}")
    obs = checks.judge_audit(calls, events, [("audit.jsonl", chunk)], C, ())
    out = settled("REDACT-002", obs)
    assert (out.status, out.severity.value) == (Status.FAIL, "high")


def test_redact_002_allowed_identifiers_may_appear():
    calls = three()
    events = {p.result.request_id: [{}] for p in calls}
    chunk = audit_line(calls[0], mrn=C.value("mrn"))
    obs = checks.judge_audit(calls, events, [("audit.jsonl", chunk)], C, ["mrn"])
    assert settled("REDACT-002", obs).status is Status.PASS
    obs = checks.judge_audit(calls, events, [("audit.jsonl", chunk)], C, [])
    assert settled("REDACT-002", obs).status is Status.FAIL


def test_redact_002_an_empty_audit_source_is_nothing_to_judge():
    obs = checks.judge_audit(three(), {}, [("audit.jsonl", b"\n")], C, ())
    assert settled("REDACT-002", obs).status is Status.INCONCLUSIVE


def test_redact_002_canary_calls_without_events_are_nothing_to_judge():
    others = b'{"request_id": "someone-else", "resource": "p-0001"}\n'
    obs = checks.judge_audit(three(), {}, [("audit.jsonl", others)], C, ())
    assert settled("REDACT-002", obs).status is Status.INCONCLUSIVE


# -- REDACT-003 ---------------------------------------------------------------------------


def judged(calls) -> Outcome:
    return settled("REDACT-003", [o for p in calls for o in checks.judge_answer(p, C)])


def test_redact_003_generic_errors_naming_field_paths_pass():
    invalid = answer(
        grpc.StatusCode.INVALID_ARGUMENT,
        details="patient.birth_date: not a valid date",
        trailers=(
            (
                "grpc-status-details-bin",
                status_bin(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(
                                field="patient.birth_date", description="not a valid date"
                            )
                        ]
                    )
                ),
            ),
        ),
    )
    assert judged(three(invalid=invalid)).status is Status.PASS


def test_redact_003_a_go_style_message_echoing_the_value_fails_high():
    go = answer(
        grpc.StatusCode.INVALID_ARGUMENT,
        details=f'rpc error: code = InvalidArgument desc = bad birth_date "not-a-date-{C.nonce}"'
        f" for {NAME}",
    )
    out = judged(three(invalid=go))
    assert (out.status, out.severity.value) == (Status.FAIL, "high")
    assert by_ref(out)["b"][0] is Status.FAIL


def test_redact_003_a_value_inside_a_packed_detail_fails():
    detail = error_details_pb2.ErrorInfo(reason="INVALID", metadata={"ssn": SSN})
    invalid = answer(
        grpc.StatusCode.INVALID_ARGUMENT,
        details="invalid",
        trailers=(("grpc-status-details-bin", status_bin(detail)),),
    )
    assert judged(three(invalid=invalid)).status is Status.FAIL


def test_redact_003_a_denied_call_echoing_phi_in_a_trailer_is_critical():
    denied = answer(
        grpc.StatusCode.PERMISSION_DENIED,
        details="forbidden",
        trailers=(("x-debug-patient", NAME), ("x-envoy-upstream-service-time", "3")),
    )
    out = judged(three(denied=denied))
    assert (out.status, out.severity.value) == (Status.FAIL, "critical")


def test_redact_003_a_valid_answer_echoing_phi_in_headers_fails():
    valid = answer(grpc.StatusCode.OK, b"\x0a\x01x", headers=(("x-patient-name", NAME),))
    assert by_ref(judged(three(valid=valid)))["a"] == [Status.FAIL]


def test_redact_003_an_unreached_call_is_inconclusive_not_clean():
    timeout = answer(grpc.StatusCode.DEADLINE_EXCEEDED, details="Deadline Exceeded")
    out = judged(three(denied=timeout))
    assert out.status is Status.INCONCLUSIVE
    assert by_ref(out)["c"] == [Status.INCONCLUSIVE]


@pytest.mark.parametrize(
    "invalid",
    [
        answer(grpc.StatusCode.OK, b"\x0a\x01x"),  # the invalid value was taken
        answer(grpc.StatusCode.UNAUTHENTICATED, details="authentication required"),
        answer(grpc.StatusCode.PERMISSION_DENIED, details="RBAC: access denied"),
        answer(grpc.StatusCode.UNAVAILABLE, details="upstream connect error or disconnect"),
        answer(grpc.StatusCode.UNIMPLEMENTED, details="unknown method Update"),
    ],
)
def test_redact_003_an_invalid_request_that_provoked_no_error_did_not_reach(invalid):
    out = judged(three(invalid=invalid))
    assert out.status is Status.INCONCLUSIVE
    assert by_ref(out)["b"] == [Status.INCONCLUSIVE]
    assert "/p.S/Update" in out.summary


@pytest.mark.parametrize(
    "error",
    [
        answer(grpc.StatusCode.INVALID_ARGUMENT, details="invalid argument"),  # grpc-java
        answer(grpc.StatusCode.FAILED_PRECONDITION, details="rpc error: code = FailedPrecondition"),
        answer(grpc.StatusCode.INTERNAL, details="Internal Server Error"),  # grpc-js
    ],
)
def test_redact_003_an_error_from_the_handler_reached_its_error_path(error):
    assert judged(three(invalid=error)).status is Status.PASS


def test_redact_003_a_denied_call_that_was_not_refused_did_not_reach():
    out = judged(three(denied=answer(grpc.StatusCode.OK, b"\x0a\x01x")))
    assert (out.status, by_ref(out)["c"]) == (Status.INCONCLUSIVE, [Status.INCONCLUSIVE])


def test_redact_003_a_method_without_an_invalid_request_is_named():
    other = [p for p in three(method="/p.S/Create") if p.kind != "invalid"]
    calls = three() + other
    obs = checks.judge_uncovered(calls) + [o for p in calls for o in checks.judge_answer(p, C)]
    out = settled("REDACT-003", obs)
    assert out.status is Status.INCONCLUSIVE
    assert "/p.S/Create" in out.summary
    # with no invalid request at all, the probe did not run and says what it needs
    alone = settled("REDACT-003", checks.judge_uncovered(other))
    assert "phi.field_paths.dates" in alone.summary


def test_redact_003_surfaces_decode_every_detail():
    detail = error_details_pb2.LocalizedMessage(locale="en-US", message="bad")
    result = answer(
        grpc.StatusCode.INVALID_ARGUMENT,
        details="x",
        headers=(("server", "envoy"),),
        trailers=(("grpc-status-details-bin", status_bin(detail)),),
    )
    names = [name for name, _ in checks.surfaces(result)]
    assert names == [
        "status message",
        "metadata server",
        "status details (raw)",
        "status detail google.rpc.LocalizedMessage",
    ]


# -- REDACT-004 ---------------------------------------------------------------------------

TOKEN = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1LWNsaW4tMDEifQ.MEUCIQDx9sigSEGMENTvalue0123"
)
CANARY_JWT = "eyJhbGciOiJFUzI1NiJ9.eyJub3RlIjoiTVJOIn0.c2lnbmF0dXJlLW9mLXRoZS1jYW5hcnk"
SECRETS = {"clin's token": ("tokens", TOKEN), "the canary JWT": ("canary", CANARY_JWT)}


def test_redact_004_logs_with_kid_and_hash_only_pass():
    log = b'{"msg":"auth failed","kid":"k1","jti":"j-1","token_sha256":"ab12"}\n'
    obs = checks.judge_secrets(SECRETS, [("app.log", log), ("audit.jsonl", b"{}\n")])
    obs += checks.judge_searched("logs", "logs.sinks", [("app.log", log)])
    obs += checks.judge_searched("audit", "audit.source", [("audit.jsonl", b"{}\n")])
    assert settled("REDACT-004", obs).status is Status.PASS


@pytest.mark.parametrize(
    ("line", "ref"),
    [
        (f"authorization=['Bearer {TOKEN}']", "tokens"),
        (f"sig={TOKEN.rsplit('.', 1)[1]}", "tokens"),  # the signature segment alone
        (f'{{"authorization":"Bearer {CANARY_JWT}"}}', "canary"),
    ],
)
def test_redact_004_a_logged_token_fails_high(line, ref):
    obs = checks.judge_secrets(SECRETS, [("app.log", b"first\n" + line.encode() + b"\n")])
    fail = next(o for o in obs if o.status is Status.FAIL)
    assert (fail.ref, fail.observed, fail.severity.value) == (ref, "found at app.log:2", "high")
    assert TOKEN not in fail.observed


def test_redact_004_short_opaque_tokens_are_not_searched():
    obs = checks.judge_secrets({"svc's token": ("tokens", "abc")}, [("a", b"abc abc")])
    assert statuses(obs) == [Status.PASS]


def test_redact_004_without_a_canary_jwt_it_is_inconclusive():
    obs = checks.judge_secrets({"clin's token": ("tokens", TOKEN)}, [("a", b"a log line\n")])
    out = settled("REDACT-004", obs)
    assert out.status is Status.INCONCLUSIVE
    assert "REDACT-004(canary)" in out.summary


def test_redact_004_empty_sources_are_nothing_searched():
    (got,) = checks.judge_secrets({"clin's token": ("tokens", TOKEN)}, [("a", b"")])
    assert (got.status, got.ref) == (Status.INCONCLUSIVE, "tokens")


def test_redact_004_the_canary_jwt_is_read_from_the_planted_call():
    call = planted("token", metadata=bearer(CANARY_JWT))

    run: Any = SimpleNamespace(principals={})
    secrets = checks.secrets_used(run, [call, *three()])
    assert secrets == {"the canary JWT": ("canary", CANARY_JWT)}


def test_redact_004_what_was_searched_is_its_own_probe():
    obs = checks.judge_secrets(SECRETS, [("app.log", b"line\n")])
    obs += checks.judge_searched("logs", "logs.sinks", [("app.log", b"line\n")])
    both = obs + checks.judge_searched("audit", "audit.source", [("audit.jsonl", b"{}\n")])
    assert settled("REDACT-004", both, unset=()).status is Status.PASS
    # no audit.source: that probe did not run, and the key that enables it is named
    out = settled("REDACT-004", obs, unset=("audit.source",))
    assert out.status is Status.INCONCLUSIVE
    assert "audit.source" in out.summary


def test_redact_004_a_sink_the_run_did_not_write_proves_nothing():
    obs = checks.judge_searched("logs", "logs.sinks", [("old.log", b"x\n")], ["old.log"])
    assert statuses(obs) == [Status.PASS, Status.INCONCLUSIVE]


# -- declared probes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control_id", "probes"),
    [
        ("REDACT-001", [("a", True), ("b", True), ("c", True), ("sinks", True)]),
        ("REDACT-002", [("audit", True)]),
        ("REDACT-003", [("a", True), ("b", True), ("c", True)]),
        ("REDACT-004", [("tokens", True), ("canary", True), ("logs", True), ("audit", True)]),
    ],
)
def test_declared_probes_match_the_catalogue_row(control_id, probes):
    assert [(p.ref, p.required) for p in registered()[control_id].probes] == probes


def test_the_invalid_probe_needs_a_dates_field():
    b = next(p for p in registered()["REDACT-003"].probes if p.ref == "b")
    assert b.needs == ("phi.field_paths.dates",)


def test_probes_that_read_a_source_name_the_key_that_enables_it():
    probes = {
        (c, p.ref): p.needs for c in ("REDACT-002", "REDACT-004") for p in registered()[c].probes
    }
    assert probes[("REDACT-002", "audit")] == ("audit.source",)
    assert probes[("REDACT-004", "audit")] == ("audit.source",)
    assert probes[("REDACT-004", "logs")] == ("logs.sinks",)
