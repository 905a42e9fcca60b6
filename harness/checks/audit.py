"""Audit controls (AUDIT-*).

The harness tags every call with a fresh request ID and reconciles the target's audit
events with its own journal: every access audited, with the right content and time, in a
hash chain that only grows.

Each control wires a plan (the calls to make), :func:`~harness.plans.calls.send` and a pure
judge: the judges (``judge_*``, :func:`verify_chain`) take recorded :class:`CallResult`s,
events and settings, and return observations filed under the control's declared probes.
Events are read through :class:`harness.audit.Fields` (``audit.format``,
``audit.field_map``, ``audit.outcome_map``, ``audit.timestamp_format``), never by the
reference's own names, and matched to calls by :func:`harness.audit.correlate`: by request
ID, or by method, identity and time (``audit.correlation = "tuple"``), where the calls the
controls make themselves are spaced so that their events can be told apart
(:func:`send_apart`) and a call whose events cannot be is INCONCLUSIVE, never matched by
guess.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import grpc
import rfc8785
from google.protobuf.message import DecodeError
from jwt.utils import base64url_decode

from harness import audit
from harness.audit import Fields, Matches
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check
from harness.descriptors import is_repeated
from harness.errors import DescriptorError
from harness.oracles import UNREACHED, edge_answered, refused, unreached
from harness.outcome import (
    CannotObserve,
    NotApplicable,
    Observation,
    Outcome,
    Probe,
    Status,
    filed,
    not_applicable,
)
from harness.plans.calls import (
    NO_DESCRIPTORS,
    Call,
    bearer,
    policy_or_skip,
    send,
    template_text,
)
from harness.plans.canaries import fill, planted_calls, wait_alert
from harness.plans.tokens import (
    Base,
    Held,
    authn_basic_calls,
    authz_matrix_calls,
    bases,
    run_nonce,
    valid_tokens,
)
from harness.policy import Policy
from harness.run import Run
from harness.tokens import Parsed, parse, tamper, with_signature

Events = dict[str, list[dict[str, Any]]]
Matched = Matches | Mapping[str, Sequence[Mapping[str, Any]]]

# Calls that never reached the service's own code: transport failures, and the gRPC
# library's own size limits (RESOURCE_EXHAUSTED), which refuse before any handler runs.
_CLIENT_SIDE = UNREACHED | {grpc.StatusCode.RESOURCE_EXHAUSTED}
REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
GENESIS = "0" * 64


def _needs(run: Run, *keys: str) -> None:
    """Raise NotApplicable naming the first of ``keys`` the configuration lacks."""
    for key in keys:
        if not run.config.get(key):
            raise NotApplicable(f"no {key} declared")


# -- the reconciliation AUDIT-001..003 share ----------------------------------------------


@dataclass(frozen=True)
class Reconciled:
    """The run's calls to ``audit.phi_methods`` and their events, or why none were read."""

    calls: list[CallResult]
    matches: Matches
    problem: str = ""

    @property
    def events(self) -> Events:
        """The events attributed to each call."""
        return self.matches.found


def matched(events: Matched) -> Matches:
    """``events`` as :class:`Matches` (a plain mapping: events found by request ID).

    Told by the mapping, not by the class: a run that imports the harness afresh (pytest's
    own ``pytester`` does) makes Matches of another class object.
    """
    if not isinstance(events, Mapping):
        return events
    return Matches.exact({k: [dict(e) for e in v] for k, v in events.items()})


def send_apart(run: Run, calls: Sequence[Call]) -> list[tuple[Call, CallResult]]:
    """:func:`send` ``calls`` so that tuple correlation can tell their events apart.

    See :func:`harness.audit.send_apart` (as :func:`send` under request-ID correlation).
    """
    return audit.send_apart(run, calls, send)


def phi_calls(journal: Iterable[CallResult], phi_methods: Iterable[str]) -> list[CallResult]:
    """The calls to ``phi_methods`` that reached the service (an audit event is owed)."""
    phi = set(phi_methods)
    return [
        r
        for r in journal
        if r.method in phi and r.code not in _CLIENT_SIDE and not edge_answered(r)
    ]


def planned_calls(run: Run) -> list[CallResult]:
    """The calls AUDIT-001 reconciles: the canary calls, AUTHN-001's and AUTHZ-001's.

    Each set is made once per run (memoised), whichever control asks first, so the set
    judged is the same whatever else ran before it or was deselected: never the whole
    journal, which holds what other controls happened to send.
    """
    planted, _ = planted_calls(run)
    out = [p.result for p in planted]
    for made in (authn_basic_calls(run), authz_matrix_calls(run)):
        if not isinstance(made, str):
            out += [r for _, r in made]
    return out


def plan_tuple(run: Run, policy: Policy) -> list[Call]:
    """AUDIT-001's own calls (the row's), for tuple correlation.

    For each ``audit.phi_methods`` entry: one call by a principal the policy allows, one
    by a principal it does not, and one without credentials (principals whose subject the
    harness knows first, so that their events can be told apart). A method whose request
    cannot be built is not called (:func:`judge_coverage` names it).
    """
    subjects = audit.subjects_of(run)
    callers = sorted(
        (p for p in run.principals.values() if p.has_token or p.has_cert),
        key=lambda p: (p.name not in subjects, p.name),
    )
    calls = []
    for method in run.config.str_list("audit.phi_methods"):
        try:
            request = policy.request(run, method)
        except DescriptorError:
            continue
        allowed = policy.allowed(method)
        ok = next((p for p in callers if allowed is None or p.name in allowed), None)
        no = next((p for p in callers if allowed is not None and p.name not in allowed), None)
        calls += [
            Call(f"{label} call as {who.name}", method, (request,), who)
            for label, who in (("allowed", ok), ("denied", no))
            if who is not None
        ]
        calls.append(Call("call without credentials", method, (request,)))
    return calls


def _reconciled(run: Run) -> Reconciled:
    """The calls AUDIT-001 reconciles to a PHI method, and their events.

    Under request-ID correlation the planned calls (:func:`planned_calls`); under tuple
    correlation AUDIT-001's own (:func:`plan_tuple`), sent apart and those whose events
    another call of the run made ambiguous sent again once
    (:func:`harness.audit.send_matched`): the shared sets make many calls by one identity
    to one method at once, which no method, identity and time can tell apart.
    """

    def compute() -> Reconciled:
        phi = run.config.str_list("audit.phi_methods")
        if audit.correlation(run) is None:
            calls = phi_calls(planned_calls(run), phi)
            polled = audit.poll(run, [c.request_id for c in calls])
        else:
            policy = Policy.of(run)
            planned = plan_tuple(run, policy) if policy else []
            made, polled = audit.send_matched(
                run, planned, send, lambda c, r: bool(phi_calls([r], phi))
            )
            calls = phi_calls([r for _, r in made], phi)
        return Reconciled(calls, polled.matches, polled.problem)

    return run.memo("audit-reconciled", compute)


def _matched(run: Run) -> Reconciled:
    """The reconciliation, or CannotObserve when the events cannot be matched to calls."""
    _needs(run, "audit.source", "audit.phi_methods")
    found = _reconciled(run)
    if found.problem:
        raise CannotObserve(found.problem)
    return found


def _writes(run: Run) -> frozenset[str]:
    policy = Policy.of(run)
    if policy is None:
        return frozenset()
    return frozenset(m.path for m in policy.catalogue.methods if policy.is_write(m.path))


# -- AUDIT-001 ----------------------------------------------------------------------------


def call_kind(call: CallResult, writes: Iterable[str]) -> str:
    """The AUDIT-001 probe a call belongs to: ``denied``, ``write`` or ``read``."""
    if call.code in REFUSED:
        return "denied"
    return "write" if call.method in set(writes) else "read"


def _group(calls: Iterable[CallResult]) -> dict[tuple[str, str], list[CallResult]]:
    by: dict[tuple[str, str], list[CallResult]] = {}
    for c in calls:
        by.setdefault((c.method, c.code.name), []).append(c)
    return dict(sorted(by.items()))


def judge_reconciliation(
    calls: Sequence[CallResult], events: Matched, most: int, writes: Iterable[str] = ()
) -> list[Observation]:
    """Each call owes 1 to ``most`` events; filed under its kind (read, write, denied).

    A missing event is FAIL (high), more than ``most`` FAIL (low). A call whose events
    cannot be told apart from other calls' (tuple correlation: several candidates, or
    events of its method and identity outside its time window) is INCONCLUSIVE. A kind
    with no call has no observation: a probe that reconciled nothing does not pass.
    """
    writes = frozenset(writes)
    matches = matched(events)
    found = matches.found
    out = []
    for kind in ("read", "write", "denied"):
        mine = [c for c in calls if call_kind(c, writes) == kind]
        if not mine:
            continue
        unsure = [c for c in mine if matches.unsure(c.request_id)]
        missing = [c for c in mine if not found.get(c.request_id) and c not in unsure]
        extra = [c for c in mine if len(found.get(c.request_id, [])) > most]
        out += _unsure(kind, unsure, matches)
        for label, group, sev in (
            ("no audit event", missing, Severity.HIGH),
            (f"more than {most} event(s)", extra, Severity.LOW),
        ):
            for (method, code), cs in _group(group).items():
                probe = f"{len(cs)} {code} call(s) to {method}"
                expected = f"1 to {most} event(s) per call"
                out.append(
                    Observation(probe, label, expected, Status.FAIL, sev, cs[0].request_id).of(kind)
                )
        n = len(mine) - len(missing) - len(unsure)
        summary = f"{len(mine)} {kind} call(s) reconciled with the audit log"
        out.append(Observation(summary, f"{n} matched", "every call matched", Status.PASS).of(kind))
    return out


