"""Schema-aware property fuzzing (FUZZ-001) and wire-level mutation (FUZZ-002).

For every declared method (writes only under mutations), Hypothesis generates requests
from the input type's descriptor (:mod:`harness.fuzz`) and sends them with an authorised
token (:mod:`harness.plans.fuzzcases`, whose calls the ERR controls judge too). The oracle
is the catalogue's: only OK or application codes (3, 5, 6, 7, 8, 9, 11); never UNKNOWN,
UNAVAILABLE or DATA_LOSS; INTERNAL only with generic text; no call slower than three times
``fuzz.latency_budget_ms`` and p99 within it; the service healthy after each method.
FUZZ-002 damages valid requests on the wire (:mod:`harness.wire`) and runs white-box
Atheris when the service can be loaded in-process.

Each control is planned, sent and judged apart: the judges (:func:`judge_inputs`,
:func:`judge_mutants`, :func:`judge_whitebox`, and the shared
:func:`harness.oracles.judge_health`) are pure functions of the recorded calls
(:class:`~harness.plans.fuzzcases.MethodRun`) and the configured limits.
An input that reached no handler (every answer UNAUTHENTICATED or PERMISSION_DENIED) was
not fuzzed: that method is INCONCLUSIVE, never a PASS.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from harness.canary import CanarySet
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check, warmup
from harness.engine import (
    Finding,
    FuzzMethod,
    Pacing,
    Settled,
    Surface,
    paced,
    pressure,
    settle,
    surface_from,
)
from harness.oracles import PERMISSION_DENIED, UNAUTHENTICATED, edge_answered, judge_health
from harness.outcome import NotApplicable, Observation, Outcome, Probe, Status
from harness.plans.calls import policy_or_skip
from harness.plans.canaries import canaries
from harness.plans.fuzzcases import (
    MethodRun,
    breaks,
    fuzz_calls,
    generated_inputs,
    input_link,
    pacing_for,
    verdict,
)
from harness.run import Run
from harness.wire import BOMB_DEPTHS, MUTATIONS, mutate, nesting_bomb

# FUZZ-001's inputs are generated as the run opens; ERR-001 and ERR-002 judge their calls.
warmup("FUZZ-001", "ERR-001", "ERR-002")(generated_inputs)

#: Answers that come from authentication or authorisation, before any handler ran.
REFUSALS = frozenset({UNAUTHENTICATED, PERMISSION_DENIED})

FUZZ_001_PROBES = (
    Probe(
        "inputs",
        "generated requests per method: only OK or application codes, INTERNAL only with "
        "generic text, none over 3 x fuzz.latency_budget_ms, p99 within it",
    ),
    Probe("health", "the liveness method answers OK after each method's inputs"),
)
FUZZ_002_PROBES = (
    Probe(
        "black-box",
        "damaged valid requests per method get FUZZ-001's oracle; healthy after each method",
    ),
    Probe(
        "white-box",
        "Atheris in-process: no escaped exception, no handler reached without credentials",
        required=False,
        needs=("fuzz.inprocess_entrypoint",),
    ),
)


@check("FUZZ-001", probes=FUZZ_001_PROBES)
def property_fuzzing(run: Run) -> Outcome:
    """Schema-aware property fuzzing (Hypothesis).

    For every declared method (writes only with mutations allowed), up to
    ``fuzz.examples_per_method`` requests generated from the descriptor (scalar edge
    values, NaN and infinities, long and non-BMP strings, undeclared enum numbers,
    repeated fields, maps, nesting up to 20 levels) go out with an authorised token, over
    the principals allowed on the method, seeded from ``--hipaa-seed``.

    (inputs) Every status must be OK or an application code (3, 5, 6, 7, 8, 9, 11);
    UNKNOWN, UNAVAILABLE and DATA_LOSS fail; INTERNAL only with generic text; no call may
    take three times ``fuzz.latency_budget_ms`` and p99 must stay within it. A method
    whose every input was refused (UNAUTHENTICATED or PERMISSION_DENIED) reached no
    handler: INCONCLUSIVE. (health) The service must be healthy after each method.
    """
    control = CATALOGUE["FUZZ-001"]
    policy_or_skip(run)
    runs = fuzz_calls(run)
    if isinstance(runs, str):
        raise NotApplicable(runs)
    if not runs:
        raise NotApplicable("no method with an authorised principal to fuzz with")
    budget_ms = float(run.config.get("fuzz.latency_budget_ms", 1000))
    observations = judge_fuzzing(runs, budget_ms, canaries(run))
    return Outcome.from_observations(
        control, observations, passed="every generated request got a well-formed answer"
    )


# -- judges (pure: recorded calls and limits in, observations out) ------------------------


def judge_fuzzing(
    runs: Sequence[MethodRun], budget_ms: float, planted: CanarySet | None = None
) -> list[Observation]:
    """FUZZ-001's verdict on every fuzzed method: its inputs, then the health after them.

    ``planted`` are the run's canaries: one in an error fails (:func:`canary_leak`).
    """
    out = []
    for r in runs:
        out.append(judge_inputs(r, budget_ms, planted).of("inputs"))
        if r.healthy is not None:
            out.append(judge_health(f"health after fuzzing {r.path}", r.healthy).of("health"))
    return out


def judge_inputs(r: MethodRun, budget_ms: float, planted: CanarySet | None = None) -> Observation:
    """One method's generated inputs, against the catalogue's oracle.

    ``r.violation`` is the failure found while sending (shrunk when it could be); without
    one, each recorded call is judged again, so a record from anywhere is judged alike,
    and so is a canary of ``planted`` (the run's) in an error (:func:`canary_leak`).
    Slow means over three times ``budget_ms``; p99 must stay within ``budget_ms``.
    """
    probe = f"fuzzing {r.path}"
    wanted = "only OK or application codes, generic text, no canary, within the latency budget"
    failed = _failure(r, 3 * budget_ms, planted)
    if failed is not None:
        why, call = failed
        if not call.request_id:  # the run had stopped sending: nothing was observed
            return Observation(probe, why, wanted, Status.INCONCLUSIVE)
        example = f"; input {r.example}" if r.example else ""
        return Observation(
            probe, why + example, wanted, Status.FAIL, Severity.HIGH, call.request_id
        )
    unreached = _unreached(r)
    if unreached:
        return Observation(probe, unreached, "inputs that reach a handler", Status.INCONCLUSIVE)
    p99 = _p99(r.results)
    ok = p99 <= budget_ms
    return Observation(
        probe,
        f"{len(r.results)} inputs: {_codes(r.results)}; p99 {p99:.0f} ms{_aside(r)}",
        f"only OK or application codes; p99 <= {budget_ms:.0f} ms",
        Status.PASS if ok else Status.FAIL,
        Severity.MEDIUM,
    )


def _failure(
    r: MethodRun, slow_ms: float, planted: CanarySet | None = None
) -> tuple[str, CallResult] | None:
    """The failure to report: the one found while sending, else the first recorded."""
    if r.violation:
        call = r.failed or (r.results[-1] if r.results else None)
        if call is not None:
            return r.violation, call
    for call in r.results:
        if why := verdict(call, slow_ms) or canary_leak(call, planted):
            return f"{why}: {call.summary()}", call
    return None


def canary_leak(call: CallResult, planted: CanarySet | None) -> str:
    """Why ``call`` is an error that carries one of the ``planted`` canaries, or ``""``.

    The catalogue's "no canary appears in any error": the status message and every
    metadata value (``grpc-status-details-bin`` as its bytes) of a call that did not end
    OK, searched in every encoding the detector knows (:meth:`CanarySet.scan`); only a
    strong hit counts (a weak one alone matches by chance).
    """
    if planted is None or call.code == grpc.StatusCode.OK:
        return ""
    places: list[tuple[str, str | bytes]] = [("status message", call.details)]
    places += [(f"metadata {k}", v) for k, v in (*call.initial_metadata, *call.trailing_metadata)]
    for where, text in places:
        hit = next((h for h in planted.scan(text, where) if h.strong), None) if text else None
        if hit is not None:
            return f"{call.code.name} with a canary value ({hit.category}) in its {where}"
    return ""


def _reached(call: CallResult) -> bool:
    """Whether a handler answered the input.

    Not a refusal by authentication or authorisation, not back-pressure
    (:func:`harness.engine.pressure`: refused streams, GOAWAY, closed connections, rate
    limits), and not a proxy's own HTTP answer (:func:`harness.oracles.edge_answered`: a
    413 for a body over its limit never reached a handler).
    """
    return call.code not in REFUSALS and not pressure(call) and not edge_answered(call)


def _unreached(r: MethodRun) -> str:
    """Why too few inputs reached a handler, or ``""``.

    None sent, every one refused or pushed back, or more inputs that got nothing but
    back-pressure than inputs a handler answered.
    """
    if not r.results and not r.unanswered:
        return "no input was sent (the run's time budget was spent)"
    reached = sum(1 for c in r.results if _reached(c))
    pushed = f"; {len(r.unanswered)} got only back-pressure" if r.unanswered else ""
    if not reached:
        return (
            f"{len(r.results)} inputs answered, every one refused or pushed back "
            f"({_codes(r.results) or 'none'}){pushed}: none reached a handler"
        )
    if len(r.unanswered) > reached:
        return f"only {reached} inputs reached a handler{pushed}{_aside(r)}"
    return ""


def _aside(r: MethodRun) -> str:
    """What the gate kept out of the verdict: back-pressure, unanswered inputs, notes."""
    parts = []
    if r.set_aside:
        kinds = sorted({pressure(c) for c in r.set_aside})
        parts.append(f"{len(r.set_aside)} back-pressure answers tried again ({', '.join(kinds)})")
    if r.unanswered:
        parts.append(f"{len(r.unanswered)} inputs never answered (not judged)")
    if r.notes:
        parts.append(f"{len(r.notes)} note(s), not findings: {r.notes[0][:200]}")
    return "".join(f"; {p}" for p in parts)


def _codes(results: Sequence[CallResult]) -> str:
    counts: dict[str, int] = {}
    for c in results:
        counts[c.code.name] = counts.get(c.code.name, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def _p99(results: Sequence[CallResult]) -> float:
    times = sorted(c.elapsed_s * 1000 for c in results)
    return times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0


# -- FUZZ-002 ---------------------------------------------------------------------------


@check("FUZZ-002", probes=FUZZ_002_PROBES)
def wire_mutation(run: Run) -> Outcome:
    """Wire-level mutation (black-box) and coverage-guided Atheris in-process (white-box).

    (black-box) For every method FUZZ-001 fuzzes, its valid request damaged by each
    :mod:`harness.wire` mutation in turn (truncated and over-long varints, wrong wire
    types, field number 0, over-long length prefixes, duplicated singular fields, unknown
    fields, invalid UTF-8, deep unknown groups), ``fuzz.examples_per_method`` // 2 in all,
    plus a nesting bomb at each depth of :data:`harness.wire.BOMB_DEPTHS` where a field
    recurses. Seeded from ``--hipaa-seed``; the oracle is FUZZ-001's (a method whose every
    mutant was refused by authentication or authorisation reached no handler:
    INCONCLUSIVE); the service must be healthy after each method.

    (white-box, optional) When ``fuzz.inprocess_entrypoint`` is set and
    ``fuzz.atheris_seconds`` (or ``--hipaa-fuzz-budget``) is above 0: the Atheris fuzzer
    :mod:`harness.fuzzers.whitebox` runs in a subprocess for that long or until its first
    finding (an escaped exception, an interceptor bypass, or a FUZZ-001 oracle failure),
    which fails. A budget of at most 10 s runs beside the probes at a lower CPU priority
    (:data:`WHITEBOX_NICE`).
    """
    control = CATALOGUE["FUZZ-002"]
    policy_or_skip(run)
    surface = surface_from(run)
    if isinstance(surface, str):
        raise NotApplicable(surface)
    count = int(run.config.get("fuzz.examples_per_method", 200))
    plans = {
        m.path: mutants(m, count, run.options.seed, surface.seeded(m)) for m in surface.methods
    }
    pacing = pacing_for(run, sum(len(p) for p in plans.values()))
    observations = []
    for m in surface.methods:
        if m.callers:
            sent = _send_mutants(run, surface, m, plans[m.path], pacing)
            observations += judge_mutants(sent, surface.slow_ms, canaries(run))
    whitebox = _whitebox(run)
    if not observations and not whitebox:
        raise NotApplicable("no method with an authorised principal to fuzz with")
    return Outcome.from_observations(
        control, observations + whitebox, passed="every damaged request got a well-formed answer"
    )


@dataclass(frozen=True)
class Mutant:
    """One damaged request: the mutation that made it, and its bytes."""

    kind: str
    payload: bytes


def mutants(
    m: FuzzMethod, examples: int, run_seed: int, seeds: Sequence[bytes] = ()
) -> list[Mutant]:
    """FUZZ-002's black-box plan for ``m``: each mutation in turn, then the nesting bombs.

    The mutations damage the method's valid request and, in turn with it, the requests
    of the seed corpus (``seeds``).
    """
    count = max(len(MUTATIONS), examples // 2)
    kinds = sorted(MUTATIONS)
    bases = [m.seed, *seeds]
    desc: Any = m.cls.DESCRIPTOR
    out = [
        Mutant(
            kinds[i % len(kinds)],
            mutate(
                bases[i // len(kinds) % len(bases)],
                kinds[i % len(kinds)],
                random.Random(run_seed * 7919 + i),
                desc,
            ),
        )
        for i in range(count)
    ]
    out += [
        Mutant("recursion-bomb", b) for d in BOMB_DEPTHS if (b := nesting_bomb(desc, d)) is not None
    ]
    return out


def _send_mutants(
    run: Run, surface: Surface, m: FuzzMethod, plan: list[Mutant], pacing: Pacing
) -> MethodRun:
    """Send ``plan`` until its first oracle failure; then, if none, the liveness call.

    Windows as wide as the pacing allows, each mutant through the gate
    (:func:`harness.engine.settle`): back-pressure is tried again, never judged; a failure
    counts only when it reproduces alone on a new connection.
    """
    out = MethodRun(m.path)
    slow_ms = surface.slow_ms

    def one(item: tuple[int, Mutant]) -> Settled:
        i, mutant = item
        caller = run.principal(m.callers[i % len(m.callers)])
        link = input_link(run, m.path, mutant.payload, caller, slow_ms, "malformed inputs")
        return settle(link, lambda r: verdict(r, slow_ms), pacing)

    items = list(enumerate(plan))
    done = paced(pacing, items, one, lambda s: breaks(s, slow_ms))
    for (_, mutant), settled in zip(items, done, strict=False):
        why = out.record(settled, slow_ms)
        if why and not out.violation:
            out.violation, out.failed = why, settled.result
            out.example = f"{mutant.kind} mutant ({len(mutant.payload)} bytes, "
            out.example += f"{mutant.payload[:24].hex()}...)"
    if not out.violation:
        out.healthy = run.call(run.liveness, [b""], timeout=5)
    return out


def judge_mutants(
    r: MethodRun, slow_ms: float, planted: CanarySet | None = None
) -> list[Observation]:
    """FUZZ-002 black-box on one method: the mutants' answers, then the health after.

    A canary of ``planted`` (the run's) in an error fails as in FUZZ-001.
    """
    probe = f"wire mutants of {r.path}"
    wanted = "only OK, application codes or INTERNAL with generic text, no canary"
    out = []
    failed = _failure(r, slow_ms, planted)
    if failed is not None:
        why, call = failed
        observed = f"{r.example}: {why}" if r.example else why
        if call.request_id:
            out.append(
                Observation(probe, observed, wanted, Status.FAIL, Severity.HIGH, call.request_id)
            )
        else:
            out.append(Observation(probe, observed, wanted, Status.INCONCLUSIVE))
    elif unreached := _unreached(r):
        out.append(
            Observation(probe, unreached, "mutants that reach the service", Status.INCONCLUSIVE)
        )
    else:
        summary = f"{len(r.results)} mutants: {_codes(r.results)}{_aside(r)}"
        out.append(Observation(probe, summary, wanted, Status.PASS))
    if r.healthy is not None:
        out.append(judge_health(f"health after the mutants of {r.path}", r.healthy))
    return [o.of("black-box") for o in out]


# -- FUZZ-002 white-box -----------------------------------------------------------------


@warmup("FUZZ-002", child_process=True)
def _whitebox(run: Run) -> list[Observation]:
    """White-box Atheris, once per run, started when the run opens.

    It never calls the target, so it runs in its own process while the other controls probe.
    """
    return run.memo("fuzz-whitebox", lambda: _whitebox_run(run))


@dataclass(frozen=True)
class WhiteboxRun:
    """What one white-box Atheris run left: its output and findings, or why it did not end."""

    entry: str
    seconds: float
    stderr: str = ""
    findings: tuple[Finding, ...] = ()
    stuck: bool = False  # it had to be killed
    #: libFuzzer stopped on memory: "reproduced" (its input exhausted memory again, alone,
    #: in a new process) or "not reproduced" (twice: the run and its one retry).
    oom: str = ""


def _whitebox_run(run: Run) -> list[Observation]:
    entry = run.config.str_("fuzz.inprocess_entrypoint")
    seconds = float(run.config.get("fuzz.atheris_seconds", 0) or 0)
    if not entry:
        return []  # the probe's needs say what would enable it
    if seconds <= 0:
        return [
            Observation(
                f"white-box Atheris on {entry}",
                "not run: no fuzzing time",
                "fuzz.atheris_seconds (or --hipaa-fuzz-budget) above 0",
                Status.SKIP,
            ).of("white-box")
        ]
    config_file = run.spawned.config_path if run.spawned else _config_file(run)
    if config_file is None:
        return [
            Observation(
                f"white-box Atheris on {entry}",
                "not run: the config did not come from a file the fuzzer can read",
                "a fuzzing run",
                Status.ERROR,
            ).of("white-box")
        ]
    first = _atheris(run, entry, seconds, config_file)
    if first.oom != "not reproduced":
        return judge_whitebox(first)
    return judge_whitebox(_atheris(run, entry, seconds, config_file))  # once more


#: How much lower a short white-box run goes than the harness (``os.nice``). A budget of
#: at most :data:`BESIDE_PROBES_S` runs beside the probes from start to end, and on a
#: machine with few cores it took the CPU they and the target needed (0.45 s of a default
#: run's 8.8 s on 2 cores): the run waits on the probes, never on such a fuzzer, and the
#: probes that measure time (FUZZ-001's latency budget, FUZZ-003's p95 against its
#: baseline, LIMIT-002's accepted rate) should measure the target, not the harness's own
#: fuzzer. It gets what the probes leave, mostly the time they spend waiting; its evidence
#: counts the inputs it ran. A longer budget is a fuzzing session the run waits on (the
#: detection matrix's deep bug, a long nightly budget): it keeps the harness's priority.
WHITEBOX_NICE = 15
BESIDE_PROBES_S = 10.0

#: How libFuzzer says it stopped on memory (RSS over -rss_limit_mb, or one malloc over it).
_OOM = "libFuzzer: out-of-memory"


def _atheris(run: Run, entry: str, seconds: float, config_file: Path) -> WhiteboxRun:
    """Run :mod:`harness.fuzzers.whitebox` for ``seconds`` (or to its first finding).

    An out-of-memory stop is a candidate, as every finding is: it counts only when the
    input libFuzzer kept exhausts memory again alone in a new process (``oom``).
    """
    with tempfile.TemporaryDirectory(prefix="hipaa-whitebox-") as tmp:
        crashes = Path(tmp) / "crashes"
        env = {
            **os.environ,
            "HIPAA_FUZZ_CONFIG": str(config_file),
            "HIPAA_FUZZ_CRASHES": str(crashes),
            "HIPAA_FUZZ_NICE": str(WHITEBOX_NICE if seconds <= BESIDE_PROBES_S else 0),
        }
        env.pop("HIPAA_FUZZ_KEEP_GOING", None)  # stop at the first finding
        base = [sys.executable, "-m", "harness.fuzzers.whitebox", "-timeout=10"]
        command = [
            *base,
            f"-max_total_time={max(1, round(seconds))}",
            f"-seed={run.options.seed or 1}",
            f"-artifact_prefix={tmp}/",
            str(Path(tmp) / "corpus"),
        ]
        stderr = _child_stderr(run, command, env, seconds + 60)
        if stderr is None:
            return WhiteboxRun(entry, seconds, stuck=True)
        found = tuple(
            Finding.from_json(json.loads(f.read_text())) for f in sorted(crashes.glob("*.json"))
        )
        oom = ""
        kept = sorted(Path(tmp).glob("oom-*"))
        if _OOM in stderr and not found:
            again = [
                _child_stderr(run, [*base, f"-artifact_prefix={tmp}/again-", str(k)], env, 60)
                for k in kept[:1]
            ]
            oom = (
                "reproduced"
                if any(a is not None and _OOM in a for a in again)
                else "not reproduced"
            )
    return WhiteboxRun(entry, seconds, stderr, found, oom=oom)


def _child_stderr(run: Run, command: list[str], env: dict[str, str], limit: float) -> str | None:
    """Run a fuzzer child to its end; its stderr, or ``None`` when it had to be killed."""
    child = run.start_child(command, env)
    try:
        _, stderr = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return None
    return stderr


def judge_whitebox(w: WhiteboxRun) -> list[Observation]:
    """White-box verdict: each finding fails; a run with none passes; no run is an ERROR."""
    where = f"white-box Atheris on {w.entry} ({w.seconds:g} s)"
    runs = re.findall(r"Done (\d+) runs", w.stderr)
    if w.stuck:
        out = [
            Observation(where, "did not stop", f"done within {w.seconds + 60:.0f} s", Status.ERROR)
        ]
    elif w.oom == "reproduced":
        observed = "one input exhausted memory (libFuzzer out-of-memory), again when sent alone"
        out = [Observation(where, observed, "bounded memory", Status.FAIL, Severity.HIGH)]
    elif w.oom:
        observed = "stopped on out-of-memory twice; the input did not exhaust memory alone"
        out = [Observation(where, observed, "a fuzzing run", Status.INCONCLUSIVE)]
    elif not runs and not w.findings:
        tail = (w.stderr.strip().splitlines() or ["no output"])[-1]
        out = [Observation(where, f"did not run: {tail}", "a fuzzing run", Status.ERROR)]
    elif not w.findings:
        out = [Observation(where, f"{runs[-1]} inputs, no finding", "no finding", Status.PASS)]
    else:
        out = [
            Observation(
                where,
                f"{f.method} as {f.caller}: {f.why} ({f.code}); request {f.payload[:24].hex()}",
                "no escaped exception, no handler reached without credentials, FUZZ-001's oracle",
                Status.FAIL,
                Severity.HIGH,
            )
            for f in w.findings
        ]
    return [o.of("white-box") for o in out]


def _config_file(run: Run) -> Path | None:
    """The last config file the run's config came from (flags like --hipaa-* are not files)."""
    for source in reversed(run.config.sources):
        path = Path(source.removesuffix(" [tool.hipaa]"))
        if path.is_file():
            return path
    return None
