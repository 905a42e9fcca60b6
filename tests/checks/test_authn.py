"""AUTHN-001 ... AUTHN-009 judged on recorded answers: no server.

Answers are shaped as other stacks send them (grpc-go and grpc-java interceptors, Node's
@grpc/grpc-js, an Envoy front proxy with its jwt_authn and RBAC filters): the judges decide
by status codes and response messages, never by the reference's own strings.
"""

from __future__ import annotations

import json
import random
import re

import grpc
import jwt
import pytest

from harness.catalogue import Severity
from harness.checks import registered
from harness.checks.authn import (
    AUTHN_001_PROBES,
    AUTHN_002_PROBES,
    AUTHN_003_PROBES,
    AUTHN_004_PROBES,
    AUTHN_005_PROBES,
    AUTHN_006_PROBES,
    AUTHN_007_PROBES,
    AUTHN_008_PROBES,
    AUTHN_009_PROBES,
    LOWEST_ACR,
    OPAQUE_003,
    OVERSIZE,
    Fixture,
    StreamVerdict,
    algorithm_forgeries,
    binding_fixtures,
    cross_issuer_token,
    decided_again,
    every_stream_tested,
    fixture_needs,
    fixture_plan,
    forgery_calls,
    forgery_plan,
    fuzzed_tokens,
    header_forgeries,
    judge_basic,
    judge_basics,
    judge_held_fresh,
    judge_held_late,
    judge_lifetime,
    judge_opaque,
    judge_public_key,
    judge_refusal,
    judge_refusals,
    judge_step_up,
    judge_stream,
    judge_unaccepted,
    lookalike,
    mfa_fixtures,
    minted,
    mutation_calls,
    not_a_stream,
    opaque_forgeries,
    step_up_plan,
    stream_unsent,
    tamper_forgeries,
    time_fixtures,
    type_fixtures,
)
from harness.config import Config
from harness.descriptors import MethodInfo
from harness.outcome import Observation, Probe, Status
from harness.plans.calls import Call, bearer
from harness.plans.jwks import discovered_jwks_uri
from harness.plans.tokens import (
    Base,
    Held,
    PublicKeyForms,
    basic_plan,
    basic_variants,
    issuer_public_key,
    jwks_key_forms,
    jwt_bases,
    v7_source,
    variant_ref,
)
from harness.principals import Principal
from harness.target import parse_target
from harness.tokens import IssuerKeys, harness_key, parse, sign
from tests.checks.edges import CLIENTS, LOST, lost, refusal
from tests.checks.recorded import answer, refs, settled

C = grpc.StatusCode
PATH = "/pkg.Records/Get"
ADMIN_ONLY = "/pkg.Records/Update"
METHOD = MethodInfo(PATH, "pkg.Records", "Get", "pkg.GetRequest", "pkg.Record", False, False)
# How other stacks refuse (status message, response headers): none of them is ours.
GO_UNAUTHENTICATED = "transport: missing authorization metadata"
JAVA_UNAUTHENTICATED = "Invalid JWT: signature verification failed"
NODE_UNAUTHENTICATED = "No credentials provided"
ENVOY_JWT_MISSING = "Jwt is missing"
ENVOY_RBAC = "RBAC: access denied"
ENVOY_HEADERS = (("server", "envoy"), ("x-envoy-upstream-service-time", "1"))
ENVOY_UPSTREAM = (
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
)
RECORD = b"\n\x06p-0001\x12\x05Alice"


def token(**claims) -> str:
    now = 1_700_000_000
    body = {"sub": "u-1", "iss": "https://idp.test", "aud": "api", "iat": now, "exp": now + 900}
    body.update(claims)
    return sign(body, harness_key("ec"), "ES256", {"kid": "idp-1", "typ": "at+jwt"})


def base(accepted: bool = True, **claims) -> Base:
    raw = token(**claims)
    parsed = parse(raw)
    assert parsed is not None
    control = answer(C.OK, RECORD) if accepted else answer(C.UNAUTHENTICATED, details="expired")
    return Base(Principal("admin"), parsed, METHOD, b"\n\x06p-0001", control)


#: An opaque bearer token, as an IdP that answers introspection issues it (no dots, no JSON).
OPAQUE = "tok_4q7ZyR0b9XkP2mWc8LsT1vHnJ6dGfE3a"
#: grpc-go's interceptors (examples/features/authentication): a token that fails its check,
#: and metadata missing altogether, which that example answers INVALID_ARGUMENT.
GO_INVALID_TOKEN = "invalid token"
GO_MISSING_METADATA = "missing metadata"


def held(name: str = "clinician", accepted: bool = True) -> Held:
    """An opaque token T of ``name`` (the token is read from its principal when needed)."""
    control = answer(C.OK, RECORD) if accepted else answer(C.UNAUTHENTICATED, details="invalid")
    return Held(_Opaque(name), None, METHOD, b"\n\x06p-0001", control)


