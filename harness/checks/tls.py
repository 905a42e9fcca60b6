"""Transport controls: TLS-001 ... TLS-006.

The facts come from one sslyze scan per run (:func:`harness.plans.tls.tls_facts`), shared
with the CERT and MTLS checks; ALPN, which sslyze does not test, is probed with Python's
``ssl`` (:func:`harness.plans.tls.handshake`). Each check wires those facts to pure judges
(``judge_*``: facts, profile and config values in, observations out); an sslyze
connectivity failure is an ERROR, never a verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check, warmup
from harness.errors import TargetError
from harness.oracles import UNREACHED
from harness.outcome import Observation, Outcome, Probe, Status, filed
from harness.plans.tls import (
    SCANNED,
    Handshake,
    early_scan,
    handshake,
    is_tls,
    run_profile,
    scan_error,
    scanned,
    tls_facts,
)
from harness.run import Run
from harness.tls import (
    EARLY_DATA,
    LEGACY_VERSIONS,
    RECOMMENDED_GROUPS,
    Profile,
    Suite,
    TlsFacts,
    group_bits,
    suite_parts,
)
from harness.transport import PrefaceProbe, PrefaceReply, classify_reply, probe_preface

# Scan a TLS target while the gRPC controls run: handshakes only, no call is made.
warmup(*SCANNED)(early_scan)

_EXPECTED_H2C = (
    "closed connection, TLS alert, or an HTTP/1.x error: never a cleartext HTTP/2 SETTINGS frame"
)
_CRITICAL_MARKS = ("NULL", "anon", "EXPORT", "RC4", "DES")


# -- TLS-001 ---------------------------------------------------------------------------------


@check(
    "TLS-001",
    needs_channel=False,
    probes=(
        Probe("1", "SSL 2.0, SSL 3.0, TLS 1.0 and TLS 1.1 refused (sslyze)"),
        Probe("2", "no cleartext HTTP/2 on the target port"),
        Probe(
            "3",
            "no cleartext HTTP/2 on tls.extra_ports",
            required=False,
            needs=("tls.extra_ports",),
        ),
    ),
)
def cleartext_refused(run: Run) -> Outcome:
    """No legacy protocol version and no cleartext HTTP/2 path to the service.

    (1) sslyze tries SSL 2.0, SSL 3.0, TLS 1.0 and TLS 1.1 with SNI = ``tls.server_name``;
    any accepted fails (critical). (2) On the target port and (3) on every
    ``tls.extra_ports`` entry, the harness opens TCP, sends the HTTP/2 client preface with
    an empty SETTINGS frame (prior-knowledge h2c), and reads the reply. A closed
    connection, a TLS alert or an HTTP/1.x error page passes and is recorded; a reply that
    starts with an HTTP/2 SETTINGS frame means gRPC is served in cleartext and fails. A port
    that cannot be reached is INCONCLUSIVE. A port that is cleartext h2c has no TLS to
    scan: (1) is then not made.
    """
    assert run.spec.host is not None
    assert run.spec.port is not None
    ports = h2c_ports(run.spec.port, run.config.get("tls.extra_ports", []))
    observations = [
        judge_h2c(port, _preface(run, port)).of("2" if port == run.spec.port else "3")
        for port in ports
    ]
    observations += filed("1", _legacy(run))
    return Outcome.from_observations(
        CATALOGUE["TLS-001"],
        observations,
        passed=f"no legacy TLS and no cleartext HTTP/2 on port(s) {', '.join(map(str, ports))}",
    )


def h2c_ports(port: int, extra: Iterable[int]) -> list[int]:
    """The ports the h2c preface goes to: the target's, then each extra one, once."""
    return list(dict.fromkeys([port, *extra]))


def _preface(run: Run, port: int) -> PrefaceProbe | str:
    assert run.spec.host is not None
    try:
        return probe_preface(run.spec.host, port, timeout=run.options.connect_timeout_s)
    except TargetError as exc:
        return str(exc)


def _legacy(run: Run) -> list[Observation]:
    if not is_tls(run):
        return [
            Observation(
                "sslyze legacy-version handshakes",
                "the port serves cleartext HTTP/2: no TLS to scan",
                "a TLS port",
                Status.SKIP,
            )
        ]
    facts = tls_facts(run)
    error = scan_error(facts)
    return [error] if error else judge_legacy_versions(facts)


