"""FUZZ-001, FUZZ-002 and FUZZ-003 judges on recorded answers, no server.

The answers are shaped as several stacks send them (grpcio, grpc-go, grpc-js, Envoy): the
judges decide by status codes, HTTP status and frames, never by the reference's strings.
"""

import base64
from dataclasses import replace
from types import SimpleNamespace

import grpc
import pytest
from google.rpc import status_pb2

from harness.canary import CanarySet
from harness.catalogue import Severity
from harness.channels import CallResult
from harness.checks import registered
from harness.checks.fuzz import inputs
from harness.checks.fuzz.framing import (
    DEGRADATION_FLOOR_S,
    FUZZ_003_PROBES,
    NO_PROTECTED_UNARY,
    Controls,
    Malformed,
    Samples,
    burst_limits,
    disguise_plan,
    idle_wait,
    judge_baseline,
    judge_disguised,
    judge_idle,
    judge_malformed,
    judge_samples,
    malformed_plan,
    reproduced,
)
from harness.checks.fuzz.inputs import (
    FUZZ_001_PROBES,
    FUZZ_002_PROBES,
    WhiteboxRun,
    canary_leak,
    judge_fuzzing,
    judge_inputs,
    judge_mutants,
    judge_whitebox,
    mutants,
)
from harness.config import parse_config
from harness.engine import Finding, FuzzMethod, Link, Pacing, judge, pressure, settle
from harness.h2client import Reply
from harness.oracles import judge_health
from harness.outcome import Observation, Status
from harness.plans.fuzzcases import MethodRun
from harness.wire import MUTATIONS
from targets.reference import schema
from tests.checks.edges import CLIENTS, LOST, lost
from tests.checks.edges import refusal as edge_refusal
from tests.checks.recorded import answer, probe_statuses, settled, statuses

C = grpc.StatusCode
GET = f"/{schema.SERVICE}/GetPatient"
HEALTH = "/grpc.health.v1.Health/Check"
BUDGET_MS = 1000.0


def healthy() -> CallResult:
    return answer(C.OK, b"\x08\x01", method=HEALTH)


def not_sent(code: grpc.StatusCode = C.DEADLINE_EXCEEDED) -> CallResult:
    """What Run.call returns once the target stopped answering: nothing was sent."""
    return replace(
        answer(code, details="not sent: the target went away", method=GET),
        request_id="",
        elapsed_s=0.0,
    )


def fuzzed(*results: CallResult, health: CallResult | None = None, **kw: object) -> MethodRun:
    return MethodRun(GET, list(results), healthy=health or healthy(), **kw)  # type: ignore[arg-type]


# -- declared probes ---------------------------------------------------------------------


def test_declared_probes_follow_the_catalogue_rows():
    checks = registered()
    assert checks["FUZZ-001"].probes == FUZZ_001_PROBES
    assert checks["FUZZ-002"].probes == FUZZ_002_PROBES
    assert checks["FUZZ-003"].probes == FUZZ_003_PROBES
    # FUZZ-001: its oracle's bullets, on the inputs and on the health after each batch.
    assert [(p.ref, p.required, p.needs) for p in FUZZ_001_PROBES] == [
        ("inputs", True, ()),
        ("health", True, ()),
    ]
    # FUZZ-002: the row's two modes; white-box only for a Python service loaded in-process.
    assert [(p.ref, p.required, p.needs) for p in FUZZ_002_PROBES] == [
        ("black-box", True, ()),
        ("white-box", False, ("fuzz.inprocess_entrypoint",)),
    ]
    # FUZZ-003: the lettered items (a)-(h); (h) only "if configured".
    assert [(p.ref, p.required, p.needs) for p in FUZZ_003_PROBES] == [
        *((letter, True, ()) for letter in "abcdefg"),
        ("h", False, ("limits.max_idle_s",)),
    ]


# -- FUZZ-001 ----------------------------------------------------------------------------


def test_fuzz_001_passes_application_codes_and_generic_internal():
    r = fuzzed(
        answer(C.INVALID_ARGUMENT, details="page_size must be positive"),
        answer(C.NOT_FOUND),
        answer(C.OK, b"\x0a\x00"),
        # grpc-go's own parse failure: generic text, no stack, no path
        answer(C.INTERNAL, details="grpc: error unmarshalling request: unexpected EOF"),
        answer(C.CANCELLED),
    )
    observations = judge_fuzzing([r], BUDGET_MS)
    assert [(o.ref, o.status) for o in observations] == [
        ("inputs", Status.PASS),
        ("health", Status.PASS),
    ]
    assert "5 inputs" in observations[0].observed
    outcome = settled("FUZZ-001", observations)
    assert outcome.status is Status.PASS


def test_fuzz_001_fails_unknown_with_the_request_id_of_the_call():
    crash = answer(C.UNKNOWN, details="Exception calling application: boom")
    r = fuzzed(answer(C.OK), crash)
    obs = judge_inputs(r, BUDGET_MS)
    assert obs.status is Status.FAIL
    assert obs.severity is Severity.HIGH
    assert obs.request_id == crash.request_id
    assert "UNKNOWN (2)" in obs.observed