class _Opaque(Principal):
    """A principal whose token source is an opaque string (no file: a test stand-in)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, token_env="UNUSED")

    def token(self) -> str:
        return OPAQUE


def call(label: str = "V1 no authorization", metadata=()) -> Call:
    return Call(label, PATH, (b"",), None, tuple(metadata))


# -- every control's probes are the catalogue's letters ---------------------------------

DECLARED = {
    "AUTHN-001": (AUTHN_001_PROBES, ["V1", "V2", "V3", "V4", "V5", "V6", "V7", "V8", "V9"]),
    "AUTHN-002": (AUTHN_002_PROBES, ["a", "b", "c", "d"]),
    "AUTHN-003": (AUTHN_003_PROBES, ["a", "b", "c", "d"]),
    "AUTHN-004": (AUTHN_004_PROBES, ["kid-path", "kid-sql", "kid-odd", "jku-x5u", "jwk", "x5c"]),
    "AUTHN-005": (AUTHN_005_PROBES, ["a", "b", "c", "d", "e"]),
    "AUTHN-006": (AUTHN_006_PROBES, ["a", "b", "c", "d"]),
    "AUTHN-007": (AUTHN_007_PROBES, ["a", "b", "c"]),
    "AUTHN-008": (AUTHN_008_PROBES, ["a", "b"]),
    "AUTHN-009": (AUTHN_009_PROBES, ["stream"]),
}
#: Only what the catalogue makes optional: (e) "optional wait mode", (c) "when set".
OPTIONAL = {("AUTHN-005", "e"), ("AUTHN-007", "c")}


@pytest.mark.parametrize("control_id", sorted(DECLARED))
def test_declared_probes_are_the_catalogue_letters(control_id):
    probes, letters = DECLARED[control_id]
    assert registered()[control_id].probes == probes
    assert [p.ref for p in probes] == letters
    optional = {(control_id, p.ref) for p in probes if not p.required}
    assert optional == {o for o in OPTIONAL if o[0] == control_id}


def test_probe_needs_name_the_keys_that_enable_them():
    needs = {
        f"{cid}({p.ref})": p.needs
        for cid, (probes, _) in DECLARED.items()
        for p in probes
        if p.needs
    }
    assert needs["AUTHN-002(b)"] == ("auth.jwks_file", "auth.jwks_uri", "auth.issuer")
    assert needs["AUTHN-005(e)"] == ("auth.max_wait_s",)
    assert needs["AUTHN-007(c)"] == ("auth.require_typ",)
    for probe in ("AUTHN-006(a)", "AUTHN-006(b)", "AUTHN-006(c)", "AUTHN-005(b)"):
        assert "auth.issuer_private_key" in needs[probe]
        assert any(k.startswith("auth.fixtures.") for k in needs[probe])
    assert "AUTHN-006(d)" not in needs  # a harness key stands in for another issuer's


# -- AUTHN-001 --------------------------------------------------------------------------


def test_basic_variants_and_plan_are_pure_and_filed():
    variants = basic_variants(random.Random(7), "T")
    assert variants == basic_variants(random.Random(7), "T")
    assert [variant_ref(label) for label, _ in variants] == [
        "V1", "V2", "V3", "V4", "V5", "V6", "V7", "V7",
    ]  # fmt: skip
    assert [variant_ref(label) for label, _ in basic_variants(random.Random(7), None)] == [
        "V1", "V2", "V3", "V4", "V5", "V6",
    ]  # fmt: skip
    least, admin = Principal("least-privileged"), Principal("admin")
    methods = [
        (PATH, b"", frozenset({"least-privileged", "admin"})),
        (ADMIN_ONLY, b"", frozenset({"admin"})),
    ]
    plan = basic_plan(methods, variants, (least, admin))
    v8 = [c for c in plan if variant_ref(c.label) == "V8"]
    assert [c.method for c in v8] == [ADMIN_ONLY, ADMIN_ONLY]  # only where admin alone may
    assert all(c.retry_exhausted is (variant_ref(c.label) != "V6") for c in plan)
    assert {variant_ref(c.label) for c in plan} <= {p.ref for p in AUTHN_001_PROBES}
    assert not [c for c in basic_plan(methods, variants, None) if c.label.startswith("V8")]


@pytest.mark.parametrize(
    ("label", "result", "status", "severity"),
    [
        (
            "V1 no authorization",
            answer(C.UNAUTHENTICATED, details=GO_UNAUTHENTICATED),
            "PASS",
            None,
        ),
        ("V3 'Bearer abc'", answer(C.UNAUTHENTICATED, details=JAVA_UNAUTHENTICATED), "PASS", None),
        (
            "V2 'Bearer' with nothing after it",
            answer(C.UNAUTHENTICATED, details=ENVOY_JWT_MISSING, headers=ENVOY_HEADERS),
            "PASS",
            None,
        ),
        ("V1 no authorization", answer(C.OK, RECORD), "FAIL", Severity.CRITICAL),
        # Refused by its code, but a record came with it: data is data.
        ("V4 Basic credentials", answer(C.UNAUTHENTICATED, RECORD), "FAIL", Severity.CRITICAL),
        # Envoy's RBAC filter, or any stack's PERMISSION_DENIED: wrong semantics, low.
        (
            "V1 no authorization",
            answer(C.PERMISSION_DENIED, details=ENVOY_RBAC, headers=ENVOY_HEADERS),
            "FAIL",
            Severity.LOW,
        ),
        # A Node handler that throws "Unauthorized": UNKNOWN, whatever the text says.
        (
            "V5 three random segments",
            answer(C.UNKNOWN, details="Unauthorized"),
            "FAIL",
            Severity.MEDIUM,
        ),
        (
            "V5 three random segments",
            answer(C.INTERNAL, details="jwt malformed"),
            "FAIL",
            Severity.MEDIUM,
        ),
        ("V6 12 KiB random token", answer(C.RESOURCE_EXHAUSTED), "PASS", None),
        ("V3 'Bearer abc'", answer(C.RESOURCE_EXHAUSTED), "FAIL", Severity.MEDIUM),
        # Never reached the service: no verdict, and never a refusal.
        (
            "V1 no authorization",
            answer(C.UNAVAILABLE, details=ENVOY_UPSTREAM, headers=ENVOY_HEADERS),
            "INCONCLUSIVE",
            None,
        ),
        ("V9 mutated token", answer(C.DEADLINE_EXCEEDED), "INCONCLUSIVE", None),
        # V8: the lower privilege applied is a pass; an admin-only success is critical.
        ("V8 two authorization entries", answer(C.PERMISSION_DENIED), "PASS", None),
        ("V8 two authorization entries", answer(C.UNAUTHENTICATED), "PASS", None),
        ("V8 two authorization entries", answer(C.OK, RECORD), "FAIL", Severity.CRITICAL),
    ],
)
def test_judge_basic(label, result, status, severity):
    observation = judge_basic(call(label), result)
    assert observation.status is Status(status)
    assert observation.severity is severity
    assert observation.ref == label.split()[0]
    assert observation.request_id == result.request_id


@pytest.mark.parametrize("client", CLIENTS)
def test_v8_refused_by_a_proxy_in_front_is_refused(client):
    # nginx answers two authorization headers with HTTP 400 itself (INTERNAL to every
    # client): the duplicate credential never reached the service (before: FAIL medium).
    observation = judge_basic(call("V8 two authorization entries"), refusal(client, 400, PATH))
    assert (observation.status, observation.severity) == (Status.PASS, None)
    assert "HTTP 400 from a proxy in front of the service" in observation.observed
    # Its rate limit is no refusal of the duplicate header: nothing judged.
    throttled = judge_basic(call("V8 two authorization entries"), refusal(client, 429, PATH))
    assert throttled.status is Status.INCONCLUSIVE
    # Elsewhere a proxy's 400 shows nothing about the credential either.
    other = judge_basic(call("V3 'Bearer abc'"), refusal(client, 400, PATH))
    assert other.status is Status.INCONCLUSIVE


@pytest.mark.parametrize("client", sorted(LOST))
def test_v8_answered_by_a_proxy_whose_status_the_client_lost_is_refused(client):
    # grpcio loses nginx's 400 about one time in ten (the proxy resets the request stream
    # after its answer): still no gRPC answer, no data, never the service's.
    observation = judge_basic(call("V8 two authorization entries"), lost(client, PATH))
    assert observation.status is Status.PASS
    assert "its status lost" in observation.observed


def test_unplanned_v7_v8_say_what_they_need_and_leave_authn_001_inconclusive():
    sent = [(call(f"V{n} x"), answer(C.UNAUTHENTICATED)) for n in range(1, 7)]
    observations = judge_basics(sent)
    by = refs(observations)
    assert by["V7"] == by["V8"] == [Status.SKIP]
    v9 = [judge_basic(c, answer(C.UNAUTHENTICATED)) for c in mutation_calls(base(), ["a.b.c"])]
    out = settled("AUTHN-001", observations + v9, unset=())
    assert out.status is Status.INCONCLUSIVE
    assert "AUTHN-001(V7)" in out.summary
    assert "AUTHN-001(V8)" in out.summary
    assert "only admin may call" in out.summary


def test_authn_001_passes_only_when_v1_to_v9_all_ran():
    labels = [f"V{n} x" for n in range(1, 10)]
    observations = [judge_basic(call(lb), answer(C.UNAUTHENTICATED)) for lb in labels]
    assert settled("AUTHN-001", observations, unset=()).status is Status.PASS
    fail = judge_basic(call("V8 x"), answer(C.OK, RECORD))
    out = settled("AUTHN-001", [*observations, fail], unset=())
    assert (out.status, out.severity) == (Status.FAIL, Severity.CRITICAL)


def test_fuzzed_tokens_are_mutations_repeatable_by_seed():
    t = token()
    tokens = fuzzed_tokens(t, 20, 1234)
    assert len(tokens) == 20
    assert t not in tokens
    assert tokens == fuzzed_tokens(t, 20, 1234)
    assert all(variant_ref(c.label) == "V9" for c in mutation_calls(base(), tokens))


def test_v7_moves_only_a_token_shown_accepted():
    """V7's refusal proves something only if the same token is accepted where it belongs."""
    refused_t, accepted_t = held("billing", accepted=False), held("clinician")
    assert v7_source([refused_t, accepted_t]) is accepted_t
    assert v7_source([refused_t]) is None
    unreached = Held(
        _Opaque("auditor"), None, METHOD, b"", answer(C.UNAVAILABLE, details=ENVOY_UPSTREAM)
    )
    assert v7_source([unreached]) is None  # never reached the service: not shown accepted


