"""Canary PHI planted in requests, and the alerts the audit source raises.

The run's canaries (:mod:`harness.canary`) go into the request fields ``phi.field_paths``
names, once per run (:func:`planted_calls`): the REDACT controls search logs, audit events
and errors for them, and MIN-002 reads the records they seeded. A canary field that does
not take (no such string field in the request) is not planted, and a note says so.
:func:`sink_marks` notes each log sink as the canary calls go out (REDACT-001 then knows
which sinks they wrote); :func:`wait_alert` watches the audit source for an alert (AUDIT-003,
LIMIT-002).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from harness import audit
from harness.canary import CanarySet
from harness.channels import CallResult
from harness.outcome import Observation, Status
from harness.plans.calls import Call, bearer, send, set_path
from harness.plans.tokens import bases
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run
from harness.tokens import harness_key, sign


def canaries(run: Run) -> CanarySet:
    """The run's canaries (from its seed)."""
    return run.memo("canaries", lambda: CanarySet.for_seed(run.options.seed))


# -- planting canaries --------------------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    """One canary-bearing call: valid, invalid, denied, or a canary token."""

    kind: str
    probe: Call
    result: CallResult


def field_paths(
    methods: Iterable[str], table: Mapping[str, Iterable[str]]
) -> dict[str, list[tuple[str, str]]]:
    """``phi.field_paths`` per ``phi.methods`` entry: (category, path inside the request)."""
    methods = list(methods)
    paths: dict[str, list[tuple[str, str]]] = {}
    for category, entries in table.items():
        for entry in entries:
            method = next((m for m in methods if entry.startswith(m + ".")), None)
            if method is not None:
                paths.setdefault(method, []).append((category, entry[len(method) + 1 :]))
    return paths


def fill(cls: Any, template: str, values: Mapping[str, str]) -> tuple[bytes, list[str]]:
    """The template (JSON) with ``values`` set by path, and the paths that did not take."""
    msg = cls()
    json_format.Parse(template or "{}", msg)
    missed = [path for path, value in values.items() if not set_path(msg, path, value)]
    data: bytes = msg.SerializeToString()
    return data, missed


def _note(method: str, needs: str) -> Observation:
    return Observation(f"canaries in {method}", "not sent", needs, Status.SKIP)


@dataclass(frozen=True)
class Callers:
    """Who sends a method's canary calls: one the matrix allows, one it does not."""

    allowed: Principal | None
    denied: Principal | None


def method_plan(
    method: str,
    cls: Any,
    template: str,
    paths: list[tuple[str, str]],
    c: CanarySet,
    callers: Callers,
) -> tuple[list[tuple[str, Call]], list[Observation]]:
    """One method's canary calls (valid, invalid, denied) and notes on what did not take.

    A field whose path names no string field of the request is no canary: the note says
    so, and a method none of whose fields took is not called at all. The invalid call sets
    the first ``dates`` field to ``not-a-date-<N>``; without one it is not made.
    """
    values = {path: c.value(category) for category, path in paths}
    valid, missed = fill(cls, template, values)
    notes = [_note(method, f"a string field {path} in its request") for path in missed]
    took = {p: v for p, v in values.items() if p not in missed}
    if not took:
        return [], notes
    calls = [("valid", Call(f"canaries in {method}", method, (valid,), callers.allowed))]
    dates = [p for cat, p in paths if cat == "dates" and p in took]
    if dates:
        bad, _ = fill(cls, template, {**took, dates[0]: f"not-a-date-{c.nonce}"})
        label = f"invalid canary request to {method}"
        calls.append(("invalid", Call(label, method, (bad,), callers.allowed)))
    label = f"canaries in {method}, refused caller"
    calls.append(("denied", Call(label, method, (valid,), callers.denied)))
    return calls, notes


def _callers(run: Run, policy: Policy, method: str) -> Callers:
    allowed = policy.allowed(method) or frozenset()
    ok = next((run.principal(n) for n in sorted(allowed) if run.principal(n)), None)
    denied = next((p for n, p in sorted(run.principals.items()) if n not in allowed), None)
    return Callers(ok, denied)


def _canary_token(run: Run, c: CanarySet) -> list[tuple[str, Call]]:
    """One canary JWT (its payload carries ``N``) sent as a credential."""
    found, _ = bases(run)
    if not found:
        return []
    base = found[0]
    claims = {**base.token.claims, "note": c.value("mrn")}
    token = sign(claims, harness_key("ec"), "ES256", base.token.header)
    md = bearer(token, base.principal.presentation)
    call = Call("canary JWT as a credential", base.method.path, (base.request,), None, md)
    return [("token", call)]


