"""MTLS-001 and MTLS-002 judges on recorded answers, no server.

A refused client certificate reaches a gRPC client as UNAVAILABLE with no message, in
whatever words its stack uses (grpcio, grpc-go, grpc-js, Envoy in front); an accepted one
as data, OK or PERMISSION_DENIED. The judges decide by those codes and the messages, never
by the details text.
"""

from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness.checks import registered
from harness.checks.mtls import (
    FIXTURES,
    S2sCall,
    forgeries,
    judge_channel,
    judge_handshake_only,
    judge_reaches,
    judge_refused,
    judge_requirement,
    plan_s2s,
)
from harness.config import Config
from harness.outcome import Observation, Status
from harness.principals import Principal
from harness.tls import TlsFacts
from tests.checks.recorded import answer, certs, declared, root, settled

C = grpc.StatusCode
GET = "/hipaa.v1.PatientRecords/GetPatient"
SERVICE = Principal("billing-svc", token_file=Path("tokens/billing.jwt"))
CALL = S2sCall(GET, b"\n\x06p-0001", SERVICE)
NO_CERT = "(b) no client certificate"


def test_declared_probes_follow_the_catalogue_rows():
    assert declared("MTLS-001") == [("a", True, ()), ("b", True, ()), ("c", True, ())]
    # MTLS-002: the numbered variants; 3-5 are SKIP without their fixture.
    assert declared("MTLS-002") == [
        ("1", True, ()),
        ("2", True, ()),
        ("3", False, ("mtls.fixtures.expired",)),
        ("4", False, ("mtls.fixtures.wrong_eku",)),
        ("5", False, ("mtls.fixtures.revoked",)),
    ]
    assert [(ref, f"mtls.fixtures.{name}") for ref, name, _ in FIXTURES] == [
        (p.ref, p.needs[0]) for p in registered()["MTLS-002"].probes[2:]
    ]


# -- refusals (MTLS-001 (b), MTLS-002) -------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        # grpcio: the server's alert, TLS 1.2 or 1.3.
        answer(C.UNAVAILABLE, details="failed to connect to all addresses; Ssl handshake failed"),
        # grpc-go, TLS 1.3: the alert arrives after the client thought the handshake done.
        answer(C.UNAVAILABLE, details="connection closed before server preface received"),
        # grpc-js.
        answer(C.UNAVAILABLE, details="No connection established. Last error: read ECONNRESET"),
        # Envoy with require_client_certificate: the downstream connection reset.
        answer(C.UNAVAILABLE, details="upstream connect error or disconnect/reset before headers"),
        # A service that checks the certificate itself, in an interceptor.
        answer(C.UNAUTHENTICATED, details="client certificate required"),
        answer(C.UNAUTHENTICATED),
    ],
)
def test_a_refused_certificate_passes_whatever_the_stack_says(result):
    obs = judge_refused(NO_CERT, CALL, result)
    assert obs.status is Status.PASS
    assert obs.request_id == result.request_id
    assert "billing-svc's token" in obs.probe


@pytest.mark.parametrize(
    "result",
    [
        answer(C.OK, b"\n\x06p-0001"),  # no-client-auth: the calls it carries succeed
        answer(C.OK),
        # Envoy's RBAC filter matched the certificate's identity and denied it: accepted.
        answer(C.PERMISSION_DENIED, details="RBAC: access denied"),
        # A refusal code, but with data: the certificate got through.
        answer(C.UNAUTHENTICATED, b"\n\x06p-0001"),
        # The application processed the request (it reached a handler).
        answer(C.INVALID_ARGUMENT, details="patient_id: must not be empty"),
        answer(C.NOT_FOUND, details="no such patient"),
        answer(C.UNIMPLEMENTED, details="unknown method GetPatient"),
        answer(C.INTERNAL, details="stream terminated by RST_STREAM with error code: 2"),
    ],
)
def test_a_certificate_that_got_through_fails(result):
    assert judge_refused("(1) self-signed look-alike", CALL, result).status is Status.FAIL


def test_a_deadline_observes_nothing():
    obs = judge_refused(NO_CERT, CALL, answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded"))
    assert obs.status is Status.INCONCLUSIVE


def test_without_s2s_methods_only_the_handshake_is_judged():
    assert judge_handshake_only(NO_CERT, connected=False).status is Status.PASS
    assert judge_handshake_only(NO_CERT, connected=True).status is Status.FAIL


# -- MTLS-001 (a) and (c) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requirement", "status"),
    [
        ("REQUIRED", Status.PASS),
        ("OPTIONAL", Status.PASS),  # judged by (b): it fails there unless every call is refused
        ("DISABLED", Status.FAIL),
        ("UNKNOWN", Status.INCONCLUSIVE),
    ],
)
def test_the_client_auth_requirement(requirement, status):
    facts = TlsFacts("127.0.0.1:50051", client_auth=requirement, client_auth_evidence="sslyze")
    obs = judge_requirement(facts)
    assert obs.status is status
    assert obs.observed.startswith(requirement)


