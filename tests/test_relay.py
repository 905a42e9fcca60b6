"""The pinned relay: a private Unix socket that only this user can reach."""

import os
import socket
import ssl
import stat
import threading

import pytest
import trustme

from harness.relay import Relay


@pytest.fixture
def tls_echo():
    """A TLS echo server on 127.0.0.1; yields (port, leaf DER)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(5)

    def serve() -> None:
        try:
            raw, _ = srv.accept()
        except OSError:
            return
        with ctx.wrap_socket(raw, server_side=True) as conn:
            data = conn.recv(100)
            conn.sendall(data[::-1])

    threading.Thread(target=serve, daemon=True).start()
    leaf = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    yield srv.getsockname()[1], leaf
    srv.close()


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_relays_over_a_socket_file_only_its_owner_may_open(tls_echo):
    port, leaf = tls_echo
    relay = Relay("127.0.0.1", port, client_context(), leaf, "localhost", 5)
    try:
        assert relay.address.startswith("unix:")
        path = relay.address.removeprefix("unix:")
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert mode & 0o777 == 0o600
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(b"hello")
            assert s.recv(100) == b"olleh"
    finally:
        relay.stop()
    assert not os.path.exists(path)


def test_a_different_certificate_is_never_relayed(tls_echo):
    port, _ = tls_echo
    relay = Relay("127.0.0.1", port, client_context(), b"another certificate", "localhost", 5)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(relay.address.removeprefix("unix:"))
            s.sendall(b"hello")
            try:
                got = s.recv(100)
            except ConnectionResetError:
                got = b""  # closed with our bytes unread: a reset
            assert got == b""
    finally:
        relay.stop()
