"""pytest-hipaa-grpc: evidence that a gRPC service meets the HIPAA technical safeguards.

The core (this package, minus :mod:`harness.plugin`) does not import pytest, so the
command line, the fuzz runner and the report writers reuse it unchanged.
"""

__version__ = "0.1.0"
