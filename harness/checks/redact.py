"""Redaction controls (REDACT-*): no PHI and no secret where it must not be.

Canary PHI (:mod:`harness.canary`) goes into the request fields ``phi.field_paths`` names
(:func:`harness.plans.canaries.planted_calls`); then logs, audit events, status messages,
details and metadata are searched for it in every encoding. Hits are reported by
category, encoding, location and line hash, never by value.
"""

from __future__ import annotations

import time

from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from harness import audit
from harness.canary import Hit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check
from harness.outcome import Observation, Outcome, Status
from harness.plans.canaries import Planted, canaries, planted_calls
from harness.run import Run


def _settle(run: Run, planted: list[Planted]) -> None:
    """Wait until the planted calls are audited (logs are written by then), once per run."""

    def compute() -> bool:
        if run.config.get("audit.source") is not None:
            audit.wait_for(run, [p.result.request_id for p in planted])
        else:
            time.sleep(min(float(run.config.get("audit.delivery_timeout_s", 30)), 5.0))
        time.sleep(0.2)
        return True

    run.memo("canary-settled", compute)


def _hits_outcome(
    control_id: str,
    hits: list[Hit],
    observations: list[Observation],
    severity: Severity,
    passed: str,
    allowed: set[str] | None = None,
) -> Outcome:
    control = CATALOGUE[control_id]
    for h in hits:
        if allowed and h.category in allowed:
            continue
        status = Status.FAIL if h.strong else Status.WARN
        observations.append(
            Observation(
                "canary search",
                h.describe(),
                "no canary",
                status,
                severity if h.strong else Severity.LOW,
            )
        )
    return Outcome.from_observations(control, observations, passed=passed)


def _sinks(run: Run) -> list[tuple[str, bytes]] | str:
    sinks = run.config.get("logs.sinks") or []
    allowed = set(run.config.str_list("logs.allowed_phi_sinks"))
    chunks: list[tuple[str, bytes]] = []
    for sink in sinks:
        if str(sink) in allowed:
            continue
        got, problem = audit.read_raw(sink, "logs.sinks entry")
        if problem:
            return problem
        chunks += got
    return chunks


@check("REDACT-001")
def no_phi_in_logs(run: Run) -> Outcome:
    """Safe Harbor canaries never reach application logs.

    Canary values go into every ``phi.field_paths`` field of each ``phi.methods`` entry
    in a valid, an invalid and a refused request. After ``audit.delivery_timeout_s``, every
    ``logs.sinks`` entry (files, globs, commands) except ``logs.allowed_phi_sinks`` is
    searched in every encoding. A hit is FAIL (critical), reported by category, encoding,
    location and line hash; a weak category (zip, dates) alone on its line is WARN.
    """
    control = CATALOGUE["REDACT-001"]
    if not run.config.get("logs.sinks"):
        return Outcome.skip(control, "no logs.sinks declared")
    planted, notes = planted_calls(run)
    if not planted:
        return Outcome.skip(control, "no canary could be planted (phi.methods, phi.field_paths)")
    _settle(run, planted)
    chunks = _sinks(run)
    if isinstance(chunks, str):
        return Outcome.inconclusive(control, chunks)
    c = canaries(run)
    hits = [h for source, blob in chunks for h in c.scan(blob, source)]
    observations = [
        *notes,
        Observation(
            f"{len(chunks)} log source(s), {sum(len(b) for _, b in chunks)} bytes",
            f"{len(hits)} hit(s)",
            "no canary",
            Status.PASS if not hits else Status.FAIL,
        ),
    ]
    return _hits_outcome(
        "REDACT-001", hits, observations, Severity.CRITICAL, "no canary in any log sink"
    )


@check("REDACT-002")
def no_phi_in_audit(run: Run) -> Outcome:
    """Audit records hold references, not PHI values.

    After the canary calls, the audit source is searched for every canary, in every
    encoding. Categories in ``audit.allowed_identifiers`` (an opaque ID, a tokenised MRN)
    may appear; names, SSNs, dates, contact data and the like are FAIL (high).
    """
    control = CATALOGUE["REDACT-002"]
    if run.config.get("audit.source") is None:
        return Outcome.skip(control, "no audit.source declared")
    planted, notes = planted_calls(run)
    if not planted:
        return Outcome.skip(control, "no canary could be planted (phi.methods, phi.field_paths)")
    audit.wait_for(run, [p.result.request_id for p in planted])
    chunks, problem = audit.read_raw(run.config.get("audit.source"))
    if problem:
        return Outcome.inconclusive(control, problem)
    c = canaries(run)
    hits = [h for source, blob in chunks for h in c.scan(blob, source)]
    allowed = set(run.config.str_list("audit.allowed_identifiers"))
    observations = [
        *notes,
        Observation(
            "audit events searched",
            f"{len([h for h in hits if h.category not in allowed])} hit(s)",
            "no canary",
            Status.PASS,
        ),
    ]
    return _hits_outcome(
        "REDACT-002", hits, observations, Severity.HIGH, "audit events hold no canary", allowed
    )


