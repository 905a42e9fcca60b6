"""TLS 1.3 0-RTT (early data): does the server accept it? Measured with ``openssl s_client``.

A client can send early data only when it resumes a session whose ticket allows it (the
ticket's ``max_early_data`` above 0), and with the ALPN protocol of that session (RFC 8446
§4.2.10). gRPC servers (grpc-core, grpc-go, grpc-js) close, or answer HTTP/1.x, a client
that offers no ALPN, and issue no ticket to it; sslyze's probe and its OpenSSL binding
(nassl) offer none, so they cannot see what a gRPC client is offered. ``openssl s_client``
does, with ``-alpn h2``:

1. a TLS 1.3 handshake offering ALPN ``h2``, the HTTP/2 preface sent; the session the
   server's ticket carries is written out (``-sess_out``) as soon as it arrives;
2. ``openssl sess_id`` reads the ticket's ``Max Early Data``: 0 means the server allows
   none (refused, with evidence);
3. above 0, the session is resumed sending the preface as early data (``-early_data``)
   and s_client says whether the server accepted it.

Without a completed handshake, or without the ``openssl`` command, nothing is measured and
the reason is given. A handshake that completes with no ticket within the timeout, the
connection kept open, leaves no session to resume: no 0-RTT is possible on it, and that is
said; a server that ends the connection instead (a TLS 1.3 server refuses a client
certificate after the client's side of the handshake) has answered nothing about 0-RTT.
Early data "rejected" counts only on a session actually resumed (``Reused``): a fresh
handshake (another replica's ticket keys) rejects it whatever the policy.
The session file holds the session's secret: it lives in a private temporary directory,
removed when the probe ends.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.transport import H2_PREFACE, fmt_address

#: The one-line reason given when the command is missing.
MISSING = "the openssl command is not installed (the 0-RTT probe runs openssl s_client)"
_POLL_S = 0.01


@dataclass(frozen=True)
class EarlyData:
    """What the probe found, shaped like sslyze's EarlyDataScanResult (``supports_early_data``)."""

    supports_early_data: bool
    how: str


def max_early_data(session_text: str) -> int | None:
    """``Max Early Data`` of ``openssl sess_id -text`` output; ``None`` without a ticket."""
    if "TLS session ticket:" not in session_text:
        return None
    found = re.search(r"Max Early Data:\s*(\d+)", session_text)
    return int(found.group(1)) if found else None


def early_data_status(output: str) -> str | None:
    """``accepted``, ``rejected`` or ``not sent`` from s_client's output; ``None``: not said."""
    found = re.search(r"Early data was (accepted|rejected|not sent)", output)
    return found.group(1) if found else None


def handshake_done(output: str) -> bool:
    """Whether s_client's output shows a completed TLS 1.3 handshake that selected ``h2``."""
    return "ALPN protocol: h2" in output and bool(re.search(r"New, TLSv1\.3", output))


def _last_line(output: str) -> str:
    """s_client's last line of text, for a reason.

    With ``-ign_eof`` s_client also prints what the server sent (HTTP/2 frames): control
    bytes are shown as ``?``, and a line of nothing else is passed over.
    """
    printable = ("".join(c if c.isprintable() else "?" for c in ln).strip()
                 for ln in output.splitlines())  # fmt: skip
    lines = [ln for ln in printable if ln.strip("?")]
    return lines[-1][:200] if lines else "no output"


