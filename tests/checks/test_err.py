"""ERR-001 and ERR-002 judged on recorded answers: no server.

The answers carry what other stacks put in their errors (grpc-go's ``rpc error`` texts and
panics, Node's ``@grpc/grpc-js`` stack frames, a Java server's trace, an Envoy front proxy
with its ``server`` header and jwt_authn messages): the judges decide by status codes,
decoded status details and the leak patterns, never by the reference's own strings.
"""

from __future__ import annotations

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import any_pb2, descriptor_pb2
from google.rpc import error_details_pb2, status_pb2

from harness.catalogue import Severity
from harness.channels import CallResult
from harness.checks import registered
from harness.checks.err import (
    ERR_001_PROBES,
    ERR_002_PROBES,
    MALFORMED,
    UNKNOWN_SERVICE,
    authn_unsent,
    dedicated_plan,
    detail_types,
    existence_plan,
    failure_variants,
    judge_codes,
    judge_dedicated,
    judge_error_texts,
    judge_leaks,
    judge_uniform,
    server_errors,
    shared_calls,
    unknown_user,
    unminted,
)
from harness.descriptors import MethodCatalogue, MethodInfo
from harness.outcome import Observation, Status
from harness.plans.calls import Call
from harness.plans.fuzzcases import MethodRun
from harness.plans.tokens import Base
from harness.policy import Policy
from harness.principals import Principal
from harness.tokens import IssuerKeys, harness_key, parse, sign
from tests.checks import edges
from tests.checks.recorded import answer, refs, settled

C = grpc.StatusCode
SVC = "/acme.charts.v2.Charts"
GET, UPDATE = f"{SVC}/GetChart", f"{SVC}/UpdateChart"
LEAST = Principal("least-privileged")
ENVOY = (("server", "envoy"),)
NGINX = (("server", "nginx/1.25.3"), ("content-type", "text/html"))


def status_details(*details: object, message: str = "") -> tuple[tuple[str, bytes], ...]:
    packed = []
    for d in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(d)  # type: ignore[arg-type]
        packed.append(wrapped)
    blob = status_pb2.Status(code=3, message=message, details=packed).SerializeToString()
    return (("grpc-status-details-bin", blob),)


# -- the declared probes are the catalogue's -------------------------------------------


def test_err_001_declares_the_four_dedicated_probes_and_the_scan():
    probes = registered()["ERR-001"].probes
    assert probes == ERR_001_PROBES
    assert {p.ref: (p.required, p.needs) for p in probes} == {
        "unknown-service": (True, ()),
        "unknown-method": (True, ()),
        "two-messages": (True, ()),
        "malformed": (True, ()),
        "leaks": (True, ()),
    }


def test_err_002_declares_its_bullets_existence_only_with_hiding_on():
    probes = registered()["ERR-002"].probes
    assert probes == ERR_002_PROBES
    assert {p.ref: (p.required, p.needs) for p in probes} == {
        "codes": (True, ()),
        "authn": (True, ("auth.principals",)),
        "existence": (False, ("authz.existence_hiding",)),
    }


# -- ERR-001: the dedicated probes ----------------------------------------------------


def test_dedicated_plan_asks_the_unary_methods_service():
    plan = dedicated_plan(GET, b"\x0a\x01x", LEAST, seed=1234)
    assert [(ref, c.method) for ref, c in plan] == [
        ("unknown-service", UNKNOWN_SERVICE),
        ("unknown-method", f"{SVC}/Nope234"),
        ("two-messages", GET),
        ("malformed", GET),
    ]
    assert plan[2][1].requests == (b"\x0a\x01x", b"\x0a\x01x")
    assert plan[3][1].requests == (MALFORMED,)
    assert all(c.principal is LEAST for _, c in plan)


def dedicated(ref: str) -> Call:
    return dict(dedicated_plan(GET, b"", None, 0))[ref]


