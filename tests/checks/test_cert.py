"""CERT-001 ... CERT-003 judges on recorded chains and handshakes, no server.

The certificates are made here (targets.pki's CA, or ``cryptography`` directly) and shaped
as other stacks present them: the root sent along with the leaf (common with Go and Java
servers), an IP-only SAN (Kubernetes service certificates), EdDSA and P-521 keys. The
judges decide by the certificates' contents and sslyze's recorded facts, never by a
stack's error strings.
"""

import datetime as dt
import ipaddress
import shutil
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.catalogue import Severity
from harness.checks.cert import (
    judge_bogus_sni,
    judge_days_left,
    judge_eku,
    judge_expected_sans,
    judge_hashes,
    judge_key_strength,
    judge_lifetime,
    judge_ocsp_pointer,
    judge_order,
    judge_path,
    judge_san,
    judge_serial,
    judge_staple,
    judge_validity,
    judge_version,
    judge_wildcards,
)
from harness.history import first_seen
from harness.outcome import Status
from harness.plans.tls import Handshake
from harness.tls import profile
from targets.pki import CertificateAuthority
from tests.checks.recorded import certs, declared, root, settled, statuses

STRICT = profile("hipaa-strict")
MODERN = profile("mozilla-modern")
INTERMEDIATE = profile("mozilla-intermediate")
NIST = profile("nist-800-52r2")
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def leaf(ca: CertificateAuthority) -> x509.Certificate:
    return certs(ca.issue(("localhost", "127.0.0.1")))[0]


def self_signed(key, *, aia: bool = False, names: tuple[str, ...] = ("svc.test",)):
    """A bare self-signed leaf with ``key``: no AIA unless asked, serverAuth EKU."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if aia:
        ocsp = x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.OCSP,
            x509.UniformResourceIdentifier("http://ocsp.test"),
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([ocsp]), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


# -- declared probes -------------------------------------------------------------------------


def test_declared_probes_follow_the_catalogue_rows():
    # CERT-001: one per bullet; the staple is looked for only under the mozilla-* profiles.
    assert declared("CERT-001") == [
        *((ref, True, ()) for ref in ("path", "order", "hash", "v3", "key", "ocsp")),
        ("staple", False, ()),
    ]
    # CERT-002: the bullets, tls.expected_sans when given, and the informational step 2.
    assert declared("CERT-002") == [
        ("san", True, ()),
        ("expected-sans", False, ("tls.expected_sans",)),
        ("wildcard", True, ()),
        ("eku", True, ()),
        ("bogus-sni", False, ()),
    ]
    # CERT-003: the bullets, each required; the serial comparison needs evidence.history_dir
    # and a second run, so it is optional (shown as not run, never passed on nothing).
    assert declared("CERT-003") == [
        ("validity", True, ()),
        ("lifetime", True, ()),
        ("expiry", True, ()),
        ("serial", False, ("evidence.history_dir",)),
    ]


# -- CERT-001 --------------------------------------------------------------------------------


def test_path_validates_to_the_configured_ca_and_not_to_another(ca, leaf):
    ok = judge_path([leaf], [root(ca)], "tls.ca_bundle ca.pem", "Supplied CA file: trusted")
    assert ok.status is Status.PASS
    assert "Supplied CA file: trusted" in ok.observed
    other = CertificateAuthority("someone else's CA")
    assert judge_path([leaf], [root(other)], "ca.pem", "").status is Status.FAIL


def test_path_is_judged_with_dates_and_names_set_aside(ca):
    expired = certs(
        ca.issue(
            ("wrong-host.test",), valid_from=-dt.timedelta(days=40), valid_for=dt.timedelta(30)
        )
    )
    assert judge_path(expired, [root(ca)], "ca.pem", "").status is Status.PASS


def test_a_chain_sent_with_its_root_and_an_ip_only_san_validate(ca):
    chain = [*certs(ca.issue(("10.0.0.7",))), root(ca)]  # as Go and Java servers often send it
    assert judge_path(chain, [root(ca)], "ca.pem", "").status is Status.PASS
    # The self-signed root's own signature carries no trust: only the leaf's hash is judged.
    assert len(judge_hashes(chain)) == 1


# -- CERT-001 on private chains as `openssl verify` and gRPC clients accept them -------------


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject, key, issuer=None, issuer_key=None, *, ca, days=(-1, 365), san=()):
    """A certificate as `openssl req -x509` / `openssl x509 -req` make them by default.

    CAs carry basicConstraints CA:TRUE and nothing else: no key usage, no key identifiers,
    which RFC 5280 clients accept and the CA/Browser Forum's WebPKI profile refuses.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        names = [
            x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
            for n in san
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def etcd_pki():
    """A root, an intermediate and an etcd-style leaf (localhost, 127.0.0.1; both EKUs)."""
    root_key, int_key, leaf_key = _key(), _key(), _key()
    root_ca = _cert("etcd-root-ca", root_key, ca=True, days=(-30, 3650))
    inter = _cert("etcd-intermediate-ca", int_key, root_ca, root_key, ca=True, days=(-30, 1000))
    leaf = _cert("etcd", leaf_key, inter, int_key, ca=False, san=("localhost", "127.0.0.1"))
    return SimpleNamespace(
        root=root_ca, inter=inter, leaf=leaf, root_key=root_key, int_key=int_key, leaf_key=leaf_key
    )


