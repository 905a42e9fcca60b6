"""``hipaa-grpc fuzz``: budget parsing, corpus pruning, runs, interruption and replay."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.errors import UsageError
from harness.fuzzcli import parse_budget, prune


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800)]
)
def test_budgets(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "5x", "0", "1h 2"])
def test_bad_budgets_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_budget(text)


def test_prune_names_by_content_drops_duplicates_and_keeps_the_smallest(tmp_path):
    for name, data in [("a", b"xx"), ("b", b"xx"), ("c", b"y"), ("d", b"zzzz")]:
        (tmp_path / name).write_bytes(data)
    kept, removed = prune(tmp_path, limit=2)
    assert (kept, removed) == (2, 2)
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"xx", b"y"]


def _fuzz(tmp_path, *args, **kwargs):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "fuzz",
            *args,
            "--corpus",
            str(tmp_path / "corpus"),
            "--crashes",
            str(tmp_path / "crashes"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "GRPC_VERBOSITY": "NONE"},
        **kwargs,
    )


def test_whitebox_run_finds_keeps_and_replays(tmp_path):
    spec = "spawn:reference+crash-nested"
    first = _fuzz(tmp_path, "--mode", "whitebox", "--target", spec, "--budget", "8s", "--seed", "5")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err[-2000:]
    files = list((tmp_path / "crashes").glob("*.json"))
    assert files
    assert "uncaught RecursionError" in json.loads(files[0].read_text())["why"]
    assert "finding" in err
    # The next run replays what is known before fuzzing: still failing, so still exit 1.
    again = _fuzz(tmp_path, "--mode", "whitebox", "--target", spec, "--budget", "3s")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 1
    assert f"{len(files)} known finding(s) still fail" in err
    # Against the compliant reference the reproducer passes: fixed.
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "fuzz",
            "replay",
            str(files[0]),
            "--mode",
            "whitebox",
            "--target",
            "spawn:reference",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert "passes now" in replay.stdout


def test_blackbox_runs_against_the_compliant_reference_find_nothing_twice(tmp_path):
    # Malformed inputs once left grpcio server calls open: after max_concurrent_streams of
    # them every stream was refused (UNAVAILABLE, RST_STREAM 7) and reported as a finding.
    # Two runs share the corpus: the second starts from the first's inputs, and has no
    # finding to call fixed and none to find again.
    for seed in ("3", "4"):
        run = _fuzz(tmp_path, "--target", "spawn:reference", "--budget", "10s", "--seed", seed)
        _, err = run.communicate(timeout=180)
        assert run.returncode == 0, err[-2000:]
        assert " 0 new finding(s)" in err
        assert "0 known finding(s) still fail" in err
        assert "RST_STREAM" not in err
        assert "pacing: " in err
        assert not list((tmp_path / "crashes").glob("*.json"))
        assert not (tmp_path / "crashes" / "fixed").exists()


def test_sigint_stops_cleanly_and_the_next_run_resumes(tmp_path):
    spec = "spawn:reference"
    run = _fuzz(tmp_path, "--mode", "whitebox", "--target", spec, "--budget", "120s")
    time.sleep(8)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err[-2000:]
    assert "interrupted after" in err
    assert "Traceback" not in err
    kept = len(list((tmp_path / "corpus").iterdir()))
    assert kept > 1
    resumed = _fuzz(tmp_path, "--mode", "whitebox", "--target", spec, "--budget", "2s")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-2000:]
    assert f"corpus {kept} input(s)" in err


def test_no_config_for_an_external_target_is_a_usage_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "fuzz", "--target", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 4
    assert "--config is required" in done.stderr
    assert "Traceback" not in done.stderr