def judge_h2c(port: int, reply: PrefaceProbe | str) -> Observation:
    """TLS-001 (2)/(3): the reply to the h2c preface (``str``: why the port was unreachable)."""
    probe = f"cleartext HTTP/2 preface + SETTINGS to port {port}"
    if isinstance(reply, str):
        return Observation(probe, reply, _EXPECTED_H2C, Status.INCONCLUSIVE)
    observed = reply.describe()
    if reply.serves_cleartext_h2:
        observed += ": ePHI would cross the network unencrypted"
        return Observation(probe, observed, _EXPECTED_H2C, Status.FAIL)
    return Observation(probe, observed, _EXPECTED_H2C, Status.PASS)


def judge_legacy_versions(facts: TlsFacts) -> list[Observation]:
    """TLS-001 (1): every legacy version refused; an unmeasured one is INCONCLUSIVE."""
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


# -- TLS-002 ---------------------------------------------------------------------------------


@check(
    "TLS-002",
    needs_channel=False,
    probes=(
        Probe("tls13", "TLS 1.3 supported"),
        Probe("tls12", "TLS 1.2 only where the profile allows it"),
    ),
)
def tls13_offered(run: Run) -> Outcome:
    """TLS 1.3 is offered; TLS 1.2 only where the profile allows it.

    From the sslyze scan: TLS 1.3 must be supported; under ``mozilla-modern`` TLS 1.2 must
    not be. The other profiles allow TLS 1.2 (``nist-800-52r2`` expects it): it is recorded.
    """
    facts = scanned(run)
    observations = [
        judge_tls13(facts).of("tls13"),
        judge_tls12(facts, run_profile(run)).of("tls12"),
    ]
    return Outcome.from_observations(CATALOGUE["TLS-002"], observations, passed="TLS 1.3 offered")


def judge_tls13(facts: TlsFacts) -> Observation:
    """TLS-002 (tls13): TLS 1.3 must be supported."""
    probe = f"sslyze TLS 1.3 handshakes, {facts.target}"
    got = facts.versions.get("TLS 1.3")
    if got is None:
        why = facts.errors.get("TLS 1.3", "not measured")
        return Observation(probe, why, "TLS 1.3 supported", Status.INCONCLUSIVE)
    observed = "supported" if got else "not supported"
    return Observation(probe, observed, "TLS 1.3 supported", Status.PASS if got else Status.FAIL)


def judge_tls12(facts: TlsFacts, prof: Profile) -> Observation:
    """TLS-002 (tls12): TLS 1.2 disabled under a profile without it, else recorded."""
    probe = f"sslyze TLS 1.2 handshakes, {facts.target}"
    got = facts.versions.get("TLS 1.2")
    measured = facts.errors.get("TLS 1.2", "not measured") if got is None else ""
    observed = measured or ("supported" if got else "not supported")
    if prof.tls12:
        # Either answer holds under this profile: the oracle needs no measurement.
        return Observation(probe, observed, f"allowed under {prof.name}", Status.PASS)
    expected = f"TLS 1.2 disabled ({prof.name})"
    if got is None:
        return Observation(probe, observed, expected, Status.INCONCLUSIVE)
    return Observation(probe, observed, expected, Status.FAIL if got else Status.PASS)


# -- TLS-003 ---------------------------------------------------------------------------------


@check(
    "TLS-003",
    needs_channel=False,
    probes=(
        Probe("tls12", "every accepted TLS 1.2 suite AEAD and in the profile's list"),
        Probe("tls13", "every accepted TLS 1.3 suite in the profile's list"),
    ),
)
def aead_only(run: Run) -> Outcome:
    """Only AEAD cipher suites, from the profile's list.

    Every suite sslyze saw accepted under TLS 1.2 and TLS 1.3 is judged by its bulk cipher:
    NULL, anon, EXPORT, RC4, DES or 3DES fail (critical); CBC or any other non-AEAD cipher
    fails (high); an AEAD cipher outside the profile's list (CCM without ``tls.allow_ccm``,
    ChaCha20 under ``tls.fips_required``, ARIA, Camellia) fails (high). A version sslyze saw
    refused has no suite to judge and holds. The key exchange of a suite is TLS-004's to
    judge. TLS 1.0 and 1.1 suites belong to TLS-001.
    """
    facts = scanned(run)
    prof = run_profile(run)
    observations = [
        *filed("tls12", judge_suites(facts, "TLS 1.2", prof)),
        *filed("tls13", judge_suites(facts, "TLS 1.3", prof)),
    ]
    return Outcome.from_observations(
        CATALOGUE["TLS-003"],
        observations,
        passed=f"every accepted suite is AEAD and in {prof.name}'s list",
    )