def test_fuzz_001_reports_the_shrunk_failure_found_while_sending():
    first, smallest, later = (answer(C.UNKNOWN), answer(C.UNKNOWN), answer(C.OK))
    r = fuzzed(first, smallest, later, violation="UNKNOWN (2): ...", example='{"sort": 7}')
    r.failed = smallest
    obs = judge_inputs(r, BUDGET_MS)
    assert (obs.status, obs.request_id) == (Status.FAIL, smallest.request_id)
    assert obs.observed == 'UNKNOWN (2): ...; input {"sort": 7}'


@pytest.mark.parametrize(
    "details",
    [
        # grpc-js: a Node stack trace in the status message
        "TypeError: Cannot read properties of undefined\n    at Object.getPatient "
        "(/srv/app/server.js:41:17)",
        # a Java stack frame
        "java.lang.NullPointerException at com.example.Svc.get(Svc.java:88)",
        # a Go panic recovered into INTERNAL
        "panic: runtime error: index out of range\ngoroutine 17 [running]",
    ],
)
def test_fuzz_001_fails_internal_that_carries_a_stack_trace_of_any_stack(details):
    obs = judge_inputs(fuzzed(answer(C.INTERNAL, details=details)), BUDGET_MS)
    assert obs.status is Status.FAIL
    assert "stack trace" in obs.observed


def test_fuzz_001_unavailable_from_an_edge_is_a_crash_not_a_refusal():
    # Envoy's answer when the backend died on the input: the catalogue's "no 14".
    edge = answer(
        C.UNAVAILABLE,
        details="upstream connect error or disconnect/reset before headers. "
        "reset reason: connection termination",
        headers=(("server", "envoy"),),
    )
    obs = judge_inputs(fuzzed(answer(C.OK), edge), BUDGET_MS)
    assert obs.status is Status.FAIL
    assert "UNAVAILABLE (14)" in obs.observed


def test_fuzz_001_a_call_that_was_never_sent_is_inconclusive():
    # Run.call once the target stopped answering: DEADLINE_EXCEEDED, no request ID.
    r = fuzzed(answer(C.OK), not_sent(), health=not_sent())
    observations = judge_fuzzing([r], BUDGET_MS)
    assert statuses(observations) == [Status.INCONCLUSIVE, Status.INCONCLUSIVE]
    assert settled("FUZZ-001", observations).status is Status.INCONCLUSIVE


def test_fuzz_001_a_hang_past_three_budgets_fails():
    slow = answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded", elapsed_s=4.0)
    obs = judge_inputs(fuzzed(answer(C.OK), slow), BUDGET_MS)
    assert obs.status is Status.FAIL
    assert "took 4000 ms" in obs.observed


def test_fuzz_001_p99_over_the_budget_fails():
    r = fuzzed(*[answer(C.OK, elapsed_s=0.01)] * 9, answer(C.NOT_FOUND, elapsed_s=1.6))
    obs = judge_inputs(r, BUDGET_MS)
    assert (obs.status, obs.severity) == (Status.FAIL, Severity.MEDIUM)
    assert "p99 1600 ms" in obs.observed


def test_fuzz_001_a_stream_still_delivering_at_its_deadline_passes():
    stream = answer(C.DEADLINE_EXCEEDED, b"\x0a\x00", b"\x0a\x00", elapsed_s=0.5)
    assert judge_inputs(fuzzed(stream), BUDGET_MS).status is Status.PASS


@pytest.mark.parametrize(
    "refusals",
    [
        # grpcio interceptors
        (answer(C.UNAUTHENTICATED, details="authentication required"),),
        # Envoy's jwt_authn filter and RBAC filter, before the service
        (
            answer(C.UNAUTHENTICATED, details="Jwt is expired"),
            answer(C.PERMISSION_DENIED, details="RBAC: access denied"),
        ),
        # grpc-go's status text
        (answer(C.PERMISSION_DENIED, details="rpc error: code = PermissionDenied"),),
    ],
)
def test_fuzz_001_does_not_pass_when_no_input_reached_a_handler(refusals):
    r = fuzzed(*refusals * 10)
    observations = judge_fuzzing([r], BUDGET_MS)
    assert observations[0].status is Status.INCONCLUSIVE
    assert "none reached a handler" in observations[0].observed
    outcome = settled("FUZZ-001", observations)
    assert outcome.status is Status.INCONCLUSIVE  # health alone does not make it a PASS


def test_fuzz_001_some_refusals_among_answers_that_reached_handlers_pass():
    r = fuzzed(answer(C.PERMISSION_DENIED), answer(C.NOT_FOUND), answer(C.UNAUTHENTICATED))
    assert judge_inputs(r, BUDGET_MS).status is Status.PASS


def test_fuzz_001_no_input_sent_is_inconclusive():
    obs = judge_inputs(fuzzed(), BUDGET_MS)
    assert obs.status is Status.INCONCLUSIVE


def test_fuzz_001_unhealthy_after_a_batch_fails():
    down = answer(C.UNAVAILABLE, details="failed to connect to all addresses", method=HEALTH)
    observations = judge_fuzzing([fuzzed(answer(C.OK), health=down)], BUDGET_MS)
    assert [(o.ref, o.status) for o in observations] == [
        ("inputs", Status.PASS),
        ("health", Status.FAIL),
    ]
    assert settled("FUZZ-001", observations).status is Status.FAIL


