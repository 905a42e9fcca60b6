"""Audit controls (AUDIT-*).

The harness tags every call with a fresh request ID and reconciles the target's audit
events with its own journal: every access audited, with the right content and time, in a
hash chain that only grows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import grpc
from google.protobuf import json_format
from jwt.utils import base64url_decode

from harness import audit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check
from harness.outcome import Observation, Outcome, Status
from harness.plans.calls import Call, bearer, policy_or_skip, send, set_path
from harness.plans.canaries import planted_calls, rfc3339, wait_alert
from harness.plans.tokens import authn_basic_calls, authz_matrix_calls, bases
from harness.policy import Policy
from harness.run import Run
from harness.tokens import parse, tamper, with_signature

# Calls that never reached the service's own code: transport failures, and the gRPC
# library's own size limits (RESOURCE_EXHAUSTED), which refuse before any handler runs.
_CLIENT_SIDE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_REFUSALS = {"UNAUTHENTICATED", "PERMISSION_DENIED", "16", "7"}
GENESIS = "0" * 64


# -- AUDIT-001 / 002 / 003 ----------------------------------------------------------------


def _audited_calls(run: Run) -> list[CallResult]:
    """Calls to ``audit.phi_methods`` that reached the server (made now if need be)."""
    planted_calls(run)
    authn_basic_calls(run)
    authz_matrix_calls(run)
    phi = set(run.config.str_list("audit.phi_methods"))
    journal = run.calls()
    return [r for r in journal if r.method in phi and r.code not in _CLIENT_SIDE]


def _reconciled(run: Run) -> tuple[list[CallResult], dict[str, list[dict[str, Any]]], str]:
    def compute() -> tuple[list[CallResult], dict[str, list[dict[str, Any]]], str]:
        calls = _audited_calls(run)
        events, problem = audit.wait_for(run, [c.request_id for c in calls])
        return calls, events, problem

    return run.memo("audit-reconciled", compute)


@check("AUDIT-001")
def every_access_audited(run: Run) -> Outcome:
    """Every ePHI access attempt produces one correlated audit event.

    Every call the run made to an ``audit.phi_methods`` entry (the canary calls, AUTHN-001
    and AUTHZ-001 included: allowed, denied and unauthenticated) carries a fresh request ID
    in ``audit.request_id_key``. The audit source is polled until
    ``audit.delivery_timeout_s``: each call needs at least one event with its request ID
    and at most ``audit.max_events_per_call``. A missing event is FAIL (high), duplicates
    FAIL (low); an unreadable source is INCONCLUSIVE.
    """
    control = CATALOGUE["AUDIT-001"]
    if not run.config.str_list("audit.phi_methods"):
        return Outcome.skip(control, "no audit.phi_methods declared")
    if run.config.get("audit.source") is None:
        return Outcome.skip(control, "no audit.source declared")
    calls, events, problem = _reconciled(run)
    if problem:
        return Outcome.inconclusive(control, problem)
    most = int(run.config.get("audit.max_events_per_call", 1))
    missing = [c for c in calls if not events.get(c.request_id)]
    extra = [c for c in calls if len(events.get(c.request_id, [])) > most]
    observations = []
    for label, group, status, sev in (
        ("no audit event", missing, Status.FAIL, Severity.HIGH),
        ("more than one event", extra, Status.FAIL, Severity.LOW),
    ):
        by_kind: dict[tuple[str, str], list[CallResult]] = {}
        for c in group:
            by_kind.setdefault((c.method, c.code.name), []).append(c)
        for (method, code), cs in sorted(by_kind.items()):
            observations.append(
                Observation(
                    f"{len(cs)} {code} call(s) to {method}",
                    label,
                    f"1 to {most} event(s) per call",
                    status,
                    sev,
                    cs[0].request_id,
                )
            )
    observations.append(
        Observation(
            f"{len(calls)} calls reconciled with the audit log",
            f"{len(calls) - len(missing)} matched",
            "every call matched",
            Status.PASS,
        )
    )
    return Outcome.from_observations(
        control, observations, passed=f"{len(calls)} calls, each with its audit event"
    )


def _subject(run: Run, principal_name: str | None) -> str | None:
    p = run.principal(principal_name) if principal_name else None
    if p is None or not p.has_token:
        return None
    from harness.tokens import parse

    token = parse(p.token())
    return str(token.claims.get("sub")) if token else None


@check("AUDIT-002")
def event_content(run: Run) -> Outcome:
    """Audit event content complete, accurate and injection-safe.

    For every reconciled event (AUDIT-001's calls): ``identity`` is the verified subject
    of the token sent (empty for calls without a valid credential is fine), ``method`` the
    full method path, ``outcome`` the observed code, ``request_id`` the value sent,
    ``timestamp`` RFC 3339 with a zone, ``source`` and (where the request named a record)
    ``resource`` present. Injection probe on ``audit.logged_fields``: a value carrying a
    newline with a forged JSON event, CR LF, U+2028, an escape sequence and 4 KiB must
    yield exactly one event, no event with a ``forged`` key, and no unparseable line.
    """
    control = CATALOGUE["AUDIT-002"]
    if run.config.get("audit.source") is None or not run.config.str_list("audit.phi_methods"):
        return Outcome.skip(control, "needs audit.source and audit.phi_methods")
    calls, events, problem = _reconciled(run)
    if problem:
        return Outcome.inconclusive(control, problem)
    problems: dict[str, list[str]] = {}
    for c in calls:
        for e in events.get(c.request_id, [])[:1]:
            wrong = []
            if audit.field(run, e, "method") != c.method:
                wrong.append("method")
            outcome = str(audit.field(run, e, "outcome"))
            if outcome not in (c.code.name, str(c.code.value[0])):
                wrong.append(f"outcome {outcome!r} for {c.code.name}")
            if rfc3339(audit.field(run, e, "timestamp")) is None:
                wrong.append("timestamp not RFC 3339 with a zone")
            if not audit.field(run, e, "source"):
                wrong.append("no source")
            if audit.field(run, e, "resource") is None:
                wrong.append("no resource field")
            sub = _subject(run, c.principal)
            if (
                c.code.name not in ("UNAUTHENTICATED",)
                and sub
                and audit.field(run, e, "identity") != sub
            ):
                wrong.append("identity is not the token's verified subject")
            for w in wrong:
                problems.setdefault(w, []).append(c.request_id)
    observations = [
        Observation(
            f"audit events of {len(ids)} call(s)",
            w,
            "complete and accurate",
            Status.FAIL,
            Severity.HIGH,
            ids[0],
        )
        for w, ids in sorted(problems.items())
    ]
    observations += _injection(run)
    observations.append(
        Observation(
            f"{len(calls)} events compared with the calls",
            f"{len(problems)} kind(s) of discrepancy",
            "none",
            Status.PASS if not problems else Status.FAIL,
            Severity.HIGH,
        )
    )
    return Outcome.from_observations(
        control, observations, passed="every event names who, what, which record, outcome and when"
    )


def _injection(run: Run) -> list[Observation]:
    policy = Policy.of(run)
    fields = run.config.str_list("audit.logged_fields")
    if policy is None or not fields:
        return [Observation("injection probe", "not sent", "audit.logged_fields", Status.SKIP)]
    out = []
    payload = 'inj\n{"outcome":"OK","forged":1}\r\n\u2028\x1b[2J' + "A" * 4096
    templates = run.config.table("schema.request_templates")
    for entry in fields:
        method = next(
            (m.path for m in policy.catalogue.methods if entry.startswith(m.path + ".")), None
        )
        if method is None:
            continue
        info = policy.catalogue.method(method)
        msg = policy.catalogue.message_class(info.input_type)()
        template = templates.get(method)
        json_format.Parse(
            template if isinstance(template, str) else json.dumps(template or {}), msg
        )
        if not set_path(msg, entry[len(method) + 1 :], payload):
            continue
        allowed = policy.allowed(method) or frozenset()
        who = next((run.principal(n) for n in sorted(allowed) if run.principal(n)), None)
        result = run.call(method, [msg.SerializeToString()], principal=who)
        found, problem = audit.wait_for(run, [result.request_id])
        everything = audit.read(run)
        forged = [e for e in everything.events if "forged" in e]
        n = len(found.get(result.request_id, []))
        ok = not problem and n == 1 and not forged and everything.unparsed == 0
        observed = (
            problem
            or f"{n} event(s) for the call, {len(forged)} forged event(s), "
            f"{everything.unparsed} unparseable line(s)"
        )
        out.append(
            Observation(
                f"log-injection value in {entry}",
                observed,
                "exactly 1 event, none forged, every line valid JSON",
                Status.PASS if ok else Status.FAIL,
                Severity.HIGH,
                result.request_id,
            )
        )
    return out


@check("AUDIT-003")
def failures_audited_and_alerted(run: Run) -> Outcome:
    """Failed authentication and authorization audited; bursts raise a signal.

    Every refused call of AUDIT-001's set has an event with outcome UNAUTHENTICATED or
    PERMISSION_DENIED. Then ``audit.failure_burst`` (20) tokens with a broken signature and
    the same forged ``sub`` go out within seconds: no event may name that forged ``sub``
    as the actor, and an ``audit.alert_type`` event must appear within
    ``audit.alert_timeout_s`` (an alert already raised for this source in the last 60 s
    counts), unless the burst was throttled (RESOURCE_EXHAUSTED).
    """
    control = CATALOGUE["AUDIT-003"]
    if run.config.get("audit.source") is None or not run.config.str_list("audit.phi_methods"):
        return Outcome.skip(control, "needs audit.source and audit.phi_methods")
    calls, events, problem = _reconciled(run)
    if problem:
        return Outcome.inconclusive(control, problem)
    observations = []
    refused = [c for c in calls if c.code.name in ("UNAUTHENTICATED", "PERMISSION_DENIED")]
    wrong = [
        c
        for c in refused
        if events.get(c.request_id)
        and str(audit.field(run, events[c.request_id][0], "outcome")) not in _REFUSALS
    ]
    observations.append(
        Observation(
            f"{len(refused)} refused calls",
            f"{len(wrong)} event(s) with another outcome",
            "outcome UNAUTHENTICATED or PERMISSION_DENIED",
            Status.FAIL if wrong else Status.PASS,
            Severity.MEDIUM,
        )
    )
    found, _ = bases(run)
    accepted = [b for b in found if b.accepted]
    if not accepted:
        observations.append(
            Observation("forged-sub burst", "not sent", "a principal's valid token", Status.SKIP)
        )
        return Outcome.from_observations(control, observations, passed="refusals audited")
    base = accepted[0]
    forged = f"forged-{run.options.seed:08x}"
    forged_claims = parse(tamper(base.token, sub=forged))
    assert forged_claims is not None
    sig = base64url_decode(base.token.segments[2])
    token = with_signature(forged_claims, bytes([sig[0] ^ 1]) + sig[1:])  # a broken signature
    burst = int(run.config.get("audit.failure_burst", 20))
    start = dt.datetime.now(dt.timezone.utc)
    results = send(
        run,
        [Call("forged-sub token", base.method.path, (base.request,), None, bearer(token))] * burst,
    )
    throttled = any(r.code == grpc.StatusCode.RESOURCE_EXHAUSTED for _, r in results)
    got, problem = audit.wait_for(run, [r.request_id for _, r in results])
    named = [
        rid for rid, evs in got.items() for e in evs if audit.field(run, e, "identity") == forged
    ]
    observations.append(
        Observation(
            f"{burst} tokens with a forged sub",
            f"{len(named)} event(s) name the forged sub as the actor",
            "the actor empty or marked unverified",
            Status.FAIL if named else Status.PASS,
            Severity.HIGH,
        )
    )
    alert_type = run.config.str_("audit.alert_type")
    if throttled:
        observations.append(
            Observation(
                "burst of failed authentications",
                "throttled (RESOURCE_EXHAUSTED)",
                "an alert or throttling",
                Status.PASS,
            )
        )
    elif not alert_type:
        observations.append(
            Observation(
                "burst of failed authentications",
                "not throttled; no audit.alert_type to look for",
                "an alert or throttling",
                Status.INCONCLUSIVE,
            )
        )
    else:
        seen, problem = wait_alert(run, alert_type, start - dt.timedelta(seconds=60))
        observations.append(
            Observation(
                "burst of failed authentications",
                problem or f"{alert_type} event {'seen' if seen else 'not seen'}",
                f"a {alert_type} event within audit.alert_timeout_s",
                Status.INCONCLUSIVE if problem else Status.PASS if seen else Status.FAIL,
                Severity.MEDIUM,
            )
        )
    return Outcome.from_observations(
        control, observations, passed="refusals audited, forged actors not believed, bursts alerted"
    )


# -- AUDIT-004 ----------------------------------------------------------------------------


@check("AUDIT-004")
def timestamps_accurate(run: Run) -> Outcome:
    """Audit timestamps accurate and ordered.

    Ten sequential calls to an audited method by an allowed principal; for each event,
    delta = event time - midpoint(send, receive) must be within ``clock.tolerance_ms``
    (1000) + half the round trip; timestamps need sub-second precision and a zone, and
    event order must match call order. The harness clock is the reference (a spawned
    target shares it; ``clock.ntp_server`` is not consulted yet).
    """
    control = CATALOGUE["AUDIT-004"]
    if run.config.get("audit.source") is None or not run.config.str_list("audit.phi_methods"):
        return Outcome.skip(control, "needs audit.source and audit.phi_methods")
    policy = policy_or_skip(run, "AUDIT-004")
    if isinstance(policy, Outcome):
        return policy
    phi = run.config.str_list("audit.phi_methods")
    found, why = bases(run)
    base = next((b for b in found if b.accepted and b.method.path in phi), None)
    if base is None:
        return Outcome.skip(control, why or "no principal may read an audit.phi_methods entry")
    results = [
        run.call(base.method.path, [base.request], principal=base.principal) for _ in range(10)
    ]
    events, problem = audit.wait_for(run, [r.request_id for r in results])
    if problem:
        return Outcome.inconclusive(control, problem)
    tolerance = int(run.config.get("clock.tolerance_ms", 1000)) / 1000
    observations = []
    stamps = []
    for r in results:
        evs = events.get(r.request_id) or []
        raw = audit.field(run, evs[0], "timestamp") if evs else None
        ts = rfc3339(raw)
        if ts is None:
            observations.append(
                Observation(
                    "event timestamp",
                    f"{raw!r}",
                    "RFC 3339 with a zone",
                    Status.FAIL if evs else Status.INCONCLUSIVE,
                    Severity.MEDIUM,
                    r.request_id,
                )
            )
            continue
        midpoint = r.started_at + r.elapsed_s / 2
        delta = ts.timestamp() - midpoint
        allowed = tolerance + r.elapsed_s / 2
        precise = "." in str(raw)
        ok = abs(delta) <= allowed and precise
        stamps.append(ts)
        observations.append(
            Observation(
                "event time vs. call midpoint",
                f"delta {delta * 1000:+.0f} ms" + ("" if precise else ", whole seconds only"),
                f"within +/-{allowed * 1000:.0f} ms, sub-second precision",
                Status.PASS if ok else Status.FAIL,
                Severity.MEDIUM,
                r.request_id,
            )
        )
    ordered = stamps == sorted(stamps)
    observations.append(
        Observation(
            "order of 10 sequential calls' events",
            "in call order" if ordered else "out of order",
            "call order",
            Status.PASS if ordered else Status.FAIL,
            Severity.MEDIUM,
        )
    )
    return Outcome.from_observations(
        control, observations, passed="timestamps within tolerance, precise, in order"
    )


# -- AUDIT-005 / 006: chain and growth ----------------------------------------------------


def chain_problems(run: Run, events: tuple[dict[str, Any], ...]) -> list[str]:
    """What breaks the hash chain of ``events`` under ``audit.hash_chain``, in words."""
    spec = run.config.table("audit.hash_chain")
    seq_f, prev_f, hash_f = (
        spec.get("seq_field", "seq"),
        spec.get("prev_field", "prev_hash"),
        spec.get("hash_field", "hash"),
    )
    problems = []
    prev: str | None = None
    last_seq: int | None = None
    for e in events:
        if hash_f not in e:
            problems.append(f"seq {e.get(seq_f)}: no {hash_f}")
            continue
        body = {k: v for k, v in e.items() if k != hash_f}
        canonical = json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        link = prev if prev is not None else e.get(prev_f, GENESIS)
        if prev is None and e.get(seq_f) == 1 and link != GENESIS:
            problems.append("the first record does not link to the genesis hash")
        if prev is not None and prev_f in e and e[prev_f] != prev:
            problems.append(f"seq {e.get(seq_f)}: {prev_f} is not the previous record's hash")
        if hashlib.sha256(str(link).encode() + b"\n" + canonical).hexdigest() != e[hash_f]:
            problems.append(f"seq {e.get(seq_f)}: {hash_f} does not verify")
        seq = e.get(seq_f)
        if isinstance(seq, int) and last_seq is not None and seq != last_seq + 1:
            problems.append(f"seq jumps from {last_seq} to {seq}")
        last_seq = seq if isinstance(seq, int) else last_seq
        prev = str(e[hash_f])
    return problems


def _growth(run: Run) -> tuple[audit.Events, audit.Events, int]:
    """The log before and after 50 audited calls (shared by AUDIT-005 and AUDIT-006)."""

    def compute() -> tuple[audit.Events, audit.Events, int]:
        before = audit.read(run)
        phi = run.config.str_list("audit.phi_methods")
        found, _ = bases(run)
        base = next((b for b in found if b.accepted and b.method.path in phi), None)
        sent = []
        if base is not None:  # allowed calls: audited whatever the service does with refusals
            policy = Policy.of(run)
            allowed = sorted(policy.allowed(base.method.path) or ()) if policy else []
            callers = [p for n in allowed if (p := run.principal(n)) and p.has_token] or [
                base.principal
            ]
            probes = [
                Call("audited call", base.method.path, (base.request,), callers[i % len(callers)])
                for i in range(50)
            ]  # spread over identities, so per-identity rate limits do not slow this down
            sent = [r for _, r in send(run, probes)]
        audit.wait_for(run, [r.request_id for r in sent])
        return before, audit.read(run), len(sent)

    return run.memo("audit-growth", compute)


@check("AUDIT-005")
def hash_chain(run: Run) -> Outcome:
    """The audit hash chain verifies, and nothing before it was rewritten.

    The log is read, 50 audited calls are made, and it is read again. Every link must
    verify under ``audit.hash_chain`` (default: ``hash_i = SHA-256(hash_{i-1} || 0x0A ||
    canonical_json(record_i without the hash field))``, canonical JSON with sorted keys and
    no spaces, the first record linking to 64 zeros), ``seq`` must have no gaps, and the
    last record seen before (the anchor) must still be there unchanged.
    """
    control = CATALOGUE["AUDIT-005"]
    if not run.config.has("audit.hash_chain"):
        return Outcome.skip(
            control, "no audit.hash_chain declared (ATT-004 must cover log integrity)"
        )
    if run.config.get("audit.source") is None:
        return Outcome.skip(control, "no audit.source declared")
    before, after, _ = _growth(run)
    if before.problem or after.problem:
        return Outcome.inconclusive(control, before.problem or after.problem)
    hash_f = run.config.table("audit.hash_chain").get("hash_field", "hash")
    problems = chain_problems(run, after.events)
    observations = [
        Observation(
            f"hash chain over {len(after.events)} records",
            p,
            "every link verifies",
            Status.FAIL,
            Severity.HIGH,
        )
        for p in problems[:10]
    ]
    if problems:
        observations.append(
            Observation(
                "hash chain", f"{len(problems)} problem(s)", "none", Status.FAIL, Severity.HIGH
            )
        )
    else:
        observations.append(
            Observation(
                f"hash chain over {len(after.events)} records",
                "verifies",
                "every link verifies",
                Status.PASS,
            )
        )
    if before.events:
        anchor = before.events[-1].get(hash_f)
        present = any(e.get(hash_f) == anchor for e in after.events)
        observations.append(
            Observation(
                "anchor (last record before 50 more calls)",
                "present" if present else "gone or changed",
                "still present, unchanged",
                Status.PASS if present else Status.FAIL,
                Severity.HIGH,
            )
        )
    return Outcome.from_observations(
        control, observations, passed="the chain verifies end to end and the anchor holds"
    )


@check("AUDIT-006")
def append_only(run: Run) -> Outcome:
    """The audit store is append-only (observed during the run).

    The log read before 50 audited calls must be an exact prefix of the log read after,
    and must have grown by at least one event per call. With ``audit.storage_probe_cmd``
    (a read-only command printing JSON ``{"locked": bool, "retention_days": n}``), the
    store must be locked with retention of at least ``audit.min_retention_days``.
    """
    control = CATALOGUE["AUDIT-006"]
    if run.config.get("audit.source") is None:
        return Outcome.skip(control, "no audit.source declared (ATT-004 must cover the store)")
    before, after, sent = _growth(run)
    if before.problem or after.problem:
        return Outcome.inconclusive(control, before.problem or after.problem)
    prefix = list(after.events[: len(before.events)]) == list(before.events)
    grew = len(after.events) - len(before.events)
    observations = [
        Observation(
            f"{len(before.events)} records before, {len(after.events)} after {sent} calls",
            "prefix kept" if prefix else "earlier records changed or removed",
            "the earlier log is an exact prefix",
            Status.PASS if prefix else Status.FAIL,
            Severity.HIGH,
        ),
        Observation(
            "growth",
            f"{grew} new record(s)",
            f"at least {sent}",
            Status.PASS if grew >= sent else Status.FAIL,
            Severity.HIGH,
        ),
    ]
    probe = run.config.get("audit.storage_probe_cmd")
    if probe:
        chunks, problem = audit.read_raw(probe, "audit.storage_probe_cmd")
        try:
            facts = json.loads(chunks[0][1]) if chunks else {}
        except ValueError:
            facts, problem = {}, problem or "output is not JSON"
        minimum = int(run.config.get("audit.min_retention_days", 0))
        ok = (
            not problem
            and facts.get("locked") is True
            and int(facts.get("retention_days", 0)) >= minimum
        )
        observations.append(
            Observation(
                "storage probe",
                problem or json.dumps(facts),
                f"locked, retention >= {minimum} days",
                Status.PASS if ok else Status.FAIL,
                Severity.HIGH,
            )
        )
    return Outcome.from_observations(
        control, observations, passed="the log only grew during the run"
    )
