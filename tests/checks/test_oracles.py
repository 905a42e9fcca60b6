"""The oracles every judge shares: refusals (no data, whatever carries it), and calls that
never reached the service (transport failures, a proxy's own HTTP refusal)."""

import grpc
import pytest
from google.protobuf import any_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from harness.catalogue import Severity
from harness.oracles import (
    EDGE_THROTTLED,
    EDGE_TOO_LARGE,
    calmed,
    edge_answered,
    edge_note,
    edge_refusal,
    refused,
    unreached,
)
from harness.outcome import Status
from harness.plans.calls import Call

from .edges import CALMED, CLIENTS, DRAINED, LOST, MAPPED, NGINX_HEADERS, WORDING, lost, refusal
from .recorded import answer

C = grpc.StatusCode
CALL = Call("no credentials", "/acme.charts.v2.Charts/GetChart", (b"",))


def details(*payloads) -> tuple[tuple[str, bytes], ...]:
    packed = []
    for p in payloads:
        a = any_pb2.Any()
        a.Pack(p)
        packed.append(a)
    blob = status_pb2.Status(code=16, message="unauthenticated", details=packed)
    return (("grpc-status-details-bin", blob.SerializeToString()),)


RECORD = struct_pb2.Struct(fields={"patientId": struct_pb2.Value(string_value="p-0001")})


@pytest.mark.parametrize(
    ("result", "status", "severity"),
    [
        (answer(C.UNAUTHENTICATED, details="missing token"), Status.PASS, None),
        (
            answer(C.UNAUTHENTICATED, trailers=details(error_details_pb2.ErrorInfo(reason="x"))),
            Status.PASS,
            None,
        ),
        # A refusal that carries the record in its status details is data: critical.
        (answer(C.UNAUTHENTICATED, trailers=details(RECORD)), Status.FAIL, Severity.CRITICAL),
        (answer(C.PERMISSION_DENIED, trailers=details(RECORD)), Status.FAIL, Severity.CRITICAL),
        # Details nobody can decode: what they hold cannot be said.
        (
            answer(C.UNAUTHENTICATED, trailers=(("grpc-status-details-bin", b"\xff\xff"),)),
            Status.INCONCLUSIVE,
            None,
        ),
        # Processed before authenticating, but nothing came back: medium, not critical.
        (answer(C.INVALID_ARGUMENT, details="patient_id: required"), Status.FAIL, Severity.MEDIUM),
        (answer(C.NOT_FOUND, details="no such chart"), Status.FAIL, Severity.MEDIUM),
        (answer(C.OK, b"\n\x06p-0001"), Status.FAIL, Severity.CRITICAL),
        (answer(C.PERMISSION_DENIED), Status.FAIL, Severity.LOW),
        (answer(C.UNAVAILABLE, details="upstream connect error"), Status.INCONCLUSIVE, None),
    ],
)
def test_refused(result, status, severity):
    got = refused(CALL, result)
    assert (got.status, got.severity) == (status, severity)


def test_the_evidence_names_what_the_details_carry():
    got = refused(CALL, answer(C.UNAUTHENTICATED, trailers=details(RECORD)))
    assert "status details carry google.protobuf.Struct" in got.observed


# -- a proxy's own HTTP refusal (nginx in front of the service) -----------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("status", [400, 413, 429, 495, 496, 503])
def test_edge_refusal_reads_the_http_status_each_client_reports(client, status):
    result = refusal(client, status)
    assert result.http_status == status
    assert edge_refusal(result) == status
    assert unreached(result)


def test_edge_constants_name_what_nginx_answers_with():
    assert EDGE_TOO_LARGE == 413
    assert {429, 503} == EDGE_THROTTLED


@pytest.mark.parametrize(
    "result",
    [
        # The service's own answers, whatever their text says.
        answer(C.INVALID_ARGUMENT, details="HTTP status code 413 is not a valid page size"),
        answer(C.RESOURCE_EXHAUSTED, details="Received http2 header with status: 429"),
        answer(C.INTERNAL, details="Exception deserializing request!"),
        answer(C.UNKNOWN, details="Exception calling application: boom"),
        answer(C.UNAVAILABLE, details="failed to connect to all addresses"),
        answer(C.UNKNOWN, details="handler said: Received HTTP status code 413"),
        # Messages came back: an HTTP 200 answer, from the service.
        answer(C.UNKNOWN, b"\x0a\x00", details="Received http2 header with status: 413"),
        # An HTTP 200 is a gRPC answer whose status went missing, not a refusal.
        answer(C.UNKNOWN, details="Received HTTP status code 200"),
        answer(C.OK, b"\x0a\x00", headers=NGINX_HEADERS),
    ],
)
def test_answers_that_are_not_a_proxys_refusal(result):
    assert edge_refusal(result) is None


