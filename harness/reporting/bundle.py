"""The bundle: its files with EVID-001 decided by a self-scan, the atomic write, ``verify``.

:func:`bundle_files` decides EVID-001 by self-scanning ``results.json`` for bearer tokens,
private keys and canaries, renders every view from the finished :class:`Results`, and
hashes them into ``SHA256SUMS``. :func:`write_bundle` swaps the directory in whole;
:func:`verify` serves ``hipaa-grpc report verify``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.canary import holds_standalone
from harness.catalogue import Severity
from harness.outcome import Status
from harness.reporting.figures import Trend, record_of
from harness.reporting.html import render_html
from harness.reporting.intoto import ENVELOPE
from harness.reporting.junit import render_junit
from harness.reporting.manifest import attested_sums, manifest, sha256sums
from harness.reporting.markdown import render_summary
from harness.reporting.model import READABLE_SCHEMAS, Evidence, Json, Results
from harness.reporting.redact import JWT, known_secrets
from harness.reporting.results import with_evidence
from harness.reporting.sarif import render_sarif
from harness.reporting.signing import SIGNATURE

PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
#: The one file allowed to hold the canaries: the list of them.
CANARY_MANIFEST = "canaries.json"
_CLEAN = (
    "SHA256SUMS written; every control has a final status; self-scan found no token, key or canary"
)


def self_scan(
    files: Mapping[str, bytes], secrets: Iterable[str], canaries: Iterable[str] = ()
) -> list[str]:
    """Problems: bearer tokens, private keys or canaries in any file but the canary manifest."""
    problems = []
    secrets = known_secrets(secrets)
    canaries = [c for c in canaries if c]
    for name, blob in sorted(files.items()):
        if name == CANARY_MANIFEST:
            continue
        text = blob.decode("utf-8", "replace")
        if JWT.search(text) or any(s in text for s in secrets):
            problems.append(f"{name}: holds a bearer token")
        if PRIVATE_KEY.search(text):
            problems.append(f"{name}: holds a private key")
        if any(holds_standalone(blob, c) for c in canaries):
            problems.append(f"{name}: holds a canary value outside canaries.json")
    return problems


def _json_file(data: Json) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def decide_evidence(
    results: Results, secrets: Iterable[str] = (), canaries: Iterable[str] = ()
) -> Evidence:
    """EVID-001: PASS when the self-scan of ``results.json`` found nothing, else FAIL."""
    draft = {"results.json": json.dumps(results.to_json()).encode()}
    problems = self_scan(draft, secrets, canaries)
    if problems:
        return Evidence(Status.FAIL, "; ".join(problems), Severity.MEDIUM)
    return Evidence(Status.PASS, _CLEAN)


def bundle_files(
    results: Results,
    config: Mapping[str, Any],
    *,
    secrets: Iterable[str] = (),
    canaries: Iterable[str] = (),
    past: Trend | None = None,
    oscal: bool = False,
) -> dict[str, bytes]:
    """Every file of the bundle, EVID-001 decided by self-scanning ``results.json`` first.

    With ``oscal``, the OSCAL assessment results too (:mod:`harness.reporting.oscal`).

    ``past`` holds the runs ``evidence.history_dir`` recorded before this one (``None``
    without it): the page's trend shows them and this run.

    Raises:
        AssertionError: A view leaked what ``results.json`` did not (a writer's bug).
    """
    secrets, canaries = tuple(secrets), tuple(canaries)
    done = with_evidence(results, decide_evidence(results, secrets, canaries))
    data = done.to_json()
    trend = None if past is None else past.then(record_of(data))
    files = {
        "results.json": _json_file(data),
        "report.html": render_html(done, trend).encode(),
        "junit.xml": render_junit(done),
        "results.sarif": _json_file(render_sarif(done)),
        "summary.md": render_summary(done).encode(),
        "manifest.json": _json_file(manifest(done, config)),
        CANARY_MANIFEST: _json_file({"canaries": list(canaries)}),
    }
    if oscal:  # compliance-trestle is heavy: loaded only when asked for
        from harness.reporting.oscal import FILE, render_oscal

        files[FILE] = render_oscal(done)
    late = self_scan(files, secrets, canaries)
    if late and done.evidence is not None and done.evidence.valid:
        raise AssertionError(f"report views leak: {late}")
    files["SHA256SUMS"] = sha256sums(files, attested_sums(done))
    return files


def write_bundle(dest: Path, files: Mapping[str, bytes]) -> None:
    """Write the bundle so that ``dest`` holds the previous bundle or the complete new one.

    Files go to a sibling temporary directory, which then replaces ``dest`` by rename.
    """
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.parent / f".{dest.name}.previous"
    if not dest.exists() and old.exists():
        old.rename(dest)  # an earlier run stopped between its two renames
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        for name, blob in files.items():
            with (tmp / name).open("wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def verify(directory: Path) -> list[str]:
    """Problems with a bundle: SHA256SUMS mismatches or gaps, the schema, the self-scan."""
    return verified(directory)[0]


def verified(directory: Path) -> tuple[list[str], Json | None]:
    """:func:`verify`'s problems, and ``results.json`` as read, for ``report merge``.

    The data is ``None`` when the file is not a document of a schema read here.
    """
    sums = directory / "SHA256SUMS"
    if not sums.is_file():
        return [f"{directory}: no SHA256SUMS (not an evidence bundle)"], None
    problems = _sums_problems(directory, sums)
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    schema, data = _schema_problems(files.get("results.json"))
    problems += schema
    try:
        canaries = json.loads(files.get(CANARY_MANIFEST, b"{}")).get("canaries", [])
    except ValueError:
        canaries = []
        problems.append(f"{CANARY_MANIFEST}: not JSON")
    return problems + self_scan(files, (), canaries), data


def _sums_problems(directory: Path, sums: Path) -> list[str]:
    """Files listed but missing or changed, and files not listed (but the signatures of them)."""
    problems = []
    listed = set()
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.startswith("attestation:"):
            continue
        listed.add(name)
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: listed in SHA256SUMS but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{name}: SHA-256 does not match SHA256SUMS")
    for path in sorted(directory.iterdir()):
        if path.name not in ("SHA256SUMS", SIGNATURE, ENVELOPE) and path.name not in listed:
            problems.append(f"{path.name}: not listed in SHA256SUMS")
    return problems


def _schema_problems(blob: bytes | None) -> tuple[list[str], Json | None]:
    """``results.json`` missing, not JSON, of a schema version not read, or not readable.

    Returns the problems, and the data when there is none.
    """
    if blob is None:
        return ["results.json: missing"], None
    try:
        data = json.loads(blob)
        version = data.get("schema_version")
    except (ValueError, AttributeError):
        return ["results.json: not a JSON object"], None
    if version not in READABLE_SCHEMAS:
        readable = ", ".join(READABLE_SCHEMAS)
        return [f"results.json: schema version {version!r} is not one I read ({readable})"], None
    try:
        Results.from_json(data)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        why = f"not a schema {version} document ({type(exc).__name__}: {exc})"
        return [f"results.json: {why}"], None
    return [], data
