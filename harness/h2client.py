"""A raw HTTP/2 client: gRPC requests no gRPC library will send, and bursts (FUZZ-003).

The run's gRPC preflight and LIMIT-003's SETTINGS read use it too.

The ``h2`` library keeps the connection state; header validation is switched off so that
upper-case and malformed names go out as given. The one thing ``h2`` refuses to emit, a
header block that never ends, is written as raw ``hyperframe`` frames and is always the
last thing sent on its connection. Every read is bounded by a deadline.

A request sent with ``record=KEY`` (the request ID it carries) is kept in :data:`RAW`, in
memory and bounded like :class:`harness.replay.SentLog`: not the bytes (HPACK state and
Huffman coding are the connection's) but what makes them, the header list as given, the
body, and the pacing (whether the server's SETTINGS were taken, and so acknowledged, first;
whether the server was read while the request went out). :func:`resend` sends it again the
same way on a new connection (``hipaa-grpc replay --frames``); :func:`answer` is the
classification the run and the replay compare.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hyperframe.frame import ContinuationFrame, HeadersFrame

from harness.channels import Endpoint
from harness.transport import Transport, client_context, connect

_READ_CHUNK = 65536
#: What :meth:`H2Client.request` writes at a time when it reads between writes (one TLS
#: record), and how long it waits for the socket to take it before it reads again.
_WRITE_CHUNK = 16384
_WRITE_SLICE_S = 0.05
#: Header blocks larger than this go out without Huffman coding: hpack's encoder takes time
#: quadratic in a value's length (over two minutes for LIMIT-001's 1 MiB header).
_HUFFMAN_MAX = 8192
#: A literal header field with incremental indexing, name "a", value "b" (RFC 7541 6.2.1).
_HPACK_FILLER = b"\x40\x01a\x01b"
#: The most header and body bytes :data:`RAW` keeps of one request (LIMIT-001's 1 MiB
#: header fits), and in all (the oldest requests go first).
MAX_RAW_BYTES = 2 * 1024 * 1024
MAX_RAW_TOTAL = 16 * 1024 * 1024
#: How long :func:`resend` waits for the server's SETTINGS when the request waited for them.
SETTINGS_WAIT_S = 3.0


def grpc_frame(message: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    """A gRPC length-prefixed message; ``length`` overrides the declared length."""
    declared = len(message) if length is None else length
    return struct.pack(">BI", 1 if compressed else 0, declared) + message


class _Encoder(hpack.Encoder):
    """HPACK as ``h2`` does it, with Huffman coding only for header blocks of normal size."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        """The header block, Huffman-coded when its names and values are small."""
        size = sum(len(h[0]) + len(h[1]) for h in headers)
        return super().encode(headers, huffman=huffman and size <= _HUFFMAN_MAX)


@dataclass
class Reply:
    """How the server answered one stream."""

    http_status: int | None = None
    grpc_status: int | None = None
    grpc_message: str = ""
    reset_code: int | None = None
    goaway_code: int | None = None
    goaway_last_stream: int | None = None  # the GOAWAY's last stream ID (RFC 9113 6.8)
    closed: bool = False
    timed_out: bool = False
    elapsed_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    messages: int = 0  # complete gRPC messages received
    largest: int = 0  # the largest length prefix seen
    _pending: bytes = b""  # an incomplete length prefix
    _skip: int = 0  # bytes of the current message still to come

    def feed(self, data: bytes) -> None:
        """Count the gRPC messages in response DATA, keeping none of their bytes."""
        while data:
            if self._skip:
                taken = min(self._skip, len(data))
                self._skip -= taken
                data = data[taken:]
                if not self._skip:
                    self.messages += 1
                continue
            need = 5 - len(self._pending)
            self._pending += data[:need]
            data = data[need:]
            if len(self._pending) == 5:
                length = struct.unpack(">I", self._pending[1:])[0]
                self.largest = max(self.largest, length)
                self._pending = b""
                self._skip = length
                if not length:
                    self.messages += 1

    @property
    def ok(self) -> bool:
        """HTTP 200 with grpc-status 0: the request was served."""
        return self.http_status == 200 and self.grpc_status == 0

    @property
    def ended(self) -> bool:
        """The server ended the stream or the connection (any way but a timeout)."""
        return not self.timed_out

    def describe(self) -> str:
        """One line: what came back and how fast."""
        parts = []
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.grpc_status is not None:
            message = f" ({self.grpc_message[:80]})" if self.grpc_message else ""
            parts.append(f"grpc-status {self.grpc_status}{message}")
        if self.reset_code is not None:
            parts.append(f"RST_STREAM code {self.reset_code}")
        if self.goaway_code is not None:
            parts.append(f"GOAWAY code {self.goaway_code}")
        if self.closed:
            parts.append("connection closed")
        if self.timed_out:
            parts.append("no answer")
        return f"{', '.join(parts) or 'nothing'} in {self.elapsed_s:.2f} s"


@dataclass(frozen=True)
class RawSent:
    """One request as a raw probe sent it: enough to send it again the same way.

    Attributes:
        headers: The header list as given (credentials included: never written as is).
        body: The DATA sent (END_STREAM after it), or ``None`` (the stream left open).
        settings_first: The server's SETTINGS were read, and acknowledged, before it.
        within: The server was read while the request went out (a large header block).
        principal: Whose client certificate the connection presented (``None``: the run's).
        timeout_s: How long the probe waited for the answer.
        answered: :func:`answer` of what came back (``""`` until it did).
    """

    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes | None
    settings_first: bool = False
    within: bool = False
    principal: str | None = None
    timeout_s: float = 10.0
    answered: str = ""

    @property
    def size(self) -> int:
        """Header and body bytes kept."""
        return sum(len(n) + len(v) for n, v in self.headers) + len(self.body or b"")

    @property
    def path(self) -> str:
        """The request's ``:path``."""
        return next((v for n, v in self.headers if n == ":path"), "")


class RawLog:
    """Raw requests by key (their request ID), bounded (:data:`MAX_RAW_TOTAL`), thread-safe."""

    def __init__(self, max_total: int = MAX_RAW_TOTAL) -> None:
        self._sent: OrderedDict[str, RawSent] = OrderedDict()
        self._bytes = 0
        self._max = max_total
        self._lock = threading.Lock()

    def add(self, key: str, sent: RawSent) -> None:
        """Keep ``sent`` under ``key``; one over :data:`MAX_RAW_BYTES` is not kept."""
        if not key or sent.size > MAX_RAW_BYTES:
            return
        with self._lock:
            old = self._sent.pop(key, None)
            self._bytes += sent.size - (old.size if old else 0)
            self._sent[key] = sent
            while self._bytes > self._max and self._sent:
                _, gone = self._sent.popitem(last=False)
                self._bytes -= gone.size

    def answered(self, key: str, text: str, timeout_s: float) -> None:
        """Note what the request ``key`` got, and how long the probe waited."""
        with self._lock:
            sent = self._sent.get(key)
            if sent is not None:
                self._sent[key] = replace(sent, answered=text, timeout_s=timeout_s)

    def get(self, key: str) -> RawSent | None:
        """The request kept under ``key``, if it still is."""
        with self._lock:
            return self._sent.get(key)


#: Every recorded raw request of this process (credentials included: memory only).
RAW = RawLog()


class H2Client:
    """One HTTP/2 connection to the target, TLS (ALPN h2) or cleartext as detected."""

    def __init__(self, sock: socket.socket, authority: str, scheme: str) -> None:
        self.sock = sock
        self.authority = authority
        self.scheme = scheme
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding="utf-8",
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self.conn.encoder = _Encoder()
        self.replies: dict[int, Reply] = {}
        self.goaway_code: int | None = None
        #: The GOAWAY's last stream ID: streams above it were never processed (RFC 9113 6.8).
        self.goaway_last_stream: int | None = None
        self.closed = False
        self._holding = False  # a write is under way: reads must not write (acks)
        #: The settings of the server's first SETTINGS frame, once it came (code: value).
        self.server_settings: dict[int, int] | None = None
        self._recorded: dict[int, str] = {}  # stream ID -> its key in RAW
        self.conn.initiate_connection()
        self._flush()

    @classmethod
    def open(cls, endpoint: Endpoint, host: str, port: int, timeout: float) -> H2Client:
        """Connect and send the preface.

        Raises:
            TargetError: no TCP connection (:func:`harness.transport.connect`).
            OSError: the TLS handshake failed.
        """
        sock = connect(host, port, timeout)
        name = endpoint.server_name or host
        if endpoint.transport is Transport.H2C:
            return cls(sock, name, "http")
        ctx = client_context(
            ca_pem=endpoint.ca_pem,
            verify=endpoint.pin_der is None,
            client_cert_pem=endpoint.client_cert_pem,
            client_key_pem=endpoint.client_key_pem,
        )
        if endpoint.pin_der is not None:
            ctx.check_hostname = False
        try:
            tls = ctx.wrap_socket(sock, server_hostname=name)
        except (OSError, ssl.SSLError):
            sock.close()
            raise
        return cls(tls, name, "https")  # ALPN h2 or not (TLS-005 judges that): speak h2

    def close(self) -> None:
        """Close the socket (no GOAWAY: the probes end connections abruptly on purpose)."""
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- sending ------------------------------------------------------------------------

    def headers(
        self,
        path: str,
        *,
        content_type: str = "application/grpc",
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> list[tuple[str, str]]:
        """The header list of a gRPC request to ``path``."""
        return [
            (":method", "POST"),
            (":scheme", self.scheme),
            (":path", path),
            (":authority", self.authority),
            ("content-type", content_type),
            ("te", "trailers"),
            *metadata,
        ]

    def request(
        self,
        headers: list[tuple[str, str]],
        body: bytes | None,
        *,
        within: float | None = None,
        record: str = "",
        principal: str | None = None,
    ) -> int:
        """Open a stream; send ``body`` and end it, or leave it open when ``body`` is None.

        With ``within`` (seconds), the server's frames are read while the request goes out,
        and sending stops when it ends the connection or the time is up: a server refusing
        a header block it will not read (GOAWAY, then no more reading) never holds the
        sender. Without, the request is written whole (or raises OSError).
        With ``record`` (its request ID), it is kept in :data:`RAW` (``principal``: whose
        client certificate this connection presents), and :meth:`wait` notes the answer.
        """
        sid = self.conn.get_next_available_stream_id()
        if record:
            raw = RawSent(
                tuple(headers), body, self.server_settings is not None, within is not None,
                principal,
            )  # fmt: skip
            RAW.add(record, raw)
            self._recorded[sid] = record
        self.conn.send_headers(sid, headers, end_stream=False)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.replies[sid] = Reply()
        if within is None:
            self._flush()
        else:
            self._send_within(self.conn.data_to_send(), time.monotonic() + within)
        return sid

    def reset_burst(self, headers: list[tuple[str, str]], count: int) -> None:
        """``count`` HEADERS frames, each followed at once by RST_STREAM (rapid reset)."""
        for i in range(count):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, headers)
            self.conn.reset_stream(sid)
            if i % 50 == 49:
                self._flush()
        self._flush()

    def ping_burst(self, count: int) -> None:
        """``count`` PING frames."""
        for i in range(count):
            self.conn.ping(i.to_bytes(8, "big"))
        self._flush()

    def settings_burst(self, count: int) -> None:
        """``count`` SETTINGS frames (initial window size changes, all valid)."""
        for i in range(count):
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535 + i})
        self._flush()

    def endless_headers(self, headers: list[tuple[str, str]], count: int) -> None:
        """HEADERS without END_HEADERS, then ``count`` CONTINUATION frames, none ending it.

        Raw frames: the connection's ``h2`` state no longer matches, so this is the last
        thing sent on it.
        """
        sid = self.conn.get_next_available_stream_id()
        first = HeadersFrame(sid)
        first.data = self.conn.encoder.encode(headers)
        out = [first.serialize()]
        for _ in range(count):
            more = ContinuationFrame(sid)
            more.data = _HPACK_FILLER
            out.append(more.serialize())
        self.sock.sendall(b"".join(out))

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _send_within(self, data: bytes, deadline: float) -> None:
        """Write ``data``, reading whatever the server sends between writes, until done.

        Stops early when the server ended the connection (GOAWAY, a close, a write the
        socket refuses) or at ``deadline``; what was not sent is dropped (the connection is
        spent). A write the socket could not take in a slice is repeated as it was (TLS
        requires the same record again).
        """
        view = memoryview(data)
        self._holding = True
        try:
            while view and not self.closed and self.goaway_code is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                if self._readable():  # then write again: a chatty server never starves it
                    self._read_once(0.001)
                    if self.closed or self.goaway_code is not None:
                        return
                self.sock.settimeout(min(left, _WRITE_SLICE_S))
                try:
                    sent = self.sock.send(view[:_WRITE_CHUNK])
                except TimeoutError:
                    continue
                except OSError:
                    return  # the server closed: its last frames are read by wait()
                view = view[sent:]
        finally:
            self._holding = False

    def _readable(self) -> bool:
        """Whether a read would return at once (bytes in the socket or in the TLS buffer)."""
        pending = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
        return bool(pending) or bool(select.select([self.sock], [], [], 0)[0])

    # -- reading ------------------------------------------------------------------------

    def wait(
        self, sid: int, timeout: float, *, enough: Callable[[Reply], bool] | None = None
    ) -> Reply:
        """Read until stream ``sid`` or the connection ends, or ``enough(reply)`` holds.

        Past ``timeout`` the reply is marked ``timed_out``.
        """
        reply = self.replies[sid]
        start = time.monotonic()
        done = self.pump(
            timeout,
            until=lambda: self._stream_done(sid) or (enough is not None and enough(reply)),
        )
        reply.elapsed_s = time.monotonic() - start
        reply.timed_out = not done
        reply.goaway_code = self.goaway_code
        reply.goaway_last_stream = self.goaway_last_stream
        reply.closed = self.closed
        if sid in self._recorded:
            RAW.answered(self._recorded[sid], answer(reply), timeout)
        return reply

    def drain(self, quiet_s: float, limit_s: float) -> None:
        """Read until the server is quiet for ``quiet_s``, the connection ends, or ``limit_s``."""
        end = time.monotonic() + limit_s
        while not self.closed and time.monotonic() < end:
            if not self._read_once(min(quiet_s, max(0.0, end - time.monotonic()))):
                return

    def pump(self, timeout: float, until: Callable[[], bool]) -> bool:
        """Read until ``until()`` holds or the connection ends (True), or the deadline passes."""
        end = time.monotonic() + timeout
        while not until():
            left = end - time.monotonic()
            if self.closed:
                return True
            if left <= 0:
                return False
            self._read_once(left)
        return True

    def _stream_done(self, sid: int) -> bool:
        reply = self.replies[sid]
        return self.closed or reply.grpc_status is not None or reply.reset_code is not None

    def _read_once(self, timeout: float) -> bool:
        """One socket read; False when nothing came within ``timeout``."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(_READ_CHUNK)
        except TimeoutError:
            return False
        except OSError:
            self.closed = True
            return True
        if not data:
            self.closed = True
            return True
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.H2Error:
            self.closed = True
            return True
        for event in events:
            self._on(event)
        if not self._holding:
            with contextlib.suppress(OSError, h2.exceptions.H2Error):
                self._flush()
        return True

    def _on(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        reply = self.replies.get(sid) if isinstance(sid, int) else None
        if isinstance(event, h2.events.RemoteSettingsChanged) and self.server_settings is None:
            self.server_settings = {
                int(code): int(change.new_value) for code, change in event.changed_settings.items()
            }
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_code = int(event.error_code or 0)
            self.goaway_last_stream = event.last_stream_id
            self.closed = True
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if reply is not None:
                reply.feed(event.data)
        elif reply is None:
            return
        elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            for raw_name, raw_value in event.headers or ():
                name, value = _text(raw_name), _text(raw_value)
                reply.headers[name] = value
                if name == ":status" and value.isdigit():
                    reply.http_status = int(value)
                elif name == "grpc-status" and value.isdigit():
                    reply.grpc_status = int(value)
                elif name == "grpc-message":
                    reply.grpc_message = value
            if isinstance(event, h2.events.TrailersReceived) and reply.grpc_status is None:
                reply.grpc_status = -1  # trailers without grpc-status: ended, not OK
        elif isinstance(event, h2.events.StreamReset):
            reply.reset_code = int(event.error_code)
        elif isinstance(event, h2.events.StreamEnded) and reply.grpc_status is None:
            reply.grpc_status = -1  # ended without a gRPC status (HTTP error page)


def answer(reply: Reply) -> str:
    """What came back, as the judges read it: ``HTTP 200, grpc-status 0``.

    HTTP status, grpc-status, RST_STREAM and GOAWAY codes, or ``no answer``; a close is
    named only when nothing else came (when it comes after an answer is a race).
    """
    parts = []
    if reply.http_status is not None:
        parts.append(f"HTTP {reply.http_status}")
    if reply.grpc_status is not None:
        parts.append(f"grpc-status {reply.grpc_status}")
    if reply.reset_code is not None:
        parts.append(f"RST_STREAM code {reply.reset_code}")
    if reply.goaway_code is not None:
        parts.append(f"GOAWAY code {reply.goaway_code}")
    if reply.timed_out:
        parts.append("no answer")
    return ", ".join(parts) or ("connection closed" if reply.closed else "nothing")


def resend(client: H2Client, sent: RawSent, timeout: float) -> Reply:
    """Send ``sent`` again on ``client`` as the probe did, and wait at most ``timeout``.

    Raises:
        OSError: the connection failed.
    """
    deadline = time.monotonic() + timeout
    if sent.settings_first:
        client.pump(min(SETTINGS_WAIT_S, timeout), lambda: client.server_settings is not None)
    left = max(0.0, deadline - time.monotonic())
    sid = client.request(list(sent.headers), sent.body, within=left if sent.within else None)
    return client.wait(sid, max(0.0, deadline - time.monotonic()))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def advertised_streams(client: H2Client, wait_s: float) -> int | None:
    """The server's SETTINGS_MAX_CONCURRENT_STREAMS, or ``None`` when it advertises none.

    Read from the server's first SETTINGS frame (waiting at most ``wait_s`` for it; a
    server that sends none within that time advertises nothing).
    """
    client.pump(wait_s, lambda: client.server_settings is not None)
    settings = client.server_settings or {}
    return settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)


def grpc_problem(client: H2Client, path: str, timeout: float, max_message: int) -> str:
    """Why the server behind ``client`` is not a conforming gRPC server, or ``""``.

    One unary request to ``path`` (an empty message): a gRPC server answers HTTP 200 with
    an ``application/grpc`` content type and at most one message, then ends the stream
    with a grpc-status. Anything else (an HTTP error page, a stream that keeps sending or
    never ends, a message larger than ``max_message``) makes every gRPC answer meaningless.
    """
    sid = client.request(client.headers(path), grpc_frame(b""))

    def enough(reply: Reply) -> bool:
        return reply.messages > 1 or reply.largest > max_message

    reply = client.wait(sid, timeout, enough=enough)
    kind = reply.headers.get("content-type", "")
    if reply.http_status is not None and (
        reply.http_status != 200 or not kind.startswith("application/grpc")
    ):
        return (
            f"it answers HTTP/2 but not gRPC: a gRPC request to {path} got HTTP "
            f"{reply.http_status} ({kind or 'no content type'})"
        )
    if reply.largest > max_message:
        return (
            f"its answer to {path} is a {reply.largest:,}-byte message, over the harness's "
            f"{max_message:,}-byte receive limit"
        )
    if reply.messages > 1:
        return f"the unary method {path} sent more than one message: not a conforming gRPC server"
    if reply.timed_out:
        what = "answered but never ended the stream" if reply.http_status else "did not answer"
        return f"a gRPC request to {path} {what} within {timeout:g} s"
    return ""