def test_v7_without_an_accepted_token_is_inconclusive_not_passed():
    # No token was accepted, so no V7 was planned: the other variants' refusals are all
    # there, and V7 must not read as "refused" (nor as a config gap: tokens exist).
    sent = [
        (call(f"V{n} x"), answer(C.UNAUTHENTICATED, details=GO_INVALID_TOKEN))
        for n in (1, 2, 3, 4, 5, 6, 8, 9)
    ]
    observations = judge_basics(sent, [held(accepted=False)])
    assert refs(observations)["V7"] == [Status.INCONCLUSIVE]
    (v7,) = (o for o in observations if o.ref == "V7")
    assert v7.request_id is not None  # the control call that was refused
    out = settled("AUTHN-001", observations, unset=())
    assert out.status is Status.INCONCLUSIVE
    assert {p.id: p.status for p in out.probes}["AUTHN-001(V7)"] is Status.INCONCLUSIVE
    # With the token shown accepted, V7 was sent and judged like the others.
    v7_sent = [(call("V7 valid token under x-authorization"), answer(C.UNAUTHENTICATED))]
    assert settled("AUTHN-001", judge_basics(sent + v7_sent, [held()]), unset=()).status is (
        Status.PASS
    )


def test_grpc_go_answers_to_authn_001_are_judged_by_their_codes():
    """grpc-go's auth example: INVALID_ARGUMENT for no metadata, 16 "invalid token" else."""
    missing = judge_basic(
        call("V1 no authorization"), answer(C.INVALID_ARGUMENT, details=GO_MISSING_METADATA)
    )
    assert (missing.status, missing.severity) == (Status.FAIL, Severity.MEDIUM)
    bad = judge_basic(
        call("V5 three random base64url segments"),
        answer(C.UNAUTHENTICATED, details=GO_INVALID_TOKEN),
    )
    assert bad.status is Status.PASS


def test_v9_mutates_an_opaque_token_too():
    tokens = fuzzed_tokens(OPAQUE, 20, 99)
    assert len(tokens) == 20
    assert OPAQUE not in tokens
    assert tokens == fuzzed_tokens(OPAQUE, 20, 99)
    (c,) = mutation_calls(held(), tokens[:1])
    assert (variant_ref(c.label), c.method, c.metadata) == ("V9", PATH, bearer(tokens[0]))


# -- forgeries: AUTHN-002 ... AUTHN-004 -------------------------------------------------


def test_refusal_of_a_forgery():
    c = forgery_calls(base(), [("a", "alg 'none'", "x.y.")])[0][1]
    assert judge_refusal(
        "a", c, answer(C.UNAUTHENTICATED, details=NODE_UNAUTHENTICATED)
    ).status is (Status.PASS)
    accepted = judge_refusal("a", c, answer(C.OK, RECORD))
    assert (accepted.status, accepted.severity, accepted.ref) == (
        Status.FAIL,
        Severity.CRITICAL,
        "a",
    )
    assert judge_refusal("a", c, answer(C.RESOURCE_EXHAUSTED)).status is Status.FAIL
    assert judge_refusal("a", c, answer(C.UNAVAILABLE)).status is Status.INCONCLUSIVE


def test_an_oversized_forgery_may_meet_the_metadata_limit():
    big = "k" * (OVERSIZE + 1)
    ((ref, c),) = forgery_calls(base(), [("kid-odd", "8 KiB kid", big)])
    assert ref == "kid-odd"
    assert not c.retry_exhausted
    assert judge_refusal(ref, c, answer(C.RESOURCE_EXHAUSTED)).status is Status.PASS
    assert "(from admin's token)" in c.label
    assert c.metadata == bearer(big)


def test_an_unaccepted_base_leaves_every_probe_inconclusive():
    observations = judge_unaccepted(base(accepted=False), ["a", "b"])
    assert refs(observations) == {"a": [Status.INCONCLUSIVE], "b": [Status.INCONCLUSIVE]}
    assert observations[0].request_id is not None


def test_algorithm_forgeries_cover_a_to_d():
    forms = [("public key PEM", b"-----BEGIN PUBLIC KEY-----")]
    forged = algorithm_forgeries(base().token, forms)
    assert {ref for ref, _, _ in forged} == {"a", "b", "c", "d"}
    assert len([f for f in forged if f[0] == "b"]) == 3  # HS256/384/512 per form
    algs = {ref: set() for ref in "abcd"}
    for ref, _, tok in forged:
        algs[ref].add(jwt.get_unverified_header(tok)["alg"])
    assert algs == {
        "a": {"none", "None", "NONE", "nOnE"},
        "b": {"HS256", "HS384", "HS512"},
        "c": {"RS256", "PS256"},  # T is ES256: the other family
        "d": {"RS1", "XYZ"},
    }
    assert {ref for ref, _, _ in algorithm_forgeries(base().token, [])} == {"a", "c", "d"}