def test_the_health_judge_fails_a_crash_and_doubts_a_call_never_sent():
    assert judge_health("h", healthy()).status is Status.PASS
    assert judge_health("h", answer(C.DEADLINE_EXCEEDED, method=HEALTH)).status is Status.FAIL
    assert judge_health("h", not_sent()).status is Status.INCONCLUSIVE


# -- FUZZ-002 ----------------------------------------------------------------------------


def method(name: str = "GetPatientRequest") -> FuzzMethod:
    cls = schema.message(name)
    return FuzzMethod(GET, cls, cls(patient_id="p-0001").SerializeToString(), ("clinician",), False)


def test_fuzz_002_plans_every_mutation_in_turn_then_the_bombs():
    plan = mutants(method(), 40, 7)
    kinds = sorted(MUTATIONS)
    assert [m.kind for m in plan[:20]] == [kinds[i % len(kinds)] for i in range(20)]
    assert mutants(method(), 40, 7) == plan  # seeded: the same plan again
    assert mutants(method(), 40, 8) != plan
    assert len(mutants(method(), 0, 7)) >= len(MUTATIONS)


def test_fuzz_002_black_box_passes_parse_errors_of_any_stack():
    r = fuzzed(
        answer(C.INTERNAL, details="grpc: error unmarshalling request: proto: cannot parse"),
        answer(C.INTERNAL, details="Failed to parse request"),  # grpc-js
        answer(C.INVALID_ARGUMENT, details="invalid wire type"),
        answer(C.OK, b""),
    )
    observations = judge_mutants(r, 3 * BUDGET_MS)
    assert [(o.ref, o.status) for o in observations] == [
        ("black-box", Status.PASS),
        ("black-box", Status.PASS),
    ]
    outcome = settled("FUZZ-002", observations)
    assert outcome.status is Status.PASS
    assert probe_statuses(outcome)["FUZZ-002(white-box)"] is Status.SKIP
    assert next(p for p in outcome.probes if p.id == "FUZZ-002(white-box)").enable


def test_fuzz_002_black_box_fails_the_first_mutant_that_broke_the_oracle():
    crash = answer(C.UNKNOWN)
    r = fuzzed(answer(C.INTERNAL), crash, violation="UNKNOWN (2)")
    r.failed, r.healthy = crash, None  # the sending stops at the first failure
    r.example = "field-zero mutant (9 bytes, 0a01...)"
    observations = judge_mutants(r, 3 * BUDGET_MS)
    assert len(observations) == 1
    assert (observations[0].status, observations[0].request_id) == (Status.FAIL, crash.request_id)
    assert observations[0].observed == "field-zero mutant (9 bytes, 0a01...): UNKNOWN (2)"


def test_fuzz_002_mutants_all_refused_reached_no_handler():
    r = fuzzed(*[answer(C.UNAUTHENTICATED, details="Jwt verification fails")] * 15)
    observations = judge_mutants(r, 3 * BUDGET_MS)
    assert statuses(observations) == [Status.INCONCLUSIVE, Status.PASS]
    assert settled("FUZZ-002", observations).status is Status.INCONCLUSIVE


def test_fuzz_002_unsent_mutant_is_inconclusive_and_unhealthy_after_fails():
    r = fuzzed(answer(C.INTERNAL), not_sent(), violation="DEADLINE_EXCEEDED (4)")
    r.failed, r.healthy = r.results[-1], None
    assert statuses(judge_mutants(r, 3 * BUDGET_MS)) == [Status.INCONCLUSIVE]
    down = fuzzed(answer(C.INTERNAL), health=answer(C.UNAVAILABLE, method=HEALTH))
    assert statuses(judge_mutants(down, 3 * BUDGET_MS)) == [Status.PASS, Status.FAIL]


def finding(why: str) -> Finding:
    return Finding(GET, "(no credentials)", "OK", "", why, b"\x0a\x01x")


def test_fuzz_002_white_box_findings_fail_and_a_clean_run_passes():
    done = "#2686\tDONE cov: 1 ft: 1\nDone 2686 runs in 2 second(s)\n"
    clean = judge_whitebox(WhiteboxRun("svc:target", 2, done))
    assert [(o.ref, o.status) for o in clean] == [("white-box", Status.PASS)]
    assert "2686 inputs" in clean[0].observed
    bypass = "handler ran for a call with (no credentials) (interceptor bypass)"
    found = judge_whitebox(WhiteboxRun("svc:target", 2, "", (finding(bypass),)))
    assert [(o.status, o.severity) for o in found] == [(Status.FAIL, Severity.HIGH)]
    assert "interceptor bypass" in found[0].observed


def test_fuzz_002_white_box_that_did_not_run_is_an_error_not_a_pass():
    failed = judge_whitebox(WhiteboxRun("svc:target", 2, "ImportError: no module svc\n"))
    assert statuses(failed) == [Status.ERROR]
    assert "ImportError" in failed[0].observed
    assert statuses(judge_whitebox(WhiteboxRun("svc:target", 2, stuck=True))) == [Status.ERROR]


# -- FUZZ-003 (a)-(f) --------------------------------------------------------------------


def plan_probe(label_start: str, protected: FuzzMethod | None = None):
    return next(
        p for p in malformed_plan(HEALTH, protected or method()) if p.probe.startswith(label_start)
    )


