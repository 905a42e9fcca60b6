"""Redaction controls (REDACT-*): no PHI and no secret where it must not be.

Canary PHI (:mod:`harness.canary`) goes into the request fields ``phi.field_paths`` names
(:func:`harness.plans.canaries.planted_calls`); then logs, audit events, status messages,
details and metadata are searched for it in every encoding. Hits are reported by
category, encoding, location and line hash, never by value.

Each check wires the planted calls, the reads of its sources and a pure judge
(``judge_*``) that takes the recorded results and the bytes searched.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from harness import audit
from harness.canary import CanarySet, Hit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check
from harness.oracles import UNREACHED
from harness.outcome import (
    CannotObserve,
    NotApplicable,
    Observation,
    Outcome,
    Probe,
    Status,
    filed,
)
from harness.plans.canaries import Planted, canaries, planted_calls, sink_marks
from harness.run import Run

Chunks = Sequence[tuple[str, bytes]]

#: The canary calls by kind: (a) valid, (b) invalid, (c) denied (REDACT-001 and -003).
KINDS = {"valid": "a", "invalid": "b", "denied": "c"}
_KIND_PROBES = (
    Probe("a", "a valid request carrying canaries in phi.field_paths"),
    Probe(
        "b",
        "a deliberately invalid request (a date field set to not-a-date-N)",
        needs=("phi.field_paths.dates",),
    ),
    Probe("c", "a request carrying canaries, denied by authorisation"),
)


Marks = Mapping[str, Mapping[str, str] | None]


def unwritten(before: Marks, after: Marks) -> list[str]:
    """The sink entries not shown written since ``before``: same marks, or unreadable then.

    Marks are :func:`harness.audit.marks` per ``logs.sinks`` entry (None: unreadable).
    """
    return [
        entry
        for entry, was in before.items()
        if was is None or after.get(entry) is None or after.get(entry) == was
    ]


def _marks_now(run: Run) -> dict[str, dict[str, str] | None]:
    out: dict[str, dict[str, str] | None] = {}
    for sink in run.config.get("logs.sinks") or []:
        got, problem = audit.marks(sink, "logs.sinks entry")
        out[str(sink)] = None if problem else got
    return out


def _settle(run: Run, planted: list[Planted]) -> None:
    """Wait until the canary calls' traces are delivered, once per run.

    With an audit source, until their events are there; then, within
    ``audit.delivery_timeout_s``, until every log sink was written since the calls went out
    (polled, never a blind sleep). A sink still not written then is judged as such.
    """

    def compute() -> bool:
        timeout = float(run.config.get("audit.delivery_timeout_s", 30))
        deadline = time.monotonic() + timeout
        if run.config.get("audit.source") is not None:
            audit.wait_for(run, [p.result.request_id for p in planted])
        before = sink_marks(run)
        while before and unwritten(before, _marks_now(run)):
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.25)
        time.sleep(0.2)  # the calls' last lines may follow their first by a moment
        return True

    run.memo("canary-settled", compute)


def _planted(run: Run) -> tuple[list[Planted], list[Observation]]:
    """The canary calls that took, or NotApplicable when none could be planted."""
    planted, notes = planted_calls(run)
    if not [p for p in planted if p.kind in KINDS]:
        raise NotApplicable("no canary could be planted (phi.methods, phi.field_paths)")
    return planted, notes


def judge_hits(
    ref: str,
    hits: Iterable[Hit],
    severity: Severity,
    allowed: Iterable[str] = (),
    request_id: str | None = None,
) -> list[Observation]:
    """One observation per canary hit: FAIL at ``severity``, WARN (low) for a weak one.

    Categories in ``allowed`` are not findings.
    """
    allowed = set(allowed)
    return [
        Observation(
            "canary search",
            h.describe(),
            "no canary",
            Status.FAIL if h.strong else Status.WARN,
            severity if h.strong else Severity.LOW,
            request_id,
        ).of(ref)
        for h in hits
        if h.category not in allowed
    ]


#: Answers the service's handler never gave: a throttle or size limit (8), no such method (12).
_BEFORE_HANDLER = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED})
_REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


def missed(p: Planted) -> str:
    """Why canary call ``p`` did not reach the path its kind tests ("" when it did).

    (a) valid: the handler, so not a refusal (16, 7), a throttle or a transport failure;
    (b) invalid: an error from the service's validation, a non-OK answer that is none of
    those (an OK means the invalid value provoked no error); (c) denied: the refusal (16 or
    7). Decided by status codes alone, as any stack sends them.
    """
    code, method = p.result.code, p.probe.method
    if code in UNREACHED:
        return f"{p.result.status}: never reached the service"
    if p.kind == "denied":
        if code in _REFUSED:
            return ""
        return f"{p.result.status}: not refused, the denial path of {method} was not reached"
    if code in _REFUSED or code in _BEFORE_HANDLER:
        return f"{p.result.status}: answered before the handler of {method}"
    if p.kind == "invalid" and code == grpc.StatusCode.OK:
        return f"{p.result.status}: the invalid request provoked no error in {method}"
    return ""


def judge_sent(planted: Iterable[Planted]) -> list[Observation]:
    """Each canary call reached the path its kind tests (filed under its kind: a, b, c).

    A call that did not (:func:`missed`: never arrived, refused or throttled before the
    handler, an invalid request that provoked no error, a denied call not refused) planted
    nothing where it claims: INCONCLUSIVE. So is a method given canaries with no invalid
    request (:func:`judge_uncovered`).
    """
    planted = list(planted)
    out = []
    for p in planted:
        if p.kind not in KINDS:
            continue
        why = missed(p)
        out.append(
            Observation(
                f"{p.probe.label} ({p.kind})",
                why or p.result.status,
                "reached the service",
                Status.INCONCLUSIVE if why else Status.PASS,
                None,
                p.result.request_id,
            ).of(KINDS[p.kind])
        )
    return out + judge_uncovered(planted)


def judge_uncovered(planted: Sequence[Planted]) -> list[Observation]:
    """(b) per method given canaries: one with no invalid request is INCONCLUSIVE, named.

    Its error path was not reached; when no method has one, the probe did not run (SKIP).
    """
    given = dict.fromkeys(p.probe.method for p in planted if p.kind == "valid")
    tried = {p.probe.method for p in planted if p.kind == "invalid"}
    status = Status.INCONCLUSIVE if tried else Status.SKIP
    return [
        Observation(
            f"invalid canary request to {method}",
            "not made: its error path was not reached",
            f"a phi.field_paths.dates field of {method}",
            status,
        ).of("b")
        for method in given
        if method not in tried
    ]


def judge_sinks(chunks: Chunks, c: CanarySet, stale: Collection[str]) -> list[Observation]:
    """The log sinks hold no canary, and each was written during the run.

    Empty sinks are nothing to judge (INCONCLUSIVE); so is each sink entry in ``stale``
    (:func:`unwritten`: not written while the canary calls went out), which proves nothing.
    A hit is a finding wherever it is.
    """
    size = sum(len(b) for _, b in chunks)
    probe = f"{len(chunks)} log source(s), {size} bytes"
    if not size:
        observed = "the sinks are empty: nothing to search"
        return [
            Observation(probe, observed, "log lines to search", Status.INCONCLUSIVE).of("sinks")
        ]
    hits = [h for source, blob in chunks for h in c.scan(blob, source)]
    status = Status.PASS if not hits else Status.FAIL
    summary = Observation(probe, f"{len(hits)} hit(s)", "no canary", status).of("sinks")
    return [summary, *judge_hits("sinks", hits, Severity.CRITICAL), *judge_stale(stale, "sinks")]


def judge_stale(stale: Iterable[str], ref: str) -> list[Observation]:
    """One INCONCLUSIVE per sink entry the run's calls did not write: it proves nothing."""
    return [
        Observation(
            f"log sink {entry}",
            "not written while the canary calls went out",
            "a sink the run wrote to",
            Status.INCONCLUSIVE,
        ).of(ref)
        for entry in stale
    ]