def _unsure(ref: str, calls: Sequence[CallResult], matches: Matches) -> list[Observation]:
    """One INCONCLUSIVE observation per (method, code) of calls whose events are unsure."""
    return [
        Observation(
            f"{len(cs)} {code} call(s) to {method}",
            matches.unsure(cs[0].request_id),
            "one event attributable to each call",
            Status.INCONCLUSIVE,
            None,
            cs[0].request_id,
        ).of(ref)
        for (method, code), cs in _group(calls).items()
    ]


def judge_coverage(
    calls: Sequence[CallResult],
    phi_methods: Iterable[str],
    writes: Iterable[str] = (),
    mutations: bool = True,
) -> list[Observation]:
    """Each ``audit.phi_methods`` entry has an allowed call and a denied one to reconcile.

    The row makes one allowed call (a read, or a write with mutations) and one denied call
    per method: a method that has none of a kind that reached the service leaves that
    probe INCONCLUSIVE, named; a write method without mutations is SKIP (the write probe
    is optional).
    """
    writes = frozenset(writes)
    out = []
    for method in dict.fromkeys(phi_methods):
        kinds = {call_kind(c, writes) for c in calls if c.method == method}
        allowed = "write" if method in writes else "read"
        for kind in (allowed, "denied"):
            if kind in kinds:
                continue
            what = "allowed" if kind != "denied" else "denied"
            probe = f"{what} call to {method}"
            if kind == "write" and not mutations:
                observed, expected, status = "not made", "safety.allow_mutations", Status.SKIP
            else:
                observed, status = "none reached the service", Status.INCONCLUSIVE
                expected = f"a {what} call to reconcile"
            out.append(Observation(probe, observed, expected, status).of(kind))
    return out


@check(
    "AUDIT-001",
    probes=(
        Probe("read", "allowed reads of audit.phi_methods: one correlated event each"),
        Probe(
            "write",
            "allowed writes of audit.phi_methods: one correlated event each",
            required=False,
            needs=("safety.allow_mutations",),
        ),
        Probe("denied", "denied calls to audit.phi_methods: one correlated event each"),
    ),
)
def every_access_audited(run: Run) -> Outcome:
    """Every ePHI access attempt produces one correlated audit event.

    The harness's own calls to ``audit.phi_methods`` entries (the canary calls, AUTHN-001's
    and AUTHZ-001's: allowed, denied and unauthenticated; the same set whatever else ran or
    was deselected) carry a fresh request ID in ``audit.request_id_key``. The audit source
    is polled until ``audit.delivery_timeout_s``: each call needs at least one event with
    its request ID and at most ``audit.max_events_per_call``. A missing event is FAIL
    (high), duplicates FAIL (low); an unreadable source is INCONCLUSIVE. Probes: allowed
    reads, allowed writes (with mutations) and denied calls, each judged on the calls of
    its kind; a method with no allowed or no denied call that reached the service leaves
    that probe INCONCLUSIVE, named.
    """
    found = _matched(run)
    most = int(run.config.get("audit.max_events_per_call", 1))
    writes = _writes(run)
    observations = judge_reconciliation(found.calls, found.matches, most, writes)
    mutations = bool(run.config.get("safety.allow_mutations"))
    phi = run.config.str_list("audit.phi_methods")
    observations += judge_coverage(found.calls, phi, writes, mutations)
    return Outcome.from_observations(
        CATALOGUE["AUDIT-001"],
        observations,
        passed=f"{len(found.calls)} calls, each with its audit event",
    )


# -- AUDIT-002 ----------------------------------------------------------------------------

#: AUDIT-002's content bullets, in the catalogue's order.
CONTENT = (
    "identity",
    "method",
    "resource",
    "action",
    "outcome",
    "request_id",
    "timestamp",
    "source",
)
_HOLDS = {
    "identity": "the token's verified subject",
    "method": "the full method path",
    "resource": "a resource field",
    "action": "the action audit.action_map gives",
    "outcome": "the observed code",
    "request_id": "the request ID sent",
    "timestamp": "RFC 3339 with Z or an offset, or an epoch number",
    "source": "a non-empty source",
}


@dataclass(frozen=True)
class Truth:
    """What the harness knows of a call: the result, its verified subject, its action."""

    call: CallResult
    subject: str | None = None
    action: str | None = None


def content_problem(ref: str, truth: Truth, event: Mapping[str, Any], fields: Fields) -> str:
    """What is wrong with bullet ``ref`` of ``event`` against the call ("" when it holds).

    Raises:
        LookupError: the bullet cannot be judged for this call (no subject, no action).
    """
    c, value = truth.call, fields(event, ref)
    if ref == "identity":
        if not truth.subject or c.code == grpc.StatusCode.UNAUTHENTICATED:
            raise LookupError(ref)
        return "" if value == truth.subject else "identity is not the token's verified subject"
    if ref == "action":
        if truth.action is None:
            raise LookupError(ref)
        return "" if value == truth.action else f"action {value!r}, not {truth.action!r}"
    if ref == "outcome":
        ok = fields.outcome(event) == c.code
        return "" if ok else f"outcome {value!r} for {c.code.name}"
    if ref == "timestamp":
        return "" if fields.time(event) is not None else f"timestamp {value!r} is ambiguous"
    wrong = {
        "method": value != c.method,
        "resource": value is None,
        "request_id": value != c.request_id,
        "source": not value,
    }
    return "" if not wrong[ref] else f"no {ref}" if value in (None, "") else f"{ref} {value!r}"


def judge_content(
    pairs: Iterable[tuple[Truth, Mapping[str, Any]]], fields: Fields, echoed: bool = True
) -> list[Observation]:
    """Each matched event against the call's ground truth, one probe per content bullet.

    A bullet with no call to judge it on (no verified subject, no ``audit.action_map``
    entry) makes no observation. ``echoed``: whether the service logs the request ID the
    harness sends; under tuple correlation it does not (the reason for correlating so),
    and the request_id bullet does not apply.
    """
    problems: dict[tuple[str, str], list[str]] = {}
    judged: dict[str, int] = {}
    bullets = CONTENT if echoed else tuple(b for b in CONTENT if b != "request_id")
    for truth, event in pairs:
        for ref in bullets:
            try:
                wrong = content_problem(ref, truth, event, fields)
            except LookupError:
                continue
            judged[ref] = judged.get(ref, 0) + 1
            if wrong:
                problems.setdefault((ref, wrong), []).append(truth.call.request_id)
    out = [
        Observation(
            f"audit events of {len(ids)} call(s)",
            wrong,
            _HOLDS[ref],
            Status.FAIL,
            Severity.HIGH,
            ids[0],
        ).of(ref)
        for (ref, wrong), ids in sorted(problems.items())
    ]
    for ref, n in judged.items():
        if not any(r == ref for r, _ in problems):
            out.append(Observation(f"{n} event(s)", "all hold", _HOLDS[ref], Status.PASS).of(ref))
    if not echoed:
        why = "the service logs no client request ID (audit.correlation = tuple)"
        out.append(not_applicable("request_id", "request ID in the events", why))
    return out


def _subjects(run: Run) -> dict[str, str]:
    """Each principal's verified subject: its JWT's ``sub``."""
    out = {}
    for name, p in run.principals.items():
        token = parse(p.token()) if p.has_token else None
        if token is not None and token.claims.get("sub") is not None:
            out[name] = str(token.claims["sub"])
    return out


def expected_actions(
    action_map: Mapping[str, Any], methods: Iterable[str], writes: Iterable[str]
) -> dict[str, str]:
    """The action ``audit.action_map`` gives each method: by path, or by read/write."""
    writes = set(writes)
    out = {}
    for m in methods:
        kind = "write" if m in writes else "read"
        action = action_map.get(m, action_map.get(kind))
        if action is not None:
            out[m] = str(action)
    return out


def _truths(run: Run, found: Reconciled) -> list[tuple[Truth, dict[str, Any]]]:
    subjects = _subjects(run)
    methods = {c.method for c in found.calls}
    actions = expected_actions(run.config.table("audit.action_map"), methods, _writes(run))
    return [
        (Truth(c, subjects.get(c.principal or ""), actions.get(c.method)), evs[0])
        for c in found.calls
        if (evs := found.events.get(c.request_id))
    ]


def injection(marker: str) -> str:
    """A value that breaks naive log writers, ``marker`` between every piece it could split.

    A newline with a forged JSON event after it, CR LF, U+2028, an escape sequence and 4
    KiB (catalogue AUDIT-002): a line that is not JSON and carries ``marker`` is a piece of
    a record this value split, or a record written with its control characters raw.
    """
    forged = '{"outcome":"OK","forged":1}'
    return f"{marker}\n{forged}\r\n{marker}\u2028{marker}\x1b[2J{'A' * 4096}{marker}"


def plan_injection(run: Run, policy: Policy, marker: str) -> tuple[list[Call], list[Observation]]:
    """One call per ``audit.logged_fields`` entry carrying :func:`injection` in that field."""
    calls, notes = [], []
    for entry in run.config.str_list("audit.logged_fields"):
        method = next(
            (m.path for m in policy.catalogue.methods if entry.startswith(m.path + ".")), None
        )
        if method is None:
            notes.append(
                Observation(f"injection into {entry}", "not sent", "a method", Status.SKIP)
            )
            continue
        cls = policy.catalogue.message_class(policy.catalogue.method(method).input_type)
        value = {entry[len(method) + 1 :]: injection(marker)}
        data, missed = fill(cls, template_text(run, method), value)
        if missed:
            notes.append(
                Observation(f"injection into {entry}", "not sent", "a string field", Status.SKIP)
            )
            continue
        allowed = policy.allowed(method) or frozenset()
        who = next((run.principal(n) for n in sorted(allowed) if run.principal(n)), None)
        calls.append(Call(f"log-injection value in {entry}", method, (data,), who))
    return calls, notes


