"""Mutual TLS controls: MTLS-001 and MTLS-002.

Each negative probe is a handshake with a particular client certificate (or none) plus one
call to each ``mtls.s2s_methods`` entry carrying a valid bearer token for that method, so
the certificate is the only thing wrong (:func:`plan_s2s`). A refusal is a failed
handshake or a connection closed before any response (TLS 1.3 servers reject a
certificate after the handshake "succeeds"): both reach the client as UNAVAILABLE with no
message, whatever the stack's words for it; or UNAUTHENTICATED. Any response message, OK or
PERMISSION_DENIED shows the certificate (or its absence) was accepted; DEADLINE_EXCEEDED
observes nothing (:func:`judge_refused`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness.catalogue import CATALOGUE
from harness.channels import CallResult
from harness.checks import check
from harness.config import Config
from harness.errors import HarnessError
from harness.oracles import UNREACHED
from harness.outcome import NotApplicable, Observation, Outcome, Probe, Status, filed
from harness.plans.tls import CLEARTEXT, is_tls, scan_error, tls_facts
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run
from harness.tls import TlsFacts

_REFUSED = "the handshake fails or the connection closes before any response, or UNAUTHENTICATED"
_REACHES = "reaches the service"


@dataclass(frozen=True)
class S2sCall:
    """One service-to-service call: the method, its request, and whose token it carries."""

    method: str
    request: bytes
    principal: Principal | None

    @property
    def label(self) -> str:
        """The method, and whose token the call carries, for evidence."""
        who = f" with {self.principal.name}'s token" if self.principal else ""
        return f"{self.method}{who}"


def _applies(run: Run) -> None:
    """Raise NotApplicable unless the config claims mTLS and gives a client certificate."""
    if not run.config.get("mtls.required", False):
        raise NotApplicable("mtls.required is not set: no endpoint claims mTLS")
    if not is_tls(run):
        raise NotApplicable(CLEARTEXT)
    if run.endpoint.client_cert_pem is None:
        raise NotApplicable("needs mtls.client_cert and mtls.client_key")


def _calls(run: Run) -> list[S2sCall]:
    """The run's s2s calls, planned once (MTLS-001 and MTLS-002 share them)."""
    return run.memo(
        "mtls-calls",
        lambda: plan_s2s(
            run.config.str_list("mtls.s2s_methods"),
            Policy.of(run),
            list(run.principals.values()),
            run.config,
        ),
    )


def plan_s2s(
    methods: Iterable[str], policy: Policy | None, principals: list[Principal], config: Config
) -> list[S2sCall]:
    """One call per s2s method, with the token of a principal allowed on it (else any token).

    The request is the method's template (an empty message without descriptors).
    """
    tokens = [p for p in principals if p.has_token]
    out = []
    for method in methods:
        allowed = policy.allowed(method) if policy is not None else None
        principal = next((p for p in tokens if allowed and p.name in allowed), None)
        principal = principal or (tokens[0] if tokens else None)
        request = policy.request_from(config, method) if policy is not None else b""
        out.append(S2sCall(method, request, principal))
    return out


# -- judges ----------------------------------------------------------------------------------


def judge_refused(label: str, call: S2sCall, result: CallResult) -> Observation:
    """A call over a channel whose client certificate is absent or invalid must be refused.

    Data, OK or PERMISSION_DENIED (the certificate accepted as an identity) FAIL, as does
    any other code the application chose (the request reached it). UNAUTHENTICATED, or
    UNAVAILABLE with no message (the handshake failed or the connection closed before any
    response), PASS. DEADLINE_EXCEEDED observed nothing: INCONCLUSIVE.
    """
    probe = f"{label} -> {call.label}"
    observed = result.summary()
    rid = result.request_id
    if result.responses or result.code in (grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED):
        return Observation(probe, observed, _REFUSED, Status.FAIL, None, rid)
    if result.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED):
        return Observation(probe, observed, _REFUSED, Status.PASS, None, rid)
    if result.code in UNREACHED:
        return Observation(probe, observed, _REFUSED, Status.INCONCLUSIVE, None, rid)
    return Observation(probe, observed, _REFUSED, Status.FAIL, None, rid)


