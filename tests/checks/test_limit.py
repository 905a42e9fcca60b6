"""LIMIT-001 ... LIMIT-003 judges on recorded answers, no server.

Size, rate and bound refusals come back in each stack's own words (grpcio's "Received
message larger than max", grpc-go's "grpc: received message larger than max", Envoy's
local-reply texts, grpc-js's "No connection established"): the judges decide by status
codes, message counts and decoded pages, never by those texts. A call that never reached
the service is INCONCLUSIVE, never a refusal.
"""

import socket
from dataclasses import replace
from pathlib import Path

import grpc
import h2.settings
import pytest

from harness import oracles
from harness.catalogue import Severity
from harness.channels import CLIENT_MAX_RECEIVE, Endpoint
from harness.checks import limit
from harness.checks.limit import (
    RatePlan,
    SizePlan,
    invalid_token,
    judge_bomb,
    judge_burst,
    judge_concurrent,
    judge_cooldown,
    judge_export_audit,
    judge_export_count,
    judge_failed_auth,
    judge_fits,
    judge_header,
    judge_outsider,
    judge_oversized,
    judge_page,
    judge_streams,
    maxed,
    page_plan,
    rate_plan,
    receive_limit,
    sized,
)
from harness.config import Config, parse_config
from harness.descriptors import MethodInfo, record_shape
from harness.h2client import H2Client, Reply
from harness.oracles import judge_health
from harness.outcome import NotApplicable, Status
from harness.plans.calls import Call
from harness.plans.tokens import Base, Held
from harness.policy import Policy
from harness.principals import Principal
from harness.tokens import parse
from harness.transport import Transport
from targets.reference import schema
from tests.checks import edges, labs
from tests.checks.recorded import answer, declared, settled

C = grpc.StatusCode
LIMIT = 4 * 1024 * 1024
GET = "/hipaagrpc.reference.v1.PatientRecords/GetPatient"
EXPORT = "/hipaagrpc.reference.v1.PatientRecords/ExportPatients"
SEARCH = "/hipaagrpc.reference.v1.PatientRecords/SearchPatients"
PATIENT = schema.message("Patient")
PAGE = schema.message("SearchPatientsResponse")
ADMIN = Principal("admin", token_file=Path("tokens/admin.jwt"))
SIZES = SizePlan(GET, (), LIMIT, b"", b"", b"", b"")
#: grpcio's, grpc-go's and grpc-js's words for an over-limit message; Envoy's for a reset.
GRPCIO_TOO_BIG = "Received message larger than max (4194305 vs. 4194304)"
GO_TOO_BIG = "grpc: received message larger than max (4194305 vs. 4194304)"
ENVOY_RESET = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


def test_declared_probes_follow_the_catalogue_rows():
    assert declared("LIMIT-001") == [(ref, True, ()) for ref in "abcd"]
    # LIMIT-002's numbered steps, each only with --hipaa-allow-transport-abuse.
    abuse = ("safety.allow_transport_abuse",)
    assert declared("LIMIT-002") == [("1", True, abuse), ("2", True, abuse), ("3", True, abuse)]
    # LIMIT-003: (c) holds the value to limits.max_concurrent_streams "if set".
    assert declared("LIMIT-003") == [
        ("a", True, ("limits.bulk_methods",)),
        ("b", True, ("limits.max_concurrent_exports",)),
        ("c", False, ("limits.max_concurrent_streams",)),
        ("d", True, ("limits.max_page_size",)),
    ]


# -- LIMIT-001 ------------------------------------------------------------------------------


