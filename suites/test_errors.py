"""Error hygiene: sanitised, uniform errors (164.312(a)(1), 164.312(d))."""

import pytest


@pytest.mark.hipaa_control("ERR-001")
def test_ERR_001_errors_sanitised(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("ERR-002")
def test_ERR_002_errors_uniform(hipaa_verdict):
    hipaa_verdict.conclude()
