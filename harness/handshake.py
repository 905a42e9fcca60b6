"""What a TLS server does with a client certificate, seen at the handshake (MTLS-001, MTLS-002).

:func:`see_client_cert` opens one TCP connection and makes one TLS handshake with Python's
``ssl`` (ALPN ``h2``, the given SNI, the given client certificate or none). The server's
certificate is not verified: a client that refused it would end the handshake itself and hide
the server's decision, which is all this asks about. After the handshake it writes the HTTP/2
client preface and reads once, for :data:`READ_S` at most. With TLS 1.2 a server refuses a
client certificate inside the handshake; with TLS 1.3 the client's handshake is over before
the server has judged the certificate, so the refusal arrives on that read, as an alert
(``certificate_required``, ``bad_certificate``, ``unknown_ca``, ...) or a close (grpcio closes
without an alert). A server that accepted the certificate sends its HTTP/2 SETTINGS frame.
Every wait is bounded, and a refusal is recognised as soon as its alert or close arrives.

An accepted connection may still be refused above TLS: nginx with ``ssl_verify_client on``
completes the handshake and answers every request with HTTP 400 (its 495/496) and no
``grpc-status``. So on an accepted connection one HTTP/2 request (the liveness method, no
credentials) is made on a second connection with the same certificate, and its answer kept
(:class:`HttpAnswer`).
"""

from __future__ import annotations

import contextlib
import enum
import re
import socket
import ssl
import time
from dataclasses import dataclass, replace

from harness.h2client import H2Client, grpc_frame
from harness.transport import H2_PREFACE, PrefaceReply, classify_reply, client_context

#: How long to read after the handshake for the server's alert, close or first frame.
READ_S = 2.0
#: HTTP statuses an edge answers a refused client certificate with (nginx: 400, 495, 496).
EDGE_REFUSALS = frozenset({400, 495, 496})
_ALERT = re.compile(r"^(?:SSLV3|TLSV1|TLSV13)_ALERT_(\w+)$")
_HEADER = 9  # an HTTP/2 frame header


class Seen(str, enum.Enum):
    """What came of the handshake."""

    REFUSED = "refused at handshake"
    CLOSED = "closed during/right after handshake"
    ACCEPTED = "accepted"
    TIMEOUT = "no answer (timeout)"
    CONNECT_ERROR = "connect error"


@dataclass(frozen=True)
class HttpAnswer:
    """How the server answered one HTTP/2 request on a connection it accepted.

    Attributes:
        http_status: The ``:status`` (``None``: none came).
        grpc_status: The ``grpc-status`` (``None``: the stream ended without one, or no answer).
        note: The answer in words.
    """

    http_status: int | None
    grpc_status: int | None
    note: str

    @property
    def refused_by_edge(self) -> bool:
        """An edge's refusal: HTTP 400, 495 or 496 with no ``grpc-status`` (nginx's answer)."""
        return self.http_status in EDGE_REFUSALS and self.grpc_status is None

    @property
    def served_grpc(self) -> bool:
        """A gRPC server answered (a ``grpc-status`` came back)."""
        return self.grpc_status is not None


@dataclass(frozen=True)
class HandshakeSeen:
    """One handshake with a client certificate (or none), and what the server did with it.

    Attributes:
        seen: The kind of outcome.
        detail: The alert's name, the close or error in words, or what the server sent.
        after: The refusal or close came after the client's side of the handshake was done
            (TLS 1.3), not inside it.
        version: The TLS version negotiated, when the client's handshake completed.
        elapsed_s: Seconds from connecting to the outcome.
        answer: On an accepted connection, the answer to one HTTP/2 request.
    """

    seen: Seen
    detail: str = ""
    after: bool = False
    version: str = ""
    elapsed_s: float = 0.0
    answer: HttpAnswer | None = None

    @property
    def refused(self) -> bool:
        """The server refused the connection at the handshake: an alert or a close."""
        return self.seen in (Seen.REFUSED, Seen.CLOSED)

    def describe(self) -> str:
        """One line of evidence."""
        when = "right after" if self.after else "during"
        if self.seen is Seen.REFUSED:
            finished = ", after the client's Finished" if self.after else ""
            text = f"refused at handshake (alert {self.detail}{finished})"
        elif self.seen is Seen.CLOSED:
            text = f"closed {when} handshake ({self.detail})"
        elif self.seen is Seen.TIMEOUT:
            text = f"no answer (timeout) {self.detail}"
        else:
            text = f"{self.seen.value} ({self.detail})"
        if self.version:
            text += f", {self.version}"
        text += f", in {self.elapsed_s:.2f} s"
        if self.answer is not None:
            text += f"; an HTTP/2 request on it got {self.answer.note}"
        return text


