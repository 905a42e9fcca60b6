"""Oracles several controls share: refusals, the service's liveness, and what leaks.

The bottom of the check layers: it imports neither :mod:`harness.checks` nor
:mod:`harness.plans`, so the fuzz engine (:mod:`harness.engine`) and every check judge by
the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

import grpc

from harness.catalogue import Severity
from harness.channels import CallResult, code_text
from harness.outcome import Observation, Status

#: Codes of a call that never reached the service (see also :func:`unreached`, which
#: knows a proxy's own refusal too).
UNREACHED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED

#: An edge's back-pressure: 429 Too Many Requests, 503 (nginx's ``limit_req`` and
#: ``limit_conn`` default): a rate or load limit, never the service's answer.
EDGE_THROTTLED = frozenset({429, 503})
#: An edge's body limit (nginx's ``client_max_body_size``): a size limit enforced.
EDGE_TOO_LARGE = 413


def edge_refusal(result: CallResult) -> int | None:
    """The HTTP status with which a proxy in front of the service answered, or ``None``.

    A non-200 HTTP answer that came without ``grpc-status`` and without a response message
    (:attr:`harness.channels.CallResult.http_status`): nginx's 400 for a duplicate
    ``authorization`` header or a missing or bad client certificate (logged as 496/495),
    413 for a body over ``client_max_body_size``, 429 or 503 for ``limit_req``, 502 or
    504 when it could not reach the service. gRPC clients see these as INTERNAL, UNKNOWN or
    UNAVAILABLE (UNAUTHENTICATED for 401, PERMISSION_DENIED for 403), the codes a service
    answers with too: the request never reached the service, whose controls it cannot
    show held or failed.
    """
    return None if result.responses else result.http_status


#: How grpcio words a stream ended by the peer's GOAWAY with ENHANCE_YOUR_CALM (HTTP/2
#: error 11); other clients name the code.
_CALM = re.compile(r"GOAWAY received; Error code: 11\b|ENHANCE_YOUR_CALM", re.IGNORECASE)


def edge_answered(result: CallResult) -> bool:
    """Something in front of the service answered: no response message, no ``grpc-status``.

    A proxy's non-200 HTTP answer (:func:`edge_refusal` gives its status), or one whose
    status the client lost: grpcio reports nginx's answer followed by its reset of the
    request stream as INTERNAL "Stream removed (Data frame with END_STREAM flag received)"
    about one time in ten (:attr:`harness.channels.CallResult.statusless`).
    """
    return not result.responses and result.statusless


def calmed(result: CallResult) -> bool:
    """The peer closed the connection on this call with GOAWAY ENHANCE_YOUR_CALM (error 11).

    A deliberate refusal of what was sent (nginx: a header field over
    ``large_client_header_buffers``; grpc-go: pings too often), not a service that went
    away: UNAVAILABLE with no response message whose text names that GOAWAY. The request
    never reached the service (:func:`unreached` holds too).
    """
    return (
        not result.responses
        and result.code == grpc.StatusCode.UNAVAILABLE
        and bool(_CALM.search(result.details))
    )


def unreached(result: CallResult) -> bool:
    """The call never reached the service.

    A transport failure (:data:`UNREACHED`) with no response message, or a proxy's own HTTP
    answer (:func:`edge_answered`, its status stated or lost).
    """
    if result.responses:
        return False
    return result.code in UNREACHED or edge_answered(result)


def lost(result: CallResult) -> bool:
    """No whole answer of the service came back.

    A transport failure, even after some response messages (a stream cut short, a
    deadline mid-listing), or a proxy's own HTTP answer (:func:`unreached`).
    """
    return result.code in UNREACHED or unreached(result)


def edge_note(result: CallResult) -> str:
    """Evidence for a proxy's answer: its HTTP status, and that the service never saw it."""
    if not edge_answered(result):
        return ""
    status = edge_refusal(result)
    said = f"HTTP {status}" if status is not None else "an HTTP answer (its status lost)"
    return f"{said} from a proxy in front of the service, without grpc-status: not its answer"


class Attempt(Protocol):
    """What :func:`refused` names a call by (a :class:`harness.plans.calls.Call`)."""

    @property
    def label(self) -> str:
        """How the call is described in evidence."""
        ...

    @property
    def method(self) -> str:
        """The method path it went to."""
        ...


