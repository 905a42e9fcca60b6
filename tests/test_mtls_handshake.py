"""The mTLS handshake probe against real servers on 127.0.0.1.

A grpcio server requiring client certificates closes the connection without an alert right
after a TLS 1.3 handshake with a missing or forged certificate; an OpenSSL edge (Python's
``ssl``, as nginx or Envoy terminate TLS) sends an alert, after the handshake in TLS 1.3 and
inside it in TLS 1.2; an nginx-like edge completes the handshake and answers HTTP 400 with
no grpc-status. Each refusal must be recognised as the alert or close arrives: the probes
here wait up to :data:`PATIENT` seconds, so a probe that waited for its timeout to conclude
would be seen as a timeout, not a refusal. An accepting server is seen as accepting, and a
silent or closed port as a timeout or a connect error, never as a refusal.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from cryptography import x509

from harness.channels import invoke
from harness.checks.mtls import S2sCall, forgeries, judge_refused
from harness.handshake import HandshakeSeen, Seen, see_client_cert
from harness.outcome import Status
from harness.relay import Listener
from targets.edge import Edge, EdgeSettings
from targets.pki import CertificateAuthority, Issued

#: How long a probe may wait: a refusal must be seen long before this.
PATIENT = 30.0
HEALTH = "/grpc.health.v1.Health/Check"
Pair = tuple[bytes | None, bytes | None]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("mTLS handshake test CA")


@pytest.fixture(scope="module")
def server_cert(ca: CertificateAuthority) -> Issued:
    return ca.issue(("localhost", "127.0.0.1"))


@pytest.fixture(scope="module")
def client(ca: CertificateAuthority) -> Pair:
    issued = ca.issue(("billing-svc",), client=True)
    return issued.chain_pem, issued.key_pem


@pytest.fixture(scope="module")
def bad(client: Pair) -> dict[str, Pair]:
    """A missing certificate and the two forgeries MTLS-002 makes."""
    assert client[0] is not None
    forged = forgeries(x509.load_pem_x509_certificate(client[0]))
    return {
        "no certificate": (None, None),
        "self-signed": (forged["1"][1], forged["1"][2]),
        "rogue CA": (forged["2"][1], forged["2"][2]),
    }


def _see(port: int, pair: Pair, *, patience: float = PATIENT) -> HandshakeSeen:
    return see_client_cert(
        "127.0.0.1",
        port,
        server_name="localhost",
        cert_pem=pair[0],
        key_pem=pair[1],
        timeout=patience,
        path=HEALTH,
        read_s=patience,
    )


@contextlib.contextmanager
def _grpc_server(creds: grpc.ServerCredentials | None) -> Iterator[int]:
    """A grpcio server with no services (every call: UNIMPLEMENTED), stopped on exit."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def grpcio_mtls(ca: CertificateAuthority, server_cert: Issued) -> Iterator[int]:
    creds = grpc.ssl_server_credentials(
        [(server_cert.key_pem, server_cert.chain_pem)],
        root_certificates=ca.cert_pem,
        require_client_auth=True,
    )
    with _grpc_server(creds) as port:
        yield port


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    with _grpc_server(None) as port:
        yield port


def _edge(
    settings: EdgeSettings, ca: CertificateAuthority, cert: Issued, backend: int, tmp: Path
) -> Edge:
    cert.write(tmp, "server")
    (tmp / "ca.pem").write_bytes(ca.cert_pem)
    ctx = settings.context(
        str(tmp / "server.pem"), str(tmp / "server-key.pem"), str(tmp / "ca.pem")
    )
    return Edge(ctx, ("127.0.0.1", backend), "127.0.0.1", require_h2=True)


@pytest.fixture(scope="module", params=["TLSv1.3", "TLSv1.2"])
def openssl_edge(request, ca, server_cert, backend, tmp_path_factory) -> Iterator[tuple[int, str]]:
    """An OpenSSL edge requiring client certificates, in front of a grpcio backend."""
    version = ssl.TLSVersion.TLSv1_3 if request.param == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    tmp = tmp_path_factory.mktemp("edge")
    edge = _edge(EdgeSettings(maximum=version), ca, server_cert, backend, tmp)
    try:
        yield edge.port, request.param
    finally:
        edge.stop()


