"""Fuzzing controls (FUZZ-*): what the service does with inputs nobody should send.

:mod:`~harness.checks.fuzz.inputs` holds FUZZ-001 (schema-aware property fuzzing) and
FUZZ-002 (wire-level mutation, white-box Atheris); :mod:`~harness.checks.fuzz.framing`
holds FUZZ-003 (gRPC framing and HTTP/2 transport abuse).
"""
