"""The transport suite (TLS-*, CERT-*, MTLS-*) beyond the detection matrix: a non-Python
TLS server, ports that are not TLS at all, and the pure helpers behind the verdicts."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import control_statuses
from harness.checks.cert import dns_name_matches
from harness.tls import group_bits, profile, suite_parts
from targets.pki import CertificateAuthority

TRANSPORT = "TLS or CERT or MTLS"


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", ("ECDHE_RSA", "AES_128_GCM")),
        ("TLS_RSA_WITH_AES_256_CBC_SHA", ("RSA", "AES_256_CBC")),
        ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", ("ECDHE_ECDSA", "CHACHA20_POLY1305")),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", ("ECDHE_ECDSA", "AES_128_CCM_8")),
    ],
)
def test_suite_names_split_into_exchange_and_cipher(name, parts):
    assert suite_parts(name) == parts


def test_group_sizes():
    assert group_bits("X25519") == 256
    assert group_bits("secp224r1") == 224
    assert group_bits("brainpoolP512r1") == 512
    assert group_bits("ffdhe2048") == 2048
    assert group_bits("mystery") is None


def test_profiles_differ_where_the_catalogue_says():
    strict, modern, nist = (
        profile("hipaa-strict"),
        profile("mozilla-modern"),
        profile("nist-800-52r2"),
    )
    assert strict.tls12
    assert not modern.tls12
    assert "CHACHA20_POLY1305" in strict.tls12_ciphers
    assert "CHACHA20_POLY1305" not in nist.tls12_ciphers
    assert "CHACHA20_POLY1305" not in profile("hipaa-strict", fips_required=True).tls12_ciphers
    assert "AES_128_CCM" in profile("hipaa-strict", allow_ccm=True).tls12_ciphers
    assert (strict.max_lifetime_days, modern.max_lifetime_days, nist.max_lifetime_days) == (
        366,
        90,
        1095,
    )
    assert not strict.dhe
    assert profile("mozilla-intermediate-5.7").dhe


@pytest.mark.parametrize(
    ("pattern", "host", "ok"),
    [
        ("api.example.org", "API.example.org", True),
        ("*.example.org", "api.example.org", True),
        ("*.example.org", "a.b.example.org", False),
        ("*.example.org", "example.org", False),
        ("*.org", "example.org", False),
        ("api*.example.org", "api1.example.org", False),
        ("*.0.0.1", "127.0.0.1", False),
    ],
)
def test_rfc6125_matching(pattern, host, ok):
    assert dns_name_matches(pattern, host) is ok


@pytest.mark.parametrize("behaviour", ["silent", "garbage"])
def test_a_port_that_is_not_tls_is_an_error_with_one_line(pytester, tcp_server, behaviour):
    def serve(conn: socket.socket) -> None:
        if behaviour == "garbage":
            conn.sendall(b"\x00garbage that is neither TLS nor HTTP/2\r\n" * 4)
        time.sleep(1)

    port = tcp_server(serve)
    result = pytester.runpytest(f"--hipaa-target=127.0.0.1:{port}", "-k", TRANSPORT, "-n0")
    text = result.stdout.str()
    assert "Traceback" not in text
    statuses = dict(
        line.split()[:2] for line in text.splitlines() if line[:4] in ("TLS-", "CERT", "MTLS")
    )
    assert {c: s for c, s in statuses.items() if not c.startswith("MTLS")} == dict.fromkeys(
        [f"TLS-00{i}" for i in range(1, 7)] + ["CERT-001", "CERT-002", "CERT-003"], "ERROR"
    )
    # A port that speaks neither TLS nor HTTP/2 fails the run's setup: everything ERRORs.
    assert {statuses["MTLS-001"], statuses["MTLS-002"]} <= {"SKIP", "ERROR"}


@pytest.fixture
def openssl_server(tmp_path: Path):
    """``openssl s_server`` (not Python, not grpcio) on TLS 1.2 only, with a certificate
    from a CA the config trusts."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command on this machine")
    ca = CertificateAuthority("s_server test CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    ca.issue(("localhost", "127.0.0.1")).write(tmp_path, "server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            *(openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-no_tls1_3", "-alpn", "h2"),
            *("-cert", "server.pem", "-key", "server-key.pem", "-quiet"),
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    (tmp_path / "hipaa.toml").write_text(
        '[tls]\nserver_name = "localhost"\nca_bundle = "ca.pem"\nrequire_ocsp = true\n'
    )
    yield port, tmp_path / "hipaa.toml"
    proc.kill()
    proc.wait(5)


def test_openssl_s_server_is_judged_on_its_own_terms(pytester, openssl_server):
    port, config = openssl_server
    statuses = control_statuses(
        pytester,
        f"--hipaa-target=127.0.0.1:{port}",
        f"--hipaa-config={config}",
        "-k",
        TRANSPORT,
        "-n0",
    )
    assert statuses["TLS-002"] == "FAIL"  # started with -no_tls1_3
    assert statuses["TLS-005"] == "INCONCLUSIVE"  # h2 selected, but no gRPC behind it
    for control in ("TLS-001", "CERT-001", "CERT-002", "CERT-003"):
        assert statuses[control] == "PASS", control
    # A port that speaks neither TLS nor HTTP/2 fails the run's setup: everything ERRORs.
    assert {statuses["MTLS-001"], statuses["MTLS-002"]} <= {"SKIP", "ERROR"}
