"""TLS facts sslyze infers on a server that speaks TLS 1.3, measured on real servers.

sslyze answers Heartbleed and CCS injection "not vulnerable" from TLS 1.3 support alone,
tries supported groups at TLS 1.3 only, sends the fallback SCSV on TLS 1.1 (whose refusal,
on a server without TLS 1.1, it takes for support), and answers EMS "supported" untested.
The scan measures each at the highest version below TLS 1.3 (``harness.tls``): here against
the bundled reference (grpcio, BoringSSL) and etcd 3.4 (Go 1.19's crypto/tls), both TLS
1.2 and 1.3.
"""

from __future__ import annotations

import shutil

import pytest

from harness.plans.tls import tls_facts
from harness.tls import ScanTarget, TlsFacts, scan
from tests.test_etcd import Pki, pki, start_etcd  # noqa: F401  (etcd's fixtures)

pytestmark = pytest.mark.slow


def _measured_below_13(facts: TlsFacts) -> None:
    """What every TLS 1.2 + 1.3 server's scan holds: the inferred facts, measured at 1.2."""
    assert facts.problem == ""
    assert (facts.versions["TLS 1.2"], facts.versions["TLS 1.3"]) == (True, True)
    for command, attr in (
        ("HEARTBLEED", "is_vulnerable_to_heartbleed"),
        ("OPENSSL_CCS_INJECTION", "is_vulnerable_to_ccs_injection"),
    ):
        result = facts.hygiene[command]
        assert getattr(result, attr) is False, command
        assert result.how.startswith("sslyze's probe at TLS 1.2"), command
    assert facts.hygiene["TLS_FALLBACK_SCSV"].supports_fallback_scsv is True
    assert facts.groups is not None
    assert "secp256r1" in facts.groups


def _measured_with(facts: TlsFacts, scsv_answer: str, ems: bool) -> None:
    """Measured below 1.3, with this server's answer to the SCSV (in its ``how``) and EMS."""
    _measured_below_13(facts)
    assert scsv_answer in facts.hygiene["TLS_FALLBACK_SCSV"].how
    assert facts.hygiene["TLS_EXTENDED_MASTER_SECRET"].supports_ems_extension is ems


def test_the_reference_measured_below_tls13(reference_run):
    # BoringSSL ends the TLS 1.2 handshake that carries the SCSV; without it, it completes.
    _measured_with(tls_facts(reference_run), "without it accepted", ems=True)


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
def test_etcd_measured_below_tls13(start_etcd, pki: Pki):  # noqa: F811
    server = start_etcd()
    target = ScanTarget("127.0.0.1", server.port, "localhost", pki.root, None, None, 3.0)
    # Go's crypto/tls answers the SCSV with the RFC 7507 alert; it never negotiates EMS
    # before Go 1.21 (TLS-006 FAILs on that alone: tests/test_etcd.py).
    _measured_with(scan(target), "alert inappropriate_fallback", ems=False)


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
def test_etcd_with_client_certificates_measured_below_tls13(start_etcd, pki: Pki):  # noqa: F811
    server = start_etcd("--client-cert-auth", f"--trusted-ca-file={pki.root}")
    target = ScanTarget(
        "127.0.0.1", server.port, "localhost", pki.root, pki.client, pki.client_key, 3.0
    )
    facts = scan(target)
    assert facts.client_auth == "REQUIRED"
    _measured_below_13(facts)  # sslyze's probes made again with the client certificate
