"""Targets the harness knows nothing about: no config, self-signed TLS, cleartext."""

import datetime as dt
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from conftest import control_statuses

pytestmark = pytest.mark.slow


def self_signed(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(params=["tls-self-signed", "cleartext"])
def foreign_server(request) -> Iterator[tuple[str, int]]:
    """A plain grpcio server with health and reflection on, built the way tutorials do."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    reflection.enable_server_reflection(["grpc.health.v1.Health", reflection.SERVICE_NAME], server)
    if request.param == "cleartext":
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        cert, key = self_signed("svc.local")
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    yield request.param, port
    server.stop(0)


def test_no_config_still_probes_and_finds_reflection(pytester, foreign_server):
    kind, port = foreign_server
    statuses = control_statuses(pytester, f"--hipaa-target=127.0.0.1:{port}")
    assert statuses["REFL-001"] == "FAIL"
    assert statuses["TLS-001"] == ("FAIL" if kind == "cleartext" else "PASS")
    # Health and no admin services: the surface is fine; errors are generic.
    assert statuses["REFL-002"] == "PASS"
    assert statuses["ERR-001"] == "PASS"
    # ERR-002 judges the calls the run planned (AUTHN-001, AUTHZ-001, FUZZ-001: none here, only
    # infrastructure services) and compares authentication failures across principals (none
    # configured): nothing could run, so it is SKIP, never a PASS.
    assert statuses["ERR-002"] == "SKIP"
    # Nothing configured: what needs principals, a matrix or a policy is skipped, not passed.
    for control in (
        "AUTHN-002",
        "AUTHN-003",
        "AUTHN-004",
        "AUTHN-005",
        "AUTHN-006",
        "AUTHN-007",
        "AUTHN-008",
        "AUTHZ-001",
    ):
        assert statuses[control] == "SKIP", control
    # Only infrastructure services are declared: AUTHN-001 has nothing to probe, and says so.
    assert statuses["AUTHN-001"] == "SKIP"


def test_no_config_service_without_auth_runs_authn_001(pytester):
    """A service whose descriptors come from reflection alone: AUTHN-001 still runs."""
    from targets.reference.server import PatientRecords, _Store

    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers([PatientRecords(_Store.seeded()).handler()])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    reflection.enable_server_reflection(
        ["hipaagrpc.reference.v1.PatientRecords", "grpc.health.v1.Health", reflection.SERVICE_NAME],
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        statuses = control_statuses(pytester, f"--hipaa-target=127.0.0.1:{port}")
    finally:
        server.stop(0)
    assert statuses["AUTHN-001"] == "FAIL"  # every method answers without credentials
    assert statuses["REFL-001"] == "FAIL"
    for control in ("AUTHN-002", "AUTHN-005", "AUTHZ-001", "AUTHZ-002", "AUTHZ-005", "AUTHN-009"):
        assert statuses[control] == "SKIP", control


def test_unreadable_audit_source_is_inconclusive_not_fatal(pytester):
    pytester.makefile(".toml", hipaa='[audit]\nsource = "/nonexistent/hipaa/audit.jsonl"\n')
    statuses = control_statuses(pytester, "--hipaa-target=spawn:reference")
    for control in (
        "AUDIT-001",
        "AUDIT-002",
        "AUDIT-003",
        "AUDIT-004",
        "AUDIT-005",
        "AUDIT-006",
        "REDACT-002",
    ):
        assert statuses[control] == "INCONCLUSIVE", control
    # Everything else still ran and passed.
    assert statuses["AUTHZ-001"] == statuses["REDACT-001"] == statuses["REFL-001"] == "PASS"


def test_abusive_controls_skip_without_their_opt_in(pytester):
    pytester.makefile(
        ".toml", hipaa="[safety]\nallow_transport_abuse = false\nallow_mutations = false\n"
    )
    reprec = pytester.inline_run(
        "--hipaa-target=spawn:reference",
        "-k",
        "LIMIT or AUTHZ_003 or MIN_004",
        "-p",
        "no:cacheprovider",
    )
    skipped = {
        r.nodeid.split("::")[-1]: str(r.longrepr[2])
        for r in reprec.getreports("pytest_runtest_logreport")
        if r.skipped
    }
    assert "--hipaa-allow-transport-abuse" in skipped["test_LIMIT_002_rate_limits"]
    assert "--hipaa-allow-transport-abuse" in skipped["test_LIMIT_003_export_and_page_bounds"]
    assert "--hipaa-allow-mutations" in skipped["test_AUTHZ_003_no_escalation_by_tampering"]
    assert "--hipaa-allow-mutations" in skipped["test_MIN_004_cache_honours_updates"]


def test_a_target_that_stops_answering_ends_quickly_and_inconclusive(pytester):
    """Every method hangs: the run stops sending after three deadlines and says so."""
    import time

    from targets.reference.server import PatientRecords, _Store

    class Hang(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            if details.method.startswith("/hipaagrpc."):
                time.sleep(2)  # longer than the call deadline below
            return continuation(details)

    server = grpc.server(futures.ThreadPoolExecutor(32), interceptors=[Hang()])
    server.add_generic_rpc_handlers([PatientRecords(_Store.seeded()).handler()])
    reflection.enable_server_reflection(
        ["hipaagrpc.reference.v1.PatientRecords", reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    start = time.monotonic()
    try:
        statuses = control_statuses(
            pytester, f"--hipaa-target=127.0.0.1:{port}", "--hipaa-call-timeout=1"
        )
    finally:
        server.stop(3).wait(5)  # let the sleeping handlers finish
    assert time.monotonic() - start < 60
    assert statuses["AUTHN-001"] == "INCONCLUSIVE"
    assert "PASS" not in {statuses[c] for c in ("AUTHN-001", "ERR-001", "ERR-002")}
