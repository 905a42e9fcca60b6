"""Transport: encryption in transit (45 CFR 164.312(e)(1), (e)(2)(ii))."""

import pytest


@pytest.mark.hipaa_control("TLS-001")
def test_TLS_001_cleartext_and_legacy_refused(hipaa_verdict):
    hipaa_verdict.conclude()
