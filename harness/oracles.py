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

#: Codes of a call that never reached the service.
UNREACHED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


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
) -> Observation:
    """Judge a call that must be refused: one of ``expected`` and no data.

    Data (a response message, OK, or a payload in the status details other than an
    explanation) is a FAIL at ``data_severity``; status details nobody can decode leave it
    INCONCLUSIVE; a code in ``low`` (right refusal, wrong semantics) a FAIL (low); a call
    that never reached the service INCONCLUSIVE; any other code (UNKNOWN, INTERNAL,
    INVALID_ARGUMENT, NOT_FOUND: the request was processed before the refusal) a FAIL
    (medium): validation or lookup ran, but nothing came back.
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