@dataclass(frozen=True)
class Written:
    """The lines the audit source gained while an injection call went out, sorted."""

    forged: int  # JSON events with a ``forged`` key
    split: int  # lines that are not JSON and carry the marker: the value broke a record
    other: int  # lines that are not JSON, not the value's: noted, not judged

    @classmethod
    def of(cls, chunks: Iterable[tuple[str, bytes]], marker: str) -> Written:
        """Sort the lines of ``chunks`` (what was appended to the source)."""
        forged = split = other = 0
        for _, blob in chunks:
            for line in blob.decode("utf-8", "replace").split("\n"):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    forged += "forged" in event
                elif marker in line:
                    split += 1
                else:
                    other += 1
        return cls(forged, split, other)


def judge_injection(
    call: Call,
    result: CallResult,
    matched: Sequence[Mapping[str, Any]],
    written: Written,
    unsure: str = "",
) -> Observation:
    """Exactly one event for the call; no forged event and no split record in what it wrote.

    Only lines the injected value made count (:class:`Written`): another non-JSON line in
    the source is noted, never a finding. ``unsure``: why the call's events cannot be told
    apart from other calls' (tuple correlation); the count is then not judged, a forged
    event or a split record still is.
    """
    n = len(matched)
    observed = (
        f"{n} event(s) for the call, {written.forged} forged event(s), "
        f"{written.split} line(s) split from a record by the value"
    )
    if written.other:
        observed += f" ({written.other} other non-JSON line(s), not the value's: not judged)"
    if unreached(result):
        status = Status.INCONCLUSIVE
        observed = f"{result.status}: the value never reached the service"
    elif unsure and not written.forged and not written.split:
        status, observed = Status.INCONCLUSIVE, f"{observed}; {unsure}"
    else:
        ok = n == 1 and not written.forged and not written.split
        status = Status.PASS if ok else Status.FAIL
    expected = "exactly 1 event, none forged, the value escaped inside its record"
    obs = Observation(call.label, observed, expected, status, Severity.HIGH, result.request_id)
    return obs.of("injection")


def _injection(run: Run) -> list[Observation]:
    policy = Policy.of(run)
    if policy is None:
        return []
    marker = f"hipaa-inj-{run_nonce(run)}"
    calls, notes = plan_injection(run, policy, marker)
    out = [n.of("injection") for n in notes]
    for call in calls:
        before, problem = audit.read_raw(run.config.get("audit.source"))
        _, result = send_apart(run, [call])[0]
        polled = audit.poll(run, [result.request_id])
        if problem or polled.problem:
            observed = problem or polled.problem
            out.append(
                Observation(call.label, observed, "readable events", Status.INCONCLUSIVE).of(
                    "injection"
                )
            )
            continue
        written = Written.of(audit.appended(before, polled.chunks), marker)
        rid = result.request_id
        unsure = polled.matches.unsure(rid)
        out.append(judge_injection(call, result, polled.found.get(rid, []), written, unsure))
    return out


@check(
    "AUDIT-002",
    probes=(
        Probe("identity", f"identity: {_HOLDS['identity']}"),
        Probe("method", f"method: {_HOLDS['method']}"),
        Probe("resource", f"resource: {_HOLDS['resource']}"),
        Probe("action", _HOLDS["action"], required=False, needs=("audit.action_map",)),
        Probe("outcome", f"outcome: {_HOLDS['outcome']}"),
        Probe("request_id", f"request_id: {_HOLDS['request_id']}"),
        Probe("timestamp", f"timestamp: {_HOLDS['timestamp']}"),
        Probe("source", f"source: {_HOLDS['source']}"),
        Probe(
            "injection",
            "control characters and a forged event in audit.logged_fields",
            required=False,
            needs=("audit.logged_fields",),
        ),
    ),
)
def event_content(run: Run) -> Outcome:
    """Audit event content complete, accurate and injection-safe.

    For every reconciled event (AUDIT-001's calls): ``identity`` is the verified subject
    of the token sent (empty for calls without a valid credential is fine), ``method`` the
    full method path, ``resource`` present, ``action`` what ``audit.action_map`` gives the
    method (by path, or by ``read``/``write``), ``outcome`` the observed code (names in any
    case, numbers, or ``audit.outcome_map``), ``request_id`` the value sent, ``timestamp``
    RFC 3339 with a zone or an epoch number (``audit.timestamp_format``), ``source``
    present. Injection probe on ``audit.logged_fields``: a value carrying a newline with a
    forged JSON event, CR LF, U+2028, an escape sequence and 4 KiB (a run marker between
    its pieces) must yield exactly one event, and of the lines the source gained meanwhile
    none may be an event with a ``forged`` key or a line that is not JSON and carries the
    marker (a record the value split, or its control characters written raw). Other
    non-JSON lines in the source are noted, not judged.
    """
    found = _matched(run)
    fields = Fields.of(run.config)
    echoed = audit.correlation(run) is None
    observations = judge_content(_truths(run, found), fields, echoed) + _injection(run)
    return Outcome.from_observations(
        CATALOGUE["AUDIT-002"],
        observations,
        passed="every event names who, what, which record, outcome and when",
    )


# -- AUDIT-003 ----------------------------------------------------------------------------


def judge_refusals(
    calls: Sequence[CallResult], events: Matched, fields: Fields
) -> list[Observation]:
    """Every refused call audited as a refusal (UNAUTHENTICATED or PERMISSION_DENIED).

    A denied access is an auditable event: a refused call with no event FAILs, as does one
    whose event names another outcome; one whose events cannot be told apart from other
    calls' (tuple correlation) is INCONCLUSIVE. No refused call at all makes no
    observation.
    """
    refusals = [c for c in calls if c.code in REFUSED and not edge_answered(c)]
    if not refusals:
        return []
    matches = matched(events)
    found = matches.found
    unsure = [c for c in refusals if matches.unsure(c.request_id)]
    missing = [c for c in refusals if not found.get(c.request_id) and c not in unsure]
    wrong = [
        c
        for c in refusals
        if found.get(c.request_id) and fields.outcome(found[c.request_id][0]) not in REFUSED
    ]
    with_event = len(refusals) - len(missing) - len(unsure)
    probe = f"{len(refusals)} refused calls, {with_event} with an event"
    expected = "an event with outcome UNAUTHENTICATED or PERMISSION_DENIED"
    out = [
        Observation(probe, observed, expected, Status.FAIL, Severity.MEDIUM, bad[0].request_id)
        for observed, bad in (
            (f"{len(missing)} refused call(s) with no audit event", missing),
            (f"{len(wrong)} event(s) with another outcome", wrong),
        )
        if bad
    ]
    out += _unsure("refusals", unsure, matches)
    return filed("refusals", out or [Observation(probe, "all audited", expected, Status.PASS)])


def forged_token(token: Parsed, sub: str) -> str:
    """``token`` claiming ``sub``, its signature broken (one bit of the first byte)."""
    forged = parse(tamper(token, sub=sub))
    assert forged is not None
    sig = base64url_decode(token.segments[2])
    return with_signature(forged, bytes([sig[0] ^ 1]) + sig[1:])


def judge_actor(
    results: Sequence[CallResult],
    events: Mapping[str, Sequence[Mapping[str, Any]]],
    forged_sub: str,
    fields: Fields,
) -> Observation:
    """No event of the forged-token burst names the forged ``sub`` as the actor.

    ``events``: every event that may be a burst call's (under tuple correlation the burst's
    calls are alike, and no event need be told one call's rather than another's: one naming
    the run's own forged ``sub`` is the burst's).
    """
    reached = [r for r in results if not unreached(r)]
    probe = f"{len(results)} tokens with a forged sub"
    expected = "the actor empty or marked unverified"
    if not reached:
        observed = "no call of the burst reached the service"
        return Observation(probe, observed, expected, Status.INCONCLUSIVE).of("actor")
    evs = [e for r in reached for e in events.get(r.request_id, [])]
    if not evs:
        observed = "no call of the burst has an event: no actor to judge"
        return Observation(probe, observed, expected, Status.INCONCLUSIVE).of("actor")
    named = [e for e in evs if fields(e, "identity") == forged_sub]
    observed = f"{len(named)} of {len(evs)} event(s) name the forged sub as the actor"
    status = Status.FAIL if named else Status.PASS
    return Observation(probe, observed, expected, status, Severity.HIGH).of("actor")


def judge_alert(alert_type: str | None, throttled: bool, seen: bool, problem: str) -> Observation:
    """An ``alert_type`` event after the burst, or the burst throttled (LIMIT-002)."""
    probe, expected = "burst of failed authentications", "an alert or throttling"
    if throttled:
        observed = "throttled (RESOURCE_EXHAUSTED)"
        return Observation(probe, observed, expected, Status.PASS).of("alert")
    if not alert_type:
        observed = "not throttled; no alert type to look for"
        return Observation(probe, observed, "audit.alert_type", Status.SKIP).of("alert")
    expected = f"a {alert_type} event within audit.alert_timeout_s"
    if problem:
        return Observation(probe, problem, expected, Status.INCONCLUSIVE).of("alert")
    observed = f"{alert_type} event {'seen' if seen else 'not seen'}"
    status = Status.PASS if seen else Status.FAIL
    return Observation(probe, observed, expected, status, Severity.MEDIUM).of("alert")


