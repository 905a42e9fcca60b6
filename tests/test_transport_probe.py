"""Raw transport probes against real servers of every kind on 127.0.0.1."""

import socket
import time

import pytest

from conftest import closed_port
from harness.errors import TargetError
from harness.transport import PrefaceReply, Transport, detect_transport, probe_preface


def test_tls_port_refuses_cleartext(reference_run):
    probe = probe_preface("127.0.0.1", reference_run.spec.port)
    assert not probe.serves_cleartext_h2
    assert probe.reply in (PrefaceReply.CLOSED, PrefaceReply.TLS_ALERT, PrefaceReply.OTHER)
    detected = detect_transport(
        "127.0.0.1",
        reference_run.spec.port,
        client_cert=reference_run.config.path("mtls.client_cert"),
        client_key=reference_run.config.path("mtls.client_key"),
    )
    assert detected.transport is Transport.TLS
    assert "ALPN h2" in detected.note


def test_h2c_port_is_detected():
    from conftest import open_run

    run = open_run("spawn:reference+plaintext")
    try:
        probe = probe_preface("127.0.0.1", run.spec.port)
        assert probe.serves_cleartext_h2
        assert run.detected.transport is Transport.H2C
    finally:
        run.close()


def test_http1_error_page_is_recorded(tcp_server):
    def http1(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    probe = probe_preface("127.0.0.1", tcp_server(http1))
    assert probe.reply is PrefaceReply.HTTP1
    assert "400 Bad Request" in probe.describe()


def test_silent_server_times_out_without_hanging(tcp_server):
    def silent(conn: socket.socket) -> None:
        time.sleep(3)

    port = tcp_server(silent)
    probe = probe_preface("127.0.0.1", port, timeout=0.5)
    assert probe.reply is PrefaceReply.SILENT
    with pytest.raises(TargetError, match=r"did not answer a TLS ClientHello within 0\.5 s"):
        detect_transport("127.0.0.1", port, timeout=0.5)


def test_garbage_speaker_is_neither_tls_nor_h2(tcp_server):
    def garbage(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(b"220 smtp.example ESMTP ready\r\n" * 4)

    with pytest.raises(TargetError, match="speaks neither TLS nor HTTP/2"):
        detect_transport("127.0.0.1", tcp_server(garbage), timeout=1)


def test_closed_port_is_unreachable():
    port = closed_port()
    with pytest.raises(TargetError, match=f"127.0.0.1:{port} is unreachable: connection refused"):
        probe_preface("127.0.0.1", port)
