"""Certificate controls: CERT-001 ... CERT-003.

The chain is the one the server sent during the sslyze scan. Its path is validated by
OpenSSL (:func:`harness.tls.verify_path`: the RFC 5280 rules of ``openssl verify`` and of
gRPC's TLS stacks) against the configured CA bundle, or against sslyze's copy of the
Mozilla root store when none is given; the verdicts of the WebPKI profile (``cryptography``,
and sslyze, which uses it) are recorded as evidence beside it, since they refuse private
chains TLS clients accept. The rest comes from the ``cryptography`` package. Each check reads
the chain and the config, then hands them to pure judges (``judge_*``: certificates and
values in, observations out).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check
from harness.history import HistoryError, first_seen
from harness.outcome import CannotObserve, Observation, Outcome, Probe, Status, filed
from harness.plans.tls import Handshake, handshake, run_profile, scanned
from harness.run import Run
from harness.tls import DATE_ERRORS, Profile, TlsFacts, verify_path

#: ``tls.min_days_to_expiry`` when the config does not set it.
MIN_DAYS_TO_EXPIRY = 14
_WEAK_HASHES = ("md5", "sha1", "sha224")
_ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")


def _chain(run: Run) -> tuple[TlsFacts, list[x509.Certificate]]:
    """The scan's facts and the presented chain, leaf first.

    Raises:
        NotApplicable: the port is cleartext (from :func:`harness.plans.tls.scanned`).
        ScanFailed: sslyze could not scan.
        CannotObserve: the server sent no certificate.
    """
    facts = scanned(run)
    if not facts.chain_der:
        raise CannotObserve("sslyze received no certificate")
    return facts, [x509.load_der_x509_certificate(der) for der in facts.chain_der]


def _anchors(run: Run) -> tuple[list[x509.Certificate], str]:
    bundle = run.config.path("tls.ca_bundle")
    if bundle is not None:
        return x509.load_pem_x509_certificates(bundle.read_bytes()), f"tls.ca_bundle {bundle}"
    from sslyze.plugins.certificate_info.trust_stores.trust_store_repository import (
        TrustStoresRepository,
    )

    store = TrustStoresRepository.get_default().get_main_store()
    return x509.load_pem_x509_certificates(store.path.read_bytes()), "the Mozilla root store"


def leaf_names(leaf: x509.Certificate) -> tuple[list[str], list[str]]:
    """The leaf's dNSName and iPAddress SANs."""
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return dns, ips


# -- CERT-001 --------------------------------------------------------------------------------


@check(
    "CERT-001",
    needs_channel=False,
    probes=(
        Probe("path", "path validation to the configured anchors"),
        Probe("order", "the chain is sent in order"),
        Probe("hash", "every leaf and intermediate signed with SHA-256 or stronger"),
        Probe("v3", "the leaf is X.509 v3"),
        Probe("key", "RSA >= 2048 or EC P-256/P-384 (ECDSA only under mozilla-modern)"),
        Probe("ocsp", "an OCSP URL in the AIA (WARN with tls.require_ocsp = false)"),
        Probe("staple", "a trusted OCSP staple (mozilla-* profiles; WARN)", required=False),
    ),
)
def chain_and_strength(run: Run) -> Outcome:
    """Chain trust, signature hashes, key strength and the OCSP pointer.

    The chain the server presented must validate to ``tls.ca_bundle`` (or the Mozilla
    roots) under OpenSSL's RFC 5280 verification, as TLS clients validate it, with the
    leaf's validity dates and names set aside (CERT-003 and CERT-002 judge those); it must
    be sent in order; every certificate
    in it must be signed with SHA-256 or stronger; the leaf must be X.509 v3 with an RSA key
    of at least 2048 bits or an EC P-256/P-384 key (other strong keys WARN; RSA fails under
    ``mozilla-modern``); its AIA must carry an OCSP URL (a WARN instead of a FAIL with
    ``tls.require_ocsp = false``); under the ``mozilla-*`` profiles a missing trusted OCSP
    staple WARNs (low).
    """
    facts, chain = _chain(run)
    prof = run_profile(run)
    anchors, source = _anchors(run)
    leaf = chain[0]
    observations = [
        judge_path(chain, anchors, source, facts.sslyze_trust).of("path"),
        judge_order(facts.chain_order_valid).of("order"),
        *filed("hash", judge_hashes(chain)),
        judge_version(leaf).of("v3"),
        judge_key_strength(leaf, prof.ecdsa_only).of("key"),
        judge_ocsp_pointer(leaf, bool(run.config.get("tls.require_ocsp", True))).of("ocsp"),
        judge_staple(facts.ocsp_staple_trusted, prof).of("staple"),
    ]
    return Outcome.from_observations(
        CATALOGUE["CERT-001"],
        observations,
        passed="trusted chain, SHA-256+ signatures, strong key, OCSP URL",
    )