@pytest.mark.parametrize(
    ("ref", "result"),
    [
        (
            "unknown-service",
            answer(C.UNIMPLEMENTED, details="unknown service hipaa.harness.v1.Probe"),
        ),
        (
            "unknown-method",
            answer(C.UNIMPLEMENTED, details="unknown method Nope0 for service acme"),
        ),
        (
            "unknown-method",
            answer(
                C.UNIMPLEMENTED,
                details="The server does not implement the method /acme.charts.v2.Charts/Nope0",
            ),
        ),
        ("unknown-service", answer(C.UNIMPLEMENTED, headers=ENVOY)),
        (
            "malformed",
            answer(
                C.INTERNAL,
                details="grpc: error unmarshalling request: proto: cannot parse invalid wire",
            ),
        ),
        ("malformed", answer(C.INVALID_ARGUMENT, details="invalid request")),
        ("two-messages", answer(C.OK, b"")),
        (
            "two-messages",
            answer(C.UNIMPLEMENTED, details="grpc: received more than one request message"),
        ),
    ],
    ids=[
        "go-service",
        "go-method",
        "node-method",
        "envoy-404",
        "go-unmarshal",
        "invalid",
        "grpcio-ok",
        "go-cardinality",
    ],
)
def test_dedicated_probes_pass_on_the_codes_of_any_stack(ref, result):
    judged = judge_dedicated(ref, dedicated(ref), result)
    assert (judged.status, judged.ref) == (Status.PASS, ref)


def test_dedicated_probes_fail_on_the_wrong_code():
    assert (
        judge_dedicated("unknown-service", dedicated("unknown-service"), answer(C.OK)).status
        is Status.FAIL
    )
    not_found = answer(C.NOT_FOUND, details="no such service")
    assert (
        judge_dedicated("unknown-method", dedicated("unknown-method"), not_found).status
        is Status.FAIL
    )
    parsed = answer(C.OK, b"\x0a\x00")
    judged = judge_dedicated("malformed", dedicated("malformed"), parsed)
    assert (judged.status, judged.severity) == (Status.FAIL, Severity.MEDIUM)


def test_cardinality_is_at_most_a_low_warning():
    crashed = answer(C.UNKNOWN, details="Exception calling application: too many requests")
    judged = judge_dedicated("two-messages", dedicated("two-messages"), crashed)
    assert (judged.status, judged.severity) == (Status.WARN, Severity.LOW)


@pytest.mark.parametrize("ref", ["unknown-service", "unknown-method", "two-messages", "malformed"])
def test_refused_before_routing_or_parsing_is_neither_pass_nor_finding(ref):
    """An authenticating proxy (Envoy's jwt_authn) answers 16 before any route or parser."""
    result = answer(C.UNAUTHENTICATED, details="Jwt is missing", headers=ENVOY)
    judged = judge_dedicated(ref, dedicated(ref), result)
    assert judged.status is Status.INCONCLUSIVE
    assert "refused before it reached" in judged.observed


@pytest.mark.parametrize("code", [C.UNAVAILABLE, C.DEADLINE_EXCEEDED])
@pytest.mark.parametrize("ref", ["unknown-service", "unknown-method", "two-messages", "malformed"])
def test_dedicated_probes_that_never_reached_are_inconclusive(ref, code):
    result = answer(
        code, details="upstream connect error or disconnect/reset before headers", headers=ENVOY
    )
    assert judge_dedicated(ref, dedicated(ref), result).status is Status.INCONCLUSIVE


# -- ERR-001: the leak scan -------------------------------------------------------------

PY_TRACE = 'Traceback (most recent call last):\n  File "/srv/app/handlers.py", line 41, in get'
GO_PANIC = (
    "panic: runtime error: index out of range\ngoroutine 7 [running]:\n"
    "main.(*srv).Get(...)\n\t/go/src/app/main.go:42"
)
JAVA_TRACE = "java.lang.NullPointerException\n\tat com.acme.Charts.get(Charts.java:88)"
NODE_TRACE = "TypeError: x is undefined\n    at Object.getChart (/srv/app/index.js:10:5)"