def test_fuzz_003_plans_a_to_f_and_a_only_on_a_protected_method():
    plan = malformed_plan(HEALTH, method())
    assert sorted({p.ref for p in plan}) == list("abcdef")
    assert [p.path for p in plan if p.ref == "a" and p.wants] == [GET]
    assert {p.ref for p in malformed_plan(HEALTH, None)} == set("bcdef")


def test_fuzz_003_a_served_to_a_protected_method_fails_and_415_passes():
    a = plan_probe(f"(a) content-type text/plain to {GET}")
    served = judge_malformed(a, Reply(http_status=200, grpc_status=0, messages=1))
    assert (served.ref, served.status) == ("a", Status.FAIL)
    assert "cross-site" in served.observed
    # grpc-go and Envoy answer a wrong content type with HTTP 415 and no grpc-status
    assert judge_malformed(a, Reply(http_status=415)).status is Status.PASS
    # grpcio: the interceptor refuses the missing token
    assert judge_malformed(a, Reply(http_status=200, grpc_status=16)).status is Status.PASS


def test_fuzz_003_a_on_liveness_is_only_recorded():
    a = plan_probe(f"(a) content-type text/plain to {HEALTH}")
    obs = judge_malformed(a, Reply(http_status=200, grpc_status=0))
    assert (obs.status, obs.expected) == (Status.PASS, "recorded")
    assert "not checked" in obs.observed


def test_fuzz_003_without_a_protected_method_a_did_not_run():
    others = [judge_malformed(p, refusal(p)) for p in malformed_plan(HEALTH, None)]
    outcome = settled("FUZZ-003", [*others, NO_PROTECTED_UNARY, healthy_g()])
    assert probe_statuses(outcome)["FUZZ-003(a)"] is Status.SKIP
    assert outcome.status is Status.INCONCLUSIVE
    assert "FUZZ-003(a)" in outcome.summary


def test_fuzz_003_b_wants_resource_exhausted_whatever_the_message():
    b = plan_probe("(b)")
    go = Reply(
        http_status=200,
        grpc_status=8,
        grpc_message="grpc: received message larger than max (4294967295 vs. 4194304)",
    )
    assert judge_malformed(b, go).status is Status.PASS
    internal = judge_malformed(b, Reply(http_status=200, grpc_status=13))
    assert (internal.status, internal.severity) == (Status.FAIL, Severity.MEDIUM)


@pytest.mark.parametrize("label", ["(c)", "(d)", "(e)"])
@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(http_status=200, grpc_status=13, grpc_message="Illegal header key"), Status.PASS),
        (Reply(reset_code=1), Status.PASS),  # grpc-js / nghttp2: RST_STREAM PROTOCOL_ERROR
        (Reply(http_status=400), Status.PASS),  # an HTTP/2 edge refusing the header
        (Reply(closed=True, goaway_code=1), Status.PASS),
        (Reply(http_status=200, grpc_status=0), Status.FAIL),
        (Reply(timed_out=True, elapsed_s=5.0), Status.FAIL),
        # Envoy with its backend away: no answer to the request, neither refusal nor pass
        (
            Reply(http_status=200, grpc_status=14, grpc_message="upstream connect error"),
            Status.INCONCLUSIVE,
        ),
        (Reply(http_status=200, grpc_status=4), Status.INCONCLUSIVE),
    ],
)
def test_fuzz_003_c_to_f_want_an_answer_that_is_not_ok(label, reply, status):
    obs = judge_malformed(plan_probe(label), reply)
    assert obs.status is status
    assert obs.ref == label[1]


@pytest.mark.parametrize("label", ["(f) upper", "(f) metadata name with"])
@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(http_status=200, grpc_status=13, grpc_message="Illegal header key"), Status.PASS),
        (Reply(reset_code=1), Status.PASS),
        (Reply(http_status=400, grpc_status=-1), Status.PASS),
        (Reply(closed=True, goaway_code=1), Status.PASS),
        # Served on the liveness method: the field was dropped (nghttp2 drops a name with a
        # space) or reached a service that ignored it; the harness cannot tell which. It
        # was a FAIL before.
        (Reply(http_status=200, grpc_status=0, messages=1), Status.INCONCLUSIVE),
        (Reply(timed_out=True, elapsed_s=5.0), Status.FAIL),
        (Reply(http_status=200, grpc_status=14), Status.INCONCLUSIVE),
    ],
)
def test_fuzz_003_f_on_liveness_refused_passes_and_served_shows_nothing(label, reply, status):
    obs = judge_malformed(plan_probe(label), reply)
    assert (obs.ref, obs.status) == ("f", status)


# (f) with credentials: the caller's token under a malformed name, beside the same call
# with it under its own name (served) and without it (UNAUTHENTICATED).
TOKEN = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"
UPPER, SPACE = disguise_plan(GET, b"\n\x01p", (("authorization", f"Bearer {TOKEN}"),))
SERVED = Reply(http_status=200, grpc_status=0, messages=1)
BARE = Reply(http_status=200, grpc_status=16, grpc_message="unauthenticated")
CONTROLS = Controls(honest=SERVED, bare=BARE)


