"""Authorization controls (AUTHZ-*): the RBAC matrix, objects, writes, streams, break-glass.

IDs are swapped in request templates as JSON strings (an own ID for a foreign, sandbox or
wildcard one), and responses are judged by decoding them with the descriptors, so the
checks need no knowledge of the target's field names beyond its config.
"""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from harness import audit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check
from harness.oracles import refused
from harness.outcome import Observation, Outcome, Status
from harness.plans.calls import (
    Call,
    bearer,
    marked,
    named_id,
    policy_or_skip,
    send,
    set_path,
    strings_in,
    swap_id,
    template_text,
)
from harness.plans.tokens import authz_matrix_calls, run_nonce
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


# -- AUTHZ-001 --------------------------------------------------------------------------


@check("AUTHZ-001")
def rbac_matrix(run: Run) -> Outcome:
    """Deny-by-default RBAC matrix per method.

    One call per (declared method, principal) with its template. Pairs the matrix does not
    allow must get PERMISSION_DENIED and no data (OK or data is critical, UNAUTHENTICATED
    for a valid identity is FAIL (low)); allowed pairs must get neither PERMISSION_DENIED
    nor UNAUTHENTICATED; a method without a matrix entry is a "policy gap" FAIL.
    """
    control = CATALOGUE["AUTHZ-001"]
    if not run.config.table("auth.rbac_matrix"):
        return Outcome.skip(control, "no auth.rbac_matrix declared")
    policy = policy_or_skip(run, "AUTHZ-001")
    if isinstance(policy, Outcome):
        return policy
    calls = authz_matrix_calls(run)
    if isinstance(calls, str):
        return Outcome.skip(control, calls)
    observations = []
    gaps = {m.path for m in policy.protected() if policy.allowed(m.path) is None}
    for path in sorted(gaps):
        observations.append(
            Observation(
                f"matrix entry for {path}",
                "none",
                "an explicit entry (policy gap)",
                Status.FAIL,
                Severity.HIGH,
            )
        )
    for probe, result in calls:
        allowed = policy.allowed(probe.method)
        if allowed is None:
            continue
        if probe.principal is not None and probe.principal.name in allowed:
            ok = result.code not in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            )
            status = Status.PASS if ok else Status.FAIL
            if result.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                status = Status.INCONCLUSIVE
            observations.append(
                Observation(
                    f"{probe.label} (allowed) -> {probe.method}",
                    result.summary(),
                    "neither PERMISSION_DENIED nor UNAUTHENTICATED",
                    status,
                    Severity.HIGH,
                    result.request_id,
                )
            )
        else:
            observations.append(
                refused(
                    Call(f"{probe.label} (not allowed)", probe.method, probe.requests),
                    result,
                    expected=(grpc.StatusCode.PERMISSION_DENIED,),
                    low=(grpc.StatusCode.UNAUTHENTICATED,),
                )
            )
    return Outcome.from_observations(
        control, observations, passed="every (method, principal) pair matched the declared matrix"
    )


# -- AUTHZ-002 --------------------------------------------------------------------------


