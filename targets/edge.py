"""A TLS-terminating edge in front of a bundled service, built on Python's ``ssl`` (OpenSSL).

grpcio's own TLS cannot be made weak, so the transport defects put this edge in front of
the reference service, the way real deployments put Envoy, nginx or a cloud load balancer
in front of gRPC. The edge accepts TLS on the published port, checks the client certificate
as configured, and relays the decrypted HTTP/2 bytes to the service's cleartext port on
127.0.0.1, which is never published. With no defect it is as strict as the service's own
TLS: TLS 1.2 and 1.3, the ECDHE AEAD suites, ALPN ``h2``, client certificates required,
client-initiated renegotiation refused.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass

from harness.relay import Listener, pump

#: TLS 1.2 suites of the compliant edge (OpenSSL names): ECDHE with AES-GCM or ChaCha20.
STRICT_TLS12 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: certificate validity dates are not checked.
_NO_CHECK_TIME = 0x200000
#: OpenSSL 3's SSL_OP_ALLOW_CLIENT_RENEGOTIATION (Python's ssl has no name for it).
_ALLOW_CLIENT_RENEGOTIATION = 0x100
_HANDSHAKE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EdgeSettings:
    """How the edge's TLS is configured; the defaults are the compliant edge."""

    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: str = STRICT_TLS12
    alpn: bool = True
    client_auth: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_client_cert_dates: bool = True
    client_renegotiation: bool = False

    def context(self, chain: str, key: str, client_ca: str) -> ssl.SSLContext:
        """A server context with these settings, the server chain and the client CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = self.minimum
        ctx.maximum_version = self.maximum
        ctx.set_ciphers(self.ciphers)
        ctx.options |= ssl.OP_NO_COMPRESSION
        if self.client_renegotiation:
            ctx.options |= _ALLOW_CLIENT_RENEGOTIATION  # OpenSSL 3 refuses it by default
        else:
            ctx.options |= ssl.OP_NO_RENEGOTIATION
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        ctx.load_cert_chain(chain, key)
        ctx.verify_mode = self.client_auth
        if self.client_auth != ssl.CERT_NONE:
            ctx.load_verify_locations(client_ca)
        if not self.check_client_cert_dates:
            ctx.verify_flags |= _NO_CHECK_TIME
        if self.alpn:
            ctx.set_alpn_protocols(["h2"])
        return ctx


class Edge(Listener):
    """Listens on ``host`` (an ephemeral port) and relays each TLS connection to ``backend``."""

    def __init__(
        self, context: ssl.SSLContext, backend: tuple[str, int], host: str, *, require_h2: bool
    ) -> None:
        self._context = context
        self._require_h2 = require_h2
        self._backend = backend
        super().__init__(host, "edge-accept")

    def serve(self, conn: socket.socket) -> None:
        """Handshake, then relay to the service (or drain a connection without h2)."""
        conn.settimeout(_HANDSHAKE_TIMEOUT_S)
        try:
            tls = self._context.wrap_socket(conn, server_side=True)
        except (OSError, ValueError):
            conn.close()  # a refused handshake: OpenSSL has already sent its alert
            return
        if self._require_h2 and tls.selected_alpn_protocol() != "h2":
            _drain(tls)  # like grpc-go >= 1.67: no h2 negotiated, no HTTP/2 served
            return
        try:
            tls.settimeout(None)
            backend = socket.create_connection(self._backend, timeout=_HANDSHAKE_TIMEOUT_S)
            backend.settimeout(None)
        except OSError:
            tls.close()
            return
        with tls, backend:
            pump(tls, backend)


def _drain(tls: ssl.SSLSocket) -> None:
    """Serve nothing on a connection without ALPN h2.

    Read and drop what the client sends (OpenSSL handles any renegotiation inside the read)
    until it sends the HTTP/2 preface, closes, or goes quiet for the handshake timeout.
    """
    with contextlib.suppress(OSError):
        while True:
            data = tls.recv(4096)
            if not data or data.startswith(b"PRI * HTTP/2.0"):
                break
    tls.close()