@pytest.mark.parametrize(
    ("text", "kind", "severity"),
    [
        (PY_TRACE, "stack trace", Severity.HIGH),
        (GO_PANIC, "stack trace", Severity.HIGH),
        (JAVA_TRACE, "stack trace", Severity.HIGH),
        (NODE_TRACE, "stack trace", Severity.HIGH),
        ('pq: syntax error at or near "FROM"', "SQL", Severity.MEDIUM),
        ("ORA-00942: table or view does not exist", "SQL", Severity.MEDIUM),
        ("dial tcp 10.0.3.7:5432: connect: connection refused", "private address", Severity.MEDIUM),
        ("served by grpc-go/1.60.1", "version banner", Severity.MEDIUM),
    ],
    ids=["python", "go-panic", "java", "node", "postgres", "oracle", "rfc1918", "banner"],
)
def test_each_leak_in_a_status_message_fails_with_its_severity(text, kind, severity):
    found = judge_error_texts(answer(C.INTERNAL, details=text))
    kinds = {o.expected: o.severity for o in found}
    assert kinds[f"generic text, no {kind}"] is severity
    assert all(o.status is Status.FAIL for o in found)


def test_leaks_are_found_in_decoded_details_and_metadata_too():
    details = status_details(error_details_pb2.ErrorInfo(reason="db down at db.corp.internal"))
    via_details = judge_error_texts(answer(C.INTERNAL, trailers=details), domains=["CORP.internal"])
    assert [o.expected for o in via_details] == ["generic text, no internal domain"]
    via_header = judge_error_texts(answer(C.INTERNAL, trailers=(("x-debug", PY_TRACE),)))
    assert via_header[0].probe.startswith("metadata x-debug of ")


@pytest.mark.parametrize(
    ("key", "head", "trace"),
    [
        ("grpc-status-details-bin", b"\xff\x01", PY_TRACE),  # not a google.rpc.Status
        ("grpc-status-details-bin", b"\x08", GO_PANIC),  # a Status cut short
        ("x-debug-bin", b"", JAVA_TRACE),  # binary metadata
    ],
    ids=["undecodable-details", "truncated-details", "binary-metadata"],
)
def test_details_and_binary_metadata_nobody_can_decode_are_scanned_as_they_came(key, head, trace):
    # The recorded case: undecodable grpc-status-details-bin was skipped, unread.
    leaky = answer(C.INTERNAL, details="internal error", trailers=((key, head + trace.encode()),))
    judged = judge_error_texts(leaky)
    assert {(o.expected, o.status) for o in judged} >= {
        ("generic text, no stack trace", Status.FAIL)
    }
    assert judge_error_texts(answer(C.INTERNAL, trailers=((key, head + b"denied"),))) == []


def test_debug_info_detail_fails_high_and_is_named():
    info = error_details_pb2.DebugInfo(stack_entries=["frame"], detail="boom")
    result = answer(C.INTERNAL, details="internal error", trailers=status_details(info))
    assert detail_types(result) == ("google.rpc.DebugInfo",)
    judged = judge_error_texts(result)
    assert (judged[0].observed, judged[0].severity) == (
        "google.rpc.DebugInfo detail",
        Severity.HIGH,
    )


def test_generic_errors_pass_and_allowed_messages_are_not_scanned():
    generic = [
        answer(C.PERMISSION_DENIED, details="permission denied"),
        answer(C.UNAUTHENTICATED, details="Jwt verification fails", headers=ENVOY),
        answer(C.OK, b"\x0a\x00"),
    ]
    judged = judge_leaks(generic)
    assert [(o.ref, o.status, o.probe) for o in judged] == [
        ("leaks", Status.PASS, "2 error statuses scanned")
    ]
    waived = answer(C.INTERNAL, details="see /srv/docs/errors/E42")
    assert refs(judge_leaks([waived], allowed=["see /srv/docs/errors/E42"])) == {
        "leaks": [Status.PASS]
    }