def test_an_intermediate_chain_without_key_usage_validates_as_openssl_verify_says(etcd_pki):
    """It failed before: cryptography's WebPKI rules want key usage on every CA."""
    p = etcd_pki
    obs = judge_path([p.leaf, p.inter], [p.root], "tls.ca_bundle ca.pem", "Supplied CA file: x")
    assert obs.status is Status.PASS
    assert obs.observed.startswith("valid to CN=etcd-root-ca")
    assert "WebPKI rules: fails" in obs.observed  # recorded, not judged
    if shutil.which("openssl"):  # the system's own `openssl verify` agrees
        assert _openssl_verify(p, [p.inter]) is True


def _openssl_verify(p, untrusted) -> bool:
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        files = {"root": p.root, "leaf": p.leaf}
        for name, cert in files.items():
            Path(d, name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        Path(d, "untrusted").write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in untrusted)
        )
        args = ["openssl", "verify", "-CAfile", f"{d}/root"]
        if untrusted:
            args += ["-untrusted", f"{d}/untrusted"]
        done = subprocess.run([*args, f"{d}/leaf"], capture_output=True, check=False)
    return done.returncode == 0


def test_an_intermediate_left_out_of_the_chain_fails(etcd_pki):
    p = etcd_pki
    obs = judge_path([p.leaf], [p.root], "ca.pem", "")
    assert obs.status is Status.FAIL
    assert "unable to get local issuer certificate" in obs.observed
    # The intermediate among the anchors completes it, as it would for a client.
    assert judge_path([p.leaf], [p.root, p.inter], "ca.pem", "").status is Status.PASS


def test_an_expired_intermediate_fails_and_names_it(etcd_pki):
    p = etcd_pki
    stale = _cert("stale-intermediate", p.int_key, p.root, p.root_key, ca=True, days=(-400, -30))
    leaf = _cert("etcd", p.leaf_key, stale, p.int_key, ca=False, san=("localhost",))
    obs = judge_path([leaf, stale], [p.root], "ca.pem", "")
    assert obs.status is Status.FAIL
    assert obs.observed.startswith("fails: CN=stale-intermediate outside its validity period")


def test_a_leaf_outliving_its_intermediate_is_judged_now_not_at_its_midpoint(etcd_pki):
    """A ten-year leaf under a 1000-day intermediate: valid now, so a path now."""
    p = etcd_pki
    long_leaf = _cert(
        "etcd", p.leaf_key, p.inter, p.int_key, ca=False, days=(-1, 3650), san=("localhost",)
    )
    assert judge_path([long_leaf, p.inter], [p.root], "ca.pem", "").status is Status.PASS


def test_a_leaf_without_any_san_has_a_path_and_leaves_names_to_cert_002(etcd_pki):
    p = etcd_pki
    bare = _cert("cn-only.test", p.leaf_key, p.inter, p.int_key, ca=False)
    obs = judge_path([bare, p.inter], [p.root], "ca.pem", "")
    assert obs.status is Status.PASS
    assert "WebPKI rules: not judged (the leaf has no SAN)" in obs.observed
    assert judge_san(bare, "cn-only.test").status is Status.FAIL  # CERT-002 fails it


def test_a_forged_chain_fails(etcd_pki):
    p = etcd_pki
    rogue_key = _key()
    rogue = _cert("etcd-intermediate-ca", rogue_key, p.root, rogue_key, ca=True)  # self-signed
    leaf = _cert("etcd", p.leaf_key, rogue, rogue_key, ca=False, san=("localhost",))
    obs = judge_path([leaf, rogue], [p.root], "ca.pem", "")
    assert obs.status is Status.FAIL
    assert "OpenSSL error" in obs.observed


@pytest.mark.parametrize(
    ("valid", "status"), [(True, Status.PASS), (False, Status.FAIL), (None, Status.INCONCLUSIVE)]
)
def test_chain_order(valid, status):
    assert judge_order(valid).status is status


@pytest.mark.skipif(shutil.which("openssl") is None, reason="SHA-1 leaves need openssl")
def test_a_sha1_signature_fails(ca):
    sha1 = certs(ca.issue(("localhost",), sha1=True))
    assert statuses(judge_hashes(sha1)) == [Status.FAIL]
    assert judge_hashes(sha1)[0].observed == "sha1"


