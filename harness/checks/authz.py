"""Stream, mutation and break-glass controls (AUTHN-009, AUTHZ-003, AUTHZ-004, AUTHZ-005).

IDs are swapped in request templates as JSON strings (an own ID for a foreign, sandbox or
wildcard one), and responses are judged by decoding them with the descriptors, so the
checks need no knowledge of the target's field names beyond its config.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from harness import audit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check, warmup
from harness.checks._calls import (
    Probe,
    bearer,
    marked,
    named_id,
    policy_or_skip,
    refused,
    send,
    set_path,
    strings_in,
    swap_id,
    template_text,
)
from harness.checks.access import Base, bases
from harness.outcome import Observation, Outcome, Status
from harness.policy import Policy
from harness.principals import principals_from
from harness.run import Run


def _foreign_ids_in(policy: Policy, path: str, result: CallResult, foreign: set[str]) -> set[str]:
    cls = policy.catalogue.message_class(policy.catalogue.method(path).output_type)
    leaked: set[str] = set()
    for blob in result.responses:
        try:
            leaked |= strings_in(cls.FromString(blob)) & foreign
        except DecodeError:
            continue
    return leaked


# -- AUTHN-009 --------------------------------------------------------------------------


@check("AUTHN-009")
def streams_end_at_expiry(run: Run) -> Outcome:
    """Long-lived streams end when the credential expires (automatic logoff).

    For each ``auth.stream_methods`` entry, a principal allowed on it opens the stream
    (``auth.stream_templates``, else the request template) with a token that has a few
    seconds of life left: minted with the issuer key, or its own token when its remaining
    life is within ``auth.max_wait_s``. Bidi streams get the template again every second.
    The stream must end UNAUTHENTICATED by ``exp + auth.clock_skew_s +
    auth.stream_grace_s`` and deliver nothing after ``exp + skew``, as the client sees it
    less the stream's own transit time (twice its first message's latency, 0.25-1 s).
    Most of it is waiting for the token to expire, so it starts in the background once
    the run's other early work (scan, input generation) is done.
    """
    return _expiring_streams(run)


@warmup("AUTHN-009", late=True)
def _expiring_streams(run: Run) -> Outcome:
    return run.memo("authn-009", lambda: _open_expiring_streams(run))


def _open_expiring_streams(run: Run) -> Outcome:
    control = CATALOGUE["AUTHN-009"]
    methods = run.config.str_list("auth.stream_methods")
    if not methods:
        return Outcome.skip(control, "no auth.stream_methods declared")
    policy = policy_or_skip(run, "AUTHN-009")
    if isinstance(policy, Outcome):
        return policy
    found, why = bases(run)
    observations = []
    for path in methods:
        allowed = policy.allowed(path) or frozenset()
        base = next((b for b in found if b.principal.name in allowed and b.accepted), None)
        if base is None:
            observations.append(
                Observation(
                    path, "not sent", "an allowed principal with a working JWT", Status.SKIP
                )
            )
            continue
        first = _expiring_stream(run, policy, path, base)
        if first.marginal:
            # Messages less than a second past the line, or an end that missed the deadline
            # with nothing late, are what a loaded host does to an honest server too: they
            # count only when a second stream, with a fresh token, fails again.
            again = _expiring_stream(run, policy, path, base)
            note = f"; a first stream showed {first.observation.observed}"
            first = again if again.observation.status is not Status.PASS else again.noting(note)
        observations.append(first.observation)
    if not observations:
        return Outcome.skip(control, why)
    return Outcome.from_observations(
        control, observations, passed="streams end when their credential expires"
    )


@dataclass(frozen=True)
class _Stream:
    """One expiring stream's verdict, and whether it was within a loaded host's noise."""

    observation: Observation
    marginal: bool = False

    def noting(self, note: str) -> _Stream:
        return _Stream(replace(self.observation, observed=self.observation.observed + note))


def _expiring_stream(run: Run, policy: Policy, path: str, base: Base) -> _Stream:
    skew = int(run.config.get("auth.clock_skew_s", 60))
    grace = int(run.config.get("auth.stream_grace_s", 60))
    max_wait = float(run.config.get("auth.max_wait_s", 120))
    keys = run.issuer_keys()
    now = time.time()
    if keys.private_key is not None:
        token, exp = base.expiring(keys, 1)
    else:
        exp = int(base.token.claims.get("exp", 0))
        token = base.principal.token()
    wait = exp + skew + grace - now
    if wait > max_wait:
        return _Stream(
            Observation(
                path,
                f"token expires in {exp - now:.0f} s",
                f"a token that expires within auth.max_wait_s ({max_wait:g} s), "
                "or auth.issuer_private_key",
                Status.SKIP,
            )
        )
    method = policy.catalogue.method(path)
    request = policy.catalogue.request_bytes(
        path, template_text(run, path, "auth.stream_templates")
    )
    requests: Any = (request,)
    if method.client_streaming:
        requests = _every_second(request, wait)
    started = time.time()
    result = run.call(
        path, requests, extra_metadata=bearer(token), timeout=wait + 1, max_responses=100_000
    )
    # Arrival times are the client's: a message the server sent just before exp + skew can
    # land just after it on a loaded host. Allow for the transit time this stream showed
    # on its first message (0.25 s to 1 s).
    transit = min(1.0, max(0.25, 2 * result.arrivals[0])) if result.arrivals else 0.25
    line = exp + skew + transit
    past = [started + t - line for t in result.arrivals if started + t > line]
    where = f"{path} with a token expiring in {exp - now:.1f} s ({base.principal.name})"
    expected = (
        f"ends UNAUTHENTICATED (16) within exp + {skew + grace} s, "
        f"nothing after exp + {skew} s (+ {transit:.2f} s transit)"
    )
    observed = f"{result.summary()}, {len(past)} message(s) after exp + skew"
    if past:
        observed += f" (the last {max(past):.2f} s past the line)"
    ended = result.code == grpc.StatusCode.UNAUTHENTICATED
    deadline = result.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # Late messages bunched within a second of the line, on a stream that did end, are what
    # a starved client thread or server makes of an honest cadence (seen in CI: three
    # messages, the last 0.10 s past the line): they count only if a second stream agrees.
    marginal = (ended and max(past, default=0) < 1.0) or (deadline and not past)
    if past or deadline:
        status, sev = Status.FAIL, Severity.HIGH
    elif ended:
        status, sev = Status.PASS, None
    elif result.code == grpc.StatusCode.OK and time.time() < exp:
        status, sev = Status.INCONCLUSIVE, None
        observed += (
            " (the stream ended by itself before the token expired: "
            "use a long-lived auth.stream_templates entry)"
        )
    else:
        status, sev = Status.FAIL, Severity.MEDIUM
    observation = Observation(where, observed, expected, status, sev, result.request_id)
    return _Stream(observation, marginal=status is Status.FAIL and marginal)


def _every_second(request: bytes, seconds: float) -> Iterator[bytes]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield request
        time.sleep(1.0)


# -- AUTHZ-003 --------------------------------------------------------------------------


@check("AUTHZ-003")
def no_escalation_by_tampering(run: Run) -> Outcome:
    """No escalation or side effects from tampered or denied requests.

    Needs ``--hipaa-allow-mutations`` and ``authz.sandbox_ids``; only sandbox records are
    touched. A reader (``auditor``, else the first principal that can read) snapshots a
    sandbox record. The ``least-privileged`` principal then attempts each write the
    matrix denies it: PERMISSION_DENIED, and the record must read back byte-identical.
    Every principal allowed to write then sends the write with each
    ``authz.sensitive_fields`` path set to a harness value: it must be refused
    (INVALID_ARGUMENT or PERMISSION_DENIED) or the stored value must not be the injected
    one.
    """
    control = CATALOGUE["AUTHZ-003"]
    if not run.config.get("safety.allow_mutations"):
        return Outcome.skip(
            control, "needs --hipaa-allow-mutations (or safety.allow_mutations = true)"
        )
    sandbox = run.config.str_list("authz.sandbox_ids")
    if not sandbox:
        return Outcome.skip(control, "no authz.sandbox_ids: no record may be changed")
    policy = policy_or_skip(run, "AUTHZ-003")
    if isinstance(policy, Outcome):
        return policy
    known = sandbox + [i for ids in run.config.table("authz.own_ids").values() for i in ids]
    writes = [
        m
        for m in policy.protected()
        if policy.is_write(m.path) and named_id(template_text(run, m.path), known)
    ]
    reads = [
        m
        for m in policy.protected()
        if not policy.is_write(m.path)
        and not m.server_streaming
        and not m.client_streaming
        and named_id(template_text(run, m.path), known)
    ]
    if not writes or not reads:
        return Outcome.skip(
            control,
            "needs a write and a unary read method whose templates name an own or sandbox ID",
        )
    read = reads[0]
    reader = run.principal("auditor") or next(
        (run.principal(n) for n in sorted(policy.allowed(read.path) or ()) if run.principal(n)),
        None,
    )
    if reader is None:
        return Outcome.skip(control, f"no principal may call {read.path} to read records back")
    sid = sandbox[0]
    read_request = policy.catalogue.request_bytes(
        read.path,
        swap_id(
            template_text(run, read.path), named_id(template_text(run, read.path), known) or "", sid
        ),
    )

    def snapshot() -> CallResult:
        return run.call(read.path, [read_request], principal=reader)

    nonce = f"hipaa-{run.options.seed:08x}"
    sensitive = run.config.str_list("authz.sensitive_fields")
    least = run.principal("least-privileged")
    observations = []
    for w in writes:
        text = swap_id(
            template_text(run, w.path), named_id(template_text(run, w.path), known) or "", sid
        )
        allowed = policy.allowed(w.path) or frozenset()
        if least is not None and least.name not in allowed:
            before = snapshot()
            denied_write = marked(
                policy.catalogue.message_class(w.input_type), text, nonce, set(known)
            )
            attempt = run.call(w.path, [denied_write], principal=least)
            after = snapshot()
            same = before.responses == after.responses and before.code == after.code
            observations.append(
                refused(
                    Probe("least-privileged attempts a denied write", w.path, ()),
                    attempt,
                    expected=(grpc.StatusCode.PERMISSION_DENIED,),
                    low=(),
                )
            )
            observations.append(
                Observation(
                    f"{sid} read back by {reader.name} after the denied write",
                    "unchanged" if same else "changed",
                    "byte-identical",
                    Status.PASS if same else Status.FAIL,
                    Severity.CRITICAL,
                    after.request_id,
                )
            )
        for name in sorted(allowed):
            writer = run.principal(name)
            if writer is None:
                continue
            for path in sensitive:
                cls = policy.catalogue.message_class(w.input_type)
                msg = cls()
                json_format.Parse(text, msg)
                if not set_path(msg, path, nonce):
                    continue
                result = run.call(w.path, [msg.SerializeToString()], principal=writer)
                back = snapshot()
                stored = any(
                    nonce
                    in strings_in(policy.catalogue.message_class(read.output_type).FromString(b))
                    for b in back.responses
                )
                ok = (
                    result.code
                    in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)
                    or not stored
                )
                observations.append(
                    Observation(
                        f"{name} sets {path} -> {w.path}",
                        result.summary() + ("; the injected value was stored" if stored else ""),
                        "refused (3 or 7), or the value not stored",
                        Status.PASS if ok else Status.FAIL,
                        Severity.CRITICAL,
                        result.request_id,
                    )
                )
    if not observations:
        return Outcome.skip(
            control, "no denied write for least-privileged and no sensitive field to inject"
        )
    return Outcome.from_observations(
        control, observations, passed="no write across owners, no partial write"
    )


# -- AUTHZ-004 --------------------------------------------------------------------------


@check("AUTHZ-004")
def per_message_authorization(run: Run) -> Outcome:
    """Per-message authorization on streams.

    For each ``authz.stream_methods`` entry and each principal with ``authz.own_ids`` and
    ``authz.foreign_ids`` allowed on it: a client-streaming or bidi call sends own, foreign,
    own; no foreign ID may come back and the stream must end PERMISSION_DENIED (or carry a
    per-message error under ``authz.per_message_errors``). A server stream is subscribed to
    a foreign ID and to the wildcard ``*``: PERMISSION_DENIED with zero messages.
    """
    control = CATALOGUE["AUTHZ-004"]
    methods = run.config.str_list("authz.stream_methods")
    own, foreign = run.config.table("authz.own_ids"), run.config.table("authz.foreign_ids")
    if not methods or not foreign:
        return Outcome.skip(
            control, "needs authz.stream_methods, authz.own_ids and authz.foreign_ids"
        )
    policy = policy_or_skip(run, "AUTHZ-004")
    if isinstance(policy, Outcome):
        return policy
    per_message = bool(run.config.get("authz.per_message_errors", False))
    observations = []
    probes: list[tuple[str, Probe, set[str]]] = []
    for name, foreign_ids in foreign.items():
        principal = run.principal(name)
        mine = own.get(name, [])
        if principal is None or not mine:
            continue
        for path in methods:
            if name not in (policy.allowed(path) or ()):
                continue
            text = template_text(run, path)
            named = named_id(text, mine)
            if named is None:
                observations.append(
                    Observation(
                        f"{path} as {name}",
                        "not sent",
                        "a template naming one of its own IDs",
                        Status.SKIP,
                    )
                )
                continue
            method = policy.catalogue.method(path)
            build = policy.catalogue.request_bytes
            if method.client_streaming:
                msgs = (
                    build(path, text),
                    build(path, swap_id(text, named, foreign_ids[0])),
                    build(path, text),
                )
                probes.append(
                    (
                        "stream",
                        Probe(
                            f"{name} sends own, foreign {foreign_ids[0]}, own",
                            path,
                            msgs,
                            principal,
                        ),
                        set(foreign_ids),
                    )
                )
            else:
                probes.append(
                    (
                        "subscribe",
                        Probe(
                            f"{name} subscribes to foreign {foreign_ids[0]}",
                            path,
                            (build(path, swap_id(text, named, foreign_ids[0])),),
                            principal,
                        ),
                        set(foreign_ids),
                    )
                )
                probes.append(
                    (
                        "subscribe",
                        Probe(
                            f"{name} subscribes to the wildcard",
                            path,
                            (build(path, swap_id(text, named, "*")),),
                            principal,
                        ),
                        set(foreign_ids),
                    )
                )
    for (kind, _, foreign_set), (probe, result) in zip(
        probes, send(run, [p for _, p, _ in probes]), strict=True
    ):
        leaked = _foreign_ids_in(policy, probe.method, result, foreign_set)
        where = f"{probe.label} -> {probe.method}"
        if leaked:
            observations.append(
                Observation(
                    where,
                    f"{result.summary()}; foreign IDs delivered: {', '.join(sorted(leaked))}",
                    "no foreign data",
                    Status.FAIL,
                    Severity.CRITICAL,
                    result.request_id,
                )
            )
        elif kind == "stream":
            ended = result.code == grpc.StatusCode.PERMISSION_DENIED or (
                per_message and result.code == grpc.StatusCode.OK
            )
            observations.append(
                Observation(
                    where,
                    result.summary(),
                    "the foreign message refused: stream ends PERMISSION_DENIED (7)",
                    Status.PASS if ended else Status.FAIL,
                    Severity.HIGH,
                    result.request_id,
                )
            )
        else:
            observations.append(
                refused(
                    probe,
                    result,
                    expected=(grpc.StatusCode.PERMISSION_DENIED,),
                    low=(grpc.StatusCode.NOT_FOUND,),
                )
            )
    if not observations:
        return Outcome.skip(
            control, "no principal with own and foreign IDs may call an authz.stream_methods entry"
        )
    return Outcome.from_observations(
        control, observations, passed="every stream message authorized on its own"
    )


# -- AUTHZ-005 --------------------------------------------------------------------------


@check("AUTHZ-005")
def break_glass(run: Run) -> Outcome:
    """Emergency (break-glass) access constrained and flagged.

    With ``auth.fixtures.break_glass``: each ``authz.emergency_methods`` entry, called for
    a record outside the normal scope (a foreign ID), must succeed; other methods called
    for a foreign record must get PERMISSION_DENIED; and every emergency call must have an
    audit event with the emergency marker true and a non-empty reason
    (``audit.field_map.emergency`` / ``reason``). SKIP when no break-glass mechanism is
    declared (ATT-006 must then cover the procedure); INCONCLUSIVE when the audit source
    cannot be read.
    """
    control = CATALOGUE["AUTHZ-005"]
    fixtures = principals_from(run.config.table("auth.fixtures"), "config")
    emergency = run.config.str_list("authz.emergency_methods")
    if "break_glass" not in fixtures or not emergency:
        return Outcome.skip(
            control,
            "no break-glass mechanism declared (auth.fixtures.break_glass, "
            "authz.emergency_methods); ATT-006 must cover it",
        )
    policy = policy_or_skip(run, "AUTHZ-005")
    if isinstance(policy, Outcome):
        return policy
    token = fixtures["break_glass"].token()
    own = [i for ids in run.config.table("authz.own_ids").values() for i in ids]
    foreign = [i for ids in run.config.table("authz.foreign_ids").values() for i in ids]
    if not foreign:
        return Outcome.skip(control, "needs authz.foreign_ids: a record outside the normal scope")
    probes = []
    for m in policy.protected():
        if policy.is_write(m.path) and not policy.allow_mutations:
            continue
        text = template_text(run, m.path)
        named = named_id(text, own)
        if named is None:
            continue
        request = policy.catalogue.request_bytes(m.path, swap_id(text, named, foreign[0]))
        kind = "emergency" if m.path in emergency else "other"
        probes.append(
            (
                kind,
                Probe(
                    f"break-glass {kind} call for {foreign[0]}",
                    m.path,
                    (request,),
                    None,
                    bearer(token),
                ),
            )
        )
    results = send(run, [p for _, p in probes])
    observations = []
    emergency_ids = []
    for (kind, _), (probe, result) in zip(probes, results, strict=True):
        where = f"{probe.label} -> {probe.method}"
        if kind == "emergency":
            ok = result.code not in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            )
            observations.append(
                Observation(
                    where,
                    result.summary(),
                    "allowed",
                    Status.PASS if ok else Status.FAIL,
                    Severity.MEDIUM,
                    result.request_id,
                )
            )
            if ok:
                emergency_ids.append(result.request_id)
        else:
            observations.append(
                refused(probe, result, expected=(grpc.StatusCode.PERMISSION_DENIED,), low=())
            )
    if emergency_ids:
        events, problem = audit.wait_for(run, emergency_ids)
        for rid in emergency_ids:
            evs = events.get(rid, [])
            if problem or not evs:
                observations.append(
                    Observation(
                        f"audit event for {rid}",
                        problem or "none within audit.delivery_timeout_s",
                        "an event flagged emergency with a reason",
                        Status.INCONCLUSIVE,
                        request_id=rid,
                    )
                )
                continue
            flagged = all(
                audit.field(run, e, "emergency") is True
                and str(audit.field(run, e, "reason") or "").strip()
                for e in evs
            )
            observations.append(
                Observation(
                    f"audit event for {rid}",
                    "flagged with a reason"
                    if flagged
                    else "not flagged as emergency, or no reason",
                    "emergency marker true and a non-empty reason",
                    Status.PASS if flagged else Status.FAIL,
                    Severity.HIGH,
                    rid,
                )
            )
    return Outcome.from_observations(
        control,
        observations,
        passed="break-glass limited to emergency methods and flagged in the audit log",
    )