def test_client_side_statuses_are_not_the_servers_words():
    local = [
        answer(
            C.UNAVAILABLE, details="failed to connect to all addresses; last error: /tmp/x/y.sock"
        ),
        answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded"),
        answer(C.CANCELLED, details="Locally cancelled by application!"),
    ]
    assert server_errors(local) == []
    judged = judge_leaks(local)
    assert [(o.status, o.ref) for o in judged] == [(Status.SKIP, "leaks")]  # nothing to judge


def test_server_header_with_a_version_warns_once_per_value():
    header = (("server", "envoy/1.28.0"),)
    results = [answer(C.NOT_FOUND, headers=header), answer(C.NOT_FOUND, headers=header)]
    judged = judge_leaks(results)
    warns = [o for o in judged if o.status is Status.WARN]
    assert [(o.observed, o.severity) for o in warns] == [("envoy/1.28.0", Severity.LOW)]
    assert judge_leaks([answer(C.NOT_FOUND, headers=ENVOY)])[0].status is Status.PASS


def test_the_same_leak_on_the_same_method_is_reported_once():
    results = [answer(C.INTERNAL, details=PY_TRACE, method=GET) for _ in range(3)]
    results.append(answer(C.INTERNAL, details=PY_TRACE, method=UPDATE))
    failed = [o for o in judge_leaks(results) if o.status is Status.FAIL]
    # A Python trace shows a stack trace and an absolute path: two kinds, on two methods.
    assert len(failed) == 4
    outcome = settled("ERR-001", [*judge_leaks(results), *passing_dedicated()], unset=())
    assert (outcome.status, outcome.severity) == (Status.FAIL, Severity.HIGH)


def passing_dedicated() -> list[Observation]:
    codes = {
        "unknown-service": C.UNIMPLEMENTED,
        "unknown-method": C.UNIMPLEMENTED,
        "two-messages": C.OK,
        "malformed": C.INTERNAL,
    }
    return [
        judge_dedicated(ref, call, answer(codes[ref]))
        for ref, call in dedicated_plan(GET, b"", None, 0)
    ]


def test_err_001_passes_only_with_every_probe():
    scanned = judge_leaks([answer(C.UNIMPLEMENTED), answer(C.INTERNAL, details="internal error")])
    assert settled("ERR-001", [*passing_dedicated(), *scanned], unset=()).status is Status.PASS
    without_malformed = [o for o in passing_dedicated() if o.ref != "malformed"]
    outcome = settled("ERR-001", [*without_malformed, *scanned], unset=())
    assert outcome.status is Status.INCONCLUSIVE
    assert "ERR-001(malformed)" in outcome.summary


# -- ERR-002 ----------------------------------------------------------------------------


def test_unknown_and_data_loss_fail_and_are_counted():
    results = [
        answer(C.OK),
        answer(C.UNKNOWN, details="Exception calling application: boom"),
        answer(C.UNKNOWN, details="Unexpected error"),  # Node's wording for a thrown handler
        answer(C.DATA_LOSS),
    ]
    judged = judge_codes(results)
    assert [(o.status, o.ref) for o in judged] == [(Status.FAIL, "codes")] * 3
    assert judge_codes([answer(C.OK), answer(C.PERMISSION_DENIED)])[0].status is Status.PASS
    assert judge_codes([])[0].status is Status.SKIP


@pytest.mark.parametrize(
    "lost",
    [
        answer(C.UNAVAILABLE, details="upstream connect error or disconnect/reset before headers"),
        answer(C.UNAVAILABLE, details="Received http2 header with status: 503", headers=NGINX),
        answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded"),
    ],
    ids=["envoy", "nginx-503", "deadline"],
)
def test_codes_over_calls_that_never_reached_the_service_show_nothing(lost):
    # The recorded case: every call UNAVAILABLE, and "no UNKNOWN" passed.
    judged = judge_codes([lost, lost, lost])
    assert [(o.status, o.ref) for o in judged] == [(Status.INCONCLUSIVE, "codes")]
    mixed = judge_codes([lost, answer(C.PERMISSION_DENIED), answer(C.OK, b"\x0a\x00")])
    assert [o.status for o in mixed] == [Status.PASS]
    assert "1 more did not" in mixed[0].probe