def judge_path(
    chain: list[x509.Certificate],
    anchors: list[x509.Certificate],
    source: str,
    sslyze: str,
    now: dt.datetime | None = None,
) -> Observation:
    """CERT-001 (path): a path to ``anchors`` under RFC 5280, as ``openssl verify`` finds it.

    OpenSSL checks a certificate's dates after every signature up to it, the leaf's last:
    a chain refused only for the leaf's own dates has a path (CERT-003 judges those dates),
    while an intermediate or root outside its validity fails here. Names are CERT-002's.
    The WebPKI profile's verdict (``cryptography``) and ``sslyze``'s are recorded beside it.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    check = verify_path([_pem(c) for c in chain], [_pem(a) for a in anchors])
    expected = f"a valid path to {source} (OpenSSL's RFC 5280 verification)"
    evidence = (
        f"WebPKI rules: {webpki_verdict(chain, anchors, now)}; sslyze: {sslyze or 'no verdict'}"
    )
    if check.verified:
        top = x509.load_pem_x509_certificate(check.path[-1].encode()).subject.rfc4514_string()
        return Observation("path validation", f"valid to {top}; {evidence}", expected, Status.PASS)
    observed = f"fails: {check.error} (OpenSSL error {check.code}); {evidence}"
    if check.code in DATE_ERRORS:
        stale = [c.subject.rfc4514_string() for c in _issuers(chain, anchors) if not _valid(c, now)]
        if stale:
            observed = f"fails: {', '.join(stale)} outside its validity period; {evidence}"
        elif not _valid(chain[0], now):
            observed = (
                "valid but for the leaf's own validity dates, which OpenSSL checks last "
                f"(CERT-003 judges them); {evidence}"
            )
            return Observation("path validation", observed, expected, Status.PASS)
    return Observation("path validation", observed, expected, Status.FAIL)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


def _valid(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _issuers(
    chain: list[x509.Certificate], anchors: list[x509.Certificate]
) -> list[x509.Certificate]:
    """The CA certificates a path from ``chain[0]`` may go through: sent, or anchors named."""
    named = {c.issuer for c in chain}
    return [*chain[1:], *(a for a in anchors if a.subject in named and a not in chain)]


def webpki_verdict(
    chain: list[x509.Certificate], anchors: list[x509.Certificate], now: dt.datetime
) -> str:
    """The CA/Browser Forum WebPKI profile's verdict (``cryptography``), as evidence.

    Stricter than RFC 5280 (key usage required on CAs, key identifiers...): a private PKI
    need not meet it. Judged at ``now`` moved into the leaf's validity, for the leaf's first
    SAN.
    """
    leaf = chain[0]
    dns, ips = leaf_names(leaf)
    subject: verification.DNSName | verification.IPAddress
    if dns:
        subject = verification.DNSName(dns[0])
    elif ips:
        subject = verification.IPAddress(ipaddress.ip_address(ips[0]))
    else:
        return "not judged (the leaf has no SAN)"
    moment = min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)
    ee = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None
    )
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store(anchors))
        .time(moment)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee
        )
    )
    try:
        builder.build_server_verifier(subject).verify(leaf, chain[1:])
    except (verification.VerificationError, ValueError) as exc:
        return f"fails ({exc})"
    return "valid"


def judge_order(valid: bool | None) -> Observation:
    """CERT-001 (order): sslyze's view of the received chain's order."""
    expected = "leaf first, each certificate signed by the next"
    if valid is None:
        return Observation("chain order (sslyze)", "unknown", expected, Status.INCONCLUSIVE)
    status = Status.PASS if valid else Status.FAIL
    return Observation("chain order (sslyze)", "valid" if valid else "invalid", expected, status)


def judge_hashes(chain: Iterable[x509.Certificate]) -> list[Observation]:
    """CERT-001 (hash): the signature hash of the leaf and every intermediate."""
    certs = list(chain)
    out = []
    for cert in certs:
        if cert.issuer == cert.subject and cert is not certs[0]:
            continue  # a self-signed root's own signature carries no trust
        alg = cert.signature_hash_algorithm
        name = alg.name if alg is not None else "none (EdDSA)"
        weak = alg is not None and alg.name in _WEAK_HASHES
        out.append(
            Observation(
                f"signature hash of {cert.subject.rfc4514_string()}",
                name,
                "SHA-256 or stronger",
                Status.FAIL if weak else Status.PASS,
            )
        )
    return out


def judge_version(leaf: x509.Certificate) -> Observation:
    """CERT-001 (v3): the leaf is an X.509 v3 certificate."""
    ok = leaf.version is x509.Version.v3
    return Observation("leaf version", leaf.version.name, "v3", Status.PASS if ok else Status.FAIL)


def judge_key_strength(leaf: x509.Certificate, ecdsa_only: bool) -> Observation:
    """CERT-001 (key): RSA >= 2048 or EC P-256/P-384; other strong keys WARN (low)."""
    key = leaf.public_key()
    expected = "RSA >= 2048 bits or EC P-256/P-384" + (" (ECDSA only)" if ecdsa_only else "")
    if isinstance(key, rsa.RSAPublicKey):
        observed = f"RSA {key.key_size} bits"
        if key.key_size < 2048:
            return Observation("leaf key", observed, expected, Status.FAIL)
        if ecdsa_only:
            return Observation("leaf key", f"{observed}: not ECDSA", expected, Status.FAIL)
        return Observation("leaf key", observed, expected, Status.PASS)
    if isinstance(key, ec.EllipticCurvePublicKey):
        observed = f"EC {key.curve.name}"
        if key.curve.name in ("secp256r1", "secp384r1"):
            return Observation("leaf key", observed, expected, Status.PASS)
        if key.curve.key_size >= 256:
            return Observation("leaf key", observed, expected, Status.WARN, Severity.LOW)
        return Observation("leaf key", observed, expected, Status.FAIL)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return Observation("leaf key", type(key).__name__, expected, Status.WARN, Severity.LOW)
    return Observation("leaf key", type(key).__name__, expected, Status.FAIL)


def judge_ocsp_pointer(leaf: x509.Certificate, required: bool) -> Observation:
    """CERT-001 (ocsp): an OCSP URL in the AIA (a WARN when ``tls.require_ocsp = false``)."""
    expected = "an OCSP URL in the AIA" + ("" if required else " (tls.require_ocsp = false)")
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        urls = [
            str(d.access_location.value)
            for d in aia
            if d.access_method == AuthorityInformationAccessOID.OCSP
        ]
    except x509.ExtensionNotFound:
        urls = []
    if urls:
        return Observation("OCSP pointer", ", ".join(urls), expected, Status.PASS)
    status = Status.FAIL if required else Status.WARN
    return Observation("OCSP pointer", "none", expected, status)


def judge_staple(trusted: bool | None, prof: Profile) -> Observation:
    """CERT-001 (staple): under ``mozilla-*`` a missing trusted staple WARNs; else not run."""
    if not prof.staple:
        observed = f"not expected under {prof.name}"
        return Observation("OCSP staple", observed, "a mozilla-* --hipaa-profile", Status.SKIP)
    expected = f"a trusted staple ({prof.name})"
    if trusted:
        return Observation("OCSP staple", "trusted staple", expected, Status.PASS)
    return Observation("OCSP staple", "none", expected, Status.WARN, Severity.LOW)


# -- CERT-002 --------------------------------------------------------------------------------


@check(
    "CERT-002",
    needs_channel=False,
    probes=(
        Probe("san", "a dNSName or iPAddress SAN matches tls.server_name (RFC 6125)"),
        Probe(
            "expected-sans",
            "every tls.expected_sans entry present",
            required=False,
            needs=("tls.expected_sans",),
        ),
        Probe("wildcard", "no wildcard SAN unless tls.allow_wildcard"),
        Probe("eku", "EKU has id-kp-serverAuth and not anyExtendedKeyUsage"),
        Probe("bogus-sni", "handshake with SNI h-<N>.invalid (informational)", required=False),
    ),
)
def server_identity(run: Run) -> Outcome:
    """Server identity: SAN and EKU.

    A dNSName or iPAddress SAN must match ``tls.server_name`` (the target host when unset)
    by RFC 6125 rules: the CN is ignored, a wildcard stands for exactly one whole left-most
    label and never matches an IP address. Every ``tls.expected_sans`` entry must be present;
    no wildcard unless ``tls.allow_wildcard``; the EKU must include id-kp-serverAuth and not
    anyExtendedKeyUsage. A second handshake with a bogus SNI (``h-<N>.invalid``) records
    which certificate a client with a wrong name would get.
    """
    _, chain = _chain(run)
    leaf = chain[0]
    assert run.spec.host is not None
    name = run.config.str_("tls.server_name") or run.spec.host
    bogus = handshake(run, alpn=("h2",), sni=f"h-{run.options.seed}.invalid")
    observations = [
        judge_san(leaf, name).of("san"),
        *filed(
            "expected-sans", judge_expected_sans(leaf, run.config.str_list("tls.expected_sans"))
        ),
        judge_wildcards(leaf, bool(run.config.get("tls.allow_wildcard", False))).of("wildcard"),
        judge_eku(leaf).of("eku"),
        judge_bogus_sni(bogus, leaf).of("bogus-sni"),
    ]
    return Outcome.from_observations(
        CATALOGUE["CERT-002"],
        observations,
        passed=f"the certificate names {name} and is for server auth",
    )


def judge_san(leaf: x509.Certificate, name: str) -> Observation:
    """CERT-002 (san): a SAN matches ``name`` by RFC 6125 (the CN is ignored)."""
    dns, ips = leaf_names(leaf)
    sans = ", ".join(dns + ips) or "none"
    expected = f"a SAN matching {name} (RFC 6125, CN ignored)"
    matched = any(dns_name_matches(pattern, name) for pattern in dns) or name in ips
    status = Status.PASS if matched else Status.FAIL
    return Observation("SAN vs tls.server_name", f"SANs {sans}", expected, status)


def judge_expected_sans(leaf: x509.Certificate, wanted: Iterable[str]) -> list[Observation]:
    """CERT-002 (expected-sans): each wanted name is a SAN of the leaf."""
    dns, ips = leaf_names(leaf)
    out = []
    for name in wanted:
        present = name in dns or name in ips
        out.append(
            Observation(
                f"expected SAN {name}",
                "present" if present else "missing",
                "present",
                Status.PASS if present else Status.FAIL,
            )
        )
    return out


def judge_wildcards(leaf: x509.Certificate, allowed: bool) -> Observation:
    """CERT-002 (wildcard): no wildcard dNSName unless ``tls.allow_wildcard``."""
    wildcards = [d for d in leaf_names(leaf)[0] if "*" in d]
    expected = "none" + (" (or any, with tls.allow_wildcard)" if allowed else "")
    if not wildcards:
        return Observation("wildcard SANs", "none", expected, Status.PASS)
    observed = ", ".join(wildcards)
    return Observation("wildcard SANs", observed, expected, Status.PASS if allowed else Status.FAIL)


def dns_name_matches(pattern: str, host: str) -> bool:
    """RFC 6125 section 6.4 matching of one dNSName against a host name."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if not pattern.startswith("*.") or "*" in pattern[1:]:
        return False
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        pass
    label, _, rest = host.partition(".")
    return bool(label) and rest == pattern[2:] and rest.count(".") >= 1


