"""Transport: encryption in transit, and authentication of the endpoints.

45 CFR 164.312(e)(1), (e)(2)(i), (e)(2)(ii) and 164.312(d).
"""

import pytest


@pytest.mark.hipaa_control("TLS-001")
def test_TLS_001_cleartext_and_legacy_refused(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("TLS-002")
def test_TLS_002_tls13_offered(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("TLS-003")
def test_TLS_003_aead_only(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("TLS-004")
def test_TLS_004_forward_secrecy(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("TLS-005")
def test_TLS_005_alpn_h2(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("TLS-006")
def test_TLS_006_protocol_hygiene(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("CERT-001")
def test_CERT_001_chain_and_strength(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("CERT-002")
def test_CERT_002_server_identity(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("CERT-003")
def test_CERT_003_lifetime(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("MTLS-001")
def test_MTLS_001_client_cert_required(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("MTLS-002")
def test_MTLS_002_invalid_client_certs_rejected(hipaa_verdict):
    hipaa_verdict.conclude()