def _burst(run: Run, base: Base) -> list[Observation]:
    """``audit.failure_burst`` forged-sub tokens with broken signatures, then the alert."""
    sub = f"forged-{run.options.seed:08x}"
    token = forged_token(base.token, sub)
    burst = int(run.config.get("audit.failure_burst", 20))
    start = dt.datetime.now(dt.timezone.utc)
    md = bearer(token, base.principal.presentation)
    call = Call("forged-sub token", base.method.path, (base.request,), None, md)
    results = [r for _, r in send(run, [call] * burst)]
    throttled = any(r.code == grpc.StatusCode.RESOURCE_EXHAUSTED for r in results)
    polled = audit.poll(run, [r.request_id for r in results])
    got, problem = polled.matches.candidates, polled.problem
    fields = Fields.of(run.config)
    actor = (
        Observation(
            f"{burst} tokens with a forged sub", problem, "readable events", Status.INCONCLUSIVE
        ).of("actor")
        if problem
        else judge_actor(results, got, sub, fields)
    )
    alert_type = run.config.str_("audit.alert_type")
    seen, problem = False, ""
    if alert_type and not throttled:
        seen, problem = wait_alert(run, alert_type, start - dt.timedelta(seconds=60))
    return [actor, judge_alert(alert_type, throttled, seen, problem)]


@check(
    "AUDIT-003",
    probes=(
        Probe("refusals", "refused AUTHN/AUTHZ calls audited as refusals"),
        Probe("actor", "a forged, unverifiable sub is not recorded as the actor"),
        Probe(
            "alert",
            "a burst of failures raises audit.alert_type or is throttled",
            needs=("audit.alert_type",),
        ),
    ),
)
def failures_audited_and_alerted(run: Run) -> Outcome:
    """Failed authentication and authorization audited; bursts raise a signal.

    Every refused call of AUDIT-001's set has an event with outcome UNAUTHENTICATED or
    PERMISSION_DENIED (a refusal with no event fails: a denied access is auditable). Then
    ``audit.failure_burst`` (20) tokens with a broken signature and the same forged ``sub``
    go out within seconds: no event may name that forged ``sub`` as the actor, and an
    ``audit.alert_type`` event must appear within ``audit.alert_timeout_s`` (an alert
    already raised for this source in the last 60 s counts), unless the burst was throttled
    (RESOURCE_EXHAUSTED).
    """
    found = _matched(run)
    observations = judge_refusals(found.calls, found.matches, Fields.of(run.config))
    accepted = [b for b in bases(run)[0] if b.accepted]
    if accepted:
        observations += _burst(run, accepted[0])
    else:
        observations.append(
            Observation(
                "forged-sub burst", "not sent", "a principal's valid token", Status.SKIP
            ).of("actor")
        )
    return Outcome.from_observations(
        CATALOGUE["AUDIT-003"],
        observations,
        passed="refusals audited, forged actors not believed, bursts alerted",
    )


# -- the harness's own clock (SNTP, RFC 4330) ----------------------------------------------

_NTP_EPOCH = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def _ntp_bytes(t: float) -> bytes:
    secs, frac = divmod(t + _NTP_EPOCH, 1)
    return struct.pack("!II", int(secs) & 0xFFFFFFFF, int(frac * 2**32) & 0xFFFFFFFF)


def _ntp_seconds(data: bytes) -> float:
    secs, frac = struct.unpack("!II", data)
    return float(secs - _NTP_EPOCH + frac / 2**32)


@dataclass(frozen=True)
class ClockOffset:
    """The time server's clock minus the harness's, and how far that can be off."""

    offset_s: float
    uncertainty_s: float

    @classmethod
    def of(cls, *samples: ClockOffset) -> ClockOffset:
        """Samples (before and after the calls) combined: their mean, widened by their drift."""
        offsets = [s.offset_s for s in samples]
        spread = (max(offsets) - min(offsets)) / 2
        mean = sum(offsets) / len(offsets)
        return cls(mean, max(s.uncertainty_s for s in samples) + spread)


def sntp_request(now: float) -> bytes:
    """A client request (LI 0, version 4, mode 3) whose transmit time is ``now``."""
    return bytes([0x23]) + bytes(39) + _ntp_bytes(now)


def sntp_offset(reply: bytes, request: bytes, t1: float, t4: float) -> ClockOffset | None:
    """The offset from a server's reply to ``request`` sent at ``t1``, received at ``t4``.

    None for anything but a synchronised server's answer to this request (mode 4 or 5, not
    alarmed, stratum 1-15, originate time echoed, a transmit time).
    """
    if len(reply) < 48 or reply[0] & 7 not in (4, 5) or reply[0] >> 6 == 3:
        return None
    if not 0 < reply[1] < 16 or reply[24:32] != request[40:48] or not any(reply[40:48]):
        return None
    t2, t3 = _ntp_seconds(reply[32:40]), _ntp_seconds(reply[40:48])
    round_trip = max((t4 - t1) - (t3 - t2), 0.0)
    return ClockOffset(((t2 - t1) + (t3 - t4)) / 2, round_trip / 2)


def _address(server: str) -> tuple[str, int]:
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest.lstrip(":") or 123)
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, 123


def measure_offset(server: str, timeout_s: float = 2.0) -> tuple[ClockOffset | None, str]:
    """One SNTP exchange with ``server`` (``host``, ``host:port``, ``[v6]:port``)."""
    try:
        host, port = _address(server)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout_s)
            t1 = time.time()
            request = sntp_request(t1)
            sock.sendto(request, (host, port))
            reply = sock.recv(512)
            t4 = time.time()
    except (OSError, ValueError) as exc:
        return None, f"clock.ntp_server {server}: {type(exc).__name__}: {exc}"
    offset = sntp_offset(reply, request, t1, t4)
    return offset, "" if offset else f"clock.ntp_server {server}: not a valid SNTP answer"


#: adjtimex(2): the status bit the kernel sets while no NTP daemon disciplines the clock,
#: the state it returns then, and the maxerror (us) it reports when it knows nothing.
STA_UNSYNC, TIME_ERROR, MAXERROR_UNKNOWN_US = 0x0040, 5, 16_000_000


@dataclass(frozen=True)
class KernelClock:
    """What the kernel says of its own clock (``adjtimex`` read-only: modes 0)."""

    state: int  # adjtimex's return: TIME_OK 0 ... TIME_ERROR 5
    status: int  # STA_* bits
    maxerror_us: int  # the maximum error the NTP discipline vouches for


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """Linux ``struct timex`` (include/uapi/linux/timex.h), field for field."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("reserved", ctypes.c_int * 11),
    )


def kernel_clock() -> KernelClock | None:
    """The kernel's clock state by ``adjtimex`` (modes 0: reads, never sets); None elsewhere."""
    try:
        adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):  # not Linux (no such call)
        return None
    timex = _Timex()
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        return None
    return KernelClock(int(state), int(timex.status), int(timex.maxerror))


def kernel_bound(clock: KernelClock | None) -> tuple[ClockOffset | None, str]:
    """The harness clock's offset bound from the kernel's NTP discipline, or why there is none.

    A kernel clock an NTP daemon keeps synchronised (STA_UNSYNC clear, state not
    TIME_ERROR) vouches for its own maximum error: the offset from true time is within
    ``maxerror`` (estimate 0). Unsynchronised, unreadable or with the "unknown" maxerror
    (16 s), it bounds nothing.
    """
    missing = "no clock.ntp_server"
    if clock is None:
        return None, f"{missing}, and the kernel's clock state cannot be read (adjtimex)"
    if clock.status & STA_UNSYNC or clock.state == TIME_ERROR:
        return None, f"{missing}, and the kernel clock is not synchronised (STA_UNSYNC)"
    if not 0 <= clock.maxerror_us < MAXERROR_UNKNOWN_US:
        return None, f"{missing}, and the kernel does not know its maximum error"
    return ClockOffset(0.0, clock.maxerror_us / 1e6), ""


# -- AUDIT-004 ----------------------------------------------------------------------------


#: The harness could not bound its own clock's offset: no delta is judged.
UNBOUNDED = ClockOffset(0.0, float("inf"))


def judge_delta(
    result: CallResult, stamp: audit.Stamp, tolerance_s: float, clock: ClockOffset | None = None
) -> Observation:
    """Event time within the tolerance and half the round trip of the call's midpoint.

    With ``clock`` (the time server's offset from the harness), the midpoint is corrected
    by the offset and the tolerance widened by its uncertainty.
    """
    clock = clock or ClockOffset(0.0, 0.0)
    midpoint = result.started_at + result.elapsed_s / 2 + clock.offset_s
    delta = stamp.at.timestamp() - midpoint
    allowed = tolerance_s + result.elapsed_s / 2 + clock.uncertainty_s
    return Observation(
        "event time vs. call midpoint",
        f"delta {delta * 1000:+.0f} ms",
        f"within +/-{allowed * 1000:.0f} ms",
        Status.PASS if abs(delta) <= allowed else Status.FAIL,
        Severity.MEDIUM,
        result.request_id,
    ).of("delta")