def judge_eku(leaf: x509.Certificate) -> Observation:
    """CERT-002 (eku): id-kp-serverAuth present, anyExtendedKeyUsage absent."""
    expected = "EKU with id-kp-serverAuth, without anyExtendedKeyUsage"
    try:
        usages = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return Observation("extended key usage", "no EKU extension", expected, Status.FAIL)
    names = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages)
    ok = ExtendedKeyUsageOID.SERVER_AUTH in usages and _ANY_EKU not in usages
    return Observation("extended key usage", names, expected, Status.PASS if ok else Status.FAIL)


def judge_bogus_sni(hs: Handshake, leaf: x509.Certificate) -> Observation:
    """CERT-002 (bogus-sni): which certificate a wrong server name gets; informational."""
    probe = f"handshake with SNI {hs.sni} (informational)"
    if hs.unreached:
        return Observation(probe, hs.unreached, "a TCP connection", Status.SKIP)
    if not hs.completed:
        return Observation(probe, f"refused ({hs.alert or hs.closed})", "recorded", Status.PASS)
    same = hs.peer_der == leaf.public_bytes(Encoding.DER)
    observed = "the same certificate" if same else "a different certificate"
    return Observation(probe, observed, "recorded", Status.PASS)


# -- CERT-003 --------------------------------------------------------------------------------