def test_a_failed_scan_is_an_error_not_a_verdict():
    facts = TlsFacts("127.0.0.1:50051", problem="sslyze could not complete a TLS handshake")
    assert judge_requirement(facts).status is Status.ERROR


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.OK, b"\n\x06p-0001"), Status.PASS),
        (answer(C.PERMISSION_DENIED, details="RBAC: access denied"), Status.PASS),  # reached
        (answer(C.UNAVAILABLE, details="Connection reset by peer"), Status.INCONCLUSIVE),
        (answer(C.DEADLINE_EXCEEDED), Status.INCONCLUSIVE),
    ],
)
def test_with_the_client_certificate_the_call_must_reach_the_service(result, status):
    obs = judge_reaches(CALL, result)
    assert obs.status is status
    assert obs.request_id == result.request_id


def test_without_s2s_methods_c_is_the_runs_channel():
    assert judge_channel("").status is Status.PASS
    assert judge_channel("could not open a channel within 5 s").status is Status.INCONCLUSIVE


def test_mtls_001_settles_by_its_three_probes():
    a = judge_requirement(TlsFacts("t", client_auth="OPTIONAL")).of("a")
    refused = judge_refused(NO_CERT, CALL, answer(C.UNAVAILABLE)).of("b")
    let_in = judge_refused(NO_CERT, CALL, answer(C.OK, b"\x08\x01")).of("b")
    c = judge_reaches(CALL, answer(C.OK, b"\x08\x01")).of("c")
    assert settled("MTLS-001", [a, refused, c]).status is Status.PASS
    assert settled("MTLS-001", [a, let_in, c]).status is Status.FAIL  # client-cert-optional
    assert settled("MTLS-001", [a, refused]).status is Status.INCONCLUSIVE  # (c) did not run


# -- planning and the forged certificates ----------------------------------------------------


def test_the_plan_gives_each_s2s_method_a_token_without_descriptors():
    anonymous = Principal("anonymous")
    calls = plan_s2s([GET, "/x.Y/Z"], None, [anonymous, SERVICE], Config())
    assert calls == [S2sCall(GET, b"", SERVICE), S2sCall("/x.Y/Z", b"", SERVICE)]
    assert plan_s2s([GET], None, [anonymous], Config()) == [S2sCall(GET, b"", None)]
    assert plan_s2s([], None, [SERVICE], Config()) == []


def test_forgeries_copy_the_identity_but_not_the_trust(ca):
    real = certs(ca.issue(("billing-svc",), client=True))[0]
    forged = forgeries(real)
    assert list(forged) == ["1", "2"]
    for label, cert_pem, key_pem in forged.values():
        cert = x509.load_pem_x509_certificate(cert_pem)
        assert cert.subject == real.subject
        san = x509.SubjectAlternativeName
        assert cert.extensions.get_extension_for_class(san) == (
            real.extensions.get_extension_for_class(san)
        )
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
        with pytest.raises((InvalidSignature, ValueError)):  # not the CA's, whatever it says
            cert.verify_directly_issued_by(root(ca))
        assert label.startswith(("(1)", "(2)"))
    assert x509.load_pem_x509_certificate(forged["1"][1]).issuer == real.subject
    assert x509.load_pem_x509_certificate(forged["2"][1]).issuer == real.issuer


def test_mtls_002_passes_without_its_optional_fixtures_but_not_without_a_forgery():
    one = judge_refused("(1)", CALL, answer(C.UNAVAILABLE)).of("1")
    two = judge_refused("(2)", CALL, answer(C.UNAUTHENTICATED)).of("2")
    skip = Observation("(5) revoked", "no fixture", "mtls.fixtures.revoked", Status.SKIP).of("5")
    assert settled("MTLS-002", [one, two, skip]).status is Status.PASS
    assert settled("MTLS-002", [one, skip]).status is Status.INCONCLUSIVE
    expired_in = judge_refused("(3)", CALL, answer(C.OK, b"\x08\x01")).of("3")
    assert settled("MTLS-002", [one, two, expired_in]).status is Status.FAIL
