"""TLS-006's 0-RTT probe (``harness.early_data``): openssl s_client offering ALPN h2.

The judge's parsers on recorded openssl output, then the probe over real TLS on
127.0.0.1: the bundled references (grpcio, grpc-js) and nginx issue tickets that allow no
early data; nginx with ``ssl_early_data on`` accepts it; a server that issues no ticket,
one that never speaks, and a machine without openssl are each told apart.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from conftest import open_run
from harness import early_data
from harness.early_data import (
    EarlyData,
    _judge_resumption,
    _last_line,
    _whole,
    early_data_status,
    handshake_done,
    max_early_data,
)
from harness.plans.tls import scan_target
from harness.tls import ScanTarget, early_data_at
from targets import nginx

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason=early_data.MISSING)

SESSION_WITH_TICKET = """SSL-Session:
    Protocol  : TLSv1.3
    Cipher    : TLS_AES_256_GCM_SHA384
    Resumption PSK: D8A156D862A5EEE60B8B2B0539E97142789FA7075A9844F6A545BD6F12006BE7
    PSK identity: None
    TLS session ticket lifetime hint: 300 (seconds)
    TLS session ticket:
    0000 - 8e 1a 6b 0c 55 3d 2f 6e-71 d8 1e 0a 9b 3a 27 44   ..k.U=/nq....:'D
    Start Time: 1796097496
    Timeout   : 300 (sec)
    Extended master secret: no
    Max Early Data: {n}
"""
SESSION_WITHOUT_TICKET = """SSL-Session:
    Protocol  : TLSv1.3
    Resumption PSK:
    Max Early Data: 0
"""


def test_the_tickets_allowance_is_read_and_no_ticket_is_none() -> None:
    assert max_early_data(SESSION_WITH_TICKET.format(n=0)) == 0
    assert max_early_data(SESSION_WITH_TICKET.format(n=16384)) == 16384
    assert max_early_data(SESSION_WITHOUT_TICKET) is None
    assert max_early_data("unable to load SSL_SESSION") is None


def test_s_clients_words_for_the_early_data_and_the_handshake() -> None:
    assert early_data_status("Reused, TLSv1.3\nEarly data was accepted\n") == "accepted"
    assert early_data_status("Early data was rejected") == "rejected"
    assert early_data_status("Early data was not sent") == "not sent"
    assert early_data_status("connect:errno=111") is None
    done = "ALPN protocol: h2\n---\nNew, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384\n"
    assert handshake_done(done)
    assert not handshake_done("New, TLSv1.3, Cipher is X\nNo ALPN negotiated\n")
    assert not handshake_done("40E7:error:0A000410:SSL routines::sslv3 alert handshake failure")
    # What the server sent s_client is printed too: no control bytes reach a reason.
    settings = "read R BLOCK\n\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\n\x00\x00\n"
    assert _last_line(settings) == "read R BLOCK"
    assert _last_line("closed\x00 by peer\n") == "closed? by peer"
    assert _last_line("") == "no output"


def test_rejected_counts_only_on_a_resumed_session_and_a_half_written_one_is_none(
    tmp_path: Path,
) -> None:
    resumed = "Reused, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384\nEarly data was rejected\n"
    assert _judge_resumption(16384, resumed) == EarlyData(
        False,
        "its ticket allows 16384 bytes of early data; the HTTP/2 preface sent as early data "
        "on resumption was rejected",
    )
    fresh = "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384\nEarly data was rejected\n"
    assert "the session was not resumed" in str(_judge_resumption(16384, fresh))
    accepted = resumed.replace("rejected", "accepted")
    assert _judge_resumption(16384, accepted).supports_early_data is True  # type: ignore[union-attr]
    pem = b"-----BEGIN SSL SESSION PARAMETERS-----\nMIIB\n-----END SSL SESSION PARAMETERS-----\n"
    written = tmp_path / "s.pem"
    written.write_bytes(b"")  # truncated for the next ticket
    assert _whole(written) == b""
    written.write_bytes(pem[:30])  # half-written
    assert _whole(written) == b""
    written.write_bytes(pem)
    assert _whole(written) == pem
    assert _whole(tmp_path / "absent.pem") == b""


@needs_openssl
@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        "spawn:reference",
        "spawn:reference-node",
        pytest.param(
            "spawn:reference+nginx-edge",
            marks=pytest.mark.skipif(nginx.binary() is None, reason=nginx.MISSING),
        ),
    ],
)
def test_compliant_servers_issue_tickets_that_allow_no_early_data(spec: str) -> None:
    # grpcio and grpc-js issue no ticket to a client without ALPN: measured with h2 offered.
    run = open_run(spec)
    try:
        found = early_data_at(scan_target(run))
    finally:
        run.close()
    assert found == EarlyData(
        False, "the server's session ticket (ALPN h2) allows no early data (max 0)"
    )


@needs_openssl
@pytest.mark.slow
@pytest.mark.skipif(nginx.binary() is None, reason=nginx.MISSING)
def test_nginx_with_early_data_on_accepts_the_preface_as_0rtt() -> None:
    run = open_run("spawn:reference+nginx-early-data")
    try:
        found = early_data_at(scan_target(run))
    finally:
        run.close()
    assert isinstance(found, EarlyData)
    assert found.supports_early_data is True
    assert found.how.endswith("sent as early data on resumption was accepted")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext]]:
    """A TLS 1.3 server on 127.0.0.1 offering h2; the test sets its context's options."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    cert.configure_cert(ctx)
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    tls.recv(1024)
                    time.sleep(1.5)  # silent after the handshake, as a busy server may be
            except OSError:
                pass

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield int(srv.getsockname()[1]), ctx
    stop.set()
    thread.join(5)
    srv.close()