def test_without_the_issuer_public_key_2b_says_why():
    (skip,) = judge_public_key(PublicKeyForms())
    assert (skip.ref, skip.status) == ("b", Status.SKIP)
    (broken,) = judge_public_key(PublicKeyForms(source="https://idp.test/jwks", problem="HTTP 503"))
    assert (broken.ref, broken.status) == ("b", Status.INCONCLUSIVE)
    assert judge_public_key(PublicKeyForms((("PEM", b"k"),), "auth.jwks_file")) == []
    others = [Observation("x", "16", "16", Status.PASS).of(r) for r in "acd"]
    unset = ("auth.jwks_file", "auth.jwks_uri", "auth.issuer")
    out = settled("AUTHN-002", [*others, skip], unset=unset)
    assert out.status is Status.INCONCLUSIVE
    (b,) = (p for p in out.probes if p.id == "AUTHN-002(b)")
    assert b.enable == "auth.jwks_file or auth.jwks_uri or auth.issuer"


def test_tamper_forgeries_cover_a_to_d_and_drop_no_ops():
    b = base(roles=["billing"])
    forged = tamper_forgeries(b.token, token(), "n0nce")
    assert {ref for ref, _, _ in forged} == {"a", "b", "c", "d"}
    assert any("roles raised to admin" in label for _, label, _ in forged)
    same = b.token.segments
    unchanged = tamper_forgeries(b.token, f"{same[0]}.{same[1]}.{same[2][:-8]}", "n0nce")
    assert "signature truncated" not in {label for _, label, _ in unchanged}


def test_opaque_forgeries_alter_the_whole_token_and_make_a_lookalike():
    forged = opaque_forgeries(OPAQUE, 7)
    assert [ref for ref, _, _ in forged] == ["b", "b", "b", "c"]
    tokens = [tok for _, _, tok in forged]
    assert tokens[0] == OPAQUE[:-8]
    assert all(tok != OPAQUE for tok in tokens)
    assert [len(t) for t in tokens[1:]] == [len(OPAQUE)] * 3
    shaped = tokens[3]  # same length, and the same kind of character at every position
    for a, b in zip(OPAQUE, shaped, strict=True):
        assert (a.isdigit(), a.islower(), a.isupper()) == (b.isdigit(), b.islower(), b.isupper())
        assert a.isalnum() or a == b  # punctuation (the "_" of "tok_") kept
    assert forged == opaque_forgeries(OPAQUE, 7)
    assert lookalike("__", random.Random(1)) == "__"  # nothing to change: no variant
    short = opaque_forgeries("x", 1)  # nothing to truncate: no empty token is sent
    assert all(tok and tok != "x" for _, _, tok in short)
    assert not [label for _, label, _ in short if "truncated" in label]
    assert set(OPAQUE_003) == {"b", "c"}


def test_an_opaque_t_runs_only_the_probes_that_need_no_jwt():
    refs_002 = [p.ref for p in AUTHN_002_PROBES]

    def never(base):  # a JWT variant: must not be made from an opaque T
        raise AssertionError("no JWT forgery from an opaque token")

    plan, skipped = forgery_plan([held()], refs_002, never)
    assert plan == []
    assert refs(skipped) == {r: [Status.SKIP] for r in refs_002}  # once per probe
    assert skipped[0].probe == "opaque tokens of clinician"
    out = settled("AUTHN-002", skipped, unset=())
    assert out.status is Status.SKIP
    assert "opaque tokens of clinician: needs a JWT bearer token T" in out.summary

    refs_003 = [p.ref for p in AUTHN_003_PROBES]
    plan, skipped = forgery_plan(
        [held()], refs_003, never, (lambda t: opaque_forgeries(t, 3), OPAQUE_003)
    )
    assert sorted({ref for ref, _ in plan}) == ["b", "c"]
    assert all(c.metadata[0][0] == "authorization" for _, c in plan)
    assert refs(skipped) == {"a": [Status.SKIP], "d": [Status.SKIP]}
    # grpc-go's interceptor refuses every altered or lookalike token: (b) and (c) hold, and
    # (a) and (d) say why they did not run: INCONCLUSIVE, never PASS.
    sent = [(ref, c, answer(C.UNAUTHENTICATED, details=GO_INVALID_TOKEN)) for ref, c in plan]
    out = settled("AUTHN-003", skipped + judge_refusals(sent), unset=())
    assert out.status is Status.INCONCLUSIVE
    assert "AUTHN-003(a)" in out.summary
    assert "AUTHN-003(d)" in out.summary
    # A service that matches a token's prefix accepts the truncated one: critical.
    truncated = next(c for ref, c in plan if "truncated" in c.label)
    accepted = judge_refusal("b", truncated, answer(C.OK, RECORD))
    assert (accepted.status, accepted.severity) == (Status.FAIL, Severity.CRITICAL)


def test_a_refused_opaque_t_leaves_its_probes_inconclusive():
    plan, observations = forgery_plan(
        [held(accepted=False)],
        ["a", "b", "c", "d"],
        lambda b: [],
        (lambda t: opaque_forgeries(t, 1), OPAQUE_003),
    )
    assert plan == []
    skip, unsure = [Status.SKIP], [Status.INCONCLUSIVE]
    assert refs(observations) == {"a": skip, "d": skip, "b": unsure, "c": unsure}


def test_mixed_jwt_and_opaque_tokens_forge_from_the_jwt():
    jwt_t = base()
    plan, skipped = forgery_plan([jwt_t, held()], ["a"], lambda b: [("a", "alg none", "x.y.")])
    assert [(ref, c.label) for ref, c in plan] == [("a", "alg none (from admin's token)")]
    assert refs(skipped) == {"a": [Status.SKIP]}
    (skip,) = judge_opaque(["clinician", "billing"], ["a"])
    assert (skip.probe, skip.status) == ("opaque tokens of clinician, billing", Status.SKIP)
    assert judge_opaque([], ["a"]) == []  # every token a JWT: nothing to say
    bases_, why = jwt_bases([held()], "")
    assert bases_ == []
    assert why == "no principal has a JWT bearer token: every token is opaque (clinician)"
    assert [b.principal.name for b in jwt_bases([jwt_t, held()], "")[0]] == ["admin"]


