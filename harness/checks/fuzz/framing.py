"""gRPC framing and HTTP/2 transport abuse (FUZZ-003), opt-in.

A raw HTTP/2 client (:mod:`harness.h2client`) sends what gRPC libraries never send:
requests with the wrong content type, impossible length prefixes, a compressed flag without
an encoding, a bad ``grpc-timeout``, illegal metadata names; then bursts of rapid resets,
PINGs, SETTINGS and a header block that never ends; and, when ``limits.max_idle_s`` is set,
a stream that stays silent. Health latency is sampled over the run's own connection before,
during and after the bursts.

Each lettered item of the catalogue row is a probe, (a) to (h). Planning
(:func:`malformed_plan`), sending and judging are apart: the judges
(:func:`judge_malformed`, :func:`judge_samples`, :func:`reproduced`, :func:`judge_idle`, and
the shared :func:`harness.oracles.judge_health`) are pure functions of what came back
(:class:`~harness.h2client.Reply`, latency :class:`Samples`, a
:class:`~harness.channels.CallResult`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import grpc

from harness.catalogue import CATALOGUE, Severity
from harness.channels import new_request_id
from harness.checks import check
from harness.engine import FuzzMethod, surface_from
from harness.h2client import H2Client, Reply, grpc_frame
from harness.oracles import UNREACHED, judge_health
from harness.outcome import CannotObserve, NotApplicable, Observation, Outcome, Probe, Status
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

FUZZ_003_PROBES = (
    Probe("a", "content-type text/plain to a protected method, ambient credentials only"),
    Probe("b", "a length prefix of 0xFFFFFFFF: RESOURCE_EXHAUSTED (8)"),
    Probe("c", "a length prefix past the data, then END_STREAM: not OK, answered"),
    Probe("d", "the compressed flag without grpc-encoding: not OK, answered"),
    Probe("e", "an invalid grpc-timeout: not OK, answered"),
    Probe(
        "f",
        "credentials under an upper-case name and under a name with a space: never taken "
        "for the credential header (refused, or answered as without credentials)",
    ),
    Probe(
        "g",
        "bursts of rapid resets, PINGs, SETTINGS and CONTINUATION without END_HEADERS: "
        "GOAWAY or tolerated, health p95 within limits during and after, healthy at the end",
    ),
    Probe(
        "h",
        "a stream that sends nothing, closed within limits.max_idle_s",
        required=False,
        needs=("limits.max_idle_s",),
    ),
)

#: gRPC status numbers that say the request never reached the service (14, 4).
_UNREACHED_NUMBERS = frozenset(c.value[0] for c in UNREACHED)


@check("FUZZ-003", probes=FUZZ_003_PROBES)
def transport_abuse(run: Run) -> Outcome:
    """Malformed gRPC framing and HTTP/2 bursts, with health sampled throughout.

    Needs ``--hipaa-allow-transport-abuse``. Over fresh HTTP/2 connections (TLS with ALPN
    ``h2`` and the configured client certificate, or cleartext if that is what the target
    speaks):

    (a) ``content-type: text/plain`` to a protected method with only ambient credentials
    (the client certificate, no bearer token), which a browser could send cross-site: must
    not be served (HTTP 200 with grpc-status 0). The same to the liveness method is recorded.
    (b) a length prefix of 0xFFFFFFFF: RESOURCE_EXHAUSTED (8).
    (c)-(e) a length prefix past the data, the compressed flag with no ``grpc-encoding``,
    an invalid ``grpc-timeout``: not OK, and an answer (no hang).
    (f) a protected unary method's credentials under an upper-case name
    (``Authorization``) and under a name with a space (``authorization ``), beside the same
    call with them under their own name and without them: never served (RFC 9113 8.2.1:
    such a field is malformed; refused, or dropped before the service as nghttp2 drops a
    name with a space, the call then answered as without credentials). Without such a
    method, the malformed names go to the liveness method, where a served call cannot show
    whether the field reached the service (INCONCLUSIVE). For (a)-(f), UNAVAILABLE or
    DEADLINE_EXCEEDED is no answer to the request (it did not reach the service):
    INCONCLUSIVE.
    (g) ``fuzz.h2_burst`` (500) each of HEADERS+RST_STREAM pairs, PINGs, SETTINGS, and
    CONTINUATION frames with no END_HEADERS, on four connections at once. GOAWAY is fine;
    health p95 during and after must stay within max(2 x baseline, baseline + 0.25 s). A
    degradation counts when it shows twice: in a burst alone, or in the four once more.
    The service must be healthy at the end.
    (h) with ``limits.max_idle_s``: a stream that sends nothing must be closed within it.
    """
    control = CATALOGUE["FUZZ-003"]
    if not run.config.get("safety.allow_transport_abuse"):
        raise NotApplicable(TRANSPORT_ABUSE)
    policy_or_skip(run)
    liveness = run.liveness
    try:
        run.open_h2().close()
    except OSError as exc:
        raise CannotObserve(f"no raw HTTP/2 connection to the target: {exc}") from exc
    protected = _protected_unary(run)
    disguises = disguise_plan(*_credentialed_unary(run))
    plan = malformed_plan(liveness, protected)
    if disguises:  # (f) where the malformed names carry what the service reads
        plan = [p for p in plan if p.ref != "f"]
    calls = [*plan, *disguise_calls(disguises)]
    with ThreadPoolExecutor(len(calls), thread_name_prefix="hipaa-h2") as pool:
        replies = list(pool.map(lambda p: _send_malformed(run, p), calls))  # own connections
    observations = [
        replace(judge_malformed(p, reply), request_id=rid)
        for p, (reply, rid) in zip(plan, replies[: len(plan)], strict=True)
    ]
    observations += judge_disguises(disguises, replies[len(plan) :])
    if protected is None:
        observations.append(NO_PROTECTED_UNARY)
    observations += _bursts(run, liveness)
    observations += _idle(run, liveness)
    end = run.call(liveness, [b""], timeout=_HEALTH_DEADLINE_S)
    observations.append(judge_health("health at the end", end).of("g"))
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


@dataclass(frozen=True)
class Malformed:
    """One malformed request: its probe, where it goes, what it carries, what must come back.

    ``wants`` is ``"refused"`` (anything but served, and an answer), ``"8"``
    (RESOURCE_EXHAUSTED), ``"unseen"`` (refused; served shows nothing: a field the service
    never sees changes nothing on the liveness method) or ``""`` (only recorded).
    """

    ref: str
    probe: str
    path: str
    content_type: str
    metadata: tuple[tuple[str, str], ...]
    body: bytes
    wants: str


#: Filed under (a) when the target has no protected unary method to send it to.
NO_PROTECTED_UNARY = Observation(
    "(a) content-type text/plain to a protected unary method, client certificate only",
    "not sent: no protected unary method the harness may call",
    "a protected unary method with a request (schema.request_templates)",
    Status.SKIP,
).of("a")


def _protected_unary(run: Run) -> FuzzMethod | None:
    surface = surface_from(run)
    if isinstance(surface, str):
        return None
    return next((m for m in surface.methods if not m.streaming), None)


def malformed_plan(liveness: str, protected: FuzzMethod | None) -> list[Malformed]:
    """(a)-(f): what to send, and to which method (the protected one only for (a))."""
    empty, small, grpc_ = grpc_frame(b""), b"\x0a\x01a", "application/grpc"
    plan = []
    if protected is not None:  # (a) on liveness alone would be a recording, not a test
        plan += [
            Malformed(
                "a",
                f"(a) content-type text/plain to {protected.path}, client certificate only",
                protected.path,
                "text/plain",
                (),
                grpc_frame(protected.seed),
                "refused",
            ),
            Malformed(
                "a",
                f"(a) content-type text/plain to {liveness}",
                liveness,
                "text/plain",
                (),
                empty,
                "",
            ),
        ]
    table: list[tuple[str, str, tuple[tuple[str, str], ...], bytes, str]] = [
        ("b", "(b) length prefix 0xFFFFFFFF", (), grpc_frame(b"", length=0xFFFFFFFF), "8"),
        (
            "c",
            "(c) length prefix 16 with 3 bytes, then END_STREAM",
            (),
            grpc_frame(small, length=16),
            "refused",
        ),
        (
            "d",
            "(d) compressed flag without grpc-encoding",
            (),
            grpc_frame(small, compressed=True),
            "refused",
        ),
        ("e", "(e) grpc-timeout: 1X", (("grpc-timeout", "1X"),), empty, "refused"),
        (
            "f",
            "(f) upper-case metadata name X-Hipaa-Probe",
            (("X-Hipaa-Probe", "1"),),
            empty,
            "unseen",
        ),
        ("f", "(f) metadata name with a space", (("x hipaa probe", "1"),), empty, "unseen"),
    ]
    plan += [Malformed(r, label, liveness, grpc_, md, body, w) for r, label, md, body, w in table]
    return plan


def _send_malformed(run: Run, probe: Malformed) -> tuple[Reply | OSError, str]:
    """``probe`` on a connection of its own, with a request ID (its key in the raw log)."""
    rid = new_request_id()
    metadata = (*probe.metadata, (run.request_id_key, rid))
    try:
        with run.open_h2() as client:
            headers = client.headers(probe.path, content_type=probe.content_type, metadata=metadata)
            sid = client.request(headers, probe.body, record=rid)
            return client.wait(sid, _deadline(run)), rid
    except OSError as exc:
        return exc, rid


def judge_malformed(probe: Malformed, reply: Reply | OSError) -> Observation:
    """(a)-(f): served (HTTP 200, grpc-status 0) fails, and so does a hang; (b) wants 8.

    A failed connection, and UNAVAILABLE or DEADLINE_EXCEEDED (the request did not reach
    the service: a proxy's backend away, say), are INCONCLUSIVE: neither is a refusal.
    """
    if isinstance(reply, OSError):
        return Observation(
            probe.probe, f"connection failed: {reply}", "an answer", Status.INCONCLUSIVE
        ).of(probe.ref)
    return _judged(probe, reply).of(probe.ref)


def _judged(probe: Malformed, reply: Reply) -> Observation:
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
    if reply.grpc_status in _UNREACHED_NUMBERS:
        return Observation(
            probe.probe,
            f"{observed}: the request did not reach the service",
            "an answer from the service",
            Status.INCONCLUSIVE,
        )
    if probe.wants == "unseen" and reply.ok:
        return Observation(
            probe.probe,
            f"{observed}: served as without the field; whether it reached the service is not "
            "shown (no protected unary method with header credentials to carry under it)",
            "refused, or dropped before the service",
            Status.INCONCLUSIVE,
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


# -- (f) with credentials ----------------------------------------------------------------


@dataclass(frozen=True)
class Disguised:
    """(f): a protected call whose credentials travel under a malformed name.

    ``header`` is the name the service reads them under; ``metadata`` carries them under
    ``name`` instead (RFC 9113 8.2.1: no upper case, no space in a field name).
    """

    probe: str
    path: str
    body: bytes
    header: str
    name: str
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Controls:
    """(f)'s two control calls: the credentials under their own name, and none at all."""

    honest: Reply | OSError
    bare: Reply | OSError


def _credentialed_unary(run: Run) -> tuple[str, bytes, tuple[tuple[str, str], ...]]:
    """The first protected unary method with a caller whose credentials travel in a header.

    Its path, a valid request, and that caller's metadata; empty when there is none (the
    credentials are a client certificate only, or nobody may call a unary method).
    """
    surface = surface_from(run)
    if isinstance(surface, str):
        return "", b"", ()
    for m in surface.methods:
        for caller in () if m.streaming else m.callers:
            metadata = surface.metadata(caller)
            if metadata:
                return m.path, m.seed, metadata
    return "", b"", ()


def disguise_plan(path: str, body: bytes, metadata: tuple[tuple[str, str], ...]) -> list[Disguised]:
    """(f) for ``path``: its credentials under an upper-case name, then a name with a space.

    ``metadata`` is the caller's; nothing is planned without credentials in a header.
    """
    if not path or not metadata:
        return []
    header, value = metadata[0]
    names = ((header.title(), "an upper-case name"), (f"{header} ", "a name with a space"))
    return [
        Disguised(
            f"(f) credentials under {what} ({name!r}) -> {path}",
            path,
            body,
            header,
            name,
            ((name, value), *metadata[1:]),
        )
        for name, what in names
        if name != header
    ]


def disguise_calls(disguises: Sequence[Disguised]) -> list[Malformed]:
    """(f)'s disguises, then their two controls: the field under its own name, and none."""
    if not disguises:
        return []
    first = disguises[0]
    honest = ((first.header, first.metadata[0][1]), *first.metadata[1:])
    calls = [
        Malformed("f", p.probe, p.path, "application/grpc", p.metadata, grpc_frame(p.body), "")
        for p in disguises
    ]
    return [*calls, *(replace(calls[0], metadata=metadata) for metadata in (honest, ()))]


def judge_disguises(
    disguises: Sequence[Disguised], sent: Sequence[tuple[Reply | OSError, str]]
) -> list[Observation]:
    """(f): each disguise's reply beside the control calls' (:func:`disguise_calls`)."""
    if not disguises:
        return []
    *replies, (with_, _), (without, _) = sent
    controls = Controls(with_, without)
    return [
        replace(judge_disguised(p, r, controls), request_id=rid)
        for p, (r, rid) in zip(disguises, replies, strict=True)
    ]


def _served(reply: Reply | OSError) -> bool:
    return not isinstance(reply, OSError) and (reply.ok or bool(reply.messages))


def _answer(reply: Reply | OSError) -> tuple[object, ...] | None:
    """What a call's answer was on the wire, for comparison; ``None`` for no answer."""
    if isinstance(reply, OSError) or reply.timed_out:
        return None
    return (reply.http_status, reply.grpc_status, reply.reset_code, reply.goaway_code)


def judge_disguised(probe: Disguised, reply: Reply | OSError, controls: Controls) -> Observation:
    """(f): credentials under a malformed name must never be taken for the credential header.

    Served fails (high), unless the method serves calls without credentials too (the
    control ``bare``: then nothing is shown). Not served passes when it differs from the
    call without credentials (refused: a reset, a GOAWAY, HTTP 400, an error of its own)
    or when the same credentials under their own name were served (``honest``): answered
    exactly as without them, the field was dropped before the service (nghttp2 drops a
    name with a space) or never read. A hang fails; no connection, UNAVAILABLE or
    DEADLINE_EXCEEDED, or an answer no control explains, is INCONCLUSIVE.
    """
    expected = f"not taken for {probe.header}: refused, or answered as without credentials"
    if isinstance(reply, OSError):
        observed, status = f"connection failed: {reply}", Status.INCONCLUSIVE
    elif reply.timed_out:
        observed, status = f"{reply.describe()}: the stream hung", Status.FAIL
    elif reply.grpc_status in _UNREACHED_NUMBERS:
        observed = f"{reply.describe()}: the request did not reach the service"
        status = Status.INCONCLUSIVE
    elif _served(reply):
        bare_served = _served(controls.bare)
        status = Status.INCONCLUSIVE if bare_served else Status.FAIL
        why = (
            "the method serves calls without credentials too: nothing shown"
            if bare_served
            else f"served: the malformed name was taken for {probe.header}"
        )
        observed = f"{reply.describe()}: {why}"
    else:
        observed, status = _unserved(probe, reply, controls)
    severity = Severity.HIGH if status is Status.FAIL else None
    return Observation(probe.probe, observed, expected, status, severity).of("f")


def _unserved(probe: Disguised, reply: Reply, controls: Controls) -> tuple[str, Status]:
    """(f) not served: refused, dropped, or (no working control) not shown."""
    observed = reply.describe()
    bare = _answer(controls.bare)
    honest = None if isinstance(controls.honest, OSError) else _answer(controls.honest)
    if bare is not None and honest not in (None, bare) and _answer(reply) == honest:
        # Not served, but answered as the credentials under their own name were (a
        # PERMISSION_DENIED or NOT_FOUND past authentication): the field was taken for them.
        return f"{observed}, exactly as with {probe.header} itself: taken for it", Status.FAIL
    if bare is not None and _answer(reply) != bare:
        return f"{observed}: refused", Status.PASS
    if _served(controls.honest):
        if bare is None:
            return f"{observed}: not served, as {probe.header} itself was", Status.PASS
        return (
            f"{observed}, exactly as the call without credentials: the field was not taken "
            f"for {probe.header} (dropped before the service, as nghttp2 drops it, or never "
            "read; RFC 9113 8.2.1)",
            Status.PASS,
        )
    said = (
        str(controls.honest) if isinstance(controls.honest, OSError) else controls.honest.describe()
    )
    return (
        f"{observed}; the credentials under {probe.header} were not served either ({said}): "
        "what the malformed name would change is not shown",
        Status.INCONCLUSIVE,
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
class Samples:
    """Latencies of one sampled call (seconds), and the failures among its samples."""

    latencies: list[float]
    failures: list[str]

    def p95(self) -> float:
        """The 95th percentile latency, in seconds (0 with no sample)."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0

    def describe(self) -> str:
        """One line of evidence: p95, sample count, failures."""
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


def _sequential(pulses: list[_Pulse], count: int) -> dict[str, Samples]:
    out = {p.label: Samples([], []) for p in pulses}
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
        self.samples = {p.label: Samples([], []) for p in pulses}
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
) -> tuple[dict[str, Samples], list[str]]:
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
    """(g): a baseline, the four bursts at once, a repeat where they degrade, and after."""
    pulses = _pulses(run, liveness)
    base = _sequential(pulses, _BASELINE_SAMPLES)
    unhealthy = judge_baseline(liveness, base)
    if unhealthy is not None:
        return [unhealthy]
    limits = burst_limits(base)

    def judged(probe: str, got: dict[str, Samples]) -> Observation:
        return judge_samples(probe, got, base, limits, "during")

    kinds = _burst_kinds(run, liveness)
    during, notes = _run_bursts(run, pulses, kinds)
    first = judged("(g) bursts on four connections at once: " + "; ".join(notes), during)
    alone: list[Observation] = []
    again = None
    if first.status is Status.FAIL:
        # A degradation must show twice: each burst alone names the culprit; if none does,
        # the four together run once more (a loaded host can miss once by a few ms).
        alone = [
            judged(f"burst alone: {name}", _run_bursts(run, pulses, {name: burst})[0])
            for name, burst in kinds.items()
        ]
        if all(o.status is Status.PASS for o in alone):
            again = judged("(g) the four bursts at once, again", _run_bursts(run, pulses, kinds)[0])
    after = _sequential(pulses, _AFTER_SAMPLES)
    out = [
        *reproduced(first, alone, again),
        judge_samples("(g) after the bursts", after, base, limits, "after"),
    ]
    return [o.of("g") for o in out]


def judge_baseline(liveness: str, base: Mapping[str, Samples]) -> Observation | None:
    """(g) cannot be judged against a liveness method that already failed: INCONCLUSIVE."""
    if not base[liveness].failures:
        return None
    return Observation(
        f"health baseline ({liveness})",
        base[liveness].describe(),
        "healthy before the bursts",
        Status.INCONCLUSIVE,
    ).of("g")


def burst_limits(base: Mapping[str, Samples]) -> dict[str, float]:
    """Each sampled call's p95 limit: max(2 x baseline, baseline + the floor) [P]."""
    return {k: max(2 * s.p95(), s.p95() + DEGRADATION_FLOOR_S) for k, s in base.items()}


def judge_samples(
    probe: str,
    got: Mapping[str, Samples],
    base: Mapping[str, Samples],
    limits: Mapping[str, float],
    when: str,
) -> Observation:
    """Samples taken ``when`` (during or after the bursts) against their limits.

    Any failed sample, or a p95 over its call's limit, fails.
    """
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


def reproduced(
    first: Observation, alone: Sequence[Observation], again: Observation | None
) -> list[Observation]:
    """(g)'s degradation counts only when it shows twice.

    ``first`` is the four bursts at once; ``alone`` each burst by itself (run only when
    ``first`` failed); ``again`` the four once more (only when none alone failed). A
    failure that ``again`` did not reproduce stands as a PASS, saying so.
    """
    out = [first, *alone]
    if again is None:
        return out
    out.append(again)
    if first.status is Status.FAIL and again.status is Status.PASS:
        out[0] = replace(
            first, observed=first.observed + " (not reproduced: see below)", status=Status.PASS
        )
    return out


# -- (h) --------------------------------------------------------------------------------


def idle_wait(limit: float, budget_s: float) -> tuple[float, float]:
    """(h)'s grace past the limit, max(1 s, half the limit), and how long to wait."""
    grace = max(1.0, 0.5 * limit)
    return grace, min(limit + grace, budget_s)


def _idle(run: Run, liveness: str) -> list[Observation]:
    limit = run.config.get("limits.max_idle_s")
    if not limit:
        return []  # the probe's needs say what would enable it
    grace, wait = idle_wait(float(limit), float(run.config.get("safety.max_duration_s")))
    try:
        with run.open_h2() as client:
            reply: Reply | OSError = client.wait(
                client.request(client.headers(liveness), None), wait
            )
    except OSError as exc:
        reply = exc
    return [judge_idle(float(limit), grace, wait, reply)]


def judge_idle(limit: float, grace: float, wait: float, reply: Reply | OSError) -> Observation:
    """(h): the silent stream, or its connection, must end within the limit and the grace."""
    probe = f"(h) a stream that sends nothing (limits.max_idle_s = {limit:g})"
    if isinstance(reply, OSError):
        return Observation(
            probe, f"connection failed: {reply}", "an answer", Status.INCONCLUSIVE
        ).of("h")
    closed = reply.ended and reply.elapsed_s <= limit + grace
    return Observation(
        probe,
        reply.describe() if reply.ended else f"still open after {wait:g} s",
        f"stream or connection closed within {limit + grace:g} s",
        Status.PASS if closed else Status.FAIL,
    ).of("h")
