"""Benchmark of the harness at scale: the generated wide target (``targets/wide.py``).

For each size (services x methods x roles) a fresh harness process starts the wide target
(spawned: its CPU is not the harness's), opens a run on it, and measures in the same minute:

* raw: the RBAC matrix's own calls (every method as every role, then every method without
  credentials), sent as plain grpcio unary calls over one channel with the matrix's
  concurrency (:data:`harness.calling.CALL_CONCURRENCY` threads), before and after;
* AUTHZ-001 (the RBAC matrix) and AUTHN-001 through the harness: calls, wall time, calls/s,
  and the ratio to the raw rate (goal >= 0.7x);
* the harness process's peak RSS (``ru_maxrss``; goal < 300 MB) and its CPU time.

Printed per size, so that growth is visible: cost linear in methods x roles keeps calls/s
flat. On a shared machine compare the ratios, not the absolute rates. Run:
``python bench/bench_scale.py [--sizes 5x100x5,20x400x10,50x1000x20]``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SIZES = "5x100x5,20x400x10,50x1000x20"
ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raw(run: Any, calls: list[tuple[str, tuple[tuple[str, str], ...]]]) -> float:
    """Calls per second of a plain concurrent loop of grpcio unary calls over one channel."""
    import grpc

    from harness.calling import CALL_CONCURRENCY

    channel = run.channel()
    request = b"\x0a\x02id"

    def one(call: tuple[str, tuple[tuple[str, str], ...]]) -> None:
        unary = channel.unary_unary(call[0], request_serializer=None, response_deserializer=None)
        with contextlib.suppress(grpc.RpcError):  # the refused cells of the matrix
            unary(request, metadata=call[1], timeout=10)  # kept by nobody: RSS is the harness's

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CALL_CONCURRENCY) as pool:
        for _ in pool.map(one, calls):
            pass
    return len(calls) / (time.perf_counter() - start)


def one_size(services: int, methods: int, roles: int) -> dict[str, Any]:
    """Measure one size in this process (called in a child by :func:`main`)."""
    from harness.checks import registered, run_check
    from harness.config import load_config
    from harness.run import Run, RunOptions
    from harness.target import parse_target
    from targets import wide

    registered()
    with tempfile.TemporaryDirectory(prefix="hipaa-wide-") as tmp:
        command = [sys.executable, "-m", "targets.wide", "--dir", tmp]
        command += ["--services", str(services), "--methods", str(methods), "--roles", str(roles)]
        server = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            address = server.stdout.readline().split()[-1]
            start, cpu0 = time.perf_counter(), _cpu()
            run = Run.open(parse_target(address), load_config(Path(tmp) / "hipaa.toml"),
                           RunOptions(seed=7))  # fmt: skip
            opened = time.perf_counter() - start
            names = wide.roles(roles)
            calls = [
                (p, (("authorization", f"Bearer tok-{r}"),))
                for p in wide.paths(services, methods)
                for r in names
            ]
            calls += [(p, ()) for p in wide.paths(services, methods)]
            before = _raw(run, calls)
            checks = {}
            for control in ("AUTHZ-001", "AUTHN-001"):
                n, t0 = len(run.journal), time.perf_counter()
                status = run_check(control, run).status.value
                seconds = time.perf_counter() - t0
                checks[control] = (status, len(run.journal) - n, seconds)
            after = _raw(run, calls)
            cpu = _cpu() - cpu0
            run.close()
        finally:
            server.communicate("", timeout=10)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "size": [services, methods, roles],
        "opened_s": opened,
        "raw": (before + after) / 2,
        "checks": checks,
        "rss_mb": rss_mb,
        "cpu_s": cpu,
    }


def main() -> None:
    """Measure each size in a child process (peak RSS per size), and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=SIZES, help="services x methods x roles, ...")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(*map(int, args.one.split("x")))))
        return
    env = {**os.environ, "GRPC_VERBOSITY": "NONE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    print("services x methods x roles: harness calls/s vs raw calls/s (same mix, same run)")
    for size in args.sizes.split(","):
        wall = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--one", size], env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - wall
        if done.returncode != 0:
            print(f"{size}: failed: {done.stderr[-800:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{size:>12}: run opened in {r['opened_s']:.2f} s; raw {r['raw']:,.0f} calls/s; "
            f"peak RSS {r['rss_mb']:.0f} MB; harness CPU {r['cpu_s']:.1f} s; "
            f"{wall:.1f} s wall in all"
        )
        for control, (status, calls, seconds) in r["checks"].items():
            rate = calls / seconds if seconds else 0.0
            print(
                f"{'':>14}{control} {status}: {calls:,} calls in {seconds:.2f} s = "
                f"{rate:,.0f} calls/s ({rate / r['raw']:.2f}x raw)"
            )


if __name__ == "__main__":
    main()
