"""Schema-aware property fuzzing (FUZZ-001).

For every declared method (writes only under mutations), Hypothesis generates requests
from the input type's descriptor (:mod:`harness.fuzz`) and sends them with an authorised
token. The oracle is the catalogue's: only OK or application codes (3, 5, 6, 7, 8, 9, 11);
never UNKNOWN, UNAVAILABLE or DATA_LOSS; INTERNAL only with generic text; no call slower
than three times ``fuzz.latency_budget_ms`` and p99 within it; the service healthy after
each method. A method stops at its first violation, which is reported with the input.
"""

from __future__ import annotations

import contextlib
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.errors import HypothesisWarning

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check
from harness.checks._calls import policy_or_skip
from harness.checks.audit import canaries
from harness.fuzz import messages
from harness.outcome import Observation, Outcome, Status
from harness.policy import Policy
from harness.run import Run

_FINE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.CANCELLED,  # the harness stopped reading a long stream
}


@dataclass
class MethodRun:
    """What fuzzing one method produced."""

    path: str
    results: list[CallResult] = field(default_factory=list)
    violation: str = ""
    example: str = ""
    healthy: CallResult | None = None


class _Violation(Exception):
    pass


def _verdict(result: CallResult, slow_ms: float) -> str:
    """Why ``result`` breaks the oracle, or ``""``."""
    from harness.checks.errors import LEAKS

    if result.code == grpc.StatusCode.DEADLINE_EXCEEDED and result.responses:
        return ""  # a stream that was still delivering when the harness stopped it
    if result.elapsed_s * 1000 > slow_ms:
        return f"took {result.elapsed_s * 1000:.0f} ms (limit {slow_ms:.0f} ms)"
    if result.code == grpc.StatusCode.INTERNAL:
        leaks = [kind for kind, pattern, _ in LEAKS if pattern.search(result.details)]
        return f"INTERNAL (13) with {leaks[0]} in its message" if leaks else ""
    if result.code not in _FINE:
        return f"{result.status}"
    return ""


def fuzz_calls(run: Run) -> list[MethodRun] | str:
    """Fuzz every method once per run (memoised: ERR-002 judges these calls too)."""

    def compute() -> list[MethodRun] | str:
        policy = Policy.of(run)
        if policy is None:
            return "no method descriptors: " + run.catalogue_problem()
        per_method = int(run.config.get("fuzz.examples_per_method", 200))
        budget_ms = float(run.config.get("fuzz.latency_budget_ms", 1000))
        deadline = time.monotonic() + float(run.config.get("safety.max_duration_s"))
        runs = []
        for m in policy.protected():
            if policy.is_write(m.path) and not policy.allow_mutations:
                continue
            allowed = sorted(policy.allowed(m.path) or ())
            callers = [p for n in allowed if (p := run.principal(n)) and p.has_token]
            least = run.principal("least-privileged")
            if least is not None and least.name in allowed:
                callers = [least, *[c for c in callers if c is not least]]
            if not callers:
                continue
            runs.append(_fuzz_method(run, policy, m.path, callers, per_method, budget_ms, deadline))
        return runs

    return run.memo("fuzz", compute)


def _fuzz_method(
    run: Run,
    policy: Policy,
    path: str,
    callers: list[Any],
    examples: int,
    budget_ms: float,
    deadline: float,
) -> MethodRun:
    method = policy.catalogue.method(path)
    cls = policy.catalogue.message_class(method.input_type)
    out = MethodRun(path)
    slow_ms = 3 * budget_ms
    turn = [0]

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
        verbosity=Verbosity.quiet,  # the harness reports the failing input itself, masked
    )
    @seed(run.options.seed ^ zlib.crc32(path.encode()))
    @given(messages(cls))
    def one(msg: Any) -> None:
        if out.violation:  # Hypothesis replays the failing input: it must fail again
            raise _Violation(out.violation)
        if time.monotonic() > deadline:
            return
        caller = callers[
            turn[0] % len(callers)
        ]  # spread over identities: rate limits are per identity
        turn[0] += 1
        result = run.call(
            path,
            [msg.SerializeToString()],
            principal=caller,
            timeout=slow_ms / 1000 + 1,
            max_responses=1,
        )
        out.results.append(result)
        why = _verdict(result, slow_ms)
        if why:
            out.violation = f"{why}: {result.summary()}"
            text = json_format.MessageToJson(msg, indent=None)
            out.example = canaries(run).mask(text if len(text) < 400 else text[:400] + "...")
            raise _Violation(out.violation)

    with warnings.catch_warnings(), contextlib.suppress(_Violation):
        warnings.simplefilter("ignore", HypothesisWarning)  # e.g. "overly large repr"
        one()
    liveness = run.config.str_("schema.liveness_method") or "/grpc.health.v1.Health/Check"
    out.healthy = run.call(liveness, [b""], timeout=5)
    return out


@check("FUZZ-001")
def property_fuzzing(run: Run) -> Outcome:
    """Schema-aware property fuzzing (Hypothesis).

    For every declared method (writes only with mutations allowed), up to
    ``fuzz.examples_per_method`` requests generated from the descriptor (scalar edge
    values, NaN and infinities, long and non-BMP strings, undeclared enum numbers,
    repeated fields, maps, nesting up to 20 levels) go out with an authorised token, over
    the principals allowed on the method, seeded from ``--hipaa-seed``. Every status must
    be OK or an application code (3, 5, 6, 7, 8, 9, 11); UNKNOWN, UNAVAILABLE and
    DATA_LOSS fail; INTERNAL only with generic text; no call may take three times
    ``fuzz.latency_budget_ms`` and p99 must stay within it; the service must be healthy
    after each method.
    """
    control = CATALOGUE["FUZZ-001"]
    policy = policy_or_skip(run, "FUZZ-001")
    if isinstance(policy, Outcome):
        return policy
    runs = fuzz_calls(run)
    if isinstance(runs, str):
        return Outcome.skip(control, runs)
    if not runs:
        return Outcome.skip(control, "no method with an authorised principal to fuzz with")
    budget_ms = float(run.config.get("fuzz.latency_budget_ms", 1000))
    observations = []
    for r in runs:
        times = sorted(c.elapsed_s * 1000 for c in r.results)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0
        codes: dict[str, int] = {}
        for c in r.results:
            codes[c.code.name] = codes.get(c.code.name, 0) + 1
        summary = f"{len(r.results)} inputs: " + ", ".join(
            f"{n} {k}" for k, n in sorted(codes.items())
        )
        if r.violation:
            observations.append(
                Observation(
                    f"fuzzing {r.path}",
                    f"{r.violation}; input {r.example}",
                    "only OK or application codes, generic text, within the latency budget",
                    Status.FAIL,
                    Severity.HIGH,
                    r.results[-1].request_id,
                )
            )
        else:
            ok = p99 <= budget_ms
            observations.append(
                Observation(
                    f"fuzzing {r.path}",
                    f"{summary}; p99 {p99:.0f} ms",
                    f"only OK or application codes; p99 <= {budget_ms:.0f} ms",
                    Status.PASS if ok else Status.FAIL,
                    Severity.MEDIUM,
                )
            )
        if r.healthy is not None:
            good = r.healthy.code == grpc.StatusCode.OK
            observations.append(
                Observation(
                    f"health after fuzzing {r.path}",
                    r.healthy.summary(),
                    "OK",
                    Status.PASS if good else Status.FAIL,
                    Severity.HIGH,
                    r.healthy.request_id,
                )
            )
    return Outcome.from_observations(
        control, observations, passed="every generated request got a well-formed answer"
    )
