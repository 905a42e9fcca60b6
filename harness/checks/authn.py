"""Authentication controls (AUTHN-*).

Every negative is judged by what the caller sees (code, messages), never by the target's
error text, so the same checks hold for servers in any language. Each control declares
its catalogue probes; planning (which tokens, which calls) and judging (recorded
``CallResult`` in, ``Observation`` out, filed under its probe) are plain functions, and
the check only wires plan -> send -> judge. The valid tokens every forgery starts from,
and AUTHN-001's calls, are plans other families share (:mod:`harness.plans.tokens`).
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check, warmup
from harness.oracles import PERMISSION_DENIED, UNAUTHENTICATED, UNREACHED, refused
from harness.outcome import NotApplicable, Observation, Outcome, Probe, Status
from harness.plans.calls import NO_DESCRIPTORS, Call, bearer, policy_or_skip, send, template_text
from harness.plans.tokens import (
    B64URL,
    Base,
    Held,
    PublicKeyForms,
    altered,
    as_base,
    authn_basic_calls,
    bases,
    issuer_public_key,
    run_nonce,
    v7_source,
    valid_tokens,
    variant_ref,
)
from harness.policy import Policy
from harness.principals import principals_from
from harness.run import Run
from harness.tokens import (
    IssuerKeys,
    Parsed,
    harness_key,
    hmac_with,
    json_serialization,
    parse,
    sign,
    tamper,
    unsigned,
    with_signature,
)

#: A token longer than this may meet the metadata size limit (RESOURCE_EXHAUSTED) instead.
OVERSIZE = 8 * 1024
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

#: A forged token: (probe, label, token).
Forgery = tuple[str, str, str]
#: A call to make, with the probe its observation is filed under.
Filed = tuple[str, Call]


# -- shared: send what was planned, judge refusals ---------------------------------------


def send_filed(run: Run, plan: Sequence[Filed]) -> list[tuple[str, Call, CallResult]]:
    """Make every planned call (concurrently, in order), keeping each one's probe."""
    sent = send(run, [call for _, call in plan])
    return [(ref, call, result) for (ref, _), (call, result) in zip(plan, sent, strict=True)]


def judge_refusal(ref: str, call: Call, result: CallResult) -> Observation:
    """A negative credential: UNAUTHENTICATED and no data, filed under ``ref``.

    A credential over :data:`OVERSIZE` bytes may instead meet the metadata size limit
    (RESOURCE_EXHAUSTED). PERMISSION_DENIED is FAIL (low); UNAVAILABLE or
    DEADLINE_EXCEEDED is INCONCLUSIVE (see :func:`harness.oracles.refused`).
    """
    oversize = sum(len(v) for _, v in call.metadata) > OVERSIZE
    expected = (UNAUTHENTICATED, RESOURCE_EXHAUSTED) if oversize else (UNAUTHENTICATED,)
    return refused(call, result, expected=expected).of(ref)


def judge_refusals(sent: Sequence[tuple[str, Call, CallResult]]) -> list[Observation]:
    """:func:`judge_refusal` of every sent call."""
    return [judge_refusal(ref, call, result) for ref, call, result in sent]


def judge_unaccepted(base: Held, refs: Sequence[str]) -> list[Observation]:
    """T itself was refused: nothing made from it can be judged, under each of ``refs``."""
    return [
        Observation(
            f"valid token of {base.principal.name} -> {base.method.path}",
            base.control.summary(),
            "accepted (the control call), so that tokens made from it can be judged",
            Status.INCONCLUSIVE,
            request_id=base.control.request_id,
        ).of(ref)
        for ref in refs
    ]


def judge_opaque(names: Sequence[str], refs: Sequence[str]) -> list[Observation]:
    """Opaque tokens (of ``names``) feed no variant made from a JWT's header and claims.

    SKIP under each of ``refs``, once per probe, naming whose tokens.
    """
    if not names:
        return []
    return [
        Observation(
            f"opaque tokens of {', '.join(names)}",
            "not JWTs: no header or claims to make this variant from",
            "a JWT bearer token T",
            Status.SKIP,
        ).of(ref)
        for ref in refs
    ]


def forgery_calls(base: Held, forged: Sequence[Forgery]) -> list[Filed]:
    """Each forged token of ``base`` sent to T's method, filed under its probe."""
    who = base.principal.name
    return [
        (
            ref,
            Call(
                f"{label} (from {who}'s token)",
                base.method.path,
                (base.request,),
                None,
                bearer(token, base.principal.presentation),
                retry_exhausted=len(token) <= OVERSIZE,
            ),
        )
        for ref, label, token in forged
    ]


#: Variants of an opaque T (its string) and the probes they are filed under.
OpaqueVariants = tuple[Callable[[str], list[Forgery]], tuple[str, ...]]


def forgery_plan(
    held: Sequence[Held],
    refs: Sequence[str],
    make: Callable[[Base], list[Forgery]],
    opaque: OpaqueVariants | None = None,
) -> tuple[list[Filed], list[Observation]]:
    """Every T's forgeries (JWTs: ``make``; opaque T: ``opaque``, for its probes only).

    The probes an opaque T cannot feed are SKIP, naming why; a T whose control call was not
    accepted leaves its probes INCONCLUSIVE (nothing made from it could be judged).
    """
    plan: list[Filed] = []
    for_opaque = [r for r in refs if opaque is not None and r in opaque[1]]
    names = [h.principal.name for h in held if h.opaque]
    observations = judge_opaque(names, [r for r in refs if r not in for_opaque])
    for h in held:
        base = as_base(h)
        covered = list(refs) if base is not None else for_opaque
        if not covered:
            continue
        if not h.accepted:
            observations += judge_unaccepted(h, covered)
        elif base is not None:
            plan += forgery_calls(h, make(base))
        elif opaque is not None:
            plan += forgery_calls(h, opaque[0](h.principal.token()))
    return plan, observations


def _forgeries(
    run: Run,
    probes: Sequence[Probe],
    make: Callable[[Base], list[Forgery]],
    opaque: OpaqueVariants | None = None,
) -> list[Observation]:
    """Every role's forgeries of T (:func:`forgery_plan`), sent and judged: 16 and no data."""
    held, why = valid_tokens(run)
    if not held:
        raise NotApplicable(why)
    plan, observations = forgery_plan(held, [p.ref for p in probes], make, opaque)
    return observations + judge_refusals(send_filed(run, plan))


# -- AUTHN-001 --------------------------------------------------------------------------

AUTHN_001_PROBES = (
    Probe("V1", "no authorization metadata"),
    Probe("V2", "'Bearer' with nothing after it"),
    Probe("V3", "'Bearer abc'"),
    Probe("V4", "Basic credentials"),
    Probe("V5", "three random base64url segments"),
    Probe("V6", "a 12 KiB random token (RESOURCE_EXHAUSTED allowed)"),
    Probe(
        "V7",
        "a valid token under the wrong key (x-authorization, authorization-bin)",
        needs=("auth.principals",),
    ),
    Probe("V8", "least-privileged and admin tokens together on an admin-only method"),
    Probe("V9", "50 Hypothesis mutations of a valid token", needs=("auth.principals",)),
)

#: What V7, V8 and V9 need when they could not be planned.
_BASIC_NEEDS = {
    "V7": "a principal whose bearer token is accepted on a method it may read "
    "(auth.principals, auth.rbac_matrix)",
    "V8": "least-privileged and admin principals with tokens, and a method only admin "
    "may call (auth.rbac_matrix)",
}