@check("AUTHZ-002")
def object_level(run: Run) -> Outcome:
    """Object-level authorization: another patient's records stay out of reach.

    For each principal with ``authz.foreign_ids``: every method it may call whose template
    names one of its ``authz.own_ids`` is called with each foreign ID instead, and with an
    ID that does not exist. Foreign IDs must get PERMISSION_DENIED (or, with
    ``authz.existence_hiding``, NOT_FOUND exactly like the nonexistent ID) and never data.
    Streaming and list methods are called with their template and every response is
    decoded: no foreign ID may appear in it. Writes are skipped unless mutations are
    allowed.
    """
    import json

    control = CATALOGUE["AUTHZ-002"]
    own, foreign = run.config.table("authz.own_ids"), run.config.table("authz.foreign_ids")
    if not foreign:
        return Outcome.skip(control, "no authz.foreign_ids (and authz.own_ids) declared")
    policy = policy_or_skip(run, "AUTHZ-002")
    if isinstance(policy, Outcome):
        return policy
    hiding = bool(run.config.get("authz.existence_hiding", False))
    templates = run.config.table("schema.request_templates")
    nonce = run_nonce(run)
    observations: list[Observation] = []
    pending: list[tuple[str, Call, set[str]]] = []
    for name, foreign_ids in foreign.items():
        principal = run.principal(name)
        if principal is None:
            observations.append(
                Observation(
                    f"objects of {name}", "not sent", f"auth.principals.{name}", Status.SKIP
                )
            )
            continue
        for m in policy.protected():
            if name not in (policy.allowed(m.path) or ()):
                continue
            if policy.is_write(m.path) and not policy.allow_mutations:
                continue
            template = templates.get(m.path)
            text = (
                template if isinstance(template, str) else json.dumps(template) if template else ""
            )
            named = [i for i in own.get(name, []) if json.dumps(i) in text]
            if named:
                mine = json.dumps(named[0])
                for fid in foreign_ids:
                    request = policy.catalogue.request_bytes(
                        m.path, text.replace(mine, json.dumps(fid))
                    )
                    pending.append(
                        (
                            "foreign",
                            Call(f"{name} asks for foreign {fid}", m.path, (request,), principal),
                            set(foreign_ids),
                        )
                    )
                request = policy.catalogue.request_bytes(
                    m.path, text.replace(mine, json.dumps(f"nonexistent-{nonce}"))
                )
                pending.append(
                    (
                        "absent",
                        Call(f"{name} asks for a nonexistent ID", m.path, (request,), principal),
                        set(),
                    )
                )
            elif m.server_streaming:
                request = policy.request(run, m.path)
                pending.append(
                    (
                        "listing",
                        Call(f"{name} lists", m.path, (request,), principal),
                        set(foreign_ids),
                    )
                )
    results = send(run, [p for _, p, _ in pending])
    absent = {
        p.method: r
        for (kind, _, _), (p, r) in zip(pending, results, strict=True)
        if kind == "absent"
    }
    for (kind, _, foreign_set), (probe, result) in zip(pending, results, strict=True):
        where = f"{probe.label} -> {probe.method}"
        if kind == "foreign":
            twin = absent.get(probe.method)
            hidden = (
                hiding
                and result.code == grpc.StatusCode.NOT_FOUND
                and twin is not None
                and (twin.code, twin.details) == (result.code, result.details)
            )
            if result.responses or result.code == grpc.StatusCode.OK:
                status, sev = Status.FAIL, Severity.CRITICAL
            elif result.code == grpc.StatusCode.PERMISSION_DENIED or hidden:
                status, sev = Status.PASS, None
            else:
                status, sev = Status.FAIL, Severity.HIGH
            expected = (
                "PERMISSION_DENIED (7)"
                + (", or NOT_FOUND (5) exactly as for a nonexistent ID" if hiding else "")
                + ", no data"
            )
            observations.append(
                Observation(where, result.summary(), expected, status, sev, result.request_id)
            )
        elif kind == "listing":
            cls = policy.catalogue.message_class(policy.catalogue.method(probe.method).output_type)
            leaked: set[str] = set()
            undecodable = 0
            for blob in result.responses:
                try:
                    decoded = cls.FromString(blob)
                except DecodeError:  # undecodable: no evidence either way; counted below
                    undecodable += 1
                    continue
                leaked |= strings_in(decoded) & foreign_set
            status = Status.FAIL if leaked else Status.INCONCLUSIVE if undecodable else Status.PASS
            observed = result.summary() + (
                f"; foreign IDs returned: {', '.join(sorted(leaked))}" if leaked else ""
            )
            if undecodable:
                observed += (
                    f"; {undecodable} response(s) did not decode as {cls.DESCRIPTOR.full_name}"
                )
            observations.append(
                Observation(
                    where,
                    observed,
                    "no foreign ID in any response",
                    status,
                    Severity.CRITICAL if leaked else None,
                    result.request_id,
                )
            )
    if not pending and not observations:
        return Outcome.skip(
            control, "no allowed method names an own ID in its template, and none lists records"
        )
    return Outcome.from_observations(control, observations, passed="no foreign record reachable")


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
                    Call("least-privileged attempts a denied write", w.path, ()),
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
    probes: list[tuple[str, Call, set[str]]] = []
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
                        Call(
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
                        Call(
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
                        Call(
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
                Call(
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
