"""Surface: reflection and admin services (45 CFR 164.312(a)(1), 164.308(a)(1)(ii)(B))."""

import pytest


@pytest.mark.hipaa_control("REFL-001")
def test_REFL_001_reflection_disabled(hipaa_verdict):
    hipaa_verdict.conclude()


@pytest.mark.hipaa_control("REFL-002")
def test_REFL_002_admin_services_not_exposed(hipaa_verdict):
    hipaa_verdict.conclude()
