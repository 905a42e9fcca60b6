"""Minimum necessary and resource limits (164.502(b), 164.514(d), 164.308(a)(1)(ii)(B))."""

import pytest


@pytest.mark.hipaa_control("MIN-001")
def test_MIN_001_field_mask_honoured(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("MIN-002")
def test_MIN_002_responses_minimised_by_role(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("MIN-003")
def test_MIN_003_identifiers_tokenised(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("MIN-004")
def test_MIN_004_cache_honours_updates(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("LIMIT-002")
def test_LIMIT_002_rate_limits(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("LIMIT-003")
def test_LIMIT_003_export_and_page_bounds(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("LIMIT-001")
def test_LIMIT_001_size_limits(hipaa_verdict):
    hipaa_verdict.conclude()