def test_unreached_is_a_transport_failure_or_a_proxys_refusal():
    assert unreached(answer(C.UNAVAILABLE, details="Connection reset by peer"))
    assert unreached(answer(C.DEADLINE_EXCEEDED))
    assert unreached(refusal("grpc-go", 413))
    assert not unreached(answer(C.INTERNAL, details="Exception deserializing request!"))
    assert not unreached(answer(C.UNAVAILABLE, b"\x0a\x00", details="Connection reset by peer"))


def test_calmed_is_nginxs_goaway_for_an_oversized_header():
    assert calmed(answer(C.UNAVAILABLE, details=CALMED))
    assert calmed(answer(C.UNAVAILABLE, details="received GOAWAY: code ENHANCE_YOUR_CALM"))
    assert unreached(answer(C.UNAVAILABLE, details=CALMED))
    assert not calmed(answer(C.UNAVAILABLE, details=DRAINED))  # a graceful drain
    assert not calmed(answer(C.INTERNAL, details=CALMED))


# Before: an edge's 400 was INTERNAL from the service (FAIL medium: "processed before the
# refusal"), an edge's 413 UNKNOWN (FAIL medium), though neither reached the service.
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("status", [400, 413, 429, 495, 503])
def test_refused_leaves_a_proxys_refusal_inconclusive(client, status):
    got = refused(CALL, refusal(client, status, CALL.method))
    assert (got.status, got.severity) == (Status.INCONCLUSIVE, None)
    assert f"HTTP {status} from a proxy in front of the service" in got.observed


@pytest.mark.parametrize("client", CLIENTS)
def test_refused_passes_the_proxys_refusal_a_call_is_after(client):
    # AUTHN-001 V8: nginx refuses a duplicate authorization header with 400.
    got = refused(CALL, refusal(client, 400, CALL.method), edge=(400,))
    assert got.status is Status.PASS
    assert "HTTP 400" in got.observed
    # ... but not its 413 or 429: another refusal than the one the call is after.
    assert refused(CALL, refusal(client, 413), edge=(400,)).status is Status.INCONCLUSIVE


@pytest.mark.parametrize("client", CLIENTS)
def test_a_proxys_401_is_the_unauthenticated_refusal(client):
    got = refused(CALL, refusal(client, 401, CALL.method))
    assert got.status is Status.PASS
    assert edge_note(refusal(client, 401)) in got.observed
    # A 403 for missing credentials: the right refusal, the wrong semantics, as callers see it.
    wrong = refused(CALL, refusal(client, 403))
    assert (wrong.status, wrong.severity) == (Status.FAIL, Severity.LOW)
    assert refused(CALL, refusal(client, 403), expected=(C.PERMISSION_DENIED,)).status is (
        Status.PASS
    )


def test_every_mapped_code_is_a_code_the_mapping_gives():
    for client, word in WORDING.items():
        for status, code in MAPPED.items():
            assert answer(code, details=word(status)).http_status == status, client


@pytest.mark.parametrize("client", sorted(LOST))
def test_an_answer_whose_status_the_client_lost_is_still_a_proxys(client):
    result = lost(client, CALL.method)
    assert result.statusless
    assert result.http_status is None
    assert edge_refusal(result) is None  # no status to give
    assert edge_answered(result)
    assert unreached(result)
    got = refused(CALL, result)
    assert got.status is Status.INCONCLUSIVE  # before: FAIL (medium), INTERNAL
    assert "its status lost" in got.observed
    assert refused(CALL, result, edge=(400, None)).status is Status.PASS
    assert refused(CALL, result, edge=(400,)).status is Status.INCONCLUSIVE


def test_a_stream_ended_without_trailers_is_statusless_only_as_an_error():
    assert not answer(C.OK, details=LOST["grpc-go"]).statusless
    assert not answer(C.INVALID_ARGUMENT, details=LOST["grpcio"]).statusless
    assert not edge_answered(answer(C.INTERNAL, b"\x0a\x00", details=LOST["grpcio"]))
    assert not answer(C.INTERNAL, details="Exception deserializing request!").statusless