def test_sized_requests_are_exactly_the_size_asked():
    cls = schema.message("GetPatientRequest")
    for size in (64, 4096, LIMIT + 1):
        assert len(sized(cls, '{"patientId": "p-0001"}', size) or b"") == size
    assert sized(schema.message("ExportPatientsRequest"), "", 64) is None


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.RESOURCE_EXHAUSTED, details=f"SERVER: {GRPCIO_TOO_BIG}"), Status.PASS),
        (answer(C.RESOURCE_EXHAUSTED, details=GO_TOO_BIG), Status.PASS),
        (answer(C.OK, b"\n\x01p"), Status.FAIL),
        (answer(C.NOT_FOUND, details="patient not found"), Status.FAIL),
        (answer(C.UNKNOWN, details="Unknown Error"), Status.FAIL),
        (answer(C.UNAVAILABLE, details=ENVOY_RESET), Status.INCONCLUSIVE),
        (answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded"), Status.INCONCLUSIVE),
        # A proxy's client_max_body_size (HTTP 413, no grpc-status) held it: enforced.
        *((edges.refusal(client, 413), Status.PASS) for client in edges.CLIENTS),
        # Any other proxy answer says nothing of the size limit.
        (edges.refusal("grpcio", 400), Status.INCONCLUSIVE),
    ],
)
def test_a_oversized_request(result, status):
    got = judge_oversized(SIZES, result)
    assert (got.status, got.ref) == (status, "a")


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.NOT_FOUND, details="patient not found"), Status.PASS),
        (answer(C.OK, b"\n\x01p"), Status.PASS),
        (answer(C.INVALID_ARGUMENT, details="patient_id too long"), Status.PASS),
        (answer(C.RESOURCE_EXHAUSTED, details=GO_TOO_BIG), Status.FAIL),
        (answer(C.UNKNOWN, details="Exception calling application"), Status.FAIL),
        (answer(C.UNAVAILABLE, details="No connection established"), Status.INCONCLUSIVE),
    ],
)
def test_b_request_under_the_limit(result, status):
    got = judge_fits(SIZES, result)
    assert (got.status, got.ref) == (status, "b")


#: The control call (the same request with a 64-byte header), served, read off the wire.
CONTROL_OK = Reply(http_status=200, grpc_status=0, messages=1)


def goaway(code: int) -> Reply:
    return Reply(goaway_code=code, goaway_last_stream=0, closed=True)


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        # grpcio (C-core) past its hard limit, once its SETTINGS are acknowledged.
        (
            Reply(http_status=200, grpc_status=8, grpc_message="received metadata size exceeds"),
            Status.PASS,
        ),
        # grpc-js: nghttp2 ends the connection with GOAWAY COMPRESSION_ERROR (9) on a field
        # over its limit (grpcio's client saw DEADLINE_EXCEEDED: INCONCLUSIVE before).
        (goaway(9), Status.PASS),
        # nginx over HTTP/2: GOAWAY ENHANCE_YOUR_CALM (11) past large_client_header_buffers.
        (goaway(11), Status.PASS),
        # grpc-go past MaxHeaderListSize: RST_STREAM FRAME_SIZE_ERROR (6); grpc-js at 20 KiB
        # (nghttp2's list limit): RST_STREAM ENHANCE_YOUR_CALM (11).
        (Reply(reset_code=6), Status.PASS),
        (Reply(reset_code=11), Status.PASS),
        # Envoy (max_request_headers_kb) and other HTTP edges: 431, nginx's 400, without
        # grpc-status.
        (Reply(http_status=431, grpc_status=-1), Status.PASS),
        (Reply(http_status=400, grpc_status=-1), Status.PASS),
        # grpc-go under its 16 MiB default: served.
        (CONTROL_OK, Status.FAIL),
        (Reply(http_status=200, grpc_status=0), Status.FAIL),
        (Reply(http_status=200, grpc_status=2, grpc_message="Unknown Error"), Status.FAIL),
        # No refusal stated: a real timeout, a graceful GOAWAY, a bare close, a proxy whose
        # backend is away, a proxy's 502.
        (Reply(timed_out=True, elapsed_s=10.0), Status.INCONCLUSIVE),
        (goaway(0), Status.INCONCLUSIVE),
        (Reply(closed=True), Status.INCONCLUSIVE),
        (
            Reply(http_status=200, grpc_status=14, grpc_message="upstream connect error"),
            Status.INCONCLUSIVE,
        ),
        (Reply(http_status=502, grpc_status=-1), Status.INCONCLUSIVE),
        ("no raw HTTP/2 connection: [Errno 111] Connection refused", Status.INCONCLUSIVE),
    ],
)
def test_c_oversized_header_beside_a_control_call(reply, status):
    got = judge_header(SIZES, 1024 * 1024, reply, CONTROL_OK)
    assert (got.status, got.ref) == (status, "c")
    assert (got.severity is Severity.HIGH) == (status is Status.FAIL)


@pytest.mark.parametrize(
    ("reply", "control"),
    [
        # Refused as the control call was: no credentials, say. The former judge passed
        # this (any non-OK code was a refusal); the header's refusal is not shown.
        (Reply(http_status=200, grpc_status=16), Reply(http_status=200, grpc_status=16)),
        (Reply(http_status=200, grpc_status=5), Reply(http_status=200, grpc_status=5)),
        # No control call reached the service: nothing to compare with.
        (Reply(http_status=200, grpc_status=8), "no raw HTTP/2 connection: refused"),
        (Reply(http_status=200, grpc_status=8), Reply(timed_out=True)),
        (goaway(9), Reply(http_status=200, grpc_status=14)),
    ],
)
def test_c_refusal_code_without_a_control_call_that_differs_is_inconclusive(reply, control):
    got = judge_header(SIZES, 20 * 1024, reply, control)
    assert got.status is Status.INCONCLUSIVE
    assert "control call" in got.observed


