"""Authentication controls (AUTHN-*).

Every negative is judged by what the caller sees (code, messages), never by the target's
error text, so the same checks hold for servers in any language. The valid tokens every
forgery starts from, and AUTHN-001's calls, are plans other families share
(:mod:`harness.plans.tokens`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check, warmup
from harness.oracles import PERMISSION_DENIED, UNAUTHENTICATED, UNREACHED, refused
from harness.outcome import Observation, Outcome, Status
from harness.plans.calls import Call, bearer, policy_or_skip, send, template_text
from harness.plans.tokens import B64URL, Base, authn_basic_calls, bases, run_nonce
from harness.policy import Policy
from harness.principals import principals_from
from harness.run import Run
from harness.tokens import (
    harness_key,
    hmac_with,
    json_serialization,
    parse,
    sign,
    tamper,
    unsigned,
    with_signature,
)

_OVERSIZE = 8 * 1024


def _forgery_outcome(
    run: Run,
    control_id: str,
    make: Callable[[Base], list[tuple[str, str]]],
    passed: str,
    notes: list[Observation] | None = None,
) -> Outcome:
    """Send each base's forged tokens to its method; every one must get 16 and no data.

    A token over 8 KiB may instead hit the metadata size limit (RESOURCE_EXHAUSTED).
    """
    control = CATALOGUE[control_id]
    found, why = bases(run)
    if not found:
        return Outcome.skip(control, why)
    observations = list(notes or [])
    probes = []
    for base in found:
        if not base.accepted:
            observations.append(
                Observation(
                    f"valid token of {base.principal.name} -> {base.method.path}",
                    base.control.summary(),
                    "accepted (the control call), so that forgeries of it can be judged",
                    Status.INCONCLUSIVE,
                    request_id=base.control.request_id,
                )
            )
            continue
        for label, token in make(base):
            probes.append(
                Call(
                    f"{label} (from {base.principal.name}'s token)",
                    base.method.path,
                    (base.request,),
                    None,
                    bearer(token),
                    retry_exhausted=len(token) <= _OVERSIZE,
                )
            )
    for p, r in send(run, probes):
        oversize = sum(len(v) for _, v in p.metadata) > _OVERSIZE
        expected = (
            (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED)
            if oversize
            else (grpc.StatusCode.UNAUTHENTICATED,)
        )
        observations.append(refused(p, r, expected=expected))
    return Outcome.from_observations(control, observations, passed=passed)


# -- AUTHN-001 --------------------------------------------------------------------------


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


def _fuzzed_tokens(run: Run, base: Base, count: int) -> list[str]:
    tokens: list[str] = []
    original = base.principal.token()

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(run.options.seed)
    @given(_mutations(original))
    def collect(t: str) -> None:
        tokens.append(t)

    collect()
    return tokens[:count]


@check("AUTHN-001")
def credentials_required(run: Run) -> Outcome:
    """Missing, malformed or ambiguous credentials rejected on every method.

    For every declared method except ``schema.public_methods``: V1 no credentials, V2
    ``Bearer`` alone, V3 ``Bearer abc``, V4 Basic, V5 random segments, V6 a 12 KiB token,
    V7 a valid token under the wrong metadata key; each must get UNAUTHENTICATED and no
    data (V6 may get RESOURCE_EXHAUSTED; PERMISSION_DENIED is FAIL (low)). V8 sends the
    least-privileged and admin tokens together on admin-only methods: UNAUTHENTICATED or
    PERMISSION_DENIED pass, any success is critical. V9: 50 Hypothesis mutations of a valid
    token against one method. Writes get an empty request unless mutations are allowed.
    """
    control = CATALOGUE["AUTHN-001"]
    calls = authn_basic_calls(run)
    if isinstance(calls, str):
        return Outcome.skip(control, calls)
    if not calls:
        return Outcome.skip(
            control,
            "the descriptors declare no method outside schema.public_methods "
            "and gRPC infrastructure",
        )
    observations = []
    for probe, result in calls:
        if probe.label.startswith("V8"):
            observations.append(
                refused(
                    probe,
                    result,
                    expected=(grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED),
                    low=(),
                )
            )
        elif probe.label.startswith("V6"):
            observations.append(
                refused(
                    probe,
                    result,
                    expected=(grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED),
                )
            )
        else:
            observations.append(refused(probe, result))
    found, _ = bases(run)
    accepted = [b for b in found if b.accepted]
    if accepted:
        base = accepted[0]
        probes = [
            Call("V9 mutated token", base.method.path, (base.request,), None, bearer(t))
            for t in _fuzzed_tokens(run, base, 50)
        ]
        observations += [refused(p, r) for p, r in send(run, probes)]
    return Outcome.from_observations(
        control, observations, passed=f"{len(observations)} unauthenticated probes refused"
    )


# -- AUTHN-002 ... AUTHN-004: forged tokens ---------------------------------------------


@check("AUTHN-002")
def algorithm_allowlist(run: Run) -> Outcome:
    """Algorithm allowlist: ``none`` and algorithm confusion rejected.

    From each role's valid token T (whose control call must succeed): ``alg`` none, None,
    NONE and nOnE with an empty signature; T's claims signed HS256/384/512 with the
    issuer's public key as the secret (PEM with and without newline, DER, JWK; needs
    ``auth.jwks_file``); the other algorithm family (RS256/PS256 for an EC issuer, ES256
    for an RSA one) with a harness key; unregistered ``alg`` names RS1 and XYZ. Every token
    must get UNAUTHENTICATED and no data.
    """
    keys = run.issuer_keys()
    forms = keys.public_key_forms()

    def make(base: Base) -> list[tuple[str, str]]:
        h, c = base.token.header, base.token.claims
        out = [
            (f"alg {name!r}, empty signature", unsigned(c, h, name))
            for name in ("none", "None", "NONE", "nOnE")
        ]
        for alg in ("HS256", "HS384", "HS512"):
            out += [
                (f"{alg} keyed with the issuer's {form}", hmac_with(c, h, alg, secret))
                for form, secret in forms
            ]
        if str(h.get("alg", "")).startswith("ES"):
            out += [
                (f"{a} signed with a harness RSA key", sign(c, harness_key("rsa"), a, h))
                for a in ("RS256", "PS256")
            ]
        else:
            out.append(
                ("ES256 signed with a harness EC key", sign(c, harness_key("ec"), "ES256", h))
            )
        out += [(f"unregistered alg {a!r}", hmac_with(c, h, a, b"harness")) for a in ("RS1", "XYZ")]
        return out

    notes = []
    if not forms:
        notes.append(
            Observation(
                "HS* keyed with the issuer's public key",
                "not sent",
                "auth.jwks_file to know the key",
                Status.SKIP,
            )
        )
    return _forgery_outcome(
        run, "AUTHN-002", make, "every none / confused / unregistered algorithm refused", notes
    )


@check("AUTHN-003")
def signature_integrity(run: Run) -> Outcome:
    """Signature integrity: tampered claims and foreign keys rejected.

    T's control call is made first (a server that caches verified signatures sees T).
    Then: T with ``sub``, roles/scope or ``exp`` (+1 year) changed under the original
    signature; T with its signature truncated, zeroed, or one bit flipped; T's claims
    signed by a harness key under T's ``kid``; T in JWS JSON serialization. Every token
    must get UNAUTHENTICATED and no data.
    """
    nonce = run_nonce(run)

    def make(base: Base) -> list[tuple[str, str]]:
        t = base.token
        c = t.claims
        from jwt.utils import base64url_decode

        sig = base64url_decode(t.segments[2])
        flipped = bytes([sig[0] ^ 0x01]) + sig[1:]
        out = [
            ("sub changed, signature kept", tamper(t, sub=f"attacker-{nonce}")),
            (
                "exp pushed a year forward, signature kept",
                tamper(t, exp=int(c.get("exp", time.time())) + 365 * 86400),
            ),
            ("signature truncated", f"{t.segments[0]}.{t.segments[1]}.{t.segments[2][:-8]}"),
            ("signature zeroed", with_signature(t, bytes(len(sig)))),
            ("one signature bit flipped", with_signature(t, flipped)),
            (
                "claims signed by a harness key under the real kid",
                sign(c, *_same_family_key(t.header), t.header),
            ),
            ("JWS JSON serialization", json_serialization(t)),
        ]
        for claim in ("roles", "scope", "scp", "groups"):
            if claim in c:
                value: Any = (
                    [*c[claim], "admin"] if isinstance(c[claim], list) else f"{c[claim]} admin"
                )
                out.append(
                    (f"{claim} raised to admin, signature kept", tamper(t, **{claim: value}))
                )
        # A change that leaves the payload as it was is no forgery: drop it.
        return [(label, tok) for label, tok in out if tok != base.principal.token()]

    return _forgery_outcome(
        run, "AUTHN-003", make, "every tampered or foreign-signed token refused"
    )


def _same_family_key(header: dict[str, Any]) -> tuple[Any, str]:
    alg = str(header.get("alg", "ES256"))
    if alg.startswith("ES"):
        return harness_key("ec"), "ES256"
    return harness_key("rsa"), alg if alg in (
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
    ) else "RS256"


@check("AUTHN-004")
def key_selection_headers(run: Run) -> Outcome:
    """Untrusted key-selection headers (kid, jku, x5u, jwk, x5c) not honoured.

    Harness-signed tokens carrying T's claims with: ``kid`` path traversal to /dev/null
    (HS256, empty key); ``kid`` SQL injection (HS256, key "k"); an 8 KiB and a non-ASCII
    ``kid``; ``jku`` and ``x5u`` pointing at a canary host under .invalid; an embedded
    ``jwk`` holding the harness public key; an embedded ``x5c`` self-signed chain. Every
    token must get UNAUTHENTICATED and no data.
    """
    nonce = run_nonce(run)
    ec_key = harness_key("ec")

    def make(base: Base) -> list[tuple[str, str]]:
        h, c = dict(base.token.header), base.token.claims
        canary = f"https://{nonce}.canary.invalid/jwks.json"
        jwk = _public_jwk(ec_key)
        return [
            (
                "kid path traversal, HS256 with empty key",
                hmac_with(c, {**h, "kid": "../../../../../../dev/null"}, "HS256", b""),
            ),
            (
                "kid SQL injection, HS256 with key 'k'",
                hmac_with(c, {**h, "kid": "' UNION SELECT 'k'--"}, "HS256", b"k"),
            ),
            ("8 KiB kid", sign(c, ec_key, "ES256", {**h, "kid": "k" * 8192})),
            ("non-ASCII kid", sign(c, ec_key, "ES256", {**h, "kid": f"ключ-{nonce}"})),
            ("jku to a canary host", sign(c, ec_key, "ES256", {**h, "jku": canary})),
            ("x5u to a canary host", sign(c, ec_key, "ES256", {**h, "x5u": canary})),
            ("embedded jwk with the harness key", sign(c, ec_key, "ES256", {**h, "jwk": jwk})),
            (
                "embedded x5c self-signed chain",
                sign(c, ec_key, "ES256", {**h, "x5c": [_self_signed_b64(ec_key)]}),
            ),
        ]

    return _forgery_outcome(run, "AUTHN-004", make, "no key-selection header was honoured")


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


def _fixture(
    run: Run, name: str, base: Base, claims: dict[str, Any], header: dict[str, Any] | None = None
) -> str | None:
    """``auth.fixtures.<name>`` if configured, else a token minted with the issuer key."""
    fixtures = principals_from(run.config.table("auth.fixtures"), "config")
    if name in fixtures:
        return fixtures[name].token()
    keys = run.issuer_keys()
    if keys.private_key is None:
        return None
    return keys.mint(claims, header if header is not None else base.token.header)


#: (label, fixture name, claims change (claims, now) -> claims, header or None for T's)
Variant = tuple[str, str, Callable[[dict[str, Any], int], dict[str, Any]], "dict[str, Any] | None"]


def _fixture_outcome(
    run: Run,
    control_id: str,
    variants: Sequence[Variant],
    passed: str,
    extra: list[Observation] | None = None,
) -> Outcome:
    """Send issuer-signed variants of the first accepted base; each must get 16, no data."""
    control = CATALOGUE[control_id]
    found, why = bases(run)
    accepted = [b for b in found if b.accepted]
    observations = list(extra or [])
    if not accepted:
        if observations:
            return Outcome.from_observations(control, observations, passed=passed)
        return Outcome.skip(control, why or "no principal's valid token was accepted")
    base = accepted[0]
    now = int(time.time())
    probes = []
    for label, fixture, change, header in variants:
        token = _fixture(run, fixture, base, change(dict(base.token.claims), now), header)
        if token is None:
            observations.append(
                Observation(
                    label,
                    "not sent",
                    f"auth.fixtures.{fixture} or auth.issuer_private_key",
                    Status.SKIP,
                )
            )
            continue
        probes.append(
            Call(
                f"{label} ({base.principal.name})",
                base.method.path,
                (base.request,),
                None,
                bearer(token),
            )
        )
    observations += [refused(p, r) for p, r in send(run, probes)]
    return Outcome.from_observations(control, observations, passed=passed)


def _without(claims: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k not in names}


@check("AUTHN-005")
def time_claims(run: Run) -> Outcome:
    """Time claims enforced; token lifetime short.

    (a) Every principal's token, decoded without verification, has ``exp`` and a
    lifetime ``exp - iat`` within ``auth.max_token_ttl_s`` (3600), or
    ``auth.max_privileged_ttl_s`` (900) for principals allowed on
    ``auth.privileged_methods`` (FAIL medium). Issuer-signed fixtures (configured, or
    minted with ``auth.issuer_private_key``): (b) expired beyond ``auth.clock_skew_s``,
    (c) ``nbf`` ten minutes ahead, (d) no ``exp``: each must get UNAUTHENTICATED. (e) With
    ``auth.max_wait_s`` set: a minted token used while valid, then again 5 s past
    ``exp + skew``, must be refused the second time (see :func:`_held_token`).
    """
    policy = Policy.of(run)
    max_ttl = int(run.config.get("auth.max_token_ttl_s", 3600))
    max_priv = int(run.config.get("auth.max_privileged_ttl_s", 900))
    skew = int(run.config.get("auth.clock_skew_s", 60))
    privileged: set[str] = set()
    if policy is not None:
        for path in run.config.str_list("auth.privileged_methods"):
            privileged |= set(policy.allowed(path) or ())
    ttl_obs = []
    for name, principal in run.principals.items():
        token = parse(principal.token()) if principal.has_token else None
        if token is None:
            continue
        limit = max_priv if name in privileged else max_ttl
        exp, iat = token.claims.get("exp"), token.claims.get("iat")
        probe = f"lifetime of {name}'s token"
        if not isinstance(exp, (int, float)):
            ttl_obs.append(
                Observation(probe, "no exp claim", "exp present", Status.FAIL, Severity.CRITICAL)
            )
        elif isinstance(iat, (int, float)):
            ttl = int(exp - iat)
            ok = ttl <= limit
            ttl_obs.append(
                Observation(
                    probe,
                    f"exp - iat = {ttl} s",
                    f"<= {limit} s",
                    Status.PASS if ok else Status.FAIL,
                    None if ok else Severity.MEDIUM,
                )
            )
    variants: list[Variant] = [
        (
            "expired token",
            "expired",
            lambda c, now: {**c, "iat": now - 7200, "nbf": now - 7200, "exp": now - skew - 300},
            None,
        ),
        (
            "token not yet valid (nbf +10 min)",
            "nbf_future",
            lambda c, now: {**c, "iat": now, "nbf": now + 600, "exp": now + 900},
            None,
        ),
        ("token without exp", "no_exp", lambda c, now: _without(c, "exp"), None),
    ]
    held = _held_token(run)
    return _fixture_outcome(
        run,
        "AUTHN-005",
        variants,
        "time claims enforced and lifetimes within policy",
        [*ttl_obs, *([held] if held is not None else [])],
    )


#: (e) The token is held this long past ``exp + auth.clock_skew_s`` before it is used again.
HOLD_PAST_SKEW_S = 5


@warmup("AUTHN-005", waits=True)
def _held_token(run: Run) -> Observation | None:
    """(e) A token used while valid, held past ``exp + skew + 5 s``, then used again.

    Runs only when ``auth.max_wait_s`` is set (the wait mode is optional) and
    ``auth.issuer_private_key`` can mint a token that expires in 2 s. The second use must
    get UNAUTHENTICATED: a server that caches a verified token past its ``exp`` fails
    (critical). It is mostly a wait, so it starts in the background when the run opens.
    """
    return run.memo("authn-005-held", lambda: _hold(run))


def _hold(run: Run) -> Observation | None:
    if not run.config.has("auth.max_wait_s"):
        return None
    probe = "a token used while valid, then held past exp + skew + 5 s"
    skew = int(run.config.get("auth.clock_skew_s", 60))
    max_wait = float(run.config.get("auth.max_wait_s"))
    keys = run.issuer_keys()
    accepted = [b for b in bases(run)[0] if b.accepted]
    if keys.private_key is None or not accepted:
        needs = "auth.issuer_private_key" if keys.private_key is None else "an accepted token"
        return Observation(probe, "not sent", f"{needs} (wait mode)", Status.SKIP)
    if 2 + skew + HOLD_PAST_SKEW_S > max_wait:
        return Observation(
            probe,
            "not sent",
            f"exp + skew + {HOLD_PAST_SKEW_S} s within auth.max_wait_s ({max_wait:g} s)",
            Status.SKIP,
        )
    base = accepted[0]
    token, exp = base.expiring(keys, 2)
    who = f"{probe} ({base.principal.name})"
    fresh = run.call(base.method.path, [base.request], extra_metadata=bearer(token))
    if fresh.code in (UNAUTHENTICATED, PERMISSION_DENIED, *UNREACHED):
        return Observation(
            f"{who} -> {base.method.path}",
            f"refused while valid: {fresh.summary()}",
            "accepted while valid, so that its later use can be judged",
            Status.INCONCLUSIVE,
            request_id=fresh.request_id,
        )
    time.sleep(max(0.0, exp + skew + HOLD_PAST_SKEW_S - time.time()))
    late = run.call(base.method.path, [base.request], extra_metadata=bearer(token))
    return refused(
        Call(f"{who}, {time.time() - exp:.1f} s after exp", base.method.path, ()),
        late,
        data_severity=Severity.CRITICAL,
    )


@check("AUTHN-006")
def audience_and_issuer(run: Run) -> Outcome:
    """Audience and issuer binding.

    Issuer-signed fixtures (configured, or minted with ``auth.issuer_private_key``): (a)
    ``aud`` of another resource, (b) no ``aud``, (c) ``iss`` of another realm; and (d) the
    right ``iss`` signed by a harness key under another issuer's ``kid``. Every token must
    get UNAUTHENTICATED and no data.
    """
    nonce = run_nonce(run)
    variants: list[Variant] = [
        (
            "token for another audience",
            "wrong_aud",
            lambda c, now: {**c, "aud": f"https://other-{nonce}.invalid"},
            None,
        ),
        ("token without aud", "no_aud", lambda c, now: _without(c, "aud"), None),
        (
            "token from another issuer realm",
            "wrong_iss",
            lambda c, now: {**c, "iss": f"{c.get('iss', '')}/realms/other-{nonce}"},
            None,
        ),
    ]
    found, _ = bases(run)
    extra = []
    accepted = [b for b in found if b.accepted]
    if accepted:
        base = accepted[0]
        key, alg = _same_family_key(base.token.header)
        token = sign(
            base.token.claims, key, alg, {**base.token.header, "kid": f"other-issuer-{nonce}"}
        )
        probe = Call(
            f"right iss, other issuer's key ({base.principal.name})",
            base.method.path,
            (base.request,),
            None,
            bearer(token),
        )
        extra = [refused(p, r) for p, r in send(run, [probe])]
    return _fixture_outcome(run, "AUTHN-006", variants, "audience and issuer enforced", extra)


@check("AUTHN-007")
def token_type(run: Run) -> Outcome:
    """Token-type confusion rejected.

    Issuer-signed fixtures (configured, or minted): (a) an OIDC ID token (``aud`` =
    client_id, ``typ`` JWT), (b) a refresh token (``typ`` refresh+jwt), (c) T's claims
    with ``typ`` JWT when ``auth.require_typ`` is set. Every token must get
    UNAUTHENTICATED.
    """
    required = run.config.str_("auth.require_typ")
    variants: list[Variant] = []
    found, _ = bases(run)
    header = dict(found[0].token.header) if found else {}
    variants.append(
        (
            "OIDC ID token",
            "id_token",
            lambda c, now: {**c, "aud": c.get("client_id", "client"), "nonce": "n"},
            {**header, "typ": "JWT"},
        )
    )
    variants.append(
        (
            "refresh token",
            "refresh_token",
            lambda c, now: {**c, "token_use": "refresh"},
            {**header, "typ": "refresh+jwt"},
        )
    )
    if required:
        variants.append(
            (
                f"typ JWT where {required} is required",
                "other_typ",
                lambda c, now: dict(c),
                {**header, "typ": "JWT"},
            )
        )
    return _fixture_outcome(run, "AUTHN-007", variants, "ID, refresh and other token types refused")


@check("AUTHN-008")
def mfa_for_privileged(run: Run) -> Outcome:
    """MFA evidence required for privileged methods.

    For each ``auth.privileged_methods`` entry: (a) a token of a principal allowed there
    whose ``amr`` lacks every ``auth.required_amr`` value must get PERMISSION_DENIED (or
    ``auth.step_up_code``) with no data; (b) the same with MFA evidence must get neither
    PERMISSION_DENIED nor UNAUTHENTICATED. Fixtures ``admin_no_mfa`` / ``admin_mfa`` are
    used if configured, else minted with the issuer key.
    """
    control = CATALOGUE["AUTHN-008"]
    privileged = run.config.str_list("auth.privileged_methods")
    required = run.config.str_list("auth.required_amr") or ["mfa"]
    if not privileged:
        return Outcome.skip(control, "no auth.privileged_methods declared")
    policy = policy_or_skip(run, "AUTHN-008")
    if isinstance(policy, Outcome):
        return policy
    found, why = bases(run)
    step_up = (
        grpc.StatusCode.UNAUTHENTICATED
        if run.config.get("auth.step_up_code") == 16
        else grpc.StatusCode.PERMISSION_DENIED
    )
    observations = []
    for path in privileged:
        allowed = policy.allowed(path) or frozenset()
        base = next((b for b in found if b.principal.name in allowed), None)
        if base is None:
            observations.append(
                Observation(path, "not sent", "a principal allowed on it with a JWT", Status.SKIP)
            )
            continue
        request = policy.request(run, path)
        no_mfa = _fixture(run, "admin_no_mfa", base, {**base.token.claims, "amr": ["pwd"]})
        with_mfa = _fixture(
            run, "admin_mfa", base, {**base.token.claims, "amr": ["pwd", *required]}
        )
        if no_mfa is None or with_mfa is None:
            observations.append(
                Observation(
                    path,
                    "not sent",
                    "auth.fixtures.admin_(no_)mfa or auth.issuer_private_key",
                    Status.SKIP,
                )
            )
            continue
        (p1, r1), (p2, r2) = send(
            run,
            [
                Call(
                    f"{base.principal.name} without MFA evidence",
                    path,
                    (request,),
                    None,
                    bearer(no_mfa),
                ),
                Call(
                    f"{base.principal.name} with MFA evidence",
                    path,
                    (request,),
                    None,
                    bearer(with_mfa),
                ),
            ],
        )
        observations.append(refused(p1, r1, expected=(step_up,), low=()))
        ok = r2.code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
        observations.append(
            Observation(
                f"{p2.label} -> {path}",
                r2.summary(),
                "neither PERMISSION_DENIED nor UNAUTHENTICATED",
                Status.PASS if ok else Status.FAIL,
                Severity.MEDIUM,
                r2.request_id,
            )
        )
    if not observations:
        return Outcome.skip(control, why)
    return Outcome.from_observations(
        control, observations, passed="privileged methods demand MFA evidence"
    )


# -- AUTHN-009 --------------------------------------------------------------------------


@check("AUTHN-009")
def streams_end_at_expiry(run: Run) -> Outcome:
    """Long-lived streams end when the credential expires (automatic logoff).

    For each ``auth.stream_methods`` entry, a principal allowed on it opens the stream
    (``auth.stream_templates``, else the request template) with a token that has a few
    seconds of life left: minted with the issuer key, or its own token when its remaining
    life is within ``auth.max_wait_s``. Bidi streams get the template again every second.
    The stream must end UNAUTHENTICATED by ``exp + auth.clock_skew_s +
    auth.stream_grace_s`` and deliver nothing after ``exp + skew``, as the client sees it
    less the stream's own transit time (twice its first message's latency, 0.25-1 s).
    Most of it is waiting for the token to expire, so it starts in the background once
    the run's other early work (scan, input generation) is done.
    """
    return _expiring_streams(run)


@warmup("AUTHN-009", late=True)
def _expiring_streams(run: Run) -> Outcome:
    return run.memo("authn-009", lambda: _open_expiring_streams(run))


def _open_expiring_streams(run: Run) -> Outcome:
    control = CATALOGUE["AUTHN-009"]
    methods = run.config.str_list("auth.stream_methods")
    if not methods:
        return Outcome.skip(control, "no auth.stream_methods declared")
    policy = policy_or_skip(run, "AUTHN-009")
    if isinstance(policy, Outcome):
        return policy
    found, why = bases(run)
    observations = []
    for path in methods:
        allowed = policy.allowed(path) or frozenset()
        base = next((b for b in found if b.principal.name in allowed and b.accepted), None)
        if base is None:
            observations.append(
                Observation(
                    path, "not sent", "an allowed principal with a working JWT", Status.SKIP
                )
            )
            continue
        first = _expiring_stream(run, policy, path, base)
        if first.marginal:
            # Messages less than a second past the line, or an end that missed the deadline
            # with nothing late, are what a loaded host does to an honest server too: they
            # count only when a second stream, with a fresh token, fails again.
            again = _expiring_stream(run, policy, path, base)
            note = f"; a first stream showed {first.observation.observed}"
            first = again if again.observation.status is not Status.PASS else again.noting(note)
        observations.append(first.observation)
    if not observations:
        return Outcome.skip(control, why)
    return Outcome.from_observations(
        control, observations, passed="streams end when their credential expires"
    )


@dataclass(frozen=True)
class _Stream:
    """One expiring stream's verdict, and whether it was within a loaded host's noise."""

    observation: Observation
    marginal: bool = False

    def noting(self, note: str) -> _Stream:
        return _Stream(replace(self.observation, observed=self.observation.observed + note))


def _expiring_stream(run: Run, policy: Policy, path: str, base: Base) -> _Stream:
    skew = int(run.config.get("auth.clock_skew_s", 60))
    grace = int(run.config.get("auth.stream_grace_s", 60))
    max_wait = float(run.config.get("auth.max_wait_s", 120))
    keys = run.issuer_keys()
    now = time.time()
    if keys.private_key is not None:
        token, exp = base.expiring(keys, 1)
    else:
        exp = int(base.token.claims.get("exp", 0))
        token = base.principal.token()
    wait = exp + skew + grace - now
    if wait > max_wait:
        return _Stream(
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
        path, requests, extra_metadata=bearer(token), timeout=wait + 1, max_responses=100_000
    )
    # Arrival times are the client's: a message the server sent just before exp + skew can
    # land just after it on a loaded host. Allow for the transit time this stream showed
    # on its first message (0.25 s to 1 s).
    transit = min(1.0, max(0.25, 2 * result.arrivals[0])) if result.arrivals else 0.25
    line = exp + skew + transit
    past = [started + t - line for t in result.arrivals if started + t > line]
    where = f"{path} with a token expiring in {exp - now:.1f} s ({base.principal.name})"
    expected = (
        f"ends UNAUTHENTICATED (16) within exp + {skew + grace} s, "
        f"nothing after exp + {skew} s (+ {transit:.2f} s transit)"
    )
    observed = f"{result.summary()}, {len(past)} message(s) after exp + skew"
    if past:
        observed += f" (the last {max(past):.2f} s past the line)"
    ended = result.code == grpc.StatusCode.UNAUTHENTICATED
    deadline = result.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # Late messages bunched within a second of the line, on a stream that did end, are what
    # a starved client thread or server makes of an honest cadence (seen in CI: three
    # messages, the last 0.10 s past the line): they count only if a second stream agrees.
    marginal = (ended and max(past, default=0) < 1.0) or (deadline and not past)
    if past or deadline:
        status, sev = Status.FAIL, Severity.HIGH
    elif ended:
        status, sev = Status.PASS, None
    elif result.code == grpc.StatusCode.OK and time.time() < exp:
        status, sev = Status.INCONCLUSIVE, None
        observed += (
            " (the stream ended by itself before the token expired: "
            "use a long-lived auth.stream_templates entry)"
        )
    else:
        status, sev = Status.FAIL, Severity.MEDIUM
    observation = Observation(where, observed, expected, status, sev, result.request_id)
    return _Stream(observation, marginal=status is Status.FAIL and marginal)


def _every_second(request: bytes, seconds: float) -> Iterator[bytes]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield request
        time.sleep(1.0)
