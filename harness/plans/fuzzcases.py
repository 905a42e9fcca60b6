"""FUZZ-001's inputs and calls, which the ERR controls judge too.

Hypothesis generates requests from each method's input type (:mod:`harness.fuzz`), once
per run (:func:`generated_inputs`, a warm-up of FUZZ-001, ERR-001 and ERR-002), after the
seed corpus's (``fuzz.seed_corpus``); they go out with an authorised token
(:func:`fuzz_calls`), never more at once than the server's SETTINGS_MAX_CONCURRENT_STREAMS,
each through back-pressure and the replay gate (:func:`harness.engine.settle`, with the
calls of :func:`input_link`): back-pressure is tried again and never judged, a candidate
counts only when it reproduces. The oracle is every fuzz mode's (:func:`verdict`). A method
stops at its first violation; the input is shrunk (bounded by :data:`SHRINK_CALLS` and
:data:`SHRINK_SECONDS`) and the smallest failing one reported if it fails again alone.
FUZZ-002's black-box mutants go out through the same :func:`pacing_for` and
:func:`input_link`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.errors import Flaky, HypothesisWarning

from harness.channels import CallResult
from harness.engine import (
    DEFAULT_IN_FLIGHT,
    FuzzMethod,
    Link,
    Pacing,
    Settled,
    judge,
    paced,
    pressure,
    server_streams,
    settle,
    surface_from,
)
from harness.fuzz import messages
from harness.lifecycle import read_file
from harness.plans.canaries import canaries
from harness.principals import Principal
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
        unanswered: Inputs that met back-pressure to the end (their last answer): never
            findings, and never inputs that reached a handler.
        set_aside: Back-pressure answers (REFUSED_STREAM, GOAWAY...) that were tried again.
        notes: What the gate saw on the way (candidates not reproduced...), not findings.
    """

    path: str
    results: list[CallResult] = field(default_factory=list)
    violation: str = ""
    example: str = ""
    healthy: CallResult | None = None
    failed: CallResult | None = None
    unanswered: list[CallResult] = field(default_factory=list)
    set_aside: list[CallResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self, settled: Settled, slow_ms: float) -> str:
        """File one input's way through the gate; why its answer breaks the oracle, or ``""``.

        An answered input's answer joins :attr:`results`; one that got none joins
        :attr:`unanswered`; back-pressure answers and notes are kept beside.
        """
        self.set_aside += settled.set_aside
        self.notes += settled.notes
        if not settled.answered:
            self.unanswered.append(settled.result)
            return ""
        self.results.append(settled.result)
        return settled.finding or verdict(settled.result, slow_ms)


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


def pacing_for(run: Run, planned: int) -> Pacing:
    """One control's pacing, for ``planned`` inputs.

    In flight under the server's SETTINGS_MAX_CONCURRENT_STREAMS, within the run's time
    budget (``safety.max_duration_s``), and ``safety.max_requests`` calls in all.
    """
    deadline = time.monotonic() + float(run.config.get("safety.max_duration_s"))
    # a few replays always, so that a candidate is never dropped for want of one
    spare = max(10, int(run.config.get("safety.max_requests")) - planned)
    return Pacing.under(server_streams(run), deadline=deadline, spare=spare)


def input_link(
    run: Run, path: str, payload: bytes, principal: Principal | None, slow_ms: float, what: str
) -> Link:
    """The calls the gate (:func:`harness.engine.settle`) may make for one fuzz input.

    The input goes out on the run's channel (``principal``'s, for a client certificate)
    or alone on a new one; the control call is the liveness method; the target is gone
    once it accepts no TCP connection (which ends the run's sending).
    """
    timeout = slow_ms / 1000 + 1

    def send(channel: grpc.Channel | None = None) -> CallResult:
        return run.call(
            path, [payload], principal=principal, channel=channel, timeout=timeout, max_responses=1
        )

    def control(fresh: bool) -> CallResult:
        if not fresh:
            usual = run.channel_for(principal) if principal is not None else run.channel()
            return run.call(run.liveness, [b""], channel=usual, timeout=5)
        return _on_new_channel(
            run, principal, lambda ch: run.call(run.liveness, [b""], channel=ch, timeout=5)
        )

    return Link(
        send=send,
        alone=lambda: _on_new_channel(run, principal, send),
        control=control,
        gone=lambda: "" if run.still_there() else run.unresponsive,
        what=what,
    )