@check(
    "CERT-003",
    needs_channel=False,
    probes=(
        Probe("validity", "now within notBefore..notAfter (critical)"),
        Probe("lifetime", "notAfter - notBefore within the profile's cap"),
        Probe("expiry", "at least tls.min_days_to_expiry days left"),
        # Optional: it compares runs (a history and a second run); its absence is shown.
        Probe(
            "serial",
            "the leaf's serial not seen for longer than the cap (evidence.history_dir)",
            required=False,
            needs=("evidence.history_dir",),
        ),
    ),
)
def lifetime(run: Run) -> Outcome:
    """Lifetime, expiry window and rotation of the leaf.

    Now must lie within notBefore..notAfter (critical otherwise); the lifetime must not
    exceed the profile's cap (366 days under ``hipaa-strict`` and ``mozilla-intermediate``,
    WARN above 90; 90 under ``mozilla-modern``; 1095 under ``nist-800-52r2``); at least
    ``tls.min_days_to_expiry`` days (default 14) must remain. The leaf's serial is recorded
    in ``evidence.history_dir``, and a serial seen for longer than the cap fails; without
    that directory the comparison cannot be made and the control is INCONCLUSIVE.
    """
    _, chain = _chain(run)
    leaf = chain[0]
    prof = run_profile(run)
    now = dt.datetime.now(dt.timezone.utc)
    floor = int(run.config.get("tls.min_days_to_expiry", MIN_DAYS_TO_EXPIRY))
    observations = [
        judge_validity(leaf, now).of("validity"),
        judge_lifetime(leaf, prof).of("lifetime"),
        judge_days_left(leaf, now, floor).of("expiry"),
    ]
    history = run.config.get("evidence.history_dir")
    if history:
        serial = format(leaf.serial_number, "x")
        seen = _first_seen(Path(history), serial, now)
        observations.append(judge_serial(serial, seen, now, prof.max_lifetime_days).of("serial"))
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() / 86400
    return Outcome.from_observations(
        CATALOGUE["CERT-003"], observations, passed=f"valid now, {days:.0f} days"
    )


