"""Certificate controls: CERT-001 ... CERT-003.

The chain is the one the server sent during the sslyze scan. The verdicts come from the
``cryptography`` package: its X.509 path validation (the WebPKI rules) against the
configured CA bundle, or against sslyze's copy of the Mozilla root store when none is
given. sslyze's own path validation is recorded as evidence beside it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check
from harness.history import HistoryError, first_seen
from harness.outcome import Observation, Outcome, Status
from harness.plans.tls import run_profile, scanned, tls_facts
from harness.run import Run
from harness.transport import client_context, connect

#: ``tls.min_days_to_expiry`` when the config does not set it.
MIN_DAYS_TO_EXPIRY = 14
_WEAK_HASHES = ("md5", "sha1", "sha224")
_ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")


def _chain(run: Run, control_id: str) -> list[x509.Certificate] | Outcome:
    """The presented chain, leaf first, or the outcome that explains why there is none."""
    facts = scanned(run, control_id)
    if isinstance(facts, Outcome):
        return facts
    if not facts.chain_der:
        return Outcome.inconclusive(CATALOGUE[control_id], "sslyze received no certificate")
    return [x509.load_der_x509_certificate(der) for der in facts.chain_der]


def _anchors(run: Run) -> tuple[list[x509.Certificate], str]:
    bundle = run.config.path("tls.ca_bundle")
    if bundle is not None:
        return x509.load_pem_x509_certificates(bundle.read_bytes()), f"tls.ca_bundle {bundle}"
    from sslyze.plugins.certificate_info.trust_stores.trust_store_repository import (
        TrustStoresRepository,
    )

    store = TrustStoresRepository.get_default().get_main_store()
    return x509.load_pem_x509_certificates(store.path.read_bytes()), "the Mozilla root store"


def _leaf_names(leaf: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return dns, ips


def _path_validation(run: Run, chain: list[x509.Certificate]) -> Observation:
    """Chain to a configured anchor, judged with dates and names set aside (CERT-002/003)."""
    leaf = chain[0]
    anchors, source = _anchors(run)
    dns, ips = _leaf_names(leaf)
    subject: verification.DNSName | verification.IPAddress
    if dns:
        subject = verification.DNSName(dns[0])
    elif ips:
        subject = verification.IPAddress(ipaddress.ip_address(ips[0]))
    else:
        return Observation(
            "path validation", "the leaf has no SAN to validate against", "a SAN", Status.FAIL
        )
    moment = leaf.not_valid_before_utc + (leaf.not_valid_after_utc - leaf.not_valid_before_utc) / 2
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
    expected = f"a valid path to {source} (cryptography's X.509 verification)"
    evidence = f"sslyze: {tls_facts(run).sslyze_trust or 'no verdict'}"
    try:
        verified = builder.build_server_verifier(subject).verify(leaf, chain[1:])
    except verification.VerificationError as exc:
        return Observation("path validation", f"fails: {exc}; {evidence}", expected, Status.FAIL)
    root = verified[-1].subject.rfc4514_string()
    return Observation("path validation", f"valid to {root}; {evidence}", expected, Status.PASS)


@check("CERT-001", needs_channel=False)
def chain_and_strength(run: Run) -> Outcome:
    """Chain trust, signature hashes, key strength and the OCSP pointer.

    The chain the server presented must validate to ``tls.ca_bundle`` (or the Mozilla
    roots) under ``cryptography``'s X.509 verification, with validity dates and names set
    aside (CERT-003 and CERT-002 judge those); it must be sent in order; every certificate
    in it must be signed with SHA-256 or stronger; the leaf must be X.509 v3 with an RSA key
    of at least 2048 bits or an EC P-256/P-384 key (other strong keys WARN; RSA fails under
    ``mozilla-modern``); its AIA must carry an OCSP URL (a WARN instead of a FAIL with
    ``tls.require_ocsp = false``); under the ``mozilla-*`` profiles a missing trusted OCSP
    staple WARNs (low).
    """
    control = CATALOGUE["CERT-001"]
    chain = _chain(run, "CERT-001")
    if isinstance(chain, Outcome):
        return chain
    facts = tls_facts(run)
    prof = run_profile(run)
    leaf = chain[0]
    observations = [_path_validation(run, chain)]
    order = facts.chain_order_valid
    observations.append(
        Observation(
            "chain order (sslyze)",
            "valid" if order else "invalid" if order is False else "unknown",
            "leaf first, each certificate signed by the next",
            Status.FAIL if order is False else Status.PASS,
        )
    )
    for cert in chain:
        if cert.issuer == cert.subject and cert is not leaf:
            continue  # a self-signed root's own signature carries no trust
        alg = cert.signature_hash_algorithm
        name = alg.name if alg is not None else "none (EdDSA)"
        weak = alg is not None and alg.name in _WEAK_HASHES
        observations.append(
            Observation(
                f"signature hash of {cert.subject.rfc4514_string()}",
                name,
                "SHA-256 or stronger",
                Status.FAIL if weak else Status.PASS,
            )
        )
    observations.append(
        Observation(
            "leaf version",
            leaf.version.name,
            "v3",
            Status.PASS if leaf.version is x509.Version.v3 else Status.FAIL,
        )
    )
    observations.append(_key_strength(leaf, prof.ecdsa_only))
    observations.append(_ocsp_pointer(leaf, bool(run.config.get("tls.require_ocsp", True))))
    if prof.staple:
        stapled = bool(facts.ocsp_staple_trusted)
        observations.append(
            Observation(
                "OCSP staple",
                "trusted staple" if stapled else "none",
                f"a trusted staple ({prof.name})",
                Status.PASS if stapled else Status.WARN,
                None if stapled else Severity.LOW,
            )
        )
    return Outcome.from_observations(
        control, observations, passed="trusted chain, SHA-256+ signatures, strong key, OCSP URL"
    )


def _key_strength(leaf: x509.Certificate, ecdsa_only: bool) -> Observation:
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


def _ocsp_pointer(leaf: x509.Certificate, required: bool) -> Observation:
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


@check("CERT-002", needs_channel=False)
def server_identity(run: Run) -> Outcome:
    """Server identity: SAN and EKU.

    A dNSName or iPAddress SAN must match ``tls.server_name`` (the target host when unset)
    by RFC 6125 rules: the CN is ignored, a wildcard stands for exactly one whole left-most
    label and never matches an IP address. Every ``tls.expected_sans`` entry must be present;
    no wildcard unless ``tls.allow_wildcard``; the EKU must include id-kp-serverAuth and not
    anyExtendedKeyUsage. A second handshake with a bogus SNI (``h-<N>.invalid``) records
    which certificate a client with a wrong name would get.
    """
    control = CATALOGUE["CERT-002"]
    chain = _chain(run, "CERT-002")
    if isinstance(chain, Outcome):
        return chain
    leaf = chain[0]
    dns, ips = _leaf_names(leaf)
    assert run.spec.host is not None
    name = run.config.str_("tls.server_name") or run.spec.host
    sans = ", ".join(dns + ips) or "none"
    expected = f"a SAN matching {name} (RFC 6125, CN ignored)"
    matched = any(dns_name_matches(pattern, name) for pattern in dns) or name in ips
    observations = [
        Observation(
            "SAN vs tls.server_name",
            f"SANs {sans}",
            expected,
            Status.PASS if matched else Status.FAIL,
        )
    ]
    for wanted in run.config.str_list("tls.expected_sans"):
        present = wanted in dns or wanted in ips
        observations.append(
            Observation(
                f"expected SAN {wanted}",
                "present" if present else "missing",
                "present",
                Status.PASS if present else Status.FAIL,
            )
        )
    wildcards = [d for d in dns if "*" in d]
    if wildcards and not run.config.get("tls.allow_wildcard", False):
        observations.append(Observation("wildcard SANs", ", ".join(wildcards), "none", Status.FAIL))
    observations.append(_eku(leaf))
    observations.append(_bogus_sni(run, leaf))
    return Outcome.from_observations(
        control, observations, passed=f"the certificate names {name} and is for server auth"
    )


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


def _eku(leaf: x509.Certificate) -> Observation:
    expected = "EKU with id-kp-serverAuth, without anyExtendedKeyUsage"
    try:
        usages = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return Observation("extended key usage", "no EKU extension", expected, Status.FAIL)
    names = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages)
    ok = ExtendedKeyUsageOID.SERVER_AUTH in usages and _ANY_EKU not in usages
    return Observation("extended key usage", names, expected, Status.PASS if ok else Status.FAIL)


def _bogus_sni(run: Run, leaf: x509.Certificate) -> Observation:
    assert run.spec.host is not None
    assert run.spec.port is not None
    sni = f"h-{run.options.seed}.invalid"
    probe = f"handshake with SNI {sni} (informational)"
    ctx = client_context(
        ca_pem=None,
        verify=False,
        client_cert_pem=run.endpoint.client_cert_pem,
        client_key_pem=run.endpoint.client_key_pem,
    )
    try:
        with (
            connect(run.spec.host, run.spec.port, run.options.connect_timeout_s) as sock,
            ctx.wrap_socket(sock, server_hostname=sni) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return Observation(probe, f"refused ({exc})", "recorded", Status.PASS)
    from cryptography.hazmat.primitives.serialization import Encoding

    same = der == leaf.public_bytes(Encoding.DER)
    observed = "the same certificate" if same else "a different certificate"
    return Observation(probe, observed, "recorded", Status.PASS)


@check("CERT-003", needs_channel=False)
def lifetime(run: Run) -> Outcome:
    """Lifetime, expiry window and rotation of the leaf.

    Now must lie within notBefore..notAfter (critical otherwise); the lifetime must not
    exceed the profile's cap (366 days under ``hipaa-strict`` and ``mozilla-intermediate``,
    WARN above 90; 90 under ``mozilla-modern``; 1095 under ``nist-800-52r2``); at least
    ``tls.min_days_to_expiry`` days (default 14) must remain. With ``evidence.history_dir``
    the leaf's serial is recorded there, and a serial seen for longer than the cap fails.
    """
    control = CATALOGUE["CERT-003"]
    chain = _chain(run, "CERT-003")
    if isinstance(chain, Outcome):
        return chain
    leaf = chain[0]
    prof = run_profile(run)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    window = f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
    observations = []
    valid_now = start <= now <= end
    observations.append(
        Observation(
            "validity period",
            window + ("" if valid_now else (" (expired)" if now > end else " (not yet valid)")),
            "now within notBefore..notAfter",
            Status.PASS if valid_now else Status.FAIL,
            None if valid_now else Severity.CRITICAL,
        )
    )
    days = (end - start).total_seconds() / 86400
    cap = prof.max_lifetime_days
    expected = f"<= {cap} days ({prof.name})"
    if days > cap:
        observations.append(Observation("lifetime", f"{days:.0f} days", expected, Status.FAIL))
    elif prof.warn_lifetime_days is not None and days > prof.warn_lifetime_days:
        observed = f"{days:.0f} days (above the recommended {prof.warn_lifetime_days})"
        observations.append(Observation("lifetime", observed, expected, Status.WARN, Severity.LOW))
    else:
        observations.append(Observation("lifetime", f"{days:.0f} days", expected, Status.PASS))
    if valid_now:
        floor = int(run.config.get("tls.min_days_to_expiry", MIN_DAYS_TO_EXPIRY))
        left = (end - now).total_seconds() / 86400
        observations.append(
            Observation(
                "days to expiry",
                f"{left:.1f}",
                f">= {floor} (tls.min_days_to_expiry)",
                Status.PASS if left >= floor else Status.FAIL,
            )
        )
    history = run.config.get("evidence.history_dir")
    if history:
        observations.append(_rotation(Path(history), leaf, now, cap))
    return Outcome.from_observations(control, observations, passed=f"valid now, {days:.0f} days")


def _rotation(directory: Path, leaf: x509.Certificate, now: dt.datetime, cap: int) -> Observation:
    """Record the serial in ``cert-serials.json`` and judge how long it has been seen."""
    serial = format(leaf.serial_number, "x")
    try:
        first = first_seen(directory, "cert-serials", [serial], now)[serial]
    except HistoryError as exc:
        return Observation("serial history", str(exc), "readable and writable", Status.INCONCLUSIVE)
    age = (now - first).days
    expected = f"the same serial seen for <= {cap} days"
    status = Status.PASS if age <= cap else Status.FAIL
    return Observation(
        "serial history", f"serial {serial} first seen {age} day(s) ago", expected, status
    )
