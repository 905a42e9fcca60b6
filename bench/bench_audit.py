"""Benchmark of the audit and redaction machinery.

1. 100,000 generated audit events (hash-chained like the reference target's): parse,
   verify the chain and reconcile request IDs, as AUDIT-001/005 do. Target: <= 2 s.
2. The canary detector over 100 MB of log text with a few planted canaries. Target:
   >= 50 MB/s.

Run: ``python bench/bench_audit.py``. Figures go to stdout; nothing is asserted.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from pathlib import Path

from harness.audit import read
from harness.canary import CanarySet
from harness.channels import Endpoint
from harness.checks.audit import chain_problems
from harness.config import Config
from harness.run import Run, RunOptions
from harness.target import parse_target
from harness.transport import Detected, Transport

EVENTS = 100_000


def _events(path: Path) -> list[str]:
    prev, ids = "0" * 64, []
    with path.open("w") as fh:
        for seq in range(1, EVENTS + 1):
            rid = str(uuid.uuid4())
            ids.append(rid)
            record = {
                "ts": "2026-11-22T12:00:00.000Z", "request_id": rid, "identity": "u-clin-01",
                "method": "/pkg.Svc/GetRecord", "action": "read", "resource": f"r-{seq}",
                "outcome": "OK", "source": "ipv4:127.0.0.1:5000", "seq": seq, "prev_hash": prev,
            }  # fmt: skip
            body = json.dumps(
                record, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
            record["hash"] = prev = hashlib.sha256(prev.encode() + b"\n" + body).hexdigest()
            fh.write(json.dumps(record) + "\n")
    return ids


def bench_events() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        ids = _events(path)
        config = Config({"audit": {"source": path, "hash_chain": {"algorithm": "sha256"}}})
        endpoint = Endpoint("127.0.0.1:1", Transport.H2C)
        run = Run(
            parse_target("127.0.0.1:1"), config, endpoint, Detected(Transport.H2C, ""), RunOptions()
        )
        start = time.perf_counter()
        got = read(run)
        by_id = {e["request_id"]: e for e in got.events}
        missing = sum(1 for rid in ids if rid not in by_id)
        problems = chain_problems(run, got.events)
        elapsed = time.perf_counter() - start
        size = path.stat().st_size
    print(
        f"{EVENTS} audit events: read, chain-verified and reconciled in {elapsed:.2f} s "
        f"({missing} missing, {len(problems)} chain problems, {size / 1e6:.0f} MB)"
    )


def bench_detector() -> None:
    c = CanarySet.for_seed(1)
    line = b"2026-11-22T12:00:00Z INFO rpc method=/pkg.Svc/Get request_id=0f0e outcome=OK id=u-1\n"
    blob = bytearray(line * (100 * 1024 * 1024 // len(line)))
    for i, key in enumerate(("given_name", "ssn", "email")):
        at = (i + 1) * len(blob) // 4
        blob[at : at + 40] = (c.values[key] + " ").encode().ljust(40, b" ")
    start = time.perf_counter()
    hits = c.scan(bytes(blob), "bench.log")
    elapsed = time.perf_counter() - start
    mb = len(blob) / 1e6
    print(
        f"canary detector: {mb:.0f} MB in {elapsed:.2f} s = {mb / elapsed:.0f} MB/s, "
        f"{len(hits)} hit(s)"
    )


if __name__ == "__main__":
    bench_events()
    bench_detector()
