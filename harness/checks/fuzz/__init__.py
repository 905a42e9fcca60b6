"""Fuzzing controls (FUZZ-*): what the service does with inputs nobody should send.

:mod:`~harness.checks.fuzz.inputs` holds FUZZ-001 (schema-aware property fuzzing; probes
``inputs`` and ``health``) and FUZZ-002 (wire-level mutation, ``black-box``; Atheris
in-process, ``white-box``); :mod:`~harness.checks.fuzz.framing` holds FUZZ-003 (gRPC
framing and HTTP/2 transport abuse, probes (a) to (h)). Each plans, sends, and judges
apart; the judges are pure functions of what came back, tested in tests/checks/test_fuzz.py.
"""