def judge_timestamps(
    results: Sequence[CallResult],
    events: Events,
    fields: Fields,
    tolerance_s: float,
    clock: ClockOffset | None = None,
) -> list[Observation]:
    """Sequential calls' events: near their calls, precise, in call order.

    Each event's time near its call's midpoint (delta), every timestamp sub-second and
    zoned (precision), the events in call order (order). A call with no event is
    INCONCLUSIVE (delta). ``clock``: the harness's offset (see :func:`judge_delta`);
    :data:`UNBOUNDED` when it could not be measured, and then no delta is judged (a SKIP
    says why).
    """
    out, stamps, vague, seen = [], [], [], 0
    for r in results:
        evs = events.get(r.request_id) or []
        if not evs:
            reason = "no event" if r.code not in UNREACHED else r.status
            out.append(
                Observation(
                    "event time",
                    reason,
                    "an event to time",
                    Status.INCONCLUSIVE,
                    None,
                    r.request_id,
                ).of("delta")
            )
            continue
        seen += 1
        stamp = fields.time(evs[0])
        if stamp is None or not stamp.sub_second:
            vague.append((r, fields(evs[0], "timestamp")))
        if stamp is not None:
            if clock is not UNBOUNDED:
                out.append(judge_delta(r, stamp, tolerance_s, clock))
            stamps.append(stamp.at)
    if seen:
        out.append(judge_precision(vague, seen))
    if seen and clock is UNBOUNDED:
        out.append(
            Observation(
                "event time vs. call midpoint",
                "not judged: the harness cannot bound its own clock's offset",
                "a bounded harness clock (clock.ntp_server)",
                Status.SKIP,
            ).of("delta")
        )
    if len(stamps) >= 2:
        ordered = stamps == sorted(stamps)
        out.append(
            Observation(
                f"order of {len(stamps)} sequential calls' events",
                "in call order" if ordered else "out of order",
                "call order",
                Status.PASS if ordered else Status.FAIL,
                Severity.MEDIUM,
            ).of("order")
        )
    return out


def judge_precision(vague: Sequence[tuple[CallResult, Any]], seen: int) -> Observation:
    """Every timestamp sub-second with an unambiguous zone (``vague``: those that are not)."""
    expected = "sub-second, with Z or an offset (or an epoch number)"
    if not vague:
        return Observation(f"{seen} event timestamps", "all precise", expected, Status.PASS).of(
            "precision"
        )
    r, raw = vague[0]
    observed = f"{len(vague)} vague or ambiguous, e.g. {raw!r}"
    return Observation(
        f"{seen} event timestamps", observed, expected, Status.FAIL, Severity.MEDIUM, r.request_id
    ).of("precision")


def judge_clock(
    samples: Sequence[tuple[ClockOffset | None, str]], server: str | None
) -> Observation:
    """The harness's offset bounded before and after the calls (``samples``), or not.

    With ``server`` (``clock.ntp_server``) the samples are SNTP exchanges: one without a
    valid answer leaves the probe INCONCLUSIVE. Without it they are the kernel's own
    synchronisation state (:func:`kernel_bound`): one that bounds nothing leaves the probe
    unrun (SKIP), naming ``clock.ntp_server``.
    """
    probe = "harness clock offset " + ("(SNTP)" if server else "(kernel NTP discipline)")
    expected = "an answer from clock.ntp_server" if server else "clock.ntp_server"
    problem = next((why for offset, why in samples if offset is None), "")
    if problem or not samples:
        status = Status.INCONCLUSIVE if server else Status.SKIP
        return Observation(probe, problem or "not measured", expected, status).of("ntp")
    clock = ClockOffset.of(*(offset for offset, _ in samples if offset is not None))
    observed = f"{clock.offset_s * 1000:+.1f} ms, +/-{clock.uncertainty_s * 1000:.1f} ms"
    return Observation(probe, observed, "a bounded offset", Status.PASS).of("ntp")


def _timed_calls(run: Run) -> tuple[list[CallResult], int | None]:
    """Ten sequential calls to an audited method by a principal whose token was accepted.

    Every role's token counts, a JWT or an opaque one (:func:`valid_tokens`). Under tuple
    correlation, also how many events the source held just before them (once no earlier
    call by that principal to that method is near in time).
    """
    policy_or_skip(run)
    phi = run.config.str_list("audit.phi_methods")
    held, why = valid_tokens(run)
    base = next((h for h in held if h.accepted and h.method.path in phi), None)
    if base is None:
        raise NotApplicable(why or "no principal may read an audit.phi_methods entry")
    time.sleep(audit.clearance(run, [(base.method.path, base.principal.name)]))
    since = audit.events_now(run) if audit.correlation(run) else None
    path, who = base.method.path, base.principal
    return [run.call(path, [base.request], principal=who) for _ in range(10)], since


def _timed_events(run: Run, results: Sequence[CallResult], since: int | None) -> tuple[Events, str]:
    """The events of AUDIT-004's calls, and a problem if any.

    By request ID; under tuple correlation by write order (:func:`harness.audit.paired`):
    the events the source gained while the calls went out, one per call of the method and
    identity, whatever their times say (the times are what AUDIT-004 judges: a clock far
    off must fail delta, not leave the events unmatched).
    """
    polled = audit.poll(run, [r.request_id for r in results])
    if since is None or polled.problem:
        return polled.found, polled.problem
    fresh = polled.events.events[since:]
    return audit.paired(fresh, results, Fields.of(run.config), audit.subjects_of(run))


def _offset_sampler(run: Run) -> tuple[str | None, Callable[[], tuple[ClockOffset | None, str]]]:
    """``clock.ntp_server`` and how to bound the harness's offset: SNTP, else the kernel."""
    server = run.config.str_("clock.ntp_server")
    if server:
        return server, lambda: measure_offset(server)
    return None, lambda: kernel_bound(kernel_clock())


@check(
    "AUDIT-004",
    probes=(
        Probe("delta", "event time within clock.tolerance_ms + RTT/2 of the call"),
        Probe("precision", "sub-second timestamps with an unambiguous zone"),
        Probe("order", "events of 10 sequential calls in call order"),
        Probe(
            "ntp",
            "the harness's own offset bounded: SNTP against clock.ntp_server (without it, "
            "the kernel's NTP synchronisation state)",
            needs=("clock.ntp_server",),
        ),
    ),
)
def timestamps_accurate(run: Run) -> Outcome:
    """Audit timestamps accurate and ordered.

    Ten sequential calls to an audited method by an allowed principal (a JWT or opaque
    token); for each event, delta = event time - midpoint(send, receive) must be within
    ``clock.tolerance_ms`` (1000) + half the round trip + the harness's offset
    uncertainty; timestamps need sub-second precision and a zone (RFC 3339 with ``Z`` or
    an offset, or an epoch number in ``audit.timestamp_format``), and event order must
    match call order. The harness bounds its own offset before and after the calls: by
    SNTP against ``clock.ntp_server`` (the midpoints corrected by the offset); without one,
    by the kernel's NTP discipline (``adjtimex``: synchronised, its maximum error known).
    When it cannot, no delta is judged and the control is INCONCLUSIVE (catalogue:
    "INCONCLUSIVE if the harness cannot bound its own offset").
    """
    _needs(run, "audit.source", "audit.phi_methods")
    server, sample = _offset_sampler(run)
    samples = [sample()]
    results, since = _timed_calls(run)
    samples.append(sample())
    events, problem = _timed_events(run, results, since)
    if problem:
        raise CannotObserve(problem)
    good = [offset for offset, _ in samples if offset is not None]
    clock = ClockOffset.of(*good) if len(good) == len(samples) else UNBOUNDED
    tolerance = int(run.config.get("clock.tolerance_ms", 1000)) / 1000
    fields = Fields.of(run.config)
    observations = judge_timestamps(results, events, fields, tolerance, clock)
    observations.append(judge_clock(samples, server))
    return Outcome.from_observations(
        CATALOGUE["AUDIT-004"],
        observations,
        passed="timestamps within tolerance, precise, in order",
    )


# -- AUDIT-005 / 006: chain and growth ----------------------------------------------------

_ALGORITHMS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
#: ``json-sorted-compact``: what ``sorted-compact`` was called before the catalogue named it.
_CANONICAL = {"jcs", "sorted-compact", "json-sorted-compact", "raw-line"}


