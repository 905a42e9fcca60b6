"""Access control: authentication (164.312(d)) and authorization (164.312(a)(1))."""

import pytest


@pytest.mark.hipaa_control("AUTHN-001")
def test_AUTHN_001_credentials_required_on_every_method(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHN-002")
def test_AUTHN_002_algorithm_allowlist(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHN-003")
def test_AUTHN_003_signature_integrity(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHN-004")
def test_AUTHN_004_key_selection_headers_ignored(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHN-005")
def test_AUTHN_005_time_claims_and_lifetime(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHN-006")
def test_AUTHN_006_audience_and_issuer(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHN-007")
def test_AUTHN_007_token_type(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHN-008")
def test_AUTHN_008_mfa_for_privileged_methods(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHZ-001")
def test_AUTHZ_001_rbac_matrix(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHZ-002")
def test_AUTHZ_002_object_level_authorization(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHN-009")
def test_AUTHN_009_streams_end_when_credentials_expire(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHZ-003")
def test_AUTHZ_003_no_escalation_or_side_effects(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHZ-004")
def test_AUTHZ_004_per_message_authorization_on_streams(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("AUTHZ-005")
def test_AUTHZ_005_break_glass_constrained_and_flagged(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("KEY-001")
def test_KEY_001_signing_keys_public_strong_rotated(hipaa_verdict):
    hipaa_verdict.conclude()