def test_fuzz_003_f_plans_the_credentials_under_two_malformed_names():
    assert [(d.name, d.header, d.path) for d in (UPPER, SPACE)] == [
        ("Authorization", "authorization", GET),
        ("authorization ", "authorization", GET),
    ]
    assert UPPER.metadata == (("Authorization", f"Bearer {TOKEN}"),)
    assert TOKEN not in UPPER.probe + SPACE.probe  # the labels go into evidence
    # etcd's own header (auth.header = "token"), and no plan without header credentials
    etcd = disguise_plan(GET, b"", (("token", TOKEN),))
    assert [d.metadata for d in etcd] == [(("Token", TOKEN),), (("token ", TOKEN),)]
    assert disguise_plan(GET, b"", ()) == []
    assert disguise_plan("", b"", (("token", TOKEN),)) == []


@pytest.mark.parametrize(
    ("disguise", "reply", "status"),
    [
        # grpc-go (x/net/http2): both names invalid, RST_STREAM PROTOCOL_ERROR.
        (UPPER, Reply(reset_code=1), Status.PASS),
        (SPACE, Reply(reset_code=1), Status.PASS),
        # grpc-js (nghttp2): upper case reset as grpc-go's; a name with a space dropped
        # before Node sees it, so the call is answered exactly as without credentials (a
        # FAIL before, when (f) went to the liveness method).
        (SPACE, BARE, Status.PASS),
        # Envoy: GOAWAY PROTOCOL_ERROR or HTTP 400 on upper case; the field with a space
        # dropped by its codec and the request forwarded without it.
        (UPPER, Reply(closed=True, goaway_code=1, goaway_last_stream=0), Status.PASS),
        (UPPER, Reply(http_status=400, grpc_status=-1), Status.PASS),
        (SPACE, Reply(http_status=200, grpc_status=16, grpc_message="missing token"), Status.PASS),
        # grpcio (C-core): INTERNAL 'Illegal header key'.
        (
            SPACE,
            Reply(http_status=200, grpc_status=13, grpc_message="Illegal header key"),
            Status.PASS,
        ),
        # A stack that folds case or trims names: the malformed field is the credential.
        (UPPER, SERVED, Status.FAIL),
        (SPACE, Reply(http_status=200, grpc_status=0), Status.FAIL),
        (SPACE, Reply(timed_out=True, elapsed_s=5.0), Status.FAIL),
        (SPACE, Reply(http_status=200, grpc_status=14), Status.INCONCLUSIVE),
        (SPACE, ConnectionResetError("reset by peer"), Status.INCONCLUSIVE),
    ],
)
def test_fuzz_003_f_credentials_under_a_malformed_name_are_never_taken(disguise, reply, status):
    obs = judge_disguised(disguise, reply, CONTROLS)
    assert (obs.ref, obs.status) == ("f", status)
    assert (obs.severity is Severity.HIGH) == (status is Status.FAIL)
    assert TOKEN not in obs.observed + obs.expected + obs.probe


def test_fuzz_003_f_dropped_is_named_and_needs_the_honest_call_served():
    dropped = judge_disguised(SPACE, BARE, CONTROLS)
    assert "exactly as the call without credentials" in dropped.observed
    # The credentials under their own name were not served either: nothing shown.
    expired = Reply(http_status=200, grpc_status=16, grpc_message="token expired")
    same = judge_disguised(SPACE, BARE, Controls(honest=BARE, bare=BARE))
    assert same.status is Status.INCONCLUSIVE
    # ...but a refusal of its own (a reset) still shows the name was refused.
    reset = judge_disguised(SPACE, Reply(reset_code=1), Controls(honest=expired, bare=BARE))
    assert reset.status is Status.PASS
    # No bare control: not served where the honest call was is enough.
    alone = judge_disguised(SPACE, BARE, Controls(honest=SERVED, bare=OSError("refused")))
    assert alone.status is Status.PASS


def test_fuzz_003_f_answered_as_the_credentials_were_is_taken_for_them():
    # The review's case: a seed ID that does not exist, so the honest call is NOT_FOUND
    # (past authentication) and the bare one UNAUTHENTICATED; the malformed name answered
    # NOT_FOUND, so it was taken for the credential (a PASS as "refused" before).
    missing = Reply(http_status=200, grpc_status=5, grpc_message="not found")
    taken = judge_disguised(UPPER, missing, Controls(honest=missing, bare=BARE))
    assert (taken.status, taken.severity) == (Status.FAIL, Severity.HIGH)
    assert "taken for it" in taken.observed
    # The same answer as the bare call stays "not taken"; a reset is still a refusal.
    assert judge_disguised(UPPER, BARE, Controls(honest=missing, bare=BARE)).status is (
        Status.INCONCLUSIVE
    )
    reset = judge_disguised(UPPER, Reply(reset_code=1), Controls(honest=missing, bare=BARE))
    assert reset.status is Status.PASS


def test_fuzz_003_f_served_by_a_method_open_to_anyone_shows_nothing():
    # The no-auth defect: every call is served, so (f) says nothing; (a) trips FUZZ-003.
    obs = judge_disguised(UPPER, SERVED, Controls(honest=SERVED, bare=SERVED))
    assert obs.status is Status.INCONCLUSIVE


def test_fuzz_003_a_failed_connection_is_inconclusive():
    obs = judge_malformed(plan_probe("(b)"), ConnectionResetError("reset by peer"))
    assert (obs.ref, obs.status) == ("b", Status.INCONCLUSIVE)


# -- FUZZ-003 (g), (h), health -----------------------------------------------------------