def test_sha256_and_eddsa_signatures_pass(leaf):
    eddsa = self_signed(ed25519.Ed25519PrivateKey.generate())
    assert statuses(judge_hashes([leaf])) == [Status.PASS]
    assert [o.observed for o in judge_hashes([eddsa])] == ["none (EdDSA)"]


def test_the_leaf_is_v3(leaf):
    assert judge_version(leaf).status is Status.PASS


@pytest.mark.parametrize(
    ("key", "ecdsa_only", "status"),
    [
        ("rsa-1024", False, Status.FAIL),
        ("rsa-2048", False, Status.PASS),
        ("rsa-2048", True, Status.FAIL),
        ("ec-p256", True, Status.PASS),
    ],
)
def test_key_strength(ca, key, ecdsa_only, status):
    issued = certs(ca.issue(("localhost",), key=key))[0]
    assert judge_key_strength(issued, ecdsa_only).status is status


def test_other_strong_keys_warn_low():
    for key in (ec.generate_private_key(ec.SECP521R1()), ed25519.Ed25519PrivateKey.generate()):
        obs = judge_key_strength(self_signed(key), ecdsa_only=False)
        assert (obs.status, obs.severity) == (Status.WARN, Severity.LOW)
    weak = judge_key_strength(self_signed(ec.generate_private_key(ec.SECP192R1())), False)
    assert weak.status is Status.FAIL


def test_ocsp_pointer_missing_fails_or_warns_for_private_pki(leaf):
    key = ec.generate_private_key(ec.SECP256R1())
    assert judge_ocsp_pointer(leaf, required=True).status is Status.PASS
    assert judge_ocsp_pointer(self_signed(key, aia=True), required=True).status is Status.PASS
    assert judge_ocsp_pointer(self_signed(key), required=True).status is Status.FAIL
    assert judge_ocsp_pointer(self_signed(key), required=False).status is Status.WARN


def test_staple_warns_only_under_mozilla_profiles_and_is_not_run_elsewhere():
    assert judge_staple(None, STRICT).status is Status.SKIP
    missing = judge_staple(False, INTERMEDIATE)
    assert (missing.status, missing.severity) == (Status.WARN, Severity.LOW)
    assert judge_staple(True, MODERN).status is Status.PASS


def test_cert_001_settles_pass_without_a_staple_probe_under_hipaa_strict(ca, leaf):
    obs = [
        judge_path([leaf], [root(ca)], "ca.pem", "").of("path"),
        judge_order(True).of("order"),
        *[o.of("hash") for o in judge_hashes([leaf])],
        judge_version(leaf).of("v3"),
        judge_key_strength(leaf, False).of("key"),
        judge_ocsp_pointer(leaf, True).of("ocsp"),
        judge_staple(None, STRICT).of("staple"),
    ]
    assert settled("CERT-001", obs).status is Status.PASS
    assert settled("CERT-001", obs[1:]).status is Status.INCONCLUSIVE  # no path validation


# -- CERT-002 --------------------------------------------------------------------------------


def test_san_matching_ignores_the_cn_and_follows_rfc_6125(ca, leaf):
    assert judge_san(leaf, "localhost").status is Status.PASS
    assert judge_san(leaf, "127.0.0.1").status is Status.PASS
    assert judge_san(leaf, "wrong-host.hipaa.test").status is Status.FAIL
    wildcard = certs(ca.issue(("*.svc.test",)))[0]
    assert judge_san(wildcard, "api.svc.test").status is Status.PASS
    assert judge_san(wildcard, "a.b.svc.test").status is Status.FAIL


def test_expected_sans_each_present(leaf):
    obs = judge_expected_sans(leaf, ["localhost", "127.0.0.1", "api.internal"])
    assert statuses(obs) == [Status.PASS, Status.PASS, Status.FAIL]
    assert judge_expected_sans(leaf, []) == []


def test_wildcards_fail_unless_allowed(ca, leaf):
    wildcard = certs(ca.issue(("*.svc.test", "svc.test")))[0]
    assert judge_wildcards(leaf, allowed=False).status is Status.PASS
    assert judge_wildcards(wildcard, allowed=False).status is Status.FAIL
    assert judge_wildcards(wildcard, allowed=True).status is Status.PASS


def test_eku_needs_server_auth_and_no_any_usage(ca, leaf):
    assert judge_eku(leaf).status is Status.PASS
    client_only = certs(ca.issue(("localhost",), client=True))[0]
    assert judge_eku(client_only).status is Status.FAIL
    anything = certs(ca.issue(("localhost",), eku=x509.ObjectIdentifier("2.5.29.37.0")))[0]
    assert judge_eku(anything).status is Status.FAIL


