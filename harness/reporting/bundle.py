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
from collections import Counter
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
#: :data:`PRIVATE_KEY` and :data:`~harness.reporting.redact.JWT` over a file's bytes: both
#: match only ASCII, which UTF-8 keeps byte for byte, so they match the bytes where they
#: match the text (a decoder's replacement characters match neither).
_PRIVATE_KEY_BYTES = re.compile(PRIVATE_KEY.pattern.encode())
_JWT_BYTES = re.compile(JWT.pattern.encode())
#: The one file allowed to hold the canaries: the list of them.
CANARY_MANIFEST = "canaries.json"
#: Canaries that share a substring this long are looked for under it first.
SHARED = 6
_CLEAN = (
    "SHA256SUMS written; every control has a final status; self-scan found no token, key or canary"
)


def canary_groups(canaries: Iterable[str]) -> list[tuple[bytes, tuple[str, ...]]]:
    """The canaries grouped under a substring (UTF-8) that each of the group holds.

    A file without a group's substring holds none of its canaries, so one search rules out
    a group (a run's canaries mostly share its nonce). Greedy: the substrings of
    :data:`SHARED` bytes held by the most canaries first; a canary sharing none with
    another is its own group.
    """
    left = {c: c.encode() for c in canaries if c}
    grams = {c: {b[i : i + SHARED] for i in range(len(b) - SHARED + 1)} for c, b in left.items()}
    counts = Counter(gram for held in grams.values() for gram in held)
    groups = []
    for key, held in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if held < 2:
            break
        members = tuple(c for c in left if key in grams[c])
        if len(members) > 1:
            groups.append((key, members))
            left = {c: b for c, b in left.items() if c not in members}
    return groups + [(b, (c,)) for c, b in left.items()]


def holds_canary(blob: bytes, groups: Iterable[tuple[bytes, tuple[str, ...]]]) -> bool:
    """Whether ``blob`` holds a canary of ``groups`` (:func:`canary_groups`) standalone."""
    return any(
        key in blob and any(holds_standalone(blob, c) for c in canaries) for key, canaries in groups
    )


def _holds_secret(blob: bytes, secrets: tuple[str, ...]) -> bool:
    if not secrets:
        return False
    text = blob.decode("utf-8", "replace")
    return any(s in text for s in secrets)


def self_scan(
    files: Mapping[str, bytes], secrets: Iterable[str], canaries: Iterable[str] = ()
) -> list[str]:
    """Problems: bearer tokens, private keys or canaries in any file but the canary manifest.

    Each file is scanned as bytes (decoded only to look for the run's own ``secrets``).
    """
    problems = []
    secrets = known_secrets(secrets)
    groups = canary_groups(canaries)
    for name, blob in sorted(files.items()):
        if name == CANARY_MANIFEST:
            continue
        if _JWT_BYTES.search(blob) or _holds_secret(blob, secrets):
            problems.append(f"{name}: holds a bearer token")
        if b"PRIVATE KEY-----" in blob and _PRIVATE_KEY_BYTES.search(blob):  # in: faster
            problems.append(f"{name}: holds a private key")
        if holds_canary(blob, groups):
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
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    problems = _sums_problems(directory, sums, files)
    schema, data = _schema_problems(files.get("results.json"))
    problems += schema
    canaries, listed = _canaries(files.get(CANARY_MANIFEST, b"{}"))
    return problems + listed + self_scan(files, (), canaries), data


def _canaries(blob: bytes) -> tuple[list[str], list[str]]:
    """The canaries ``canaries.json`` lists, and the problem when it lists none readably."""
    try:
        canaries = json.loads(blob).get("canaries", [])
    except ValueError:
        return [], [f"{CANARY_MANIFEST}: not JSON"]
    except AttributeError:
        canaries = None
    if not isinstance(canaries, list) or not all(isinstance(c, str) for c in canaries):
        return [], [f"{CANARY_MANIFEST}: not a list of canary values"]
    return canaries, []


def _sums_problems(directory: Path, sums: Path, files: Mapping[str, bytes]) -> list[str]:
    """Files listed but missing or changed, and files not listed (but the signatures of them).

    ``files`` are the bundle's files as read (by name): each is hashed from there.
    """
    problems = []
    listed = set()
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.startswith("attestation:"):
            continue
        listed.add(name)
        path = directory / name
        if name in files:
            blob: bytes | None = files[name]
        else:
            blob = path.read_bytes() if path.is_file() else None
        if blob is None:
            problems.append(f"{name}: listed in SHA256SUMS but missing")
        elif hashlib.sha256(blob).hexdigest() != digest:
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
