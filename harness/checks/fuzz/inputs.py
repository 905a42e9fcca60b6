"""Schema-aware property fuzzing (FUZZ-001) and wire-level mutation (FUZZ-002).

For every declared method (writes only under mutations), Hypothesis generates requests
from the input type's descriptor (:mod:`harness.fuzz`) and sends them with an authorised
token (:mod:`harness.plans.fuzzcases`, whose calls the ERR controls judge too). The oracle
is the catalogue's: only OK or application codes (3, 5, 6, 7, 8, 9, 11); never UNKNOWN,
UNAVAILABLE or DATA_LOSS; INTERNAL only with generic text; no call slower than three times
``fuzz.latency_budget_ms`` and p99 within it; the service healthy after each method.
FUZZ-002 damages valid requests on the wire (:mod:`harness.wire`) and runs white-box
Atheris when the service can be loaded in-process.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check, warmup
from harness.engine import Finding, FuzzMethod, Surface, surface_from
from harness.outcome import Observation, Outcome, Status
from harness.plans.calls import policy_or_skip
from harness.plans.fuzzcases import fuzz_calls, generated_inputs, verdict
from harness.run import Run
from harness.wire import BOMB_DEPTHS, MUTATIONS, mutate, nesting_bomb

# FUZZ-001's inputs are generated as the run opens; ERR-001 and ERR-002 judge their calls.
warmup("FUZZ-001", "ERR-001", "ERR-002")(generated_inputs)


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


# -- FUZZ-002 ---------------------------------------------------------------------------


@check("FUZZ-002")
def wire_mutation(run: Run) -> Outcome:
    """Wire-level mutation (black-box) and coverage-guided Atheris in-process (white-box).

    Black-box: for every method FUZZ-001 fuzzes, its valid request damaged by each
    :mod:`harness.wire` mutation in turn (truncated and over-long varints, wrong wire
    types, field number 0, over-long length prefixes, duplicated singular fields, unknown
    fields, invalid UTF-8, deep unknown groups), ``fuzz.examples_per_method`` // 2 in all,
    plus a nesting bomb at each depth of :data:`harness.wire.BOMB_DEPTHS` where a field
    recurses. Seeded from ``--hipaa-seed``; the oracle is FUZZ-001's; the service must be
    healthy after each method.

    White-box, when ``fuzz.inprocess_entrypoint`` is set and ``fuzz.atheris_seconds`` (or
    ``--hipaa-fuzz-budget``) is above 0: the Atheris fuzzer
    :mod:`harness.fuzzers.whitebox` runs in a subprocess for that long or until its first
    finding (an escaped exception, an interceptor bypass, or a FUZZ-001 oracle failure),
    which fails.
    """
    control = CATALOGUE["FUZZ-002"]
    policy = policy_or_skip(run, "FUZZ-002")
    if isinstance(policy, Outcome):
        return policy
    surface = surface_from(run)
    if isinstance(surface, str):
        return Outcome.skip(control, surface)
    observations = [_mutants(run, surface, m) for m in surface.methods if m.callers]
    observations += _whitebox(run)
    if not observations:
        return Outcome.skip(control, "no method with an authorised principal to fuzz with")
    return Outcome.from_observations(
        control, observations, passed="every damaged request got a well-formed answer"
    )


def _mutants(run: Run, surface: Surface, m: FuzzMethod) -> Observation:
    count = max(len(MUTATIONS), int(run.config.get("fuzz.examples_per_method", 200)) // 2)
    kinds = sorted(MUTATIONS)
    desc: Any = m.cls.DESCRIPTOR
    payloads = [
        mutate(m.seed, kinds[i % len(kinds)], random.Random(run.options.seed * 7919 + i), desc)
        for i in range(count)
    ]
    payloads += [b for d in BOMB_DEPTHS if (b := nesting_bomb(desc, d)) is not None]
    codes: dict[str, int] = {}
    for i, payload in enumerate(payloads):
        caller = run.principal(m.callers[i % len(m.callers)])
        result = run.call(
            m.path, [payload], principal=caller, timeout=surface.slow_ms / 1000 + 1, max_responses=1
        )
        codes[result.code.name] = codes.get(result.code.name, 0) + 1
        why = verdict(result, surface.slow_ms)
        if why:
            kind = kinds[i % len(kinds)] if i < count else "recursion-bomb"
            return Observation(
                f"wire mutants of {m.path}",
                f"{kind} mutant ({len(payload)} bytes, {payload[:24].hex()}...): {why}",
                "only OK, application codes or INTERNAL with generic text",
                Status.FAIL,
                Severity.HIGH,
                result.request_id,
            )
    liveness = run.liveness
    healthy = run.call(liveness, [b""], timeout=5)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(codes.items()))
    ok = healthy.code == grpc.StatusCode.OK
    return Observation(
        f"wire mutants of {m.path}",
        f"{len(payloads)} mutants: {summary}; health {healthy.status}",
        "only OK, application codes or INTERNAL with generic text; healthy after",
        Status.PASS if ok else Status.FAIL,
        None if ok else Severity.HIGH,
        healthy.request_id,
    )


@warmup("FUZZ-002", child_process=True)
def _whitebox(run: Run) -> list[Observation]:
    """White-box Atheris, once per run, started when the run opens.

    It never calls the target, so it runs in its own process while the other controls probe.
    """
    return run.memo("fuzz-whitebox", lambda: _whitebox_run(run))


def _whitebox_run(run: Run) -> list[Observation]:
    entry = run.config.str_("fuzz.inprocess_entrypoint")
    seconds = float(run.config.get("fuzz.atheris_seconds", 0) or 0)
    if not entry or seconds <= 0:
        return []
    config_file = run.spawned.config_path if run.spawned else _config_file(run)
    if config_file is None:
        return [
            Observation(
                f"white-box Atheris on {entry}",
                "not run: the config did not come from a file the fuzzer can read",
                "a fuzzing run",
                Status.ERROR,
            )
        ]
    with tempfile.TemporaryDirectory(prefix="hipaa-whitebox-") as tmp:
        crashes = Path(tmp) / "crashes"
        env = {
            **os.environ,
            "HIPAA_FUZZ_CONFIG": str(config_file),
            "HIPAA_FUZZ_CRASHES": str(crashes),
        }
        env.pop("HIPAA_FUZZ_KEEP_GOING", None)  # stop at the first finding
        command = [
            sys.executable,
            "-m",
            "harness.fuzzers.whitebox",
            f"-max_total_time={max(1, round(seconds))}",
            f"-seed={run.options.seed or 1}",
            "-timeout=10",
            f"-artifact_prefix={tmp}/",
            str(Path(tmp) / "corpus"),
        ]
        child = run.start_child(command, env)
        try:
            _, stderr = child.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return [
                Observation(
                    "white-box Atheris",
                    "did not stop",
                    f"done within {seconds + 60:.0f} s",
                    Status.ERROR,
                )
            ]
        found = [
            Finding.from_json(json.loads(f.read_text())) for f in sorted(crashes.glob("*.json"))
        ]
        runs = re.findall(r"Done (\d+) runs", stderr)
    if not runs and not found:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return [
            Observation(
                f"white-box Atheris on {entry}",
                f"did not run: {tail}",
                "a fuzzing run",
                Status.ERROR,
            )
        ]
    where = f"white-box Atheris on {entry} ({seconds:g} s)"
    if not found:
        return [Observation(where, f"{runs[-1]} inputs, no finding", "no finding", Status.PASS)]
    return [
        Observation(
            where,
            f"{f.method} as {f.caller}: {f.why} ({f.code}); request {f.payload[:24].hex()}",
            "no escaped exception, no handler reached without credentials, FUZZ-001's oracle",
            Status.FAIL,
            Severity.HIGH,
        )
        for f in found
    ]


def _config_file(run: Run) -> Path | None:
    """The last config file the run's config came from (flags like --hipaa-* are not files)."""
    for source in reversed(run.config.sources):
        path = Path(source.removesuffix(" [tool.hipaa]"))
        if path.is_file():
            return path
    return None
