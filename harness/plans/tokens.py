"""Token plans the AUTHN, AUTHZ, AUDIT, ERR, MIN and LIMIT controls share.

The valid token T of every role with the method it may read and its control call
(:func:`valid_tokens`: JWT or opaque; :func:`bases`: the JWTs, which forgeries start
from), AUTHN-001's credential variants on every protected method
(:func:`authn_basic_calls`) and AUTHZ-001's (method, principal) matrix
(:func:`authz_matrix_calls`): each made once per run, whichever control asks first, so
that no verdict depends on test order or ``-k``. Also the issuer's public key that signs
T, which AUTHN-002 keys its HMAC confusion with (:func:`issuer_public_key`). Planning
(:func:`basic_variants`, :func:`basic_plan`) is pure; the memoised functions send.
"""

from __future__ import annotations

import random
import string
import time
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from harness.channels import CallResult
from harness.descriptors import MethodInfo
from harness.plans.calls import NO_DESCRIPTORS, Call, bearer, send
from harness.plans.jwks import issuer_jwks
from harness.policy import Policy
from harness.principals import BEARER, Presentation, Principal, presentation_of
from harness.run import Run
from harness.tokens import IssuerKeys, Parsed, parse, public_jwk, public_key_forms

#: The base64url alphabet, for random token segments.
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def run_nonce(run: Run) -> str:
    """The run's seed as 8 hex digits: marks the values a run makes up."""
    return f"{run.options.seed:08x}"


def changed(c: str) -> str:
    """Another character of ``c``'s kind (digit, lower or upper case letter, base64url)."""
    for kind in (string.digits, string.ascii_lowercase, string.ascii_uppercase, B64URL):
        if c in kind:
            return kind[(kind.index(c) + 1) % len(kind)]
    return "A"


def altered(token: str, at: int | None = None) -> str:
    """``token`` with one character changed: at ``at``, else its middle one.

    How an opaque token (checked by lookup or introspection, no signature to flip) is
    made invalid while keeping its length and alphabet (AUTHN-003 (b), LIMIT-002 step 3).
    """
    if not token:
        return "A"
    i = len(token) // 2 if at is None else at % len(token)
    return token[:i] + changed(token[i]) + token[i + 1 :]


# -- the valid token T per role, and the methods it may call ---------------------------


def _accepted(control: CallResult) -> bool:
    return control.code not in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


@dataclass(frozen=True)
class Held:
    """A principal's own token T (a JWT or opaque), the method it may read, and T's call.

    Attributes:
        principal: Whose token it is (the token itself is read from it, never kept here).
        token: T parsed, or ``None`` when T is opaque (not a JWT: checked by introspection
            or a lookup the harness cannot see into).
        method: The method T may read.
        request: The request sent there.
        control: T's own call (the control every variant made from T is judged against).
    """

    principal: Principal
    token: Parsed | None
    method: MethodInfo
    request: bytes
    control: CallResult

    @property
    def accepted(self) -> bool:
        """True when T itself was accepted: variants of it are then meaningful.

        A control call that never reached the service (UNAVAILABLE, DEADLINE_EXCEEDED) shows
        nothing: a refused variant beside it proves nothing either.
        """
        return _accepted(self.control)

    @property
    def opaque(self) -> bool:
        """T is not a JWT: nothing in it can be read or re-signed."""
        return self.token is None


@dataclass(frozen=True)
class Base(Held):
    """A :class:`Held` token that is a JWT: forgeries can start from its header and claims."""

    token: Parsed

    def expiring(self, keys: IssuerKeys, life_s: int) -> tuple[str, int]:
        """T re-minted with the issuer key to expire ``life_s`` s from now, and its ``exp``."""
        now = int(time.time())
        exp = now + life_s
        claims = {**self.token.claims, "iat": now, "nbf": now - 1, "exp": exp}
        return keys.mint(claims, self.token.header), exp


def valid_tokens(run: Run) -> tuple[list[Held], str]:
    """T for every role with a bearer token (JWT or opaque) and a readable method (memoised).

    Each comes with its control call. Returns them and, when there are none, why.
    """

    def compute() -> tuple[list[Held], str]:
        policy = Policy.of(run)
        if policy is None:
            return [], NO_DESCRIPTORS.format(run.catalogue_problem())
        found = []
        for name, principal in run.principals.items():
            method = policy.representative_read(name) if principal.has_token else None
            if method is not None:
                found.append((principal, method, policy.request(run, method.path)))
        if not found:
            return [], "no principal has a bearer token and a readable method in auth.rbac_matrix"

        def control(item: tuple[Principal, MethodInfo, bytes]) -> Held:
            p, method, request = item
            result = run.call(method.path, [request], principal=p)
            return Held(p, parse(p.token()), method, request, result)

        return run.map(control, found), ""

    return run.memo("authn-held", compute)


