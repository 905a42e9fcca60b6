"""Benchmark of the transport suite (TLS-*, CERT-*, MTLS-*) against the bundled target.

The target is started first and not timed; then every transport control runs in the order
the suite runs them, sharing one sslyze scan. Printed: wall time per control (the first
one pays for the scan) and in total, the scan's own time, and, as the baseline measured in
the same minute, a bare ``python -m sslyze HOST:PORT`` of the same server (its default
scan, with the run's client certificate, SNI and CA bundle, interpreter start included)
before and after, with the suite's ratio to it (goal: within
1.5x); then the same figures through the TLS edge (``reference+edge``), whose Python relay
adds a hop. On a shared machine compare the ratios, not the absolute times.

Run: ``python bench/bench_transport.py``. Figures go to stdout; nothing is asserted.
"""

from __future__ import annotations

import subprocess
import sys
import time

from harness.checks import registered, run_check
from harness.config import Config
from harness.plans.tls import tls_facts
from harness.run import Run, RunOptions
from harness.target import parse_target

TRANSPORT = [c for c in registered() if c.startswith(("TLS-", "CERT-", "MTLS-"))]


def bare_sslyze(run: Run) -> float:
    """Wall seconds of ``python -m sslyze HOST:PORT`` (its default scan) as the run scans it.

    With the run's client certificate, SNI and CA bundle, as our scan uses them: without
    the certificate an mTLS server closes the connection and sslyze stops at once.
    """
    command = [sys.executable, "-m", "sslyze", f"{run.spec.host}:{run.spec.port}"]
    cert, key = run.config.path("mtls.client_cert"), run.config.path("mtls.client_key")
    if cert is not None and key is not None:
        command += ["--cert", str(cert), "--key", str(key)]
    if run.endpoint.server_name:
        command += ["--sni", run.endpoint.server_name]
    ca = run.config.path("tls.ca_bundle")
    if ca is not None:
        command += ["--certinfo_ca_file", str(ca)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    seconds = time.perf_counter() - start
    if "discarding scan" in done.stdout:  # a non-zero exit alone is its compliance verdict
        print(f"  (bare sslyze did not scan: {done.stdout.strip().splitlines()[-3:]})")
    return seconds


def bench(spec: str) -> None:
    run = Run.open(parse_target(spec), Config(), RunOptions(seed=7))
    try:
        assert run.spec.host is not None
        assert run.spec.port is not None
        before = bare_sslyze(run)
        start = time.perf_counter()
        tls_facts(run)
        scan_s = time.perf_counter() - start
        rows = []
        for control in sorted(TRANSPORT):
            t0 = time.perf_counter()
            outcome = run_check(control, run)
            rows.append((control, time.perf_counter() - t0, outcome.status.value))
        total = time.perf_counter() - start
        after = bare_sslyze(run)
    finally:
        run.close()
    bare = (before + after) / 2
    print(
        f"\n{spec}: transport suite {total:.2f} s wall (sslyze scan {scan_s:.2f} s); "
        f"bare python -m sslyze {bare:.2f} s ({before:.2f}, {after:.2f}): "
        f"{total / bare:.2f}x bare"
    )
    for control, seconds, status in rows:
        print(f"  {control:9} {seconds * 1000:7.0f} ms  {status}")


if __name__ == "__main__":
    bench("spawn:reference")
    bench("spawn:reference+edge")