@dataclass(frozen=True)
class ChainSpec:
    """``audit.hash_chain``: how each record's hash is computed and where it is kept.

    What is hashed is the record without ``hash_field`` (everything else, the
    ``prev_field`` included), canonicalised as ``canonicalization`` says: ``jcs`` (RFC
    8785), ``sorted-compact`` (sorted keys, no spaces, UTF-8 text: the bundled Python
    reference's), or ``raw-line`` (the line as the source holds it; only for a record
    that keeps no hash of its own). ``link`` ``concat``: hash_i = H(hash_{i-1} || 0x0A ||
    canonical(record_i)), kept in ``hash_field``; ``prev-in-record``: hash_i =
    H(canonical(record_i)), ``prev_field`` naming hash_{i-1}, and kept in ``hash_field``
    or, when that is empty, only in the next record's ``prev_field``. The first record of a
    chain links to ``genesis``. Field names are paths (:func:`harness.audit.lookup`).
    """

    algorithm: str = "sha256"
    canonicalization: str = "sorted-compact"
    link: str = "concat"
    genesis: str = GENESIS
    prev_field: str = "prev_hash"
    hash_field: str = "hash"
    seq_field: str = "seq"

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> ChainSpec:
        """The spec a configuration table declares (defaults for what it leaves out)."""
        known = {k: str(v) for k, v in table.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def unsupported(self) -> str:
        """Why this chain cannot be verified here ("" when it can)."""
        if self.algorithm.lower() not in _ALGORITHMS:
            return f"audit.hash_chain.algorithm {self.algorithm!r} is not supported"
        if self.canonicalization not in _CANONICAL:
            return f"audit.hash_chain.canonicalization {self.canonicalization!r} is not supported"
        if self.link not in ("concat", "prev-in-record"):
            return f"audit.hash_chain.link {self.link!r} is not supported"
        if self.link == "concat" and not self.hash_field:
            return "audit.hash_chain: a concat chain keeps each hash in hash_field; none named"
        if self.link == "prev-in-record" and not self.prev_field:
            return "audit.hash_chain: a prev-in-record chain needs its prev_field"
        if self.canonicalization == "raw-line" and self.hash_field:
            return "audit.hash_chain: a raw line cannot leave its own hash_field out"
        return ""

    def canonical(self, record: Mapping[str, Any], line: str | None = None) -> bytes:
        """What is hashed of ``record`` (``line``: its line as the source holds it).

        Raises:
            ValueError: the record cannot be canonicalised (a number JCS cannot represent,
                or no line of its own for raw-line).
        """
        if self.canonicalization == "raw-line":
            if line is None:
                raise ValueError("the record shares its line with others: no raw line")
            return line.encode()
        body = audit.without(record, self.hash_field) if self.hash_field else dict(record)
        if self.canonicalization == "jcs":
            try:
                return bytes(rfc8785.dumps(_as_doubles(body)))
            except rfc8785.CanonicalizationError as exc:
                raise ValueError(f"not JCS-canonicalisable: {exc}") from None
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode()

    def digest(self, prev: str, record: Mapping[str, Any], line: str | None = None) -> str:
        """The hash ``record`` should have after ``prev``.

        Raises:
            ValueError: see :meth:`canonical`.
        """
        data = self.canonical(record, line)
        if self.link == "concat":
            data = prev.encode() + b"\n" + data
        return _ALGORITHMS[self.algorithm.lower()](data).hexdigest()

    def seq(self, record: Mapping[str, Any]) -> Any:
        """The record's sequence number (None without one)."""
        return audit.lookup(record, self.seq_field) if self.seq_field else None


def _as_doubles(node: Any) -> Any:
    """``node`` with integers beyond 2**53 as the doubles JSON numbers are (RFC 8785 3.2.2.3).

    A writer in JavaScript (or any I-JSON one) holds every number as an IEEE 754 double;
    Python reads ``10000000000000000`` as an exact integer, which JCS would refuse.
    """
    if isinstance(node, dict):
        return {k: _as_doubles(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_as_doubles(v) for v in node]
    if isinstance(node, int) and not isinstance(node, bool) and abs(node) > 2**53:
        with contextlib.suppress(OverflowError):  # beyond any double: JCS refuses it
            return float(node)
    return node


@dataclass(frozen=True)
class Chain:
    """What breaks a hash chain: its links, and its sequence numbers.

    ``hashes``: each record's hash (the one it keeps, or the one computed when it keeps
    none; None when it could not be computed).
    """

    links: list[str]
    gaps: list[str]
    numbered: int  # records that carry an integer sequence number
    hashes: list[str | None] = dc_field(default_factory=list, compare=False)


def _gaps(events: Sequence[Mapping[str, Any]], spec: ChainSpec) -> tuple[list[str], int]:
    """Jumps in the records' sequence numbers, and how many records carry one."""
    gaps, last, numbered = [], None, 0
    for e in events:
        seq = spec.seq(e)
        if isinstance(seq, int) and not isinstance(seq, bool):
            numbered += 1
            if last is not None and seq != last + 1:
                gaps.append(f"seq jumps from {last} to {seq}")
            last = seq
    return gaps, numbered


def verify_chain(
    events: Sequence[Mapping[str, Any]], spec: ChainSpec, lines: Sequence[str | None] = ()
) -> Chain:
    """Every link of ``events`` recomputed under ``spec``, and the sequence checked.

    ``lines``: each event's line as the source holds it (for ``raw-line``). The first
    record read links to its own ``prev_field`` (an earlier segment), or to ``genesis``;
    numbered 0 or 1, it must link to ``genesis``.
    """
    links: list[str] = []
    hashes: list[str | None] = []
    prev: str | None = None
    for i, e in enumerate(events):
        seq = spec.seq(e)
        where = f"seq {seq}" if seq is not None else f"record {i + 1}"
        claimed = audit.lookup(e, spec.prev_field) if spec.prev_field else None
        link = prev if prev is not None else str(claimed if claimed is not None else spec.genesis)
        if prev is None and i == 0 and seq in (0, 1) and link != spec.genesis:
            links.append("the first record does not link to the genesis hash")
        if prev is not None and claimed is not None and claimed != prev:
            links.append(f"{where}: {spec.prev_field} is not the previous record's hash")
        try:
            computed: str | None = spec.digest(link, e, lines[i] if i < len(lines) else None)
        except ValueError as exc:
            computed = None
            links.append(f"{where}: cannot canonicalise the record ({exc})")
        kept = audit.lookup(e, spec.hash_field) if spec.hash_field else None
        if spec.hash_field and kept is None:
            links.append(f"{where}: no {spec.hash_field}")
        elif kept is not None and computed is not None and computed != kept:
            links.append(f"{where}: {spec.hash_field} does not verify")
        hashes.append(str(kept) if kept is not None else computed)
        prev = hashes[-1]
    gaps, numbered = _gaps(events, spec)
    return Chain(links, gaps, numbered, hashes)


def chain_problems(
    run: Run, events: Sequence[Mapping[str, Any]], lines: Sequence[str | None] = ()
) -> list[str]:
    """What breaks the hash chain of ``events`` under ``audit.hash_chain``, in words."""
    spec = ChainSpec.of(run.config.table("audit.hash_chain"))
    if spec.unsupported:
        return [spec.unsupported]
    chain = verify_chain(events, spec, lines)
    return chain.links + chain.gaps


def judge_chain(chain: Chain, records: int) -> list[Observation]:
    """Every link verifies (links), the sequence has no gap (seq); nothing read, no verdict."""
    if not records:
        return []
    out = []
    for ref, problems, holds in (
        ("links", chain.links, "every link verifies"),
        ("seq", chain.gaps, "no gap in the sequence"),
    ):
        probe = f"hash chain over {records} records"
        if ref == "seq" and not chain.numbered:
            out.append(Observation(probe, "no record numbered", "a seq_field", Status.SKIP).of(ref))
            continue
        for p in problems[:10]:
            out.append(Observation(probe, p, holds, Status.FAIL, Severity.HIGH).of(ref))
        if len(problems) > 10:
            more = f"{len(problems)} problem(s) in all"
            out.append(Observation(probe, more, holds, Status.FAIL, Severity.HIGH).of(ref))
        if not problems:
            out.append(Observation(probe, "holds", holds, Status.PASS).of(ref))
    return out


def judge_anchor(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> Observation:
    """The last record read before the run's calls is still there, unchanged, after them."""
    probe = "anchor (the last record before the run's calls)"
    if not before:
        return Observation(probe, "the log was empty", "a record to anchor", Status.SKIP).of(
            "anchor"
        )
    anchor = before[-1]
    present = any(e == anchor for e in after)
    observed = "present, unchanged" if present else "gone or changed"
    status = Status.PASS if present else Status.FAIL
    return Observation(probe, observed, "still present, unchanged", status, Severity.HIGH).of(
        "anchor"
    )


def anchor_of(
    events: Sequence[Mapping[str, Any]], spec: ChainSpec, lines: Sequence[str | None] = ()
) -> dict[str, Any] | None:
    """The last record's (seq, hash): what the next run must find unchanged.

    The hash is the one the record keeps, or (a chain keeping each hash only in the next
    record) the one computed for it.
    """
    digest = verify_chain(events[-1:], spec, lines[-1:]).hashes if events else []
    if not digest or digest[0] is None:
        return None
    return {"seq": spec.seq(events[-1]), "hash": digest[0]}


def judge_previous(
    previous: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]],
    spec: ChainSpec,
    lines: Sequence[str | None] = (),
) -> Observation:
    """The anchor an earlier run saved is still present, unchanged (same seq, same hash).

    None (no earlier run saved one for this source) is nothing to compare: SKIP.
    """
    probe = "anchor saved by the previous run (evidence.history_dir)"
    expected = "still present, unchanged"
    if previous is None:
        return Observation(probe, "none saved yet", "an earlier run", Status.SKIP).of("previous")
    seq, digest = previous.get("seq"), previous.get("hash")
    hashes = verify_chain(events, spec, lines).hashes
    kept = any(
        h == digest and (seq is None or spec.seq(e) == seq)
        for e, h in zip(events, hashes, strict=True)
    )
    observed = f"seq {seq}: " + ("present, unchanged" if kept else "gone or changed")
    status = Status.PASS if kept else Status.FAIL
    return Observation(probe, observed, expected, status, Severity.HIGH).of("previous")


def _previous(run: Run, log: audit.Events, spec: ChainSpec) -> Observation:
    """Compare with the anchor an earlier run saved, then save this run's."""
    events, lines = log.events, log.lines
    directory = Path(str(run.config.get("evidence.history_dir")))
    key = str(run.config.get("audit.source"))
    previous, problem = audit.load_anchor(directory, key)
    if problem:
        return Observation("previous anchor", problem, "readable", Status.INCONCLUSIVE).of(
            "previous"
        )
    out = judge_previous(previous, events, spec, lines)
    anchor = anchor_of(events, spec, lines)
    problem = audit.save_anchor(directory, key, anchor) if anchor else ""
    if problem:
        return Observation("new anchor", problem, "saved", Status.INCONCLUSIVE).of("previous")
    return out


def _growth(run: Run) -> tuple[audit.Events, audit.Events, int]:
    """The log before and after 50 audited calls (shared by AUDIT-005 and AUDIT-006).

    A log still empty gets one audited call first, so there is a record to anchor.
    """

    def compute() -> tuple[audit.Events, audit.Events, int]:
        phi = run.config.str_list("audit.phi_methods")
        held = valid_tokens(run)[0]  # every role's token, JWT or opaque
        base = next((h for h in held if h.accepted and h.method.path in phi), None)
        calls = _audited_calls(run, base)
        before = audit.read(run)
        if not before.events and calls and not before.problem:
            first = send(run, calls[:1])[0][1]
            audit.wait_for(run, [first.request_id])
            before = audit.read(run)
        sent = [r for _, r in send(run, calls)]
        audit.wait_for(run, [r.request_id for r in sent])
        return before, audit.read(run), len(sent)

    return run.memo("audit-growth", compute)


def _audited_calls(run: Run, base: Held | None) -> list[Call]:
    """50 allowed calls, spread over the identities allowed (per-identity rate limits)."""
    if base is None:
        return []
    policy = Policy.of(run)
    allowed = sorted(policy.allowed(base.method.path) or ()) if policy else []
    callers = [p for n in allowed if (p := run.principal(n)) and p.has_token] or [base.principal]
    path = base.method.path
    return [
        Call("audited call", path, (base.request,), callers[i % len(callers)]) for i in range(50)
    ]


@check(
    "AUDIT-005",
    probes=(
        Probe("links", "every hash link verifies under audit.hash_chain"),
        Probe("seq", "the sequence numbers have no gaps"),
        Probe("anchor", "the record last seen before the run's calls is still there, unchanged"),
        Probe(
            "previous",
            "the anchor (seq, hash) saved by the previous run is still there, unchanged",
            required=False,
            needs=("evidence.history_dir",),
        ),
    ),
)
def hash_chain(run: Run) -> Outcome:
    """The audit hash chain verifies, and nothing before it was rewritten.

    The log is read, 50 audited calls are made, and it is read again. Every link must
    verify under ``audit.hash_chain`` (:class:`ChainSpec`; default: ``hash_i =
    SHA-256(hash_{i-1} || 0x0A || canonical_json(record_i without the hash field))``,
    canonical JSON with sorted keys and no spaces, the first record linking to 64 zeros;
    ``algorithm`` sha256/384/512, ``canonicalization`` jcs (RFC 8785), sorted-compact or
    raw-line, ``link`` concat or prev-in-record (the previous hash inside the record,
    each record's own hash in ``hash_field`` or only in the next record), ``genesis`` and
    the field paths may be set), ``seq`` must have no gaps, and the last record seen
    before (the anchor) must still be there unchanged. With ``evidence.history_dir``, the
    anchor (seq, hash) the previous run saved for this source must still be there
    unchanged (truncation or rewriting between runs), and this run's last record is saved
    as the next run's anchor.
    """
    if not run.config.has("audit.hash_chain"):
        raise NotApplicable("no audit.hash_chain declared (ATT-004 must cover log integrity)")
    _needs(run, "audit.source")
    spec = ChainSpec.of(run.config.table("audit.hash_chain"))
    if spec.unsupported:
        raise CannotObserve(spec.unsupported)
    before, after, _ = _growth(run)
    if before.problem or after.problem:
        raise CannotObserve(before.problem or after.problem)
    chain = verify_chain(after.events, spec, after.lines)
    observations = judge_chain(chain, len(after.events))
    observations.append(judge_anchor(before.events, after.events))
    if run.config.get("evidence.history_dir"):
        observations.append(_previous(run, after, spec))
    return Outcome.from_observations(
        CATALOGUE["AUDIT-005"],
        observations,
        passed="the chain verifies end to end and the anchor holds",
    )


def judge_growth(before: audit.Events, after: audit.Events, sent: int) -> list[Observation]:
    """The earlier log is an exact prefix of the later one, grown by ``sent`` at least."""
    if not sent:
        return []
    prefix = list(after.events[: len(before.events)]) == list(before.events)
    grew = len(after.events) - len(before.events)
    probe = f"{len(before.events)} records before, {len(after.events)} after {sent} calls"
    return [
        Observation(
            probe,
            "prefix kept" if prefix else "earlier records changed or removed",
            "the earlier log is an exact prefix",
            Status.PASS if prefix else Status.FAIL,
            Severity.HIGH,
        ).of("run"),
        Observation(
            "growth",
            f"{grew} new record(s)",
            f"at least {sent}",
            Status.PASS if grew >= sent else Status.FAIL,
            Severity.HIGH,
        ).of("run"),
    ]


#: ``audit.min_retention_days`` when it is not set: some retention (HIPAA sets no period for
#: audit logs; its 6 years are for documentation, 164.316(b)(2)(i): an organisation's call).
MIN_RETENTION_DAYS = 1


@dataclass(frozen=True)
class Lock:
    """What a storage probe's output says of the audit store's immutability.

    Attributes:
        shape: Whose output it was read as (:func:`read_lock`).
        locked: Locked, or in compliance mode: nobody may lift or shorten it.
        mode: The lock as the output names it.
        days: The retention in days; ``None`` when the output sets none.
    """

    shape: str
    locked: bool
    mode: str
    days: float | None


def _number(value: Any) -> float | None:
    """A number, or a string of digits (int64 values as JSON text); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().isdigit():
        return float(value)
    return None


def _s3_lock(conf: Mapping[str, Any]) -> Lock:
    """S3 Object Lock: locked only with a default rule in COMPLIANCE mode.

    GOVERNANCE mode gives way to anyone holding ``s3:BypassGovernanceRetention``.
    """
    rule = conf.get("Rule")
    retention = rule.get("DefaultRetention") if isinstance(rule, Mapping) else None
    retention = retention if isinstance(retention, Mapping) else {}
    enabled, mode = str(conf.get("ObjectLockEnabled", "")), str(retention.get("Mode", ""))
    days, years = _number(retention.get("Days")), _number(retention.get("Years"))
    if days is None and years is not None:
        days = years * 365
    locked = enabled == "Enabled" and mode == "COMPLIANCE"
    return Lock("S3 Object Lock", locked, f"ObjectLockEnabled {enabled!r}, mode {mode!r}", days)


def read_lock(facts: Any) -> Lock | None:
    """The immutability a storage probe's JSON output describes; None for an unknown shape.

    Accepted shapes:

    * the harness's own: ``{"locked": true, "retention_days": 2190}``;
    * S3 Object Lock (``aws s3api get-object-lock-configuration``, boto3):
      ``{"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled", "Rule":
      {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2190}}}}`` (or the inner object;
      ``Years`` counts 365 days each); locked only in COMPLIANCE mode;
    * an Azure container immutability policy (``az storage container immutability-policy
      show``, or the ARM resource's ``properties``): ``{"state": "Locked",
      "immutabilityPeriodSinceCreationInDays": 2190}``; locked only in state Locked;
    * a Cloud Storage bucket retention policy (JSON API bucket resource, or its
      ``retentionPolicy``): ``{"retentionPolicy": {"isLocked": true, "retentionPeriod":
      "189216000"}}`` (seconds).
    """
    if not isinstance(facts, Mapping):
        return None
    if "locked" in facts or "retention_days" in facts:
        locked = facts.get("locked") is True
        mode = "locked" if locked else f"locked {facts.get('locked')!r}"
        return Lock("harness shape", locked, mode, _number(facts.get("retention_days")))
    s3 = facts.get("ObjectLockConfiguration", facts)
    if isinstance(s3, Mapping) and "ObjectLockEnabled" in s3:
        return _s3_lock(s3)
    azure = facts.get("properties", facts)
    if isinstance(azure, Mapping) and "immutabilityPeriodSinceCreationInDays" in azure:
        state = str(azure.get("state", ""))
        days = _number(azure.get("immutabilityPeriodSinceCreationInDays"))
        return Lock("Azure immutability policy", state == "Locked", f"state {state!r}", days)
    gcs = facts.get("retentionPolicy", facts)
    if isinstance(gcs, Mapping) and "retentionPeriod" in gcs:
        seconds = _number(gcs.get("retentionPeriod"))
        locked = gcs.get("isLocked") is True
        days = None if seconds is None else seconds / 86400
        return Lock("Cloud Storage retention policy", locked, f"isLocked {locked}", days)
    return None


def judge_storage(output: bytes | None, problem: str, minimum_days: int) -> Observation:
    """(b): the storage probe's output shows a locked store keeping ``minimum_days`` at least.

    Output that is not JSON, or JSON of no shape :func:`read_lock` knows, is INCONCLUSIVE;
    a store not locked, or whose retention is shorter or not set, FAILs (high).
    """
    expected = f"locked or compliance-mode, retention >= {minimum_days} days"
    facts: Any = None
    if not problem:
        try:
            facts = json.loads(output or b"")
        except ValueError:
            problem = "output is not JSON"
    lock = None if problem else read_lock(facts)
    if lock is None:
        problem = problem or "output of no known shape (see docs/controls.md)"
        return Observation("storage probe", problem, expected, Status.INCONCLUSIVE).of("b")
    kept = "no retention set" if lock.days is None else f"retention {lock.days:g} days"
    ok = lock.locked and lock.days is not None and lock.days >= minimum_days
    observed = f"{lock.shape}: {lock.mode}, {kept}"
    status = Status.PASS if ok else Status.FAIL
    return Observation("storage probe", observed, expected, status, Severity.HIGH).of("b")


def event_keys(event: Mapping[str, Any], seq_field: str, fields: Fields) -> dict[str, Any]:
    """How a management request may name ``event``: its sequence number, its request ID.

    Keyed by the request field name that would carry each: ``audit.hash_chain.seq_field``
    (``seq``) and the last part of ``audit.field_map.request_id``.
    """
    keys = {seq_field.rsplit(".", 1)[-1]: audit.lookup(event, seq_field) if seq_field else None}
    keys[fields.names.get("request_id", "request_id").rsplit(".", 1)[-1]] = fields(
        event, "request_id"
    )
    return {k: v for k, v in keys.items() if v is not None and not isinstance(v, bool)}


def aim(cls: Any, request: bytes, keys: Mapping[str, Any]) -> bytes:
    """``request`` naming the event ``keys`` describe (:func:`event_keys`).

    Each top-level singular field of the request named as a key, of a type the value
    fits (an integer field, a numeric value; a string field, text), is set to it; the
    rest of the template stays. Unchanged when no field fits.
    """
    message = cls.FromString(request)
    for name, value in keys.items():
        fd = message.DESCRIPTOR.fields_by_name.get(name)
        if fd is None or is_repeated(fd) or fd.message_type is not None:
            continue
        with contextlib.suppress(TypeError, ValueError):
            if fd.cpp_type == fd.CPPTYPE_STRING:
                setattr(message, name, str(value))
            elif isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
                setattr(message, name, int(value))
    return bytes(message.SerializeToString())


def own_event(events: Sequence[Mapping[str, Any]], sent: Iterable[str], fields: Fields) -> Any:
    """The last of ``events`` that one of the harness's own calls (request IDs ``sent``) made."""
    mine = set(sent)
    return next((e for e in reversed(events) if fields(e, "request_id") in mine), None)


