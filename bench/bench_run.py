"""Benchmark of the whole default run: ``pytest --hipaa-target=spawn:reference``.

Runs the command a user runs (every suite, the default fuzz budget, in a fresh process)
``--runs`` times as it is, then once more with ``bench/waitlog.py`` loaded to time it, all
in one working directory after one run that is not counted, and prints:

* the wall time of each plain run (start to exit, the spawned target included) and the CPU
  time of the harness and of its children (the target, white-box Atheris) from
  ``getrusage``: on a shared machine wall time varies, CPU time much less. The goal is
  judged on these: waitlog wraps every wait of every thread, which costs the run about 1 s;
* for the timed run, each suite's share (the time its tests took, setup to teardown; the
  check runs in setup), with "session" the rest (interpreter start, imports, collection,
  writing reports), and the slowest tests with their CPU and the target's CPU;
* the waits, named by the line that waits: in the main thread (they cost wall time) and in
  background threads (overlapped with other work: the AUTHN-005 hold, the sslyze scan,
  paced bursts, retries of throttled calls).

Why the uncounted first run: Hypothesis builds its Unicode tables on first use and reads
the source of every "local" module (not in site-packages: with this repository's editable
install, the harness's own) for constants to draw, about 2 s of CPU when a run starts. It
keeps both, for a run of the bundled suites, in ``~/.cache/pytest-hipaa-grpc/hypothesis``
(``harness.plugin``): a user pays them once per machine, not per run, and the first run
here pays them only on a fresh machine or cache.

Work started early in the background (the sslyze scan, white-box Atheris, AUTHN-005's held
token, AUTHN-009's streams) is counted in the test that waits for it, if it waits.
Target: <= 8 s wall on a 2-core machine.

Run: ``python bench/bench_run.py [--runs 3] [--waits 10] [--python VENV/bin/python]``.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def one_run(python: str, where: Path, timed: bool = False) -> dict[str, Any]:
    """One run by ``python`` in ``where``: wall and CPU seconds, pytest's last line, waits.

    The waits (waitlog's record) only when ``timed``.
    """
    with tempfile.TemporaryDirectory(prefix="hipaa-bench-") as tmp:
        record = Path(tmp) / "waits.json"
        command = [
            python,
            "-m",
            "pytest",
            "--hipaa-target=spawn:reference",
            "-p",
            "no:cacheprovider",
            *(("-p", "waitlog") if timed else ()),
            "-q",
        ]
        path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "GRPC_VERBOSITY": "NONE", "PYTHONPATH": path}
        if timed:
            env["HIPAA_BENCH_WAITS"] = str(record)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start, started_at = time.perf_counter(), time.time()
        done = subprocess.run(command, cwd=where, env=env, capture_output=True, text=True)
        wall, ended_at = time.perf_counter() - start, time.time()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = json.loads(record.read_text()) if record.exists() else {}
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = (done.stdout.strip().splitlines() or ["no output"])[-1]
    if log:  # interpreter start to pytest_configure, and pytest_unconfigure to exit
        log["startup"] = log["configured_at"] - started_at
        log["shutdown"] = ended_at - log["unconfigured_at"]
    return {"wall": wall, "cpu": cpu, "tail": tail.strip("= "), "log": log}


def _suite(nodeid: str) -> str:
    return nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")


def _child(argv: str) -> str:
    """A child process named by its module (``python -m NAME``) or its program."""
    words = argv.split()
    if "-m" in words[:-1]:
        return words[words.index("-m") + 1]
    return Path(words[0]).name if words else "?"


def print_split(run: dict[str, Any], waits: int) -> None:
    """The suites' shares, the slowest tests, and the named waits of one run."""
    wall, log = run["wall"], run["log"]
    if not log:
        print("  (no wait record: the run failed before pytest configured)")
        return
    tests = log["tests"]
    shares: dict[str, float] = collections.defaultdict(float)
    for nodeid, row in tests.items():
        shares[_suite(nodeid)] += row["wall"]
    print(f"split of the timed run ({wall:.2f} s):")
    rows = sorted(shares.items(), key=lambda kv: -kv[1])
    rows.append(("session", wall - sum(shares.values())))
    for suite, seconds in rows:
        print(f"  {suite:10} {seconds:6.2f} s  {100 * seconds / wall:5.1f} %")
    print(
        f"  of the session: {log['startup']:.2f} s from exec to pytest_configure (imports), "
        f"{log['shutdown']:.2f} s from pytest_unconfigure to exit"
    )
    harness_cpu = log["in_pytest"]["cpu"]
    children = "; ".join(
        f"{_child(c['what'])} {c['cpu']:.2f} s" for c in log.get("children", []) if c["cpu"]
    )
    print(f"CPU: {run['cpu']:.2f} s in all; harness {harness_cpu:.2f} s; children: {children}")
    print("slowest tests (wall, harness CPU, target CPU, then what they waited on):")
    for nodeid, row in sorted(tests.items(), key=lambda kv: -kv[1]["wall"])[:waits]:
        print(
            f"  {nodeid.split('::')[-1][5:]:42} {row['wall']:5.2f} s  cpu {row['cpu']:4.2f}"
            f"  target {row['target_cpu']:4.2f}"
        )
    for main, title in ((True, "main thread: cost wall time"), (False, "background: overlapped")):
        print(f"waits, {title} (seconds summed over threads, count, where, during which test):")
        chosen = [w for w in log["waits"] if w["main"] is main]
        for w in sorted(chosen, key=lambda w: -w["seconds"])[:waits]:
            test = w["test"].split("::")[-1].removeprefix("test_")
            print(
                f"  {w['seconds']:6.2f} s {w['count']:5}x {w['kind']:6} {w['site'][:58]:58} {test}"
            )


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--waits", type=int, default=10, help="rows per table")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of the install to measure: a venv where the README's "
        "'pip install .' ran measures what a user runs (compiled, in site-packages); "
        "by default this one (here an editable install without compiled bytecode: about "
        "0.3 s more)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hipaa-bench-cwd-") as where:
        measure(args.python, Path(where), args.runs, args.waits)


def measure(python: str, where: Path, count: int, waits: int) -> None:
    """``python``'s runs in ``where``, after the uncounted first one, and their figures."""
    first = one_run(python, where)
    print(f"first run (not counted): {first['wall']:.2f} s wall", flush=True)
    runs = []
    for i in range(count):
        run = one_run(python, where)
        runs.append(run)
        print(
            f"run {i + 1}: {run['wall']:.2f} s wall, {run['cpu']:.2f} s CPU  ({run['tail']})",
            flush=True,
        )
    walls = [r["wall"] for r in runs]
    median = statistics.median(walls)
    cpus = statistics.median(r["cpu"] for r in runs)
    print(
        f"\nwhole run: median {median:.2f} s wall (min {min(walls):.2f}, max {max(walls):.2f}); "
        f"median CPU {cpus:.2f} s (a floor of {cpus / 2:.2f} s wall on 2 cores)"
    )
    timed = one_run(python, where, timed=True)
    print(
        f"timed run (waitlog loaded): {timed['wall']:.2f} s wall, {timed['cpu']:.2f} s CPU  "
        f"({timed['tail']}); waitlog's own cost is in its figures below"
    )
    print_split(timed, waits)


if __name__ == "__main__":
    main()
