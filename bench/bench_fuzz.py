"""Benchmark of the fuzzing engine against the bundled reference target.

Printed, all in the same run:

* raw call rate: a plain loop of valid raw calls over one channel (the baseline);
* black-box rate: engine inputs (decoded, sent, judged) over the same channel;
  target: >= 0.7x the raw rate;
* white-box rate: the same inputs dispatched in-process without Atheris, then an Atheris
  white-box run (instrumented, libFuzzer's own exec/s); target: >= 2,000 execs/s;
* peak RSS of an Atheris white-box run at its start and end (``--minutes``, default 1;
  the issue's figure is for 10); target: growth < 10%.

The reference rate-limits each identity, so the network loops rotate over every
principal and count RESOURCE_EXHAUSTED answers like any other. Run:
``python bench/bench_fuzz.py [--minutes N]``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import re
import subprocess
import sys
import time

from harness.channels import invoke
from harness.config import Config
from harness.engine import Local, Remote, surface_from
from harness.inprocess import InProcess, load
from harness.run import Run, RunOptions
from harness.target import parse_target

SECONDS = 5.0


def _inputs(n: int) -> list[bytes]:
    rng = random.Random(7)
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(3, 48))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=1.0)
    args = parser.parse_args()
    run = Run.open(parse_target("spawn:reference"), Config(), RunOptions(seed=7))
    try:
        surface = surface_from(run)
        assert not isinstance(surface, str)
        channel = run.channel()
        method = surface.methods[0]
        callers = [surface.metadata(c) for c in method.callers]
        n, end = 0, time.monotonic() + SECONDS
        while time.monotonic() < end:
            invoke(channel, method.path, [method.seed], metadata=callers[n % len(callers)])
            n += 1
        raw = n / SECONDS
        remote = Remote(surface, channel)
        inputs = _inputs(100_000)
        n, end = 0, time.monotonic() + SECONDS
        while time.monotonic() < end:
            remote.check(surface.decode(inputs[n]))
            n += 1
        black = n / SECONDS
        one = Remote(dataclasses.replace(surface, methods=[method]), channel)
        n, end = 0, time.monotonic() + SECONDS
        while time.monotonic() < end:
            one.check(one.surface.decode(inputs[n]))
            n += 1
        same = n / SECONDS
        print(f"raw calls to {method.path}: {raw:,.0f}/s")
        print(f"black-box, same method: {same:,.0f}/s ({same / raw:.2f}x raw)")
        print(f"black-box, every method (streams included): {black:,.0f}/s ({black / raw:.2f}x)")
        config_path = run.spawned.config_path if run.spawned else None
        assert config_path is not None
        config = run.config
        target = load(
            config.str_("fuzz.inprocess_entrypoint"), config.table("fuzz.inprocess_options")
        )
        local = Local(surface, InProcess(target))
        n, end = 0, time.monotonic() + SECONDS
        while time.monotonic() < end:
            local.check(surface.decode(inputs[n]))
            n += 1
        print(f"white-box in-process, uninstrumented: {n / SECONDS:,.0f}/s")
        if target.close:
            target.close()
        _atheris(config_path, args.minutes)
    finally:
        run.close()


def _atheris(config_path: object, minutes: float) -> None:
    seconds = max(10, round(minutes * 60))
    env = {**os.environ, "HIPAA_FUZZ_CONFIG": str(config_path), "HIPAA_FUZZ_KEEP_GOING": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.fuzzers.whitebox",
            f"-max_total_time={seconds}",
            "-seed=1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    rss = [int(m) for m in re.findall(r"rss: (\d+)Mb", done.stderr)]
    rates = [int(m) for m in re.findall(r"exec/s: (\d+)", done.stderr)]
    if not rss or not rates:
        print("atheris white-box: no stats;", done.stderr[-500:])
        return
    warm = rss[min(len(rss) - 1, len(rss) // 10)]
    print(
        f"atheris white-box ({seconds} s): {rates[-1]:,} execs/s; peak RSS {warm} MB after "
        f"warm-up, {rss[-1]} MB at the end ({(rss[-1] - warm) / warm:+.0%})"
    )


if __name__ == "__main__":
    main()
