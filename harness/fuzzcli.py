"""``hipaa-grpc fuzz``: time-boxed Atheris runs for nightly CI, and replay of reproducers.

A run first replays every reproducer already in ``--crashes`` (still failing: counted;
fixed: moved to ``crashes/fixed/``), prunes the corpus, then runs
:mod:`harness.fuzzers` in a child process for ``--budget``, showing one progress line.
SIGINT or SIGTERM stops the child the way libFuzzer expects (its corpus and our
reproducers are written as they are found), then the summary is printed.

Exit codes: 0 no finding; 1 at least one finding (new, or an old one that still
fails); 2 the fuzzer could not run; 4 usage error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from harness.engine import Case, Executor, Finding, Surface
from harness.errors import HarnessError, UsageError

EXIT_OK, EXIT_FINDINGS, EXIT_FAILED = 0, 1, 2
#: Corpus files kept between runs (the smallest first: they run fastest).
MAX_CORPUS = 10_000
#: Seconds a stopping child gets before SIGTERM, and as much again before SIGKILL.
STOP_GRACE_S = 5.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_budget(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h30m`` as seconds.

    Raises:
        UsageError: anything else, or zero.
    """
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise UsageError(f"--budget: expected e.g. 90s, 10m or 1h30m, got {text!r}")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise UsageError("--budget must be more than 0")
    return seconds


@dataclass
class Where:
    """The target and config a run or replay uses, and what to stop afterwards."""

    target: str | None
    config: Path
    stop: object | None = None  # a harness.spawn.Spawned


def resolve(target: str | None, config: Path | None, mode: str) -> Where:
    """Spawn a bundled target if asked; check that a config is there.

    Raises:
        UsageError: no config for an external target, or a config that does not exist.
        TargetError: a bundled target fails to start.
    """
    from harness.config import load_config
    from harness.spawn import spawn
    from harness.target import parse_target

    if target and target.startswith("spawn:"):
        spawned = spawn(parse_target(target, option="--target"))
        if config is not None:
            print(
                f"hipaa-grpc fuzz: note: {target} brings its own config; --config is ignored",
                file=sys.stderr,
            )
        return Where(f"{spawned.host}:{spawned.port}", spawned.config_path, spawned)
    if config is None:
        raise UsageError("--config is required (the harness config for the target)")
    if not config.is_file():
        raise UsageError(f"--config: file not found: {config}")
    load_config(config)  # a wrong key or value (a seed corpus that is not there) is one line
    if mode == "blackbox" and not target:
        raise UsageError("--target is required for black-box fuzzing")
    return Where(target, config)


def _executor(where: Where, mode: str) -> tuple[Surface, Executor]:
    from harness.fuzzers import blackbox, whitebox

    if mode == "whitebox":
        return whitebox(str(where.config), instrument=False)
    assert where.target is not None
    return blackbox(str(where.config), where.target, instrument=False)


def replay(
    path: Path, where: Where, mode: str, setup: tuple[Surface, Executor] | None = None
) -> Finding | None:
    """Send a reproducer again; the finding it still causes, or ``None`` if fixed.

    It goes through the same back-pressure handling and replay gate as the fuzzing: fixed
    means answered and passing, never merely unanswered.

    Raises:
        UsageError: the file is not a reproducer or names a method the target lacks.
        HarnessError: the target only pushed back: the reproducer got no answer to judge.
    """
    try:
        old = Finding.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{path}: not a hipaa-grpc reproducer ({exc})") from exc
    surface, executor = setup or _executor(where, mode)
    try:
        method = surface.method(old.method)
    except StopIteration:
        raise UsageError(f"{path}: {old.method} is not among the fuzzed methods") from None
    found = executor.check(Case(method, old.caller, old.payload))
    if found is None and executor.unanswered:
        raise HarnessError(f"no answer to judge, only back-pressure: {executor.unanswered}")
    return found


