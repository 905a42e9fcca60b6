"""Against every hostile target, a full run ends, explains itself, and leaves a whole bundle.

Each test starts one server of :mod:`targets.hostile`, then runs
``pytest --hipaa-target=HOST:PORT`` as a user would, in a child process with a 2 s call
timeout (the bounds in docs/controls.md scale with it). The child must exit 1 (findings,
or controls it could not judge) without a traceback and within the hang guard; every
control must have a final status and every non-passing one a reason; the bundle must be
complete and verify; and no fuzzer or target process may outlive the run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.reporting.bundle import verify
from targets.hostile import KINDS, start

pytestmark = pytest.mark.slow

#: Not a speed target: a run that has not ended by then is hung.
HANG_GUARD_S = 180
BUNDLE = {
    "SHA256SUMS",
    "canaries.json",
    "junit.xml",
    "manifest.json",
    "report.html",
    "results.json",
    "results.sarif",
    "summary.md",
}
GRPC_LEVEL = ("REFL-", "AUTHN-", "AUTHZ-", "AUDIT-", "REDACT-", "MIN-", "LIMIT-", "ERR-", "FUZZ-")
#: Why the gRPC-level controls cannot be judged, per target (None: they can be).
REASONS = {
    "silent": "did not answer a TLS ClientHello",
    "tls-garbage": "speaks neither TLS nor HTTP/2",
    "reset": "could not open a channel",
    "slowloris": "did not answer a TLS ClientHello",
    "http1": "speaks neither TLS nor HTTP/2",
    "h2-not-grpc": "answers HTTP/2 but not gRPC",
    "endless": "sent more than one message",
    "huge": "over the harness's",
    "dies": "went away during the run",
    "blocking-audit": None,
}


def _left_behind(session: int) -> list[str]:
    """Processes still alive in the session the run started (its children inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session and fields[0] != "Z":  # the session ID; not a zombie
            found.append(cmdline)
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_target_gets_a_bounded_explained_run(kind, tmp_path):
    hostile = start(kind)
    bundle = tmp_path / "bundle"
    try:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                f"--hipaa-target={hostile.address}",
                f"--hipaa-config={hostile.config}",
                f"--hipaa-report={bundle}",
                "--hipaa-call-timeout=2",
                f"--junitxml={tmp_path / 'run.xml'}",
                "-p",
                "no:cacheprovider",
                "-q",
            ],
            cwd=tmp_path,
            env={**os.environ, "GRPC_VERBOSITY": "NONE"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        output, _ = child.communicate(timeout=HANG_GUARD_S)
    finally:
        hostile.stop()
    assert _left_behind(child.pid) == []
    # 1: findings or unjudged controls; a run where only the audit source is hostile may
    # pass everything it could judge (its INCONCLUSIVE controls are skips).
    assert child.returncode in ((0, 1) if kind == "blocking-audit" else (1,)), output[-3000:]
    assert "Traceback" not in output
    assert {p.name for p in bundle.iterdir()} == BUNDLE
    assert verify(bundle) == []
    controls = json.loads((bundle / "results.json").read_text())["controls"]
    assert all(c["status"] and (c["status"] == "PASS" or c["summary"]) for c in controls)
    grpc_level = [c for c in controls if c["id"].startswith(GRPC_LEVEL)]
    reason = REASONS[kind]
    if kind == "dies":  # what ran before it died stands; nothing after it is judged
        unjudged = _judged_until_it_went_away(grpc_level, _run_order(tmp_path / "run.xml"))
        assert sum(reason in c["summary"] for c in unjudged) >= len(unjudged) - 1
    elif reason is not None:
        unjudged = [c for c in grpc_level if c["status"] in ("ERROR", "INCONCLUSIVE")]
        assert len(unjudged) >= len(grpc_level) - 1, [(c["id"], c["status"]) for c in grpc_level]
        assert sum(reason in c["summary"] for c in unjudged) >= len(unjudged) - 1
    else:  # only the audit source is hostile: the rest of the run is judged as usual
        audit = [c for c in controls if c["id"].startswith("AUDIT-")]
        assert any("not a regular file" in c["summary"] for c in audit)
        judged = [c for c in controls if not c["id"].startswith("ATT-")]
        assert all(c["status"] in ("PASS", "INCONCLUSIVE", "SKIP") for c in judged), [
            (c["id"], c["status"], c["summary"][:80]) for c in judged if c["status"] != "PASS"
        ]
        assert sum(c["status"] == "PASS" for c in grpc_level) >= 20


def _run_order(junit: Path) -> list[str]:
    """The control IDs of pytest's JUnit report, in the order their tests ran."""
    import re
    import xml.etree.ElementTree as ET

    names = (case.get("name", "") for case in ET.parse(junit).iter("testcase"))
    return [f"{m[1]}-{m[2]}" for n in names if (m := re.match(r"test_([A-Z]+)_(\d{3})", n))]


def _judged_until_it_went_away(controls: list[dict], order: list[str]) -> list[dict]:
    """The controls left unjudged, which must be all of them from the first one on.

    The target dies a few seconds into the run: the controls whose tests ran before that
    are judged (how many depends on the machine's speed), and no verdict may follow one
    the death left unjudged.
    """
    status = {c["id"]: c for c in controls}
    ran = [status[i] for i in order if i in status]
    assert len(ran) == len(controls)
    first = next(
        (k for k, c in enumerate(ran) if c["status"] in ("ERROR", "INCONCLUSIVE")), len(ran)
    )
    after = ran[first:]
    assert after, "the target died after the run's last gRPC-level control"
    assert all(c["status"] in ("ERROR", "INCONCLUSIVE") for c in after), [
        (c["id"], c["status"]) for c in after
    ]
    return after