def test_c_wire_refusals_are_named_and_a_graceful_end_is_none():
    assert limit.header_refusal(goaway(9)) == "GOAWAY code 9"
    assert limit.header_refusal(Reply(reset_code=1)) == "RST_STREAM code 1"
    assert limit.header_refusal(Reply(http_status=431, grpc_status=-1)) == "HTTP 431"
    # NO_ERROR (stop sending) and REFUSED_STREAM (back-pressure: retry) refuse nothing.
    nothing = (Reply(reset_code=0), Reply(reset_code=7))
    for unstated in (goaway(0), Reply(closed=True), Reply(timed_out=True), CONTROL_OK, *nothing):
        assert limit.header_refusal(unstated) == ""
    # A reset after the response was served is no refusal of the header.
    assert limit.header_refusal(Reply(reset_code=8, messages=1)) == ""


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.RESOURCE_EXHAUSTED, details="Decompressed message larger than max"), Status.PASS),
        (
            answer(C.UNIMPLEMENTED, details='grpc: Decompressor is not installed for "gzip"'),
            Status.PASS,
        ),
        (answer(C.OK, b"\n\x01p"), Status.FAIL),
        (answer(C.NOT_FOUND), Status.FAIL),
        (answer(C.INTERNAL, details="Error decompressing message"), Status.FAIL),
        (answer(C.UNAVAILABLE, details="Socket closed"), Status.INCONCLUSIVE),
    ],
)
def test_d_decompression_bomb(result, status):
    got = judge_bomb(SIZES, result)
    assert (got.status, got.ref) == (status, "d")


def test_health_after_each_step_is_judged_by_the_shared_oracle():
    # The recorded case: limit.py had a judge_health of its own, which failed a liveness
    # call the run never sent (the target had gone away) instead of leaving it INCONCLUSIVE.
    assert limit.judge_health is oracles.judge_health
    assert judge_health("health after (c)", answer(C.OK, b"\x08\x01")).status is Status.PASS
    crashed = judge_health("health after (d)", answer(C.UNAVAILABLE, details="Connection refused"))
    assert (crashed.status, crashed.severity) == (Status.FAIL, Severity.HIGH)
    not_sent = replace(answer(C.DEADLINE_EXCEEDED, details="not sent: gone"), request_id="")
    assert judge_health("health after (d)", not_sent).status is Status.INCONCLUSIVE


def test_limit_001_passes_only_with_every_step():
    held = [
        judge_oversized(SIZES, answer(C.RESOURCE_EXHAUSTED)),
        judge_fits(SIZES, answer(C.NOT_FOUND)),
        judge_header(SIZES, 20 * 1024, Reply(http_status=200, grpc_status=8), CONTROL_OK),
        judge_bomb(SIZES, answer(C.RESOURCE_EXHAUSTED)),
    ]
    assert settled("LIMIT-001", held).status is Status.PASS
    bare = Reply(http_status=200, grpc_status=16)
    unshown = judge_header(SIZES, 20 * 1024, bare, bare)
    assert settled("LIMIT-001", [*held[:2], unshown, held[3]]).status is Status.INCONCLUSIVE


# -- LIMIT-002 ------------------------------------------------------------------------------

TOKEN = parse("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl")
READ = MethodInfo(GET, "PatientRecords", "GetPatient", "GetPatientRequest", "Patient", False, False)
STREAM = MethodInfo(SEARCH, "PatientRecords", "SearchPatients", "S", "R", False, True)


def base(method=READ, control=C.OK) -> Base:
    assert TOKEN is not None
    return Base(ADMIN, TOKEN, method, b"", answer(control))


RATE = RatePlan(base(), rps=50, window_s=1, cooldown_s=0.5, count=100)


def burst(ok: int, limited: int, other=C.OK, others: int = 0):
    return (
        [answer(C.OK)] * ok
        + [answer(C.RESOURCE_EXHAUSTED, details="rate limited")] * limited
        + [answer(other)] * others
    )