def test_header_forgeries_cover_every_bullet():
    forged = header_forgeries(base().token, "n0nce", harness_key("ec"))
    assert [ref for ref, _, _ in forged] == [
        "kid-path", "kid-sql", "kid-odd", "kid-odd", "jku-x5u", "jku-x5u", "jwk", "x5c",
    ]  # fmt: skip
    headers = {label: jwt.get_unverified_header(tok) for _, label, tok in forged}
    assert headers["jku to a canary host"]["jku"] == "https://n0nce.canary.invalid/jwks.json"
    assert len(headers["8 KiB kid"]["kid"]) == 8192


def test_forgery_judges_from_go_node_and_envoy_answers():
    forged = forgery_calls(base(), [("a", "alg 'none'", "x.y."), ("jwk", "jwk", "x.y.z")])
    answers = [
        answer(C.UNAUTHENTICATED, details="token is unverifiable: alg none not allowed"),
        answer(C.UNAUTHENTICATED, details=ENVOY_JWT_MISSING, headers=ENVOY_HEADERS),
    ]
    sent = [(ref, c, r) for (ref, c), r in zip(forged, answers, strict=True)]
    assert refs(judge_refusals(sent)) == {"a": [Status.PASS], "jwk": [Status.PASS]}


def test_jwks_key_forms_from_a_published_jwks():
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(harness_key("rsa").public_key()))
    forms = jwks_key_forms({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, rsa_jwk]})
    names = [name for name, _ in forms]
    assert names[0] == "public key PEM"
    assert forms[0][1].startswith(b"-----BEGIN PUBLIC KEY")
    assert json.loads(forms[3][1])["kty"] == "RSA"  # the only signing key
    for document in ({"keys": []}, {"keys": [{"kty": "oct", "k": "eA"}]}, ["not", "a", "jwks"]):
        with pytest.raises(ValueError, match="JWKS"):
            jwks_key_forms(document)
    discovery = "https://idp.test/.well-known/openid-configuration"
    found = discovered_jwks_uri(discovery, {"jwks_uri": "https://idp.test/keys"})
    assert found == "https://idp.test/keys"
    with pytest.raises(ValueError, match=f"{discovery}: no jwks_uri"):
        discovered_jwks_uri(discovery, {"issuer": "https://idp.test"})


def test_2b_keys_its_hmac_with_the_key_whose_kid_is_t_s():
    """A rotating IdP publishes two keys: T names the second; the first is not its key."""
    old = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(harness_key("rsa").public_key()))}
    new = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(harness_key("ec").public_key()))
    document = {"keys": [{**old, "kid": "2024-old"}, {**new, "kid": "2025-new"}]}
    forms = jwks_key_forms(document, "2025-new")
    assert json.loads(forms[3][1])["kty"] == "EC"  # T's key, not the first one
    assert json.loads(jwks_key_forms(document, "2024-old")[3][1])["kty"] == "RSA"
    # No key with T's kid, or T names none: with one signing key, that one (an encryption
    # key beside it is no candidate); with several, which one signs T is unknown.
    single = {"keys": [{**new, "kid": "only"}, {**old, "kid": "enc", "use": "enc"}]}
    assert json.loads(jwks_key_forms(single, "rotated-away")[3][1])["kty"] == "EC"
    assert json.loads(jwks_key_forms(single, None)[3][1])["kty"] == "EC"
    with pytest.raises(ValueError, match="2 signing keys and none has T's kid 'gone'"):
        jwks_key_forms(document, "gone")
    with pytest.raises(ValueError, match="T names no kid"):
        jwks_key_forms(document, None)
    with pytest.raises(ValueError, match="kid 'sym' is no RSA or EC signing key"):
        jwks_key_forms({"keys": [{"kty": "oct", "k": "eA", "kid": "sym"}, new]}, "sym")


def test_2b_unknown_key_is_inconclusive_and_names_why():
    (unknown,) = judge_public_key(
        PublicKeyForms(source="auth.jwks_file jwks.json", problem="2 signing keys and ...")
    )
    assert (unknown.ref, unknown.status) == ("b", Status.INCONCLUSIVE)
    assert "2 signing keys" in unknown.observed


class _StubRun:
    """What issuer_public_key reads from a Run: config, target, issuer keys and memo."""

    def __init__(self, **auth) -> None:
        self.config = Config({"auth": auth})
        self.spec = parse_target("records.test:443")

    def issuer_keys(self) -> IssuerKeys:
        return IssuerKeys((), None, None, None)

    def memo(self, key, compute):
        return compute()


def test_the_issuer_public_key_is_discovered_from_auth_issuer():
    from targets.issuer_http import IssuerEndpoint

    jwks = {"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(harness_key("ec").public_key()))]}
    endpoint = IssuerEndpoint("https://idp.test", jwks)
    try:
        found = issuer_public_key(_StubRun(issuer=endpoint.base))  # type: ignore[arg-type]
        direct = issuer_public_key(_StubRun(jwks_uri=endpoint.jwks_uri))  # type: ignore[arg-type]
        missing = issuer_public_key(_StubRun(jwks_uri=endpoint.base + "/nope"))  # type: ignore[arg-type]
    finally:
        endpoint.stop()
    assert (found.source, len(found.forms)) == (endpoint.jwks_uri, 4)
    assert direct.forms == found.forms
    assert (missing.forms, missing.problem) == ((), f"{endpoint.base}/nope: HTTP 404")
    assert issuer_public_key(_StubRun()) == PublicKeyForms()  # type: ignore[arg-type]
    assert issuer_public_key(_StubRun(issuer="urn:idp")) == PublicKeyForms()  # type: ignore[arg-type]


def test_2b_reads_the_jwks_file_before_the_uri_as_key_001_does(tmp_path):
    """One resolution order (harness.plans.jwks): the file first; the URI is not fetched."""
    mine = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(harness_key("ec").public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**mine, "kid": "idp-1", "d": "cHJpdmF0ZQ"}]}))
    run = _StubRun(jwks_file=path, jwks_uri="http://127.0.0.1:9/jwks.json")
    found = issuer_public_key(run, "idp-1")  # type: ignore[arg-type]
    assert (found.source, found.problem, len(found.forms)) == ("auth.jwks_file jwks.json", "", 4)
    # A published private member is not what the HMAC is keyed with: the public key is.
    assert found.forms[0][1].startswith(b"-----BEGIN PUBLIC KEY")


# -- fixtures: AUTHN-005 ... AUTHN-008 --------------------------------------------------