def test_bogus_sni_is_recorded_and_an_unreached_port_does_not_pass(ca, leaf):
    der = leaf.public_bytes(serialization.Encoding.DER)
    other = certs(ca.issue(("default.test",)))[0].public_bytes(serialization.Encoding.DER)
    same = judge_bogus_sni(Handshake(("h2",), "h-7.invalid", "h2", peer_der=der), leaf)
    assert (same.status, same.observed) == (Status.PASS, "the same certificate")
    default = judge_bogus_sni(Handshake(("h2",), "h-7.invalid", "h2", peer_der=other), leaf)
    assert default.observed == "a different certificate"
    # Envoy and nginx with strict SNI refuse an unknown name: recorded.
    refused = judge_bogus_sni(Handshake(("h2",), "h-7.invalid", alert="UNRECOGNIZED_NAME"), leaf)
    assert refused.status is Status.PASS
    unreached = judge_bogus_sni(Handshake(("h2",), "h-7.invalid", unreached="refused"), leaf)
    assert unreached.status is Status.SKIP


def test_cert_002_settles_pass_without_its_optional_probes(leaf):
    obs = [
        judge_san(leaf, "localhost").of("san"),
        judge_wildcards(leaf, False).of("wildcard"),
        judge_eku(leaf).of("eku"),
    ]
    assert settled("CERT-002", obs).status is Status.PASS
    assert settled("CERT-002", obs[:2]).status is Status.INCONCLUSIVE  # no EKU judged


# -- CERT-003 --------------------------------------------------------------------------------


def test_an_expired_certificate_is_critical(ca):
    expired = certs(
        ca.issue(("localhost",), valid_from=-dt.timedelta(days=40), valid_for=dt.timedelta(30))
    )[0]
    validity = judge_validity(expired, NOW)
    assert (validity.status, validity.severity) == (Status.FAIL, Severity.CRITICAL)
    assert "(expired)" in validity.observed
    assert judge_days_left(expired, NOW, 14).status is Status.FAIL
    outcome = settled("CERT-003", [validity.of("validity")])
    assert (outcome.status, outcome.severity) == (Status.FAIL, Severity.CRITICAL)


def test_not_yet_valid_fails(ca):
    future = certs(ca.issue(("localhost",), valid_from=dt.timedelta(days=2)))[0]
    obs = judge_validity(future, NOW)
    assert (obs.status, obs.observed.endswith("(not yet valid)")) == (Status.FAIL, True)


@pytest.mark.parametrize(
    ("days", "prof", "status"),
    [
        (30, STRICT, Status.PASS),
        (100, STRICT, Status.WARN),
        (825, STRICT, Status.FAIL),
        (100, MODERN, Status.FAIL),
        (825, NIST, Status.PASS),
    ],
)
def test_lifetime_caps_per_profile(ca, days, prof, status):
    issued = certs(ca.issue(("localhost",), valid_for=dt.timedelta(days=days)))[0]
    assert judge_lifetime(issued, prof).status is status


def test_days_to_expiry_floor(ca):
    soon = certs(ca.issue(("localhost",), valid_for=dt.timedelta(days=10)))[0]
    assert judge_days_left(soon, NOW, 14).status is Status.FAIL
    assert judge_days_left(soon, NOW, 7).status is Status.PASS


def test_serial_history_through_the_history_dir(tmp_path, leaf):
    serial = format(leaf.serial_number, "x")
    first = first_seen(tmp_path, "cert-serials", [serial], NOW)[serial]
    assert judge_serial(serial, first, NOW, 366).status is Status.SKIP  # a first run
    assert judge_serial(serial, first, NOW + dt.timedelta(days=30), 366).status is Status.PASS
    later = NOW + dt.timedelta(days=400)
    again = first_seen(tmp_path, "cert-serials", [serial], later)[serial]
    assert again == first
    assert judge_serial(serial, again, later, 366).status is Status.FAIL
    unreadable = judge_serial(serial, "cert-serials.json is not JSON", NOW, 366)
    assert unreadable.status is Status.INCONCLUSIVE


def test_cert_003_shows_the_serial_comparison_it_could_not_make(tmp_path, leaf):
    obs = [
        judge_validity(leaf, NOW).of("validity"),
        judge_lifetime(leaf, STRICT).of("lifetime"),
        judge_days_left(leaf, NOW, 14).of("expiry"),
    ]
    without = settled("CERT-003", obs)
    assert without.status is Status.PASS
    (serial_probe,) = (p for p in without.probes if p.id == "CERT-003(serial)")
    assert (serial_probe.status, serial_probe.enable) == (Status.SKIP, "evidence.history_dir")
    serial = format(leaf.serial_number, "x")
    first = first_seen(tmp_path, "cert-serials", [serial], NOW - dt.timedelta(days=400))[serial]
    stale = [*obs, judge_serial(serial, first, NOW, 366).of("serial")]
    assert settled("CERT-003", stale).status is Status.FAIL
