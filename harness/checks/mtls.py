"""Mutual TLS controls: MTLS-001 and MTLS-002.

Each negative case (no certificate, a forged one, a fixture) is seen two ways. First a raw
handshake with that certificate (:func:`harness.handshake.see_client_cert`): refused by an
alert or a close during or right after it (TLS 1.3 servers reject a certificate after the
client's handshake is done), accepted (the server sent HTTP/2 data), or nothing seen (a
timeout, a connect error). Then one call to each ``mtls.s2s_methods`` entry over a channel
with the same certificate, carrying a valid bearer token for that method, so the certificate
is the only thing wrong (:func:`plan_s2s`): it shows whether the call reaches the service.

A refusal is evidence, never an inference: the handshake refused and the call unreached, or
UNAUTHENTICATED from the service, or an edge's HTTP 400/495/496 with no ``grpc-status`` on the
accepted connection (nginx with ``ssl_verify_client on``). Any response message, OK or
PERMISSION_DENIED shows the certificate (or its absence) was accepted, as does any other
answer once the handshake was accepted. UNAVAILABLE or DEADLINE_EXCEEDED without a refused
handshake, or a handshake that timed out or never connected, observe nothing: INCONCLUSIVE
(:func:`judge_refused`).
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
from harness.handshake import HandshakeSeen, Seen, see_client_cert
from harness.oracles import UNREACHED
from harness.outcome import NotApplicable, Observation, Outcome, Probe, Status, filed
from harness.plans.tls import CLEARTEXT, is_tls, scan_error, tls_facts
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run
from harness.tls import TlsFacts

_REFUSED = (
    "refused at the handshake (an alert or a close) and no response, or UNAUTHENTICATED, "
    "or an edge's HTTP 400/495/496 with no grpc-status"
)
#: Codes a gRPC client gives an HTTP error page with no grpc-status (400: INTERNAL, 495 and
#: 496: UNKNOWN), so an edge's refusal; only the HTTP answer itself can say it was one.
_EDGE_PAGE = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
_LET_IN = frozenset({grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED})
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


def judge_refused(
    label: str, call: S2sCall, seen: HandshakeSeen, result: CallResult
) -> Observation:
    """A call over a channel whose client certificate is absent or invalid must be refused.

    ``seen`` is the raw handshake with the same certificate. Data, OK or PERMISSION_DENIED
    (the certificate accepted as an identity) FAIL. UNAUTHENTICATED (the service refused)
    PASSes; so does a call that never came back (UNAVAILABLE, DEADLINE_EXCEEDED) when the
    handshake was refused by an alert or a close, or an INTERNAL/UNKNOWN call when the
    accepted connection's HTTP/2 request got an edge's 400/495/496 with no grpc-status.
    A call that never came back without that evidence (a handshake that timed out, never
    connected, or was accepted) is INCONCLUSIVE, never a refusal; INTERNAL/UNKNOWN is too
    unless a gRPC server answered on the accepted connection. Any other code is the service
    answering: FAIL.
    """
    status = _refusal(seen, result)
    observed = f"raw handshake: {seen.describe()}; the call: {result.summary()}"
    probe = f"{label} -> {call.label}"
    return Observation(probe, observed, _REFUSED, status, None, result.request_id)


def _refusal(seen: HandshakeSeen, result: CallResult) -> Status:
    if result.responses or result.code in _LET_IN:
        return Status.FAIL
    if result.code is grpc.StatusCode.UNAUTHENTICATED:
        return Status.PASS
    edge = seen.answer
    if seen.refused and result.code in UNREACHED:
        return Status.PASS
    if edge is not None and edge.refused_by_edge and result.code in _EDGE_PAGE | UNREACHED:
        return Status.PASS
    if result.code in UNREACHED:
        return Status.INCONCLUSIVE
    if result.code in _EDGE_PAGE and not (edge is not None and edge.served_grpc):
        return Status.INCONCLUSIVE
    return Status.FAIL


def judge_handshake_only(label: str, seen: HandshakeSeen) -> Observation:
    """Without ``mtls.s2s_methods``: the handshake with a bad certificate must be refused.

    An alert or a close PASSes, as does an edge's HTTP 400/495/496 with no grpc-status on
    the accepted connection; any other accepted connection FAILs; a timeout or a connect
    error observed nothing (INCONCLUSIVE).
    """
    probe = f"{label} (no mtls.s2s_methods: handshake only)"
    if seen.refused or (seen.answer is not None and seen.answer.refused_by_edge):
        status = Status.PASS
    elif seen.seen is Seen.ACCEPTED:
        status = Status.FAIL
    else:
        status = Status.INCONCLUSIVE
    return Observation(probe, f"raw handshake: {seen.describe()}", _REFUSED, status)


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
    """Handshake with this certificate (``None``: none), then call every s2s method."""
    seen = _see(run, cert_pem, key_pem)
    calls = _calls(run)
    if not calls:
        return [judge_handshake_only(label, seen)]
    endpoint = replace(run.endpoint, client_cert_pem=cert_pem, client_key_pem=key_pem)
    channel = run.new_channel(endpoint, with_client_cert=cert_pem is not None)
    timeout = run.options.connect_timeout_s
    try:
        return [
            judge_refused(
                label,
                c,
                seen,
                run.call(
                    c.method, (c.request,), principal=c.principal, channel=channel, timeout=timeout
                ),
            )
            for c in calls
        ]
    finally:
        channel.close()


def _see(run: Run, cert_pem: bytes | None, key_pem: bytes | None) -> HandshakeSeen:
    """The raw handshake with this certificate: SNI ``tls.server_name`` (else the host)."""
    assert run.spec.host is not None
    assert run.spec.port is not None
    return see_client_cert(
        run.spec.host,
        run.spec.port,
        server_name=run.endpoint.server_name or run.spec.host,
        cert_pem=cert_pem,
        key_pem=key_pem,
        timeout=run.options.connect_timeout_s,
        path=run.liveness,
    )


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
    configured certificate, counts as REQUIRED). (b) A raw handshake without a client
    certificate, then one call to each ``mtls.s2s_methods`` entry with a valid token: no
    application response may come back, and the refusal is seen (an alert or a close at
    the handshake, UNAUTHENTICATED, or an edge's HTTP 400/495/496), never inferred from a
    timeout or an UNAVAILABLE alone. (c) The same calls with ``mtls.client_cert`` must
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
    (5) ``mtls.fixtures.revoked``. Every variant must be refused, as (b) of MTLS-001 sees
    it (an alert or a close at the handshake, UNAUTHENTICATED, or an edge's HTTP
    400/495/496 with no grpc-status); OK, data or PERMISSION_DENIED fail. Variants 3-5 SKIP
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
