"""Raw transport probes: TCP reachability, what the port speaks, the cleartext h2c probe.

These work below gRPC so that they say the same thing about a server in any language and
never depend on one library's error strings.
"""

from __future__ import annotations

import contextlib
import enum
import os
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import TargetError

#: The HTTP/2 client connection preface, then an empty SETTINGS frame (RFC 9113 3.4, 6.5).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_FRAME_SETTINGS = 0x04
_TLS_ALERT = 0x15
_NOT_TLS_REASONS = {
    "WRONG_VERSION_NUMBER",
    "HTTP_REQUEST",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
}


class Transport(str, enum.Enum):
    """What the target's port speaks."""

    TLS = "tls"
    H2C = "h2c"


class PrefaceReply(str, enum.Enum):
    """How a port answered the cleartext HTTP/2 preface."""

    H2_SETTINGS = "cleartext HTTP/2 SETTINGS frame"
    TLS_ALERT = "TLS alert record"
    HTTP1 = "HTTP/1.x response"
    CLOSED = "connection closed with no reply"
    SILENT = "no reply before the timeout"
    OTHER = "unrecognised bytes"


@dataclass(frozen=True)
class PrefaceProbe:
    """The result of sending the h2c preface to one port."""

    port: int
    reply: PrefaceReply
    first_bytes: bytes

    @property
    def serves_cleartext_h2(self) -> bool:
        """True when the port answered like a cleartext HTTP/2 (and so gRPC) server."""
        return self.reply is PrefaceReply.H2_SETTINGS

    def describe(self) -> str:
        """One line of evidence: the kind of reply and its first bytes."""
        head = self.first_bytes[:16]
        shown = f" (first bytes {head.hex(' ')})" if head else ""
        if self.reply is PrefaceReply.HTTP1:
            status = self.first_bytes.split(b"\r\n", 1)[0][:60].decode("latin-1")
            shown = f" ({status!r})"
        return f"{self.reply.value}{shown}"


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """Open a TCP connection or raise :class:`TargetError` with the reason in words.

    Nagle's algorithm is off, as every gRPC client has it: HTTP/2 frames go out as written,
    not held for the ACK of the previous small write (40 ms each against a delayed ACK).
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise TargetError(
            f"{fmt_address(host, port)} is unreachable: no answer within {timeout:g} s"
        ) from None
    except ConnectionRefusedError:
        raise TargetError(f"{fmt_address(host, port)} is unreachable: connection refused") from None
    except OSError as exc:
        raise TargetError(
            f"{fmt_address(host, port)} is unreachable: {exc.strerror or exc}"
        ) from None
    with contextlib.suppress(OSError):  # a connection reset at once: the first read says so
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def probe_preface(host: str, port: int, timeout: float = 3.0) -> PrefaceProbe:
    """Send the cleartext HTTP/2 preface and classify the first bytes of the reply."""
    data = b""
    with connect(host, port, timeout) as sock:
        try:
            sock.sendall(H2_PREFACE)
            deadline = time.monotonic() + timeout
            while len(data) < 9:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            if not data:
                return PrefaceProbe(port, PrefaceReply.SILENT, b"")
        except OSError:
            pass  # reset by peer: judge what arrived before it
    return PrefaceProbe(port, classify_reply(data), data[:64])


def classify_reply(data: bytes) -> PrefaceReply:
    """What the first bytes a port sent back after the HTTP/2 preface say it speaks."""
    if not data:
        return PrefaceReply.CLOSED
    if data[0] == _TLS_ALERT:
        return PrefaceReply.TLS_ALERT
    if data.startswith(b"HTTP/"):
        return PrefaceReply.HTTP1
    if len(data) >= 9 and data[3] == _FRAME_SETTINGS:
        return PrefaceReply.H2_SETTINGS
    return PrefaceReply.OTHER


@dataclass(frozen=True)
class Detected:
    """What :func:`detect_transport` found, with a note for the report header."""

    transport: Transport
    note: str
    leaf_der: bytes | None = None


def detect_transport(
    host: str,
    port: int,
    *,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    timeout: float = 3.0,
) -> Detected:
    """Find out whether the port speaks TLS or cleartext HTTP/2.

    A TLS handshake is tried first (no verification: this only asks what the port speaks),
    with the client certificate when one is configured. If it fails, the cleartext HTTP/2
    preface is tried. A port that completes neither, or does not answer in time, raises.

    Raises:
        TargetError: unreachable, silent, or speaking something else.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if client_cert is not None:
        ctx.load_cert_chain(client_cert, client_key)
    tls_problem = ""
    with connect(host, port, timeout) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=host if not _is_ip(host) else None) as tls:
                version = tls.version()
                alpn = tls.selected_alpn_protocol()
                leaf = tls.getpeercert(binary_form=True)
                return Detected(Transport.TLS, f"{version}, ALPN {alpn or 'none'}", leaf)
        except TimeoutError:
            raise TargetError(
                f"{fmt_address(host, port)} accepted TCP but did not answer a TLS ClientHello "
                f"within {timeout:g} s"
            ) from None
        except ssl.SSLError as exc:
            tls_problem = exc.reason or str(exc)
        except OSError as exc:
            tls_problem = f"connection closed during the TLS handshake ({exc.__class__.__name__})"
    probe = probe_preface(host, port, timeout)
    if probe.serves_cleartext_h2:
        return Detected(Transport.H2C, "cleartext HTTP/2 (no TLS)")
    if tls_problem in _NOT_TLS_REASONS:
        raise TargetError(
            f"{fmt_address(host, port)} speaks neither TLS nor HTTP/2: TLS said {tls_problem}, "
            f"the HTTP/2 preface got {probe.describe()}"
        )
    return Detected(Transport.TLS, f"TLS handshake refused without verification ({tls_problem})")


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def fmt_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_context(
    *,
    ca_pem: bytes | None,
    verify: bool,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    alpn: tuple[str, ...] = ("h2",),
) -> ssl.SSLContext:
    """A Python ``ssl`` client context offering ``alpn``.

    It verifies against ``ca_pem`` (system roots when ``None``) or not at all, and presents
    the client certificate if one is given.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if ca_pem is None:
            ctx.load_default_certs()
        else:
            ctx.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if client_cert_pem is not None and client_key_pem is not None:
        load_pem_pair(ctx, client_cert_pem, client_key_pem)
    return ctx


def load_pem_pair(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate chain and key given as bytes (``ssl`` only reads files)."""
    with tempfile.TemporaryDirectory(prefix="hipaa-tls-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError) as exc:
            raise TargetError(f"the client certificate or key does not load: {exc}") from None


def verified_handshake_problem(
    host: str,
    port: int,
    *,
    ca_pem: bytes | None,
    server_name: str | None,
    client_cert_pem: bytes | None,
    client_key_pem: bytes | None,
    timeout: float,
) -> str | None:
    """What a strict gRPC client would object to in the server's TLS, or ``None``.

    Only the server's side counts: a certificate that fails verification (the reason in
    OpenSSL's words), or ALPN not selecting ``h2``. Anything else (a refused client
    certificate, a reset) is left to the channel to report.
    """
    ctx = client_context(
        ca_pem=ca_pem, verify=True, client_cert_pem=client_cert_pem, client_key_pem=client_key_pem
    )
    try:
        with (
            connect(host, port, timeout) as sock,
            ctx.wrap_socket(sock, server_hostname=server_name or host) as tls,
        ):
            alpn = tls.selected_alpn_protocol()
    except ssl.SSLCertVerificationError as exc:
        return f"the server certificate fails verification ({exc.verify_message})"
    except (OSError, TargetError):
        return None
    if alpn != "h2":
        return f"the server did not select ALPN h2 (selected: {alpn or 'nothing'})"
    return None
