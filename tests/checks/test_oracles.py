"""The refusal oracle every AUTHN/AUTHZ/MTLS judge shares: no data, whatever carries it."""

import grpc
import pytest
from google.protobuf import any_pb2, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from harness.catalogue import Severity
from harness.oracles import refused
from harness.outcome import Status
from harness.plans.calls import Call

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
