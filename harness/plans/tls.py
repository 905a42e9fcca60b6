"""The run's TLS facts, shared by the TLS, CERT and MTLS controls.

One sslyze scan per run (:func:`tls_facts`), started as the run opens on a TLS target
(:func:`early_scan`, a warm-up of every control in :data:`SCANNED`), and the profile the
controls judge it by (:func:`run_profile`). :func:`scanned` is what a check that judges the
scan asks for: the facts, or it raises (``NotApplicable`` on a cleartext port, a
:class:`ScanFailed` ERROR when sslyze could not scan), never a verdict. TLS-005 and
CERT-002 make handshakes of their own with Python's ``ssl``: :func:`handshake` makes one and
records what came of it as a :class:`Handshake`, which their judges read.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from harness.errors import HarnessError, TargetError
from harness.outcome import NotApplicable, Observation, Status
from harness.run import Run
from harness.tls import Profile, ScanTarget, TlsFacts, profile, scan
from harness.transport import H2_PREFACE, Transport, client_context, connect

#: Why a TLS control has nothing to judge on a cleartext port.
CLEARTEXT = "the target serves cleartext HTTP/2 (TLS-001): no TLS to judge"


class ScanFailed(HarnessError):
    """sslyze could not scan the target at all: the controls that judge the scan ERROR."""


def scan_target(run: Run) -> ScanTarget:
    """Where and how the run's TLS scan reaches the target."""
    assert run.spec.host is not None
    assert run.spec.port is not None
    return ScanTarget(
        host=run.spec.host,
        port=run.spec.port,
        server_name=run.endpoint.server_name,
        ca_bundle=run.config.path("tls.ca_bundle"),
        client_cert=run.config.path("mtls.client_cert"),
        client_key=run.config.path("mtls.client_key"),
        timeout_s=run.options.connect_timeout_s,
    )


def tls_facts(run: Run) -> TlsFacts:
    """The run's sslyze scan (made once, on first use or by :func:`early_scan`)."""
    target = scan_target(run)
    return run.memo("tls-facts", lambda: scan(target))


#: The controls that judge the sslyze scan.
SCANNED = (*(f"TLS-00{i}" for i in range(1, 7)), "CERT-001", "CERT-002", "CERT-003", "MTLS-001")


def early_scan(run: Run) -> None:
    """Scan a TLS target while the gRPC controls run: handshakes only, no call is made."""
    if run.endpoint.transport is Transport.TLS:
        tls_facts(run)


def run_profile(run: Run) -> Profile:
    """The run's TLS profile with the config's CCM / FIPS adjustments."""
    return profile(
        run.options.profile,
        allow_ccm=bool(run.config.get("tls.allow_ccm", False)),
        fips_required=bool(run.config.get("tls.fips_required", False)),
    )


def is_tls(run: Run) -> bool:
    """Whether the target port speaks TLS (not cleartext HTTP/2)."""
    return run.endpoint.transport is Transport.TLS


def scanned(run: Run) -> TlsFacts:
    """The scan's facts, for a check that judges them.

    Raises:
        NotApplicable: the port is cleartext HTTP/2 (TLS-001 fails it; nothing else to judge).
        ScanFailed: sslyze could not scan (the control is an ERROR, never a verdict).
    """
    if not is_tls(run):
        raise NotApplicable(CLEARTEXT)
    facts = tls_facts(run)
    if (error := scan_error(facts)) is not None:
        raise ScanFailed(f"{error.probe}: {error.observed}")
    return facts


def scan_error(facts: TlsFacts) -> Observation | None:
    """An ERROR observation when sslyze could not scan at all."""
    if not facts.problem:
        return None
    return Observation(
        f"sslyze scan of {facts.target}", facts.problem, "a completed scan", Status.ERROR
    )


# -- the harness's own handshakes (TLS-005, CERT-002) ----------------------------------------


@dataclass(frozen=True)
class Handshake:
    """One TLS handshake made with Python's ``ssl`` (no verification), and what came of it.

    Attributes:
        offered: The ALPN protocols offered (empty: no ALPN extension).
        sni: The server name sent.
        selected: The ALPN protocol the server selected (``None``: none).
        unreached: Why no TCP connection was made (``""``: one was).
        alert: The TLS error that ended the handshake, in OpenSSL's words (``""``: none).
        closed: Why the connection ended during the handshake without a TLS alert.
        reply: The first bytes the server sent back to the HTTP/2 preface written after the
            handshake (``None``: no preface was sent; ``b""``: closed or nothing came).
        peer_der: The server's certificate (DER) when the handshake completed.
    """

    offered: tuple[str, ...]
    sni: str
    selected: str | None = None
    unreached: str = ""
    alert: str = ""
    closed: str = ""
    reply: bytes | None = None
    peer_der: bytes | None = None

    @property
    def completed(self) -> bool:
        """Whether the handshake completed."""
        return not (self.unreached or self.alert or self.closed)


def handshake(
    run: Run, *, alpn: tuple[str, ...], sni: str | None = None, preface: bool = False
) -> Handshake:
    """One handshake to the target offering ``alpn`` (with the client certificate, if any).

    ``sni`` defaults to ``tls.server_name`` (else the host). With ``preface`` the HTTP/2
    client preface is written after the handshake and the first reply bytes recorded.

    Raises:
        TargetError: the configured client certificate or key does not load.
    """
    assert run.spec.host is not None
    assert run.spec.port is not None
    ctx = client_context(
        ca_pem=None,
        verify=False,
        client_cert_pem=run.endpoint.client_cert_pem,
        client_key_pem=run.endpoint.client_key_pem,
        alpn=alpn,
    )
    name = sni or run.endpoint.server_name or run.spec.host
    timeout = run.options.connect_timeout_s
    try:
        sock = connect(run.spec.host, run.spec.port, timeout)
    except TargetError as exc:
        return Handshake(alpn, name, unreached=str(exc))
    try:
        with sock, ctx.wrap_socket(sock, server_hostname=name) as tls:
            selected = tls.selected_alpn_protocol()
            der = tls.getpeercert(binary_form=True)
            reply = _h2_reply(tls, timeout) if preface else None
    except ssl.SSLError as exc:
        return Handshake(alpn, name, alert=str(exc.reason or exc))
    except OSError as exc:
        return Handshake(alpn, name, closed=str(exc) or type(exc).__name__)
    return Handshake(alpn, name, selected, reply=reply, peer_der=der)


def _h2_reply(tls: ssl.SSLSocket, timeout: float) -> bytes:
    """Send the HTTP/2 preface on an established TLS connection and read what comes back."""
    try:
        tls.settimeout(timeout)
        tls.sendall(H2_PREFACE)
        return tls.recv(64)
    except (TimeoutError, OSError):
        return b""
