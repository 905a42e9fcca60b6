"""A pytest plugin for the benchmarks: where the run waits, per test.

Loaded by ``bench/bench_run.py`` into the pytest it starts (``-p waitlog`` with this folder
on ``PYTHONPATH``); it changes nothing the run does, it only times it. For every test it
records the wall time (setup, call, teardown), the harness's CPU time (``getrusage``), the
target's CPU time (its processes' ``/proc`` counters), the wall time spent in gRPC calls,
and every wait: ``time.sleep``, ``Event.wait``, ``Thread.join`` and ``Future.result``,
named by the first frame of ours that asked for it (``harness/checks/authn.py:950``).
Waits in the main thread cost wall time; waits in background threads overlap with other
work and are listed apart. The record goes to the JSON file named by ``HIPAA_BENCH_WAITS``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: Folders whose frames name a wait (the first one of these up the stack).
OURS = ("/harness/", "/targets/", "/suites/")
#: Waits shorter than this are not itemised (they still count in the totals).
SHORT_S = 0.005
_TICK = os.sysconf("SC_CLK_TCK")


class _Log:
    def __init__(self) -> None:
        self.test = "session"
        self.tests: dict[str, dict[str, Any]] = collections.defaultdict(
            lambda: {"wall": 0.0, "cpu": 0.0, "target_cpu": 0.0, "grpc": 0.0, "calls": 0}
        )
        # (test, site, kind, main thread?) -> [seconds, count]
        self.waits: dict[tuple[str, str, str, bool], list[float]] = collections.defaultdict(
            lambda: [0.0, 0]
        )
        self.lock = threading.Lock()
        self.depth = threading.local()

    def wait(self, kind: str, seconds: float) -> None:
        site = _site()
        main = threading.current_thread() is threading.main_thread()
        with self.lock:
            entry = self.waits[(self.test, site, kind, main)]
            entry[0] += seconds
            entry[1] += 1


_LOG = _Log()


def _site() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if any(part in name for part in OURS) and not name.endswith("waitlog.py"):
            part = next(p for p in OURS if p in name)
            short = part.strip("/") + "/" + name.rsplit(part, 1)[1]
            return f"{short}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return "elsewhere"


def _timed(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_LOG.depth, "n", 0)
        _LOG.depth.n = depth + 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _LOG.depth.n = depth
            if depth == 0:  # a wait inside a wait counts once
                _LOG.wait(kind, time.perf_counter() - start)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


#: CPU seconds last seen of each descendant process, by pid: (what it runs, seconds).
_CHILDREN: dict[int, tuple[str, float]] = {}


def _target_cpu() -> float:
    """CPU seconds of every descendant process seen so far (the target, Atheris, ...)."""
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        what = " ".join(a.decode(errors="replace") for a in argv[:4])[:80]
        what = what or _CHILDREN.get(pid, ("", 0.0))[0]  # a process that ended has no argv
        _CHILDREN[pid] = (what, (int(fields[11]) + int(fields[12])) / _TICK)  # utime, stime
    return sum(seconds for _, seconds in _CHILDREN.values())


def _descendants(pid: int) -> Iterator[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            yield int(child)
            yield from _descendants(int(child))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pytest_configure(config: pytest.Config) -> None:
    """Time every wait from here on."""
    time.sleep = _timed("sleep", time.sleep)
    threading.Event.wait = _timed("event", threading.Event.wait)  # type: ignore[method-assign]
    threading.Thread.join = _timed("join", threading.Thread.join)  # type: ignore[method-assign]
    concurrent.futures.Future.result = _timed(  # type: ignore[method-assign]
        "future", concurrent.futures.Future.result
    )
    _LOG.start = (time.perf_counter(), _cpu())  # type: ignore[attr-defined]
    _LOG.configured_at = time.time()  # type: ignore[attr-defined]
    threading.Thread(target=_sample, name="waitlog-sampler", daemon=True).start()


def _sample() -> None:
    """Read the children's CPU every 0.1 s, so short-lived ones are counted too."""
    sleep = getattr(time.sleep, "__wrapped__", time.sleep)
    while True:
        _target_cpu()
        sleep(0.1)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Time gRPC calls (the channels module is imported by now or on first use)."""
    import harness.calling
    import harness.channels

    timed = _grpc_timer(harness.channels.invoke)
    harness.channels.invoke = timed
    harness.calling.invoke = timed  # type: ignore[attr-defined]


def _grpc_timer(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if threading.current_thread() is threading.main_thread():
                with _LOG.lock:
                    row = _LOG.tests[_LOG.test]
                    row["grpc"] += time.perf_counter() - start
                    row["calls"] += 1

    return wrapper


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Attribute everything from here to the end of the teardown to this test."""
    _LOG.test = item.nodeid
    start, cpu, target = time.perf_counter(), _cpu(), _target_cpu()
    try:
        return (yield)
    finally:
        row = _LOG.tests[item.nodeid]
        row["wall"] += time.perf_counter() - start
        row["cpu"] += _cpu() - cpu
        row["target_cpu"] += _target_cpu() - target
        _LOG.test = "session"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Write the record."""
    out = os.environ.get("HIPAA_BENCH_WAITS")
    if not out:
        return
    begun, cpu0 = _LOG.start  # type: ignore[attr-defined]
    waits = [
        {"test": t, "site": s, "kind": k, "main": m, "seconds": v[0], "count": int(v[1])}
        for (t, s, k, m), v in _LOG.waits.items()
    ]
    record = {
        "tests": dict(_LOG.tests),
        "waits": waits,
        "in_pytest": {"wall": time.perf_counter() - begun, "cpu": _cpu() - cpu0},
        "children": [{"what": w, "cpu": c} for w, c in _CHILDREN.values()],
        "children_cpu": _children_cpu(),
        "configured_at": _LOG.configured_at,  # type: ignore[attr-defined]
        "unconfigured_at": time.time(),
    }
    Path(out).write_text(json.dumps(record, indent=1))