def judge_basic(call: Call, result: CallResult) -> Observation:
    """One AUTHN-001 call, filed under its probe (the label's ``V1``...``V9``).

    V1-V7 and V9: UNAUTHENTICATED and no data (V6 may get RESOURCE_EXHAUSTED); OK or data
    is critical, PERMISSION_DENIED FAIL (low). V8: UNAUTHENTICATED, or PERMISSION_DENIED
    (the call ran with the lower privilege), or a proxy's HTTP 400 (nginx refuses a
    duplicate ``authorization`` header in front of the service; grpcio sometimes loses the
    status of that answer, which is no gRPC answer either); any success is critical.
    """
    ref = variant_ref(call.label)
    if ref == "V8":
        both = (UNAUTHENTICATED, PERMISSION_DENIED)
        observation = refused(call, result, expected=both, low=(), edge=(400, None))
    elif ref == "V6":
        observation = refused(call, result, expected=(UNAUTHENTICATED, RESOURCE_EXHAUSTED))
    else:
        observation = refused(call, result)
    return observation.of(ref)


def judge_basics(
    sent: Sequence[tuple[Call, CallResult]], held: Sequence[Held] = ()
) -> list[Observation]:
    """Every AUTHN-001 call judged; V7 and V8 that were not planned say what they need.

    V7 is planned only from a token whose control call was accepted
    (:func:`harness.plans.tokens.v7_source`): when ``held`` tokens exist but none was
    accepted, V7 is INCONCLUSIVE (a refusal of it would prove nothing).
    """
    observations = [judge_basic(call, result) for call, result in sent]
    made = {o.ref for o in observations}
    if "V7" not in made and held and v7_source(list(held)) is None:
        observations += judge_unaccepted(held[0], ["V7"])
        made.add("V7")
    for ref, needs in _BASIC_NEEDS.items():
        if ref not in made:
            observations.append(Observation(ref, "not sent", needs, Status.SKIP).of(ref))
    return observations


def mutation_calls(base: Held, tokens: Sequence[str]) -> list[Call]:
    """V9: each mutated token sent to T's method."""
    return [
        Call(
            "V9 mutated token",
            base.method.path,
            (base.request,),
            None,
            bearer(t, base.principal.presentation),
        )
        for t in tokens
    ]


def _mutations(token: str) -> Any:
    """Hypothesis strategy: printable-ASCII mutations of a valid token that change its bytes."""

    def flip(t: str, i: int, c: str) -> str:
        i %= len(t)
        return t[:i] + c + t[i + 1 :]

    def decoded(t: str) -> list[bytes]:
        from jwt.utils import base64url_decode

        out = []
        for part in t.split("."):
            try:
                out.append(base64url_decode(part))
            except ValueError:
                out.append(part.encode())
        return out

    base = decoded(token)
    return st.one_of(
        st.builds(flip, st.just(token), st.integers(0, len(token) - 1), st.sampled_from(B64URL)),
        st.builds(lambda n: token[: max(1, n)], st.integers(1, len(token) - 1)),
        st.builds(lambda n: token.replace(".", "..", n), st.integers(1, 2)),
        st.builds(
            lambda s: token + s,
            st.text(
                alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                min_size=1,
                max_size=8,
            ),
        ),
        st.builds(lambda i: token[:i] + "%C3%A9" + token[i:], st.integers(0, len(token))),
    ).filter(lambda t: t != token and decoded(t) != base)


def fuzzed_tokens(token: str, count: int, run_seed: int) -> list[str]:
    """``count`` Hypothesis mutations of ``token``, the same for the same seed."""
    tokens: list[str] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(run_seed)
    @given(_mutations(token))
    def collect(t: str) -> None:
        tokens.append(t)

    collect()
    return tokens[:count]


def _mutated(run: Run) -> list[Observation]:
    """V9 sent from the first accepted T (a JWT or opaque), or why it could not be."""
    found, why = valid_tokens(run)
    accepted = [b for b in found if b.accepted]
    if not accepted:
        if found:
            return judge_unaccepted(found[0], ["V9"])
        return [Observation("V9", "not sent", why, Status.SKIP).of("V9")]
    base = accepted[0]
    calls = mutation_calls(base, fuzzed_tokens(base.principal.token(), 50, run.options.seed))
    return [judge_basic(call, result) for call, result in send(run, calls)]


@check("AUTHN-001", probes=AUTHN_001_PROBES)
def credentials_required(run: Run) -> Outcome:
    """Missing, malformed or ambiguous credentials rejected on every method.

    For every declared method except ``schema.public_methods``: V1 no credentials, V2
    ``Bearer`` alone, V3 ``Bearer abc``, V4 Basic, V5 random segments, V6 a 12 KiB token,
    V7 a valid token (its own control call accepted) under the wrong metadata key; each
    must get UNAUTHENTICATED and no data (V6 may get RESOURCE_EXHAUSTED; PERMISSION_DENIED
    is FAIL (low)). V8 sends the least-privileged and admin tokens together on admin-only
    methods: UNAUTHENTICATED or PERMISSION_DENIED pass, any success is critical. V9: 50
    Hypothesis mutations of an accepted token (a JWT or opaque) against its method. Writes
    get an empty request unless mutations are allowed. None of it needs a JWT.
    """
    calls = authn_basic_calls(run)
    if isinstance(calls, str):
        raise NotApplicable(calls)
    if not calls:
        raise NotApplicable(
            "the descriptors declare no method outside schema.public_methods "
            "and gRPC infrastructure"
        )
    observations = judge_basics(calls, valid_tokens(run)[0]) + _mutated(run)
    return Outcome.from_observations(
        CATALOGUE["AUTHN-001"],
        observations,
        passed=f"{len(observations)} unauthenticated probes refused",
    )


# -- AUTHN-002 ... AUTHN-004: forged tokens ---------------------------------------------

AUTHN_002_PROBES = (
    Probe("a", "alg none, None, NONE, nOnE with an empty signature"),
    Probe(
        "b",
        "HS256/384/512 keyed with the issuer's public key (PEM, DER, JWK)",
        needs=("auth.jwks_file", "auth.jwks_uri", "auth.issuer"),
    ),
    Probe("c", "the other algorithm family, signed with a harness key"),
    Probe("d", "unregistered alg RS1 and XYZ"),
)


def algorithm_forgeries(token: Parsed, forms: Sequence[tuple[str, bytes]]) -> list[Forgery]:
    """AUTHN-002's tokens from T: (a) none, (b) HMAC with the public key, (c) family, (d) alg."""
    h, c = token.header, token.claims
    out = [
        ("a", f"alg {name!r}, empty signature", unsigned(c, h, name))
        for name in ("none", "None", "NONE", "nOnE")
    ]
    for alg in ("HS256", "HS384", "HS512"):
        out += [
            ("b", f"{alg} keyed with the issuer's {form}", hmac_with(c, h, alg, secret))
            for form, secret in forms
        ]
    if str(h.get("alg", "")).startswith("ES"):
        out += [
            ("c", f"{a} signed with a harness RSA key", sign(c, harness_key("rsa"), a, h))
            for a in ("RS256", "PS256")
        ]
    else:
        out.append(
            ("c", "ES256 signed with a harness EC key", sign(c, harness_key("ec"), "ES256", h))
        )
    out += [
        ("d", f"unregistered alg {a!r}", hmac_with(c, h, a, b"harness")) for a in ("RS1", "XYZ")
    ]
    return out