def _first_seen(directory: Path, serial: str, now: dt.datetime) -> dt.datetime | str:
    """When ``serial`` was first seen, recording it now if new (``str``: why unknown)."""
    try:
        return first_seen(directory, "cert-serials", [serial], now)[serial]
    except HistoryError as exc:
        return str(exc)


def judge_validity(leaf: x509.Certificate, now: dt.datetime) -> Observation:
    """CERT-003 (validity): ``now`` within notBefore..notAfter; critical otherwise."""
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    window = f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
    expected = "now within notBefore..notAfter"
    if start <= now <= end:
        return Observation("validity period", window, expected, Status.PASS)
    window += " (expired)" if now > end else " (not yet valid)"
    return Observation("validity period", window, expected, Status.FAIL, Severity.CRITICAL)


def judge_lifetime(leaf: x509.Certificate, prof: Profile) -> Observation:
    """CERT-003 (lifetime): within the profile's cap; above its recommendation WARNs."""
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() / 86400
    cap = prof.max_lifetime_days
    expected = f"<= {cap} days ({prof.name})"
    if days > cap:
        return Observation("lifetime", f"{days:.0f} days", expected, Status.FAIL)
    if prof.warn_lifetime_days is not None and days > prof.warn_lifetime_days:
        observed = f"{days:.0f} days (above the recommended {prof.warn_lifetime_days})"
        return Observation("lifetime", observed, expected, Status.WARN, Severity.LOW)
    return Observation("lifetime", f"{days:.0f} days", expected, Status.PASS)


def judge_days_left(leaf: x509.Certificate, now: dt.datetime, floor: int) -> Observation:
    """CERT-003 (expiry): at least ``floor`` days left (none left when expired)."""
    left = (leaf.not_valid_after_utc - now).total_seconds() / 86400
    expected = f">= {floor} (tls.min_days_to_expiry)"
    status = Status.PASS if left >= floor else Status.FAIL
    return Observation("days to expiry", f"{left:.1f}", expected, status)


def judge_serial(serial: str, first: dt.datetime | str, now: dt.datetime, cap: int) -> Observation:
    """CERT-003 (serial): the serial first seen ``first`` (``str``: why unknown) <= cap days."""
    if isinstance(first, str):
        return Observation("serial history", first, "readable and writable", Status.INCONCLUSIVE)
    age = (now - first).days
    expected = f"the same serial seen for <= {cap} days"
    if first >= now:  # new to the history: a first run shows nothing about its age
        return Observation(
            "serial history",
            f"serial {serial} first seen in this run",
            "an earlier run in evidence.history_dir to compare with",
            Status.SKIP,
        )
    status = Status.PASS if age <= cap else Status.FAIL
    return Observation(
        "serial history", f"serial {serial} first seen {age} day(s) ago", expected, status
    )