def judge_suites(facts: TlsFacts, version: str, prof: Profile) -> list[Observation]:
    """TLS-003: each suite accepted under ``version``, or why there is none to judge."""
    unjudged = _without_suites(
        facts,
        version,
        "only allowed suites accepted",
        f"{version} not supported: no suite accepted",
    )
    return unjudged or [
        judge_cipher(version, suite.name, prof) for suite in facts.suites.get(version, ())
    ]


def _without_suites(
    facts: TlsFacts, version: str, expected: str, unsupported: str
) -> list[Observation]:
    """TLS-003/004 when ``version`` has no accepted suite to judge, else ``[]``.

    Not measured: INCONCLUSIVE with sslyze's reason; not supported: a PASS, ``unsupported``
    saying why that holds.
    """
    probe = f"sslyze {version} suites"
    supported = facts.versions.get(version)
    if supported is None:
        why = facts.errors.get(version, "not measured")
        return [Observation(probe, why, "measured", Status.INCONCLUSIVE)]
    if not supported:
        return [Observation(probe, unsupported, expected, Status.PASS)]
    return []


def judge_cipher(version: str, name: str, prof: Profile) -> Observation:
    """TLS-003: one accepted suite against the profile's list (broken ciphers critical)."""
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


# -- TLS-004 ---------------------------------------------------------------------------------


@check(
    "TLS-004",
    needs_channel=False,
    probes=(
        Probe("exchange", "every TLS 1.2 suite ECDHE (DHE where allowed), none static"),
        Probe("keys", "ephemeral keys: ECDH >= 256 bits, DH >= 2048 bits"),
        Probe("groups", "no weak supported group"),
    ),
)
def forward_secrecy(run: Run) -> Outcome:
    """Forward secrecy and key-exchange strength.

    Every accepted TLS 1.2 suite must use ECDHE (or DHE where the profile allows it: never
    under ``hipaa-strict``); static RSA, ECDH and DH suites fail. Ephemeral keys must be at
    least 256-bit ECDH (X25519 and X448 count as strong) or 2048-bit DH, in TLS 1.2 and 1.3.
    No supported group may be weak (EC below 256 bits, finite-field below 2048 bits): the
    groups are tried at the highest version and, on a TLS 1.3 server, at TLS 1.2 too
    (sslyze tries them at TLS 1.3 only, where no weak group can be offered).
    Strong groups outside the recommended set (secp521r1, X448...) WARN (low) under the
    ``mozilla-*`` profiles and pass under the others.
    """
    facts = scanned(run)
    prof = run_profile(run)
    observations = [
        *filed("exchange", judge_exchanges(facts, prof)),
        *filed("keys", judge_key_sizes(facts)),
        *filed("groups", judge_groups(facts, prof)),
    ]
    return Outcome.from_observations(
        CATALOGUE["TLS-004"],
        observations,
        passed="every suite is forward-secret with strong groups",
    )


def judge_exchanges(facts: TlsFacts, prof: Profile) -> list[Observation]:
    """TLS-004 (exchange): each TLS 1.2 suite's key exchange is ephemeral and allowed."""
    kinds = "ECDHE or DHE" if prof.dhe else "ECDHE"
    unsupported = "TLS 1.2 not supported (TLS 1.3 exchanges are always ephemeral)"
    unjudged = _without_suites(facts, "TLS 1.2", kinds, unsupported)
    if unjudged:
        return unjudged
    out = []
    for suite in facts.suites.get("TLS 1.2", ()):
        exchange, _ = suite_parts(suite.name)
        probe = f"TLS 1.2 suite {suite.name}: key exchange"
        if exchange.startswith("ECDHE_") or (prof.dhe and exchange.startswith("DHE_")):
            out.append(Observation(probe, f"accepted: {exchange}", kinds, Status.PASS))
            continue
        why = "static key exchange: no forward secrecy"
        if exchange.startswith("DHE_"):
            why = f"DHE is not allowed under {prof.name}"
        out.append(Observation(probe, f"accepted: {exchange}, {why}", kinds, Status.FAIL))
    return out


