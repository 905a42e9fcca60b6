"""Canary PHI planted in requests, and the alerts the audit source raises.

The run's canaries (:mod:`harness.canary`) go into the request fields ``phi.field_paths``
names, once per run (:func:`planted_calls`): the REDACT controls search logs, audit events
and errors for them, and MIN-002 reads the records they seeded. :func:`wait_alert` watches
the audit source for an alert (AUDIT-003, LIMIT-002).
"""

from __future__ import annotations

import datetime as dt
import json
import time
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


def planted_calls(run: Run) -> tuple[list[Planted], list[Observation]]:
    """Calls carrying canaries in ``phi.field_paths``, made once per run.

    For each ``phi.methods`` entry: (a) valid, by a principal the matrix allows; (b)
    invalid (a date field set to ``not-a-date-<N>``); (c) denied, by a principal it does
    not allow. Writes need mutations. Plus one canary JWT (payload carrying ``N``) sent as a
    credential.
    """

    def compute() -> tuple[list[Planted], list[Observation]]:
        notes: list[Observation] = []
        policy = Policy.of(run)
        if policy is None:
            return [], [Observation("canary calls", "not sent", "descriptors", Status.SKIP)]
        c = canaries(run)
        paths: dict[str, list[tuple[str, str]]] = {}
        methods = run.config.str_list("phi.methods")
        for category, entries in run.config.table("phi.field_paths").items():
            for entry in entries:
                method = next((m for m in methods if entry.startswith(m + ".")), None)
                if method is not None:
                    paths.setdefault(method, []).append((category, entry[len(method) + 1 :]))
        templates = run.config.table("schema.request_templates")
        probes: list[tuple[str, Call]] = []
        for method in methods:
            if method not in {m.path for m in policy.catalogue.methods}:
                notes.append(
                    Observation(
                        f"canaries in {method}",
                        "not sent",
                        "a method in the descriptors",
                        Status.SKIP,
                    )
                )
                continue
            if policy.is_write(method) and not policy.allow_mutations:
                notes.append(
                    Observation(
                        f"canaries in {method}",
                        "not sent",
                        "--hipaa-allow-mutations (it writes)",
                        Status.SKIP,
                    )
                )
                continue
            info = policy.catalogue.method(method)
            cls = policy.catalogue.message_class(info.input_type)
            template = templates.get(method)
            text = template if isinstance(template, str) else json.dumps(template or {})

            def build(overrides: dict[str, str], cls: Any = cls, text: str = text) -> bytes:
                msg = cls()
                json_format.Parse(text, msg)
                for path, value in overrides.items():
                    set_path(msg, path, value)
                data: bytes = msg.SerializeToString()
                return data

            fields = {path: c.value(category) for category, path in paths.get(method, [])}
            if not fields:
                continue
            allowed = policy.allowed(method) or frozenset()
            ok = next((run.principal(n) for n in sorted(allowed) if run.principal(n)), None)
            denied = next((p for n, p in sorted(run.principals.items()) if n not in allowed), None)
            probes.append(("valid", Call(f"canaries in {method}", method, (build(fields),), ok)))
            dates = [p for cat, p in paths.get(method, []) if cat == "dates"]
            if dates:
                bad = {**fields, dates[0]: f"not-a-date-{c.nonce}"}
                probes.append(
                    (
                        "invalid",
                        Call(f"invalid canary request to {method}", method, (build(bad),), ok),
                    )
                )
            probes.append(
                (
                    "denied",
                    Call(f"canaries in {method}, refused caller", method, (build(fields),), denied),
                )
            )
        found, _ = bases(run)
        if found:
            base = found[0]
            claims = {**base.token.claims, "note": c.value("mrn")}  # the payload carries N
            token = sign(claims, harness_key("ec"), "ES256", base.token.header)
            probes.append(
                (
                    "token",
                    Call(
                        "canary JWT as a credential",
                        base.method.path,
                        (base.request,),
                        None,
                        bearer(token),
                    ),
                )
            )
        results = send(run, [p for _, p in probes])
        return [
            Planted(kind, p, r) for (kind, _), (p, r) in zip(probes, results, strict=True)
        ], notes

    return run.memo("canary-calls", compute)


# -- alerts -------------------------------------------------------------------------------


def rfc3339(value: Any) -> dt.datetime | None:
    """``value`` as a datetime if it is an RFC 3339 timestamp with a zone, else None."""
    if not isinstance(value, str) or not ("Z" in value or "+" in value[10:] or "-" in value[10:]):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def wait_alert(run: Run, alert_type: str, since: dt.datetime) -> tuple[bool, str]:
    """Whether an ``alert_type`` event appears; a problem when the source cannot be read."""
    deadline = time.monotonic() + float(run.config.get("audit.alert_timeout_s", 30))
    source = run.config.get("audit.alert_source") or run.config.get("audit.source")
    while True:
        chunks, problem = audit.read_raw(source)
        if problem:
            return False, problem
        for _, blob in chunks:
            for line in blob.decode("utf-8", "replace").split("\n"):
                if alert_type not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                ts = rfc3339(audit.field(run, event, "timestamp"))
                if alert_type in event.values() and (ts is None or ts >= since):
                    return True, ""
        if time.monotonic() >= deadline:
            return False, ""
        time.sleep(0.1)
