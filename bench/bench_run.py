"""Benchmark of the whole default run: ``pytest --hipaa-target=spawn:reference``.

Runs the command a user runs (every suite, the default fuzz budget, in a fresh process from
an empty directory) ``--runs`` times, and prints the wall time of each (start to exit, the
spawned target included) and, for the median run, each suite's share: the time its tests
took, read from the JUnit report, with "session" the rest (interpreter start, imports,
spawning and stopping the target, writing reports). Work started early in the background
(the sslyze scan, white-box Atheris, AUTHN-009's wait) is counted in the test that waits
for it, if it waits. Target: <= 15 s wall on a 2-core machine.

Run: ``python bench/bench_run.py [--runs 3]``. Figures go to stdout; nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path


def one_run() -> tuple[float, dict[str, float], str]:
    """One run: wall seconds, seconds per suite module, pytest's last line."""
    with tempfile.TemporaryDirectory(prefix="hipaa-bench-") as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "--hipaa-target=spawn:reference",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={junit}",
        ]
        env = {**os.environ, "GRPC_VERBOSITY": "NONE"}
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        shares: dict[str, float] = collections.defaultdict(float)
        for case in ET.parse(junit).getroot().iter("testcase"):
            suite = case.get("classname", "?").rsplit(".", 1)[-1].removeprefix("test_")
            shares[suite] += float(case.get("time", 0))
    tail = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return wall, dict(shares), tail


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        wall, shares, tail = one_run()
        runs.append((wall, shares))
        print(f"run {i + 1}: {wall:.2f} s wall  ({tail.strip('= ')})", flush=True)
    walls = [w for w, _ in runs]
    median = statistics.median(walls)
    wall, shares = min(runs, key=lambda r: abs(r[0] - median))
    print(f"\nwhole run: median {median:.2f} s wall (min {min(walls):.2f}, max {max(walls):.2f})")
    print(f"split of the median run ({wall:.2f} s):")
    rows = sorted(shares.items(), key=lambda kv: -kv[1])
    rows.append(("session", wall - sum(shares.values())))
    for suite, seconds in rows:
        print(f"  {suite:10} {seconds:6.2f} s  {100 * seconds / wall:5.1f} %")


if __name__ == "__main__":
    main()
