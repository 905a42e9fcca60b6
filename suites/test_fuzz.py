"""Fuzzing: malformed and extreme inputs (164.308(a)(8), 164.312(c)(1))."""

import pytest


@pytest.mark.hipaa_control("FUZZ-001")
def test_FUZZ_001_schema_aware_property_fuzzing(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("FUZZ-002")
def test_FUZZ_002_wire_mutation_and_atheris(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("FUZZ-003")
def test_FUZZ_003_framing_and_http2_abuse(hipaa_verdict):
    hipaa_verdict.conclude()
