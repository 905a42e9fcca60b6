"""Signed evidence: the bundle's in-toto statement signed by a key, or by the user's tool.

``evidence.signing_key`` (an Ed25519 or ECDSA private key, PEM, unencrypted) signs the
statement's DSSE encoding (:mod:`harness.reporting.intoto`) here, with ``cryptography``;
``evidence.signing_cmd`` signs it with the user's tool (and ``SHA256SUMS``, as below).
Either way the envelope is ``evidence.intoto.json``; :func:`check_envelope` serves
``hipaa-grpc report verify [--public-key PEM]``.

``evidence.signing_cmd``: a detached signature of ``SHA256SUMS`` made by the user's tool.

The command is an argument list (never a shell line), run once per bundle with the bytes of
``SHA256SUMS`` on its standard input; ``{sums}`` in any argument is replaced by the path of
a private copy of the file, for tools that sign a file (``cosign sign-blob {sums}``,
``openssl dgst -sign key.pem {sums}``, a KMS ``sign`` wrapper). What it prints on standard
output is the signature, kept as ``SHA256SUMS.sig`` beside the file it signs. The signature
covers every file through their hashes, so it is the one file ``SHA256SUMS`` cannot list.

The same command signs the statement's DSSE encoding (its bytes on standard input, or
``{sums}`` naming a copy of them): that signature goes into the envelope with an empty
``keyid`` (the harness does not see the tool's key; ``report verify --public-key`` checks it).

A command that cannot run, fails, times out or prints nothing leaves the bundle unsigned and
says why in one line: the bundle itself is still written (nothing measured is lost).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from harness.reporting.intoto import (
    ENVELOPE,
    PAYLOAD_TYPE,
    Envelope,
    envelope,
    pae,
    payload,
    read_envelope,
    statement,
)
from harness.reporting.model import Results
from harness.reporting.results import now_utc
from harness.scratch import private_dir

SIGNATURE = "SHA256SUMS.sig"
#: A signer that needs a human (a hardware key's PIN) or a network call gets this long.
TIMEOUT_S = 60.0
_PLACEHOLDER = "{sums}"


@dataclass(frozen=True)
class Signed:
    """The signature, or why there is none (``error``)."""

    signature: bytes = b""
    error: str = ""


def sign(sums: bytes, command: Sequence[str], timeout_s: float = TIMEOUT_S) -> Signed:
    """Run ``command`` on ``sums`` and return its standard output as the signature."""
    if not command:
        return Signed(error="evidence.signing_cmd is empty")
    with tempfile.TemporaryDirectory(prefix="sign-", dir=private_dir()) as tmp:
        path = Path(tmp) / "SHA256SUMS"
        path.write_bytes(sums)
        argv = [arg.replace(_PLACEHOLDER, str(path)) for arg in command]
        try:
            done = subprocess.run(
                argv, input=sums, capture_output=True, timeout=timeout_s, check=False
            )
        except FileNotFoundError:
            return Signed(error=f"evidence.signing_cmd: {command[0]}: command not found")
        except PermissionError:
            return Signed(error=f"evidence.signing_cmd: {command[0]}: not executable")
        except subprocess.TimeoutExpired:
            return Signed(error=f"evidence.signing_cmd: no signature within {timeout_s:g} s")
    if done.returncode != 0:
        said = _last_line(done.stderr)
        return Signed(error=f"evidence.signing_cmd exited {done.returncode}{said}")
    if not done.stdout.strip():
        return Signed(error="evidence.signing_cmd printed no signature on standard output")
    return Signed(signature=done.stdout)


def _last_line(stderr: bytes) -> str:
    """``": <the last line the command wrote to stderr>"``, or nothing, for the error."""
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return f": {lines[-1][:200]}" if lines else ""


# -- evidence.signing_key: Ed25519 or ECDSA, with cryptography -----------------------------

#: ECDSA hashes by curve size (FIPS 186-5: the hash matches the curve's strength).
_EC_HASH: dict[int, hashes.HashAlgorithm] = {
    256: hashes.SHA256(),
    384: hashes.SHA384(),
    521: hashes.SHA512(),
}

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class SigningKeyError(ValueError):
    """A key file that cannot be used, in one line."""


def load_private_key(path: Path) -> PrivateKey:
    """The Ed25519 or ECDSA private key in the PEM file ``path``.

    Raises:
        SigningKeyError: unreadable, encrypted, not PEM, or another key type.
    """
    where = f"evidence.signing_key {path}"
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{where}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(blob, password=None)
    except TypeError:
        raise SigningKeyError(
            f"{where}: encrypted; give an unencrypted key, or sign with evidence.signing_cmd"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{where}: not a PEM private key") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        raise SigningKeyError(f"{where}: {type(key).__name__} is not Ed25519 or ECDSA")
    return key


def load_public_key(path: Path) -> PublicKey:
    """The Ed25519 or ECDSA public key in the PEM file ``path`` (a key or a certificate).

    Raises:
        SigningKeyError: unreadable, not PEM, or another key type.
    """
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: {exc.strerror or exc}") from None
    try:
        if b"CERTIFICATE-----" in blob:
            key: Any = x509.load_pem_x509_certificate(blob).public_key()
        else:
            key = serialization.load_pem_public_key(blob)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{path}: not a PEM public key or certificate") from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise SigningKeyError(f"{path}: {type(key).__name__} is not Ed25519 or ECDSA")
    return key


def key_id(key: PublicKey) -> str:
    """``SHA256:<hex>`` of the key's DER SubjectPublicKeyInfo: who signed, in the envelope."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """Ed25519 over ``data``, or ECDSA (DER) with the curve's hash."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, _ecdsa(key.curve.key_size))