def _surfaces(result: CallResult) -> list[tuple[str, bytes]]:
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


@check("REDACT-003")
def no_phi_in_errors(run: Run) -> Outcome:
    """Errors, status details and response metadata carry no PHI.

    For every canary call (valid, invalid, refused): the status message, the decoded
    ``grpc-status-details-bin`` (every detail) and all initial and trailing metadata are
    searched for every canary. Field paths may be named, values may not: a hit is FAIL
    (high), critical when a refused call echoes it.
    """
    control = CATALOGUE["REDACT-003"]
    planted, notes = planted_calls(run)
    if not planted:
        return Outcome.skip(control, "no canary could be planted (phi.methods, phi.field_paths)")
    c = canaries(run)
    observations = list(notes)
    for p in planted:
        if p.kind == "token":
            continue
        hits = [h for where, blob in _surfaces(p.result) for h in c.scan(blob, where)]
        sev = Severity.CRITICAL if p.kind == "denied" else Severity.HIGH
        if not hits:
            observations.append(
                Observation(
                    f"{p.probe.label} ({p.kind})",
                    p.result.status,
                    "no canary in message, details or metadata",
                    Status.PASS,
                    None,
                    p.result.request_id,
                )
            )
        for h in hits:
            observations.append(
                Observation(
                    f"{p.probe.label} ({p.kind})",
                    f"{p.result.status}; {h.describe()}",
                    "no canary in message, details or metadata",
                    Status.FAIL if h.strong else Status.WARN,
                    sev,
                    p.result.request_id,
                )
            )
    return Outcome.from_observations(
        control, observations, passed="no canary in any error, detail or metadata"
    )


@check("REDACT-004")
def no_secrets_in_logs(run: Run) -> Outcome:
    """Credentials and secrets never logged.

    Every ``logs.sinks`` entry and the audit source are searched for every bearer token
    the run used (whole, and its signature segment alone) and for the canary JWT sent as a
    credential (its payload carries the canary nonce). A ``kid``, ``jti`` or token hash may
    appear; a token may not.
    """
    control = CATALOGUE["REDACT-004"]
    sources: list[tuple[str, bytes]] = []
    sinks = _sinks(run) if run.config.get("logs.sinks") else []
    if isinstance(sinks, str):
        return Outcome.inconclusive(control, sinks)
    sources += sinks
    chunks, problem = audit.read_raw(run.config.get("audit.source"))
    if not problem:
        sources += chunks
    if not sources:
        return Outcome.skip(control, "no logs.sinks or audit.source to search")
    planted, _ = planted_calls(run)
    secrets = {f"{p.name}'s token": p.token() for p in run.principals.values() if p.has_token}
    for p in planted:
        if p.kind == "token":
            secrets["the canary JWT"] = str(p.probe.metadata[0][1]).removeprefix("Bearer ")
    _settle(run, planted)
    sinks_now = _sinks(run) if run.config.get("logs.sinks") else []
    if isinstance(sinks_now, list):
        sources = sinks_now + (chunks if not problem else [])
    observations = []
    for label, token in secrets.items():
        signature = token.rsplit(".", 1)[-1]
        for name, blob in sources:
            text = blob.decode("utf-8", "replace")
            for what, needle in (("token", token), ("signature segment", signature)):
                if len(needle) >= 16 and needle in text:
                    line = text.count("\n", 0, text.index(needle)) + 1
                    observations.append(
                        Observation(
                            f"{label} ({what})",
                            f"found at {name}:{line}",
                            "never logged",
                            Status.FAIL,
                            Severity.HIGH,
                        )
                    )
    observations.append(
        Observation(
            f"{len(secrets)} token(s) searched in {len(sources)} source(s)",
            "searched",
            "no token",
            Status.PASS,
        )
    )
    return Outcome.from_observations(
        control, observations, passed="no token in any log or audit record"
    )