@needs_openssl
def test_a_server_that_issues_no_ticket_leaves_no_session_to_resume(tls_server) -> None:
    port, ctx = tls_server
    ctx.num_tickets = 0
    target = ScanTarget("127.0.0.1", port, "localhost", None, None, None, 1.0)
    found = early_data_at(target)
    assert isinstance(found, EarlyData)
    assert found.supports_early_data is False
    assert found.how.startswith("no session ticket within 1 s of a TLS 1.3 handshake")


@needs_openssl
def test_a_server_that_refuses_the_client_after_the_handshake_is_not_measured(tls_server):
    # TLS 1.3: the server's refusal of a missing client certificate comes after the
    # client's side of the handshake, with no ticket: nothing is said about 0-RTT.
    port, ctx = tls_server
    ca = trustme.CA()
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    target = ScanTarget("127.0.0.1", port, "localhost", None, None, None, 3.0)
    found = early_data_at(target)
    assert isinstance(found, str)
    assert found.startswith("the server ended the connection after the TLS 1.3 handshake")


@needs_openssl
def test_a_python_ssl_server_tickets_allow_no_early_data(tls_server) -> None:
    port, _ = tls_server
    target = ScanTarget("127.0.0.1", port, "localhost", None, None, None, 3.0)
    found = early_data_at(target)
    assert found == EarlyData(
        False, "the server's session ticket (ALPN h2) allows no early data (max 0)"
    )


@needs_openssl
def test_a_server_that_never_speaks_tls_is_not_measured(tcp_server) -> None:
    port = tcp_server(lambda conn: time.sleep(1.5))
    start = time.monotonic()
    found = early_data_at(ScanTarget("127.0.0.1", port, None, None, None, None, 1.0))
    assert isinstance(found, str)
    assert found.startswith("no TLS 1.3 handshake with ALPN h2 completed")
    assert time.monotonic() - start < 10  # bounded by the timeout, not by the server


def test_without_openssl_nothing_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    target = ScanTarget("127.0.0.1", 1, None, None, None, None, 1.0)
    assert early_data_at(target) == early_data.MISSING


def test_a_probe_that_fails_outright_leaves_its_item_unmeasured(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-client.pem"  # the certificate file is gone
    target = ScanTarget("127.0.0.1", 1, None, None, missing, missing, 1.0)
    found = early_data_at(target)
    assert isinstance(found, str)
    assert found.startswith("the 0-RTT probe failed: FileNotFoundError")