def variants(*results) -> list[tuple[Call, object]]:
    labels = ("bad signature", "unknown kid", "expired", "wrong aud")
    return [(Call(label, GET, (b"",)), r) for label, r in zip(labels, results, strict=False)]


def test_identical_refusals_pass():
    same = answer(C.UNAUTHENTICATED, details="Jwt verification fails", headers=ENVOY)
    judged = judge_uniform("authn", "compared", variants(same, same, same, same))
    assert (judged.status, judged.ref) == (Status.PASS, "authn")


def test_envoy_jwt_authn_telling_why_fails():
    """Envoy's jwt_authn filter names each failure: an oracle for credential guessing."""
    judged = judge_uniform(
        "authn",
        "compared",
        variants(
            answer(C.UNAUTHENTICATED, details="Jwt verification fails"),
            answer(C.UNAUTHENTICATED, details="Jwks doesn't have key to match kid or alg from Jwt"),
            answer(C.UNAUTHENTICATED, details="Jwt is expired"),
            answer(C.UNAUTHENTICATED, details="Audiences in Jwt are not allowed"),
        ),
    )
    assert (judged.status, judged.severity) == (Status.FAIL, Severity.MEDIUM)


def test_same_text_different_code_or_detail_types_fails():
    plain = answer(C.UNAUTHENTICATED, details="unauthenticated")
    denied = answer(C.PERMISSION_DENIED, details="unauthenticated")
    typed = answer(
        C.UNAUTHENTICATED,
        details="unauthenticated",
        trailers=status_details(error_details_pb2.ErrorInfo(reason="TOKEN_EXPIRED")),
    )
    assert judge_uniform("authn", "x", variants(plain, denied)).status is Status.FAIL
    assert judge_uniform("authn", "x", variants(plain, typed)).status is Status.FAIL


def test_accepted_variants_are_left_out_and_two_refusals_are_needed():
    refused = answer(C.UNAUTHENTICATED, details="authentication required")
    judged = judge_uniform("authn", "x", variants(refused, answer(C.OK, b"\x0a\x00"), refused))
    assert judged.status is Status.PASS
    lonely = judge_uniform("authn", "x", variants(refused, answer(C.OK, b"\x0a\x00")))
    assert lonely.status is Status.INCONCLUSIVE
    assert "fewer than two refusals" in lonely.observed


@pytest.mark.parametrize("code", [C.UNAVAILABLE, C.DEADLINE_EXCEEDED])
def test_a_variant_that_never_reached_leaves_the_comparison_inconclusive(code):
    refused = answer(C.UNAUTHENTICATED, details="authentication required")
    judged = judge_uniform("authn", "x", variants(refused, answer(code), refused))
    assert judged.status is Status.INCONCLUSIVE
    assert "unknown kid: did not reach the service" in judged.observed


@pytest.mark.parametrize(
    "error",
    [
        answer(C.INTERNAL, details="Received http2 header with status: 400", headers=NGINX),
        answer(C.UNKNOWN, details="Received http2 header with status: 413", headers=NGINX),
        answer(C.UNKNOWN, details="Exception calling application: boom"),
        answer(C.RESOURCE_EXHAUSTED, details="rate limited"),
    ],
    ids=["nginx-400", "nginx-413", "python-crash", "throttled"],
)
def test_identical_errors_are_not_indistinguishable_refusals(error):
    # The recorded case: every variant answered the same error, and that passed as refusals.
    judged = judge_uniform("authn", "x", variants(error, error, error))
    assert judged.status is Status.INCONCLUSIVE
    proxy = error.statusless  # nginx answered: the variants never reached the service
    assert ("did not reach the service" if proxy else "errors, not refusals") in judged.observed
    refusal = answer(C.UNAUTHENTICATED, details="unauthenticated")
    told_apart = judge_uniform("authn", "x", variants(refusal, error, refusal))
    # The service's answers are told apart from its own error; a proxy's answer is not the
    # service's, so it leaves the comparison open instead.
    assert told_apart.status is (Status.INCONCLUSIVE if proxy else Status.FAIL)
    hidden = answer(C.NOT_FOUND, details="not found")
    assert judge_uniform("existence", "x", variants(hidden, hidden)).status is Status.PASS
    assert judge_uniform("authn", "x", variants(hidden, hidden)).status is Status.INCONCLUSIVE