def _sinks(run: Run) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The bytes of every ``logs.sinks`` entry not in ``logs.allowed_phi_sinks``.

    And the entries among them not written since the canary calls went out.
    """
    allowed = set(run.config.str_list("logs.allowed_phi_sinks"))
    chunks: list[tuple[str, bytes]] = []
    searched = []
    for sink in run.config.get("logs.sinks") or []:
        if str(sink) in allowed:
            continue
        got, problem = audit.read_raw(sink, "logs.sinks entry")
        if problem:
            raise CannotObserve(problem)
        chunks += got
        searched.append(str(sink))
    before = sink_marks(run)
    stale = unwritten({e: before.get(e) for e in searched}, _marks_now(run))
    return chunks, stale


@check("REDACT-001", probes=(*_KIND_PROBES, Probe("sinks", "every logs.sinks entry searched")))
def no_phi_in_logs(run: Run) -> Outcome:
    """Safe Harbor canaries never reach application logs.

    Canary values go into every ``phi.field_paths`` field of each ``phi.methods`` entry
    in (a) a valid, (b) an invalid and (c) a refused request. After
    ``audit.delivery_timeout_s`` (polled: the audit events, then each sink written since the
    calls went out), every ``logs.sinks`` entry (files, globs, commands) except
    ``logs.allowed_phi_sinks`` is searched in every encoding. A hit is FAIL (critical),
    reported by category, encoding, location and line hash; a weak category (zip, dates)
    alone on its line is WARN. Empty sinks, and a sink the run did not write, are nothing
    to judge (INCONCLUSIVE); so is a canary call that did not reach the path its kind tests
    (refused, throttled or lost; an invalid request that provoked no error; a denied call
    not refused).
    """
    if not run.config.get("logs.sinks"):
        raise NotApplicable("no logs.sinks declared")
    planted, notes = _planted(run)
    _settle(run, planted)
    chunks, stale = _sinks(run)
    observations = filed("a", notes) + judge_sent(planted)
    observations += judge_sinks(chunks, canaries(run), stale)
    return Outcome.from_observations(
        CATALOGUE["REDACT-001"], observations, passed="no canary in any log sink"
    )


def judge_audit(
    planted: Sequence[Planted],
    events: Mapping[str, Sequence[object]],
    chunks: Chunks,
    c: CanarySet,
    allowed: Iterable[str],
) -> list[Observation]:
    """The audit source holds no canary outside ``allowed`` categories.

    An empty source is nothing to search: INCONCLUSIVE; so is a source that holds no event
    of any canary call (lost, or never written), unless a canary is found all the same.
    """
    logged = [p for p in planted if events.get(p.result.request_id)]
    probe = f"audit source ({len(logged)} of {len(planted)} canary call(s) with an event)"
    if not any(blob.strip() for _, blob in chunks):
        observed = "the audit source is empty: nothing to search"
        return [Observation(probe, observed, "events to search", Status.INCONCLUSIVE).of("audit")]
    allowed = set(allowed)
    hits = [h for source, blob in chunks for h in c.scan(blob, source)]
    findings = judge_hits("audit", hits, Severity.HIGH, allowed)
    status = Status.FAIL if any(o.status is Status.FAIL for o in findings) else Status.PASS
    counted = len([h for h in hits if h.category not in allowed])
    if status is Status.PASS and planted and not logged:
        # The events that would hold the values are not there: nothing was searched.
        observed = "no canary call has an event in the source: nothing of theirs to search"
        status = Status.INCONCLUSIVE
        return [Observation(probe, observed, "the canary calls' events", status).of("audit")]
    return [Observation(probe, f"{counted} hit(s)", "no canary", status).of("audit"), *findings]


@check(
    "REDACT-002",
    probes=(Probe("audit", "the audit events searched for every canary", needs=("audit.source",)),),
)
def no_phi_in_audit(run: Run) -> Outcome:
    """Audit records hold references, not PHI values.

    After the canary calls, the audit source is searched for every canary, in every
    encoding. Categories in ``audit.allowed_identifiers`` (an opaque ID, a tokenised MRN)
    may appear; names, SSNs, dates, contact data and the like are FAIL (high). An empty
    audit source is nothing to judge (INCONCLUSIVE).
    """
    source = run.config.get("audit.source")
    if source is None:
        raise NotApplicable("no audit.source declared")
    planted, notes = _planted(run)
    polled = audit.poll(run, [p.result.request_id for p in planted])
    if polled.problem:
        raise CannotObserve(polled.problem)
    allowed = run.config.str_list("audit.allowed_identifiers")
    observations = filed("audit", notes)
    # Any event that may be a canary call's holds its values (under tuple correlation the
    # canary calls of one method and caller are alike: no need to tell which is whose).
    logged = polled.matches.candidates
    observations += judge_audit(planted, logged, polled.chunks, canaries(run), allowed)
    return Outcome.from_observations(
        CATALOGUE["REDACT-002"], observations, passed="audit events hold no canary"
    )


def surfaces(result: CallResult) -> list[tuple[str, bytes]]:
    """Every place an answer can carry text, named.

    The status message, each decoded detail of ``grpc-status-details-bin`` (and its raw
    bytes), every header and trailer.
    """
    out = [("status message", result.details.encode())]
    for key, value in (*result.initial_metadata, *result.trailing_metadata):
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            out.append(("status details (raw)", value))
            try:
                for d in status_pb2.Status.FromString(value).details:
                    out.append((f"status detail {d.type_url.rsplit('/', 1)[-1]}", d.value))
            except DecodeError:
                pass
        else:
            out.append(
                (f"metadata {key}", value if isinstance(value, bytes) else str(value).encode())
            )
    return out


def judge_answer(p: Planted, c: CanarySet) -> list[Observation]:
    """One canary call's message, details and metadata: no canary (filed under a, b, c).

    A hit is FAIL (high), critical when a denied call echoes it. A clean answer passes only
    when the call reached the path its kind tests (:func:`missed`: the invalid request
    provoked an error from the service, the denied one was refused); else INCONCLUSIVE.
    """
    ref = KINDS[p.kind]
    probe = f"{p.probe.label} ({p.kind})"
    expected = "no canary in message, details or metadata"
    rid = p.result.request_id
    hits = [h for where, blob in surfaces(p.result) for h in c.scan(blob, where)]
    if not hits:
        why = missed(p)
        status = Status.INCONCLUSIVE if why else Status.PASS
        return [Observation(probe, why or p.result.status, expected, status, None, rid).of(ref)]
    sev = Severity.CRITICAL if p.kind == "denied" else Severity.HIGH
    return [
        Observation(
            probe,
            f"{p.result.status}; {h.describe()}",
            expected,
            Status.FAIL if h.strong else Status.WARN,
            sev if h.strong else Severity.LOW,
            rid,
        ).of(ref)
        for h in hits
    ]


@check("REDACT-003", probes=_KIND_PROBES)
def no_phi_in_errors(run: Run) -> Outcome:
    """Errors, status details and response metadata carry no PHI.

    For every canary call, (a) valid, (b) invalid and (c) refused: the status message, the
    decoded ``grpc-status-details-bin`` (every detail) and all initial and trailing
    metadata are searched for every canary. Field paths may be named, values may not: a
    hit is FAIL (high), critical when a refused call echoes it. A clean answer counts only
    from a call that reached what its kind tests: for each method given canaries, (b) its
    invalid request must provoke an error from the service (a non-OK answer other than 16,
    7, 8, 12 or a transport failure) and (c) its denied one a refusal; a method whose
    invalid request provoked no error, or that has none, is INCONCLUSIVE, named.
    """
    planted, notes = _planted(run)
    c = canaries(run)
    observations = filed("a", notes) + judge_uncovered(planted)
    for p in planted:
        if p.kind in KINDS:
            observations += judge_answer(p, c)
    return Outcome.from_observations(
        CATALOGUE["REDACT-003"], observations, passed="no canary in any error, detail or metadata"
    )


def judge_secrets(secrets: Mapping[str, tuple[str, str]], sources: Chunks) -> list[Observation]:
    """No source holds a token whole or its signature segment.

    ``secrets`` maps a label to (probe, token): ``tokens`` for the run's bearer tokens,
    ``canary`` for the canary JWT. A token under 16 characters is not searched (too short
    to tell from chance). A probe with no token to search makes no observation.
    """
    texts = [(name, blob.decode("utf-8", "replace")) for name, blob in sources]
    out: list[Observation] = []
    searched: dict[str, int] = {}
    for label, (ref, token) in secrets.items():
        signature = token.rsplit(".", 1)[-1]
        searched[ref] = searched.get(ref, 0) + 1
        for name, text in texts:
            for what, needle in (("token", token), ("signature segment", signature)):
                if len(needle) >= 16 and needle in text:
                    line = text.count("\n", 0, text.index(needle)) + 1
                    out.append(
                        Observation(
                            f"{label} ({what})",
                            f"found at {name}:{line}",
                            "never logged",
                            Status.FAIL,
                            Severity.HIGH,
                        ).of(ref)
                    )
                    break
    size = sum(len(t) for _, t in texts)
    for ref, n in searched.items():
        if not any(o.ref == ref for o in out):
            probe = f"{n} token(s) searched in {len(texts)} source(s), {size} bytes"
            status = Status.PASS if size else Status.INCONCLUSIVE  # nothing was searched
            out.append(Observation(probe, "not found", "no token", status).of(ref))
    return out


def secrets_used(run: Run, planted: Iterable[Planted]) -> dict[str, tuple[str, str]]:
    """The run's bearer tokens (probe ``tokens``) and the canary JWT (probe ``canary``)."""
    out = {
        f"{p.name}'s token": ("tokens", p.token()) for p in run.principals.values() if p.has_token
    }
    for p in planted:
        if p.kind == "token":
            # The one credential entry, wherever auth.header put it; the JWT is its last word.
            value = next((v for _, v in p.probe.metadata), "")
            out["the canary JWT"] = ("canary", str(value).rsplit(" ", 1)[-1])
    return out


