"""Transport controls: TLS-001 ... TLS-006.

The facts come from one sslyze scan per run (:func:`harness.plans.tls.tls_facts`), shared
with the CERT and MTLS checks; ALPN, which sslyze does not test, is probed with Python's
``ssl``. An sslyze connectivity failure makes every observation that depends on it an
ERROR, never a verdict.
"""

from __future__ import annotations

import ssl

import grpc

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check, warmup
from harness.errors import TargetError
from harness.outcome import Observation, Outcome, Status
from harness.plans.tls import SCANNED, early_scan, run_profile, scan_error, scanned, tls_facts
from harness.run import Run
from harness.tls import (
    LEGACY_VERSIONS,
    RECOMMENDED_GROUPS,
    Profile,
    Suite,
    TlsFacts,
    group_bits,
    suite_parts,
)
from harness.transport import (
    H2_PREFACE,
    PrefaceReply,
    classify_reply,
    client_context,
    connect,
    probe_preface,
)

# Scan a TLS target while the gRPC controls run: handshakes only, no call is made.
warmup(*SCANNED)(early_scan)

_EXPECTED_H2C = (
    "closed connection, TLS alert, or an HTTP/1.x error: never a cleartext HTTP/2 SETTINGS frame"
)
_CRITICAL_MARKS = ("NULL", "anon", "EXPORT", "RC4", "DES")


@check("TLS-001", needs_channel=False)
def cleartext_refused(run: Run) -> Outcome:
    """No legacy protocol version and no cleartext HTTP/2 path to the service.

    sslyze tries SSL 2.0, SSL 3.0, TLS 1.0 and TLS 1.1 with SNI = ``tls.server_name``; any
    accepted fails (critical). On the target port and on every ``tls.extra_ports`` entry,
    the harness opens TCP, sends the HTTP/2 client preface with an empty SETTINGS frame
    (prior-knowledge h2c), and reads the reply. A closed connection, a TLS alert or an
    HTTP/1.x error page passes and is recorded; a reply that starts with an HTTP/2 SETTINGS
    frame means gRPC is served in cleartext and fails. An extra port that cannot be reached
    is INCONCLUSIVE. A port that is cleartext h2c has no TLS to scan: the legacy version
    probes are then not made.
    """
    control = CATALOGUE["TLS-001"]
    assert run.spec.host is not None
    assert run.spec.port is not None
    ports = list(dict.fromkeys([run.spec.port, *run.config.get("tls.extra_ports", [])]))
    observations = []
    for port in ports:
        probe = f"cleartext HTTP/2 preface + SETTINGS to port {port}"
        try:
            reply = probe_preface(run.spec.host, port, timeout=run.options.connect_timeout_s)
        except TargetError as exc:
            observations.append(Observation(probe, str(exc), _EXPECTED_H2C, Status.INCONCLUSIVE))
            continue
        status = Status.FAIL if reply.serves_cleartext_h2 else Status.PASS
        observed = reply.describe()
        if reply.serves_cleartext_h2:
            observed += ": ePHI would cross the network unencrypted"
        observations.append(Observation(probe, observed, _EXPECTED_H2C, status))
    if run.endpoint.transport.value == "tls":
        facts = tls_facts(run)
        error = scan_error(facts)
        observations += [error] if error else _legacy_versions(facts)
    return Outcome.from_observations(
        control,
        observations,
        passed=f"no legacy TLS and no cleartext HTTP/2 on port(s) {', '.join(map(str, ports))}",
    )


def _legacy_versions(facts: TlsFacts) -> list[Observation]:
    out = []
    for version in LEGACY_VERSIONS:
        supported = facts.versions.get(version)
        probe = f"sslyze {version} handshakes, {facts.target}"
        expected = f"{version} refused"
        if supported is None:
            why = facts.errors.get(version, "not measured")
            out.append(Observation(probe, why, expected, Status.INCONCLUSIVE))
        elif supported:
            suites = ", ".join(s.name for s in facts.suites.get(version, ())) or "none listed"
            out.append(Observation(probe, f"accepted ({suites})", expected, Status.FAIL))
        else:
            out.append(Observation(probe, "refused", expected, Status.PASS))
    return out