def samples(*ms: float, failures: tuple[str, ...] = ()) -> Samples:
    return Samples([m / 1000 for m in ms], list(failures))


def healthy_g() -> Observation:
    return judge_health("health at the end", healthy()).of("g")


def test_fuzz_003_g_limits_have_a_floor_over_a_loopback_baseline():
    limits = burst_limits({HEALTH: samples(1, 1, 2), GET: samples(400, 500)})
    assert limits[HEALTH] == pytest.approx(0.002 + DEGRADATION_FLOOR_S)
    assert limits[GET] == pytest.approx(1.0)


def test_fuzz_003_g_judges_p95_and_failed_samples():
    base = {HEALTH: samples(1, 1), GET: samples(2, 2)}
    limits = burst_limits(base)
    fine = judge_samples(
        "(g)", {HEALTH: samples(5, 9), GET: samples(20, 40)}, base, limits, "during"
    )
    assert fine.status is Status.PASS
    stalled = {HEALTH: samples(3, 4), GET: samples(2400, 2500)}  # tarpit: methods stall
    assert judge_samples("(g)", stalled, base, limits, "during").status is Status.FAIL
    down = {HEALTH: samples(3, failures=("UNAVAILABLE",)), GET: samples(2)}
    assert judge_samples("(g)", down, base, limits, "after").status is Status.FAIL


def test_fuzz_003_g_unhealthy_baseline_is_inconclusive():
    assert judge_baseline(HEALTH, {HEALTH: samples(1)}) is None
    obs = judge_baseline(HEALTH, {HEALTH: samples(5000, failures=("UNAVAILABLE",))})
    assert obs is not None
    assert (obs.ref, obs.status) == ("g", Status.INCONCLUSIVE)


def test_fuzz_003_g_a_degradation_counts_only_when_it_shows_twice():
    def obs(status: Status, probe: str = "(g) bursts") -> Observation:
        return Observation(probe, "p95", "limit", status)

    first = obs(Status.FAIL)
    assert statuses(reproduced(obs(Status.PASS), [], None)) == [Status.PASS]
    alone = [obs(Status.PASS, "alone"), obs(Status.FAIL, "alone")]
    assert statuses(reproduced(first, alone, None)) == [Status.FAIL, Status.PASS, Status.FAIL]
    quiet = [obs(Status.PASS, "alone")] * 4
    once = reproduced(first, quiet, obs(Status.PASS, "again"))
    assert statuses(once) == [Status.PASS] * 6
    assert "not reproduced" in once[0].observed
    twice = reproduced(first, quiet, obs(Status.FAIL, "again"))
    assert statuses(twice)[0] is Status.FAIL
    assert statuses(twice)[-1] is Status.FAIL


def test_fuzz_003_h_wants_the_idle_stream_closed_within_the_limit():
    grace, wait = idle_wait(4.0, 600.0)
    assert (grace, wait) == (2.0, 6.0)
    assert idle_wait(1.0, 600.0) == (1.0, 2.0)
    closed = judge_idle(4.0, grace, wait, Reply(reset_code=8, elapsed_s=4.2))  # RST CANCEL
    goaway = judge_idle(4.0, grace, wait, Reply(closed=True, goaway_code=0, elapsed_s=4.1))
    assert (closed.ref, closed.status, goaway.status) == ("h", Status.PASS, Status.PASS)
    still = judge_idle(4.0, grace, wait, Reply(timed_out=True, elapsed_s=6.0))
    assert still.status is Status.FAIL
    assert "still open after 6 s" in still.observed
    late = judge_idle(4.0, grace, wait, Reply(http_status=200, grpc_status=4, elapsed_s=6.5))
    assert late.status is Status.FAIL
    assert judge_idle(4.0, grace, wait, OSError("refused")).status is Status.INCONCLUSIVE


def refusal(p: Malformed) -> Reply:
    """What grpcio answers each malformed request with (see the reference's evidence)."""
    if p.ref == "a":
        return Reply(http_status=415)
    return Reply(http_status=200, grpc_status=8 if p.ref == "b" else 13)


def test_fuzz_003_passes_without_h_when_max_idle_is_not_set():
    plan = malformed_plan(HEALTH, method())
    observations = [judge_malformed(p, refusal(p)) for p in plan]
    observations.append(healthy_g())
    outcome = settled("FUZZ-003", observations)
    assert outcome.status is Status.PASS
    h = next(p for p in outcome.probes if p.id == "FUZZ-003(h)")
    assert (h.status, h.enable) == (Status.SKIP, "limits.max_idle_s")


# -- back-pressure is not an answer from a handler ---------------------------------------


@pytest.mark.parametrize(
    "pushed_back",
    [
        # a rate limit in front of every handler (Envoy's local_ratelimit, grpc-go's tap)
        answer(C.RESOURCE_EXHAUSTED, details="local_rate_limited"),
        answer(C.RESOURCE_EXHAUSTED, details="rpc error: code = ResourceExhausted"),
    ],
)
def test_fuzz_001_throttled_answers_do_not_count_as_reached(pushed_back):
    # Before: RESOURCE_EXHAUSTED is an application code, so a method every input of which
    # was throttled (or refused) passed as fuzzed.
    r = fuzzed(pushed_back, answer(C.UNAUTHENTICATED), pushed_back)
    observations = judge_fuzzing([r], BUDGET_MS)
    assert observations[0].status is Status.INCONCLUSIVE
    assert "none reached a handler" in observations[0].observed