def judge_public_key(key: PublicKeyForms) -> list[Observation]:
    """(b) without the key that signs T: SKIP when no JWKS is configured, else INCONCLUSIVE.

    INCONCLUSIVE says why: the JWKS could not be read, or which of its keys signs T is
    unknown (no key with T's ``kid``, and more than one to choose from).
    """
    if key.forms:
        return []
    probe = "HS* keyed with the issuer's public key"
    if key.problem:
        return [
            Observation(
                probe,
                f"the issuer's public key could not be read: {key.problem}",
                f"the JWKS from {key.source}",
                Status.INCONCLUSIVE,
            ).of("b")
        ]
    needs = "the issuer's public key: auth.jwks_file, auth.jwks_uri or auth.issuer"
    return [Observation(probe, "not sent", needs, Status.SKIP).of("b")]


@check("AUTHN-002", probes=AUTHN_002_PROBES)
def algorithm_allowlist(run: Run) -> Outcome:
    """Algorithm allowlist: ``none`` and algorithm confusion rejected.

    From each role's valid token T (whose control call must succeed): (a) ``alg`` none,
    None, NONE and nOnE with an empty signature; (b) T's claims signed HS256/384/512 with
    the issuer's public key as the secret (PEM with and without newline, DER, JWK): the
    key whose ``kid`` is T's (else the only signing key) in the JWKS read from
    ``auth.jwks_file``, else fetched from ``auth.jwks_uri`` or ``auth.issuer``'s discovery
    document; (c) the other algorithm family (RS256/PS256 for an EC issuer, ES256 for an
    RSA one) with a harness key; (d) unregistered ``alg`` names RS1 and XYZ. Every token
    must get UNAUTHENTICATED and no data. Every variant starts from T's header and claims:
    an opaque T feeds none of them (SKIP, naming its principal).
    """
    keys = {
        b.principal.name: issuer_public_key(run, b.token.header.get("kid")) for b in bases(run)[0]
    }
    observations = _forgeries(
        run,
        AUTHN_002_PROBES,
        lambda base: algorithm_forgeries(base.token, keys[base.principal.name].forms),
    )
    unkeyed = [o for key in dict.fromkeys(keys.values()) for o in judge_public_key(key)]
    return Outcome.from_observations(
        CATALOGUE["AUTHN-002"],
        unkeyed + observations,
        passed="every none / confused / unregistered algorithm refused",
    )


AUTHN_003_PROBES = (
    Probe("a", "claims changed (sub, exp, roles or scope) under the original signature"),
    Probe("b", "signature truncated, zeroed or one bit flipped (an opaque T: truncated, altered)"),
    Probe("c", "T's claims signed by a harness key under the real kid (an opaque T: a lookalike)"),
    Probe("d", "T in JWS JSON serialization"),
)
#: The probes an opaque T feeds: its integrity (b) and a token of its shape never issued (c).
OPAQUE_003 = ("b", "c")


def lookalike(token: str, rng: random.Random) -> str:
    """A token of T's shape: each letter or digit replaced by one of its kind, the rest kept.

    What a guessed, revoked or foreign token looks like to a server that checks opaque
    tokens by lookup: the right length and alphabet, never issued to anyone.
    """
    kinds = (string.digits, string.ascii_lowercase, string.ascii_uppercase)
    return "".join(next((rng.choice(kind) for kind in kinds if c in kind), c) for c in token)


