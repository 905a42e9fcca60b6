"""gRPC framing and HTTP/2 transport abuse (FUZZ-003), opt-in.

A raw HTTP/2 client (:mod:`harness.h2client`) sends what gRPC libraries never send:
requests with the wrong content type, impossible length prefixes, a compressed flag without
an encoding, a bad ``grpc-timeout``, illegal metadata names; then bursts of rapid resets,
PINGs, SETTINGS and a header block that never ends; and, when ``limits.max_idle_s`` is set,
a stream that stays silent. Health latency is sampled over the run's own connection before,
during and after the bursts.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import grpc

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check
from harness.engine import surface_from
from harness.h2client import H2Client, Reply, grpc_frame
from harness.outcome import Observation, Outcome, Status
from harness.plans.calls import TRANSPORT_ABUSE, policy_or_skip
from harness.run import Run

#: Degradation is judged against max(2 x baseline p95, baseline p95 + this) [P]: on a
#: loopback connection the baseline is well under a millisecond, and twice that is noise.
DEGRADATION_FLOOR_S = 0.25
#: Health is sampled every this many seconds while the bursts run (open loop: a sample
#: never waits for the previous one, so a stalled server shows in every late sample).
SAMPLE_EVERY_S = 0.02
_BASELINE_SAMPLES = 20
_AFTER_SAMPLES = 10
_HEALTH_DEADLINE_S = 5.0
_QUIET_S = 0.1
_DRAIN_LIMIT_S = 2.0


@dataclass(frozen=True)
class _Malformed:
    probe: str
    path: str
    content_type: str
    metadata: tuple[tuple[str, str], ...]
    body: bytes
    wants: str  # "refused" (not OK) or "8"


@check("FUZZ-003")
def transport_abuse(run: Run) -> Outcome:
    """Malformed gRPC framing and HTTP/2 bursts, with health sampled throughout.

    Needs ``--hipaa-allow-transport-abuse``. Over fresh HTTP/2 connections (TLS with ALPN
    ``h2`` and the configured client certificate, or cleartext if that is what the target
    speaks):

    (a) ``content-type: text/plain`` to a protected method with only ambient credentials
    (the client certificate, no bearer token), which a browser could send cross-site: must
    not be served (HTTP 200 with grpc-status 0). The same to the liveness method is recorded.
    (b) a length prefix of 0xFFFFFFFF: RESOURCE_EXHAUSTED (8).
    (c)-(f) a length prefix past the data, the compressed flag with no ``grpc-encoding``,
    an invalid ``grpc-timeout``, an upper-case and an invalid metadata name: not OK, and an
    answer (no hang).
    (g) ``fuzz.h2_burst`` (500) each of HEADERS+RST_STREAM pairs, PINGs, SETTINGS, and
    CONTINUATION frames with no END_HEADERS, on four connections at once. GOAWAY is fine;
    health p95 during and after must stay within max(2 x baseline, baseline + 0.25 s). A
    degradation counts when it shows twice: in a burst alone, or in the four once more.
    (h) with ``limits.max_idle_s``: a stream that sends nothing must be closed within it.
    The service must be healthy at the end.
    """
    control = CATALOGUE["FUZZ-003"]
    if not run.config.get("safety.allow_transport_abuse"):
        return Outcome.skip(control, TRANSPORT_ABUSE)
    policy = policy_or_skip(run, "FUZZ-003")
    if isinstance(policy, Outcome):
        return policy
    liveness = run.liveness
    try:
        run.open_h2().close()
    except OSError as exc:
        return Outcome.inconclusive(control, f"no raw HTTP/2 connection to the target: {exc}")
    probes = _probes(run, liveness)
    with ThreadPoolExecutor(len(probes), thread_name_prefix="hipaa-h2") as pool:
        observations = list(pool.map(lambda p: _malformed(run, p), probes))  # own connections
    observations += _bursts(run, liveness)
    observations += _idle(run, liveness)
    observations.append(_health(run, liveness, "at the end"))
    idle = (
        ""
        if run.config.get("limits.max_idle_s")
        else " (idle stream not probed: no limits.max_idle_s)"
    )
    return Outcome.from_observations(
        control,
        observations,
        passed="malformed framing refused and bursts absorbed without lasting harm" + idle,
    )


def _deadline(run: Run) -> float:
    return min(_HEALTH_DEADLINE_S, run.options.call_timeout_s)


# -- (a)-(f) ----------------------------------------------------------------------------


def _probes(run: Run, liveness: str) -> list[_Malformed]:
    ok = grpc_frame(b"")
    probes = []
    surface = surface_from(run)
    unary = [m for m in surface.methods if not m.streaming] if not isinstance(surface, str) else []
    if unary:
        m = unary[0]
        probes.append(
            _Malformed(
                f"(a) content-type text/plain to {m.path}, client certificate only",
                m.path,
                "text/plain",
                (),
                grpc_frame(m.seed),
                "refused",
            )
        )
    probes += [
        _Malformed(
            f"(a) content-type text/plain to {liveness}", liveness, "text/plain", (), ok, ""
        ),
        _Malformed(
            "(b) length prefix 0xFFFFFFFF",
            liveness,
            "application/grpc",
            (),
            grpc_frame(b"", length=0xFFFFFFFF),
            "8",
        ),
        _Malformed(
            "(c) length prefix 16 with 3 bytes, then END_STREAM",
            liveness,
            "application/grpc",
            (),
            grpc_frame(b"\x0a\x01a", length=16),
            "refused",
        ),
        _Malformed(
            "(d) compressed flag without grpc-encoding",
            liveness,
            "application/grpc",
            (),
            grpc_frame(b"\x0a\x01a", compressed=True),
            "refused",
        ),
        _Malformed(
            "(e) grpc-timeout: 1X",
            liveness,
            "application/grpc",
            (("grpc-timeout", "1X"),),
            ok,
            "refused",
        ),
        _Malformed(
            "(f) upper-case metadata name X-Hipaa-Probe",
            liveness,
            "application/grpc",
            (("X-Hipaa-Probe", "1"),),
            ok,
            "refused",
        ),
        _Malformed(
            "(f) metadata name with a space",
            liveness,
            "application/grpc",
            (("x hipaa probe", "1"),),
            ok,
            "refused",
        ),
    ]
    return probes


def _malformed(run: Run, probe: _Malformed) -> Observation:
    try:
        with run.open_h2() as client:
            headers = client.headers(
                probe.path, content_type=probe.content_type, metadata=probe.metadata
            )
            reply = client.wait(client.request(headers, probe.body), _deadline(run))
    except OSError as exc:
        return Observation(
            probe.probe,
            f"connection failed: {exc}",
            "an answer",
            Status.INCONCLUSIVE,
        )
    return _judge(probe, reply)


def _judge(probe: _Malformed, reply: Reply) -> Observation:
    observed = reply.describe()
    if not probe.wants:  # recorded only
        note = (
            "served: the content type is not checked (the gRPC spec says a server SHOULD "
            "answer 415; C-core servers never do)"
            if reply.ok
            else "refused"
        )
        return Observation(probe.probe, f"{observed}; {note}", "recorded", Status.PASS)
    if reply.timed_out:
        return Observation(
            probe.probe,
            f"{observed}: the stream hung",
            "an answer within the deadline",
            Status.FAIL,
        )
    if probe.wants == "8":
        good = reply.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        return Observation(
            probe.probe,
            observed,
            "RESOURCE_EXHAUSTED (8) before reading 4 GiB",
            Status.PASS if good else Status.FAIL,
            None if good else Severity.MEDIUM,
        )
    why = (
        "served; a browser holding the client certificate could send this cross-site"
        if probe.content_type != "application/grpc"
        else "served"
    )
    return Observation(
        probe.probe,
        f"{observed}: {why}" if reply.ok else observed,
        "HTTP 415, a gRPC error or a stream reset, never HTTP 200 with grpc-status 0",
        Status.FAIL if reply.ok else Status.PASS,
    )


# -- (g) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pulse:
    """A call sampled for latency: the liveness method, and one real method of the service."""

    label: str
    call: Any  # grpc.UnaryUnaryMultiCallable over bytes
    metadata: tuple[tuple[str, str], ...]
    body: bytes
    must_succeed: bool  # liveness must be OK; a method may answer with any non-failure


#: Codes that mean the sample was not served at all.
_UNSERVED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass
class _Samples:
    latencies: list[float]
    failures: list[str]

    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0

    def describe(self) -> str:
        failed = f", {len(self.failures)} failed ({self.failures[0]})" if self.failures else ""
        return f"p95 {self.p95() * 1000:.0f} ms over {len(self.latencies)} samples{failed}"


def _pulses(run: Run, liveness: str) -> list[_Pulse]:
    """Liveness, plus the first unary method the harness may call with a token.

    Both matter: many servers dispatch health through a path of its own (grpcio registers
    it), so a stall of the service's own methods would not show in health alone.
    """
    pulses = [
        _Pulse(
            liveness,
            run.channel().unary_unary(
                liveness, request_serializer=None, response_deserializer=None
            ),
            (),
            b"",
            True,
        )
    ]
    surface = surface_from(run)
    if isinstance(surface, str):
        return pulses
    for m in surface.methods:
        caller = run.principal(m.callers[0]) if m.callers and not m.streaming else None
        if caller is not None:
            call = run.channel_for(caller).unary_unary(
                m.path, request_serializer=None, response_deserializer=None
            )
            pulses.append(_Pulse(m.path, call, caller.metadata(), m.seed, False))
            break
    return pulses


def _failure(pulse: _Pulse, exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    code = exc.code() if isinstance(exc, grpc.Call) else None
    if code is None:
        return type(exc).__name__
    return code.name if pulse.must_succeed or code in _UNSERVED else None


def _sequential(pulses: list[_Pulse], count: int) -> dict[str, _Samples]:
    out = {p.label: _Samples([], []) for p in pulses}
    for _ in range(count):
        for p in pulses:
            start = time.monotonic()
            exc: BaseException | None = None
            try:
                p.call(p.body, metadata=p.metadata, timeout=_HEALTH_DEADLINE_S)
            except grpc.RpcError as err:
                exc = err
            out[p.label].latencies.append(time.monotonic() - start)
            if (why := _failure(p, exc)) is not None:
                out[p.label].failures.append(why)
    return out


class _Sampler:
    """Every pulse fired each :data:`SAMPLE_EVERY_S`, open loop, until stopped."""

    def __init__(self, pulses: list[_Pulse]) -> None:
        self.pulses = pulses
        self.samples = {p.label: _Samples([], []) for p in pulses}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pending: list[Any] = []
        self._thread = threading.Thread(target=self._fire, name="hipaa-h2-sampler", daemon=True)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        for future in self._pending:  # each has a deadline: this wait is bounded
            with contextlib.suppress(grpc.FutureTimeoutError, grpc.FutureCancelledError):
                future.exception(timeout=_HEALTH_DEADLINE_S + 1)

    def _fire(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            for p in self.pulses:
                sent = time.monotonic()
                future = p.call.future(p.body, metadata=p.metadata, timeout=_HEALTH_DEADLINE_S)
                future.add_done_callback(lambda f, p=p, sent=sent: self._done(p, f, sent))
                self._pending.append(future)

    def _done(self, pulse: _Pulse, future: Any, sent: float) -> None:
        elapsed = time.monotonic() - sent
        why = _failure(pulse, future.exception())
        with self._lock:
            samples = self.samples[pulse.label]
            samples.latencies.append(elapsed)
            if why is not None:
                samples.failures.append(why)


Burst = Callable[[H2Client], None]


def _burst_kinds(run: Run, liveness: str) -> dict[str, Burst]:
    count = max(1, int(run.config.get("fuzz.h2_burst", 500)))
    streams = min(count, int(run.config.get("safety.max_requests")))
    surface = surface_from(run)
    path = surface.methods[0].path if not isinstance(surface, str) and surface.methods else liveness

    def reset(c: H2Client) -> None:
        c.reset_burst(c.headers(path), streams)

    def continuation(c: H2Client) -> None:
        c.endless_headers(c.headers(path), count)

    return {
        f"{streams} HEADERS+RST_STREAM pairs (rapid reset)": reset,
        f"{count} PINGs": lambda c: c.ping_burst(count),
        f"{count} SETTINGS": lambda c: c.settings_burst(count),
        f"HEADERS and {count} CONTINUATION frames without END_HEADERS": continuation,
    }


def _run_bursts(
    run: Run, pulses: list[_Pulse], kinds: dict[str, Burst]
) -> tuple[dict[str, _Samples], list[str]]:
    notes: dict[str, str] = {}

    def one(name: str, burst: Burst) -> None:
        try:
            with run.open_h2() as client:
                with contextlib.suppress(OSError):  # closed mid-burst: absorbed
                    burst(client)
                client.drain(_QUIET_S, _DRAIN_LIMIT_S)
                if client.goaway_code is not None:
                    notes[name] = f"GOAWAY code {client.goaway_code}"
                else:
                    notes[name] = "connection closed" if client.closed else "tolerated"
        except OSError as exc:
            notes[name] = f"could not connect ({exc})"

    with _Sampler(pulses) as sampler:
        workers = [threading.Thread(target=one, args=kv, daemon=True) for kv in kinds.items()]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=run.options.connect_timeout_s + _DRAIN_LIMIT_S + 10)
        time.sleep(_QUIET_S)
    return sampler.samples, [f"{name}: {notes.get(name, 'still sending')}" for name in kinds]


def _bursts(run: Run, liveness: str) -> list[Observation]:
    pulses = _pulses(run, liveness)
    base = _sequential(pulses, _BASELINE_SAMPLES)
    if base[liveness].failures:
        return [
            Observation(
                f"health baseline ({liveness})",
                base[liveness].describe(),
                "healthy before the bursts",
                Status.INCONCLUSIVE,
            )
        ]
    limits = {label: max(2 * s.p95(), s.p95() + DEGRADATION_FLOOR_S) for label, s in base.items()}

    def judged(probe: str, got: dict[str, _Samples], when: str) -> Observation:
        bad = [k for k, s in got.items() if s.p95() > limits[k] or s.failures]
        return Observation(
            probe,
            "; ".join(f"{k} {s.describe()}" for k, s in got.items()),
            "; ".join(
                f"{k} p95 <= {limits[k] * 1000:.0f} ms (baseline {base[k].p95() * 1000:.1f} ms)"
                for k in got
            )
            + f" {when}",
            Status.FAIL if bad else Status.PASS,
        )

    kinds = _burst_kinds(run, liveness)
    during, notes = _run_bursts(run, pulses, kinds)
    first = judged("(g) bursts on four connections at once: " + "; ".join(notes), during, "during")
    out = [first]
    if first.status is Status.FAIL:
        # A degradation must show twice: each burst alone names the culprit; if none does,
        # the four together run once more (a loaded host can miss once by a few ms).
        alone = [
            judged(f"burst alone: {name}", _run_bursts(run, pulses, {name: burst})[0], "during")
            for name, burst in kinds.items()
        ]
        out += alone
        if all(o.status is Status.PASS for o in alone):
            again = judged(
                "(g) the four bursts at once, again", _run_bursts(run, pulses, kinds)[0], "during"
            )
            out.append(again)
            if again.status is Status.PASS:
                out[0] = replace(
                    first,
                    observed=first.observed + " (not reproduced: see below)",
                    status=Status.PASS,
                )
    out.append(judged("(g) after the bursts", _sequential(pulses, _AFTER_SAMPLES), "after"))
    return out


# -- (h) --------------------------------------------------------------------------------


def _idle(run: Run, liveness: str) -> list[Observation]:
    limit = run.config.get("limits.max_idle_s")
    if not limit:
        return []
    grace = max(1.0, 0.5 * float(limit))
    wait = min(float(limit) + grace, float(run.config.get("safety.max_duration_s")))
    probe = f"(h) a stream that sends nothing (limits.max_idle_s = {limit:g})"
    try:
        with run.open_h2() as client:
            reply = client.wait(client.request(client.headers(liveness), None), wait)
    except OSError as exc:
        return [Observation(probe, f"connection failed: {exc}", "an answer", Status.INCONCLUSIVE)]
    closed = reply.ended and reply.elapsed_s <= float(limit) + grace
    return [
        Observation(
            probe,
            reply.describe() if reply.ended else f"still open after {wait:g} s",
            f"stream or connection closed within {float(limit) + grace:g} s",
            Status.PASS if closed else Status.FAIL,
        )
    ]


def _health(run: Run, liveness: str, when: str) -> Observation:
    result = run.call(liveness, [b""], timeout=_HEALTH_DEADLINE_S)
    ok = result.code == grpc.StatusCode.OK
    return Observation(
        f"health {when}",
        result.status,
        "OK",
        Status.PASS if ok else Status.FAIL,
        None if ok else Severity.HIGH,
        result.request_id,
    )