def judge_key_sizes(facts: TlsFacts) -> list[Observation]:
    """TLS-004 (keys): the ephemeral key of every TLS 1.2 and 1.3 suite that has one."""
    out = []
    for version in ("TLS 1.2", "TLS 1.3"):
        for suite in facts.suites.get(version, ()):
            if suite.key_exchange is None and version == "TLS 1.2":
                continue  # static: (exchange) fails it
            out.append(judge_key(version, suite))
    return out


def judge_key(version: str, suite: Suite) -> Observation:
    """TLS-004 (keys): one suite's ephemeral key size."""
    probe = f"{version} suite {suite.describe()}"
    expected = "ECDH >= 256 bits (X25519, X448), DH >= 2048 bits"
    if suite.key_exchange == "ECDH":
        strong = (suite.curve or "").upper() in ("X25519", "X448") or (suite.key_size or 0) >= 256
    elif suite.key_exchange == "DH":
        strong = (suite.key_size or 0) >= 2048
    else:  # TLS 1.3 without a reported key share: ephemeral by design, groups judged apart
        return Observation(probe, "accepted (no key share reported)", expected, Status.PASS)
    status = Status.PASS if strong else Status.FAIL
    return Observation(probe, "accepted" if strong else "accepted: weak key", expected, status)


def judge_groups(facts: TlsFacts, prof: Profile) -> list[Observation]:
    """TLS-004 (groups): no weak group; strong ones outside the set WARN under mozilla-*."""
    if facts.groups is None:
        why = facts.errors.get("ELLIPTIC_CURVES", "not measured")
        return [Observation("sslyze supported groups", why, "measured", Status.INCONCLUSIVE)]
    if not facts.groups:
        observed = "sslyze found no supported group"
        return [Observation("sslyze supported groups", observed, "no weak group", Status.PASS)]
    out = []
    for group in facts.groups:
        bits = group_bits(group)
        probe = f"supported group {group}"
        floor = 2048 if group.startswith("ffdhe") else 256
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


# -- TLS-005 ---------------------------------------------------------------------------------


@check(
    "TLS-005",
    needs_channel=False,
    probes=(
        Probe("a", "offering h2: h2 selected, then one gRPC call gets a gRPC status"),
        Probe("b", "offering only http/1.1: recorded; HTTP/2 served anyway warns"),
        Probe("c", "offering no ALPN: recorded; HTTP/2 served anyway warns"),
    ),
)
def alpn_h2(run: Run) -> Outcome:
    """ALPN negotiates ``h2``.

    Three handshakes with Python's ``ssl`` (with the client certificate, if configured):
    (a) offering only ``h2``, which must be selected, followed by one gRPC call to the
    liveness method (any gRPC status will do; UNAVAILABLE or DEADLINE_EXCEEDED is
    INCONCLUSIVE); (b) offering only ``http/1.1``; (c) offering no ALPN. After (b) and (c)
    the harness sends the HTTP/2 preface: a server that answers with HTTP/2 although ``h2``
    was not negotiated WARNs (low); a refused handshake, a connection closed during it or
    an HTTP/1.x error is recorded as a pass.
    """
    scanned(run)  # SKIP on a cleartext port; ERROR when the target's TLS cannot be scanned
    h2 = handshake(run, alpn=("h2",))
    http1 = handshake(run, alpn=("http/1.1",), preface=True)
    bare = handshake(run, alpn=(), preface=True)
    observations = [
        judge_h2_selected(h2).of("a"),
        judge_without_h2("(b) offering http/1.1", http1).of("b"),
        judge_without_h2("(c) offering no ALPN", bare).of("c"),
        judge_grpc_status(run.liveness, _liveness_call(run)).of("a"),
    ]
    return Outcome.from_observations(CATALOGUE["TLS-005"], observations, passed="ALPN selects h2")


def _liveness_call(run: Run) -> CallResult | str:
    if problem := run.channel_problem():
        return problem
    return run.call(run.liveness, (b"",), timeout=run.options.connect_timeout_s)


