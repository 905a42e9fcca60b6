"""Shared plumbing of the call-based checks: probes, fan-out, and the refusal oracle."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

from harness.catalogue import Severity
from harness.channels import CallResult, code_text
from harness.outcome import Observation, Status
from harness.principals import Principal
from harness.run import Run

UNREACHED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata carrying ``token`` as a bearer credential."""
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Probe:
    """One call to make: what to send, and how to describe it in evidence."""

    label: str
    method: str
    requests: tuple[bytes, ...]
    principal: Principal | None = None
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    retry_exhausted: bool = True  # False where RESOURCE_EXHAUSTED is itself the answer


def send(run: Run, probes: Sequence[Probe]) -> list[tuple[Probe, CallResult]]:
    """Make every probe's call, concurrently over the run's channel, in order."""

    def one(p: Probe) -> tuple[Probe, CallResult]:
        return p, run.call(
            p.method,
            p.requests,
            principal=p.principal,
            extra_metadata=p.metadata,
            retry_exhausted=p.retry_exhausted,
        )

    return run.map(one, probes)


def refused(
    probe: Probe,
    result: CallResult,
    *,
    expected: Iterable[grpc.StatusCode] = (UNAUTHENTICATED,),
    low: Iterable[grpc.StatusCode] = (PERMISSION_DENIED,),
    data_severity: Severity = Severity.CRITICAL,
) -> Observation:
    """Judge a call that must be refused: one of ``expected`` and no response message.

    Data or OK is a FAIL at ``data_severity``; a code in ``low`` (right refusal, wrong
    semantics) a FAIL (low); a call that never reached the service INCONCLUSIVE; any other
    code (UNKNOWN, INTERNAL, INVALID_ARGUMENT: the request was processed) a FAIL at the
    control's severity.
    """
    want = tuple(expected)
    expect = " or ".join(code_text(c) for c in want) + " with no response message"
    where = f"{probe.label} -> {probe.method}"
    observed = result.summary()
    if result.responses or result.code == grpc.StatusCode.OK:
        return Observation(where, observed, expect, Status.FAIL, data_severity, result.request_id)
    if result.code in want:
        return Observation(where, observed, expect, Status.PASS, None, result.request_id)
    if result.code in UNREACHED:
        return Observation(where, observed, expect, Status.INCONCLUSIVE, None, result.request_id)
    if result.code in tuple(low):
        return Observation(where, observed, expect, Status.FAIL, Severity.LOW, result.request_id)
    return Observation(where, observed, expect, Status.FAIL, None, result.request_id)