def judge_searched(
    ref: str, what: str, chunks: Chunks, stale: Iterable[str] = ()
) -> list[Observation]:
    """What was searched for secrets (probe ``ref``): something, and written during the run.

    An empty source searched nothing, and a log sink the run did not write (``stale``)
    proves nothing: INCONCLUSIVE.
    """
    size = sum(len(b) for _, b in chunks)
    observed = f"{len(chunks)} source(s), {size} bytes searched"
    status = Status.PASS if size else Status.INCONCLUSIVE
    found = Observation(what, observed, "something to search", status).of(ref)
    return [found, *judge_stale(stale, ref)]


@check(
    "REDACT-004",
    probes=(
        Probe("tokens", "every bearer token the run used, whole and its signature segment"),
        Probe("canary", "a canary JWT sent as an invalid credential"),
        Probe("logs", "every logs.sinks entry searched", needs=("logs.sinks",)),
        Probe("audit", "the audit source searched", needs=("audit.source",)),
    ),
)
def no_secrets_in_logs(run: Run) -> Outcome:
    """Credentials and secrets never logged.

    Every ``logs.sinks`` entry and the audit source are searched for every bearer token
    the run used (whole, and its signature segment alone) and for the canary JWT sent as a
    credential (its payload carries the canary nonce). A ``kid``, ``jti`` or token hash may
    appear; a token may not. A source that cannot be read leaves the search INCONCLUSIVE;
    one not declared was not searched (its probe names the key), and a log sink the run
    did not write proves nothing.
    """
    source = run.config.get("audit.source")
    if not run.config.get("logs.sinks") and source is None:
        raise NotApplicable("no logs.sinks or audit.source to search")
    planted, _ = planted_calls(run)
    _settle(run, planted)
    observations: list[Observation] = []
    sources: list[tuple[str, bytes]] = []
    if run.config.get("logs.sinks"):
        chunks, stale = _sinks(run)
        observations += judge_searched("logs", "logs.sinks", chunks, stale)
        sources += chunks
    if source is not None:
        chunks, problem = audit.read_raw(source)
        if problem:
            raise CannotObserve(problem)
        observations += judge_searched("audit", "audit.source", chunks)
        sources += chunks
    observations += judge_secrets(secrets_used(run, planted), sources)
    return Outcome.from_observations(
        CATALOGUE["REDACT-004"], observations, passed="no token in any log or audit record"
    )