def _on_new_channel(
    run: Run, principal: Principal | None, call: Callable[[grpc.Channel], CallResult]
) -> CallResult:
    """``call`` over a channel of its own (a new connection), closed after."""
    endpoint = None
    if principal is not None and principal.has_cert:
        endpoint = replace(
            run.endpoint,
            client_cert_pem=read_file(principal.client_cert),
            client_key_pem=read_file(principal.client_key),
        )
    channel = run.new_channel(endpoint)
    try:
        return call(channel)
    finally:
        channel.close()


def fuzz_calls(run: Run) -> list[MethodRun] | str:
    """Fuzz every method once per run (memoised: ERR-001 and ERR-002 judge these calls too).

    The requests were generated in the background when the run opened
    (:func:`generated_inputs`); they go out in windows as wide as the server's concurrency
    allows, each through back-pressure and the replay gate (:func:`harness.engine.settle`),
    and only a method where one fails runs Hypothesis again, with the same seed, to find
    that input once more and shrink it.
    """

    def compute() -> list[MethodRun] | str:
        surface = surface_from(run)
        if isinstance(surface, str):
            return surface
        per_method = int(run.config.get("fuzz.examples_per_method", 200))
        generated = generated_inputs(run)
        pacing = pacing_for(run, sum(len(v) for v in generated.values()))
        methods = [m for m in surface.methods if m.callers]

        def first(m: FuzzMethod) -> MethodRun:
            return _send_generated(run, m, generated.get(m.path, []), surface.slow_ms, pacing)

        # Fewest callers first: their calls are the longest held to a per-identity rate.
        order = sorted(methods, key=lambda m: len(m.callers))
        with ThreadPoolExecutor(max_workers=method_lanes(server_streams(run))) as pool:
            done = dict(zip((m.path for m in order), pool.map(first, order), strict=True))
        out = [done[m.path] for m in methods]
        for i, m in enumerate(methods):  # one at a time: Hypothesis runs in this thread
            if out[i].violation:  # again under Hypothesis, to shrink it
                again = _fuzz_method(run, m, per_method, surface.slow_ms, pacing)
                out[i] = again if again.violation else out[i]
        return out

    return run.memo("fuzz", compute)


#: Methods whose generated inputs go out at once, each ``DEFAULT_IN_FLIGHT`` at a time.
METHOD_LANES = 3


