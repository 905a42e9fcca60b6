"""Recorded answers for judges' unit tests: CallResults as a server of any stack sends them."""

from __future__ import annotations

import grpc

from harness.channels import CallResult
from harness.outcome import Observation, Outcome, Status

_SEQ = iter(range(1, 1_000_000))


def answer(
    code: grpc.StatusCode = grpc.StatusCode.OK,
    *responses: bytes,
    details: str = "",
    method: str = "/pkg.Service/Method",
    trailers: tuple[tuple[str, str | bytes], ...] = (),
    headers: tuple[tuple[str, str | bytes], ...] = (),
    principal: str | None = None,
    elapsed_s: float = 0.01,
    arrivals: tuple[float, ...] = (),
) -> CallResult:
    """One call's result as recorded: status, messages, metadata; a fresh request ID."""
    return CallResult(
        method=method,
        code=code,
        details=details,
        responses=tuple(responses),
        initial_metadata=headers,
        trailing_metadata=trailers,
        request_id=f"rid-{next(_SEQ)}",
        principal=principal,
        elapsed_s=elapsed_s,
        arrivals=arrivals,
    )


def statuses(observations: list[Observation] | tuple[Observation, ...]) -> list[Status]:
    """The per-observation verdicts, in order."""
    return [o.status for o in observations]


def by_ref(outcome: Outcome) -> dict[str, list[Status]]:
    """Observation verdicts grouped by the declared probe they are filed under."""
    out: dict[str, list[Status]] = {}
    for o in outcome.observations:
        out.setdefault(o.ref, []).append(o.status)
    return out
