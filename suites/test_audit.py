"""Audit controls and redaction (164.312(b), 164.312(c), 164.502(b))."""

import pytest


@pytest.mark.hipaa_control("AUDIT-001")
def test_AUDIT_001_every_access_audited(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUDIT-002")
def test_AUDIT_002_event_content_complete_and_injection_safe(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUDIT-003")
def test_AUDIT_003_failures_audited_and_alerted(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUDIT-004")
def test_AUDIT_004_timestamps_accurate(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUDIT-005")
def test_AUDIT_005_hash_chain_verifies(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUDIT-006")
def test_AUDIT_006_append_only(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("REDACT-001")
def test_REDACT_001_no_phi_in_logs(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("REDACT-002")
def test_REDACT_002_no_phi_in_audit(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("REDACT-003")
def test_REDACT_003_no_phi_in_errors_or_metadata(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("REDACT-004")
def test_REDACT_004_no_secrets_in_logs(hipaa_verdict):
    hipaa_verdict.conclude()