def judge_h2_selected(hs: Handshake) -> Observation:
    """TLS-005 (a): offering only ``h2``, the server must select it."""
    probe, expected = "TLS handshake (a) offering h2", "h2 selected"
    if hs.unreached or hs.closed:
        observed = f"connection failed ({hs.unreached or hs.closed})"
        return Observation(probe, observed, expected, Status.INCONCLUSIVE)
    if hs.alert:
        return Observation(probe, f"handshake refused ({hs.alert})", expected, Status.FAIL)
    status = Status.PASS if hs.selected == "h2" else Status.FAIL
    return Observation(probe, f"selected {hs.selected or 'nothing'}", expected, status)


def judge_without_h2(label: str, hs: Handshake) -> Observation:
    """TLS-005 (b)/(c): recorded; HTTP/2 served although ``h2`` was not negotiated WARNs."""
    probe = f"TLS handshake {label}"
    expected = "recorded; HTTP/2 served without h2 warns"
    if hs.unreached:
        return Observation(probe, hs.unreached, expected, Status.INCONCLUSIVE)
    if hs.alert:
        return Observation(probe, f"handshake refused ({hs.alert})", expected, Status.PASS)
    if hs.closed:
        observed = f"connection closed during the handshake ({hs.closed})"
        return Observation(probe, observed, expected, Status.PASS)
    observed = f"selected {hs.selected or 'nothing'}"
    reply = hs.reply or b""
    if classify_reply(reply) is PrefaceReply.H2_SETTINGS:
        observed += "; answered the HTTP/2 preface with SETTINGS (HTTP/2 served without h2)"
        return Observation(probe, observed, expected, Status.WARN, Severity.LOW)
    what = "closed" if not reply else f"first bytes {reply[:16].hex(' ')}"
    return Observation(probe, f"{observed}; HTTP/2 preface: {what}", expected, Status.PASS)


def judge_grpc_status(method: str, result: CallResult | str) -> Observation:
    """TLS-005 (a): the call over h2 gets a gRPC status (``str``: why none was made)."""
    probe = f"(a) one gRPC call over h2: {method}"
    expected = "a gRPC status from the service"
    if isinstance(result, str):
        return Observation(probe, result, expected, Status.INCONCLUSIVE)
    status = Status.INCONCLUSIVE if result.code in UNREACHED else Status.PASS
    return Observation(probe, result.summary(), expected, status, request_id=result.request_id)


# -- TLS-006 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One TLS-006 item: an sslyze result attribute and the value it must have."""

    ref: str
    command: str
    attr: str
    want: bool
    expected: str
    severity: Severity | None = None


_CRIT = Severity.CRITICAL
_HYGIENE = (
    Item("compression", "TLS_COMPRESSION", "supports_compression", False, "compression off"),
    Item("early-data", EARLY_DATA, "supports_early_data", False, "0-RTT early data refused"),
)
#: The items that exist only below TLS 1.3, judged where such a version is enabled
#: (Heartbleed and CCS injection are flaws of OpenSSL 1.0.1, which has no TLS 1.3).
_BELOW_13 = (
    Item(
        "heartbleed",
        "HEARTBLEED",
        "is_vulnerable_to_heartbleed",
        False,
        "not vulnerable to Heartbleed",
        _CRIT,
    ),
    Item(
        "ccs",
        "OPENSSL_CCS_INJECTION",
        "is_vulnerable_to_ccs_injection",
        False,
        "no CCS injection",
        _CRIT,
    ),
    Item(
        "renegotiation",
        "SESSION_RENEGOTIATION",
        "supports_secure_renegotiation",
        True,
        "secure reneg.",
    ),
    Item(
        "renegotiation",
        "SESSION_RENEGOTIATION",
        "is_vulnerable_to_client_renegotiation_dos",
        False,
        "client-initiated renegotiation refused",
    ),
    Item("ems", "TLS_EXTENDED_MASTER_SECRET", "supports_ems_extension", True, "EMS supported"),
    Item(
        "fallback", "TLS_FALLBACK_SCSV", "supports_fallback_scsv", True, "fallback SCSV supported"
    ),
)


