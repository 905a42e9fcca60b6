"""Benchmark of the fuzzing engine against the bundled reference target.

Printed, all in the same run and over the same method mix:

* raw valid-call rate (the baseline): a plain loop over the engine's own inputs, each
  sent as its method's valid seed request by an allowed caller, over one channel;
* black-box: every engine input (decoded, sent through the gate, judged) per second, and
  the inputs **answered by the handler** per second, with their share: not refused by
  authentication, authorisation or a rate limit (UNAUTHENTICATED, PERMISSION_DENIED,
  RESOURCE_EXHAUSTED, UNIMPLEMENTED) and not a status the client made up. Refusals are
  cheap and say little about the handlers, so the handled rate is the figure; target:
  >= 0.8x the raw rate;
* white-box: the same inputs dispatched in-process without Atheris, then an Atheris
  white-box run (instrumented, libFuzzer's own exec/s), with its peak RSS at the start and
  the end (``--minutes``, default 0.25).

The target is ``spawn:reference+no-rate-limit`` by default (``--target``): the reference's
per-identity limit (200 calls/s) is policy, and it would cap both loops alike, so the rates
would measure the limit and not the harness. Rates are ratios within one run: on a shared
machine compare the ratios, not the absolute figures. Run:
``python bench/bench_fuzz.py [--minutes N] [--target SPEC] [--seconds S]``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc

from harness.channels import CallResult, invoke
from harness.config import Config
from harness.engine import Case, Local, Remote, Surface, surface_from
from harness.inprocess import InProcess, load
from harness.run import Run, RunOptions
from harness.target import parse_target

#: Answers that did not come from a handler: refused at the door, or made up by the client.
NOT_HANDLED = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass
class Counting(Remote):
    """The engine's black-box path, keeping the last answer each input got."""

    last: CallResult | None = None

    def _call(self, case: Case, channel: grpc.Channel) -> CallResult:
        self.last = super()._call(case, channel)
        return self.last


def _inputs(n: int) -> list[bytes]:
    rng = random.Random(7)
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(3, 48))) for _ in range(n)]


def raw_rate(surface: Surface, channel: grpc.Channel, inputs: list[bytes], seconds: float) -> float:
    """Valid calls per second: each input's method and caller, if allowed, with the seed."""
    n, i, end = 0, 0, time.monotonic() + seconds
    while time.monotonic() < end:
        case = surface.decode(inputs[i])
        i += 1
        if case.caller not in case.method.callers:
            continue
        invoke(
            channel,
            case.method.path,
            [case.method.seed],
            metadata=surface.metadata(case.caller),
            max_responses=1,
        )
        n += 1
    return n / seconds


def black_box(remote: Counting, inputs: list[bytes], seconds: float) -> tuple[float, float]:
    """Inputs per second, and inputs answered by the handler per second."""
    n = handled = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        remote.last = None
        remote.check(remote.surface.decode(inputs[n]))
        n += 1
        if remote.last is not None and remote.last.code not in NOT_HANDLED:
            handled += 1
    return n / seconds, handled / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=0.25)
    parser.add_argument("--target", default="spawn:reference+no-rate-limit")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each loop")
    args = parser.parse_args()
    run = Run.open(parse_target(args.target), Config(), RunOptions(seed=7))
    try:
        surface = surface_from(run)
        assert not isinstance(surface, str), surface
        channel = run.channel()
        inputs = _inputs(200_000)
        callable_ = [m for m in surface.methods if m.callers]
        print(f"{args.target}: {len(surface.methods)} methods, {len(callable_)} with callers")
        raw = raw_rate(surface, channel, inputs, args.seconds)
        remote = Counting(surface, channel)
        rate, handled = black_box(remote, inputs, args.seconds)
        again = raw_rate(surface, channel, inputs, args.seconds)
        raw = (raw + again) / 2  # before and after, against drift on a shared machine
        print(f"raw valid calls, same method mix: {raw:,.0f}/s (the baseline)")
        print(f"black-box inputs: {rate:,.0f}/s ({rate / raw:.2f}x raw)")
        print(
            f"black-box inputs answered by the handler: {handled:,.0f}/s "
            f"({handled / raw:.2f}x raw; {handled / max(rate, 1e-9):.0%} of inputs)"
        )
        _white_box(run, surface, inputs, args.seconds)
        config_path = run.spawned.config_path if run.spawned else None
        if config_path is not None and args.minutes > 0:
            _atheris(config_path, args.minutes)
    finally:
        run.close()


def _white_box(run: Run, surface: Surface, inputs: list[bytes], seconds: float) -> None:
    config: Any = run.config
    entry = config.str_("fuzz.inprocess_entrypoint")
    if not entry:
        print("white-box: no fuzz.inprocess_entrypoint")
        return
    target = load(entry, config.table("fuzz.inprocess_options"))
    local = Local(surface, InProcess(target))
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        local.check(surface.decode(inputs[n]))
        n += 1
    print(f"white-box in-process, uninstrumented: {n / seconds:,.0f}/s")
    if target.close:
        target.close()


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
