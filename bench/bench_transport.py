"""Benchmark of the transport suite (TLS-*, CERT-*, MTLS-*) against the bundled target.

The target is started first and not timed; then every transport control runs in the order
the suite runs them, sharing one sslyze scan. Printed: wall time per control (the first
one pays for the scan) and in total, the scan's own time, and the same figures through the
TLS edge (``reference+edge``), whose Python relay adds a hop. Target: <= 3 s in total.

Run: ``python bench/bench_transport.py``. Figures go to stdout; nothing is asserted.
"""

from __future__ import annotations

import time

from harness.checks import registered, run_check
from harness.config import Config
from harness.plans.tls import tls_facts
from harness.run import Run, RunOptions
from harness.target import parse_target

TRANSPORT = [c for c in registered() if c.startswith(("TLS-", "CERT-", "MTLS-"))]


def bench(spec: str) -> None:
    run = Run.open(parse_target(spec), Config(), RunOptions(seed=7))
    try:
        start = time.perf_counter()
        tls_facts(run)
        scan_s = time.perf_counter() - start
        rows = []
        for control in sorted(TRANSPORT):
            t0 = time.perf_counter()
            outcome = run_check(control, run)
            rows.append((control, time.perf_counter() - t0, outcome.status.value))
        total = time.perf_counter() - start
    finally:
        run.close()
    print(f"\n{spec}: transport suite {total:.2f} s wall (sslyze scan {scan_s:.2f} s)")
    for control, seconds, status in rows:
        print(f"  {control:9} {seconds * 1000:7.0f} ms  {status}")


if __name__ == "__main__":
    bench("spawn:reference")
    bench("spawn:reference+edge")
