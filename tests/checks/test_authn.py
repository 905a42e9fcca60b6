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
    OVERSIZE,
    Fixture,
    StreamVerdict,
    algorithm_forgeries,
    binding_fixtures,
    cross_issuer_token,
    decided_again,
    fixture_plan,
    forgery_calls,
    fuzzed_tokens,
    header_forgeries,
    judge_basic,
    judge_basics,
    judge_held_fresh,
    judge_held_late,
    judge_lifetime,
    judge_public_key,
    judge_refusal,
    judge_refusals,
    judge_step_up,
    judge_stream,
    judge_unaccepted,
    mfa_fixtures,
    minted,
    mutation_calls,
    step_up_plan,
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
    PublicKeyForms,
    basic_plan,
    basic_variants,
    issuer_public_key,
    jwks_key_forms,
    variant_ref,
)
from harness.principals import Principal
from harness.target import parse_target
from harness.tokens import IssuerKeys, harness_key, parse, sign
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
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(harness_key("ec").public_key()))
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(harness_key("rsa").public_key()))
    forms = jwks_key_forms({"keys": [{"kty": "oct", "k": "c2VjcmV0"}, rsa_jwk, ec_jwk]})
    names = [name for name, _ in forms]
    assert names[0] == "public key PEM"
    assert forms[0][1].startswith(b"-----BEGIN PUBLIC KEY")
    assert json.loads(forms[3][1])["kty"] == "RSA"  # the first usable key
    for document in ({"keys": []}, {"keys": [{"kty": "oct", "k": "eA"}]}, ["not", "a", "jwks"]):
        with pytest.raises(ValueError, match="JWKS"):
            jwks_key_forms(document)
    discovery = "https://idp.test/.well-known/openid-configuration"
    found = discovered_jwks_uri(discovery, {"jwks_uri": "https://idp.test/keys"})
    assert found == "https://idp.test/keys"
    with pytest.raises(ValueError, match=f"{discovery}: no jwks_uri"):
        discovered_jwks_uri(discovery, {"issuer": "https://idp.test"})


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


def test_a_probe_with_only_skips_does_not_pass():
    skip = Observation("/pkg.Records/Watch", "not sent", "an allowed principal", Status.SKIP)
    out = settled("AUTHN-009", [skip.of("stream")], unset=())
    assert out.status is Status.SKIP


def test_every_declared_probe_has_a_title():
    for probes, _ in DECLARED.values():
        assert all(isinstance(p, Probe) and p.title for p in probes)