def judge_handshake_only(label: str, connected: bool) -> Observation:
    """Without ``mtls.s2s_methods``: a channel with a bad certificate must not connect."""
    probe = f"{label} (no mtls.s2s_methods: handshake only)"
    observed = "connected" if connected else "no connection"
    return Observation(probe, observed, _REFUSED, Status.FAIL if connected else Status.PASS)


def judge_requirement(facts: TlsFacts) -> Observation:
    """MTLS-001 (a): sslyze's client-authentication requirement, read without a certificate.

    DISABLED fails; OPTIONAL holds here and is judged by (b); UNKNOWN is INCONCLUSIVE.
    """
    if (error := scan_error(facts)) is not None:
        return error
    requirement = facts.client_auth
    status = {"DISABLED": Status.FAIL, "UNKNOWN": Status.INCONCLUSIVE}.get(requirement, Status.PASS)
    observed = f"{requirement}: {facts.client_auth_evidence}"
    return Observation("(a) client authentication requirement", observed, "REQUIRED", status)


def judge_reaches(call: S2sCall, result: CallResult) -> Observation:
    """MTLS-001 (c): with the configured client certificate the call reaches the service.

    Any gRPC status from the service will do; UNAVAILABLE or DEADLINE_EXCEEDED did not
    reach it and is INCONCLUSIVE.
    """
    status = Status.INCONCLUSIVE if result.code in UNREACHED else Status.PASS
    return Observation(
        f"(c) with mtls.client_cert -> {call.method}",
        result.summary(),
        _REACHES,
        status,
        request_id=result.request_id,
    )


def judge_channel(problem: str) -> Observation:
    """MTLS-001 (c) without s2s methods: the run's channel (with the certificate) works."""
    probe = "(c) with mtls.client_cert (no mtls.s2s_methods: the run's channel)"
    if problem:
        return Observation(probe, problem, _REACHES, Status.INCONCLUSIVE)
    observed = "the run's channel, which carries the certificate, passed the gRPC preflight"
    return Observation(probe, observed, _REACHES, Status.PASS)


# -- sending ---------------------------------------------------------------------------------


def _probe_with(
    run: Run, label: str, cert_pem: bytes | None, key_pem: bytes | None
) -> list[Observation]:
    """Handshake with this certificate (``None``: none) and call every s2s method."""
    endpoint = replace(run.endpoint, client_cert_pem=cert_pem, client_key_pem=key_pem)
    channel = run.new_channel(endpoint, with_client_cert=cert_pem is not None)
    timeout = run.options.connect_timeout_s
    try:
        calls = _calls(run)
        if not calls:
            return [judge_handshake_only(label, _connects(channel, timeout))]
        return [
            judge_refused(
                label,
                c,
                run.call(
                    c.method, (c.request,), principal=c.principal, channel=channel, timeout=timeout
                ),
            )
            for c in calls
        ]
    finally:
        channel.close()


def _connects(channel: grpc.Channel, timeout: float) -> bool:
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return False
    return True


def _with_client_cert(run: Run) -> list[Observation]:
    """MTLS-001 (c): the same calls over the run's channel, which has the certificate."""
    calls = _calls(run)
    problem = run.channel_problem()
    if problem or not calls:
        return [judge_channel(problem)]
    return [
        judge_reaches(c, run.call(c.method, (c.request,), principal=c.principal)) for c in calls
    ]


# -- MTLS-001 --------------------------------------------------------------------------------