def as_base(held: Held) -> Base | None:
    """``held`` as a :class:`Base` when T is a JWT; ``None`` when it is opaque."""
    if held.token is None:
        return None
    return Base(held.principal, held.token, held.method, held.request, held.control)


def jwt_bases(held: list[Held], why: str) -> tuple[list[Base], str]:
    """The JWTs among ``held`` as :class:`Base`; when there are none, why (opaque ones named)."""
    found = [b for b in map(as_base, held) if b is not None]
    if found or not held:
        return found, why
    names = ", ".join(h.principal.name for h in held)
    return [], f"no principal has a JWT bearer token: every token is opaque ({names})"


def bases(run: Run) -> tuple[list[Base], str]:
    """T for every role with a JWT and a readable method, with its control call (memoised).

    Returns the bases and, when there are none, why. Opaque tokens are left out (see
    :func:`valid_tokens` for every token).
    """
    return jwt_bases(*valid_tokens(run))


# -- the issuer's public key (AUTHN-002 (b)) --------------------------------------------


@dataclass(frozen=True)
class PublicKeyForms:
    """The issuer key that signs T as HMAC secrets, where it came from, or why there is none.

    Attributes:
        forms: (name, bytes): PEM with and without its newline, DER, JWK JSON.
        source: ``auth.jwks_file <name>``, or the URL the JWKS was fetched from.
        problem: Why there is no key although a JWKS was configured ("" otherwise).
    """

    forms: tuple[tuple[str, bytes], ...] = ()
    source: str = ""
    problem: str = ""


def issuer_public_key(run: Run, kid: Any = None) -> PublicKeyForms:
    """The issuer's public key that signs T (T's ``kid``) as HMAC secrets, for AUTHN-002 (b).

    The JWKS is the one every control reads (:func:`harness.plans.jwks.issuer_jwks`:
    ``auth.jwks_file``, else ``auth.jwks_uri``, else ``auth.issuer``'s discovery). Empty,
    with no problem, when none of the three is configured.
    """
    jwks = issuer_jwks(run)
    if jwks.problem or not jwks.source:
        return PublicKeyForms(source=jwks.source, problem=jwks.problem)
    try:
        forms = jwks_key_forms(jwks.document, kid)
    except ValueError as exc:
        return PublicKeyForms(source=jwks.source, problem=f"{jwks.source}: {exc}")
    return PublicKeyForms(tuple(forms), jwks.source)


def _signing_key(jwk: Any) -> Any:
    """The public RSA or EC key of a JWK, or ``None`` (another type, an encryption key)."""
    if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC") or jwk.get("use") == "enc":
        return None
    try:
        return jwt.PyJWK(public_jwk(jwk)).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        return None


def jwks_key_forms(document: Any, kid: Any = None) -> list[tuple[str, bytes]]:
    """The JWKS key that signs T as HMAC secrets (see :class:`PublicKeyForms`).

    The key whose ``kid`` is T's ``kid``; without one, the only RSA or EC signing key.

    Raises:
        ValueError: It is not a JWKS; the key with T's ``kid`` is no RSA or EC public key;
            or no key has T's ``kid`` and there is not exactly one to fall back to.
    """
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not a JWKS (no list of keys)")
    if kid is not None:
        matched = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid]
        if matched:
            key = _signing_key(matched[0])
            if key is None:
                raise ValueError(f"the key with T's kid {kid!r} is no RSA or EC signing key")
            return public_key_forms(key)
    usable = [key for key in map(_signing_key, keys) if key is not None]
    if len(usable) == 1:
        return public_key_forms(usable[0])
    if not usable:
        raise ValueError("the JWKS holds no usable RSA or EC public key")
    which = f"none has T's kid {kid!r}" if kid is not None else "T names no kid"
    raise ValueError(f"{len(usable)} signing keys and {which}: which one signs T is unknown")


# -- AUTHN-001 --------------------------------------------------------------------------

#: A credential variant: its label (which starts with its probe, ``V1``...) and metadata.
Variant = tuple[str, tuple[tuple[str, str | bytes], ...]]


def variant_ref(label: str) -> str:
    """The AUTHN-001 probe a basic call belongs to: its label's first word (``V6``)."""
    return label.split(" ", 1)[0]