def test_a_difference_outranks_a_variant_that_never_arrived():
    refusal = answer(C.UNAUTHENTICATED, details="unauthenticated")
    expired = answer(C.UNAUTHENTICATED, details="token expired")
    judged = judge_uniform("authn", "x", variants(refusal, answer(C.UNAVAILABLE), expired))
    assert judged.status is Status.FAIL


class Recorded:
    """A run whose shared plans were already made, and whose journal holds other calls."""

    def __init__(self, journal: list[CallResult], **memo: object) -> None:
        self.journal, self._memo = journal, memo

    def memo(self, key: str, compute: object) -> object:
        return self._memo[key]

    def calls(self) -> list[CallResult]:
        return list(self.journal)


def test_the_err_controls_judge_the_calls_they_planned_not_the_journal():
    # The recorded case: ERR-001/002 read the whole journal, so an UNKNOWN another control
    # provoked (or not, under -k) decided their verdict.
    other = answer(C.UNKNOWN, details="Traceback (most recent call last):", method=UPDATE)
    denied = answer(C.PERMISSION_DENIED, details="permission denied", method=GET)
    fuzzed = MethodRun(GET, [answer(C.INVALID_ARGUMENT, details="bad id")], healthy=answer(C.OK))
    run = Recorded(
        [other, denied],
        **{"authn-basic": [(Call("V1", GET, (b"",)), denied)], "authz-matrix": "no descriptors",
           "fuzz": [fuzzed]},
    )  # fmt: skip
    planned = shared_calls(run)  # type: ignore[arg-type]
    assert [r.code for r in planned] == [C.PERMISSION_DENIED, C.INVALID_ARGUMENT, C.OK]
    assert [o.status for o in judge_codes(planned)] == [Status.PASS]
    assert [o.status for o in judge_leaks(planned)] == [Status.PASS]


def base() -> Base:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = {
        "sub": "u-1",
        "aud": "https://charts.acme",
        "iss": "https://idp.acme",
        "exp": 2_000_000_000,
    }
    token = parse(sign(claims, key, "ES256", {"kid": "k1", "typ": "at+jwt"}))
    assert token is not None
    method = MethodInfo(GET, "acme.charts.v2.Charts", "GetChart", "a.B", "a.C", False, False)
    return Base(Principal("nurse"), token, method, b"\x0a\x01x", answer(C.OK))


def test_failure_variants_without_and_with_the_issuer_key():
    t = base()
    public_only = failure_variants(
        t, IssuerKeys((), None, None, None), "0000002a", now=1_700_000_000
    )
    assert [c.label for c in public_only] == ["bad signature", "unknown kid"]
    key = harness_key("ec")
    keys = IssuerKeys((), key, "ES256", "k1")
    calls = failure_variants(t, keys, "0000002a", now=1_700_000_000)
    assert [c.label for c in calls] == [
        "bad signature",
        "unknown kid",
        "expired",
        "wrong aud",
        "unknown user",
    ]
    assert all(
        c.method == GET and c.requests == (b"\x0a\x01x",) and c.principal is None for c in calls
    )
    tokens = {c.label: parse(dict(c.metadata)["authorization"].split(" ", 1)[1]) for c in calls}
    assert tokens["unknown kid"].header["kid"] == "unknown-0000002a"
    assert tokens["expired"].claims["exp"] == 1_700_000_000 - 3600
    assert tokens["wrong aud"].claims["aud"] == "https://other-0000002a.invalid"
    assert tokens["bad signature"].segments[:2] == t.token.segments[:2]
    # The catalogue's "unknown user": validly signed (minted), a subject nobody issued.
    stranger = tokens["unknown user"]
    assert stranger.claims["sub"] == "unknown-user-0000002a"
    assert {k: v for k, v in stranger.claims.items() if k != "sub"} == {
        k: v for k, v in t.token.claims.items() if k != "sub"
    }


