"""Bundled gRPC services the harness can spawn: a compliant reference and its broken variants."""