class _Http400Edge(Listener):
    """Like nginx with ``ssl_verify_client on``: any handshake completes, every HTTP/2
    request gets HTTP 400 and an HTML page, no grpc-status."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        super().__init__("127.0.0.1", "http-400-edge")

    def serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), self.ctx.wrap_socket(conn, server_side=True) as tls:
            h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            h2c.initiate_connection()
            tls.sendall(h2c.data_to_send())
            while data := tls.recv(65536):
                for event in h2c.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        page = b"<html><h1>400 No required SSL certificate was sent</h1></html>"
                        headers = [(":status", "400"), ("content-type", "text/html")]
                        h2c.send_headers(event.stream_id, headers)
                        h2c.send_data(event.stream_id, page, end_stream=True)
                tls.sendall(h2c.data_to_send())


@pytest.fixture(scope="module")
def http_400_edge(server_cert: Issued, tmp_path_factory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("nginx")
    server_cert.write(tmp, "server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "server.pem", tmp / "server-key.pem")
    ctx.set_alpn_protocols(["h2"])
    edge = _Http400Edge(ctx)
    try:
        yield edge.port
    finally:
        edge.stop()


# -- grpcio (no alert: a close) -------------------------------------------------------------


@pytest.mark.parametrize("case", ["no certificate", "self-signed", "rogue CA"])
def test_grpcio_closes_on_a_missing_or_forged_certificate(grpcio_mtls, bad, case):
    seen = _see(grpcio_mtls, bad[case])
    assert seen.refused, seen.describe()
    assert seen.answer is None  # no HTTP/2 request on a refused connection


def test_grpcio_accepts_the_client_certificate(grpcio_mtls, client):
    seen = _see(grpcio_mtls, client)
    assert seen.seen is Seen.ACCEPTED, seen.describe()
    assert seen.detail == "server sent HTTP/2 data"
    assert seen.answer is not None
    assert seen.answer.served_grpc
    assert seen.answer.grpc_status == 12  # no such service
    assert not seen.answer.refused_by_edge


def test_the_judge_passes_a_seen_refusal_and_holds_an_unseen_one(grpcio_mtls, bad, ca):
    """The real call without a certificate is UNAVAILABLE: a refusal only with the handshake."""
    seen = _see(grpcio_mtls, bad["no certificate"])
    creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{grpcio_mtls}", creds, options=options) as channel:
        result = invoke(channel, HEALTH, [b""], timeout=PATIENT)
    assert result.code is grpc.StatusCode.UNAVAILABLE
    call = S2sCall(HEALTH, b"", None)
    assert judge_refused("(b) no client certificate", call, seen, result).status is Status.PASS
    silent = HandshakeSeen(Seen.TIMEOUT, "after the handshake", after=True)
    assert judge_refused("(b)", call, silent, result).status is Status.INCONCLUSIVE


# -- an OpenSSL edge (alerts) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "alerts"),
    [
        ("no certificate", {"certificate_required", "handshake_failure"}),
        ("self-signed", {"unknown_ca"}),
        ("rogue CA", {"decrypt_error", "unknown_ca", "bad_certificate"}),
    ],
)
def test_an_openssl_edge_refuses_with_an_alert(openssl_edge, bad, case, alerts):
    port, version = openssl_edge
    seen = _see(port, bad[case])
    assert seen.seen is Seen.REFUSED, seen.describe()
    assert seen.detail in alerts
    # TLS 1.3: the client's handshake is done when the alert comes; TLS 1.2: it is inside it.
    assert seen.after is (version == "TLSv1.3")
    assert f"alert {seen.detail}" in seen.describe()


def test_an_openssl_edge_accepts_the_client_certificate(openssl_edge, client):
    port, version = openssl_edge
    seen = _see(port, client)
    assert seen.seen is Seen.ACCEPTED, seen.describe()
    assert seen.version == version
    assert seen.answer is not None
    assert seen.answer.served_grpc


# -- an nginx-like edge (HTTP 400) ----------------------------------------------------------


def test_an_edges_http_400_is_recorded_as_its_refusal(http_400_edge):
    seen = _see(http_400_edge, (None, None))
    assert seen.seen is Seen.ACCEPTED  # the handshake completed: the HTTP answer decides
    assert seen.answer is not None
    assert seen.answer.http_status == 400
    assert seen.answer.grpc_status is None
    assert seen.answer.refused_by_edge


# -- nothing seen: never a refusal ----------------------------------------------------------


def test_a_silent_port_is_a_timeout():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody talks
        seen = _see(silent.getsockname()[1], (None, None), patience=0.3)
    assert seen.seen is Seen.TIMEOUT
    assert not seen.refused


def test_a_closed_port_is_a_connect_error():
    with socket.create_server(("127.0.0.1", 0)) as gone:
        port = gone.getsockname()[1]
    seen = _see(port, (None, None))
    assert seen.seen is Seen.CONNECT_ERROR
    assert not seen.refused