def test_rate_plan():
    plan = rate_plan({"rps": 50, "window_s": 1, "cooldown_s": 0.5}, 10_000, [base()])
    assert (plan.count, plan.cooldown_s) == (100, 0.5)
    assert rate_plan({"rps": 50}, 300, [base()]).count == 300  # capped by safety.max_requests
    with pytest.raises(NotApplicable, match=r"limits\.rate\.rps"):
        rate_plan({}, 10_000, [base()])
    with pytest.raises(NotApplicable, match="working token"):
        rate_plan({"rps": 5}, 10_000, [base(STREAM), base(control=C.UNAUTHENTICATED)])


@pytest.mark.parametrize(
    ("results", "elapsed", "status"),
    [
        (burst(54, 46), 1.0, Status.PASS),
        (burst(100, 0), 1.0, Status.FAIL),  # no limit: 100/s accepted
        (burst(70, 30), 1.0, Status.FAIL),  # limited, but 70/s > 1.2 x 50
        # Envoy's local rate limit answers 429, which gRPC clients read as UNAVAILABLE.
        (burst(50, 0, C.UNAVAILABLE, 50), 1.0, Status.FAIL),
        (burst(50, 40, C.PERMISSION_DENIED, 10), 1.0, Status.FAIL),
        (burst(60, 0), 1.0, Status.INCONCLUSIVE),  # the harness sent only 60/s
        (burst(0, 0, C.DEADLINE_EXCEEDED, 100), 1.0, Status.INCONCLUSIVE),
    ],
)
def test_1_burst(results, elapsed, status):
    got = judge_burst(RATE, results, elapsed)
    assert (got.status, got.ref) == (status, "1")


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.OK, b"\n\x01p"), Status.PASS),
        (answer(C.RESOURCE_EXHAUSTED, details="rate limited"), Status.FAIL),
        (answer(C.UNAVAILABLE, details="no healthy upstream"), Status.INCONCLUSIVE),
    ],
)
def test_2_after_cooldown(result, status):
    got = judge_cooldown(RATE, result)
    assert (got.status, got.ref) == (status, "2")


UNAUTH = [answer(C.UNAUTHENTICATED, details="invalid token")] * 50


@pytest.mark.parametrize(
    ("results", "alerted", "problem", "status"),
    [
        (UNAUTH[:30] + [answer(C.RESOURCE_EXHAUSTED)] * 20, False, "", Status.PASS),
        (UNAUTH, True, "", Status.PASS),
        (UNAUTH, False, "", Status.FAIL),
        (UNAUTH, False, "audit.jsonl: no such file", Status.INCONCLUSIVE),
        (
            [answer(C.UNAVAILABLE, details="Connection reset by peer")] * 50,
            False,
            "",
            Status.INCONCLUSIVE,
        ),
    ],
)
def test_3_failed_authentication_burst(results, alerted, problem, status):
    got = judge_failed_auth(results, alerted, problem, "auth_failure_burst")
    assert (got.status, got.ref) == (status, "3")


def test_3_without_an_alert_to_look_for_an_unthrottled_burst_is_not_a_finding():
    """The service may alert where the harness cannot see (a reduced config): not a FAIL."""
    got = judge_failed_auth(UNAUTH, False, "", None)
    assert (got.status, got.ref) == (Status.INCONCLUSIVE, "3")
    assert "audit.alert_type" in got.observed
    throttled = judge_failed_auth([*UNAUTH[:30], answer(C.RESOURCE_EXHAUSTED)], False, "", None)
    assert throttled.status is Status.PASS


def test_invalid_token_flips_the_signature():
    assert TOKEN is not None
    flipped = parse(invalid_token(base()))
    assert flipped is not None
    assert flipped.segments[:2] == TOKEN.segments[:2]
    assert flipped.segments[2] != TOKEN.segments[2]


#: An opaque bearer token, as an IdP that answers introspection issues it.
OPAQUE = "tok_4q7ZyR0b9XkP2mWc8LsT1vHnJ6dGfE3a"


