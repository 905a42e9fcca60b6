"""``evidence.signing_cmd``: a detached signature of ``SHA256SUMS`` made by the user's tool.

The command is an argument list (never a shell line), run once per bundle with the bytes of
``SHA256SUMS`` on its standard input; ``{sums}`` in any argument is replaced by the path of
a private copy of the file, for tools that sign a file (``cosign sign-blob {sums}``,
``openssl dgst -sign key.pem {sums}``, a KMS ``sign`` wrapper). What it prints on standard
output is the signature, kept as ``SHA256SUMS.sig`` beside the file it signs. The signature
covers every file through their hashes, so it is the one file ``SHA256SUMS`` cannot list.

A command that cannot run, fails, times out or prints nothing leaves the bundle unsigned and
says why in one line: the bundle itself is still written (nothing measured is lost).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
