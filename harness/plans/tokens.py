"""Token plans the AUTHN, AUTHZ, AUDIT, ERR, MIN and LIMIT controls share.

The valid token T of every role with the method it may read (:func:`bases`), AUTHN-001's
credential variants on every protected method (:func:`authn_basic_calls`) and AUTHZ-001's
(method, principal) matrix (:func:`authz_matrix_calls`): each made once per run, whichever
control asks first, so that no verdict depends on test order or ``-k``. Also the issuer's
public key AUTHN-002 keys its HMAC confusion with (:func:`issuer_public_key`). Planning
(:func:`basic_variants`, :func:`basic_plan`) is pure; the memoised functions send.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import grpc
import jwt

from harness.channels import CallResult
from harness.descriptors import MethodInfo
from harness.plans.calls import NO_DESCRIPTORS, Call, bearer, send
from harness.plans.jwks import Reach, fetch_json, jwks_uri
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run
from harness.tokens import IssuerKeys, Parsed, parse

#: The base64url alphabet, for random token segments.
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def run_nonce(run: Run) -> str:
    """The run's seed as 8 hex digits: marks the values a run makes up."""
    return f"{run.options.seed:08x}"


# -- the valid token T per role, and the methods it may call ---------------------------


@dataclass(frozen=True)
class Base:
    """A principal's valid token T, the method it may read, and T's own call (the control)."""

    principal: Principal
    token: Parsed
    method: MethodInfo
    request: bytes
    control: CallResult

    @property
    def accepted(self) -> bool:
        """True when T itself was accepted: forgeries of it are then meaningful.

        A control call that never reached the service (UNAVAILABLE, DEADLINE_EXCEEDED) shows
        nothing: a refused forgery beside it proves nothing either.
        """
        return self.control.code not in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )

    def expiring(self, keys: IssuerKeys, life_s: int) -> tuple[str, int]:
        """T re-minted with the issuer key to expire ``life_s`` s from now, and its ``exp``."""
        now = int(time.time())
        exp = now + life_s
        claims = {**self.token.claims, "iat": now, "nbf": now - 1, "exp": exp}
        return keys.mint(claims, self.token.header), exp


def bases(run: Run) -> tuple[list[Base], str]:
    """T for every role with a JWT and a readable method, with its control call (memoised).

    Returns the bases and, when there are none, why.
    """

    def compute() -> tuple[list[Base], str]:
        policy = Policy.of(run)
        if policy is None:
            return [], NO_DESCRIPTORS.format(run.catalogue_problem())
        found = []
        for name, principal in run.principals.items():
            if not principal.has_token:
                continue
            token = parse(principal.token())
            method = policy.representative_read(name)
            if token is None or method is None:
                continue
            found.append((principal, token, method, policy.request(run, method.path)))
        if not found:
            return (
                [],
                "no principal has a JWT bearer token and a readable method in auth.rbac_matrix",
            )

        def control(item: tuple[Principal, Parsed, MethodInfo, bytes]) -> Base:
            p, token, method, request = item
            return Base(p, token, method, request, run.call(method.path, [request], principal=p))

        return run.map(control, found), ""

    return run.memo("authn-bases", compute)


# -- the issuer's public key (AUTHN-002 (b)) --------------------------------------------


@dataclass(frozen=True)
class PublicKeyForms:
    """The issuer's first public key as HMAC secrets, where it came from, or why there is none.

    Attributes:
        forms: (name, bytes): PEM with and without its newline, DER, JWK JSON.
        source: ``auth.jwks_file``, or the URL the JWKS was fetched from.
        problem: Why there is no key although one was configured ("" otherwise).
    """

    forms: tuple[tuple[str, bytes], ...] = ()
    source: str = ""
    problem: str = ""


