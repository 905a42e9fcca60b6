"""A local relay that lets the harness probe a target whose TLS a gRPC client would refuse.

When the target's certificate fails verification for a reason the CERT-* controls judge
(expired, wrong name, unknown issuer) or the server does not negotiate ALPN ``h2`` (TLS-005),
grpcio cannot open a channel, and every application-level control would be left without
evidence. The relay connects to the target with Python's ``ssl``, accepts only the exact
certificate seen when the run started (pinned by its DER bytes), and offers the harness's
gRPC client cleartext HTTP/2 on a Unix socket in this user's private scratch directory (mode
0600): it presents the harness's client certificate to the target, so no other local user or
process may connect to it, as any could to a 127.0.0.1 port. The transport controls never go
through it: they probe the target directly.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import socket
import ssl
import threading

_IDLE_SELECT_S = 30.0


class Listener:
    """A TCP listener on an ephemeral port, or a private Unix socket.

    Each accepted connection goes to :meth:`serve` on a thread of its own, until
    :meth:`stop`.
    """

    def __init__(self, host: str, name: str, *, unix_path: str | None = None) -> None:
        self.unix_path = unix_path
        if unix_path is None:
            self._listener = socket.create_server((host, 0))
            self.port: int = self._listener.getsockname()[1]
        else:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # The socket lives in the private 0700 directory (harness.scratch), so nobody
            # else can reach it between bind and chmod. No umask: it is the process's, and
            # would change what every other thread creates meanwhile (a 0600 directory).
            self._listener.bind(unix_path)
            os.chmod(unix_path, 0o600)
            self._listener.listen()
            self.port = 0
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop accepting new connections; open ones end when either side closes."""
        self._stopped.set()
        self._listener.close()
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        """Handle one accepted connection (and close it)."""
        raise NotImplementedError


class Relay(Listener):
    """Listens on a private Unix socket; relays each connection to ``host:port``, pinned TLS."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        pin_der: bytes,
        server_hostname: str | None,
        timeout: float,
    ) -> None:
        self._target = (host, port)
        self._context = context
        self._pin = pin_der
        self._server_hostname = server_hostname
        self._timeout = timeout
        from harness.scratch import private_dir

        path = str(private_dir() / f"relay-{secrets.token_hex(8)}.sock")
        super().__init__("", "harness-relay", unix_path=path)
        self.address = f"unix:{path}"

    def serve(self, conn: socket.socket) -> None:
        """Connect to the target, check the pin, and relay until either side closes."""
        with conn:
            try:
                raw = socket.create_connection(self._target, timeout=self._timeout)
                tls = self._context.wrap_socket(raw, server_hostname=self._server_hostname)
            except OSError:
                return  # the client sees the connection close: UNAVAILABLE, as without us
            with tls:
                if tls.getpeercert(binary_form=True) != self._pin:
                    return  # a different certificate than the one judged: never relay
                tls.settimeout(None)
                pump(tls, conn)


def _ready(tls: ssl.SSLSocket) -> bytes | None:
    """What the TLS socket has for us now: data, ``b""`` at its end, ``None`` for nothing.

    Readable may mean TLS records that carry no data (TLS 1.3 session tickets): a blocking
    read would then wait for the server, while the server waits for the bytes the client
    sent us, which we would never relay.
    """
    timeout = tls.gettimeout()
    tls.settimeout(0.0)
    try:
        return tls.recv(65536)
    except ssl.SSLWantReadError:
        return None
    finally:
        tls.settimeout(timeout)


def pump(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """Copy bytes both ways between a TLS socket and a plain one until either side closes.

    One thread does both directions: an SSL object must not be read and written from two
    threads at once.
    """
    try:
        while True:
            readable: list[socket.socket] = [tls] if tls.pending() else []
            if not readable:
                readable, _, _ = select.select([tls, plain], [], [], _IDLE_SELECT_S)
            if tls in readable:
                data = _ready(tls)
                if data == b"":
                    return
                if data is not None:
                    plain.sendall(data)
            if plain in readable:
                data = plain.recv(65536)
                if not data:
                    return
                tls.sendall(data)
    except OSError:
        return  # ssl.SSLError is an OSError: a reset or alert ends the relay
