"""Spawned targets never outlive the harness; the CLI lists and serves them."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import TargetError
from harness.spawn import spawn
from harness.target import parse_target
from targets.catalog import BUNDLED


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_stop_ends_the_process_and_removes_its_files():
    spawned = spawn(parse_target("spawn:reference"))
    assert spawned.alive()
    assert (spawned.workdir / "hipaa.toml").is_file()
    spawned.stop()
    assert _gone(spawned.process.pid)
    assert not spawned.workdir.exists()


def test_a_killed_harness_leaves_no_orphan(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        from harness.spawn import spawn
        from harness.target import parse_target
        spawned = spawn(parse_target("spawn:reference"))
        print(spawned.process.pid, spawned.workdir, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid, workdir = parent.stdout.readline().split(maxsplit=1)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    parent.stdout.close()
    assert _gone(int(pid)), "the target outlived a SIGKILLed harness"
    assert not Path(workdir.strip()).exists(), "the target left its work directory"


def test_a_target_that_fails_to_start_is_a_target_error(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(TargetError, match="exited with code 1 before it was ready"):
        spawn(parse_target("spawn:reference"))


def test_targets_list_names_every_defect_and_its_controls(capsys):
    assert main(["targets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for target in BUNDLED.values():
        for defect in target.defects:
            at = lines.index(f"  spawn:{target.name}+{defect.name}")
            assert lines[at + 1].strip().startswith(f"trips {', '.join(defect.trips)}:")


def test_targets_serve_unknown_defect_is_exit_4(capsys):
    assert main(["targets", "serve", "reference+nope"]) == 4
    assert "unknown defect 'nope'" in capsys.readouterr().err


def test_targets_serve_runs_until_sigterm(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "targets",
            "serve",
            "reference",
            "--workdir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    assert first.startswith("serving spawn:reference at 127.0.0.1:")
    rest = [proc.stdout.readline() for _ in range(7)]
    assert any("pytest --hipaa-target=127.0.0.1:" in line for line in rest)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    proc.stdout.close()
    assert (tmp_path / "audit.jsonl").exists()
