"""Hostile targets: servers that misbehave at every layer, for the harness's robustness tests.

Test-only. Each is a small server on 127.0.0.1, started in this process (threads) or, for
the one that dies, in a child process:

- ``silent``: accepts TCP and never answers.
- ``tls-garbage``: answers the TLS ClientHello with random bytes.
- ``reset``: completes the TLS handshake (ALPN h2), then resets the connection.
- ``slowloris``: sends one byte a second, forever.
- ``http1``: an HTTP/1.1 server (every request gets 400, then the connection closes).
- ``h2-not-grpc``: an HTTP/2 server over TLS (ALPN h2) that answers 404 ``text/html``.
- ``endless``: a gRPC server where every call streams responses and never ends.
- ``huge``: a gRPC server whose every response is 100 MB.
- ``dies``: the compliant reference, killed a few seconds into the run.
- ``blocking-audit``: the compliant reference, with its audit source a FIFO nobody writes.

:func:`start` returns a :class:`Hostile` with the address and a config for the harness.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import trustme

from harness.relay import Listener
from targets.reference import schema

KINDS = (
    "silent",
    "tls-garbage",
    "reset",
    "slowloris",
    "http1",
    "h2-not-grpc",
    "endless",
    "huge",
    "dies",
    "blocking-audit",
)
HUGE_BYTES = 100 * 1024 * 1024
DIES_AFTER_S = 4.0


@dataclass
class Hostile:
    """A running hostile target."""

    kind: str
    address: str
    config: Path
    stop: Callable[[], None]


class _Tcp(Listener):
    """A listener whose connections are each served by ``handle``, all closed on stop."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.handle = handle
        self.conns: list[socket.socket] = []
        super().__init__("127.0.0.1", "hipaa-hostile")

    def serve(self, conn: socket.socket) -> None:
        self.conns.append(conn)
        # A hostile server's connection ends however the client makes it end.
        with contextlib.suppress(Exception), conn:
            self.handle(conn)

    def stop(self) -> None:
        super().stop()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()


def _pki(tmp: Path) -> tuple[ssl.SSLContext, dict[str, object]]:
    """A server TLS context (ALPN h2) and the config entries that trust it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ctx.set_alpn_protocols(["h2"])
    return ctx, {"server_name": "localhost", "ca_bundle": "ca.pem"}


def _silent(conn: socket.socket) -> None:
    conn.recv(65536)
    threading.Event().wait(3600)


def _garbage(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(os.urandom(4096))
    threading.Event().wait(3600)


def _slowloris(conn: socket.socket) -> None:
    for byte in iter(lambda: os.urandom(1), b""):
        conn.sendall(byte)
        time.sleep(1.0)


def _http1(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
        b"Connection: close\r\n\r\nbad request"
    )
    conn.close()


def _reset_after_handshake(ctx: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # closed with linger 0: the client sees a reset

    return handle


def _h2_not_grpc(ctx: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            h2c.initiate_connection()
            tls.sendall(h2c.data_to_send())
            while data := tls.recv(65536):
                for event in h2c.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        body = b"<html><body>not found</body></html>"
                        h2c.send_headers(
                            event.stream_id,
                            [(":status", "404"), ("content-type", "text/html")],
                        )
                        h2c.send_data(event.stream_id, body, end_stream=True)
                tls.sendall(h2c.data_to_send())

    return handle


class _AnyMethod(grpc.GenericRpcHandler):
    """Every method path, answered by one stream-stream behaviour."""

    def __init__(self, behaviour: Callable[[Iterator[bytes], Any], Iterator[bytes]]) -> None:
        self._handler = grpc.stream_stream_rpc_method_handler(behaviour)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return self._handler


def _endless(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    while context.is_active():
        yield b""
        time.sleep(0.01)


_HUGE = b"\x0a" + b"\x80\x80\x80\x32" + b"x" * HUGE_BYTES  # field 1, 100 MiB of bytes


def _huge(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    yield _HUGE


def _grpc_server(behaviour: Callable[[Iterator[bytes], Any], Iterator[bytes]]) -> grpc.Server:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        handlers=[_AnyMethod(behaviour)],
        options=[("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)],
    )
    return server


def _write_config(tmp: Path, tables: dict[str, dict[str, object]]) -> Path:
    (tmp / "descriptors.pb").write_bytes(schema.descriptor_set().SerializeToString())
    lines = []
    base: dict[str, dict[str, object]] = {"schema": {"descriptor_set": "descriptors.pb"}}
    for name, table in {**base, **tables}.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            text = str(value).lower() if isinstance(value, bool) else repr(value)
            lines.append(f"{key} = {text}".replace("'", '"'))
    path = tmp / "hipaa.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _reference(tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The compliant reference in a child process, serving from ``tmp/ref``."""
    workdir = tmp / "ref"
    child = subprocess.Popen(
        [sys.executable, "-m", "targets", "serve", "reference", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().decode()
    address = line.split('"address": "')[1].split('"')[0]
    return child, address, workdir / "hipaa.toml"


def start(kind: str) -> Hostile:
    """Start the hostile target ``kind`` (one of :data:`KINDS`); its ``stop`` cleans up."""
    tmp = Path(tempfile.mkdtemp(prefix=f"hipaa-hostile-{kind}-"))
    hostile = _start(kind, tmp)

    def stop() -> None:
        try:
            hostile.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return replace(hostile, stop=stop)


def _start(kind: str, tmp: Path) -> Hostile:
    if kind in ("dies", "blocking-audit"):
        return _start_reference(kind, tmp)
    if kind in ("endless", "huge"):
        server = _grpc_server(_endless if kind == "endless" else _huge)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        config = _write_config(tmp, {"safety": {"allow_transport_abuse": True}})

        def stop() -> None:
            server.stop(0).wait(5)

        return Hostile(kind, f"127.0.0.1:{port}", config, stop)
    ctx, tls = _pki(tmp)
    handlers: dict[str, Callable[[socket.socket], None]] = {
        "silent": _silent,
        "tls-garbage": _garbage,
        "reset": _reset_after_handshake(ctx),
        "slowloris": _slowloris,
        "http1": _http1,
        "h2-not-grpc": _h2_not_grpc(ctx),
    }
    listener = _Tcp(handlers[kind])
    config = _write_config(tmp, {"tls": tls, "safety": {"allow_transport_abuse": True}})
    return Hostile(kind, f"127.0.0.1:{listener.port}", config, listener.stop)


def _start_reference(kind: str, tmp: Path) -> Hostile:
    child, address, config = _reference(tmp)

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, 9)
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()

    if kind == "dies":
        threading.Timer(DIES_AFTER_S, stop).start()
        return Hostile(kind, address, config, stop)
    fifo = tmp / "audit.fifo"
    os.mkfifo(fifo)
    text = config.read_text()
    config.write_text(text.replace('"audit.jsonl"', f'"{fifo}"'))
    return Hostile(kind, address, config, stop)
