"""Fixtures the judges' unit tests share."""

from __future__ import annotations

import pytest

from targets.pki import CertificateAuthority


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    """A test CA for the module's certificates (CERT, MTLS judges)."""
    return CertificateAuthority("judges' test CA")