def basic_variants(
    rng: random.Random,
    token: str | None,
    where: Presentation = BEARER,
    token_where: Presentation | None = None,
) -> list[Variant]:
    """V1-V6, and V7 when some principal has a ``token``: what each call sends.

    Each varies the credential where the service reads it (``where``: ``auth.header`` and
    ``auth.scheme``): V1 leaves that header out, V2-V6 put a malformed one there, V7 moves
    ``token`` (presented as its principal's, ``token_where``) under two wrong keys.
    """

    def segment(n: int) -> str:
        return "".join(rng.choice(B64URL) for _ in range(n))

    header, scheme = where.header, where.scheme
    empty = f"V2 {scheme!r} with nothing after it" if scheme else "V2 an empty credential"
    variants: list[Variant] = [
        (f"V1 no {header}", ()),
        (empty, ((header, scheme),)),
        (f"V3 {where.value('abc')!r}", bearer("abc", where)),
        ("V4 Basic credentials", ((header, "Basic dXNlcjpwYXNz"),)),
        (
            "V5 three random base64url segments",
            bearer(f"{segment(24)}.{segment(48)}.{segment(43)}", where),
        ),
        ("V6 12 KiB random token", bearer(segment(12 * 1024), where)),
    ]
    if token is not None:
        held = token_where or where
        value = held.value(token)
        variants += [
            (f"V7 valid token under x-{held.header}", ((f"x-{held.header}", value),)),
            (
                f"V7 valid token under {held.header}-bin",
                ((f"{held.header}-bin", value.encode()),),
            ),
        ]
    return variants


def ambiguous_calls(path: str, request: bytes, least: Principal, admin: Principal) -> list[Call]:
    """V8: two credential entries (each where its principal's goes) on an admin-only method.

    Both orders; with the usual one ``auth.header``, that header twice.
    """
    headers = " and ".join(dict.fromkeys(p.presentation.header for p in (least, admin)))
    return [
        Call(
            f"V8 two {headers} entries ({order})",
            path,
            (request,),
            None,
            (*first.metadata(), *second.metadata()),
        )
        for first, second, order in (
            (least, admin, "least-privileged then admin"),
            (admin, least, "admin then least-privileged"),
        )
    ]


def basic_plan(
    methods: list[tuple[str, bytes, frozenset[str]]],
    variants: list[Variant],
    pair: tuple[Principal, Principal] | None,
) -> list[Call]:
    """AUTHN-001's calls: every variant on every (path, request, allowed) protected method.

    V6 is sent once (RESOURCE_EXHAUSTED is one of its answers, not a throttle to retry);
    V8 goes to the methods only ``admin`` of the (least-privileged, admin) ``pair`` may call.
    """
    calls = []
    for path, request, allowed in methods:
        calls += [
            Call(label, path, (request,), None, md, retry_exhausted=variant_ref(label) != "V6")
            for label, md in variants
        ]
        if pair and "admin" in allowed and "least-privileged" not in allowed:
            calls += ambiguous_calls(path, request, *pair)
    return calls


def v7_source(held: list[Held]) -> Held | None:
    """Whose token V7 moves under the wrong key: the first T shown accepted, or ``None``.

    A token nobody showed accepted proves nothing when it is refused under the wrong key.
    """
    return next((h for h in held if h.accepted), None)


def authn_basic_calls(run: Run) -> list[tuple[Call, CallResult]] | str:
    """AUTHN-001's calls (V1-V8) on every protected method, memoised for ERR-*.

    V7 carries a token whose control call was accepted (:func:`v7_source`); none, no V7.
    """

    def compute() -> list[tuple[Call, CallResult]] | str:
        policy = Policy.of(run)
        if policy is None:
            return NO_DESCRIPTORS.format(run.catalogue_problem())
        source = v7_source(valid_tokens(run)[0])
        variants = basic_variants(
            random.Random(run.options.seed),
            source.principal.token() if source is not None else None,
            presentation_of(run.config),
            source.principal.presentation if source is not None else None,
        )
        least, admin = run.principal("least-privileged"), run.principal("admin")
        pair = (least, admin) if least and admin and least.has_token and admin.has_token else None
        methods = [
            (m.path, policy.request(run, m.path), policy.allowed(m.path) or frozenset())
            for m in policy.protected()
        ]
        return send(run, basic_plan(methods, variants, pair))

    return run.memo("authn-basic", compute)


# -- AUTHZ-001 --------------------------------------------------------------------------


def authz_matrix_calls(run: Run) -> list[tuple[Call, CallResult]] | str:
    """One call per (protected method, principal with a token), memoised for ERR-*."""

    def compute() -> list[tuple[Call, CallResult]] | str:
        policy = Policy.of(run)
        if policy is None:
            return NO_DESCRIPTORS.format(run.catalogue_problem())
        principals = [p for p in run.principals.values() if p.has_token or p.has_cert]
        if not principals:
            return "no auth.principals with a token or a client certificate"
        probes = [
            Call(f"{p.name}", m.path, (policy.request(run, m.path),), p)
            for m in policy.protected()
            for p in principals
        ]
        return send(run, probes)

    return run.memo("authz-matrix", compute)