def opaque_forgeries(token: str, seed: int) -> list[Forgery]:
    """AUTHN-003's variants of an opaque T: (b) truncated or altered, (c) a lookalike.

    No signature can be found in an opaque token, so (b) works on the whole: the last
    8 characters dropped (half, for a short token), the middle and the last character
    changed; (c) a random token of T's shape (:func:`lookalike`). No-ops are dropped.
    """
    cut = min(8, len(token) // 2) or 1
    out = [
        ("b", f"opaque token truncated by {cut} characters", token[:-cut]),
        ("b", "opaque token, one middle character changed", altered(token)),
        ("b", "opaque token, its last character changed", altered(token, -1)),
        ("c", "a token of T's shape, never issued", lookalike(token, random.Random(seed))),
    ]
    return [(ref, label, tok) for ref, label, tok in out if tok and tok != token]


def tamper_forgeries(token: Parsed, original: str, nonce: str) -> list[Forgery]:
    """AUTHN-003's tokens from T; a change that leaves T as it was is no forgery: dropped."""
    from jwt.utils import base64url_decode

    c = token.claims
    sig = base64url_decode(token.segments[2])
    flipped = bytes([sig[0] ^ 0x01]) + sig[1:]
    head, body, signature = token.segments
    out = [
        ("a", "sub changed, signature kept", tamper(token, sub=f"attacker-{nonce}")),
        (
            "a",
            "exp pushed a year forward, signature kept",
            tamper(token, exp=int(c.get("exp", time.time())) + 365 * 86400),
        ),
        ("b", "signature truncated", f"{head}.{body}.{signature[:-8]}"),
        ("b", "signature zeroed", with_signature(token, bytes(len(sig)))),
        ("b", "one signature bit flipped", with_signature(token, flipped)),
        (
            "c",
            "claims signed by a harness key under the real kid",
            sign(c, *_same_family_key(token.header), token.header),
        ),
        ("d", "JWS JSON serialization", json_serialization(token)),
    ]
    for claim in ("roles", "scope", "scp", "groups"):
        if claim in c:
            value: Any = [*c[claim], "admin"] if isinstance(c[claim], list) else f"{c[claim]} admin"
            out.append(
                ("a", f"{claim} raised to admin, signature kept", tamper(token, **{claim: value}))
            )
    return [(ref, label, tok) for ref, label, tok in out if tok != original]


@check("AUTHN-003", probes=AUTHN_003_PROBES)
def signature_integrity(run: Run) -> Outcome:
    """Signature integrity: tampered claims and foreign keys rejected.

    T's control call is made first (a server that caches verified signatures sees T).
    Then: (a) T with ``sub``, roles/scope or ``exp`` (+1 year) changed under the original
    signature; (b) T with its signature truncated, zeroed, or one bit flipped; (c) T's
    claims signed by a harness key under T's ``kid``; (d) T in JWS JSON serialization.
    An opaque T (checked by lookup or introspection) feeds (b) and (c) as a whole token
    (see :func:`opaque_forgeries`); (a) and (d) need a JWT and are SKIP for it. Every
    token must get UNAUTHENTICATED and no data.
    """
    nonce = run_nonce(run)
    seed = run.options.seed
    observations = _forgeries(
        run,
        AUTHN_003_PROBES,
        lambda base: tamper_forgeries(base.token, base.principal.token(), nonce),
        (lambda token: opaque_forgeries(token, seed), OPAQUE_003),
    )
    return Outcome.from_observations(
        CATALOGUE["AUTHN-003"],
        observations,
        passed="every tampered or foreign-signed token refused",
    )


def _same_family_key(header: dict[str, Any]) -> tuple[Any, str]:
    alg = str(header.get("alg", "ES256"))
    if alg.startswith("ES"):
        return harness_key("ec"), "ES256"
    rsa_algs = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    return harness_key("rsa"), alg if alg in rsa_algs else "RS256"


AUTHN_004_PROBES = (
    Probe("kid-path", "kid path traversal to /dev/null, HS256 with an empty key"),
    Probe("kid-sql", "kid SQL injection, HS256 with key 'k'"),
    Probe("kid-odd", "an 8 KiB kid and a non-ASCII kid"),
    Probe("jku-x5u", "jku and x5u pointing at a canary host"),
    Probe("jwk", "an embedded jwk holding the harness key"),
    Probe("x5c", "an embedded x5c self-signed chain"),
)


def header_forgeries(token: Parsed, nonce: str, key: Any) -> list[Forgery]:
    """AUTHN-004's harness-signed tokens carrying T's claims and untrusted key headers."""
    h, c = dict(token.header), token.claims
    canary = f"https://{nonce}.canary.invalid/jwks.json"

    def es256(ref: str, label: str, **extra: Any) -> Forgery:
        return ref, label, sign(c, key, "ES256", {**h, **extra})

    return [
        (
            "kid-path",
            "kid path traversal, HS256 with empty key",
            hmac_with(c, {**h, "kid": "../../../../../../dev/null"}, "HS256", b""),
        ),
        (
            "kid-sql",
            "kid SQL injection, HS256 with key 'k'",
            hmac_with(c, {**h, "kid": "' UNION SELECT 'k'--"}, "HS256", b"k"),
        ),
        es256("kid-odd", "8 KiB kid", kid="k" * 8192),
        es256("kid-odd", "non-ASCII kid", kid=f"ключ-{nonce}"),
        es256("jku-x5u", "jku to a canary host", jku=canary),
        es256("jku-x5u", "x5u to a canary host", x5u=canary),
        es256("jwk", "embedded jwk with the harness key", jwk=_public_jwk(key)),
        es256("x5c", "embedded x5c self-signed chain", x5c=[_self_signed_b64(key)]),
    ]


@check("AUTHN-004", probes=AUTHN_004_PROBES)
def key_selection_headers(run: Run) -> Outcome:
    """Untrusted key-selection headers (kid, jku, x5u, jwk, x5c) not honoured.

    Harness-signed tokens carrying T's claims with: ``kid`` path traversal to /dev/null
    (HS256, empty key); ``kid`` SQL injection (HS256, key "k"); an 8 KiB and a non-ASCII
    ``kid``; ``jku`` and ``x5u`` pointing at a canary host under .invalid; an embedded
    ``jwk`` holding the harness public key; an embedded ``x5c`` self-signed chain. Every
    token must get UNAUTHENTICATED and no data. Every token carries T's claims: an opaque
    T feeds none (SKIP). (``auth.canary_callback_url`` is not yet consulted: no fetch of
    the canary is looked for.)
    """
    nonce = run_nonce(run)
    key = harness_key("ec")
    observations = _forgeries(
        run, AUTHN_004_PROBES, lambda base: header_forgeries(base.token, nonce, key)
    )
    return Outcome.from_observations(
        CATALOGUE["AUTHN-004"], observations, passed="no key-selection header was honoured"
    )


def _public_jwk(key: Any) -> dict[str, Any]:
    import json

    import jwt

    data: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return data


def _self_signed_b64(key: Any) -> str:
    import base64
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hipaa-harness")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


# -- AUTHN-005 ... AUTHN-008: issuer-signed fixtures -----------------------------------


@dataclass(frozen=True)
class Fixture:
    """An issuer-signed negative token: ``auth.fixtures.<name>``, else minted from T.

    Attributes:
        ref: The probe it is filed under.
        label: What it is, in evidence.
        name: Its key under ``auth.fixtures``; ``""`` for a token that can only be minted.
        change: T's claims (and now, in s) -> the fixture's claims, when it is minted.
        header: The header to mint it with; ``None`` for T's own.
    """

    ref: str
    label: str
    name: str
    change: Callable[[dict[str, Any], int], dict[str, Any]]
    header: dict[str, Any] | None = None


def configured_fixture(run: Run, name: str) -> str | None:
    """The token of ``auth.fixtures.<name>``, if configured (a JWT or opaque)."""
    fixtures = principals_from(run.config.table("auth.fixtures"), "config")
    return fixtures[name].token() if name and name in fixtures else None


def minted(keys: IssuerKeys, fixture: Fixture, base: Held, now: int) -> str | None:
    """``fixture`` minted from T with the issuer's private key.

    ``None`` without that key, or when T is opaque (no claims to mint from).
    """
    if keys.private_key is None or base.token is None:
        return None
    header = fixture.header if fixture.header is not None else base.token.header
    return keys.mint(fixture.change(dict(base.token.claims), now), header)


def fixture_needs(fixture: Fixture, opaque: bool = False) -> str:
    """What a fixture that could not be had needs (no JWT T to mint from, when ``opaque``)."""
    mint = "auth.issuer_private_key"
    if opaque:
        mint = "a JWT T to mint it from (T is opaque)"
    if not fixture.name:
        return mint
    return f"auth.fixtures.{fixture.name} or {mint}"


def fixture_plan(
    base: Held, tokens: Sequence[tuple[Fixture, str | None]]
) -> tuple[list[Filed], list[Observation]]:
    """The calls sending each fixture's token to T's method; a SKIP for each without one."""
    plan: list[Filed] = []
    skipped: list[Observation] = []
    for fixture, token in tokens:
        if token is None:
            needs = fixture_needs(fixture, base.opaque)
            skip = Observation(fixture.label, "not sent", needs, Status.SKIP)
            skipped.append(skip.of(fixture.ref))
            continue
        call = Call(
            f"{fixture.label} ({base.principal.name})",
            base.method.path,
            (base.request,),
            None,
            bearer(token, base.principal.presentation),
        )
        plan.append((fixture.ref, call))
    return plan, skipped


#: Where a fixture's token comes from: (run, fixture, T, now) -> token or None.
TokenSource = Callable[[Run, Fixture, Held, int], "str | None"]


def issuer_signed(run: Run, fixture: Fixture, base: Held, now: int) -> str | None:
    """``auth.fixtures.<name>`` if configured, else minted with the issuer key."""
    token = configured_fixture(run, fixture.name)
    return token if token is not None else minted(run.issuer_keys(), fixture, base, now)


def _fixtures(
    run: Run, fixtures: Sequence[Fixture], source: TokenSource = issuer_signed
) -> tuple[list[Observation], str]:
    """The fixtures sent from the first accepted T and judged, or why none could be.

    T is the first accepted JWT (fixtures can be minted from it), else the first accepted
    opaque token: configured fixtures are sent to its method all the same.
    """
    found, why = valid_tokens(run)
    if not found:
        return [], why
    accepted = sorted((h for h in found if h.accepted), key=lambda h: h.opaque)
    if not accepted:
        return judge_unaccepted(found[0], [f.ref for f in fixtures]), ""
    base, now = accepted[0], int(time.time())
    plan, skipped = fixture_plan(base, [(f, source(run, f, base, now)) for f in fixtures])
    return skipped + judge_refusals(send_filed(run, plan)), ""


def _without(claims: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k not in names}


AUTHN_005_PROBES = (
    Probe("a", "every token has exp and a lifetime within policy", needs=("auth.principals",)),
    Probe("b", "an expired token", needs=("auth.fixtures.expired", "auth.issuer_private_key")),
    Probe(
        "c", "nbf ten minutes ahead", needs=("auth.fixtures.nbf_future", "auth.issuer_private_key")
    ),
    Probe("d", "a token without exp", needs=("auth.fixtures.no_exp", "auth.issuer_private_key")),
    Probe(
        "e",
        "wait mode: a token used while valid, again past exp + skew + 5 s (1 s if spawned)",
        required=False,
        needs=("auth.max_wait_s",),
    ),
)


def time_fixtures(skew: int) -> list[Fixture]:
    """AUTHN-005's fixtures: (b) expired beyond ``skew``, (c) not yet valid, (d) no exp."""
    return [
        Fixture(
            "b",
            "expired token",
            "expired",
            lambda c, now: {**c, "iat": now - 7200, "nbf": now - 7200, "exp": now - skew - 300},
        ),
        Fixture(
            "c",
            "token not yet valid (nbf +10 min)",
            "nbf_future",
            lambda c, now: {**c, "iat": now, "nbf": now + 600, "exp": now + 900},
        ),
        Fixture("d", "token without exp", "no_exp", lambda c, now: _without(c, "exp")),
    ]


def judge_lifetime(name: str, token: Parsed | None, limit: int) -> Observation:
    """(a) One principal's token: ``exp`` present (critical), ``exp - iat`` <= ``limit``.

    An opaque token (``None``) has no claims to read: SKIP, naming it (the lifetime an
    introspection endpoint would tell is not asked for).
    """
    probe = f"lifetime of {name}'s token"
    if token is None:
        return Observation(
            f"lifetime of the opaque token(s) of {name}",
            "not JWTs: no iat or exp to read",
            "a JWT whose exp and iat can be read",
            Status.SKIP,
        ).of("a")
    exp, iat = token.claims.get("exp"), token.claims.get("iat")
    if not isinstance(exp, (int, float)):
        return Observation(probe, "no exp claim", "exp present", Status.FAIL, Severity.CRITICAL).of(
            "a"
        )
    if not isinstance(iat, (int, float)):
        return Observation(
            probe,
            "no iat claim: its lifetime cannot be measured",
            f"exp - iat <= {limit} s",
            Status.INCONCLUSIVE,
        ).of("a")
    ttl = int(exp - iat)
    ok = ttl <= limit
    return Observation(
        probe,
        f"exp - iat = {ttl} s",
        f"<= {limit} s",
        Status.PASS if ok else Status.FAIL,
        None if ok else Severity.MEDIUM,
    ).of("a")


def _lifetimes(run: Run) -> list[Observation]:
    """(a) Every principal's JWT, held to the privileged limit where it may be privileged."""
    policy = Policy.of(run)
    max_ttl = int(run.config.get("auth.max_token_ttl_s", 3600))
    max_priv = int(run.config.get("auth.max_privileged_ttl_s", 900))
    privileged: set[str] = set()
    if policy is not None:
        for path in run.config.str_list("auth.privileged_methods"):
            privileged |= set(policy.allowed(path) or ())
    tokens = {n: parse(p.token()) for n, p in run.principals.items() if p.has_token}
    opaque = [name for name, token in tokens.items() if token is None]
    observations = [
        judge_lifetime(name, token, max_priv if name in privileged else max_ttl)
        for name, token in tokens.items()
        if token is not None
    ]
    if opaque:
        observations.append(judge_lifetime(", ".join(opaque), None, max_ttl))
    return observations


@check("AUTHN-005", probes=AUTHN_005_PROBES)
def time_claims(run: Run) -> Outcome:
    """Time claims enforced; token lifetime short.

    (a) Every principal's token, decoded without verification, has ``exp`` and a
    lifetime ``exp - iat`` within ``auth.max_token_ttl_s`` (3600), or
    ``auth.max_privileged_ttl_s`` (900) for principals allowed on
    ``auth.privileged_methods`` (FAIL medium); an opaque token has nothing to read (SKIP).
    Issuer-signed fixtures (configured, of any shape, or minted from a JWT T with
    ``auth.issuer_private_key``): (b) expired beyond ``auth.clock_skew_s``,
    (c) ``nbf`` ten minutes ahead, (d) no ``exp``: each must get UNAUTHENTICATED. (e) With
    ``auth.max_wait_s`` set: a minted token used while valid, then again 5 s past
    ``exp + skew`` (1 s on a spawned target, which shares the harness's clock), must be
    refused the second time (see :func:`_held_token`).
    """
    skew = int(run.config.get("auth.clock_skew_s", 60))
    held = _held_token(run)
    fixtures, why = _fixtures(run, time_fixtures(skew))
    observations = [*_lifetimes(run), *([held.of("e")] if held is not None else []), *fixtures]
    if not observations:
        raise NotApplicable(why or "no principal has a JWT bearer token")
    return Outcome.from_observations(
        CATALOGUE["AUTHN-005"],
        observations,
        passed="time claims enforced and lifetimes within policy",
    )


#: (e) The token is held this long past ``exp + auth.clock_skew_s`` before it is used again:
#: room for the server's clock to run behind the harness's.
HOLD_PAST_SKEW_S = 5
#: (e) The same, for a target the harness spawned on its own host: one clock, so the room
#: is for ``exp``'s rounding to whole seconds only.
SAME_CLOCK_PAST_SKEW_S = 1


def hold_past_skew(run: Run) -> int:
    """(e)'s room past ``exp + skew``: 5 s, or 1 s on a target spawned on this host."""
    return SAME_CLOCK_PAST_SKEW_S if run.spec.is_spawn else HOLD_PAST_SKEW_S


@warmup("AUTHN-005", waits=True)
def _held_token(run: Run) -> Observation | None:
    """(e) A token used while valid, held past ``exp + skew + 5 s`` (1 s spawned), used again.

    Runs only when ``auth.max_wait_s`` is set (the wait mode is optional) and
    ``auth.issuer_private_key`` can mint a token that expires in 2 s. The second use must
    get UNAUTHENTICATED: a server that caches a verified token past its ``exp`` fails
    (critical). It is mostly a wait, so it starts in the background when the run opens.
    """
    return run.memo("authn-005-held", lambda: _hold(run))


def judge_held_fresh(who: str, path: str, fresh: CallResult) -> Observation | None:
    """(e) The token's use while valid: refused or unreached leaves the wait unjudgeable."""
    if fresh.code not in (UNAUTHENTICATED, PERMISSION_DENIED, *UNREACHED):
        return None
    return Observation(
        f"{who} -> {path}",
        f"refused while valid: {fresh.summary()}",
        "accepted while valid, so that its later use can be judged",
        Status.INCONCLUSIVE,
        request_id=fresh.request_id,
    )


def judge_held_late(who: str, path: str, late: CallResult, after_exp_s: float) -> Observation:
    """(e) The same token ``after_exp_s`` past ``exp``: refused, or critical."""
    call = Call(f"{who}, {after_exp_s:.1f} s after exp", path, ())
    return refused(call, late, data_severity=Severity.CRITICAL)


def _hold(run: Run) -> Observation | None:
    if not run.config.has("auth.max_wait_s"):
        return None
    margin = hold_past_skew(run)
    probe = f"a token used while valid, then held past exp + skew + {margin} s"
    skew = int(run.config.get("auth.clock_skew_s", 60))
    max_wait = float(run.config.get("auth.max_wait_s"))
    keys = run.issuer_keys()
    accepted = [b for b in bases(run)[0] if b.accepted]
    if keys.private_key is None or not accepted:
        needs = "auth.issuer_private_key" if keys.private_key is None else "an accepted token"
        return Observation(probe, "not sent", f"{needs} (wait mode)", Status.SKIP)
    if 2 + skew + margin > max_wait:
        return Observation(
            probe,
            "not sent",
            f"exp + skew + {margin} s within auth.max_wait_s ({max_wait:g} s)",
            Status.SKIP,
        )
    base = accepted[0]
    token, exp = base.expiring(keys, 2)
    who = f"{probe} ({base.principal.name})"
    where = base.principal.presentation
    fresh = run.call(base.method.path, [base.request], extra_metadata=bearer(token, where))
    unjudgeable = judge_held_fresh(who, base.method.path, fresh)
    if unjudgeable is not None:
        return unjudgeable
    time.sleep(max(0.0, exp + skew + margin - time.time()))
    late = run.call(base.method.path, [base.request], extra_metadata=bearer(token, where))
    return judge_held_late(who, base.method.path, late, time.time() - exp)


AUTHN_006_PROBES = (
    Probe(
        "a",
        "a token for another audience",
        needs=("auth.fixtures.wrong_aud", "auth.issuer_private_key"),
    ),
    Probe("b", "a token without aud", needs=("auth.fixtures.no_aud", "auth.issuer_private_key")),
    Probe(
        "c",
        "a token from another realm of the issuer",
        needs=("auth.fixtures.wrong_iss", "auth.issuer_private_key"),
    ),
    Probe("d", "the right iss, signed by another issuer's key"),
)


def binding_fixtures(nonce: str) -> list[Fixture]:
    """AUTHN-006's fixtures: (a) another audience, (b) no aud, (c) another realm, (d) key."""
    return [
        Fixture(
            "a",
            "token for another audience",
            "wrong_aud",
            lambda c, now: {**c, "aud": f"https://other-{nonce}.invalid"},
        ),
        Fixture("b", "token without aud", "no_aud", lambda c, now: _without(c, "aud")),
        Fixture(
            "c",
            "token from another issuer realm",
            "wrong_iss",
            lambda c, now: {**c, "iss": f"{c.get('iss', '')}/realms/other-{nonce}"},
        ),
        Fixture("d", "right iss, other issuer's key", "cross_issuer_key", lambda c, now: c),
    ]


def cross_issuer_token(base: Base, nonce: str) -> str:
    """(d) T's claims signed by a harness key under another issuer's ``kid``."""
    key, alg = _same_family_key(base.token.header)
    return sign(base.token.claims, key, alg, {**base.token.header, "kid": f"other-issuer-{nonce}"})


@check("AUTHN-006", probes=AUTHN_006_PROBES)
def audience_and_issuer(run: Run) -> Outcome:
    """Audience and issuer binding.

    Issuer-signed fixtures (configured, or minted with ``auth.issuer_private_key``): (a)
    ``aud`` of another resource, (b) no ``aud``, (c) ``iss`` of another realm; and (d) the
    right ``iss`` signed by another issuer's key (``auth.fixtures.cross_issuer_key``, else
    a harness key under another ``kid``, from a JWT T). Every token must get UNAUTHENTICATED
    and no data. With an opaque T only configured fixtures are sent.
    """
    nonce = run_nonce(run)

    def source(run: Run, fixture: Fixture, held: Held, now: int) -> str | None:
        if fixture.ref != "d":
            return issuer_signed(run, fixture, held, now)
        base = as_base(held)
        forged = cross_issuer_token(base, nonce) if base is not None else None
        return configured_fixture(run, fixture.name) or forged

    observations, why = _fixtures(run, binding_fixtures(nonce), source)
    if not observations:
        raise NotApplicable(why)
    return Outcome.from_observations(
        CATALOGUE["AUTHN-006"], observations, passed="audience and issuer enforced"
    )


AUTHN_007_PROBES = (
    Probe("a", "an OIDC ID token", needs=("auth.fixtures.id_token", "auth.issuer_private_key")),
    Probe("b", "a refresh token", needs=("auth.fixtures.refresh_token", "auth.issuer_private_key")),
    Probe(
        "c",
        "a typ other than auth.require_typ (when it is set)",
        required=False,
        needs=("auth.require_typ",),
    ),
)


def type_fixtures(header: dict[str, Any], required_typ: str | None) -> list[Fixture]:
    """AUTHN-007's fixtures: (a) ID token, (b) refresh token, (c) typ JWT if one is required."""
    fixtures = [
        Fixture(
            "a",
            "OIDC ID token",
            "id_token",
            lambda c, now: {**c, "aud": c.get("client_id", "client"), "nonce": "n"},
            {**header, "typ": "JWT"},
        ),
        Fixture(
            "b",
            "refresh token",
            "refresh_token",
            lambda c, now: {**c, "token_use": "refresh"},
            {**header, "typ": "refresh+jwt"},
        ),
    ]
    if required_typ:
        fixtures.append(
            Fixture(
                "c",
                f"typ JWT where {required_typ} is required",
                "other_typ",
                lambda c, now: dict(c),
                {**header, "typ": "JWT"},
            )
        )
    return fixtures


@check("AUTHN-007", probes=AUTHN_007_PROBES)
def token_type(run: Run) -> Outcome:
    """Token-type confusion rejected.

    Issuer-signed fixtures (configured, or minted): (a) an OIDC ID token (``aud`` =
    client_id, ``typ`` JWT), (b) a refresh token (``typ`` refresh+jwt), (c) T's claims
    with ``typ`` JWT when ``auth.require_typ`` is set. Every token must get
    UNAUTHENTICATED. The catalogue's (d), any other JWT the IdP signs, has no fixture key
    yet and is not sent.
    """
    found, _ = bases(run)
    header = dict(found[0].token.header) if found else {}
    fixtures = type_fixtures(header, run.config.str_("auth.require_typ"))
    observations, why = _fixtures(run, fixtures)
    if not observations:
        raise NotApplicable(why)
    return Outcome.from_observations(
        CATALOGUE["AUTHN-007"], observations, passed="ID, refresh and other token types refused"
    )


AUTHN_008_PROBES = (
    Probe(
        "a",
        "a privileged call without MFA evidence refused (PERMISSION_DENIED or step_up_code)",
        needs=("auth.fixtures.admin_no_mfa", "auth.issuer_private_key"),
    ),
    Probe(
        "b",
        "the same call with MFA evidence accepted",
        needs=("auth.fixtures.admin_mfa", "auth.issuer_private_key"),
    ),
)


#: The ``acr`` below every level: OpenID Connect Core 1.0 §2 gives "0" to an authentication
#: that did not meet ISO/IEC 29115 level 1, whatever values an IdP uses above it.
LOWEST_ACR = "0"


def mfa_fixtures(required_amr: Sequence[str], required_acr: str | None = None) -> list[Fixture]:
    """AUTHN-008's fixtures: (a) admin tokens without MFA evidence, (b) one with it.

    MFA evidence is ``amr`` holding every ``auth.required_amr`` value (``mfa`` when neither
    ``auth.required_amr`` nor ``auth.required_acr`` is set) and, when ``auth.required_acr``
    is set, ``acr`` equal to it. (a) lacks one at a time: ``amr`` of a password only; and,
    with a required ``acr``, :data:`LOWEST_ACR` with every required ``amr``. That second
    token has no fixture key of its own when the first takes ``admin_no_mfa``: it can only
    be minted with the issuer key.
    """
    amr = list(required_amr) or ([] if required_acr else ["mfa"])
    acr = {"acr": required_acr} if required_acr else {}
    evidence = {"amr": ["pwd", *amr]} if amr else {}
    fixtures = []
    if amr:
        fixtures.append(
            Fixture(
                "a",
                "without MFA evidence",
                "admin_no_mfa",
                lambda c, now: {**c, "amr": ["pwd"], **acr},
            )
        )
    if required_acr and required_acr != LOWEST_ACR:
        fixtures.append(
            Fixture(
                "a",
                f"with acr {LOWEST_ACR!r}, below auth.required_acr",
                "" if amr else "admin_no_mfa",
                lambda c, now: {**c, **evidence, "acr": LOWEST_ACR},
            )
        )
    fixtures.append(
        Fixture("b", "with MFA evidence", "admin_mfa", lambda c, now: {**c, **evidence, **acr})
    )
    return fixtures


def step_up_plan(
    path: str, request: bytes, base: Held, tokens: Sequence[tuple[Fixture, str | None]]
) -> tuple[list[Filed], list[Observation]]:
    """(a) and (b) on one privileged ``path`` as ``base``'s principal; SKIP where no token."""
    plan: list[Filed] = []
    skipped: list[Observation] = []
    for fixture, token in tokens:
        if token is None:
            needs = fixture_needs(fixture, base.opaque)
            skip = Observation(f"{path} {fixture.label}", "not sent", needs, Status.SKIP)
            skipped.append(skip.of(fixture.ref))
            continue
        label = f"{base.principal.name} {fixture.label}"
        md = bearer(token, base.principal.presentation)
        plan.append((fixture.ref, Call(label, path, (request,), None, md)))
    return plan, skipped


def judge_step_up(
    ref: str, call: Call, result: CallResult, step_up: grpc.StatusCode
) -> Observation:
    """(a) ``step_up`` (PERMISSION_DENIED, or 16) and no data; (b) neither 7 nor 16.

    (b) that never reached the service (UNAVAILABLE, DEADLINE_EXCEEDED) is INCONCLUSIVE.
    """
    if ref == "a":
        return refused(call, result, expected=(step_up,), low=()).of(ref)
    where, observed = f"{call.label} -> {call.method}", result.summary()
    expected = "neither PERMISSION_DENIED nor UNAUTHENTICATED"
    if result.code in UNREACHED and not result.responses:
        status = Status.INCONCLUSIVE
    elif result.code in (PERMISSION_DENIED, UNAUTHENTICATED):
        status = Status.FAIL
    else:
        status = Status.PASS
    return Observation(where, observed, expected, status, Severity.MEDIUM, result.request_id).of(
        ref
    )


def _step_up_plan(run: Run, policy: Policy, path: str) -> tuple[list[Filed], list[Observation]]:
    found, _ = valid_tokens(run)
    allowed = policy.allowed(path) or frozenset()
    # A JWT first: the fixtures can be minted from it; an opaque token takes configured ones.
    mine = sorted((h for h in found if h.principal.name in allowed), key=lambda h: h.opaque)
    if not mine:
        needs = "a principal allowed on it with a bearer token"
        return [], [Observation(path, "not sent", needs, Status.SKIP).of(r) for r in "ab"]
    base = mine[0]
    fixtures = mfa_fixtures(
        run.config.str_list("auth.required_amr"), run.config.str_("auth.required_acr")
    )
    now = int(time.time())
    tokens = [(f, issuer_signed(run, f, base, now)) for f in fixtures]
    return step_up_plan(path, policy.request(run, path), base, tokens)


@check("AUTHN-008", probes=AUTHN_008_PROBES)
def mfa_for_privileged(run: Run) -> Outcome:
    """MFA evidence required for privileged methods.

    For each ``auth.privileged_methods`` entry: (a) a token of a principal allowed there
    whose ``amr`` lacks every ``auth.required_amr`` value, and, when ``auth.required_acr``
    is set, one whose ``acr`` is below it (:data:`LOWEST_ACR`, every required ``amr``
    present), must each get PERMISSION_DENIED (or ``auth.step_up_code``) with no data; (b)
    the same with MFA evidence (the required ``amr`` and ``acr``) must get neither
    PERMISSION_DENIED nor UNAUTHENTICATED. Fixtures ``admin_no_mfa`` / ``admin_mfa`` are
    used if configured (of any shape), else minted from a JWT T with the issuer key; the
    low-``acr`` token beside a configured ``admin_no_mfa`` can only be minted (see
    :func:`mfa_fixtures`).
    """
    privileged = run.config.str_list("auth.privileged_methods")
    if not privileged:
        raise NotApplicable("no auth.privileged_methods declared")
    policy = policy_or_skip(run)
    step_up = UNAUTHENTICATED if run.config.get("auth.step_up_code") == 16 else PERMISSION_DENIED
    observations: list[Observation] = []
    for path in privileged:
        plan, skipped = _step_up_plan(run, policy, path)
        observations += skipped
        sent = send_filed(run, plan)
        observations += [judge_step_up(ref, c, r, step_up) for ref, c, r in sent]
    return Outcome.from_observations(
        CATALOGUE["AUTHN-008"], observations, passed="privileged methods demand MFA evidence"
    )


# -- AUTHN-009 --------------------------------------------------------------------------

AUTHN_009_PROBES = (
    Probe(
        "stream",
        "a stream kept open past its token's exp ends UNAUTHENTICATED and goes quiet",
        needs=("auth.stream_methods",),
    ),
)


@check("AUTHN-009", probes=AUTHN_009_PROBES)
def streams_end_at_expiry(run: Run) -> Outcome:
    """Long-lived streams end when the credential expires (automatic logoff).

    For each ``auth.stream_methods`` entry, a principal allowed on it opens the stream
    (``auth.stream_templates``, else the request template) with a token that has a few
    seconds of life left: minted with the issuer key, or its own token when its remaining
    life is within ``auth.max_wait_s``. Bidi streams get the template again every second.
    The stream must end UNAUTHENTICATED by ``exp + auth.clock_skew_s +
    auth.stream_grace_s`` and deliver nothing after ``exp + skew``, as the client sees it
    less the stream's own transit time (twice its first message's latency, 0.25-1 s).
    A failure within a loaded host's noise (see :func:`judge_stream`) is set aside and a
    second stream, with a fresh token, decides: both are observations of the one probe.
    Every entry must be tested: one that could not be (no allowed principal with a working
    JWT, no token that expires soon, not a stream in the descriptors) beside one that was
    leaves the control INCONCLUSIVE, naming it. Most of it is waiting for the token to
    expire, so it starts in the background once the run's other early work (scan, input
    generation) is done.
    """
    observations = _expiring_streams(run)
    if isinstance(observations, str):
        raise NotApplicable(observations)
    return Outcome.from_observations(
        CATALOGUE["AUTHN-009"], observations, passed="streams end when their credential expires"
    )


@warmup("AUTHN-009", late=True)
def _expiring_streams(run: Run) -> list[Observation] | str:
    return run.memo("authn-009", lambda: _open_expiring_streams(run))


def _open_expiring_streams(run: Run) -> list[Observation] | str:
    """Every stream method's observations, or why none could be opened."""
    methods = run.config.str_list("auth.stream_methods")
    if not methods:
        return "no auth.stream_methods declared"
    policy = Policy.of(run)
    if policy is None:
        return NO_DESCRIPTORS.format(run.catalogue_problem())
    held, _ = valid_tokens(run)
    found = [b for b in map(as_base, held) if b is not None]
    tested = []
    for path in methods:
        allowed = policy.allowed(path) or frozenset()
        base = next((b for b in found if b.principal.name in allowed and b.accepted), None)
        if not _is_stream(policy, path):
            tested.append((path, [not_a_stream(path)]))
        elif base is None:
            tested.append((path, [stream_unsent(path, held, allowed)]))
        else:
            tested.append((path, _stream_observations(run, policy, path, base)))
    return every_stream_tested(tested)


def _is_stream(policy: Policy, path: str) -> bool:
    """Whether the descriptors declare ``path`` as a server-streaming or bidi method."""
    try:
        return policy.catalogue.method(path).server_streaming
    except KeyError:
        return False


def _stream_observations(run: Run, policy: Policy, path: str, base: Base) -> list[Observation]:
    """One stream method's observations: its stream, and a second one if that was marginal."""
    first = _expiring_stream(run, policy, path, base)
    if not first.marginal:
        return [first.observation.of("stream")]
    # Messages less than a second past the line, or an end that missed the deadline
    # with nothing late, are what a loaded host does to an honest server too: they
    # count only when a second stream, with a fresh token, fails again.
    return decided_again(first, _expiring_stream(run, policy, path, base))


def not_a_stream(path: str) -> Observation:
    """An ``auth.stream_methods`` entry the descriptors do not declare as a server stream."""
    needs = "a server-streaming or bidi method in the descriptors"
    return Observation(path, "not sent", needs, Status.SKIP).of("stream")


def every_stream_tested(tested: Sequence[tuple[str, list[Observation]]]) -> list[Observation]:
    """Every declared stream method must be tested (catalogue section 6).

    ``tested`` holds each ``auth.stream_methods`` entry with its observations. When some
    method was tested (a non-SKIP observation) and another was not, the untested one is
    INCONCLUSIVE, named with what it needed: a PASS on one stream says nothing of the
    other. When none was tested their SKIPs stand (the control is SKIP, saying why).
    """
    ran = {path for path, obs in tested if any(o.status is not Status.SKIP for o in obs)}
    out: list[Observation] = []
    for path, obs in tested:
        if not ran or path in ran:
            out += obs
            continue
        why = "; ".join(f"{o.observed}, needs {o.expected}" for o in obs)
        out.append(
            Observation(
                path,
                f"not tested ({why})",
                "every auth.stream_methods entry tested",
                Status.INCONCLUSIVE,
            ).of("stream")
        )
    return out


def stream_unsent(path: str, held: Sequence[Held], allowed: Collection[str]) -> Observation:
    """No allowed principal has a working JWT: why the stream on ``path`` was not opened.

    An opaque token has no ``exp`` to wait for and cannot be re-minted to expire soon:
    named, so that the report says it is the token's shape, not a missing principal.
    """
    needs = "an allowed principal with a working JWT"
    opaque = [h.principal.name for h in held if h.opaque and h.principal.name in allowed]
    if opaque:
        needs += (
            f" ({', '.join(opaque)}: opaque tokens, whose expiry cannot be read, "
            "nor a token that expires soon minted from them)"
        )
    return Observation(path, "not sent", needs, Status.SKIP).of("stream")


@dataclass(frozen=True)
class StreamVerdict:
    """One expiring stream's verdict, and whether it was within a loaded host's noise."""

    observation: Observation
    marginal: bool = False


def decided_again(first: StreamVerdict, again: StreamVerdict) -> list[Observation]:
    """A marginal first stream set aside (recorded, not counted); the second one decides."""
    aside = replace(
        first.observation,
        probe=f"{first.observation.probe} (first stream)",
        observed=f"{first.observation.observed}; within a loaded host's noise: set aside, "
        "a second stream decides",
        status=Status.SKIP,
        severity=None,
    )
    return [aside.of("stream"), again.observation.of("stream")]


def judge_stream(
    where: str,
    result: CallResult,
    *,
    started: float,
    finished: float,
    exp: float,
    skew: int,
    grace: int,
) -> StreamVerdict:
    """One stream opened at ``started`` with a token expiring at ``exp`` (wall clock, s).

    PASS when it ended UNAUTHENTICATED with no message past ``exp + skew`` plus the
    stream's own transit time (twice its first message's latency, 0.25-1 s). A message past
    that line, or a deadline instead of an end, is FAIL (high); an OK end after ``exp``,
    or any other code, FAIL (medium); an OK end before ``exp`` (``finished`` earlier), or
    UNAVAILABLE with nothing late (the stream's end was never seen), INCONCLUSIVE. A FAIL is
    marginal when the late messages all came within a second of the line on a stream that
    did end UNAUTHENTICATED, or the deadline came with nothing late.
    """
    # Arrival times are the client's: a message the server sent just before exp + skew can
    # land just after it on a loaded host. Allow for the transit time this stream showed
    # on its first message (0.25 s to 1 s).
    transit = min(1.0, max(0.25, 2 * result.arrivals[0])) if result.arrivals else 0.25
    line = exp + skew + transit
    past = [started + t - line for t in result.arrivals if started + t > line]
    expected = (
        f"ends UNAUTHENTICATED (16) within exp + {skew + grace} s, "
        f"nothing after exp + {skew} s (+ {transit:.2f} s transit)"
    )
    observed = f"{result.summary()}, {len(past)} message(s) after exp + skew"
    if past:
        observed += f" (the last {max(past):.2f} s past the line)"
    ended = result.code == UNAUTHENTICATED
    deadline = result.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # Late messages bunched within a second of the line, on a stream that did end, are what
    # a starved client thread or server makes of an honest cadence (seen in CI: three
    # messages, the last 0.10 s past the line): they count only if a second stream agrees.
    marginal = (ended and max(past, default=0) < 1.0) or (deadline and not past)
    if past or deadline:
        status, sev = Status.FAIL, Severity.HIGH
    elif ended:
        status, sev = Status.PASS, None
    elif result.code == grpc.StatusCode.UNAVAILABLE:
        status, sev = Status.INCONCLUSIVE, None
        observed += " (the connection failed: no end of the stream was seen)"
    elif result.code == grpc.StatusCode.OK and finished < exp:
        status, sev = Status.INCONCLUSIVE, None
        observed += (
            " (the stream ended by itself before the token expired: "
            "use a long-lived auth.stream_templates entry)"
        )
    else:
        status, sev = Status.FAIL, Severity.MEDIUM
    observation = Observation(where, observed, expected, status, sev, result.request_id)
    return StreamVerdict(observation, marginal=status is Status.FAIL and marginal)


def _expiring_stream(run: Run, policy: Policy, path: str, base: Base) -> StreamVerdict:
    skew = int(run.config.get("auth.clock_skew_s", 60))
    grace = int(run.config.get("auth.stream_grace_s", 60))
    max_wait = float(run.config.get("auth.max_wait_s", 120))
    keys = run.issuer_keys()
    now = time.time()
    if keys.private_key is not None:
        token, exp = base.expiring(keys, 1)
    else:
        if not isinstance(base.token.claims.get("exp"), (int, float)):
            return StreamVerdict(
                Observation(
                    path,
                    f"{base.principal.name}'s token has no exp, and no issuer key to mint one",
                    "a token that expires (auth.issuer_private_key)",
                    Status.SKIP,
                ).of("stream")
            )
        exp = int(base.token.claims["exp"])
        token = base.principal.token()
    wait = exp + skew + grace - now
    if wait > max_wait:
        return StreamVerdict(
            Observation(
                path,
                f"token expires in {exp - now:.0f} s",
                f"a token that expires within auth.max_wait_s ({max_wait:g} s), "
                "or auth.issuer_private_key",
                Status.SKIP,
            )
        )
    method = policy.catalogue.method(path)
    request = policy.catalogue.request_bytes(
        path, template_text(run, path, "auth.stream_templates")
    )
    requests: Any = (request,)
    if method.client_streaming:
        requests = _every_second(request, wait)
    started = time.time()
    result = run.call(
        path,
        requests,
        extra_metadata=bearer(token, base.principal.presentation),
        timeout=wait + 1,
        max_responses=100_000,
    )
    where = f"{path} with a token expiring in {exp - now:.1f} s ({base.principal.name})"
    return judge_stream(
        where, result, started=started, finished=time.time(), exp=exp, skew=skew, grace=grace
    )


def _every_second(request: bytes, seconds: float) -> Iterator[bytes]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield request
        time.sleep(1.0)