def method_lanes(advertised: int | None) -> int:
    """How many methods are fuzzed at once.

    Each lane keeps the pacing's in-flight limit, so together they stay within the
    server's SETTINGS_MAX_CONCURRENT_STREAMS (one lane when it advertises none or it cannot
    be read).
    """
    if advertised is None:
        return 1
    return max(1, min(METHOD_LANES, advertised // DEFAULT_IN_FLIGHT))


def generated_inputs(run: Run) -> dict[str, list[Any]]:
    """FUZZ-001's requests for every method, generated once (CPU only: no call is made).

    The seed corpus's requests for a method (``fuzz.seed_corpus``) that parse as its
    input type come first, as many as ``fuzz.examples_per_method`` at most.
    """

    def compute() -> dict[str, list[Any]]:
        surface = surface_from(run)
        if isinstance(surface, str):
            return {}
        count = int(run.config.get("fuzz.examples_per_method", 200))
        return {
            m.path: parsed_seeds(m, surface.seeded(m))[:count]
            + _generate(m, count, run.options.seed)
            for m in surface.methods
            if m.callers  # fuzz_calls sends nothing to a method no principal may call
        }

    return run.memo("fuzz-generated", compute)


def parsed_seeds(m: FuzzMethod, payloads: list[bytes]) -> list[Any]:
    """The ``payloads`` that parse as ``m``'s input type, as messages."""
    out = []
    for payload in payloads:
        try:
            out.append(m.cls.FromString(payload))
        except (DecodeError, RecursionError, ValueError):
            continue
    return out


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


def breaks(settled: Settled, slow_ms: float) -> bool:
    """Whether an input's way through the gate ends its method's fuzzing (a finding)."""
    return bool(settled.finding) or (settled.answered and bool(verdict(settled.result, slow_ms)))


def over_budget(result: CallResult, slow_ms: float) -> str:
    """A candidate for FUZZ-001's gate, or ``""``.

    The oracle's failure, or an answer slower than the p99 budget (a third of
    ``slow_ms``): that one counts only if it is slow again alone.
    """
    why = verdict(result, slow_ms)
    took = result.elapsed_s * 1000
    if why or took <= slow_ms / 3 or result.responses:
        return why
    return f"took {took:.0f} ms (p99 budget {slow_ms / 3:.0f} ms)"


def _send_generated(
    run: Run, m: FuzzMethod, messages_: list[Any], slow_ms: float, pacing: Pacing
) -> MethodRun:
    callers = [run.principal(name) for name in m.callers]
    out = MethodRun(m.path)

    def one(item: tuple[int, Any]) -> Settled:
        i, msg = item
        caller = callers[i % len(callers)]  # spread: rate limits are per identity
        link = input_link(run, m.path, msg.SerializeToString(), caller, slow_ms, "fuzz inputs")
        return settle(link, lambda r: over_budget(r, slow_ms), pacing)

    items = list(enumerate(messages_))
    done = paced(pacing, items, one, lambda s: breaks(s, slow_ms))
    for (_, msg), settled in zip(items, done, strict=False):
        why = out.record(settled, slow_ms)
        if why and not out.violation:
            out.violation, out.failed = f"{why}: {settled.result.summary()}", settled.result
            out.example = _masked(run, msg)
    out.healthy = run.call(run.liveness, [b""], timeout=5)
    return out


def _masked(run: Run, msg: Any) -> str:
    text = json_format.MessageToJson(msg, indent=None)
    return canaries(run).mask(text if len(text) < 400 else text[:400] + "...")


def _fuzz_method(
    run: Run, m: FuzzMethod, examples: int, slow_ms: float, pacing: Pacing
) -> MethodRun:
    callers = [run.principal(name) for name in m.callers]
    out = MethodRun(m.path)
    turn = [0]
    # (size, why, masked example, call, payload, caller) of the smallest real failure
    best: list[tuple[int, str, str, CallResult, bytes, Principal | None]] = []
    shrink = {"calls": SHRINK_CALLS, "until": 0.0}

    @_settings_for(examples)
    @seed(run.options.seed ^ zlib.crc32(m.path.encode()))
    @given(messages(m.cls))
    def one(msg: Any) -> None:
        why = ""
        if best and (shrink["calls"] <= 0 or time.monotonic() > shrink["until"]):
            # Shrinking is bounded: past the budget every input "fails" unsent, so that
            # Hypothesis stops; the smallest failure actually observed is what is reported.
            why = best[0][1]
        elif time.monotonic() <= pacing.deadline:
            why = send(msg)
        if why:
            raise _Violation(why)  # one raise site: Hypothesis sees one failure, not two

    def send(msg: Any) -> str:
        caller = callers[turn[0] % len(callers)]  # spread: rate limits are per identity
        turn[0] += 1
        if best:
            shrink["calls"] -= 1
        payload = msg.SerializeToString()
        link = input_link(run, m.path, payload, caller, slow_ms, "fuzz inputs")
        settled = settle(link, _no_candidate, pacing)  # back-pressure only: replayed below
        why = out.record(settled, slow_ms)
        if why:
            if not best:
                shrink["until"] = min(pacing.deadline, time.monotonic() + SHRINK_SECONDS)
            if not best or len(payload) < best[0][0]:
                example = _masked(run, msg)
                best[:] = [
                    (
                        len(payload),
                        f"{why}: {settled.result.summary()}",
                        example,
                        settled.result,
                        payload,
                        caller,
                    )
                ]
        return why

    with warnings.catch_warnings(), contextlib.suppress(_Violation, Flaky):
        warnings.simplefilter("ignore", HypothesisWarning)  # e.g. "overly large repr"
        one()
    if best and _reproduces(run, m, best[0][4], best[0][5], slow_ms, out):
        _, out.violation, out.example, out.failed, _, _ = best[0]
    out.healthy = run.call(run.liveness, [b""], timeout=5)
    return out


def _no_candidate(result: CallResult) -> str:
    return ""


def _reproduces(
    run: Run,
    m: FuzzMethod,
    payload: bytes,
    caller: Principal | None,
    slow_ms: float,
    out: MethodRun,
) -> bool:
    """Whether the shrunk input fails the oracle again, alone on a new connection."""
    link = input_link(run, m.path, payload, caller, slow_ms, "fuzz inputs")
    again = link.alone()
    if verdict(again, slow_ms) and not pressure(again):
        return True
    out.notes.append(f"the shrunk input did not fail again alone: {again.summary()}")
    return False