@check("TLS-002", needs_channel=False)
def tls13_offered(run: Run) -> Outcome:
    """TLS 1.3 is offered; TLS 1.2 only where the profile allows it.

    From the sslyze scan: TLS 1.3 must be supported; under ``mozilla-modern`` TLS 1.2 must
    not be. The other profiles allow TLS 1.2 (``nist-800-52r2`` expects it).
    """
    control = CATALOGUE["TLS-002"]
    facts = scanned(run, "TLS-002")
    if isinstance(facts, Outcome):
        return facts
    prof = run_profile(run)
    observations = []
    wanted = {"TLS 1.3": True} | ({} if prof.tls12 else {"TLS 1.2": False})
    for version, want in wanted.items():
        got = facts.versions.get(version)
        expected = f"{version} {'supported' if want else f'disabled ({prof.name})'}"
        probe = f"sslyze {version} handshakes, {facts.target}"
        if got is None:
            observed, status = facts.errors.get(version, "not measured"), Status.INCONCLUSIVE
        else:
            observed = "supported" if got else "not supported"
            status = Status.PASS if got == want else Status.FAIL
        observations.append(Observation(probe, observed, expected, status))
    tls12 = facts.versions.get("TLS 1.2")
    if prof.tls12 and tls12 is not None:
        observations.append(
            Observation(
                "sslyze TLS 1.2 handshakes (recorded)",
                "supported" if tls12 else "not supported",
                f"allowed under {prof.name}",
                Status.PASS,
            )
        )
    return Outcome.from_observations(control, observations, passed="TLS 1.3 offered")


@check("TLS-003", needs_channel=False)
def aead_only(run: Run) -> Outcome:
    """Only AEAD cipher suites, from the profile's list.

    Every suite sslyze saw accepted under TLS 1.2 and TLS 1.3 is judged by its bulk cipher:
    NULL, anon, EXPORT, RC4, DES or 3DES fail (critical); CBC or any other non-AEAD cipher
    fails (high); an AEAD cipher outside the profile's list (CCM without ``tls.allow_ccm``,
    ChaCha20 under ``tls.fips_required``, ARIA, Camellia) fails (high). The key exchange of
    a suite is TLS-004's to judge. TLS 1.0 and 1.1 suites belong to TLS-001.
    """
    control = CATALOGUE["TLS-003"]
    facts = scanned(run, "TLS-003")
    if isinstance(facts, Outcome):
        return facts
    prof = run_profile(run)
    observations = []
    for version in ("TLS 1.2", "TLS 1.3"):
        if facts.versions.get(version) is None:
            why = facts.errors.get(version, "not measured")
            observations.append(
                Observation(f"sslyze {version} suites", why, "measured", Status.INCONCLUSIVE)
            )
            continue
        for suite in facts.suites.get(version, ()):
            observations.append(_judge_cipher(version, suite.name, prof))
    return Outcome.from_observations(
        control, observations, passed=f"every accepted suite is AEAD and in {prof.name}'s list"
    )


def _judge_cipher(version: str, name: str, prof: Profile) -> Observation:
    probe = f"{version} suite {name}"
    if version == "TLS 1.3":
        allowed = sorted(prof.tls13_suites)
        expected = f"one of {', '.join(allowed)}"
        ok = name in prof.tls13_suites
        return Observation(probe, "accepted", expected, Status.PASS if ok else Status.FAIL)
    _, cipher = suite_parts(name)
    expected = f"an AEAD cipher in {prof.name}'s list ({', '.join(sorted(prof.tls12_ciphers))})"
    if any(mark in name for mark in _CRITICAL_MARKS):
        return Observation(
            probe, "accepted: broken cipher", expected, Status.FAIL, Severity.CRITICAL
        )
    if "GCM" not in cipher and "CCM" not in cipher and "POLY1305" not in cipher:
        return Observation(probe, f"accepted: {cipher} is not AEAD", expected, Status.FAIL)
    if cipher not in prof.tls12_ciphers:
        return Observation(probe, f"accepted: {cipher} is outside the list", expected, Status.FAIL)
    return Observation(probe, "accepted", expected, Status.PASS)