def probe(
    host: str,
    port: int,
    *,
    server_name: str | None,
    client_cert: Path | None,
    client_key: Path | None,
    timeout_s: float,
) -> EarlyData | str:
    """The verdict on 0-RTT at ``host:port``, or why it could not be measured.

    ``server_name`` is sent as SNI; ``client_cert`` and ``client_key`` are presented when
    the server asks for a certificate; ``timeout_s`` bounds each step.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        return MISSING
    base = [
        openssl,
        "s_client",
        "-connect",
        fmt_address(host, port),
        "-tls1_3",
        "-alpn",
        "h2",
    ]
    if server_name:
        base += ["-servername", server_name]
    if client_cert is not None and client_key is not None:
        base += ["-cert", str(client_cert), "-key", str(client_key)]
        if client_cert.read_bytes().count(b"-----BEGIN CERTIFICATE-----") > 1:
            base += ["-cert_chain", str(client_cert)]  # -cert sends the first one only
    with tempfile.TemporaryDirectory(prefix="hipaa-0rtt-") as tmp:
        session, preface = Path(tmp) / "session.pem", Path(tmp) / "preface"
        preface.write_bytes(H2_PREFACE)
        first = _first_session(base, Path(tmp) / "written.pem", timeout_s)
        if not first.session:
            return _without_ticket(first, timeout_s)
        session.write_bytes(first.session)  # a whole session, copied as s_client wrote it
        text = _run([openssl, "sess_id", "-in", str(session), "-noout", "-text"], 10)
        allowed = max_early_data(text)
        if allowed is None:
            return f"the server's session ticket could not be read: {_last_line(text)}"
        if allowed == 0:
            return EarlyData(
                False, "the server's session ticket (ALPN h2) allows no early data (max 0)"
            )
        resumed = _run(
            [*base, "-sess_in", str(session), "-early_data", str(preface)],
            timeout_s + 5,
        )
    return _judge_resumption(allowed, resumed)


def _without_ticket(first: _First, timeout_s: float) -> EarlyData | str:
    """No session from the first handshake: no 0-RTT only if the server kept it open."""
    if not handshake_done(first.output):
        return f"no TLS 1.3 handshake with ALPN h2 completed (s_client: {_last_line(first.output)})"
    if first.alive:
        return EarlyData(
            False,
            f"no session ticket within {timeout_s:g} s of a TLS 1.3 handshake with ALPN h2, "
            "the connection open: no session to resume, so no 0-RTT",
        )
    # A TLS 1.3 server refuses a client (its certificate, say) after the client's side
    # of the handshake is done: that says nothing about 0-RTT.
    return (
        "the server ended the connection after the TLS 1.3 handshake without a session "
        f"ticket (s_client: {_last_line(first.output)})"
    )


def _judge_resumption(allowed: int, resumed: str) -> EarlyData | str:
    """The resumption's answer: accepted or rejected, on a session actually resumed."""
    if not re.search(r"Reused, TLSv1\.3", resumed):
        # A fresh handshake (another replica's ticket keys, a restart) rejects the early
        # data whatever the server's policy: it was never offered where it applies.
        return (
            f"its ticket allows {allowed} bytes of early data, but the session was not "
            f"resumed (s_client: {_last_line(resumed)})"
        )
    status = early_data_status(resumed)
    if status is None or status == "not sent":
        return f"its ticket allows {allowed} bytes of early data, but none was sent: " + (
            _last_line(resumed)
        )
    return EarlyData(
        status == "accepted",
        f"its ticket allows {allowed} bytes of early data; the HTTP/2 preface sent as early "
        f"data on resumption was {status}",
    )


#: How s_client's ``-sess_out`` file ends once the session is written whole.
_SESSION_END = b"-----END SSL SESSION PARAMETERS-----"


@dataclass(frozen=True)
class _First:
    """The first handshake as the probe saw it.

    Attributes:
        output: s_client's output.
        session: The whole session it wrote (``b""``: none).
        alive: s_client was still connected when the probe stopped waiting.
    """

    output: str
    session: bytes
    alive: bool


def _whole(path: Path) -> bytes:
    """The session file's content if it holds a whole session, else ``b""``.

    s_client rewrites the file (truncating it) for every ticket the server sends, so it
    may be read empty or half-written.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return b""
    return data if data.rstrip().endswith(_SESSION_END) else b""


def _first_session(base: list[str], session: Path, timeout_s: float) -> _First:
    """Run the first handshake until a whole session is written or ``timeout_s`` passes."""
    with subprocess.Popen(
        [*base, "-sess_out", str(session), "-ign_eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write(H2_PREFACE)
            proc.stdin.flush()
        except OSError:
            pass  # s_client already ended: its output says why
        deadline = time.monotonic() + timeout_s
        got = b""
        while not got and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(_POLL_S)
            got = _whole(session)
        alive = proc.poll() is None
        got = got or _whole(session)  # written just before s_client ended
        proc.kill()
        out, _ = proc.communicate()
    return _First(out.decode("utf-8", "replace"), got, alive)


def _run(command: list[str], timeout_s: float) -> str:
    """``command``'s output (stdout and stderr), bounded by ``timeout_s``."""
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return f"{(exc.stdout or b'').decode('utf-8', 'replace')}\ntimed out after {timeout_s:g} s"
    return done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