def test_fixture_plan_skips_what_it_cannot_have_and_files_the_rest():
    fixtures = time_fixtures(60)
    plan, skipped = fixture_plan(base(), [(fixtures[0], "e.x.p"), (fixtures[1], None)])
    assert [(ref, c.label) for ref, c in plan] == [("b", "expired token (admin)")]
    (skip,) = skipped
    assert (skip.ref, skip.status) == ("c", Status.SKIP)
    assert skip.expected == "auth.fixtures.nbf_future or auth.issuer_private_key"


def test_minted_fixtures_change_t_as_their_letter_says():
    keys = IssuerKeys((), harness_key("ec"), "ES256", "idp-1")
    b, now = base(), 1_800_000_000

    def claims(fixture: Fixture):
        tok = minted(keys, fixture, b, now)
        assert tok is not None
        return jwt.decode(tok, options={"verify_signature": False}), jwt.get_unverified_header(tok)

    expired, nbf, no_exp = (claims(f)[0] for f in time_fixtures(60))
    assert expired["exp"] == now - 360
    assert nbf["nbf"] == now + 600
    assert "exp" not in no_exp
    wrong_aud, no_aud, realm, _ = (claims(f)[0] for f in binding_fixtures("n0nce"))
    assert wrong_aud["aud"] == "https://other-n0nce.invalid"
    assert "aud" not in no_aud
    assert realm["iss"] == "https://idp.test/realms/other-n0nce"
    id_token, refresh, other = (claims(f)[1]["typ"] for f in type_fixtures({}, "at+jwt"))
    assert (id_token, refresh, other) == ("JWT", "refresh+jwt", "JWT")
    assert [f.ref for f in type_fixtures({}, None)] == ["a", "b"]
    no_mfa, mfa = (claims(f)[0]["amr"] for f in mfa_fixtures(["otp"]))
    assert (no_mfa, mfa) == (["pwd"], ["pwd", "otp"])
    assert minted(IssuerKeys((), None, None, None), time_fixtures(60)[0], b, now) is None


def test_cross_issuer_token_keeps_iss_under_another_kid():
    tok = cross_issuer_token(base(), "n0nce")
    assert jwt.get_unverified_header(tok)["kid"] == "other-issuer-n0nce"
    assert jwt.decode(tok, options={"verify_signature": False})["iss"] == "https://idp.test"


@pytest.mark.parametrize(
    ("claims", "limit", "status", "severity"),
    [
        ({}, 900, Status.PASS, None),
        ({"exp": 1_700_000_000 + 7200}, 3600, Status.FAIL, Severity.MEDIUM),
        ({"exp": None}, 3600, Status.FAIL, Severity.CRITICAL),
        ({"iat": None}, 3600, Status.INCONCLUSIVE, None),  # no iat: nothing to measure
    ],
)
def test_judge_lifetime(claims, limit, status, severity):
    t = base().token
    parsed = type(t)(t.header, {k: v for k, v in {**t.claims, **claims}.items() if v}, t.segments)
    observation = judge_lifetime("admin", parsed, limit)
    assert (observation.ref, observation.status, observation.severity) == ("a", status, severity)


def test_an_opaque_token_has_no_lifetime_to_read():
    skipped = judge_lifetime("clinician, billing", None, 900)
    assert (skipped.ref, skipped.status) == ("a", Status.SKIP)
    assert skipped.probe == "lifetime of the opaque token(s) of clinician, billing"
    # Every token opaque: (a) did not run, whatever the fixtures showed.
    plan, _ = fixture_plan(held(), [(f, "configured-opaque-fixture") for f in time_fixtures(60)])
    sent = [(ref, c, answer(C.UNAUTHENTICATED, details=GO_INVALID_TOKEN)) for ref, c in plan]
    out = settled("AUTHN-005", [skipped, *judge_refusals(sent)], unset=("auth.max_wait_s",))
    assert out.status is Status.INCONCLUSIVE
    assert "AUTHN-005(a)" in out.summary


def test_configured_fixtures_go_with_an_opaque_t_and_nothing_is_minted_from_it():
    keys = IssuerKeys((), harness_key("ec"), "ES256", "idp-1")
    fixture = time_fixtures(60)[0]
    assert minted(keys, fixture, held(), 1_800_000_000) is None  # no claims to mint from
    plan, skipped = fixture_plan(
        held(), [(fixture, "an-expired-opaque-token"), (time_fixtures(60)[1], None)]
    )
    assert [(ref, c.label, c.metadata) for ref, c in plan] == [
        ("b", "expired token (clinician)", bearer("an-expired-opaque-token"))
    ]
    (skip,) = skipped
    assert skip.expected == "auth.fixtures.nbf_future or a JWT T to mint it from (T is opaque)"


def test_time_fixtures_refused_and_accepted():
    plan, _ = fixture_plan(base(), [(f, "t.o.k") for f in time_fixtures(60)])
    answers = [
        answer(C.UNAUTHENTICATED, details="Token is expired"),  # Java (jjwt) wording
        answer(C.UNAUTHENTICATED, details="token used before issued"),  # Go (golang-jwt)
        answer(C.OK, RECORD),  # no exp: accepted
    ]
    sent = [(ref, c, r) for (ref, c), r in zip(plan, answers, strict=True)]
    observations = judge_refusals(sent)
    assert refs(observations) == {"b": [Status.PASS], "c": [Status.PASS], "d": [Status.FAIL]}
    lifetimes = [judge_lifetime("admin", base().token, 900)]
    out = settled("AUTHN-005", lifetimes + observations, unset=())
    assert (out.status, out.severity) == (Status.FAIL, Severity.CRITICAL)
    unset = ("auth.max_wait_s",)
    ok = settled("AUTHN-005", lifetimes + observations[:2], unset=unset)
    assert ok.status is Status.INCONCLUSIVE
    assert "AUTHN-005(d)" in ok.summary
    (e,) = (p for p in ok.probes if p.id == "AUTHN-005(e)")
    assert (e.status, e.required, e.enable) == (Status.SKIP, False, "auth.max_wait_s")


def test_the_hold_past_skew_is_shorter_only_on_a_target_spawned_on_this_host():
    from types import SimpleNamespace

    from harness.checks.authn import hold_past_skew
    from harness.target import parse_target

    def margin(spec: str) -> int:
        return hold_past_skew(SimpleNamespace(spec=parse_target(spec)))  # type: ignore[arg-type]

    assert margin("spawn:reference") == 1
    assert margin("127.0.0.1:50051") == 5  # loopback may be a tunnel to another clock
    assert margin("records.internal.example:443") == 5


