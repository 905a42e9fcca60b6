"""Benchmark of ``hipaa-grpc report merge`` over 1,000 evidence bundles.

One real bundle (a run of ``spawn:reference``, or ``--bundle DIR``) is copied 1,000 times
with varied results: each copy gets its own target, report ID and finish time (up to 120
days old), and a few controls FAIL at a random severity; its ``results.json`` and
``SHA256SUMS`` are rewritten so that it verifies. One copy in a hundred is then edited
after the fact, so that ``verify`` refuses it. The merge (verify every bundle, read the
results, write ``index.html`` and ``fleet.json``) is timed. Target: < 10 s.

Run: ``python bench/bench_merge.py [--bundle DIR] [--count N] [--keep DIR]``. With
``--keep``, the copies are written to (or, when it holds them already, read from) ``DIR``,
so that two versions of the harness can be timed on the same bundles minutes apart.
Figures (wall and CPU seconds, per bundle too, and the load average) go to stdout;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness.reporting.fleet import merge, write_fleet

SEVERITIES = ("critical", "high", "medium", "low")


def real_bundle(work: Path) -> Path:
    """One bundle of a run against spawn:reference."""
    (work / "run").mkdir()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", "no:xdist",
         "--hipaa-target=spawn:reference", f"--hipaa-report={work / 'seed'}"],
        cwd=work / "run", check=False, capture_output=True, timeout=900,
    )  # fmt: skip
    if not (work / "seed" / "SHA256SUMS").is_file():
        sys.exit("the run against spawn:reference wrote no bundle")
    return work / "seed"


def varied(seed: dict, i: int, rng: random.Random, now: dt.datetime) -> dict:
    """The seed's results as service ``i`` might have had them."""
    data = json.loads(json.dumps(seed))
    data["report_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
    finished = now - dt.timedelta(days=rng.uniform(0, 120))
    data["run"]["target"] = f"svc-{i:04d}.health.internal:443"
    data["run"]["finished"] = finished.isoformat(timespec="seconds").replace("+00:00", "Z")
    automated = [c for c in data["controls"] if c["automated"] and c["status"] == "PASS"]
    for c in rng.sample(automated, k=min(len(automated), rng.choice((0, 0, 1, 2, 3, 5)))):
        c["status"], c["severity"] = "FAIL", rng.choice(SEVERITIES)
        c["summary"] = f"planted finding {i}"
    return data


def write_copy(seed_dir: Path, dest: Path, data: dict) -> None:
    """The seed's files with ``data`` as results.json, and SHA256SUMS to match."""
    dest.mkdir(parents=True)
    files = {
        p.name: p.read_bytes() for p in seed_dir.iterdir() if p.is_file() and p.name != "SHA256SUMS"
    }
    files["results.json"] = (json.dumps(data, indent=2) + "\n").encode()
    lines = [f"{hashlib.sha256(blob).hexdigest()}  {name}" for name, blob in sorted(files.items())]
    files["SHA256SUMS"] = ("\n".join(lines) + "\n").encode()
    for name, blob in files.items():
        (dest / name).write_bytes(blob)


def _cpu_s() -> tuple[float, float]:
    """CPU seconds of this process, and of its finished children (the merge's workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def generate(seed_dir: Path, out: Path, count: int) -> list[Path]:
    """``count`` varied copies of the seed bundle in ``out`` (kept when already there)."""
    bundles = [out / f"svc-{i:04d}" for i in range(count)]
    if all((b / "SHA256SUMS").is_file() for b in bundles):
        print(f"reusing the {count} bundles in {out}")
        return bundles
    seed = json.loads((seed_dir / "results.json").read_text())
    rng, now = random.Random(7), dt.datetime.now(dt.timezone.utc)
    started = time.perf_counter()
    for i, dest in enumerate(bundles):
        write_copy(seed_dir, dest, varied(seed, i, rng, now))
        if i % 100 == 42:  # edited after the run: verify must refuse it
            (dest / "summary.md").write_text("all green\n")
    size = sum(p.stat().st_size for b in bundles for p in b.iterdir())
    print(f"generated {count} bundles ({size / 1e6:.0f} MB) "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    return bundles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a real bundle to copy (default: run one)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="write the copies here and reuse them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        work = Path(tmp)
        seed_dir = args.bundle or real_bundle(work)
        bundles = generate(seed_dir, args.keep or work / "bundles", args.count)
        load = os.getloadavg()[0]
        started, (own, workers) = time.perf_counter(), _cpu_s()
        fleet = merge(bundles)
        write_fleet(work / "fleet", fleet)
        took, (own_after, workers_after) = time.perf_counter() - started, _cpu_s()
        own, workers = own_after - own, workers_after - workers
        cpu = own + workers
        n = max(len(bundles), 1)
        print(
            f"merge of {n} bundles on {os.cpu_count()} CPU(s), load average "
            f"{load:.1f} before / {os.getloadavg()[0]:.1f} after (target < 10 s wall):"
        )
        print(
            f"  wall {took:.2f} s ({took / n * 1000:.1f} ms per bundle), "
            f"CPU {cpu:.2f} s ({cpu / n * 1000:.1f} ms per bundle; "
            f"{own:.2f} s in the merging process, {workers:.2f} s in its workers)"
        )
        print(f"  {len(fleet.merged)} merged, {len(fleet.refused)} refused, "
              f"{len(fleet.worst_findings())} findings")  # fmt: skip


if __name__ == "__main__":
    main()