@check(
    "MTLS-001",
    needs_channel=False,
    probes=(
        Probe("a", "client-authentication requirement (sslyze, no certificate): REQUIRED"),
        Probe("b", "no client certificate: no application response"),
        Probe("c", "with mtls.client_cert: the calls reach the service"),
    ),
)
def client_cert_required(run: Run) -> Outcome:
    """A client certificate is required on service-to-service endpoints.

    (a) The client-authentication requirement from sslyze's probe without a certificate
    (a server that drops the connection there, but completes the handshake with the
    configured certificate, counts as REQUIRED). (b) A handshake without a client
    certificate, then one call to each ``mtls.s2s_methods`` entry with a valid token: no
    application response may come back. (c) The same calls with ``mtls.client_cert`` must
    reach the service (without s2s methods: the run's channel, which carries the
    certificate, opens and answers). OPTIONAL passes only if every call in (b) is still
    refused. Needs ``mtls.required``, a TLS port and ``mtls.client_cert``/``client_key``.
    """
    _applies(run)
    observations = [
        judge_requirement(tls_facts(run)).of("a"),
        *filed("b", _probe_with(run, "(b) no client certificate", None, None)),
        *filed("c", _with_client_cert(run)),
    ]
    return Outcome.from_observations(
        CATALOGUE["MTLS-001"], observations, passed="client certificates required"
    )


# -- MTLS-002 --------------------------------------------------------------------------------

#: MTLS-002's fixture variants: probe, ``mtls.fixtures`` key, label.
FIXTURES = (
    ("3", "expired", "(3) expired"),
    ("4", "wrong_eku", "(4) serverAuth-only EKU"),
    ("5", "revoked", "(5) revoked"),
)


@check(
    "MTLS-002",
    needs_channel=False,
    probes=(
        Probe("1", "self-signed look-alike of the client certificate refused"),
        Probe("2", "certificate from a rogue CA with the same issuer name refused"),
        Probe("3", "expired fixture refused", required=False, needs=("mtls.fixtures.expired",)),
        Probe(
            "4",
            "serverAuth-only EKU fixture refused",
            required=False,
            needs=("mtls.fixtures.wrong_eku",),
        ),
        Probe("5", "revoked fixture refused", required=False, needs=("mtls.fixtures.revoked",)),
    ),
)
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
    _applies(run)
    assert run.endpoint.client_cert_pem is not None
    real = x509.load_pem_x509_certificate(run.endpoint.client_cert_pem)
    observations = []
    for ref, (label, cert, key) in forgeries(real).items():
        observations += filed(ref, _probe_with(run, label, cert, key))
    for ref, name, label in FIXTURES:
        pair = _fixture(run, name)
        if pair is None:
            skipped = Observation(label, "no fixture", f"mtls.fixtures.{name}", Status.SKIP)
            observations.append(skipped.of(ref))
            continue
        observations += filed(ref, _probe_with(run, f"{label} fixture", *pair))
    return Outcome.from_observations(
        CATALOGUE["MTLS-002"], observations, passed="every invalid client certificate refused"
    )


def _fixture(run: Run, name: str) -> tuple[bytes, bytes] | None:
    """The fixture's certificate and key (PEM), or ``None`` when it is not configured."""
    cert_path = run.config.path(f"mtls.fixtures.{name}.cert")
    key_path = run.config.path(f"mtls.fixtures.{name}.key")
    if cert_path is None or key_path is None:
        return None
    try:
        return cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"cannot read mtls.fixtures.{name}: {exc}") from None


def forgeries(real: x509.Certificate) -> dict[str, tuple[str, bytes, bytes]]:
    """(1) a self-signed look-alike and (2) a rogue-CA certificate with the same issuer DN.

    By probe: its label, a PEM certificate and its PKCS#8 key, with the real certificate's
    subject and SAN, clientAuth EKU, valid from five minutes ago for a day.
    """
    own = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = ec.generate_private_key(ec.SECP256R1())
    rogue_leaf = ec.generate_private_key(ec.SECP256R1())
    return {
        "1": (
            "(1) self-signed look-alike",
            _look_alike(real, real.subject, own, own),
            _pem(own),
        ),
        "2": (
            "(2) rogue CA with the same issuer name",
            _look_alike(real, real.issuer, rogue_ca, rogue_leaf),
            _pem(rogue_leaf),
        ),
    }


def _look_alike(
    real: x509.Certificate,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
) -> bytes:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    try:
        san = real.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = builder.add_extension(san, critical=False)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
