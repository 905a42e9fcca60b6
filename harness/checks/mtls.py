"""Mutual TLS controls: MTLS-001 and MTLS-002.

Each negative probe is a handshake with a particular client certificate (or none) plus one
call to each ``mtls.s2s_methods`` entry carrying a valid bearer token for that method, so
the certificate is the only thing wrong. A refusal is a failed handshake, a connection
closed before any response (TLS 1.3 servers reject a certificate after the handshake
"succeeds"), or UNAUTHENTICATED; any response message, OK or PERMISSION_DENIED shows the
certificate (or its absence) was accepted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check
from harness.errors import HarnessError
from harness.outcome import Observation, Outcome, Status
from harness.plans.tls import scan_error, tls_facts
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run

_REFUSED = "the handshake fails or the connection closes before any response, or UNAUTHENTICATED"


@dataclass(frozen=True)
class _Call:
    method: str
    request: bytes
    principal: Principal | None


def _not_applicable(run: Run, control_id: str) -> Outcome | None:
    control = CATALOGUE[control_id]
    if not run.config.get("mtls.required", False):
        return Outcome.skip(control, "mtls.required is not set: no endpoint claims mTLS")
    if run.endpoint.transport.value != "tls":
        return Outcome.skip(control, "the target serves cleartext HTTP/2: no TLS")
    if run.endpoint.client_cert_pem is None:
        return Outcome.skip(control, "needs mtls.client_cert and mtls.client_key")
    return None


def _calls(run: Run) -> list[_Call]:
    """One call per ``mtls.s2s_methods`` entry, with a token allowed on that method."""
    return run.memo("mtls-calls", lambda: _plan(run))


def _plan(run: Run) -> list[_Call]:
    policy = Policy.of(run)
    out = []
    for method in run.config.str_list("mtls.s2s_methods"):
        allowed = policy.allowed(method) if policy is not None else None
        tokens = [p for p in run.principals.values() if p.has_token]
        principal = next((p for p in tokens if allowed and p.name in allowed), None)
        principal = principal or (tokens[0] if tokens else None)
        request = policy.request(run, method) if policy is not None else b""
        out.append(_Call(method, request, principal))
    return out


def _judge(run: Run, label: str, channel: grpc.Channel, call: _Call) -> Observation:
    who = f" with {call.principal.name}'s token" if call.principal else ""
    probe = f"{label} -> {call.method}{who}"
    result = run.call(
        call.method,
        (call.request,),
        principal=call.principal,
        channel=channel,
        timeout=run.options.connect_timeout_s,
    )
    observed = result.summary()
    accepted = result.responses or result.code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    if accepted:
        return Observation(probe, observed, _REFUSED, Status.FAIL, None, result.request_id)
    refused = result.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    status = Status.PASS if refused else Status.FAIL
    return Observation(probe, observed, _REFUSED, status, None, result.request_id)


def _probe_with(
    run: Run, label: str, cert_pem: bytes | None, key_pem: bytes | None
) -> list[Observation]:
    """Handshake with this certificate (``None``: none) and call every s2s method."""
    endpoint = replace(run.endpoint, client_cert_pem=cert_pem, client_key_pem=key_pem)
    channel = run.new_channel(endpoint, with_client_cert=cert_pem is not None)
    try:
        calls = _calls(run)
        if not calls:
            ready = _connects(channel, run.options.connect_timeout_s)
            observed = "connected" if ready else "no connection"
            status = Status.FAIL if ready else Status.PASS
            return [
                Observation(
                    f"{label} (no mtls.s2s_methods: handshake only)", observed, _REFUSED, status
                )
            ]
        return [_judge(run, label, channel, c) for c in calls]
    finally:
        channel.close()


def _connects(channel: grpc.Channel, timeout: float) -> bool:
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return False
    return True


@check("MTLS-001", needs_channel=False)
def client_cert_required(run: Run) -> Outcome:
    """A client certificate is required on service-to-service endpoints.

    (a) The client-authentication requirement from sslyze's probe without a certificate
    (a server that drops the connection there, but completes the handshake with the
    configured certificate, counts as REQUIRED). (b) A handshake without a client
    certificate, then one call to each ``mtls.s2s_methods`` entry with a valid token: no
    application response may come back. (c) The same calls with ``mtls.client_cert`` must
    reach the service. OPTIONAL passes only if every call in (b) is still refused.
    """
    control = CATALOGUE["MTLS-001"]
    if (skip := _not_applicable(run, "MTLS-001")) is not None:
        return skip
    facts = tls_facts(run)
    observations = []
    if (error := scan_error(facts)) is not None:
        observations.append(error)
    else:
        requirement = facts.client_auth
        # OPTIONAL is judged by (b): it fails there unless every call is still refused.
        status = {"DISABLED": Status.FAIL, "UNKNOWN": Status.INCONCLUSIVE}.get(
            requirement, Status.PASS
        )
        observed = f"{requirement}: {facts.client_auth_evidence}"
        observations.append(
            Observation("(a) client authentication requirement", observed, "REQUIRED", status)
        )
    without = _probe_with(run, "(b) no client certificate", None, None)
    observations += without
    if problem := run.channel_problem():
        observations.append(
            Observation(
                "(c) with mtls.client_cert", problem, "reaches the service", Status.INCONCLUSIVE
            )
        )
    else:
        for call in _calls(run):
            result = run.call(call.method, (call.request,), principal=call.principal)
            reached = result.code not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
            observations.append(
                Observation(
                    f"(c) with mtls.client_cert -> {call.method}",
                    result.summary(),
                    "reaches the service",
                    Status.PASS if reached else Status.FAIL,
                    Severity.HIGH,
                    result.request_id,
                )
            )
    return Outcome.from_observations(control, observations, passed="client certificates required")


@check("MTLS-002", needs_channel=False)
def invalid_client_certs(run: Run) -> Outcome:
    """Invalid client certificates are rejected.

    Each variant is a handshake plus one call to each ``mtls.s2s_methods`` entry with a
    valid token: (1) a self-signed certificate copying the real client certificate's
    subject and SAN; (2) a certificate from a harness-made rogue CA with the same issuer
    name; (3) ``mtls.fixtures.expired``; (4) ``mtls.fixtures.wrong_eku`` (serverAuth only);
    (5) ``mtls.fixtures.revoked``. Every variant must be refused (failed handshake, closed
    connection, or UNAUTHENTICATED); OK, data or PERMISSION_DENIED fail. Variants 3-5 SKIP
    without their fixture.
    """
    control = CATALOGUE["MTLS-002"]
    if (skip := _not_applicable(run, "MTLS-002")) is not None:
        return skip
    assert run.endpoint.client_cert_pem is not None
    real = x509.load_pem_x509_certificate(run.endpoint.client_cert_pem)
    observations = []
    for label, (cert, key) in _forgeries(real).items():
        observations += _probe_with(run, label, cert, key)
    for name, label in (
        ("expired", "(3) expired"),
        ("wrong_eku", "(4) serverAuth-only EKU"),
        ("revoked", "(5) revoked"),
    ):
        cert_path = run.config.path(f"mtls.fixtures.{name}.cert")
        key_path = run.config.path(f"mtls.fixtures.{name}.key")
        if cert_path is None or key_path is None:
            observations.append(
                Observation(label, "no fixture", f"mtls.fixtures.{name}", Status.SKIP)
            )
            continue
        try:
            pair = cert_path.read_bytes(), key_path.read_bytes()
        except OSError as exc:
            raise HarnessError(f"cannot read mtls.fixtures.{name}: {exc}") from None
        observations += _probe_with(run, f"{label} fixture", *pair)
    return Outcome.from_observations(
        control, observations, passed="every invalid client certificate refused"
    )


def _forgeries(real: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """(1) a self-signed look-alike and (2) a rogue-CA certificate with the same issuer DN."""
    now = dt.datetime.now(dt.timezone.utc)
    try:
        san = real.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None

    def leaf(
        issuer_name: x509.Name, signer: ec.EllipticCurvePrivateKey, key: ec.EllipticCurvePrivateKey
    ) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(real.subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    own = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = ec.generate_private_key(ec.SECP256R1())
    rogue_leaf = ec.generate_private_key(ec.SECP256R1())
    return {
        "(1) self-signed look-alike": (leaf(real.subject, own, own), pem(own)),
        "(2) rogue CA with the same issuer name": (
            leaf(real.issuer, rogue_ca, rogue_leaf),
            pem(rogue_leaf),
        ),
    }