def prune(corpus: Path, limit: int = MAX_CORPUS) -> tuple[int, int]:
    """Name corpus files by content hash (dropping duplicates) and keep the ``limit`` smallest.

    Returns:
        Files kept and files removed.
    """
    corpus.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Path] = {}
    removed = 0
    for f in sorted(p for p in corpus.iterdir() if p.is_file()):
        digest = hashlib.sha1(f.read_bytes()).hexdigest()
        if digest in seen:
            f.unlink()
            removed += 1
            continue
        if f.name != digest:
            f = f.rename(corpus / digest)
        seen[digest] = f
    ordered = sorted(seen.values(), key=lambda p: (p.stat().st_size, p.name))
    for f in ordered[limit:]:
        f.unlink()
        removed += 1
    return min(len(ordered), limit), removed


class _Progress:
    """Reads the child's stderr: keeps the log, tracks libFuzzer's counters, relays findings."""

    _STATS = re.compile(r"^#(\d+)\s+\w+.*?corp: (\d+)/.*?exec/s: (\d+)")
    _OURS = re.compile(r"^\[hipaa-fuzz\]\s+\d+ s\s+([\d,]+) execs \(([\d,]+)/s\)")
    _PACE = re.compile(r"\(([^()]*candidates not reproduced)\)\s*$")

    def __init__(self, log: Path) -> None:
        self.execs = 0
        self.corpus = 0
        self.rate = 0
        self.findings: list[str] = []
        self.notes = 0  # candidates that did not reproduce (never findings)
        self.pace = ""  # the fuzzer's last word on its pacing and gate
        self.tail: list[str] = []
        self._log = log.open("w")

    def pump(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            line = raw.rstrip("\n")
            self._log.write(line + "\n")
            self.tail = [*self.tail[-19:], line]
            m = self._STATS.match(line)
            ours = self._OURS.match(line)
            if m:
                execs, self.corpus, rate = (int(g) for g in m.groups())
                self.execs, self.rate = max(self.execs, execs), rate
            elif ours:
                self.execs, self.rate = (int(g.replace(",", "")) for g in ours.groups())
                pace = self._PACE.search(line)
                self.pace = pace.group(1) if pace else self.pace
            elif line.startswith("[hipaa-fuzz] note:"):
                self.notes += 1
            elif line.startswith("[hipaa-fuzz] finding"):
                self.findings.append(line)
                print("\r" + line.removeprefix("[hipaa-fuzz] "), file=sys.stderr, flush=True)
        self._log.close()


def run(
    where: Where,
    mode: str,
    budget_s: float,
    corpus: Path,
    crashes: Path,
    seed: int,
    extra: list[str],
) -> int:
    """One time-boxed fuzzing run; returns the exit code."""
    crashes.mkdir(parents=True, exist_ok=True)
    still = _replay_known(where, mode, crashes)
    kept, removed = prune(corpus)
    print(
        f"hipaa-grpc fuzz: {mode} on {where.target or where.config}, budget {budget_s:g} s, "
        f"corpus {kept} input(s) ({removed} pruned), {len(still)} known finding(s) still fail",
        file=sys.stderr,
    )
    command = _fuzzer_command(mode, budget_s, seed, extra, corpus)
    env = _fuzzer_env(where, crashes)
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    progress = _Progress(crashes / "last-run.log")
    reader = threading.Thread(target=progress.pump, args=(child.stderr,), daemon=True)
    reader.start()
    started = time.monotonic()
    stopped = _supervise(child, progress, started, budget_s)
    reader.join(timeout=5)
    print("", file=sys.stderr)
    return _conclude(progress, still, crashes, started, interrupted=bool(stopped))


def _fuzzer_env(where: Where, crashes: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "HIPAA_FUZZ_CONFIG": str(where.config),
        "HIPAA_FUZZ_CRASHES": str(crashes),
        "HIPAA_FUZZ_KEEP_GOING": "1",
        "HIPAA_FUZZ_PROGRESS": "1",  # exact counts every 2 s (libFuzzer's come at powers of 2)
    }
    if where.target:
        env["HIPAA_FUZZ_TARGET"] = where.target
    return env


def _fuzzer_command(
    mode: str, budget_s: float, seed: int, extra: list[str], corpus: Path
) -> list[str]:
    return [
        sys.executable,
        "-m",
        f"harness.fuzzers.{mode}",
        f"-max_total_time={max(1, round(budget_s))}",
        f"-seed={seed}",
        "-timeout=60",  # above the gate's GATE_SECONDS for one input's tries and replay
        "-print_final_stats=1",
        *extra,
        str(corpus),
    ]


def _supervise(
    child: subprocess.Popen[str], progress: _Progress, started: float, budget_s: float
) -> list[tuple[int, float]]:
    """Wait for the fuzzer with a progress line; bounded by the budget plus a minute.

    Returns the stop signals forwarded to it (empty when it ran to its budget).
    """
    stopped = _forward_signals(child)
    deadline = started + budget_s + 60
    while child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
            break
        if stopped and time.monotonic() - stopped[0][1] > STOP_GRACE_S:
            # Asked before libFuzzer installed its handler, or it is stuck in an input.
            child.terminate() if len(stopped) == 1 else child.kill()
            stopped.append((signal.SIGTERM, time.monotonic()))
        _show(progress, started)
        try:
            child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            continue
    return stopped


def _conclude(
    progress: _Progress, still: list[Path], crashes: Path, started: float, *, interrupted: bool
) -> int:
    found = len(progress.findings)
    ran = progress.execs > 0 or any(line.startswith("Done ") for line in progress.tail)
    if not ran and not found:
        print("hipaa-grpc fuzz: the fuzzer did not run:", file=sys.stderr)
        print("\n".join(progress.tail[-5:]), file=sys.stderr)
        return EXIT_FAILED
    why = "interrupted" if interrupted else "budget spent"
    print(
        f"hipaa-grpc fuzz: {why} after {time.monotonic() - started:.0f} s: "
        f"{progress.execs:,} inputs, corpus {progress.corpus}, {found} new finding(s), "
        f"{len(still)} known finding(s) still failing, {progress.notes} candidate(s) not "
        f"reproduced (not findings; see {crashes / 'last-run.log'}); reproducers in {crashes}",
        file=sys.stderr,
    )
    if progress.pace:
        print(f"hipaa-grpc fuzz: pacing: {progress.pace}", file=sys.stderr)
    return EXIT_FINDINGS if found or still else EXIT_OK


def _show(progress: _Progress, started: float) -> None:
    line = (
        f"[{time.monotonic() - started:6.0f} s] {progress.execs:,} execs "
        f"({progress.rate:,}/s)  corpus {progress.corpus}  findings {len(progress.findings)}"
    )
    end = "\r" if sys.stderr.isatty() else "\n"
    print(line, end=end, file=sys.stderr, flush=True)


def _forward_signals(child: subprocess.Popen[str]) -> list[tuple[int, float]]:
    """On SIGINT/SIGTERM, ask the child to stop (libFuzzer writes its stats and exits).

    Returns the signals received with their times; the caller escalates to SIGTERM and
    then SIGKILL when the child outlives :data:`STOP_GRACE_S`.
    """
    stopped: list[tuple[int, float]] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        stopped.append((signum, time.monotonic()))
        if child.poll() is None:
            child.send_signal(signal.SIGINT)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return stopped


def _replay_known(where: Where, mode: str, crashes: Path) -> list[Path]:
    """Replay every reproducer in ``crashes``; move the fixed ones to ``crashes/fixed``."""
    files = sorted(crashes.glob("*.json"))
    if not files:
        return []
    still = []
    setup = _executor(where, mode)
    for f in files:
        try:
            if replay(f, where, mode, setup) is None:
                (crashes / "fixed").mkdir(exist_ok=True)
                shutil.move(str(f), crashes / "fixed" / f.name)
            else:
                still.append(f)
        except HarnessError as exc:
            print(f"hipaa-grpc fuzz: cannot replay {f.name}: {exc}", file=sys.stderr)
            still.append(f)
    return still