class _Opaque(Principal):
    """A principal whose token source is an opaque string (a test stand-in)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, token_env="UNUSED")

    def token(self) -> str:
        return OPAQUE


def opaque(method=READ, control=C.OK) -> Held:
    return Held(_Opaque("clinician"), None, method, b"", answer(control))


def test_rate_plan_takes_an_opaque_token():
    """Steps 1-2 need a working token, not a JWT: an opaque one is planned like any other."""
    plan = rate_plan({"rps": 50, "window_s": 1}, 10_000, [opaque()])
    assert plan.base.principal.name == "clinician"
    assert plan.base.opaque
    # A refused JWT first, then an accepted opaque token: the opaque one is used.
    mixed = rate_plan({"rps": 50}, 10_000, [base(control=C.UNAUTHENTICATED), opaque()])
    assert mixed.base.opaque


def test_invalid_token_alters_an_opaque_token_by_one_character():
    """No signature to flip: one character changed, length and alphabet kept (AUTHN-003 (b))."""
    bad = invalid_token(opaque())
    assert len(bad) == len(OPAQUE)
    assert bad != OPAQUE
    assert sum(a != b for a, b in zip(bad, OPAQUE, strict=True)) == 1


class _RateRun:
    """A run for LIMIT-002's wiring: recorded answers, and the metadata each call carried."""

    def __init__(self, tmp_path: Path) -> None:
        raw = (
            b"[safety]\nallow_transport_abuse = true\n"
            b"[limits.rate]\nrps = 50\nwindow_s = 1\ncooldown_s = 0\n"
        )
        self.config = parse_config(raw, "hipaa.toml", tmp_path)
        self.sent: list[tuple[str, ...]] = []

    def call(self, method, requests, *, principal=None, extra_metadata=(), **_):
        self.sent.append(tuple(str(v) for _, v in extra_metadata))
        if principal is None:
            return answer(C.UNAUTHENTICATED, details="invalid token", method=method)
        return answer(C.OK, b"\n\x01p", method=method)

    def map(self, fn, items):
        return [fn(i) for i in items]