def test_wait_mode_judges():
    who = "a token used while valid, then held past exp + skew + 5 s (admin)"
    assert judge_held_fresh(who, PATH, answer(C.OK, RECORD)) is None
    for refused_fresh in (answer(C.UNAUTHENTICATED), answer(C.UNAVAILABLE, details=ENVOY_UPSTREAM)):
        unjudged = judge_held_fresh(who, PATH, refused_fresh)
        assert unjudged is not None
        assert unjudged.status is Status.INCONCLUSIVE
    cached = judge_held_late(who, PATH, answer(C.OK, RECORD), 6.04)
    assert (cached.status, cached.severity) == (Status.FAIL, Severity.CRITICAL)
    assert "6.0 s after exp" in cached.probe
    assert judge_held_late(who, PATH, answer(C.UNAUTHENTICATED), 6).status is Status.PASS
    assert judge_held_late(who, PATH, answer(C.DEADLINE_EXCEEDED), 6).status is (
        Status.INCONCLUSIVE
    )


def test_step_up_plan_and_judges():
    fixtures = mfa_fixtures(["mfa"])
    plan, skipped = step_up_plan(
        ADMIN_ONLY, b"", base(), [(fixtures[0], "n.o.m"), (fixtures[1], None)]
    )
    assert [(ref, c.label) for ref, c in plan] == [("a", "admin without MFA evidence")]
    assert [(o.ref, o.status) for o in skipped] == [("b", Status.SKIP)]
    a, b = call("admin without MFA evidence"), call("admin with MFA evidence")
    pd = C.PERMISSION_DENIED
    assert judge_step_up("a", a, answer(pd, details="step-up required"), pd).status is Status.PASS
    assert judge_step_up("a", a, answer(C.UNAUTHENTICATED), C.UNAUTHENTICATED).status is (
        Status.PASS
    )
    no_step_up = judge_step_up("a", a, answer(C.OK, RECORD), pd)
    assert (no_step_up.status, no_step_up.severity) == (Status.FAIL, Severity.CRITICAL)
    assert judge_step_up("a", a, answer(C.UNAUTHENTICATED), pd).status is Status.FAIL
    assert judge_step_up("b", b, answer(C.OK, RECORD), pd).status is Status.PASS
    refused_mfa = judge_step_up("b", b, answer(pd, details=ENVOY_RBAC, headers=ENVOY_HEADERS), pd)
    assert (refused_mfa.status, refused_mfa.severity) == (Status.FAIL, Severity.MEDIUM)
    assert judge_step_up("b", b, answer(C.UNAVAILABLE, details=ENVOY_UPSTREAM), pd).status is (
        Status.INCONCLUSIVE
    )


def test_mfa_fixtures_with_a_required_acr():
    keys = IssuerKeys((), harness_key("ec"), "ES256", "idp-1")
    b, now = base(amr=["pwd"]), 1_800_000_000

    def claims(fixture: Fixture):
        tok = minted(keys, fixture, b, now)
        assert tok is not None
        return jwt.decode(tok, options={"verify_signature": False})

    both = mfa_fixtures(["mfa"], "urn:idp:loa:high")
    assert [(f.ref, f.name) for f in both] == [("a", "admin_no_mfa"), ("a", ""), ("b", "admin_mfa")]
    no_amr, low_acr, mfa = (claims(f) for f in both)
    assert (no_amr["amr"], no_amr["acr"]) == (["pwd"], "urn:idp:loa:high")  # only amr lacks
    assert (low_acr["amr"], low_acr["acr"]) == (["pwd", "mfa"], LOWEST_ACR)  # only acr lacks
    assert (mfa["amr"], mfa["acr"]) == (["pwd", "mfa"], "urn:idp:loa:high")
    # The low-acr token has no fixture key: only the issuer key makes it.
    assert fixture_needs(both[1]) == "auth.issuer_private_key"
    # acr alone: the admin_no_mfa fixture is the low-acr token; amr is left as T has it.
    only = mfa_fixtures([], "2")
    assert [(f.ref, f.name) for f in only] == [("a", "admin_no_mfa"), ("b", "admin_mfa")]
    low, high = (claims(f) for f in only)
    assert (low["amr"], low["acr"], high["amr"], high["acr"]) == (["pwd"], "0", ["pwd"], "2")
    # Neither set: amr must hold "mfa", as before; no acr claim is added.
    plain = mfa_fixtures([], None)
    assert [f.ref for f in plain] == ["a", "b"]
    assert "acr" not in claims(plain[0])


def test_a_low_acr_token_judged_from_other_stacks():
    a = call("admin with acr '0', below auth.required_acr")
    pd = C.PERMISSION_DENIED
    # Envoy's RBAC filter, a Java interceptor asking for step-up: refused, no data.
    for refused_answer in (
        answer(pd, details=ENVOY_RBAC, headers=ENVOY_HEADERS),
        answer(pd, details="insufficient_user_authentication"),
    ):
        assert judge_step_up("a", a, refused_answer, pd).status is Status.PASS
    served = judge_step_up("a", a, answer(C.OK, RECORD), pd)
    assert (served.status, served.severity) == (Status.FAIL, Severity.CRITICAL)
    assert judge_step_up("a", a, answer(C.DEADLINE_EXCEEDED), pd).status is Status.INCONCLUSIVE


def test_without_the_issuer_key_the_low_acr_token_says_which_key_enables_it():
    fixtures = mfa_fixtures(["mfa"], "urn:idp:loa:high")
    plan, skipped = step_up_plan(
        ADMIN_ONLY,
        b"",
        base(),
        [(fixtures[0], "configured.no.mfa"), (fixtures[1], None), (fixtures[2], "configured.mfa")],
    )
    assert [ref for ref, _ in plan] == ["a", "b"]
    (skip,) = skipped
    assert (skip.ref, skip.status, skip.expected) == ("a", Status.SKIP, "auth.issuer_private_key")
    assert "acr" in skip.probe
    # Neither fixture nor key: (a) and (b) did not run, and the report names the key.
    _, nothing = step_up_plan(ADMIN_ONLY, b"", base(), [(f, None) for f in fixtures])
    out = settled(
        "AUTHN-008",
        nothing,
        unset=("auth.issuer_private_key", "auth.fixtures.admin_no_mfa", "auth.fixtures.admin_mfa"),
    )
    assert out.status is Status.SKIP
    (a,) = (p for p in out.probes if p.id == "AUTHN-008(a)")
    assert a.enable == "auth.fixtures.admin_no_mfa or auth.issuer_private_key"


def test_required_acr_is_a_key_the_harness_acts_on(tmp_path):
    from harness.config import load_config

    path = tmp_path / "hipaa.toml"
    path.write_text('[auth]\nrequired_acr = "urn:idp:loa:high"\n')
    assert load_config(path).str_("auth.required_acr") == "urn:idp:loa:high"


# -- AUTHN-009 --------------------------------------------------------------------------

T0, EXP = 1_000.0, 1_001.0  # the stream opens at T0; its token expires at EXP