def test_fuzz_001_inputs_that_got_only_back_pressure_are_never_judged_nor_reached():
    refused = answer(C.UNAVAILABLE, details="Stream refused by server")  # grpc-js
    r = fuzzed(unanswered=[refused, refused])
    obs = judge_inputs(r, BUDGET_MS)
    assert obs.status is Status.INCONCLUSIVE  # not FAIL: back-pressure is no finding
    assert "2 got only back-pressure" in obs.observed
    r = fuzzed(answer(C.NOT_FOUND), unanswered=[refused, refused])
    assert judge_inputs(r, BUDGET_MS).status is Status.INCONCLUSIVE  # too few reached
    r = fuzzed(answer(C.NOT_FOUND), answer(C.OK), unanswered=[refused])
    assert judge_inputs(r, BUDGET_MS).status is Status.PASS


def test_fuzz_001_back_pressure_set_aside_and_notes_are_shown_not_judged():
    goaway = answer(C.UNAVAILABLE, details="transport is closing")  # grpc-go
    r = fuzzed(
        answer(C.NOT_FOUND),
        answer(C.OK),
        set_aside=[goaway],
        notes=["not reproduced: UNKNOWN (2); alone on a new connection: OK (0)"],
    )
    obs = judge_inputs(r, BUDGET_MS)
    assert obs.status is Status.PASS
    assert "1 back-pressure answers tried again (closed)" in obs.observed
    assert "not reproduced: UNKNOWN" in obs.observed


def test_fuzz_002_mutants_that_got_only_back_pressure_reached_nothing():
    refused = answer(C.UNAVAILABLE, details="Received RST_STREAM with error code 7")
    observations = judge_mutants(fuzzed(unanswered=[refused] * 3), BUDGET_MS)
    assert statuses(observations) == [Status.INCONCLUSIVE, Status.PASS]
    assert settled("FUZZ-002", observations).status is Status.INCONCLUSIVE


def test_fuzz_002_a_connection_that_stops_accepting_streams_fails_as_a_denial_of_service():
    refused = answer(C.UNAVAILABLE, details="Received RST_STREAM with error code 7")
    why = (
        "the service stops accepting streams after 101 malformed inputs on one connection: "
        "REFUSED_STREAM persists after back-off, and a valid control call on that connection "
        "is refused too, while a new connection is served; a denial of service"
    )
    r = fuzzed(answer(C.INTERNAL), refused, violation=why, failed=refused, health=None)
    r.healthy = None
    observations = judge_mutants(r, BUDGET_MS)
    assert statuses(observations) == [Status.FAIL]
    assert "stops accepting streams after 101 malformed inputs" in observations[0].observed
    assert observations[0].request_id == refused.request_id


def test_fuzz_002_plans_mutants_of_the_seed_corpus_in_turn_with_the_template():
    m = FuzzMethod(GET, schema.message("GetPatientRequest"), b"\x0a\x03p-1", ("clinician",), False)
    seeded = schema.message("GetPatientRequest")(patient_id="p-0042").SerializeToString()
    kinds = len(MUTATIONS)
    plan = mutants(m, 4 * kinds, 1, [seeded])
    assert len(plan) >= 2 * kinds
    # mutants of the seed: built from its bytes, so most still carry its ID
    from_seed = plan[kinds : 2 * kinds]
    assert sum(b"p-0042" in x.payload for x in from_seed) > kinds // 2
    assert not any(b"p-0042" in x.payload for x in plan[:kinds])


# -- canaries in a fuzz error (FUZZ-001 "no canary appears in any error") -------------------

PLANTED = CanarySet.for_seed(7)
NAME, MRN = PLANTED.values["given_name"], PLANTED.values["mrn"]


def _status_bin(message: str) -> tuple[tuple[str, bytes], ...]:
    return (
        ("grpc-status-details-bin", status_pb2.Status(code=3, message=message).SerializeToString()),
    )


@pytest.mark.parametrize(
    "leaky",
    [
        # grpc-go's status text, echoing a stored record's name
        answer(C.INVALID_ARGUMENT, details=f"invalid birth_date for {NAME}"),
        # a Java service's google.rpc.Status with the MRN in its message
        answer(C.FAILED_PRECONDITION, details="precondition failed", trailers=_status_bin(MRN)),
        # a Node service's debug trailer, base64 of the name
        answer(C.NOT_FOUND, trailers=(("x-debug", base64.b64encode(NAME.encode()).decode()),)),
    ],
)
def test_fuzz_001_an_error_carrying_a_planted_canary_fails(leaky):
    r = fuzzed(answer(C.OK), leaky)
    assert judge_inputs(r, BUDGET_MS).status is Status.PASS  # without the run's canaries
    obs = judge_inputs(r, BUDGET_MS, PLANTED)
    assert (obs.status, obs.request_id) == (Status.FAIL, leaky.request_id)
    assert "canary value" in obs.observed
    assert canary_leak(leaky, PLANTED).startswith(f"{leaky.code.name} with a canary value")
    mutated = judge_mutants(r, 3 * BUDGET_MS, PLANTED)
    assert statuses(mutated) == [Status.FAIL, Status.PASS]