def _ecdsa(bits: int) -> ec.ECDSA:
    return ec.ECDSA(_EC_HASH.get(bits, hashes.SHA256()))


def verifies(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` (raw, or as base64 or hex text a signing tool printed) is valid."""
    for candidate in _forms(signature):
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(candidate, data)
            else:
                key.verify(candidate, data, _ecdsa(key.curve.key_size))
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


def _forms(signature: bytes) -> list[bytes]:
    """The signature as given, and decoded when a tool printed it as hex or base64 text."""
    forms = [signature]
    text = signature.strip()
    with contextlib.suppress(ValueError):
        forms.append(bytes.fromhex(text.decode("ascii")))
    with contextlib.suppress(ValueError, binascii.Error):
        forms.append(base64.b64decode(text, validate=True))
    return forms


# -- the bundle: sign its statement, and check it ------------------------------------------


def sign_bundle(
    files: dict[str, bytes],
    results: Results,
    *,
    key_path: Path | None = None,
    command: Sequence[str] = (),
    signed_at: str = "",
) -> list[str]:
    """Add the signed statement (and ``SHA256SUMS.sig`` for a command) to ``files``.

    With ``key_path`` the harness signs the statement's DSSE encoding itself; with
    ``command`` the user's tool signs it (and, as before, ``SHA256SUMS``). Returns why
    the bundle is not (fully) signed, one line each; nothing is added for a signer that
    failed. Nothing is done when neither is given.
    """
    if key_path is None and not command:
        return []
    body = payload(statement(files, results, signed_at or now_utc()))
    signed = pae(PAYLOAD_TYPE, body)
    signatures: list[tuple[str, bytes]] = []
    errors: list[str] = []
    if key_path is not None:
        try:
            key = load_private_key(key_path)
        except SigningKeyError as exc:
            errors.append(str(exc))
        else:
            signatures.append((key_id(key.public_key()), sign_bytes(key, signed)))
    if command:
        of_sums, of_statement = sign(files["SHA256SUMS"], command), sign(signed, command)
        errors += [s.error for s in (of_sums, of_statement) if s.error][:1]
        if not (of_sums.error or of_statement.error):
            files[SIGNATURE] = of_sums.signature
            signatures.append(("", of_statement.signature))  # raw: text forms are read back
    if signatures:
        files[ENVELOPE] = (json.dumps(envelope(body, signatures), indent=2) + "\n").encode()
    return errors


@dataclass(frozen=True)
class Checked:
    """What ``report verify`` found about the signed statement: problems, and what it says."""

    problems: tuple[str, ...] = ()
    said: tuple[str, ...] = ()


def check_envelope(directory: Path, public_key: Path | None = None) -> Checked:
    """The envelope's statement against the files, and its signature against ``public_key``.

    Without a key the signature is not checked (the lines say who signed and when, as the
    envelope claims); with one, no signature that verifies is a problem naming the file.

    Raises:
        SigningKeyError: ``public_key`` cannot be used.
    """
    key = load_public_key(public_key) if public_key is not None else None
    path = directory / ENVELOPE
    if not path.is_file():
        if key is not None:
            return Checked((f"{ENVELOPE}: missing: the bundle is not signed",))
        return Checked()
    try:
        found = read_envelope(path.read_bytes())
    except ValueError as exc:
        return Checked((f"{ENVELOPE}: {exc}",))
    problems = _subject_problems(directory, found)
    when = str(found.predicate.get("signed_at", "an unknown time"))
    ids = ", ".join(k or "(a signing_cmd key)" for k, _ in found.signatures) or "nobody"
    if key is None:
        said = f"{ENVELOPE}: signed by {ids} at {when} (give --public-key to check it)"
        return Checked(tuple(problems), (said,))
    fingerprint = key_id(key)
    if not any(verifies(key, sig, found.signed) for _, sig in found.signatures):
        problems.append(f"{ENVELOPE}: the signature does not verify with key {fingerprint}")
        return Checked(tuple(problems))
    said = f"{ENVELOPE}: signature verified: signed by key {fingerprint} at {when}"
    return Checked(tuple(problems), (said,))


def _subject_problems(directory: Path, found: Envelope) -> list[str]:
    """Files changed, missing or added since the statement was signed."""
    problems = []
    subjects = found.subjects
    for name, digest in sorted(subjects.items()):
        file = directory / name
        if Path(name).name != name or not file.is_file():
            problems.append(f"{name}: in the signed statement ({ENVELOPE}) but missing")
        elif hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            problems.append(f"{name}: SHA-256 does not match the signed statement ({ENVELOPE})")
    for file in sorted(directory.iterdir()):
        if file.is_file() and file.name not in subjects and file.name not in (ENVELOPE, SIGNATURE):
            problems.append(f"{file.name}: not in the signed statement ({ENVELOPE})")
    return problems
