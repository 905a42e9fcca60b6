"""``evidence.signing_cmd``: the user's tool signs SHA256SUMS; a failure says why, in one line."""

import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.reporting.bundle import verify, write_bundle
from harness.reporting.manifest import sha256sums
from harness.reporting.signing import SIGNATURE, sign

SUMS = b"ab" * 32 + b"  results.json\n"
#: A stand-in signer: HMAC-SHA256 of what it reads, printed as hex.
HMAC_STDIN = (
    "import hashlib, hmac, sys; "
    "print(hmac.new(b'k', sys.stdin.buffer.read(), hashlib.sha256).hexdigest())"
)
HMAC_FILE = (
    "import hashlib, hmac, sys, pathlib; "
    "print(hmac.new(b'k', pathlib.Path(sys.argv[1]).read_bytes(), hashlib.sha256).hexdigest())"
)
EXPECTED = hmac.new(b"k", SUMS, hashlib.sha256).hexdigest().encode() + b"\n"


def test_the_command_signs_what_it_reads_on_stdin():
    assert sign(SUMS, [sys.executable, "-c", HMAC_STDIN]).signature == EXPECTED


def test_sums_placeholder_names_a_private_copy_of_the_file():
    signed = sign(SUMS, [sys.executable, "-c", HMAC_FILE, "{sums}"])
    assert (signed.signature, signed.error) == (EXPECTED, "")


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["/nonexistent/cosign", "sign-blob"], "/nonexistent/cosign: command not found"),
        (
            [sys.executable, "-c", "import sys; sys.exit('kms: AccessDenied')"],
            "exited 1: kms: AccessDenied",
        ),
        ([sys.executable, "-c", "pass"], "printed no signature"),
        ([], "evidence.signing_cmd is empty"),
    ],
)
def test_a_signer_that_fails_says_why_in_one_line(command, said):
    signed = sign(SUMS, command)
    assert signed.signature == b""
    assert said in signed.error
    assert "\n" not in signed.error


def test_a_signer_that_hangs_is_stopped():
    signed = sign(SUMS, [sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert signed.error == "evidence.signing_cmd: no signature within 0.5 s"


def test_verify_accepts_the_signature_beside_sums_and_nothing_else(tmp_path, capsys):
    files = {"results.json": b"{}"}
    files["SHA256SUMS"] = sha256sums(files, [])
    files[SIGNATURE] = b"sig"
    write_bundle(tmp_path / "b", files)
    problems = verify(tmp_path / "b")
    assert not any(SIGNATURE in p or "not listed" in p for p in problems), problems
    (tmp_path / "b" / "extra.txt").write_text("x")
    assert "extra.txt: not listed in SHA256SUMS" in verify(tmp_path / "b")
    main(["report", "verify", str(tmp_path / "b")])
    assert f"{SIGNATURE}: a detached signature of SHA256SUMS" in capsys.readouterr().out


def run_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _signing_config(path: Path, *command: str) -> Path:
    path.write_text(f"[evidence]\nsigning_cmd = {json.dumps([sys.executable, *command])}\n")
    return path


@pytest.mark.slow
def test_a_run_signs_its_bundle_and_a_failed_signature_fails_the_run(tmp_path):
    config = _signing_config(tmp_path / "sign.toml", "-c", HMAC_STDIN)
    args = ("--hipaa-target=spawn:reference", "-k", "REFL_001", "-p", "no:xdist")
    done = run_pytest(tmp_path, *args, f"--hipaa-config={config}", "--hipaa-report=out")
    assert done.returncode == 0, done.stdout[-2000:]
    sums = (tmp_path / "out" / "SHA256SUMS").read_bytes()
    expected = hmac.new(b"k", sums, hashlib.sha256).hexdigest().encode() + b"\n"
    assert (tmp_path / "out" / SIGNATURE).read_bytes() == expected
    assert verify(tmp_path / "out") == []

    jwt_shaped = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    leaky = _signing_config(tmp_path / "leaky.toml", "-c", f"import sys; sys.exit('{jwt_shaped}')")
    done = run_pytest(tmp_path, *args, f"--hipaa-config={leaky}", "--hipaa-report=leaky")
    assert "bundle not signed" in done.stdout
    assert jwt_shaped not in done.stdout  # the signer's words are redacted like the rest

    broken = _signing_config(tmp_path / "broken.toml", "-c", "import sys; sys.exit('no key')")
    done = run_pytest(tmp_path, *args, f"--hipaa-config={broken}", "--hipaa-report=unsigned")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "bundle not signed: evidence.signing_cmd exited 1: no key" in done.stdout
    assert (tmp_path / "unsigned" / "results.json").is_file()  # nothing measured is lost
    assert not (tmp_path / "unsigned" / SIGNATURE).exists()
