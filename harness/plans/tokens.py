"""Token plans the AUTHN, AUTHZ, AUDIT, ERR, MIN and LIMIT controls share.

The valid token T of every role with the method it may read (:func:`bases`), AUTHN-001's
credential variants on every protected method (:func:`authn_basic_calls`) and AUTHZ-001's
(method, principal) matrix (:func:`authz_matrix_calls`): each made once per run, whichever
control asks first, so that no verdict depends on test order or ``-k``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc

from harness.channels import CallResult
from harness.descriptors import MethodInfo
from harness.plans.calls import NO_DESCRIPTORS, Call, bearer, send
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
        """True when T itself was accepted: forgeries of it are then meaningful."""
        return self.control.code not in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
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


# -- AUTHN-001 --------------------------------------------------------------------------


def authn_basic_calls(run: Run) -> list[tuple[Call, CallResult]] | str:
    """AUTHN-001's calls (V1-V8) on every protected method, memoised for ERR-*."""

    def compute() -> list[tuple[Call, CallResult]] | str:
        policy = Policy.of(run)
        if policy is None:
            return NO_DESCRIPTORS.format(run.catalogue_problem())
        rng = random.Random(run.options.seed)
        some = next((p for p in run.principals.values() if p.has_token), None)
        least, admin = run.principal("least-privileged"), run.principal("admin")

        def segment(n: int) -> str:
            return "".join(rng.choice(B64URL) for _ in range(n))

        variants: list[tuple[str, tuple[tuple[str, str | bytes], ...]]] = [
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
        if some is not None:
            token = some.token()
            variants += [
                ("V7 valid token under x-authorization", (("x-authorization", f"Bearer {token}"),)),
                (
                    "V7 valid token under authorization-bin",
                    (("authorization-bin", f"Bearer {token}".encode()),),
                ),
            ]
        probes = []
        for m in policy.protected():
            request = policy.request(run, m.path)
            probes += [
                Call(
                    label, m.path, (request,), None, md, retry_exhausted=not label.startswith("V6")
                )
                for label, md in variants
            ]
            allowed = policy.allowed(m.path) or frozenset()
            pair = (
                (least, admin) if least and admin and least.has_token and admin.has_token else None
            )
            if pair and "admin" in allowed and "least-privileged" not in allowed:
                least, admin = pair
                for first, second, order in (
                    (least, admin, "least-privileged then admin"),
                    (admin, least, "admin then least-privileged"),
                ):
                    md = (*first.metadata(), *second.metadata())
                    probes.append(
                        Call(
                            f"V8 two authorization entries ({order})", m.path, (request,), None, md
                        )
                    )
        return send(run, probes)

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
