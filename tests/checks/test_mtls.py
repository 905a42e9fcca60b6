"""MTLS-001 and MTLS-002 judges on recorded handshakes and answers, no server.

A refused client certificate is seen at the handshake: an alert (OpenSSL, Go, Envoy) or a
close (grpcio closes without an alert), during it (TLS 1.2) or right after it (TLS 1.3); the
call then reaches a gRPC client as UNAVAILABLE, in whatever words its stack uses. An
UNAVAILABLE or a deadline without that evidence observes nothing. An accepted certificate
shows as data, OK or PERMISSION_DENIED, or any answer once the handshake was accepted; an
edge's HTTP 400/495/496 with no grpc-status (nginx) is the edge's refusal. The judges decide
by the handshake, the codes and the messages, never by the details text.
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
from harness.handshake import HandshakeSeen, HttpAnswer, Seen
from harness.outcome import Observation, Status
from harness.principals import Principal
from harness.tls import TlsFacts
from tests.checks.recorded import answer, certs, declared, root, settled

C = grpc.StatusCode
GET = "/hipaa.v1.PatientRecords/GetPatient"
SERVICE = Principal("billing-svc", token_file=Path("tokens/billing.jwt"))
CALL = S2sCall(GET, b"\n\x06p-0001", SERVICE)
NO_CERT = "(b) no client certificate"

# -- recorded handshakes ---------------------------------------------------------------------
#: TLS 1.3, OpenSSL / Go / Envoy: the alert arrives after the client's Finished.
ALERT = HandshakeSeen(Seen.REFUSED, "certificate_required", after=True, version="TLSv1.3")
#: TLS 1.2: the alert ends the handshake itself.
ALERT_12 = HandshakeSeen(Seen.REFUSED, "bad_certificate")
#: grpcio: the connection closes right after the handshake, no alert.
CLOSED = HandshakeSeen(Seen.CLOSED, "no alert: the server closed", after=True, version="TLSv1.3")
#: A reset during the handshake (a TLS 1.2 server or a proxy dropping the connection).
RESET = HandshakeSeen(Seen.CLOSED, "ConnectionResetError")
#: The server sent its SETTINGS, and a gRPC server answered a request on that connection.
SERVED = HttpAnswer(200, 16, "HTTP 200, grpc-status 16 in 0.01 s")
ACCEPTED = HandshakeSeen(Seen.ACCEPTED, "server sent HTTP/2 data", version="TLSv1.3", answer=SERVED)
#: nginx with ssl_verify_client on: handshake done, then HTTP 400 with an HTML page.
NGINX_400 = HandshakeSeen(
    Seen.ACCEPTED,
    "server sent HTTP/2 data",
    answer=HttpAnswer(400, None, "HTTP 400 in 0.01 s"),
)
NGINX_496 = HandshakeSeen(
    Seen.ACCEPTED, "server sent HTTP/2 data", answer=HttpAnswer(496, None, "HTTP 496")
)
#: Accepted, but the HTTP/2 request on it came to nothing: no word on who answers.
ACCEPTED_SILENT = HandshakeSeen(
    Seen.ACCEPTED, "server sent HTTP/2 data", answer=HttpAnswer(None, None, "nothing in 3.00 s")
)
TIMEOUT = HandshakeSeen(Seen.TIMEOUT, "after the handshake", after=True, elapsed_s=2.0)
CONNECT_ERROR = HandshakeSeen(Seen.CONNECT_ERROR, "TCP: Connection refused")


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


@pytest.mark.parametrize("seen", [ALERT, ALERT_12, CLOSED, RESET])
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
        # The channel never came up within the call's deadline.
        answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded"),
    ],
)
def test_a_refusal_seen_at_the_handshake_passes_whatever_the_stack_says(seen, result):
    obs = judge_refused(NO_CERT, CALL, seen, result)
    assert obs.status is Status.PASS
    assert obs.request_id == result.request_id
    assert "billing-svc's token" in obs.probe
    assert seen.describe() in obs.observed


@pytest.mark.parametrize("seen", [ALERT, CLOSED, ACCEPTED, TIMEOUT, CONNECT_ERROR])
@pytest.mark.parametrize(
    "result",
    [
        # A service that checks the certificate itself, in an interceptor.
        answer(C.UNAUTHENTICATED, details="client certificate required"),
        answer(C.UNAUTHENTICATED),
    ],
)
def test_unauthenticated_from_the_service_is_a_refusal(seen, result):
    assert judge_refused(NO_CERT, CALL, seen, result).status is Status.PASS


@pytest.mark.parametrize("seen", [TIMEOUT, CONNECT_ERROR, ACCEPTED, ACCEPTED_SILENT])
@pytest.mark.parametrize(
    "result",
    [
        answer(C.UNAVAILABLE),  # grpcio with no message: it used to count as a refusal
        answer(C.UNAVAILABLE, details="connection closed before server preface received"),
        answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded"),
    ],
)
def test_an_unreached_call_without_handshake_evidence_is_inconclusive(seen, result):
    """A timeout, a connect error or an UNAVAILABLE is never a refusal on its own."""
    obs = judge_refused(NO_CERT, CALL, seen, result)
    assert obs.status is Status.INCONCLUSIVE


@pytest.mark.parametrize("seen", [ALERT, CLOSED, ACCEPTED, TIMEOUT, NGINX_400])
@pytest.mark.parametrize(
    "result",
    [
        answer(C.OK, b"\n\x06p-0001"),  # no-client-auth: the calls it carries succeed
        answer(C.OK),
        # Envoy's RBAC filter matched the certificate's identity and denied it: accepted.
        answer(C.PERMISSION_DENIED, details="RBAC: access denied"),
        # A refusal code, but with data: the certificate got through.
        answer(C.UNAUTHENTICATED, b"\n\x06p-0001"),
    ],
)
def test_data_ok_or_permission_denied_fails_whatever_the_handshake_showed(seen, result):
    assert judge_refused("(1) self-signed look-alike", CALL, seen, result).status is Status.FAIL


@pytest.mark.parametrize(
    "result",
    [
        # The application processed the request (it reached a handler).
        answer(C.INVALID_ARGUMENT, details="patient_id: must not be empty"),
        answer(C.NOT_FOUND, details="no such patient"),
        answer(C.UNIMPLEMENTED, details="unknown method GetPatient"),
        answer(C.INTERNAL, details="stream terminated by RST_STREAM with error code: 2"),
        answer(C.UNKNOWN, details="Exception calling application"),
    ],
)
def test_an_answer_after_an_accepted_handshake_fails(result):
    assert judge_refused("(1) self-signed look-alike", CALL, ACCEPTED, result).status is (
        Status.FAIL
    )


@pytest.mark.parametrize(
    ("seen", "result"),
    [
        # grpcio's words for nginx's 400 page; grpc-go says "unexpected HTTP status code
        # received from server: 400 (Bad Request)"; the judge reads neither.
        (NGINX_400, answer(C.INTERNAL, details="Received http2 header with status: 400")),
        (NGINX_400, answer(C.INTERNAL, details="unexpected HTTP status code received: 400")),
        (NGINX_496, answer(C.UNKNOWN, details="Received http2 header with status: 496")),
        (NGINX_400, answer(C.UNAVAILABLE)),
    ],
)
def test_an_edges_http_refusal_without_grpc_status_passes(seen, result):
    obs = judge_refused(NO_CERT, CALL, seen, result)
    assert obs.status is Status.PASS
    assert "HTTP 4" in obs.observed


EDGE_PAGE = answer(C.INTERNAL, details="Received http2 header with status: 400")


@pytest.mark.parametrize(
    "seen",
    [
        ACCEPTED_SILENT,  # the HTTP/2 request came to nothing: no evidence either way
        TIMEOUT,
        ALERT,  # refused here, yet the call's own connection was answered: no refusal seen
    ],
)
def test_an_error_page_code_without_the_edges_answer_is_inconclusive(seen):
    assert judge_refused(NO_CERT, CALL, seen, EDGE_PAGE).status is Status.INCONCLUSIVE


def test_an_http_400_with_a_grpc_status_is_a_grpc_server_answering():
    grpc_400 = HandshakeSeen(
        Seen.ACCEPTED, "server sent HTTP/2 data", answer=HttpAnswer(400, 3, "HTTP 400")
    )
    assert not grpc_400.answer.refused_by_edge  # type: ignore[union-attr]
    assert judge_refused(NO_CERT, CALL, grpc_400, EDGE_PAGE).status is Status.FAIL


@pytest.mark.parametrize(
    ("seen", "status"),
    [
        (ALERT, Status.PASS),
        (ALERT_12, Status.PASS),
        (CLOSED, Status.PASS),
        (NGINX_400, Status.PASS),
        (ACCEPTED, Status.FAIL),
        (ACCEPTED_SILENT, Status.FAIL),
        (TIMEOUT, Status.INCONCLUSIVE),  # it used to pass: "no connection" within the timeout
        (CONNECT_ERROR, Status.INCONCLUSIVE),
    ],
)
def test_without_s2s_methods_only_the_handshake_is_judged(seen, status):
    obs = judge_handshake_only(NO_CERT, seen)
    assert obs.status is status
    assert seen.describe() in obs.observed


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
    refused = judge_refused(NO_CERT, CALL, CLOSED, answer(C.UNAVAILABLE)).of("b")
    let_in = judge_refused(NO_CERT, CALL, ACCEPTED, answer(C.OK, b"\x08\x01")).of("b")
    unseen = judge_refused(NO_CERT, CALL, TIMEOUT, answer(C.UNAVAILABLE)).of("b")
    c = judge_reaches(CALL, answer(C.OK, b"\x08\x01")).of("c")
    assert settled("MTLS-001", [a, refused, c]).status is Status.PASS
    assert settled("MTLS-001", [a, let_in, c]).status is Status.FAIL  # client-cert-optional
    assert settled("MTLS-001", [a, refused]).status is Status.INCONCLUSIVE  # (c) did not run
    assert settled("MTLS-001", [a, unseen, c]).status is Status.INCONCLUSIVE  # no refusal seen


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
    one = judge_refused("(1)", CALL, ALERT, answer(C.UNAVAILABLE)).of("1")
    two = judge_refused("(2)", CALL, ACCEPTED, answer(C.UNAUTHENTICATED)).of("2")
    skip = Observation("(5) revoked", "no fixture", "mtls.fixtures.revoked", Status.SKIP).of("5")
    assert settled("MTLS-002", [one, two, skip]).status is Status.PASS
    assert settled("MTLS-002", [one, skip]).status is Status.INCONCLUSIVE
    expired_in = judge_refused("(3)", CALL, ACCEPTED, answer(C.OK, b"\x08\x01")).of("3")
    assert settled("MTLS-002", [one, two, expired_in]).status is Status.FAIL