def test_unknown_user_replaces_every_claim_that_names_the_user():
    claims = {"sub": "u-1", "email": "u1@acme.test", "oid": "0f3c", "roles": ["nurse"]}
    stranger = unknown_user(claims, "0000002a")
    assert stranger == {
        "sub": "unknown-user-0000002a",
        "email": "unknown-user-0000002a",
        "oid": "unknown-user-0000002a",
        "roles": ["nurse"],
    }


def test_minted_variants_without_the_issuer_key_say_which_key_enables_them():
    (skip,) = unminted(IssuerKeys((), None, None, None))
    assert (skip.status, skip.ref) == (Status.SKIP, "authn")
    assert "unknown user" in skip.probe
    assert "auth.issuer_private_key" in skip.expected
    assert unminted(IssuerKeys((), harness_key("ec"), "ES256", "k1")) == []
    # Beside a comparison that held, the unsent variants are recorded, not a gap.
    codes = judge_codes([answer(C.OK)])
    same = answer(C.UNAUTHENTICATED, details="x")
    held = [*codes, judge_uniform("authn", "x", variants(same, same)), skip]
    outcome = settled("ERR-002", held, unset=("authz.existence_hiding",))
    assert outcome.status is Status.PASS
    assert skip in outcome.observations


def test_an_accepted_unknown_user_is_named_and_left_out_of_the_comparison():
    """A stateless service accepts any validly signed token: not a refusal to compare."""
    same = answer(C.UNAUTHENTICATED, details="invalid token")
    sent = [*variants(same, same), (Call("unknown user", GET, (b"",)), answer(C.OK, b"\n\x01x"))]
    judged = judge_uniform("authn", "x", sent)
    assert judged.status is Status.PASS
    assert "accepted, so not compared: unknown user" in judged.observed


def test_no_jwt_to_compare_reads_as_what_is_needed():
    """The skip names what is needed, then why there is none (not "needs no principal...")."""
    why = "no principal has a JWT bearer token: every token is opaque (clinician)"
    skip = authn_unsent(why)
    assert (skip.status, skip.ref) == (Status.SKIP, "authn")
    assert skip.expected == f"a principal whose JWT bearer token is accepted ({why})"
    outcome = settled("ERR-002", [*judge_codes([answer(C.OK)]), skip])
    (probe,) = (p for p in outcome.probes if p.id == "ERR-002(authn)")
    assert probe.reason.startswith(
        "authentication failures compared: needs a principal whose JWT bearer token is accepted"
    )
    assert "needs no principal" not in outcome.summary
    assert authn_unsent("").expected == "a principal whose JWT bearer token is accepted"


