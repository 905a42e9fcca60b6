"""The self-scan as ``verify`` runs it: over bytes, canaries searched in groups.

The scan looks for JWTs and private keys in each file's bytes (it used to decode each file
first) and for the canaries under substrings they share (it used to search for each one
in turn). Both must find exactly what the old way found: these tests hold the new way to
the old one on crafted and on random files.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from harness.canary import holds_standalone
from harness.reporting.bundle import (
    PRIVATE_KEY,
    bundle_files,
    canary_groups,
    holds_canary,
    self_scan,
    verify,
    write_bundle,
)
from harness.reporting.redact import JWT
from tests.reporting.factory import finished, passed

NONCE = "QX7KD2MZ4P"
CANARIES = [
    f"MRN-MR-{NONCE}",
    f"ACCT-AC-{NONCE}",
    f"{NONCE} Canary Ln",
    f"https://{NONCE.lower()}.canary.example/p/{NONCE}",
    f"cnry.{NONCE.lower()}@example.com",
    "+1-202-555-0121 x3502589371",
    "+1-202-555-0171 x3502589371",
    "00350",
    "935-03-5894",
]
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
#: A private key's PEM, made at run time (no key-shaped text is kept in the repository).
KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    .decode()
)


def _each(blob: bytes, canaries: list[str]) -> bool:
    """The old search: every canary in turn."""
    return any(holds_standalone(blob, c) for c in canaries if c)


def _as_text(files: dict[str, bytes], canaries: list[str]) -> list[str]:
    """The old self-scan (no secrets): each file decoded, then searched."""
    problems = []
    for name, blob in sorted(files.items()):
        text = blob.decode("utf-8", "replace")
        if JWT.search(text):
            problems.append(f"{name}: holds a bearer token")
        if PRIVATE_KEY.search(text):
            problems.append(f"{name}: holds a private key")
        if _each(blob, canaries):
            problems.append(f"{name}: holds a canary value outside canaries.json")
    return problems


def _random_blob(rng: random.Random, pieces: list[bytes]) -> bytes:
    return b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))


def test_the_canaries_are_grouped_under_a_substring_each_of_its_group_holds():
    groups = canary_groups(CANARIES)
    assert sorted(c for _, members in groups for c in members) == sorted(CANARIES)
    assert max(len(members) for _, members in groups) >= 4  # the nonce's group
    for key, members in groups:
        assert all(key in c.encode() for c in members)
    assert canary_groups(["", "00350", "00350"]) == [(b"00350", ("00350",))]


def test_a_group_found_still_needs_one_of_its_canaries_standalone():
    groups = canary_groups(CANARIES)
    assert holds_canary(f"x: {NONCE} Canary Ln\n".encode(), groups)
    assert holds_canary(b'"mrn": "MRN-MR-' + NONCE.encode() + b'"', groups)
    assert not holds_canary(f"id {NONCE} and MRN-MR-".encode(), groups)  # the nonce alone
    assert not holds_canary(f"xMRN-MR-{NONCE}".encode(), groups)  # inside a longer token
    assert not holds_canary(f"ACCT-AC-{NONCE}7".encode(), groups)
    assert not holds_canary(b"sha256 9ab00350f1", groups)  # a ZIP inside a digest
    assert holds_canary(b"zip: 00350.", groups)


def test_grouped_search_finds_what_the_search_for_each_canary_finds():
    rng = random.Random(18)
    pieces = [c.encode() for c in CANARIES] + [
        NONCE.encode(),
        NONCE.lower().encode(),
        b"MRN-MR-",
        b"x3502589371",
        b"a",
        b"7",
        b" ",
        b"-",
        b"\xff",
        "\u00e9".encode(),
    ]
    groups = canary_groups(CANARIES)
    for _ in range(3000):
        blob = _random_blob(rng, pieces)
        assert holds_canary(blob, groups) == _each(blob, CANARIES), blob


def test_the_scan_of_bytes_finds_what_the_scan_of_decoded_text_found():
    files = {
        "a.bin": b"\xff\xfe" + TOKEN.encode() + b"\x80",
        "b.bin": b"\xe2\x82" + KEY.encode(),
        "c.txt": "caf\u00e9 eyJ.not.a.jwt".encode(),
        "d.bin": b"eyJhbG\xc3ciOiJFUzI1NiJ9.eyJzdWIi.x",  # broken by a stray byte
        "e.txt": b" ".join((b"BEGIN", b"PRIVATE", b"KEY,")) + b" and MRN-MR-" + NONCE.encode(),
    }
    assert self_scan(files, [], CANARIES) == [
        "a.bin: holds a bearer token",
        "b.bin: holds a private key",
        "e.txt: holds a canary value outside canaries.json",
    ]
    assert self_scan(files, [], CANARIES) == _as_text(files, CANARIES)
    rng = random.Random(19)
    pieces = [
        TOKEN.encode(),
        TOKEN[:20].encode(),
        KEY.encode(),
        KEY[:15].encode(),
        KEY[:11].encode(),  # the armour's opening, then its closing words, apart
        KEY.splitlines()[0][-16:].encode(),
        b"eyJ",
        b".",
        b"RSA ",
        b"\x80",
        b"\xe2\x82",
        b"\xc3\xa9",
        b"abcd",
        *[c.encode() for c in CANARIES[:3]],
    ]
    for _ in range(2000):
        files = {f"f{i}": _random_blob(rng, pieces) for i in range(3)}
        assert self_scan(files, [], CANARIES) == _as_text(files, CANARIES), files


def test_the_runs_own_secrets_are_still_looked_for_in_the_text():
    secret = "opaque-s\u00e9cret-123"
    assert self_scan({"a.txt": f"said {secret}".encode()}, [secret]) == [
        "a.txt: holds a bearer token"
    ]
    assert self_scan({"a.txt": b"said opaque-s"}, [secret]) == []


def _resum(bundle: Path) -> None:
    files = sorted(p for p in bundle.iterdir() if p.name != "SHA256SUMS")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in files]
    (bundle / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_verify_names_a_canary_list_it_cannot_read(tmp_path):
    bundle = tmp_path / "b"
    write_bundle(bundle, bundle_files(finished(passed("REFL-001")), {}, canaries=["00350"]))
    assert verify(bundle) == []
    for listed in ('{"canaries": "00350"}', '{"canaries": [350]}', '["00350"]', "{}"):
        (bundle / "canaries.json").write_text(listed)
        _resum(bundle)
        expected = [] if listed == "{}" else ["canaries.json: not a list of canary values"]
        assert verify(bundle) == expected, listed
    (bundle / "canaries.json").write_text("{")
    _resum(bundle)
    assert verify(bundle) == ["canaries.json: not JSON"]
