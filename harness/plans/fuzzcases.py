"""FUZZ-001's inputs and calls, which the ERR controls judge too.

Hypothesis generates requests from each method's input type (:mod:`harness.fuzz`), once
per run (:func:`generated_inputs`, a warm-up of FUZZ-001, ERR-001 and ERR-002); they go out
one by one with an authorised token (:func:`fuzz_calls`). The oracle is every fuzz mode's
(:func:`verdict`). A method stops at its first violation; the input is shrunk (bounded by
:data:`SHRINK_CALLS` and :data:`SHRINK_SECONDS`) and the smallest failing one reported.
"""

from __future__ import annotations

import contextlib
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.errors import Flaky, HypothesisWarning

from harness.channels import CallResult
from harness.engine import FuzzMethod, judge, surface_from
from harness.fuzz import messages
from harness.plans.canaries import canaries
from harness.run import Run


@dataclass
class MethodRun:
    """What fuzzing one method produced.

    Attributes:
        path: The method fuzzed.
        results: Every call made, in order (shrinking's included).
        violation: Why the reported input broke the oracle (:func:`verdict`), or ``""``.
        example: The reported input, masked (JSON, or a description of the bytes).
        healthy: The liveness call made after the method's inputs, if one was made.
        failed: The call that broke the oracle with the reported input.
    """

    path: str
    results: list[CallResult] = field(default_factory=list)
    violation: str = ""
    example: str = ""
    healthy: CallResult | None = None
    failed: CallResult | None = None


class _Violation(Exception):
    pass


#: Shrinking a failing input costs at most this many more calls, and this long.
SHRINK_CALLS, SHRINK_SECONDS = 60, 3.0


def verdict(result: CallResult, slow_ms: float) -> str:
    """Why ``result`` breaks the oracle every fuzz mode shares (:func:`harness.engine.judge`)."""
    return judge(
        result.code,
        result.details,
        elapsed_ms=result.elapsed_s * 1000,
        slow_ms=slow_ms,
        streaming=bool(result.responses),
    )


def fuzz_calls(run: Run) -> list[MethodRun] | str:
    """Fuzz every method once per run (memoised: ERR-001 and ERR-002 judge these calls too).

    The requests were generated in the background when the run opened
    (:func:`generated_inputs`); they go out one by one, and only a method where one fails
    runs Hypothesis again, with the same seed, to find that input once more and shrink it.
    """

    def compute() -> list[MethodRun] | str:
        surface = surface_from(run)
        if isinstance(surface, str):
            return surface
        per_method = int(run.config.get("fuzz.examples_per_method", 200))
        deadline = time.monotonic() + float(run.config.get("safety.max_duration_s"))
        generated = generated_inputs(run)
        out = []
        for m in surface.methods:
            if not m.callers:
                continue
            first = _send_generated(run, m, generated.get(m.path, []), surface.slow_ms, deadline)
            if first.violation:  # again under Hypothesis, to shrink it
                again = _fuzz_method(run, m, per_method, surface.slow_ms, deadline)
                first = again if again.violation else first
            out.append(first)
        return out

    return run.memo("fuzz", compute)


def generated_inputs(run: Run) -> dict[str, list[Any]]:
    """FUZZ-001's requests for every method, generated once (CPU only: no call is made)."""

    def compute() -> dict[str, list[Any]]:
        surface = surface_from(run)
        if isinstance(surface, str):
            return {}
        count = int(run.config.get("fuzz.examples_per_method", 200))
        return {m.path: _generate(m, count, run.options.seed) for m in surface.methods}

    return run.memo("fuzz-generated", compute)


def _generate(m: FuzzMethod, count: int, run_seed: int) -> list[Any]:
    """The requests :func:`_fuzz_method` would send, in its order (same seed and settings)."""
    got: list[Any] = []

    @_settings_for(count)
    @seed(run_seed ^ zlib.crc32(m.path.encode()))
    @given(messages(m.cls))
    def collect(msg: Any) -> None:
        got.append(msg)

    collect()  # no warning filter here: this runs in a thread, and filters are process-wide
    return got


def _settings_for(count: int) -> settings:
    return settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
        verbosity=Verbosity.quiet,  # the harness reports the failing input itself, masked
    )


def _send_generated(
    run: Run, m: FuzzMethod, messages_: list[Any], slow_ms: float, deadline: float
) -> MethodRun:
    callers = [run.principal(name) for name in m.callers]
    out = MethodRun(m.path)
    for i, msg in enumerate(messages_):
        if time.monotonic() > deadline:
            break
        result = run.call(
            m.path,
            [msg.SerializeToString()],
            principal=callers[i % len(callers)],  # spread: rate limits are per identity
            timeout=slow_ms / 1000 + 1,
            max_responses=1,
        )
        out.results.append(result)
        why = verdict(result, slow_ms)
        if why:
            out.violation, out.failed = f"{why}: {result.summary()}", result
            text = json_format.MessageToJson(msg, indent=None)
            out.example = canaries(run).mask(text if len(text) < 400 else text[:400] + "...")
            break
    liveness = run.liveness
    out.healthy = run.call(liveness, [b""], timeout=5)
    return out


def _fuzz_method(
    run: Run, m: FuzzMethod, examples: int, slow_ms: float, deadline: float
) -> MethodRun:
    path, cls = m.path, m.cls
    callers = [run.principal(name) for name in m.callers]
    out = MethodRun(path)
    turn = [0]
    # (size, why, masked example, call) of the smallest real failure
    best: list[tuple[int, str, str, CallResult]] = []
    shrink = {"calls": SHRINK_CALLS, "until": 0.0}

    @_settings_for(examples)
    @seed(run.options.seed ^ zlib.crc32(path.encode()))
    @given(messages(cls))
    def one(msg: Any) -> None:
        why = ""
        if best and (shrink["calls"] <= 0 or time.monotonic() > shrink["until"]):
            # Shrinking is bounded: past the budget every input "fails" unsent, so that
            # Hypothesis stops; the smallest failure actually observed is what is reported.
            why = best[0][1]
        elif time.monotonic() <= deadline:
            why = send(msg)
        if why:
            raise _Violation(why)  # one raise site: Hypothesis sees one failure, not two

    def send(msg: Any) -> str:
        caller = callers[turn[0] % len(callers)]  # spread: rate limits are per identity
        turn[0] += 1
        if best:
            shrink["calls"] -= 1
        payload = msg.SerializeToString()
        result = run.call(
            path, [payload], principal=caller, timeout=slow_ms / 1000 + 1, max_responses=1
        )
        out.results.append(result)
        why = verdict(result, slow_ms)
        if why:
            if not best:
                shrink["until"] = min(deadline, time.monotonic() + SHRINK_SECONDS)
            if not best or len(payload) < best[0][0]:
                text = json_format.MessageToJson(msg, indent=None)
                example = canaries(run).mask(text if len(text) < 400 else text[:400] + "...")
                best[:] = [(len(payload), f"{why}: {result.summary()}", example, result)]
        return why

    with warnings.catch_warnings(), contextlib.suppress(_Violation, Flaky):
        warnings.simplefilter("ignore", HypothesisWarning)  # e.g. "overly large repr"
        one()
    if best:
        _, out.violation, out.example, out.failed = best[0]
    liveness = run.liveness
    out.healthy = run.call(liveness, [b""], timeout=5)
    return out