def _catalogue() -> MethodCatalogue:
    f = descriptor_pb2.FileDescriptorProto(name="acme/charts.proto", package="acme.charts.v2")
    ref = f.message_type.add(name="ChartRef")
    ref.field.add(
        name="chart_id",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    s = f.service.add(name="Charts")
    for name in ("GetChart", "UpdateChart"):
        s.method.add(
            name=name, input_type=".acme.charts.v2.ChartRef", output_type=".acme.charts.v2.ChartRef"
        )
    return MethodCatalogue(descriptor_pb2.FileDescriptorSet(file=[f]), "acme")


def test_existence_plan_asks_foreign_and_absent_ids_on_a_read():
    catalogue = _catalogue()
    policy = Policy(
        catalogue,
        frozenset(),
        frozenset({UPDATE}),
        {GET: frozenset({"nurse"}), UPDATE: frozenset({"nurse"})},
        False,
    )
    templates = {GET: '{"chartId": "c-1"}', UPDATE: '{"chartId": "c-1"}'}
    ids = ({"nurse": ["c-1"]}, {"nurse": ["c-7", "c-8"], "ghost": ["c-9"]})
    groups = existence_plan(policy, {"nurse": Principal("nurse")}, ids, templates, "0000002a")
    assert [name for name, _ in groups] == ["nurse"]
    ((_, calls),) = groups
    cls = catalogue.message_class("acme.charts.v2.ChartRef")
    assert [(c.method, cls.FromString(c.requests[0]).chart_id) for c in calls] == [
        (GET, "c-7"),
        (GET, "c-8"),
        (GET, "nonexistent-0000002a"),
    ]
    hidden = answer(C.NOT_FOUND, details="chart not found")
    told = answer(C.PERMISSION_DENIED, details="not your chart")
    judged = judge_uniform("existence", "x", list(zip(calls, (told, told, hidden), strict=True)))
    assert (judged.status, judged.ref) == (Status.FAIL, "existence")


def test_existence_plan_with_a_numeric_id_asks_an_absent_number():
    """``{"chartNo": 12}``: foreign and nonexistent IDs go where the number was."""
    f = descriptor_pb2.FileDescriptorProto(name="acme/nums.proto", package="acme.nums.v1")
    ref = f.message_type.add(name="Ref")
    ref.field.add(
        name="chart_no",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    f.service.add(name="Nums").method.add(
        name="Get", input_type=".acme.nums.v1.Ref", output_type=".acme.nums.v1.Ref"
    )
    catalogue = MethodCatalogue(descriptor_pb2.FileDescriptorSet(file=[f]), "acme")
    path = "/acme.nums.v1.Nums/Get"
    policy = Policy(catalogue, frozenset(), frozenset(), {path: frozenset({"nurse"})}, False)
    ids = ({"nurse": ["12"]}, {"nurse": ["13"]})
    ((_, calls),) = existence_plan(
        policy, {"nurse": Principal("nurse")}, ids, {path: '{"chartNo": 12}'}, "0000002a"
    )
    cls = catalogue.message_class("acme.nums.v1.Ref")
    assert [cls.FromString(c.requests[0]).chart_no for c in calls] == [13, 2_000_000_042]


def test_err_002_passes_without_existence_hiding_and_needs_authn():
    codes = judge_codes([answer(C.OK)])
    same = answer(C.UNAUTHENTICATED, details="x")
    authn = judge_uniform("authn", "x", variants(same, same))
    assert (
        settled("ERR-002", [*codes, authn], unset=("authz.existence_hiding",)).status is Status.PASS
    )
    outcome = settled("ERR-002", codes, unset=("auth.principals", "authz.existence_hiding"))
    assert outcome.status is Status.INCONCLUSIVE
    (probe,) = (p for p in outcome.probes if p.id == "ERR-002(authn)")
    assert probe.enable == "auth.principals"


@pytest.mark.parametrize("client", ["grpcio", "grpc-go", "grpc-js"])
def test_codes_do_not_count_a_proxy_answer_whose_status_the_client_lost(client):
    # Recorded behind Debian's nginx: ERR-002's duplicate-authorization call (nginx's 400,
    # then RST_STREAM) came back UNKNOWN 'Stream removed (Data frame with END_STREAM flag
    # received)' once grpcio sent one message as unary-stream; it never reached the service.
    proxy = edges.lost(client)
    unknown = answer(C.UNKNOWN, details=proxy.details, headers=proxy.initial_metadata)
    for cut in (proxy, unknown):
        assert [o.status for o in judge_codes([cut, cut])] == [Status.INCONCLUSIVE]
        judged = judge_codes([cut, answer(C.PERMISSION_DENIED)])
        assert [o.status for o in judged] == [Status.PASS]
        assert "1 more did not" in judged[0].probe
    # A service's own UNKNOWN (a crash, with trailers) still fails.
    crash = answer(C.UNKNOWN, details="Exception calling application: boom")
    assert [o.status for o in judge_codes([crash])] == [Status.FAIL]
