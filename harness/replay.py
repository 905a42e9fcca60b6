"""What each call sent, and ``hipaa-grpc replay``: send it again, by hand.

:class:`SentLog` keeps, by request ID, what :meth:`harness.calling.Caller.call` sent (the
method, the request bytes, the metadata, whose credentials, over which channel), bounded
in size, in memory only: it holds credentials and never leaves the process.
:mod:`harness.reproduce` turns an entry into the commands a report shows, credentials
replaced by placeholders.

:func:`replay` is the other end: ``hipaa-grpc replay HOST:PORT --method /pkg.S/M
--request-b64 ...`` sends the same bytes with the same metadata over the same transport,
prints the status and, with ``--expect``, says whether it is the one the harness got.
The request travels as base64 (one ``--request-b64`` per message, or a file of lines), so
bytes JSON cannot carry (malformed, unknown fields, a second message to a unary method)
are sent exactly.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from harness.channels import Endpoint, code_text, invoke
from harness.errors import UsageError
from harness.transport import Transport, detect_transport

#: Channels a call can go over, as the reproducer needs to know them.
DEFAULT, PRINCIPAL, OTHER = "default", "principal", "other"
#: The most request bytes of one call the log keeps (larger calls are noted, not kept).
MAX_CALL_BYTES = 64 * 1024
#: The most request bytes the log keeps in all; the oldest calls go first.
MAX_TOTAL_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Sent:
    """What one call sent.

    Attributes:
        method: Full method path.
        requests: The request messages as bytes; ``None`` when they were not kept (a
            stream fed as it went, or over :data:`MAX_CALL_BYTES`).
        metadata: The metadata as sent, credentials included (never written anywhere).
        principal: Whose credentials (and client certificate) the call carried.
        channel: :data:`DEFAULT`, :data:`PRINCIPAL` (the principal's client certificate)
            or :data:`OTHER` (a channel the check opened itself).
        timeout_s: The call's deadline.
        answered: The status it got, ``PERMISSION_DENIED (7)``.
    """

    method: str
    requests: tuple[bytes, ...] | None
    metadata: tuple[tuple[str, str | bytes], ...] = field(repr=False, default=())
    principal: str | None = None
    channel: str = DEFAULT
    timeout_s: float = 10.0
    answered: str = ""

    @property
    def size(self) -> int:
        """Request bytes kept."""
        return sum(len(r) for r in self.requests or ())


class SentLog:
    """What each call sent, by request ID, bounded (:data:`MAX_TOTAL_BYTES`), thread-safe."""

    def __init__(self, max_total: int = MAX_TOTAL_BYTES) -> None:
        self._sent: OrderedDict[str, Sent] = OrderedDict()
        self._bytes = 0
        self._max = max_total
        self._lock = threading.Lock()

    def add(self, request_id: str, sent: Sent) -> None:
        """Keep ``sent`` under ``request_id`` (requests over the per-call bound dropped)."""
        if not request_id:
            return
        if sent.size > MAX_CALL_BYTES:
            sent = replace(sent, requests=None)
        with self._lock:
            self._sent[request_id] = sent
            self._bytes += sent.size
            while self._bytes > self._max and self._sent:
                _, old = self._sent.popitem(last=False)
                self._bytes -= old.size

    def get(self, request_id: str) -> Sent | None:
        """What the call ``request_id`` sent, if it is still kept."""
        with self._lock:
            return self._sent.get(request_id)


# -- hipaa-grpc replay --------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayRequest:
    """Everything ``hipaa-grpc replay`` was told to send, and how."""

    address: str
    method: str
    requests: tuple[bytes, ...]
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    plaintext: bool = False
    cacert: Path | None = None
    insecure: bool = False
    authority: str | None = None
    cert: Path | None = None
    key: Path | None = None
    timeout_s: float = 10.0
    request_id_key: str = "x-request-id"


def header(text: str) -> tuple[str, str | bytes]:
    """``key: value`` as metadata; a ``-bin`` key's value is base64 (sent as bytes).

    Raises:
        UsageError: no colon, or a ``-bin`` value that is not base64.
    """
    key, colon, value = text.partition(":")
    key, value = key.strip().lower(), value.strip()
    if not colon or not key:
        raise UsageError(f"header {text!r}: expected 'key: value'")
    if key.endswith("-bin"):
        return key, _b64(value, f"header {key}")
    return key, value


def messages(b64: Sequence[str], files: Sequence[Path]) -> tuple[bytes, ...]:
    """The request messages: each ``--request-b64``, then each file's lines (base64 each).

    Raises:
        UsageError: a value is not base64, or a file cannot be read.
    """
    out = [_b64(text, "--request-b64") for text in b64]
    for path in files:
        try:
            lines = path.read_text().split()
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
        out += [_b64(line, str(path)) for line in lines]
    return tuple(out) if out or b64 or files else (b"",)


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{where}: not base64") from None


def endpoint_of(req: ReplayRequest) -> Endpoint:
    """The endpoint to open a channel from, as the flags say (like grpcurl's).

    ``--insecure`` trusts the certificate the port presents (a self-signed one, as the
    harness does when no ``tls.ca_bundle`` is configured).

    Raises:
        UsageError: a file cannot be read, or the address is not ``HOST:PORT``.
        TargetError: ``--insecure`` and the port does not speak TLS.
    """
    if req.plaintext:
        return Endpoint(req.address, Transport.H2C)
    ca = _read(req.cacert)
    if req.insecure:
        host, _, port = req.address.rpartition(":")
        if not port.isdigit():
            raise UsageError(f"{req.address}: expected HOST:PORT")
        detected = detect_transport(host.strip("[]"), int(port))
        if detected.leaf_der is not None:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding

            leaf = x509.load_der_x509_certificate(detected.leaf_der)
            ca = leaf.public_bytes(Encoding.PEM)
    return Endpoint(
        req.address,
        Transport.TLS,
        server_name=req.authority,
        ca_pem=ca,
        client_cert_pem=_read(req.cert),
        client_key_pem=_read(req.key),
    )


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None


def replay(req: ReplayRequest) -> tuple[str, str]:
    """Send ``req`` once; returns the status (``PERMISSION_DENIED (7)``) and a summary."""
    channel = endpoint_of(req).open_channel()
    try:
        result = invoke(
            channel,
            req.method,
            list(req.requests),
            metadata=req.metadata,
            request_id_key=req.request_id_key,
            timeout=req.timeout_s,
        )
    finally:
        channel.close()
    return code_text(result.code), result.summary()


def code_matches(expected: str, got: str) -> bool:
    """``--expect`` against the status: ``PERMISSION_DENIED``, ``7`` or ``... (7)``."""
    want = expected.strip().upper()
    name, _, number = got.partition(" (")
    return want in (got.upper(), name, number.rstrip(")")) or _by_name(want) == name


def _by_name(text: str) -> str:
    """``OK (0)`` -> ``OK``; a bare name stays as it is."""
    for code in grpc.StatusCode:
        if text == code_text(code):
            return code.name
    return text
