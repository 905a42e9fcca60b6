"""A FAIL on a bundled defect shows a reproducer that, run by hand, gets the same status.

Each case serves a defect variant (``hipaa-grpc targets serve``, its own process), runs the
one control it trips against it with a bundle, then runs every failing probe's
``hipaa-grpc replay`` line in a shell, with the placeholders set from the target's token
files, against the same target: it must exit 0 (the status the harness got). grpcurl is
not installed here (nor packaged by Debian): its line's ``-d`` JSON must parse, with the
service's descriptors, into the very bytes the replay line sends. A raw HTTP/2 probe's
line (``replay --frames``) must get the same classified answer.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from harness.descriptors import load_descriptor_set
from harness.reproduce import FORGED, placeholder

pytestmark = pytest.mark.slow

#: (variant, the test of the control it trips): one per family.
CASES = [
    ("reference+rbac-hole", "test_AUTHZ_001"),
    ("reference+wrong-code", "test_AUTHN_001"),
    ("reference+reflection", "test_REFL_001"),
    ("reference+idor", "test_AUTHZ_002"),
    # a raw HTTP/2 probe: FUZZ-003 (a)'s text/plain request served (a `replay --frames` line)
    ("reference+no-auth", "test_FUZZ_003"),
]


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The variant served in its own process: its address and working directory."""
    workdir = tmp_path / "target"
    bin_dir = Path(sys.executable).parent
    process = subprocess.Popen(
        [str(bin_dir / "hipaa-grpc"), "targets", "serve", request.param, "--workdir", workdir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("serving "), first
        yield first.split(" at ")[1].strip(), workdir
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def failing_probes(results: dict) -> list[dict]:
    return [
        p
        for c in results["controls"]
        for p in c.get("probes", ())
        if p["status"] == "FAIL" and "reproducer" in p
    ]


def environment(workdir: Path, fill: list[str]) -> dict[str, str]:
    """PATH to this venv's hipaa-grpc, and each placeholder from the target's token files."""
    tokens = {placeholder(p.stem): p.read_text().strip() for p in (workdir / "tokens").iterdir()}
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": os.environ["HOME"]}
    for name in fill:
        assert name != FORGED, "a case whose reproducer needs a forged token cannot be run by hand"
        env[name] = tokens[name]
    return env


@pytest.mark.parametrize(("served", "test"), CASES, indirect=["served"])
def test_the_replay_line_gets_the_status_the_harness_got(
    pytester: pytest.Pytester, served: tuple[str, Path], test: str
) -> None:
    address, workdir = served
    bundle = pytester.path / "bundle"
    pytester.inline_run(
        f"--hipaa-target={address}",
        f"--hipaa-config={workdir / 'hipaa.toml'}",
        f"--hipaa-report={bundle}",
        "--hipaa-seed=7",
        *(["--hipaa-allow-transport-abuse"] if test == "test_FUZZ_003" else []),
        "-p",
        "no:cacheprovider",
        "-k",
        test,
    )
    results = json.loads((bundle / "results.json").read_text())
    assert results["evidence"]["status"] == "PASS"  # the self-scan found no token or canary
    probes = failing_probes(results)
    runnable = [p for p in probes if p["reproducer"]["replay"]]
    assert runnable, f"no replay line among {[p['id'] for p in probes]}"
    if test == "test_FUZZ_003":  # FUZZ-003's failing probes are raw HTTP/2 requests
        assert all("--frames" in shlex.split(p["reproducer"]["replay"]) for p in runnable)
    tokens = [p.read_text().strip() for p in (workdir / "tokens").iterdir()]
    catalogue = load_descriptor_set(workdir / "descriptors.pb")
    for probe in runnable:
        repro = probe["reproducer"]
        assert not any(t in json.dumps(repro) for t in tokens)
        done = subprocess.run(
            ["sh", "-c", repro["replay"]],
            env=environment(workdir, repro["fill"]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (probe["id"], repro["code"], done.stdout, done.stderr)
        raw = "--frames" in shlex.split(repro["replay"])
        said = "same answer" if raw else "same status"
        assert f"{said} as the harness got: {repro['code']}" in done.stdout
        if repro["grpcurl"]:
            sent = _sent_bytes(repro["replay"])
            words = shlex.split(repro["grpcurl"])
            cls = catalogue.message_class(catalogue.method(repro["method"]).input_type)
            message = json_format.Parse(words[words.index("-d") + 1], cls())
            assert [message.SerializeToString()] == sent
            assert words[-1] == repro["method"].lstrip("/")


def _sent_bytes(replay: str) -> list[bytes]:
    words = shlex.split(replay)
    return [base64.b64decode(words[i + 1]) for i, w in enumerate(words) if w == "--request-b64"]