def refused(
    probe: Attempt,
    result: CallResult,
    *,
    expected: Iterable[grpc.StatusCode] = (UNAUTHENTICATED,),
    low: Iterable[grpc.StatusCode] = (PERMISSION_DENIED,),
    data_severity: Severity = Severity.CRITICAL,
    edge: Iterable[int | None] = (),
) -> Observation:
    """Judge a call that must be refused: one of ``expected`` and no data.

    Data (a response message, OK, or a payload in the status details other than an
    explanation) is a FAIL at ``data_severity``; status details nobody can decode leave it
    INCONCLUSIVE; a code in ``low`` (right refusal, wrong semantics) a FAIL (low); a call
    that never reached the service INCONCLUSIVE; any other code (UNKNOWN, INTERNAL,
    INVALID_ARGUMENT, NOT_FOUND: the request was processed before the refusal) a FAIL
    (medium): validation or lookup ran, but nothing came back. A proxy's own HTTP answer
    (:func:`edge_answered`) never reached the service: a PASS when its status is in
    ``edge`` (the refusal this call is after, made in front of the service; ``None`` for
    an answer whose status the client lost) or its code is one of ``expected`` (a 401 for
    UNAUTHENTICATED), a FAIL (low) when its code is in ``low`` (a 403 for missing
    credentials: what callers see), else INCONCLUSIVE.
    """
    want = tuple(expected)
    expect = " or ".join(code_text(c) for c in want) + " with no data"
    where = f"{probe.label} -> {probe.method}"
    observed = result.summary()
    rid = result.request_id
    carried = result.carried()
    data = [c for c in carried if c != "undecodable status details"]
    if result.responses or result.code == grpc.StatusCode.OK or data:
        return Observation(where, observed, expect, Status.FAIL, data_severity, rid)
    if carried:
        return Observation(where, observed, expect, Status.INCONCLUSIVE, None, rid)
    if edge_answered(result):
        observed = f"{observed} ({edge_note(result)})"
        if result.code in want or edge_refusal(result) in tuple(edge):
            return Observation(where, observed, expect, Status.PASS, None, rid)
        if result.code in tuple(low):
            return Observation(where, observed, expect, Status.FAIL, Severity.LOW, rid)
        return Observation(where, observed, expect, Status.INCONCLUSIVE, None, rid)
    if result.code in want:
        return Observation(where, observed, expect, Status.PASS, None, rid)
    if result.code in UNREACHED:
        return Observation(where, observed, expect, Status.INCONCLUSIVE, None, rid)
    if result.code in tuple(low):
        return Observation(where, observed, expect, Status.FAIL, Severity.LOW, rid)
    return Observation(where, observed, expect, Status.FAIL, Severity.MEDIUM, rid)


def judge_health(probe: str, result: CallResult) -> Observation:
    """The liveness call after a batch of inputs or abuse (FUZZ-001, FUZZ-002, FUZZ-003).

    OK passes; any other answer fails (high: a crash or a hang, the catalogue's "healthy
    after each batch"); a call the run no longer sent (the target had gone away) is
    INCONCLUSIVE.
    """
    if not result.request_id:
        return Observation(probe, result.summary(), "OK", Status.INCONCLUSIVE)
    ok = result.code == grpc.StatusCode.OK
    return Observation(
        probe,
        result.status,
        "OK",
        Status.PASS if ok else Status.FAIL,
        None if ok else Severity.HIGH,
        result.request_id,
    )


#: What an error text must not carry (ERR-001, and every fuzz mode's oracle): kind,
#: pattern, severity.
LEAKS: tuple[tuple[str, re.Pattern[str], Severity], ...] = (
    (
        "stack trace",
        re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+"),
        Severity.HIGH,
    ),
    ("stack trace", re.compile(r"\.go:\d+\b|goroutine \d+"), Severity.HIGH),
    ("stack trace", re.compile(r"at [\w.$<>]+\([\w.]+\.(?:java|kt|scala):\d+\)"), Severity.HIGH),
    (
        "stack trace",
        re.compile(r"at .+\(.+\.[cm]?[jt]s:\d+:\d+\)|\bat .+ in .+:line \d+"),
        Severity.HIGH,
    ),
    (
        "SQL",
        re.compile(r"\bSELECT\b.*\bFROM\b|syntax error at or near|ORA-\d{5}|SQLSTATE", re.I),
        Severity.MEDIUM,
    ),
    (
        "absolute path",
        re.compile(r"(?<![\w/.:-])/(?:[\w.@+-]+/){2,}[\w.@+-]*|\b[A-Za-z]:\\(?:[^\\\s]+\\)+"),
        Severity.MEDIUM,
    ),
    (
        "private address",
        re.compile(
            r"\b(?:10\.\d{1,3}\.\d{1,3}\.\d{1,3}|172\.(?:1[6-9]|2\d|3[01])\.\d{1,3}\.\d{1,3}|192\.168\.\d{1,3}\.\d{1,3})\b"
        ),
        Severity.MEDIUM,
    ),
    (
        "version banner",
        re.compile(
            r"\b(?:grpc-(?:go|java|python|node|dotnet|c\+\+|ruby)|grpcio|CPython|OpenJDK"
            r"|Node\.js|nginx|envoy|Werkzeug)[/ ]v?\d+(?:\.\d+)+",
            re.I,
        ),
        Severity.MEDIUM,
    ),
)