@check("TLS-004", needs_channel=False)
def forward_secrecy(run: Run) -> Outcome:
    """Forward secrecy and key-exchange strength.

    Every accepted TLS 1.2 suite must use ECDHE (or DHE where the profile allows it: never
    under ``hipaa-strict``); static RSA, ECDH and DH suites fail. Ephemeral keys must be at
    least 256-bit ECDH (X25519 and X448 count as strong) or 2048-bit DH, in TLS 1.2 and 1.3.
    No supported group may be weak (EC below 256 bits, finite-field below 2048 bits).
    Strong groups outside the recommended set (secp521r1, X448...) WARN (low) under the
    ``mozilla-*`` profiles and pass under the others.
    """
    control = CATALOGUE["TLS-004"]
    facts = scanned(run, "TLS-004")
    if isinstance(facts, Outcome):
        return facts
    prof = run_profile(run)
    observations = []
    for version in ("TLS 1.2", "TLS 1.3"):
        for suite in facts.suites.get(version, ()):
            observations.append(_judge_exchange(version, suite, prof))
    if facts.groups is None:
        why = facts.errors.get("ELLIPTIC_CURVES", "not measured")
        observations.append(
            Observation("sslyze supported groups", why, "measured", Status.INCONCLUSIVE)
        )
    else:
        observations += _judge_groups(facts.groups, prof)
    return Outcome.from_observations(
        control, observations, passed="every suite is forward-secret with strong groups"
    )


def _judge_exchange(version: str, suite: Suite, prof: Profile) -> Observation:
    probe = f"{version} suite {suite.describe()}"
    kinds = "ECDHE or DHE" if prof.dhe else "ECDHE"
    expected = f"{kinds}, ECDH >= 256 bits, DH >= 2048 bits"
    if version == "TLS 1.2":
        exchange, _ = suite_parts(suite.name)
        ephemeral = exchange.startswith("ECDHE_") or (prof.dhe and exchange.startswith("DHE_"))
        if not ephemeral:
            why = "static key exchange: no forward secrecy"
            if exchange.startswith("DHE_"):
                why = f"DHE is not allowed under {prof.name}"
            return Observation(probe, f"accepted: {exchange}, {why}", expected, Status.FAIL)
    if suite.key_exchange == "ECDH":
        strong = (suite.curve or "").upper() in ("X25519", "X448") or (suite.key_size or 0) >= 256
    elif suite.key_exchange == "DH":
        strong = (suite.key_size or 0) >= 2048
    else:
        strong = version == "TLS 1.3"  # sslyze always reports 1.3's key share; be safe
    status = Status.PASS if strong else Status.FAIL
    return Observation(probe, "accepted", expected, status)


def _judge_groups(groups: tuple[str, ...], prof: Profile) -> list[Observation]:
    out = []
    for group in groups:
        bits = group_bits(group)
        probe = f"supported group {group}"
        finite = group.startswith("ffdhe")
        floor = 2048 if finite else 256
        expected = (
            f"not weak (>= {floor} bits); recommended {', '.join(sorted(RECOMMENDED_GROUPS))}"
        )
        if bits is None:
            out.append(Observation(probe, "size unknown", expected, Status.WARN, Severity.LOW))
        elif bits < floor:
            out.append(Observation(probe, f"{bits}-bit: weak", expected, Status.FAIL))
        elif group not in RECOMMENDED_GROUPS and prof.other_groups_warn:
            observed = f"strong but outside {prof.name}'s recommended set"
            out.append(Observation(probe, observed, expected, Status.WARN, Severity.LOW))
        else:
            out.append(Observation(probe, "supported", expected, Status.PASS))
    return out