def test_limit_002_runs_on_an_opaque_token(monkeypatch, tmp_path):
    """Reduced config: every token opaque. Steps 1-2 run with it, step 3 sends it altered."""
    run = _RateRun(tmp_path)
    monkeypatch.setattr(limit, "valid_tokens", lambda _: ([opaque()], ""))
    monkeypatch.setattr(limit, "_burst", lambda _run, plan: (burst(50, 50), 1.0))
    outcome = limit.rate_limits(run)  # type: ignore[arg-type]
    assert [(o.ref, o.status) for o in outcome.observations] == [
        ("1", Status.PASS),
        ("2", Status.PASS),
        ("3", Status.INCONCLUSIVE),  # not throttled, and no audit.alert_type to look for
    ]
    bad = {md for md in run.sent if md}
    assert len(bad) == 1
    assert len(run.sent) == 1 + limit.INVALID_BURST
    (header,) = bad.pop()
    assert header.startswith("Bearer ")
    assert header != f"Bearer {OPAQUE}"
    assert len(header) == len(f"Bearer {OPAQUE}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _ClosedTarget:
    """A run whose raw HTTP/2 connections go to a closed port on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = _closed_port()

    def open_h2(self) -> H2Client:
        return H2Client.open(Endpoint("x", Transport.H2C), "127.0.0.1", self.port, 1.0)


def test_c_a_closed_port_is_inconclusive_not_an_error():
    """H2Client.open raises TargetError for a refused connection, not OSError."""
    settings, problem = limit.read_settings(_ClosedTarget())  # type: ignore[arg-type]
    assert settings is None
    assert problem.startswith("no raw HTTP/2 connection:")
    assert "connection refused" in problem
    got = judge_streams(settings, 100, problem)
    assert (got.status, got.ref) == (Status.INCONCLUSIVE, "c")


def test_b_a_closed_port_is_no_connection_not_an_error():
    run = _ClosedTarget()
    plan = limit.ExportPlan(EXPORT, b"", None, ADMIN)
    got = limit.concurrent_exports(run, plan, Principal("admin"), 3)  # type: ignore[arg-type]
    assert isinstance(got, str)
    assert got.startswith("no raw HTTP/2 connection:")


# -- LIMIT-003 ------------------------------------------------------------------------------

OUTSIDER = Call("billing (not an exporter)", EXPORT, (b"",))


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.PERMISSION_DENIED, details="rpc error: code = PermissionDenied"), Status.PASS),
        (answer(C.OK, PATIENT(patient_id="p").SerializeToString()), Status.FAIL),
        (answer(C.UNAUTHENTICATED), Status.FAIL),
        (answer(C.UNAVAILABLE, details=ENVOY_RESET), Status.INCONCLUSIVE),
    ],
)
def test_a_export_refused_to_other_roles(result, status):
    got = judge_outsider(OUTSIDER, result)
    assert (got.status, got.ref) == (status, "a")


def patients(n: int) -> list[bytes]:
    return [PATIENT(patient_id=f"p-{i}").SerializeToString() for i in range(n)]


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.OK, *patients(25)), Status.PASS),
        (answer(C.INVALID_ARGUMENT, details="max_records too large"), Status.PASS),
        (answer(C.OK, *patients(26)), Status.FAIL),
        (answer(C.DEADLINE_EXCEEDED, *patients(26)), Status.FAIL),
        # The client's own limit: a response too large for it is a server finding.
        (answer(C.RESOURCE_EXHAUSTED, details=GRPCIO_TOO_BIG), Status.FAIL),
        (answer(C.OK), Status.INCONCLUSIVE),
        (answer(C.UNAVAILABLE, details="Socket closed"), Status.INCONCLUSIVE),
        (answer(C.PERMISSION_DENIED), Status.FAIL),
    ],
)
def test_a_export_bounded(result, status):
    got = judge_export_count("svc-export asks for everything", result, 25)
    assert (got.status, got.ref) == (status, "a")


def test_max_response_bytes_is_the_receive_limit_of_limit_003(tmp_path):
    # The recorded case: limits.max_response_bytes was refused at load ("not supported yet").
    config = parse_config(b"[limits]\nmax_response_bytes = 65536\n", "hipaa.toml", tmp_path)
    assert receive_limit(config.get("limits.max_response_bytes")) == 65536
    assert receive_limit(None) is None
    assert receive_limit(1 << 40) == CLIENT_MAX_RECEIVE  # the harness's channels stop there
    big = PATIENT(patient_id="p-1", clinical_notes="n" * 70_000).SerializeToString()
    export = judge_export_count("export", answer(C.OK, *patients(3), big), 25, 65536)
    assert (export.status, export.severity) == (Status.FAIL, Severity.HIGH)
    assert "over limits.max_response_bytes (65536)" in export.observed
    assert judge_export_count("export", answer(C.OK, *patients(3)), 25, 65536).status is (
        Status.PASS
    )
    assert judge_export_count("export", answer(C.OK, big), None, 65536).status is Status.FAIL
    big_page = PAGE(patients=[PATIENT(patient_id="p-1", clinical_notes="n" * 70_000)])
    paged = judge_page(PAGE_CALL, answer(C.OK, big_page.SerializeToString()), PAGE, 100, 65536)
    assert (paged.status, paged.ref) == (Status.FAIL, "d")
    assert judge_page(PAGE_CALL, answer(C.OK, page(5)), PAGE, 100, 65536).status is Status.PASS


@pytest.mark.parametrize(
    ("counted", "problem", "status"),
    [
        ([25], "", Status.PASS),
        (["25"], "", Status.PASS),  # a stack that logs the count as a string
        ([3], "", Status.FAIL),
        ([], "", Status.FAIL),
        ([], "audit source unreadable", Status.INCONCLUSIVE),
    ],
)
def test_a_export_audited_with_its_count(counted, problem, status):
    got = judge_export_audit("audit", answer(C.OK, *patients(25)), counted, problem)
    assert (got.status, got.ref) == (status, "a")


def served(messages: int = 3, largest: int = 120) -> Reply:
    """An export the server ran to the end (grpc-status 0)."""
    return Reply(http_status=200, grpc_status=0, messages=messages, largest=largest)


def refused_by_server(message: str = "too many concurrent exports") -> Reply:
    """The server's own RESOURCE_EXHAUSTED, as grpc-go, grpc-java and grpc-js send it."""
    return Reply(http_status=200, grpc_status=8, grpc_message=message)


@pytest.mark.parametrize(
    ("replies", "status"),
    [
        ([served(), served(), refused_by_server()], Status.PASS),
        ([served(), served(), refused_by_server("RESOURCE_EXHAUSTED: quota")], Status.PASS),
        ([served(), served(), served()], Status.FAIL),
        # still sending when the harness stopped reading: all three ran at once
        ([served(), served(), Reply(http_status=200, messages=2, timed_out=True)], Status.FAIL),
        # Envoy's overflow and nginx's 503 page: the proxy, not the service's limit
        ([served(), served(), Reply(http_status=200, grpc_status=14, grpc_message=ENVOY_RESET)],
         Status.INCONCLUSIVE),
        ([served(), served(), Reply(http_status=503, grpc_status=-1)], Status.INCONCLUSIVE),
        ([served(), served(), Reply(reset_code=7)], Status.INCONCLUSIVE),  # REFUSED_STREAM
        ([served(), served(), Reply(http_status=200, grpc_status=13)], Status.INCONCLUSIVE),
        ([served(), served(), Reply(timed_out=True)], Status.INCONCLUSIVE),
    ],
    ids=["go", "java", "all-served", "still-sending", "envoy-overflow", "nginx-503",
         "refused-stream", "internal", "no-answer"],
)  # fmt: skip
def test_b_concurrent_exports(replies, status):
    got = judge_concurrent("3 exports at once", replies, 2)
    assert (got.status, got.ref) == (status, "b")


def test_b_a_response_over_the_receive_limit_is_a_finding_not_a_refusal():
    # The recorded case: grpcio raised RESOURCE_EXHAUSTED itself ("Received message larger
    # than max") on an oversized export, and that passed as the server's refusal. Read
    # off the wire, the server served all three; the oversized one fails on the limit.
    big = Reply(http_status=200, messages=1, largest=5 * 1024 * 1024, timed_out=True)
    got = judge_concurrent("3 exports at once", [served(), served(), big], 2, 4 * 1024 * 1024)
    assert (got.status, got.severity) == (Status.FAIL, Severity.HIGH)
    assert "over limits.max_response_bytes" in got.observed
    within = judge_concurrent("3", [served(), served(), refused_by_server()], 2, 4 * 1024 * 1024)
    assert within.status is Status.PASS


MAX_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS


@pytest.mark.parametrize(
    ("settings", "problem", "status"),
    [
        ({MAX_STREAMS: 100}, "", Status.PASS),
        ({MAX_STREAMS: 1000}, "", Status.FAIL),
        ({}, "", Status.FAIL),  # grpcio's default: none advertised, so unlimited
        (None, "", Status.INCONCLUSIVE),
        (None, "no raw HTTP/2 connection: refused", Status.INCONCLUSIVE),
    ],
)
def test_c_advertised_streams(settings, problem, status):
    got = judge_streams(settings, 100, problem)
    assert (got.status, got.ref) == (status, "c")


PAGE_CALL = Call("page_size = 2^31 - 1", SEARCH, (b"",), ADMIN)


def page(n: int) -> bytes:
    return PAGE(patients=[PATIENT(patient_id=f"p-{i}") for i in range(n)]).SerializeToString()


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.OK, page(25), page(5)), Status.PASS),
        (answer(C.INVALID_ARGUMENT, details="page_size must be <= 100"), Status.PASS),
        (answer(C.OK, page(101)), Status.FAIL),
        (answer(C.RESOURCE_EXHAUSTED, details=GRPCIO_TOO_BIG), Status.FAIL),
        (answer(C.OK, page(0)), Status.INCONCLUSIVE),
        (answer(C.UNAVAILABLE, details="upstream request timeout"), Status.INCONCLUSIVE),
    ],
)
def test_d_page_size(result, status):
    got = judge_page(PAGE_CALL, result, PAGE, 100)
    assert (got.status, got.ref) == (status, "d")


