"""``manifest.json`` (versions, config hash, target, times, operator) and ``SHA256SUMS``."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from harness import __version__
from harness.reporting.model import Json, Results

PACKAGES = (
    "pytest-hipaa-grpc",
    "pytest",
    "grpcio",
    "protobuf",
    "sslyze",
    "hypothesis",
    "atheris",
    "PyJWT",
    "cryptography",
)


def versions() -> dict[str, str | None]:
    """The harness's and its dependencies' installed versions, and Python's."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def manifest(results: Results, config: Mapping[str, Any]) -> Json:
    """``manifest.json``: versions, the config's SHA-256, target, times, operator."""
    canonical = json.dumps(config, sort_keys=True, default=str).encode()
    run = results.run
    return {
        "report_id": results.report_id,
        "harness_version": __version__,
        "versions": versions(),
        "config_sha256": hashlib.sha256(canonical).hexdigest(),
        "target": run.target,
        "profile": run.profile,
        "started": run.started,
        "finished": run.finished,
        "operator": run.operator,
    }


def sha256sums(files: Mapping[str, bytes], extra: Iterable[str] = ()) -> bytes:
    """``SHA256SUMS``: one line per file (sorted by name), then ``extra`` lines."""
    lines = [f"{hashlib.sha256(blob).hexdigest()}  {name}" for name, blob in sorted(files.items())]
    return ("\n".join([*lines, *extra]) + "\n").encode()


def attested_sums(results: Results) -> list[str]:
    """The evidence hashes of the attestations, as ``SHA256SUMS`` lines."""
    return [
        f"{c.attestation.evidence_sha256}  attestation:{c.id}:{c.attestation.evidence}"
        for c in results.controls
        if c.attestation
    ]