@check("TLS-005", needs_channel=False)
def alpn_h2(run: Run) -> Outcome:
    """ALPN negotiates ``h2``.

    Three handshakes with Python's ``ssl`` (with the client certificate, if configured):
    (a) offering only ``h2``, which must be selected, followed by one gRPC call to the
    liveness method (any gRPC status will do); (b) offering only ``http/1.1``; (c) offering
    no ALPN. After (b) and (c) the harness sends the HTTP/2 preface: a server that answers
    with HTTP/2 although ``h2`` was not negotiated WARNs (low); a refused handshake, a
    closed connection or an HTTP/1.x error is recorded as a pass.
    """
    control = CATALOGUE["TLS-005"]
    if isinstance(facts := scanned(run, "TLS-005"), Outcome):
        return facts
    observations = []
    for label, offer in (("(a) offering h2", ("h2",)), ("(b) offering http/1.1", ("http/1.1",))):
        observations.append(_alpn_handshake(run, label, offer))
    observations.append(_alpn_handshake(run, "(c) offering no ALPN", ()))
    observations.append(_grpc_status(run))
    return Outcome.from_observations(control, observations, passed="ALPN selects h2")


def _alpn_handshake(run: Run, label: str, offer: tuple[str, ...]) -> Observation:
    assert run.spec.host is not None
    assert run.spec.port is not None
    ctx = client_context(
        ca_pem=None,
        verify=False,
        client_cert_pem=run.endpoint.client_cert_pem,
        client_key_pem=run.endpoint.client_key_pem,
        alpn=offer,
    )
    strict = offer == ("h2",)
    expected = "h2 selected" if strict else "recorded; HTTP/2 served without h2 warns"
    probe = f"TLS handshake {label}"
    timeout = run.options.connect_timeout_s
    try:
        with connect(run.spec.host, run.spec.port, timeout) as sock:
            name = run.endpoint.server_name or run.spec.host
            with ctx.wrap_socket(sock, server_hostname=name) as tls:
                selected = tls.selected_alpn_protocol()
                reply = b"" if strict else _h2_reply(tls, timeout)
    except ssl.SSLError as exc:
        status = Status.FAIL if strict else Status.PASS
        return Observation(probe, f"handshake refused ({exc.reason or exc})", expected, status)
    except (OSError, TargetError) as exc:
        status = Status.INCONCLUSIVE if strict else Status.PASS
        return Observation(probe, f"connection failed ({exc})", expected, status)
    observed = f"selected {selected or 'nothing'}"
    if strict:
        return Observation(
            probe, observed, expected, Status.PASS if selected == "h2" else Status.FAIL
        )
    if classify_reply(reply) is PrefaceReply.H2_SETTINGS:
        observed += "; answered the HTTP/2 preface with SETTINGS (HTTP/2 served without h2)"
        return Observation(probe, observed, expected, Status.WARN, Severity.LOW)
    what = "closed" if not reply else f"first bytes {reply[:16].hex(' ')}"
    return Observation(probe, f"{observed}; HTTP/2 preface: {what}", expected, Status.PASS)


def _h2_reply(tls: ssl.SSLSocket, timeout: float) -> bytes:
    """Send the HTTP/2 preface on an established TLS connection and read what comes back."""
    try:
        tls.settimeout(timeout)
        tls.sendall(H2_PREFACE)
        return tls.recv(64)
    except (TimeoutError, OSError):
        return b""


def _grpc_status(run: Run) -> Observation:
    method = run.liveness
    probe = f"(a) one gRPC call over h2: {method}"
    expected = "a gRPC status from the service"
    if problem := run.channel_problem():
        return Observation(probe, problem, expected, Status.INCONCLUSIVE)
    result = run.call(method, (b"",), timeout=run.options.connect_timeout_s)
    reached = result.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    status = Status.PASS if reached else Status.INCONCLUSIVE
    return Observation(probe, result.summary(), expected, status, request_id=result.request_id)