@pytest.mark.parametrize("blob", [b"\xff\xff\xff", b"\x98\x06\x01"])
def test_d_undecodable_page_is_inconclusive_not_a_pass(blob):
    # The recorded case: a page that did not decode counted as "largest page 0" and passed.
    got = judge_page(PAGE_CALL, answer(C.OK, blob), PAGE, 100)
    assert got.status is Status.INCONCLUSIVE
    assert "not decodable" in got.observed


def test_maxed_asks_for_everything():
    cls = schema.message("ExportPatientsRequest")
    assert cls.FromString(maxed(cls, '{"maxRecords": 3}')).max_records == 2**31 - 1


def test_limit_003_without_streams_passes_and_without_pages_does_not():
    held = [
        judge_outsider(OUTSIDER, answer(C.PERMISSION_DENIED)),
        judge_concurrent("3 at once", [served(), refused_by_server()], 1),
        judge_page(PAGE_CALL, answer(C.OK, page(5)), PAGE, 100),
    ]
    assert settled("LIMIT-003", held).status is Status.PASS
    outcome = settled("LIMIT-003", held[:2], "limits.bulk_methods")
    assert outcome.status is Status.INCONCLUSIVE
    assert "LIMIT-003(d)" in outcome.summary


# -- a service that is not the reference: pages sized by max_results, records wrapped -----


class _LabRun:
    """What LIMIT-003 (d)'s plan reads of a run: config and principals."""

    def __init__(self, **config) -> None:
        self.config = Config(config)

    def principal(self, name: str) -> Principal:
        return ADMIN


def lab_policy() -> Policy:
    matrix = {m.path: frozenset({"admin"}) for m in labs.catalogue().methods}
    return Policy(labs.catalogue(), frozenset(), frozenset(), matrix, False)