def issuer_public_key(run: Run) -> PublicKeyForms:
    """The issuer's public key as HMAC secrets (memoised), for AUTHN-002 (b).

    From ``auth.jwks_file``, else the JWKS fetched from ``auth.jwks_uri``, else from
    ``auth.issuer``'s OpenID discovery document (:mod:`harness.plans.jwks`, as KEY-001
    finds it). Empty, with no problem, when none of the three is configured.
    """

    def compute() -> PublicKeyForms:
        local = run.issuer_keys().public_key_forms()
        if local:
            return PublicKeyForms(tuple(local), "auth.jwks_file")
        uri: str | None = None
        try:
            reach = Reach.of(run.config, run.spec.host)
            uri = jwks_uri(run.config, reach)
            if uri is None:
                return PublicKeyForms()
            forms = jwks_key_forms(fetch_json(uri, reach))
        except ValueError as exc:
            issuer = run.config.str_("auth.issuer") or ""
            return PublicKeyForms(source=uri or issuer, problem=str(exc))
        return PublicKeyForms(tuple(forms), uri)

    return run.memo("authn-issuer-public-key", compute)


def jwks_key_forms(document: Any) -> list[tuple[str, bytes]]:
    """The first RSA or EC key of a JWKS document as HMAC secrets (see :class:`PublicKeyForms`).

    Raises:
        ValueError: It is not a JWKS, or holds no usable RSA or EC public key.
    """
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not a JWKS (no list of keys)")
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC"):
            continue
        public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            key = jwt.PyJWK(public).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        found = IssuerKeys(((jwk.get("kid"), jwk.get("alg"), key),), None, None, None)
        return found.public_key_forms()
    raise ValueError("the JWKS holds no usable RSA or EC public key")


# -- AUTHN-001 --------------------------------------------------------------------------

#: A credential variant: its label (which starts with its probe, ``V1``...) and metadata.
Variant = tuple[str, tuple[tuple[str, str | bytes], ...]]


def variant_ref(label: str) -> str:
    """The AUTHN-001 probe a basic call belongs to: its label's first word (``V6``)."""
    return label.split(" ", 1)[0]


def basic_variants(rng: random.Random, token: str | None) -> list[Variant]:
    """V1-V6, and V7 when some principal has a ``token``: what each call sends."""

    def segment(n: int) -> str:
        return "".join(rng.choice(B64URL) for _ in range(n))

    variants: list[Variant] = [
        ("V1 no authorization", ()),
        ("V2 'Bearer' with nothing after it", (("authorization", "Bearer"),)),
        ("V3 'Bearer abc'", (("authorization", "Bearer abc"),)),
        ("V4 Basic credentials", (("authorization", "Basic dXNlcjpwYXNz"),)),
        (
            "V5 three random base64url segments",
            bearer(f"{segment(24)}.{segment(48)}.{segment(43)}"),
        ),
        ("V6 12 KiB random token", bearer(segment(12 * 1024))),
    ]
    if token is not None:
        variants += [
            ("V7 valid token under x-authorization", (("x-authorization", f"Bearer {token}"),)),
            (
                "V7 valid token under authorization-bin",
                (("authorization-bin", f"Bearer {token}".encode()),),
            ),
        ]
    return variants


def ambiguous_calls(path: str, request: bytes, least: Principal, admin: Principal) -> list[Call]:
    """V8: two ``authorization`` entries on an admin-only method, in both orders."""
    return [
        Call(
            f"V8 two authorization entries ({order})",
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


def authn_basic_calls(run: Run) -> list[tuple[Call, CallResult]] | str:
    """AUTHN-001's calls (V1-V8) on every protected method, memoised for ERR-*."""

    def compute() -> list[tuple[Call, CallResult]] | str:
        policy = Policy.of(run)
        if policy is None:
            return NO_DESCRIPTORS.format(run.catalogue_problem())
        some = next((p for p in run.principals.values() if p.has_token), None)
        variants = basic_variants(
            random.Random(run.options.seed), some.token() if some is not None else None
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