def _own_target(run: Run, events: Sequence[Mapping[str, Any]]) -> Any:
    """:func:`own_event` of the run's calls, under ``audit.correlation``.

    Under tuple correlation: the last event attributed to one call of the run alone.
    """
    fields = Fields.of(run.config)
    by = audit.correlation(run)
    if by is None:
        return own_event(events, [r.request_id for r in run.calls()], fields)
    found = audit.correlate(events, by.claimants, fields, by).found
    mine = [e for evs in found.values() for e in evs]
    return next((e for e in reversed(events) if e in mine), None)


def plan_mgmt(
    run: Run, policy: Policy, target: Mapping[str, Any] | None = None
) -> tuple[list[Call], list[Observation]]:
    """Every ``audit.mgmt_methods`` entry, once per principal with credentials (a).

    Each request is the method's template (the empty message for a write without
    ``safety.allow_mutations``); with mutations and a ``target`` (an event one of the
    harness's own calls made), aimed at it (:func:`aim`). A method whose request cannot
    be built is not sent: INCONCLUSIVE, named.
    """
    callers = sorted((n, p) for n, p in run.principals.items() if p.has_token or p.has_cert)
    spec = ChainSpec.of(run.config.table("audit.hash_chain"))
    keys = event_keys(target, spec.seq_field, Fields.of(run.config)) if target else {}
    calls, notes = [], []
    for method in run.config.str_list("audit.mgmt_methods"):
        try:
            request = policy.request(run, method)
            if keys and policy.allow_mutations:
                cls = policy.catalogue.message_class(policy.catalogue.method(method).input_type)
                request = aim(cls, request, keys)
        except (DescriptorError, DecodeError) as exc:
            observed = f"not sent: {exc}"
            notes.append(
                Observation(
                    f"audit management {method}", observed, "a request", Status.INCONCLUSIVE
                ).of("a")
            )
            continue
        calls += [Call(f"audit management as {n}", method, (request,), p) for n, p in callers]
    return calls, notes