@check("TLS-006", needs_channel=False)
def protocol_hygiene(run: Run) -> Outcome:
    """TLS protocol hygiene, from sslyze's vulnerability and behaviour probes.

    Not vulnerable to Heartbleed or CCS injection, ROBOT not ``VULNERABLE_*`` (each of
    these critical); compression off; secure renegotiation supported and client-initiated
    renegotiation refused; extended master secret supported; fallback SCSV supported (the
    last three only where a version below TLS 1.3 is enabled); TLS 1.3 0-RTT early data
    refused. sslyze's early-data probe speaks HTTP/1.1; against servers that close on it,
    the same probe is repeated with nassl speaking HTTP/2. A probe that errors is
    INCONCLUSIVE with sslyze's reason.
    """
    control = CATALOGUE["TLS-006"]
    facts = scanned(run, "TLS-006")
    if isinstance(facts, Outcome):
        return facts
    below_13 = any(facts.versions.get(v) for v in ("TLS 1.2", *LEGACY_VERSIONS))
    crit = Severity.CRITICAL
    items = [
        ("HEARTBLEED", "is_vulnerable_to_heartbleed", False, "not vulnerable to Heartbleed", crit),
        (
            "OPENSSL_CCS_INJECTION",
            "is_vulnerable_to_ccs_injection",
            False,
            "no CCS injection",
            crit,
        ),
        ("TLS_COMPRESSION", "supports_compression", False, "compression off", None),
        ("TLS_1_3_EARLY_DATA", "supports_early_data", False, "0-RTT early data refused", None),
    ]
    if below_13:
        items += [
            ("SESSION_RENEGOTIATION", "supports_secure_renegotiation", True, "secure reneg.", None),
            (
                "SESSION_RENEGOTIATION",
                "is_vulnerable_to_client_renegotiation_dos",
                False,
                "client-initiated renegotiation refused",
                None,
            ),
            ("TLS_EXTENDED_MASTER_SECRET", "supports_ems_extension", True, "EMS supported", None),
            ("TLS_FALLBACK_SCSV", "supports_fallback_scsv", True, "fallback SCSV supported", None),
        ]
    observations = []
    for command, attr, want, expected, severity in items:
        probe = f"sslyze {command.lower()}: {attr}"
        if command == "TLS_1_3_EARLY_DATA" and not facts.versions.get("TLS 1.3"):
            observations.append(Observation(probe, "no TLS 1.3", expected, Status.PASS))
            continue
        result = facts.hygiene.get(command)
        if result is None:
            why = facts.errors.get(command, "not measured")
            observations.append(Observation(probe, why, expected, Status.INCONCLUSIVE))
            continue
        got = getattr(result, attr)
        how = getattr(result, "how", "")
        observed = f"{got}" + (f" ({how})" if how else "")
        status = Status.PASS if got == want else Status.FAIL
        observations.append(Observation(probe, observed, expected, status, severity))
    observations.append(_robot(facts))
    return Outcome.from_observations(control, observations, passed="no TLS hygiene problem")


def _robot(facts: TlsFacts) -> Observation:
    probe, expected = "sslyze robot", "not VULNERABLE_*"
    result = facts.hygiene.get("ROBOT")
    if result is None:
        why = facts.errors.get("ROBOT", "not measured")
        if facts.client_auth in ("REQUIRED", "OPTIONAL"):
            why += (
                "; sslyze cannot complete ROBOT's handshakes when the server asks for a "
                "client certificate (sslyze issue 484)"
            )
        return Observation(probe, why, expected, Status.INCONCLUSIVE)
    verdict = result.robot_result.value
    if verdict.startswith("VULNERABLE"):
        return Observation(probe, verdict, expected, Status.FAIL, Severity.CRITICAL)
    if verdict.startswith("UNKNOWN"):
        return Observation(probe, verdict, expected, Status.WARN, Severity.LOW)
    return Observation(probe, verdict, expected, Status.PASS)
