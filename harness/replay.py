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

Raw HTTP/2 probes (FUZZ-003's malformed framing, LIMIT-001's large headers) are replayed
with ``--frames``: the request as :class:`harness.h2client.RawSent` keeps it (the header
list as given, malformed names included, the body, and the pacing: the server's SETTINGS
taken and acknowledged first, reading while writing), as JSON deflated and in base64
(:func:`frames_text`; ``@FILE`` reads that text from a file). Not the HPACK bytes: those
depend on the connection's table and Huffman choice, and a header list can carry a
placeholder. Deflated, LIMIT-001's 1 MiB header is under 2 KiB of text, so it goes on the
line; a plan whose text would pass :data:`MAX_FRAMES_TEXT` gets no line (the re-run line
stands). Credentials in it are ``${HIPAA_TOKEN_...}`` placeholders, filled from the
environment when the line runs. The answer is classified as the judges read it
(:func:`harness.h2client.answer`: HTTP status, grpc-status, RST_STREAM and GOAWAY codes)
and ``--expect`` compares it with what the run got.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from harness.channels import Endpoint, code_text, invoke
from harness.errors import UsageError
from harness.h2client import H2Client, RawSent, answer, resend
from harness.transport import Transport, detect_transport

#: Channels a call can go over, as the reproducer needs to know them.
DEFAULT, PRINCIPAL, OTHER = "default", "principal", "other"
#: The most request bytes of one call the log keeps (larger calls are noted, not kept).
MAX_CALL_BYTES = 64 * 1024
#: The most request bytes the log keeps in all; the oldest calls go first.
MAX_TOTAL_BYTES = 32 * 1024 * 1024
#: The longest ``--frames`` text a reproducer writes on its line.
MAX_FRAMES_TEXT = 16 * 1024
#: Most bytes a ``--frames`` plan may inflate to (a bound on what a line can make us build).
_MAX_PLAN_BYTES = 8 * 1024 * 1024
#: Only the reproducers' own placeholders are filled from the environment: a ``--frames``
#: text is opaque, so ``${AWS_SECRET_ACCESS_KEY}`` in a shared one must not be sent.
_PLACEHOLDER = re.compile(r"\$\{(HIPAA_TOKEN_[A-Z0-9_]+|HIPAA_FORGED_TOKEN)\}")


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


# -- hipaa-grpc replay --frames ----------------------------------------------------------


def frames_text(sent: RawSent) -> str:
    """``sent``'s header list, body and pacing as ``--frames`` text (deflated JSON, base64)."""
    plan = {
        "headers": [[name, value] for name, value in sent.headers],
        "body": None if sent.body is None else base64.b64encode(sent.body).decode(),
        "settings_first": sent.settings_first,
        "within": sent.within,
    }
    packed = zlib.compress(json.dumps(plan, separators=(",", ":")).encode(), 9)
    return base64.b64encode(packed).decode()


def frames_plan(text: str, env: Mapping[str, str]) -> RawSent:
    """The request ``--frames`` carries (``@FILE``: read from FILE), placeholders filled.

    Raises:
        UsageError: not such text, a file that cannot be read, a placeholder not set.
    """
    if text.startswith("@"):
        text = (_read(Path(text[1:])) or b"").decode("ascii", "replace")
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(_b64(text.strip(), "--frames"), _MAX_PLAN_BYTES)
        if inflater.unconsumed_tail:
            raise UsageError("--frames: the plan is too large")
        plan = json.loads(raw)
        headers = tuple((str(n), _fill(str(v), env)) for n, v in plan["headers"])
        body = plan["body"]
        return RawSent(
            headers,
            None if body is None else _b64(body, "--frames body"),
            bool(plan.get("settings_first")),
            bool(plan.get("within")),
        )
    except (zlib.error, ValueError, KeyError, TypeError):
        raise UsageError("--frames: not a frames plan") from None


def _fill(value: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise UsageError(f"${name} is not set: export it first")
        return env[name]

    return _PLACEHOLDER.sub(one, value)


def replay_frames(req: ReplayRequest, sent: RawSent) -> tuple[str, str]:
    """Send ``sent`` once on a new raw HTTP/2 connection as the flags say.

    Returns what came back, classified (:func:`harness.h2client.answer`), and a summary.

    Raises:
        UsageError: the address is not ``HOST:PORT``.
        OSError: no connection.
    """
    host, _, port = req.address.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"{req.address}: expected HOST:PORT")
    endpoint = endpoint_of(req)
    with H2Client.open(endpoint, host.strip("[]"), int(port), req.timeout_s) as client:
        reply = resend(client, sent, req.timeout_s)
    return answer(reply), reply.describe()


def answer_matches(expected: str, got: str) -> bool:
    """``--expect`` against a raw answer: the same words, case and spacing aside."""

    def norm(text: str) -> str:
        return " ".join(text.lower().replace(",", " ").split())

    return norm(expected) == norm(got)