def test_fuzz_001_a_canary_in_an_ok_answer_or_a_weak_match_alone_is_no_error_leak():
    ok = answer(C.OK, NAME.encode(), details="")
    zip_only = answer(C.INVALID_ARGUMENT, details=f"bad zip {PLANTED.values['zip']}")
    assert canary_leak(ok, PLANTED) == ""
    assert canary_leak(zip_only, PLANTED) == ""
    assert canary_leak(answer(C.INVALID_ARGUMENT, details=NAME), None) == ""


def test_fuzz_001_judges_with_the_runs_canaries(monkeypatch, tmp_path):
    """The pytest run's check hands its canaries to the judge, as the oracle requires."""
    leaky = answer(C.INVALID_ARGUMENT, details=f"no such patient {NAME}", method=GET)
    monkeypatch.setattr(inputs, "policy_or_skip", lambda run: None)
    monkeypatch.setattr(inputs, "fuzz_calls", lambda run: [fuzzed(answer(C.OK), leaky)])
    run = SimpleNamespace(
        config=parse_config(b"", "hipaa.toml", tmp_path),
        options=SimpleNamespace(seed=7),
        memo=lambda key, compute: compute(),
    )
    outcome = inputs.property_fuzzing(run)
    assert outcome.status is Status.FAIL
    assert "canary value (names)" in outcome.summary


# -- a proxy's own HTTP refusal is never the service's answer ----------------------------


def _judged(result: CallResult) -> str:
    return judge(result.code, result.details, elapsed_ms=5, slow_ms=BUDGET_MS)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("status", [400, 413, 429, 495, 503])
def test_a_proxys_refusal_is_never_a_fuzz_finding(client, status):
    # Before: nginx's 413 was UNKNOWN (2), its 429 and 503 UNAVAILABLE (14): crash findings.
    assert _judged(edge_refusal(client, status, GET)) == ""


@pytest.mark.parametrize("client", CLIENTS)
def test_a_proxy_that_could_not_reach_the_service_is_judged_by_its_code(client):
    # 502 and 504: the service behind it may have crashed on the input.
    assert _judged(edge_refusal(client, 502, GET)) == "UNAVAILABLE (14)"
    gateway = answer(C.UNKNOWN, details=edge_refusal(client, 413).details.replace("413", "500"))
    assert _judged(gateway) == "UNKNOWN (2)"


@pytest.mark.parametrize("client", CLIENTS)
def test_a_proxys_rate_limit_is_back_pressure_and_its_size_limit_an_answer(client):
    assert pressure(edge_refusal(client, 429)) == "throttled"  # before: 'unavailable'
    assert pressure(edge_refusal(client, 503)) == "throttled"
    assert pressure(edge_refusal(client, 413)) == ""  # the input's answer, not back-pressure
    assert pressure(edge_refusal(client, 400)) == ""


@pytest.mark.parametrize("client", CLIENTS)
def test_fuzz_001_inputs_a_proxy_refused_reached_no_handler(client):
    # Every input over nginx's client_max_body_size: answered (413), but not by a handler.
    r = fuzzed(edge_refusal(client, 413, GET), edge_refusal(client, 400, GET))
    obs = judge_inputs(r, BUDGET_MS)
    assert obs.status is Status.INCONCLUSIVE  # before: FAIL, 'UNKNOWN (2)'
    assert "none reached a handler" in obs.observed
    mixed = fuzzed(answer(C.OK), answer(C.INVALID_ARGUMENT), edge_refusal(client, 413, GET))
    assert judge_inputs(mixed, BUDGET_MS).status is Status.PASS


@pytest.mark.parametrize("client", CLIENTS)
def test_a_proxys_lasting_rate_limit_is_no_denial_of_service_finding(client):
    # Before: a 429 to the end, for the control call too, was 'the service stops
    # accepting streams' (a DoS finding); it is the proxy's rate limit.
    throttled = edge_refusal(client, 429, GET)
    link = Link(
        send=lambda: throttled,
        alone=lambda: throttled,
        control=lambda fresh: edge_refusal(client, 429, HEALTH),
        gone=lambda: "",
    )
    got = settle(link, _judged, Pacing(waits_s=(0.0, 0.0)), lambda _: None)
    assert (got.answered, got.finding) == (False, "")
    assert "429/503" in got.notes[0]


@pytest.mark.parametrize("client", sorted(LOST))
def test_a_proxys_answer_whose_status_was_lost_reached_no_handler(client):
    assert _judged(lost(client, GET)) == ""
    r = fuzzed(lost(client, GET), lost(client, GET))
    obs = judge_inputs(r, BUDGET_MS)
    assert obs.status is Status.INCONCLUSIVE  # before: PASS, two INTERNAL answers
    assert "none reached a handler" in obs.observed


def test_fuzz_002_white_box_out_of_memory_counts_only_when_it_reproduces():
    stopped = "==9== ERROR: libFuzzer: out-of-memory (used: 2101Mb; exceeds: 2048Mb)\n"
    again = judge_whitebox(WhiteboxRun("svc:target", 2, stopped, oom="reproduced"))
    assert [(o.status, o.severity) for o in again] == [(Status.FAIL, Severity.HIGH)]
    once = judge_whitebox(WhiteboxRun("svc:target", 2, stopped, oom="not reproduced"))
    assert statuses(once) == [Status.INCONCLUSIVE]
    assert "did not exhaust memory alone" in once[0].observed