def see_client_cert(
    host: str,
    port: int,
    *,
    server_name: str,
    cert_pem: bytes | None,
    key_pem: bytes | None,
    timeout: float,
    path: str,
    read_s: float = READ_S,
) -> HandshakeSeen:
    """Handshake with this client certificate (``None``: none) and see what the server does.

    ``timeout`` bounds the TCP connect and the handshake, ``read_s`` the read after it. On an
    accepted connection, one HTTP/2 request to ``path`` (an empty message, no credentials)
    on a second connection records how it is answered.

    Raises:
        TargetError: the certificate or key does not load.
    """
    ctx = client_context(
        ca_pem=None, verify=False, client_cert_pem=cert_pem, client_key_pem=key_pem
    )
    seen = _handshake(ctx, host, port, server_name, timeout, read_s)
    if seen.seen is not Seen.ACCEPTED:
        return seen
    return replace(seen, answer=_http_answer(ctx, host, port, server_name, path, timeout))


def _handshake(
    ctx: ssl.SSLContext, host: str, port: int, name: str, timeout: float, read_s: float
) -> HandshakeSeen:
    start = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return HandshakeSeen(Seen.TIMEOUT, "to the TCP connect", elapsed_s=_since(start))
    except OSError as exc:
        reason = f"TCP: {exc.strerror or exc}"
        return HandshakeSeen(Seen.CONNECT_ERROR, reason, elapsed_s=_since(start))
    with sock:
        try:
            tls = ctx.wrap_socket(sock, server_hostname=name)
        except OSError as exc:
            return replace(_ended(exc, after=False), elapsed_s=_since(start))
        with tls:
            seen = _after_handshake(tls, read_s)
    return replace(seen, elapsed_s=_since(start))


def _after_handshake(tls: ssl.SSLSocket, read_s: float) -> HandshakeSeen:
    """Write the HTTP/2 preface on a completed handshake and read the server's first word."""
    version = tls.version() or ""
    data = b""
    deadline = time.monotonic() + read_s
    try:
        try:
            tls.settimeout(read_s)
            tls.sendall(H2_PREFACE)
        except OSError:
            pass  # the server may have closed already: its alert is still there to read
        while len(data) < _HEADER:
            tls.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        if not data:
            return replace(_ended(exc, after=True), version=version)
    if not data:
        return HandshakeSeen(
            Seen.CLOSED, "no alert: the server closed", after=True, version=version
        )
    return HandshakeSeen(Seen.ACCEPTED, _what_came(data), version=version)


def _ended(exc: OSError, *, after: bool) -> HandshakeSeen:
    """What an exception from connecting, the handshake or the read after it says.

    An alert the server sent (OpenSSL names it ``..._ALERT_<NAME>``) is a refusal; an end of
    file, a close or a reset is a close; a timeout is a timeout; anything else (a TLS error
    on the client's side, a refused TCP connection) is a connect error.
    """
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return HandshakeSeen(Seen.CLOSED, "end of file", after=after)
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        if match := _ALERT.match(reason):
            return HandshakeSeen(Seen.REFUSED, match.group(1).lower(), after=after)
        return HandshakeSeen(Seen.CONNECT_ERROR, f"TLS: {reason}", after=after)
    if isinstance(exc, TimeoutError):
        when = "after the handshake" if after else "to the handshake"
        return HandshakeSeen(Seen.TIMEOUT, when, after=after)
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return HandshakeSeen(Seen.CLOSED, type(exc).__name__, after=after)
    why = exc.strerror or str(exc) or type(exc).__name__
    return HandshakeSeen(Seen.CONNECT_ERROR, why, after=after)


def _what_came(data: bytes) -> str:
    reply = classify_reply(data)
    if reply is PrefaceReply.H2_SETTINGS:
        return "server sent HTTP/2 data"
    head = data.split(b"\r\n", 1)[0][:60].decode("latin-1")
    if reply is PrefaceReply.HTTP1:
        return f"server sent an HTTP/1.x response, not HTTP/2: {head!r}"
    return f"server sent {len(data)} bytes that are not an HTTP/2 frame"


def _http_answer(
    ctx: ssl.SSLContext, host: str, port: int, name: str, path: str, timeout: float
) -> HttpAnswer:
    """One HTTP/2 request to ``path`` (empty message, no credentials) on a new connection."""
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
            tls = stack.enter_context(ctx.wrap_socket(sock, server_hostname=name))
            client = stack.enter_context(H2Client(tls, name, "https"))
            reply = client.wait(client.request(client.headers(path), grpc_frame(b"")), timeout)
    except OSError as exc:
        why = _ended(exc, after=False)
        return HttpAnswer(None, None, f"no answer ({why.seen.value}: {why.detail})")
    grpc_status = None if reply.grpc_status in (None, -1) else reply.grpc_status
    return HttpAnswer(reply.http_status, grpc_status, reply.describe())


def _since(start: float) -> float:
    return time.monotonic() - start
