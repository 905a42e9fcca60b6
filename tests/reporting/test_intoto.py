"""Signed evidence: an in-toto statement over the bundle in a DSSE envelope; verify says who."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from harness.cli import main
from harness.reporting.bundle import bundle_files, write_bundle
from harness.reporting.intoto import (
    ENVELOPE,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    pae,
    read_envelope,
)
from harness.reporting.manifest import sha256sums
from harness.reporting.signing import (
    SIGNATURE,
    SigningKeyError,
    check_envelope,
    key_id,
    load_private_key,
    sign_bundle,
)

from .factory import finished, passed, refl_reproduced
from .test_signing import run_pytest

WHEN = "2026-11-30T20:00:00Z"


def write_key(path: Path, key: object, password: bytes | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    return path


def write_public(path: Path, key: object) -> Path:
    public = key.public_key()  # type: ignore[attr-defined]
    path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def signed_bundle(tmp_path: Path, key: object, name: str = "b") -> Path:
    results = finished(refl_reproduced(), passed("AUTHZ-001"))
    files = bundle_files(results, {})
    private = write_key(tmp_path / f"{name}-key.pem", key)
    assert sign_bundle(files, results, key_path=private, signed_at=WHEN) == []
    write_bundle(tmp_path / name, files)
    return tmp_path / name


def test_pae_is_dsse_v1() -> None:  # the DSSE specification's own example
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


@pytest.mark.parametrize(
    "key",
    [ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())],
    ids=["ed25519", "ecdsa-p256"],
)
def test_verify_names_the_key_and_the_time(tmp_path, capsys, key) -> None:
    bundle = signed_bundle(tmp_path, key)
    found = read_envelope((bundle / ENVELOPE).read_bytes())
    assert found.statement["_type"] == STATEMENT_TYPE
    assert found.statement["predicateType"] == PREDICATE_TYPE
    names = {s["name"] for s in found.statement["subject"]}
    assert names == {p.name for p in bundle.iterdir()} - {ENVELOPE}
    assert found.signatures[0][0] == key_id(key.public_key())
    public = write_public(tmp_path / "pub.pem", key)
    assert main(["report", "verify", str(bundle), "--public-key", str(public)]) == 0
    out = capsys.readouterr().out
    said = f"signature verified: signed by key {key_id(key.public_key())} at {WHEN}"
    assert said in out
    assert main(["report", "verify", str(bundle)]) == 0  # without a key: who claims, unchecked
    assert "give --public-key to check it" in capsys.readouterr().out


def test_a_tampered_bundle_fails_naming_the_file_or_the_signature(tmp_path, capsys) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public = write_public(tmp_path / "pub.pem", key)
    bundle = signed_bundle(tmp_path, key)
    # The file changed and SHA256SUMS made to match: the signed statement still tells.
    results = bundle / "results.json"
    results.write_text(results.read_text().replace('"FAIL"', '"PASS"'))
    files = {p.name: p.read_bytes() for p in bundle.iterdir() if p.name not in (ENVELOPE,)}
    del files["SHA256SUMS"]
    (bundle / "SHA256SUMS").write_bytes(sha256sums(files))
    assert main(["report", "verify", str(bundle), "--public-key", str(public)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL results.json: SHA-256 does not match the signed statement ({ENVELOPE})" in out
    # The statement changed to match: the signature no longer verifies.
    envelope = json.loads((bundle / ENVELOPE).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    for s in statement["subject"]:
        if s["name"] in files or s["name"] == "SHA256SUMS":
            s["digest"]["sha256"] = hashlib.sha256((bundle / s["name"]).read_bytes()).hexdigest()
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (bundle / ENVELOPE).write_text(json.dumps(envelope))
    assert main(["report", "verify", str(bundle), "--public-key", str(public)]) == 1
    out = capsys.readouterr().out
    assert (
        f"FAIL {ENVELOPE}: the signature does not verify with key {key_id(key.public_key())}" in out
    )
    assert "results.json: SHA-256 does not match the signed statement" not in out


def test_another_key_or_no_signature_fails(tmp_path, capsys) -> None:
    bundle = signed_bundle(tmp_path, ed25519.Ed25519PrivateKey.generate())
    other = write_public(tmp_path / "other.pem", ec.generate_private_key(ec.SECP384R1()))
    assert main(["report", "verify", str(bundle), "--public-key", str(other)]) == 1
    assert "the signature does not verify with key SHA256:" in capsys.readouterr().out
    unsigned = tmp_path / "unsigned"
    write_bundle(unsigned, bundle_files(finished(passed("AUTHZ-001")), {}))
    assert main(["report", "verify", str(unsigned), "--public-key", str(other)]) == 1
    assert f"FAIL {ENVELOPE}: missing: the bundle is not signed" in capsys.readouterr().out
    assert check_envelope(unsigned).problems == ()  # without a key, unsigned is allowed


def test_keys_that_cannot_sign_say_why(tmp_path) -> None:
    rsa_key = write_key(tmp_path / "rsa.pem", rsa.generate_private_key(65537, 2048))
    with pytest.raises(SigningKeyError, match="RSAPrivateKey is not Ed25519 or ECDSA"):
        load_private_key(rsa_key)
    locked = write_key(tmp_path / "locked.pem", ed25519.Ed25519PrivateKey.generate(), b"pw")
    with pytest.raises(SigningKeyError, match="encrypted"):
        load_private_key(locked)
    results = finished(passed("AUTHZ-001"))
    files = bundle_files(results, {})
    errors = sign_bundle(files, results, key_path=tmp_path / "nope.pem")
    assert errors == [f"evidence.signing_key {tmp_path / 'nope.pem'}: No such file or directory"]
    assert ENVELOPE not in files


def test_signing_cmd_signs_the_statement_too(tmp_path, capsys) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    private = write_key(tmp_path / "k.pem", key)
    signer = (
        "import sys; from cryptography.hazmat.primitives import serialization as s; "
        f"k = s.load_pem_private_key(open({str(private)!r}, 'rb').read(), None); "
        "sys.stdout.buffer.write(k.sign(sys.stdin.buffer.read()))"
    )
    results = finished(passed("AUTHZ-001"))
    files = bundle_files(results, {})
    assert sign_bundle(files, results, command=[sys.executable, "-c", signer]) == []
    assert SIGNATURE in files
    found = read_envelope(files[ENVELOPE])
    assert found.signatures[0][0] == ""  # the tool's key is not the harness's to name
    assert found.signed.startswith(f"DSSEv1 {len(PAYLOAD_TYPE)} {PAYLOAD_TYPE} ".encode())
    write_bundle(tmp_path / "b", files)
    public = write_public(tmp_path / "pub.pem", key)
    assert main(["report", "verify", str(tmp_path / "b"), "--public-key", str(public)]) == 0
    assert f"signed by key {key_id(key.public_key())}" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_signs_its_statement_with_the_configured_key(tmp_path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    private = write_key(tmp_path / "signing.pem", key)
    config = tmp_path / "sign.toml"
    config.write_text(f"[evidence]\nsigning_key = {json.dumps(str(private))}\n")
    args = ("--hipaa-target=spawn:reference", "-k", "REFL_001", "-p", "no:xdist")
    done = run_pytest(tmp_path, *args, f"--hipaa-config={config}", "--hipaa-report=out")
    assert done.returncode == 0, done.stdout[-2000:]
    checked = check_envelope(tmp_path / "out", write_public(tmp_path / "pub.pem", key))
    assert checked.problems == ()
    assert "signature verified" in checked.said[0]
    assert "PRIVATE KEY" not in "".join(p.read_text() for p in (tmp_path / "out").iterdir())