@check(
    "TLS-006",
    needs_channel=False,
    probes=(
        Probe("heartbleed", "not vulnerable to Heartbleed"),
        Probe("ccs", "not vulnerable to OpenSSL CCS injection"),
        Probe("robot", "ROBOT not VULNERABLE_*"),
        Probe("compression", "TLS compression off"),
        Probe("renegotiation", "secure renegotiation; client-initiated renegotiation refused"),
        Probe("ems", "extended master secret supported"),
        Probe("fallback", "fallback SCSV supported where a version below TLS 1.3 is enabled"),
        Probe("early-data", "TLS 1.3 0-RTT early data refused"),
    ),
)
def protocol_hygiene(run: Run) -> Outcome:
    """TLS protocol hygiene, from sslyze's vulnerability and behaviour probes.

    Not vulnerable to Heartbleed or CCS injection, ROBOT not ``VULNERABLE_*`` (each of
    these critical); compression off; secure renegotiation supported and client-initiated
    renegotiation refused; extended master secret supported; fallback SCSV supported (the
    last three only where a version below TLS 1.3 is enabled: with none, they hold); TLS
    1.3 0-RTT early data refused, probed with ``openssl s_client`` offering ALPN h2
    (:mod:`harness.early_data`: sslyze's probe offers no ALPN, and gRPC servers issue a
    session ticket only to a client that offers h2). On a
    server that speaks TLS 1.3, what sslyze infers there is measured at the highest version
    below it (:func:`harness.tls.measure_below_13`): EMS on a handshake of the harness's
    own (sslyze answers "supported" untested), Heartbleed and CCS injection by sslyze's
    probes run at that version (it answers "not vulnerable" from the version alone), and
    the fallback SCSV on a handshake at that version (sslyze sends it on TLS 1.1, whose
    refusal, without TLS 1.1, it takes for support). Heartbleed and CCS injection, like
    the other items below TLS 1.3, hold where no such version is enabled. Compression and
    renegotiation are sslyze's answers only where its legacy client completes a TLS 1.2
    handshake (it reads a refusal as no compression and sound renegotiation). A probe that
    errors is INCONCLUSIVE with its reason.
    """
    facts = scanned(run)
    observations = [*judge_hygiene(facts), judge_robot(facts).of("robot")]
    return Outcome.from_observations(
        CATALOGUE["TLS-006"], observations, passed="no TLS hygiene problem"
    )


def below_tls13(facts: TlsFacts) -> bool | None:
    """Whether a version below TLS 1.3 is enabled (``None``: not all were measured)."""
    seen = [facts.versions.get(v) for v in ("TLS 1.2", *LEGACY_VERSIONS)]
    if any(seen):
        return True
    return None if None in seen else False


def judge_hygiene(facts: TlsFacts) -> list[Observation]:
    """TLS-006: every item but ROBOT, each filed under its probe."""
    out = [judge_item(facts, item).of(item.ref) for item in _HYGIENE]
    below = below_tls13(facts)
    for item in _BELOW_13:
        if below is False:
            observed = "no version below TLS 1.3 is enabled"
            obs = Observation(_item_probe(item), observed, item.expected, Status.PASS)
        else:
            obs = judge_item(facts, item)
        out.append(obs.of(item.ref))
    return out


def _item_probe(item: Item) -> str:
    if item.command == EARLY_DATA:
        return f"0-RTT with openssl s_client, ALPN h2: {item.attr}"
    return f"sslyze {item.command.lower()}: {item.attr}"


def judge_item(facts: TlsFacts, item: Item) -> Observation:
    """TLS-006: one sslyze result attribute against the value it must have."""
    probe, expected = _item_probe(item), item.expected
    if item.command == EARLY_DATA and facts.versions.get("TLS 1.3") is False:
        return Observation(probe, "no TLS 1.3", expected, Status.PASS)
    result = facts.hygiene.get(item.command)
    if result is None:
        why = facts.errors.get(item.command, "not measured")
        return Observation(probe, why, expected, Status.INCONCLUSIVE)
    got = getattr(result, item.attr)
    how = getattr(result, "how", "")
    observed = f"{got}" + (f" ({how})" if how else "")
    status = Status.PASS if got == item.want else Status.FAIL
    return Observation(probe, observed, expected, status, item.severity)


def judge_robot(facts: TlsFacts) -> Observation:
    """TLS-006 (robot): not ``VULNERABLE_*`` (critical); an ``UNKNOWN_*`` verdict warns."""
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