def judge_mgmt(attempts: Sequence[tuple[Call, CallResult]]) -> list[Observation]:
    """Every attempt on the audit store refused: PERMISSION_DENIED or UNIMPLEMENTED (a).

    Data or OK fails (high); another code (NOT_FOUND: the caller got past authorisation
    to the lookup) fails; UNAUTHENTICATED for a principal's valid credentials fails (low);
    a call that never reached the service is INCONCLUSIVE.
    """
    return [
        refused(
            call,
            result,
            expected=(grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED),
            low=(grpc.StatusCode.UNAUTHENTICATED,),
            data_severity=Severity.HIGH,
        ).of("a")
        for call, result in attempts
    ]


def judge_kept(before: audit.Events, after: audit.Events) -> Observation:
    """The events read before the management attempts are all there after them, unchanged.

    The earlier log must be an exact prefix of the later one; a log that held no event
    protected nothing the probe could see (INCONCLUSIVE), as does one that cannot be read.
    """
    probe, expected = (
        f"{len(before.events)} audit events before the attempts",
        "still present, unchanged",
    )
    problem = before.problem or after.problem
    if not problem and not before.events:
        problem = "the log held no event to protect"
    if problem:
        return Observation(probe, problem, expected, Status.INCONCLUSIVE).of("a")
    kept = list(after.events[: len(before.events)]) == list(before.events)
    observed = expected if kept else "changed or removed"
    status = Status.PASS if kept else Status.FAIL
    return Observation(probe, observed, expected, status, Severity.HIGH).of("a")


def _mgmt(run: Run) -> list[Observation]:
    """(a): every principal's attempts, and the events read around them."""
    policy = Policy.of(run)
    if policy is None:
        observed = f"not sent: {NO_DESCRIPTORS.format(run.catalogue_problem())}"
        return [
            Observation("audit management", observed, "descriptors", Status.INCONCLUSIVE).of("a")
        ]
    source = run.config.get("audit.source")
    before = audit.read(run) if source else None
    target = _own_target(run, before.events) if before else None
    calls, notes = plan_mgmt(run, policy, target)
    if not calls:
        observed = "no principal with credentials to attempt them with"
        return [
            *notes,
            Observation("audit management", observed, "auth.principals", Status.INCONCLUSIVE).of(
                "a"
            ),
        ]
    attempts = send(run, calls)
    out = notes + judge_mgmt(attempts)
    if before is None:
        unread = Observation(
            "audit events",
            "not read: no audit.source",
            "still present, unchanged",
            Status.INCONCLUSIVE,
        )
        return [*out, unread.of("a")]
    after = audit.poll(run, [r.request_id for _, r in attempts]).events  # the refusals logged
    return [*out, judge_kept(before, after)]


def _storage(run: Run, command: list[str]) -> Observation:
    """(b): run ``audit.storage_probe_cmd`` once and judge what it prints."""
    chunks, problem = audit.read_raw(command, "audit.storage_probe_cmd")
    output = chunks[0][1] if chunks else None
    minimum = run.config.get("audit.min_retention_days")
    return judge_storage(output, problem, MIN_RETENTION_DAYS if minimum is None else int(minimum))


def judge_shown(observations: Sequence[Observation]) -> Observation:
    """(c): the store was judged by (a) or (b); otherwise the control defers to ATT-004.

    Only a PASS or FAIL of (a) or (b) counts: the growth detector alone shows nothing of
    the store's own rules, and an attempt or a command that could not be observed judged
    nothing.
    """
    judged = sorted({o.ref for o in observations if o.ref in ("a", "b") and o.status in _JUDGED})
    expected = "(a) audit.mgmt_methods or (b) audit.storage_probe_cmd judged"
    if not judged:
        observed = "neither judged: the store's immutability is ATT-004's (attestation)"
        return Observation("audit store", observed, expected, Status.SKIP).of("c")
    observed = " and ".join(f"({ref})" for ref in judged) + " judged"
    return Observation("audit store", observed, expected, Status.PASS).of("c")


_JUDGED = frozenset({Status.PASS, Status.FAIL, Status.WARN})


def _grown(run: Run) -> list[Observation]:
    """(run): the log before and after 50 audited calls (an extra detector, optional)."""
    before, after, sent = _growth(run)
    problem = before.problem or after.problem
    if problem:
        return [Observation("audit log growth", problem, "readable", Status.INCONCLUSIVE).of("run")]
    return judge_growth(before, after, sent)


@check(
    "AUDIT-006",
    probes=(
        Probe(
            "a",
            "audit.mgmt_methods: every principal's attempt refused (7 or 12), the events "
            "still present and unchanged",
            required=False,
            needs=("audit.mgmt_methods",),
        ),
        Probe(
            "b",
            "audit.storage_probe_cmd: locked or compliance-mode immutability, retention >= "
            "audit.min_retention_days",
            required=False,
            needs=("audit.storage_probe_cmd",),
        ),
        Probe(
            "c",
            "(a) or (b) judged the store; otherwise SKIP, deferring to ATT-004",
            needs=("audit.mgmt_methods", "audit.storage_probe_cmd"),
        ),
        Probe(
            "run",
            "the log read before the run's calls is an exact prefix of the log after",
            required=False,
            needs=("audit.source",),
        ),
    ),
)
def append_only(run: Run) -> Outcome:
    """The audit store is append-only (evidence-assisted).

    (a) With ``audit.mgmt_methods`` (the service's audit-management RPCs: delete, update),
    each is called by every principal with credentials (with mutations allowed, aimed at
    the last event the harness's own calls made: :func:`aim`): each attempt must be
    refused (PERMISSION_DENIED or UNIMPLEMENTED) and the events read before the attempts
    must all still be there, unchanged. (b) With ``audit.storage_probe_cmd`` (a read-only command
    printing the store's immutability settings as JSON: :func:`read_lock` lists the
    shapes), the store must be locked or in compliance mode, with retention of at least
    ``audit.min_retention_days`` (1). (c) One of them must have judged the store; neither
    declared: SKIP, ATT-004 (attestation) covers it. (run) With ``audit.source``, an extra
    detector: the log read before 50 audited calls must be an exact prefix of the log
    after, grown by one event per call.
    """
    mgmt = run.config.str_list("audit.mgmt_methods")
    command = run.config.str_list("audit.storage_probe_cmd")
    if not mgmt and not command:
        raise NotApplicable(
            "no audit.mgmt_methods and no audit.storage_probe_cmd declared: nothing the "
            "harness can observe shows the audit store immutable (ATT-004 covers it)"
        )
    observations = _grown(run) if run.config.get("audit.source") else []
    if mgmt:
        observations += _mgmt(run)
    if command:
        observations.append(_storage(run, command))
    observations.append(judge_shown(observations))
    return Outcome.from_observations(
        CATALOGUE["AUDIT-006"], observations, passed="no change to the audit store was accepted"
    )