def test_d_plan_sets_the_page_size_field_the_request_has():
    """The recorded case: only ``page_size`` was known, so (d) was never sent to this service."""
    templates = {labs.LIST: '{"patientId": 42, "maxResults": 10}'}
    run = _LabRun(schema={"request_templates": templates})
    plan = {m.path: call for m, call in page_plan(run, lab_policy())}  # type: ignore[arg-type]
    assert set(plan) == {labs.LIST, labs.STREAM, labs.EXPORT, labs.COUNT, labs.LIST_RESULTS}
    listed = labs.message("ListLabOrdersRequest").FromString(plan[labs.LIST].requests[0])
    assert (listed.patient_id, listed.max_results) == (42, 2**31 - 1)
    assert plan[labs.LIST].label == f"max_results = 2^31 - 1 -> {labs.LIST}"
    export = labs.message("ExportLabOrdersRequest").FromString(plan[labs.EXPORT].requests[0])
    assert export.paging.limit == 2**31 - 1
    results = labs.message("ListResultsRequest").FromString(plan[labs.LIST_RESULTS].requests[0])
    assert results.pageSize == 2**31 - 1
    # A declared field wins where the request has it; the others keep their own.
    run = _LabRun(limits={"page_size_field": "take"})
    declared = {m.path: c.label for m, c in page_plan(run, lab_policy())}  # type: ignore[arg-type]
    assert declared[labs.LIST] == f"take = 2^31 - 1 -> {labs.LIST}"
    assert declared[labs.LIST_RESULTS] == f"pageSize = 2^31 - 1 -> {labs.LIST_RESULTS}"


def lab_page(method: str, result, max_page: int = 100):
    cls = labs.catalogue().message_class(labs.catalogue().method(method).output_type)
    call = Call(f"max_results = 2^31 - 1 -> {method}", method, (b"",), ADMIN)
    return judge_page(call, result, cls, max_page, None, record_shape(labs.catalogue(), method))


def test_d_counts_the_records_a_page_carries():
    codes = [f"P{i}" for i in range(150)]
    # Five orders, each with its own list of 150 panel codes: a page of five, not 150.
    five = labs.listed(*(labs.order(order_id=i, panel_codes=codes) for i in range(5)))
    got = lab_page(labs.LIST, answer(C.OK, five, five))
    assert (got.status, "largest page 5" in got.observed) == (Status.PASS, True)
    over = labs.listed(*(labs.order(order_id=i) for i in range(101)))
    assert lab_page(labs.LIST, answer(C.OK, over)).status is Status.FAIL
    # A grpc-js server stream of orders is one page: 150 messages of one order each.
    streamed = [labs.order(order_id=i).SerializeToString() for i in range(150)]
    assert lab_page(labs.STREAM, answer(C.OK, *streamed)).status is Status.FAIL
    assert lab_page(labs.STREAM, answer(C.OK, *streamed[:20])).status is Status.PASS
    assert lab_page(labs.LIST, answer(C.OK, labs.listed(token="t"))).status is (Status.INCONCLUSIVE)


def test_a_export_counts_the_records_its_messages_carry():
    """ExportLabOrdersResponse{repeated orders}: three messages of 50 orders are 150 records."""
    cls = labs.message("ExportLabOrdersResponse")
    shape = record_shape(labs.catalogue(), labs.EXPORT)
    batch = cls(orders=[labs.order(order_id=i) for i in range(50)]).SerializeToString()
    result = answer(C.OK, batch, batch, batch)
    counted = limit.exported(cls, shape, result.responses)
    assert counted == (150, 0)
    got = judge_export_count("export", result, 100, None, counted)
    assert (got.status, "150 record(s)" in got.observed) == (Status.FAIL, True)
    assert judge_export_count("export", answer(C.OK, batch), 100, None, (50, 0)).status is (
        Status.PASS
    )
    audited = judge_export_audit("audit", result, [150], "", counted[0])
    assert audited.status is Status.PASS
    garbled = answer(C.OK, batch, b"\xff\xff\xff")
    unread = judge_export_count(
        "export", garbled, 100, None, limit.exported(cls, shape, garbled.responses)
    )
    assert unread.status is Status.INCONCLUSIVE
    # The reference's export streams Patient records: one per message, as before.
    reference = record_shape(labs.reference(), EXPORT)
    assert limit.exported(PATIENT, reference, patients(4)) == (4, 0)


def test_record_types_and_page_size_field_are_config_keys(tmp_path):
    """Both were unknown keys: a config naming them was refused at load."""
    raw = (
        b'[schema]\nrecord_types = ["acme.lab.v1.LabOrder"]\n'
        b'[limits]\npage_size_field = "paging.limit"\nmax_page_size = 100\n'
    )
    config = parse_config(raw, "hipaa.toml", tmp_path)
    assert config.str_list("schema.record_types") == ["acme.lab.v1.LabOrder"]
    assert config.str_("limits.page_size_field") == "paging.limit"