def plan_canary_calls(run: Run, policy: Policy) -> tuple[list[tuple[str, Call]], list[Observation]]:
    """Every canary call to make, by kind, and notes on the methods that could not take one."""
    c = canaries(run)
    methods = run.config.str_list("phi.methods")
    paths = field_paths(methods, run.config.table("phi.field_paths"))
    templates = run.config.table("schema.request_templates")
    known = {m.path for m in policy.catalogue.methods}
    calls: list[tuple[str, Call]] = []
    notes: list[Observation] = []
    for method in methods:
        if method not in known:
            notes.append(_note(method, "a method in the descriptors"))
            continue
        if policy.is_write(method) and not policy.allow_mutations:
            notes.append(_note(method, "--hipaa-allow-mutations (it writes)"))
            continue
        if not paths.get(method):
            continue
        cls = policy.catalogue.message_class(policy.catalogue.method(method).input_type)
        template = templates.get(method)
        text = template if isinstance(template, str) else json.dumps(template or {})
        more, why = method_plan(method, cls, text, paths[method], c, _callers(run, policy, method))
        calls += more
        notes += why
    return calls + _canary_token(run, c), notes


def planted_calls(run: Run) -> tuple[list[Planted], list[Observation]]:
    """Calls carrying canaries in ``phi.field_paths``, made once per run.

    For each ``phi.methods`` entry: (a) valid, by a principal the matrix allows; (b)
    invalid (a date field set to ``not-a-date-<N>``); (c) denied, by a principal it does
    not allow. Writes need mutations. Plus one canary JWT (payload carrying ``N``) sent as a
    credential. The notes (SKIP observations) say what could not be planted and why.
    """

    def compute() -> tuple[list[Planted], list[Observation]]:
        policy = Policy.of(run)
        if policy is None:
            return [], [Observation("canary calls", "not sent", "descriptors", Status.SKIP)]
        calls, notes = plan_canary_calls(run, policy)
        sink_marks(run)  # before the calls: a sink they do not write proves nothing
        results = send(run, [p for _, p in calls])
        planted = [Planted(k, p, r) for (k, _), (p, r) in zip(calls, results, strict=True)]
        return planted, notes

    return run.memo("canary-calls", compute)


def sink_marks(run: Run) -> dict[str, dict[str, str] | None]:
    """Each ``logs.sinks`` entry's marks (:func:`harness.audit.marks`) before the canary calls.

    Taken once per run, as the canary calls go out; None for an entry that could not be
    read then.
    """

    def compute() -> dict[str, dict[str, str] | None]:
        out: dict[str, dict[str, str] | None] = {}
        for sink in run.config.get("logs.sinks") or []:
            got, problem = audit.marks(sink, "logs.sinks entry")
            out[str(sink)] = None if problem else got
        return out

    return run.memo("canary-sink-marks", compute)


# -- alerts -------------------------------------------------------------------------------

#: What :func:`alert_state` finds: an alert since the time asked, or one of unreadable time.
SEEN, UNDATED = "seen", "undated"


def _holds(node: Any, value: str) -> bool:
    """Whether ``value`` is ``node`` or any value nested in it (objects and lists)."""
    if isinstance(node, Mapping):
        return any(_holds(v, value) for v in node.values())
    if isinstance(node, list):
        return any(_holds(v, value) for v in node)
    return bool(node == value)


def alert_state(
    chunks: Iterable[tuple[str, bytes]], alert_type: str, since: dt.datetime, fields: audit.Fields
) -> str:
    """:data:`SEEN` if the raw audit text holds an ``alert_type`` event not older than ``since``.

    An event is an alert when any of its values, at any depth, is ``alert_type``; its time
    is read through ``audit.field_map`` (a dotted path may reach into it). An alert whose
    time cannot be read cannot be shown to follow ``since``: :data:`UNDATED` when only such
    alerts are there, ``""`` when there is none.
    """
    state = ""
    relevant = [(name, blob) for name, blob in chunks if alert_type.encode() in blob]
    for event in audit.parse_events(relevant, fields.kind).events:  # as audit.format reads
        if not _holds(event, alert_type):
            continue
        stamp = fields.time(event)
        if stamp is None:
            state = UNDATED
        elif stamp.at >= since:
            return SEEN
    return state


def alert_seen(
    chunks: Iterable[tuple[str, bytes]], alert_type: str, since: dt.datetime, fields: audit.Fields
) -> bool:
    """Whether :func:`alert_state` finds an ``alert_type`` event not older than ``since``."""
    return alert_state(chunks, alert_type, since, fields) == SEEN


def wait_alert(run: Run, alert_type: str, since: dt.datetime) -> tuple[bool, str]:
    """Whether an ``alert_type`` event appears (:func:`alert_state`), and a problem if any.

    The problem says the source cannot be read, or that the only alert found has a time
    that cannot be read (it cannot be shown to follow ``since``).
    """
    deadline = time.monotonic() + float(run.config.get("audit.alert_timeout_s", 30))
    source = run.config.get("audit.alert_source") or run.config.get("audit.source")
    fields = audit.Fields.of(run.config)
    while True:
        chunks, problem = audit.read_raw(source)
        if problem:
            return False, problem
        state = alert_state(chunks, alert_type, since, fields)
        if state == SEEN:
            return True, ""
        if time.monotonic() >= deadline:
            if state == UNDATED:
                return False, f"a {alert_type} event whose time cannot be read: not shown to be new"
            return False, ""
        time.sleep(0.1)
