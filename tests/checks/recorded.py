"""Recorded answers for judges' unit tests, and how a test reads the judges' verdicts.

CallResults as a server of any stack sends them (:func:`answer`), JWKs and certificates as
an issuer publishes them; a control's outcome settled from a judge's observations as
``run_check`` settles it (:func:`settled`), and its declared probes (:func:`declared`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

import grpc
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness.channels import CallResult
from harness.checks import registered
from harness.outcome import Observation, Outcome, Status, settle
from targets.pki import CertificateAuthority, Issued

_SEQ = iter(range(1, 1_000_000))


def answer(
    code: grpc.StatusCode = grpc.StatusCode.OK,
    *responses: bytes,
    details: str = "",
    method: str = "/pkg.Service/Method",
    trailers: tuple[tuple[str, str | bytes], ...] = (),
    headers: tuple[tuple[str, str | bytes], ...] = (),
    principal: str | None = None,
    elapsed_s: float = 0.01,
    arrivals: tuple[float, ...] = (),
) -> CallResult:
    """One call's result as recorded: status, messages, metadata; a fresh request ID."""
    return CallResult(
        method=method,
        code=code,
        details=details,
        responses=tuple(responses),
        initial_metadata=headers,
        trailing_metadata=trailers,
        request_id=f"rid-{next(_SEQ)}",
        principal=principal,
        elapsed_s=elapsed_s,
        arrivals=arrivals,
    )


def statuses(observations: list[Observation] | tuple[Observation, ...]) -> list[Status]:
    """The per-observation verdicts, in order."""
    return [o.status for o in observations]


def refs(observations: Iterable[Observation]) -> dict[str, list[Status]]:
    """Observation verdicts grouped by the declared probe they are filed under."""
    out: dict[str, list[Status]] = {}
    for o in observations:
        out.setdefault(o.ref, []).append(o.status)
    return out


def by_ref(outcome: Outcome) -> dict[str, list[Status]]:
    """An outcome's observation verdicts grouped by probe (:func:`refs`)."""
    return refs(outcome.observations)


def settled(
    control_id: str,
    observations: Iterable[Observation],
    *configured: str,
    unset: Collection[str] | None = None,
) -> Outcome:
    """The control's outcome from these observations, settled over its declared probes.

    As ``run_check`` settles it: only the config keys in ``configured`` are set; with
    ``unset`` (``()``: none), every key is set but those.
    """
    assert not (configured and unset is not None), "configured or unset, not both"
    entry = registered()[control_id]
    outcome = Outcome.from_observations(entry.control, list(observations), passed="held")
    if unset is None:
        return settle(outcome, entry.probes, lambda key: key in configured)
    return settle(outcome, entry.probes, lambda key: key not in unset)


def probe_statuses(outcome: Outcome) -> dict[str, Status]:
    """Each probe's status, by probe ID (``KEY-001(kid)``)."""
    return {p.id: p.status for p in outcome.probes}


def declared(control_id: str) -> list[tuple[str, bool, tuple[str, ...]]]:
    """The control's declared probes: (ref, required, needs) each, in order."""
    return [(p.ref, p.required, p.needs) for p in registered()[control_id].probes]


# -- what an issuer publishes ------------------------------------------------------------


def ec_jwk(curve: ec.EllipticCurve | None = None, **extra: str) -> dict[str, Any]:
    """A fresh EC public JWK (P-256 unless ``curve``), with ``extra`` members."""
    key = ec.generate_private_key(curve or ec.SECP256R1()).public_key()
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key)), **extra}


def rsa_jwk(bits: int, *, private: bool = False, **extra: str) -> dict[str, Any]:
    """A fresh RSA JWK of ``bits`` (with its private members if ``private``)."""
    key = rsa.generate_private_key(65537, bits)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key if private else key.public_key())
    return {**json.loads(jwk), **extra}


def certs(issued: Issued) -> list[x509.Certificate]:
    """The chain a test CA issued, leaf first."""
    return x509.load_pem_x509_certificates(issued.chain_pem)


def root(ca: CertificateAuthority) -> x509.Certificate:
    """The test CA's own certificate."""
    return x509.load_pem_x509_certificate(ca.cert_pem)