def stream(code: grpc.StatusCode, *arrivals: float, details: str = "") -> StreamVerdict:
    result = answer(code, *[RECORD] * len(arrivals), details=details, arrivals=arrivals)
    return judge_stream(
        "/pkg.Records/Watch", result, started=T0, finished=T0 + 3, exp=EXP, skew=1, grace=1
    )


def test_a_stream_that_ends_unauthenticated_on_time_passes():
    verdict = stream(C.UNAUTHENTICATED, 0.1, 0.3, 0.5, 1.9, details="token expired")
    assert (verdict.observation.status, verdict.marginal) == (Status.PASS, False)


def test_a_stream_that_keeps_delivering_fails():
    verdict = stream(C.DEADLINE_EXCEEDED, 0.1, 0.3, 1.5, 2.5, 3.5, 4.0)
    assert (verdict.observation.status, verdict.observation.severity) == (
        Status.FAIL,
        Severity.HIGH,
    )
    assert not verdict.marginal  # 1.75 s past the line: no host is that slow
    assert re.search(r"\d message\(s\) after exp \+ skew", verdict.observation.observed)


def test_late_messages_within_a_second_are_marginal_and_a_second_stream_decides():
    first = stream(C.UNAUTHENTICATED, 0.1, 0.3, 2.6)  # 0.35 s past exp + skew + transit
    assert (first.observation.status, first.marginal) == (Status.FAIL, True)
    again = stream(C.UNAUTHENTICATED, 0.1, 0.3, 1.9)
    observations = decided_again(first, again)
    assert [(o.ref, o.status) for o in observations] == [
        ("stream", Status.SKIP),
        ("stream", Status.PASS),
    ]
    assert "set aside" in observations[0].observed
    out = settled("AUTHN-009", observations, unset=())
    assert out.status is Status.PASS
    (probe,) = out.probes
    assert probe.request_ids == tuple(o.request_id for o in observations)  # both streams
    twice = decided_again(first, stream(C.UNAUTHENTICATED, 0.1, 2.7))
    assert settled("AUTHN-009", twice, unset=()).status is Status.FAIL


def test_a_deadline_with_nothing_late_is_marginal():
    verdict = stream(C.DEADLINE_EXCEEDED, 0.1, 0.3)
    assert (verdict.observation.status, verdict.marginal) == (Status.FAIL, True)


@pytest.mark.parametrize(
    ("result", "status"),
    [
        # Envoy lost its upstream: the end of the stream was never seen.
        (stream(C.UNAVAILABLE, details=ENVOY_UPSTREAM), Status.INCONCLUSIVE),
        (stream(C.UNAVAILABLE, 0.1, 0.3, details="Connection dropped"), Status.INCONCLUSIVE),
        # grpc-go: the stream ends OK after the token expired: it was never cut off.
        (stream(C.OK, 0.1), Status.FAIL),
        # A Node server ends PERMISSION_DENIED: no re-authentication status.
        (stream(C.PERMISSION_DENIED, 0.1, details="access denied"), Status.FAIL),
    ],
)
def test_other_stream_ends(result, status):
    assert result.observation.status is status


def test_a_stream_that_ends_before_the_token_expires_is_inconclusive():
    result = answer(C.OK, RECORD, arrivals=(0.1,))
    verdict = judge_stream(
        "/pkg.Records/Watch", result, started=T0, finished=T0 + 0.2, exp=EXP, skew=1, grace=1
    )
    assert verdict.observation.status is Status.INCONCLUSIVE
    assert "auth.stream_templates" in verdict.observation.observed


def test_a_stream_with_only_an_opaque_token_says_so():
    said = stream_unsent("/pkg.Records/Watch", [held("clinician")], {"clinician"})
    assert (said.ref, said.status) == ("stream", Status.SKIP)
    assert "(clinician: opaque tokens, whose expiry cannot be read" in said.expected
    nobody = stream_unsent("/pkg.Records/Watch", [held("billing")], {"clinician"})
    assert nobody.expected == "an allowed principal with a working JWT"
    out = settled("AUTHN-009", [said], unset=())
    assert out.status is Status.SKIP
    assert "opaque tokens, whose expiry cannot be read" in out.summary


def test_a_probe_with_only_skips_does_not_pass():
    skip = Observation("/pkg.Records/Watch", "not sent", "an allowed principal", Status.SKIP)
    out = settled("AUTHN-009", [skip.of("stream")], unset=())
    assert out.status is Status.SKIP


def test_every_declared_stream_method_must_be_tested():
    """One stream passed, another could not be opened: that is no PASS (catalogue 6)."""
    watch, read = "/pkg.Records/Watch", "/pkg.Records/Tail"
    passed = stream(C.UNAUTHENTICATED, 0.1, 0.3, 1.9).observation.of("stream")
    unsent = stream_unsent(read, [held("clinician")], {"clinician"})
    observations = every_stream_tested([(watch, [passed]), (read, [unsent])])
    assert [(o.probe, o.status) for o in observations] == [
        (watch, Status.PASS),
        (read, Status.INCONCLUSIVE),
    ]
    assert "not tested (not sent, needs an allowed principal with a working JWT" in (
        observations[1].observed
    )
    out = settled("AUTHN-009", observations, unset=())
    assert out.status is Status.INCONCLUSIVE
    assert read in out.summary
    # Not a stream in the descriptors (a typo, a unary method): untested, named the same way.
    typo = every_stream_tested([(watch, [passed]), (read, [not_a_stream(read)])])
    assert typo[1].status is Status.INCONCLUSIVE
    assert "server-streaming" in typo[1].observed
    # Every method tested: each passes; none tested: their SKIPs stand (the control SKIPs).
    both = every_stream_tested([(watch, [passed]), (read, [passed])])
    assert settled("AUTHN-009", both, unset=()).status is Status.PASS
    none = every_stream_tested([(watch, [unsent]), (read, [not_a_stream(read)])])
    assert [o.status for o in none] == [Status.SKIP, Status.SKIP]
    assert settled("AUTHN-009", none, unset=()).status is Status.SKIP


def test_a_marginal_first_stream_decided_by_a_second_counts_as_tested():
    first = stream(C.UNAUTHENTICATED, 0.1, 0.3, 2.6)
    again = decided_again(first, stream(C.UNAUTHENTICATED, 0.1, 0.3, 1.9))
    kept = every_stream_tested([("/pkg.Records/Watch", again)])
    assert [o.status for o in kept] == [Status.SKIP, Status.PASS]


def test_every_declared_probe_has_a_title():
    for probes, _ in DECLARED.values():
        assert all(isinstance(p, Probe) and p.title for p in probes)
