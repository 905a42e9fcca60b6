"""Data minimisation controls (MIN-*).

Responses are decoded with the descriptors and judged field by field against the declared
allowlists (``min.role_field_allowlist``), masks and token patterns. Each control plans its
calls, sends them, and judges the recorded answers with pure functions (``judge_*``):
status codes and decoded payloads decide, never a stack's error strings. An answer with
nothing to judge (no record, or bytes that do not decode as the declared type) is never a
PASS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from harness import audit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult, code_text, invoke
from harness.checks import check
from harness.descriptors import MethodCatalogue, MethodInfo, Records, is_repeated, record_shape
from harness.oracles import PERMISSION_DENIED, lost, refused
from harness.outcome import (
    NotApplicable,
    Observation,
    Outcome,
    Probe,
    Status,
)
from harness.plans.calls import (
    Call,
    marked,
    named_id,
    policy_or_skip,
    read_methods,
    send,
    strings_in,
    swap_id,
    template_text,
)
from harness.plans.canaries import canaries, planted_calls
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run

OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


# -- decoding: what the judges read -------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """The response messages of one call, as the declared output type reads them.

    Attributes:
        messages: Every message that decoded (an empty message counts: it is an answer).
        undecodable: How many did not: a parse error, or bytes that hold no field of the
            declared type (only unknown fields), so the judge cannot read them.
    """

    messages: tuple[Any, ...]
    undecodable: int


def decode(cls: Any, blobs: Iterable[bytes]) -> Decoded:
    """``blobs`` decoded as ``cls``, counting those that do not read as one."""
    messages, bad = [], 0
    for blob in blobs:
        try:
            message = cls.FromString(blob)
        except DecodeError:
            bad += 1
            continue
        if blob and not message.ListFields():
            bad += 1  # bytes, but not one field this type declares
            continue
        messages.append(message)
    return Decoded(tuple(messages), bad)


def populated(message: Any) -> set[str]:
    """The names of the fields set in ``message`` (its top level)."""
    return {fd.name for fd, _ in message.ListFields()}


def records_in(message: Any, record_type: str | Collection[str]) -> list[Any]:
    """Every message of ``record_type`` (a full name, or several) in ``message``.

    ``message`` itself, or nested at any depth in a wrapper (``{data: {patient: ...}}``).
    """
    types = {record_type} if isinstance(record_type, str) else set(record_type)
    if message.DESCRIPTOR.full_name in types:
        return [message]
    found: list[Any] = []
    for fd, value in message.ListFields():
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        for v in value if is_repeated(fd) else [value]:
            found += records_in(v, types)
    return found


def _named(record_type: str | Collection[str]) -> str:
    return record_type if isinstance(record_type, str) else " or ".join(sorted(record_type))


def _carried(records: Records | None, message: Any) -> list[Any]:
    """The records in one response: where ``records`` says, else the response itself."""
    return [message] if records is None else records.records(message)


def _undecodable(decoded: Decoded, cls: Any) -> str:
    return f"{decoded.undecodable} response(s) not decodable as {cls.DESCRIPTOR.full_name}"


def record_types(
    catalogue: MethodCatalogue,
    mask_methods: Iterable[str],
    reads: Iterable[MethodInfo],
    declared: Collection[str] = (),
) -> frozenset[str]:
    """The record messages the allowlists describe (MIN-002/003 judge every one found).

    ``schema.record_types`` when declared; else the record the first mask method's
    responses carry, else the first unary read's (:func:`~harness.descriptors.record_shape`:
    ``LabOrder`` in ``GetLabOrderResponse{order}``, not the wrapper). Empty when there is
    neither.
    """
    if declared:
        return frozenset(declared)
    unary = [m.path for m in reads if not m.server_streaming]
    for path in [*mask_methods, *unary]:
        try:
            return frozenset({record_shape(catalogue, path).record_type})
        except KeyError:
            continue
    return frozenset()


def _declared_records(run: Run) -> list[str]:
    return run.config.str_list("schema.record_types")


def _record_setup(run: Run, control_id: str) -> tuple[Policy, frozenset[str]]:
    """The policy and the record types MIN-002/003 judge; NotApplicable says why not."""
    policy = policy_or_skip(run)
    reads = [m for m in policy.protected() if not policy.is_write(m.path)]
    masks = run.config.table("min.mask_methods")
    records = record_types(policy.catalogue, masks, reads, _declared_records(run))
    if not records:
        raise NotApplicable("no read method to take the record type from")
    return policy, records


# -- MIN-001 ------------------------------------------------------------------------------

MIN_001_PROBES = (
    Probe("a", "a mask of two fields the role may see", needs=("min.mask_methods",)),
    Probe("b", "a mask naming a field the role may not see", needs=("min.role_field_allowlist",)),
    Probe("c", "the unknown path does_not_exist", needs=("min.mask_methods",)),
    Probe("d", "the mask '*'", needs=("min.role_field_allowlist",)),
    Probe("e", "an empty mask", needs=("min.role_field_allowlist",)),
)


@dataclass(frozen=True)
class MaskCase:
    """One mask sent by one principal: its probe, the call, and the fields it may return.

    ``records`` says where the method's responses carry the record the mask applies to
    (:func:`~harness.descriptors.record_shape`); ``None``: each response is the record.
    """

    ref: str
    call: Call
    limit: frozenset[str]
    records: Records | None = None


def mask_cases(
    fields: Sequence[str], allowlist: Iterable[str] | None, always: Iterable[str]
) -> list[tuple[str, str, list[str], frozenset[str]]]:
    """(probe, label, mask paths, fields the answer may hold) for one role on one method.

    Without an allowlist for the role only (a) and (c) are planned: (b) needs a field the
    role may not see, and (d) and (e) are judged against the role's allowlist.
    """
    known = allowlist is not None
    allowed = frozenset(fields if allowlist is None else allowlist)
    always = frozenset(always)
    visible = [f for f in fields if f in allowed]
    hidden = [f for f in fields if f not in allowed]
    cases: list[tuple[str, str, list[str], frozenset[str]]] = [
        ("a", "(a) two visible fields", visible[:2], frozenset(visible[:2]) | always)
    ]
    if known and hidden:
        cases.append(("b", "(b) a field the role may not see", [hidden[0]], allowed | always))
    cases.append(("c", "(c) unknown path", ["does_not_exist"], frozenset()))
    if known:
        cases.append(("d", "(d) '*'", ["*"], allowed | always))
        cases.append(("e", "(e) empty mask", [], allowed | always))
    return cases


def masked_request(cls: Any, template: str, mask_field: str, paths: Sequence[str]) -> bytes:
    """The request template with its FieldMask ``mask_field`` set to ``paths``."""
    msg = cls()
    json_format.Parse(template or "{}", msg)
    mask = getattr(msg, mask_field)
    mask.Clear()
    mask.paths.extend(paths)
    data: bytes = msg.SerializeToString()
    return data


def record_fields(catalogue: MethodCatalogue, records: Records) -> list[str]:
    """The field names of the record type ``records`` points at (what a mask names).

    AIP-157: a read mask's paths name the record's fields, so ``GetLabOrderResponse{order}``
    is masked as a ``LabOrder``.
    """
    return [f.name for f in catalogue.message_class(records.record_type).DESCRIPTOR.fields]


def mask_plan(run: Run, policy: Policy) -> list[MaskCase]:
    """Every mask case: each ``min.mask_methods`` entry, each principal the matrix allows."""
    allowlists = run.config.table("min.role_field_allowlist")
    always = run.config.str_list("min.always_returned")
    plan = []
    for path, mask_field in run.config.table("min.mask_methods").items():
        try:
            method = policy.catalogue.method(path)
        except KeyError:
            continue
        shape = record_shape(policy.catalogue, path, _declared_records(run))
        fields = record_fields(policy.catalogue, shape)
        cls = policy.catalogue.message_class(method.input_type)
        text = template_text(run, path)
        for name in sorted(policy.allowed(path) or ()):
            principal = run.principal(name)
            if principal is None:
                continue
            for ref, label, paths, limit in mask_cases(fields, allowlists.get(name), always):
                request = masked_request(cls, text, str(mask_field), paths)
                call = Call(f"{name}: {label} {paths}", path, (request,), principal)
                plan.append(MaskCase(ref, call, limit, shape))
    return plan


def judge_unknown_path(case: MaskCase, result: CallResult, *, omit_unknown: bool) -> Observation:
    """(c) ``does_not_exist``: INVALID_ARGUMENT, or OK under ``unknown_path_policy=omit``."""
    expected = code_text(INVALID_ARGUMENT) + (" or omitted" if omit_unknown else "")
    if result.code == INVALID_ARGUMENT or (omit_unknown and result.code == OK):
        status = Status.PASS
    elif lost(result) and not result.responses:
        status = Status.INCONCLUSIVE
    else:
        status = Status.FAIL
    where = f"{case.call.label} -> {case.call.method}"
    return Observation(
        where, result.summary(), expected, status, Severity.MEDIUM, result.request_id
    ).of(case.ref)


def judge_mask(
    case: MaskCase, result: CallResult, cls: Any, *, omit_unknown: bool = False
) -> Observation:
    """One mask's answer against MIN-001's oracle, filed under its probe.

    (a), (d), (e): OK whose populated fields are within ``case.limit``; (b) also
    PERMISSION_DENIED or INVALID_ARGUMENT, or OK with the field omitted (an empty message
    is such an answer). A field outside the limit is a FAIL; bytes that do not decode, an
    OK with no record and a call that never reached the service are INCONCLUSIVE. The
    fields judged are the record's (``case.records``: the ``order`` of
    ``GetLabOrderResponse{order}``), never the wrapper's.
    """
    if case.ref == "c":
        return judge_unknown_path(case, result, omit_unknown=omit_unknown)
    decoded = decode(cls, result.responses)
    records = [r for m in decoded.messages for r in _carried(case.records, m)]
    got = set().union(*(populated(r) for r in records))
    extra = sorted(got - case.limit)
    observed = result.summary()
    refusals = (PERMISSION_DENIED, INVALID_ARGUMENT) if case.ref == "b" else ()
    if extra:
        status = Status.FAIL
        observed += f"; fields outside the mask/allowlist: {', '.join(extra)}"
    elif decoded.undecodable:
        status, observed = Status.INCONCLUSIVE, f"{observed}; {_undecodable(decoded, cls)}"
    elif result.code in refusals:
        status = Status.PASS
    elif lost(result):
        status = Status.INCONCLUSIVE
    elif result.code != OK:
        status = Status.FAIL
    elif not decoded.messages or (case.ref != "b" and not got):
        status, observed = Status.INCONCLUSIVE, f"{observed}; no record to judge"
    else:
        status = Status.PASS
    expected = f"only {sorted(case.limit)}"
    if refusals:
        expected = f"PERMISSION_DENIED (7) or INVALID_ARGUMENT (3), or {expected}"
    where = f"{case.call.label} -> {case.call.method}"
    return Observation(where, observed, expected, status, Severity.HIGH, result.request_id).of(
        case.ref
    )


@check("MIN-001", probes=MIN_001_PROBES)
def field_mask_honoured(run: Run) -> Outcome:
    """FieldMask honoured and never widened.

    For each ``min.mask_methods`` entry (request field of type FieldMask) and each
    principal allowed on it: (a) a mask of two fields the role may see must return only
    those (plus ``min.always_returned``); (b) a field the role may not see must be refused
    (PERMISSION_DENIED, INVALID_ARGUMENT) or omitted; (c) ``does_not_exist`` must get
    INVALID_ARGUMENT (or be omitted under ``min.unknown_path_policy = "omit"``); (d) ``*``
    and (e) an empty mask must return nothing outside the role's allowlist. (b), (d) and
    (e) need the role's ``min.role_field_allowlist`` entry. The fields are the record's,
    wherever the response carries it (``GetLabOrderResponse{order}``: the ``LabOrder``).
    An answer that does not decode as the method's output type, or holds no record, is
    INCONCLUSIVE.
    """
    if not run.config.table("min.mask_methods"):
        raise NotApplicable("no min.mask_methods declared")
    policy = policy_or_skip(run)
    plan = mask_plan(run, policy)
    if not plan:
        raise NotApplicable("no principal may call a min.mask_methods entry")
    omit = run.config.get("min.unknown_path_policy") == "omit"
    results = send(run, [case.call for case in plan])
    observations = []
    for case, (call, result) in zip(plan, results, strict=True):
        cls = policy.catalogue.message_class(policy.catalogue.method(call.method).output_type)
        observations.append(judge_mask(case, result, cls, omit_unknown=omit))
    return Outcome.from_observations(
        CATALOGUE["MIN-001"], observations, passed="masks honoured, never widened"
    )


# -- MIN-002 / MIN-003: every read, once per role -----------------------------------------


def role_read_plan(run: Run, policy: Policy) -> list[Call]:
    """Every read and list method, once per principal the matrix allows on it.

    Each call is labelled with its principal's name (the allowlists are keyed by it).
    """
    return [
        Call(name, m.path, (policy.request(run, m.path),), principal)
        for m in read_methods(policy)
        for name in sorted(policy.allowed(m.path) or ())
        if (principal := run.principal(name)) is not None
    ]


def _role_reads(run: Run, policy: Policy) -> list[tuple[Call, CallResult]]:
    """The role-by-role reads, made once per run (MIN-002 and MIN-003 judge them)."""

    def compute() -> list[tuple[Call, CallResult]]:
        if policy.allow_mutations:
            planted_calls(run)  # seeds sandbox records with canary values
        return send(run, role_read_plan(run, policy))

    return run.memo("role-reads", compute)


def _output(policy: Policy, path: str) -> Any:
    return policy.catalogue.message_class(policy.catalogue.method(path).output_type)


# -- MIN-002 ------------------------------------------------------------------------------

MIN_002_PROBES = (
    Probe(
        "reads",
        "every read and list method, once per role allowed on it",
        needs=("min.role_field_allowlist",),
    ),
)


def judge_role_read(
    call: Call,
    result: CallResult,
    cls: Any,
    record_type: str | Collection[str],
    allowed: Iterable[str],
    holds_phi: Callable[[str], bool],
) -> Observation:
    """One role's read against ``min.role_field_allowlist[role]`` (MIN-002).

    A populated field outside the allowlist is a FAIL (high), critical when its value holds
    a canary (``holds_phi``). An answer with no populated record is nothing to judge
    (SKIP); bytes that do not decode, or a call that never reached the service, leave it
    INCONCLUSIVE.
    """
    allowed = set(allowed)
    decoded = decode(cls, result.responses)
    records = [r for m in decoded.messages for r in records_in(m, record_type)]
    extra: set[str] = set()
    phi = False
    for rec in records:
        over = populated(rec) - allowed
        extra |= over
        phi = phi or any(holds_phi(str(getattr(rec, f))) for f in over)
    observed, expected = result.summary(), "only the role's allowlisted fields"
    if extra:
        status = Status.FAIL
        observed += f"; fields outside the allowlist: {', '.join(sorted(extra))}"
    elif decoded.undecodable:
        status, observed = Status.INCONCLUSIVE, f"{observed}; {_undecodable(decoded, cls)}"
    elif lost(result) and not records:
        status = Status.INCONCLUSIVE
    elif not any(rec.ListFields() for rec in records):
        status, expected = Status.SKIP, f"a populated {_named(record_type)} in the answer"
    else:
        status = Status.PASS
    severity = Severity.CRITICAL if phi else Severity.HIGH
    where = f"{call.label} -> {call.method}"
    return Observation(where, observed, expected, status, severity, result.request_id).of("reads")


@check("MIN-002", probes=MIN_002_PROBES)
def responses_minimised_by_role(run: Run) -> Outcome:
    """Responses minimised by role.

    Every read and list method is called once per principal allowed on it (after the
    canary calls seeded sandbox records, when mutations are allowed). In every returned
    record (the mask method's output type, top level or nested), the populated fields must
    be a subset of ``min.role_field_allowlist[principal]``: an extra field is FAIL (high),
    critical when its value is a canary (a Safe Harbor category). An answer with no record
    is not judged; one that does not decode is INCONCLUSIVE.
    """
    allowlists = run.config.table("min.role_field_allowlist")
    if not allowlists:
        raise NotApplicable("no min.role_field_allowlist declared")
    policy, record = _record_setup(run, "MIN-002")
    c = canaries(run)

    def holds_phi(text: str) -> bool:
        return bool(c.scan(text, "response"))

    observations = [
        judge_role_read(
            call, result, _output(policy, call.method), record, allowlists[call.label], holds_phi
        )
        for call, result in _role_reads(run, policy)
        if call.label in allowlists
    ]
    if not observations:
        raise NotApplicable("no principal with an allowlist may call a read method")
    return Outcome.from_observations(
        CATALOGUE["MIN-002"], observations, passed="every role sees only its allowlisted fields"
    )


# -- MIN-003 ------------------------------------------------------------------------------

MIN_003_PROBES = (
    Probe(
        "tokens",
        "identifier fields read by each non-privileged role",
        needs=("min.token_patterns",),
    ),
    Probe(
        "detokenise",
        "the detokenise method, by privileged and non-privileged roles",
        required=False,
        needs=("min.detokenize_method",),
    ),
)


def judge_identifiers(
    call: Call,
    result: CallResult,
    cls: Any,
    record_type: str | Collection[str],
    patterns: Mapping[str, re.Pattern[str]],
    planted: Iterable[str],
) -> Observation:
    """A non-privileged role's read: every identifier field tokenised or masked (MIN-003).

    Each non-empty field named in ``min.token_patterns`` must match its pattern and never
    be a planted canary value. No such field in the answer is nothing to judge (SKIP);
    bytes that do not decode, or a call that never reached the service, INCONCLUSIVE.
    """
    planted = set(planted)
    decoded = decode(cls, result.responses)
    bad: dict[str, int] = {}
    seen = 0
    for m in decoded.messages:
        for rec in records_in(m, record_type):
            for field, pattern in patterns.items():
                value = getattr(rec, field, "")
                if not isinstance(value, str) or not value:
                    continue
                seen += 1
                if not pattern.match(value) or value in planted:
                    bad[field] = bad.get(field, 0) + 1
    observed = ", ".join(f"{n} {f} value(s) in clear" for f, n in sorted(bad.items()))
    expected = "every value matches min.token_patterns"
    if bad:
        status = Status.FAIL
    elif decoded.undecodable:
        status, observed = Status.INCONCLUSIVE, _undecodable(decoded, cls)
    elif not seen:
        status = Status.INCONCLUSIVE if lost(result) else Status.SKIP
        observed = result.summary()
        if status is Status.SKIP:
            expected = "a field named in min.token_patterns in the answer"
    else:
        status, observed = Status.PASS, f"{seen} value(s) tokenised"
    where = f"{call.label} -> {call.method}"
    return Observation(where, observed, expected, status, Severity.HIGH, result.request_id).of(
        "tokens"
    )


def detokenise_plan(
    path: str, request: bytes, principals: Mapping[str, Principal], privileged: Iterable[str]
) -> list[tuple[bool, Call]]:
    """The detokenise method once per principal with credentials: (privileged?, call)."""
    privileged = set(privileged)
    plan = []
    for name, principal in sorted(principals.items()):
        if not (principal.has_token or principal.has_cert):
            continue
        role = "privileged" if name in privileged else "not privileged"
        plan.append((name in privileged, Call(f"{name} ({role})", path, (request,), principal)))
    return plan


def judge_detokenise(
    privileged: bool,
    call: Call,
    result: CallResult,
    events: Sequence[Mapping[str, Any]] | None = None,
    problem: str = "",
) -> Observation:
    """One detokenise call: PERMISSION_DENIED to a non-privileged role, OK to a privileged one.

    A privileged call must also have an audit event: ``events`` are those found for its
    request ID, ``None`` when there is no audit source to look in.
    """
    if not privileged:
        return refused(
            call, result, expected=(PERMISSION_DENIED,), low=(), data_severity=Severity.HIGH
        ).of("detokenise")
    observed, severity = result.summary(), Severity.HIGH
    if lost(result) and not result.responses:
        status = Status.INCONCLUSIVE
    elif result.code != OK:
        status, severity = Status.FAIL, Severity.MEDIUM
    elif events is None or problem:
        status = Status.INCONCLUSIVE
        observed += f"; audit: {problem or 'no audit.source to find its event in'}"
    elif not events:
        status, observed = Status.FAIL, f"{observed}; no audit event for it"
    else:
        status, observed = Status.PASS, f"{observed}; {len(events)} audit event(s)"
    where = f"{call.label} -> {call.method}"
    return Observation(
        where, observed, "OK, and an audit event of the call", status, severity, result.request_id
    ).of("detokenise")


def _detokenise(run: Run, policy: Policy) -> list[Observation]:
    """MIN-003's optional probe: send the detokenise calls and judge them."""
    path = run.config.str_("min.detokenize_method")
    if path is None:
        return []
    if path not in {m.path for m in policy.catalogue.methods}:
        where, needs = f"detokenise {path}", "a method in the descriptors"
        return [Observation(where, "not sent", needs, Status.SKIP).of("detokenise")]
    privileged = run.config.str_list("min.privileged_principals")
    plan = detokenise_plan(path, policy.request(run, path), run.principals, privileged)
    results = send(run, [call for _, call in plan])
    audited = [
        r.request_id for (p, _), (_, r) in zip(plan, results, strict=True) if p and r.code == OK
    ]
    found: dict[str, list[dict[str, Any]]] | None = None
    problem = ""
    if run.config.get("audit.source") is not None and audited:
        found, problem = audit.wait_for(run, audited)
    observations = []
    for (p, _), (call, r) in zip(plan, results, strict=True):
        events = None if found is None else found.get(r.request_id, [])
        observations.append(judge_detokenise(p, call, r, events, problem))
    return observations


@check("MIN-003", probes=MIN_003_PROBES)
def identifiers_tokenised(run: Run) -> Outcome:
    r"""Direct identifiers tokenised or masked for non-privileged roles.

    The same role-by-role reads as MIN-002: for every principal not in
    ``min.privileged_principals``, every non-empty field named in ``min.token_patterns``
    must match its pattern (for example ``^\\*{3}-\\*{2}-\\d{4}$``) and never be a canary
    value the run planted. With ``min.detokenize_method``, the detokenise method is called
    by every principal: PERMISSION_DENIED for the non-privileged, OK and an audit event
    for the privileged ones.
    """
    patterns = {k: re.compile(str(v)) for k, v in run.config.table("min.token_patterns").items()}
    if not patterns:
        raise NotApplicable("no min.token_patterns declared")
    policy, record = _record_setup(run, "MIN-003")
    privileged = set(run.config.str_list("min.privileged_principals"))
    planted = set(canaries(run).values.values())
    observations = [
        judge_identifiers(call, result, _output(policy, call.method), record, patterns, planted)
        for call, result in _role_reads(run, policy)
        if call.label not in privileged
    ]
    observations += _detokenise(run, policy)
    if not observations:
        raise NotApplicable("no non-privileged principal may call a read method")
    return Outcome.from_observations(
        CATALOGUE["MIN-003"],
        observations,
        passed="identifiers tokenised for every non-privileged role",
    )


# -- MIN-004 ------------------------------------------------------------------------------

MIN_004_PROBES = (
    Probe(
        "1-3",
        "read a sandbox record, update it, poll it on new channels until min.cache_ttl_s + 5 s",
        needs=("safety.allow_mutations",),
    ),
    # auth.revoke_cmd is refused at load (harness.config.UNSUPPORTED) until the harness can
    # run it: the probe says so rather than naming a key the user cannot set.
    Probe("4", "revoke a grant with auth.revoke_cmd and poll the same way", required=False),
)
#: Seconds between two reads of the updated record.
POLL_INTERVAL_S = 0.5
#: Seconds past ``min.cache_ttl_s`` the new value may take to be served.
CACHE_MARGIN_S = 5.0


@dataclass(frozen=True)
class CachePlan:
    """MIN-004's record, its write and read, who makes them, and the marker to look for."""

    record_id: str
    write: MethodInfo
    write_request: bytes
    read: MethodInfo
    read_request: bytes
    writer: Principal
    reader: Principal
    nonce: str
    ttl_s: float


def _naming(run: Run, methods: Iterable[MethodInfo], known: list[str]) -> MethodInfo | None:
    return next((m for m in methods if named_id(template_text(run, m.path), known)), None)


def _on(run: Run, policy: Policy, path: str) -> list[Principal]:
    return [p for n in sorted(policy.allowed(path) or ()) if (p := run.principal(n))]


def cache_plan(run: Run, policy: Policy) -> CachePlan:
    """MIN-004's record, the write and unary read that name it, and who makes them.

    The reader is a privileged principal (it sees every field), the writer another one.

    Raises:
        NotApplicable: no sandbox ID, no such write or read, or no principal for them.
    """
    sandbox = run.config.str_list("authz.sandbox_ids")
    known = sandbox + [i for ids in run.config.table("authz.own_ids").values() for i in ids]
    writes = [m for m in policy.protected() if policy.is_write(m.path)]
    unary = [m for m in read_methods(policy) if not m.server_streaming and not m.client_streaming]
    write, read = _naming(run, writes, known), _naming(run, unary, known)
    if write is None or read is None or not sandbox:
        raise NotApplicable(
            "needs authz.sandbox_ids and a write and a read whose templates name a record"
        )
    privileged = run.config.str_list("min.privileged_principals")
    readers, writers = _on(run, policy, read.path), _on(run, policy, write.path)
    reader = next((p for p in readers if p.name in privileged), readers[0] if readers else None)
    writer = next((p for p in writers if p is not reader), writers[0] if writers else None)
    if writer is None or reader is None:
        raise NotApplicable("no principal may write and read the sandbox record")
    sid = sandbox[0]
    wtext, rtext = template_text(run, write.path), template_text(run, read.path)
    nonce = f"ttl-{run.options.seed:08x}-{int(time.time())}"
    cls = policy.catalogue.message_class(write.input_type)
    return CachePlan(
        sid,
        write,
        marked(cls, swap_id(wtext, named_id(wtext, known) or "", sid), nonce, set(known)),
        read,
        policy.catalogue.request_bytes(
            read.path, swap_id(rtext, named_id(rtext, known) or "", sid)
        ),
        writer,
        reader,
        nonce,
        float(run.config.get("min.cache_ttl_s")),
    )


def freshness(result: CallResult, cls: Any, nonce: str) -> str:
    """``fresh`` (the update is served), ``stale`` (a record without it) or ``unread``."""
    decoded = decode(cls, result.responses)
    if any(nonce in s for m in decoded.messages for s in strings_in(m)):
        return "fresh"
    if result.code == OK and any(m.ListFields() for m in decoded.messages):
        return "stale"
    return "unread"


def judge_update(plan: CachePlan, result: CallResult) -> Observation | None:
    """The authorised update (step 2): ``None`` when it was accepted, else INCONCLUSIVE."""
    if result.code == OK:
        return None
    return Observation(
        f"{plan.record_id} updated by {plan.writer.name} -> {plan.write.path}",
        f"the update was not accepted: {result.summary()}",
        "OK (an authorised update)",
        Status.INCONCLUSIVE,
        request_id=result.request_id,
    ).of("1-3")


def judge_cache(
    plan: CachePlan, polls: Sequence[tuple[float, CallResult]], cls: Any
) -> Observation:
    """Step 3: the updated value served within ``min.cache_ttl_s`` + 5 s.

    ``polls`` are (seconds since the update, the read). The new value seen is a PASS; the
    old record still served at the last read a FAIL; no record read back INCONCLUSIVE.
    """
    waited, last = polls[-1]
    state = "fresh" if any(freshness(r, cls, plan.nonce) == "fresh" for _, r in polls) else ""
    state = state or freshness(last, cls, plan.nonce)
    if state == "fresh":
        status, observed = Status.PASS, f"new value served after {waited:.1f} s"
    elif state == "stale":
        status, observed = Status.FAIL, f"still stale after {waited:.1f} s"
    else:
        status = Status.INCONCLUSIVE
        observed = f"the record was not read back after {waited:.1f} s: {last.summary()}"
    return Observation(
        f"{plan.record_id} updated by {plan.writer.name}, read by {plan.reader.name} "
        f"on new channels ({len(polls)} poll(s))",
        observed,
        f"served within min.cache_ttl_s + {CACHE_MARGIN_S:g} s ({plan.ttl_s + CACHE_MARGIN_S:g} s)",
        status,
        Severity.MEDIUM,
        last.request_id,
    ).of("1-3")


def _read_fresh(run: Run, plan: CachePlan) -> CallResult:
    """One read of the record, by the reader, over a channel of its own."""
    channel = run.new_channel()
    try:
        return invoke(
            channel,
            plan.read.path,
            [plan.read_request],
            metadata=plan.reader.metadata(),
            request_id_key=run.request_id_key,
            principal=plan.reader.name,
        )
    finally:
        channel.close()


def poll_cache(run: Run, plan: CachePlan, cls: Any) -> list[tuple[float, CallResult]]:
    """Read the record until the new value is served or the TTL and margin have passed."""
    start = time.monotonic()
    deadline = start + plan.ttl_s + CACHE_MARGIN_S
    polls = []
    while True:
        result = _read_fresh(run, plan)
        polls.append((time.monotonic() - start, result))
        if freshness(result, cls, plan.nonce) == "fresh" or time.monotonic() >= deadline:
            return polls
        time.sleep(POLL_INTERVAL_S)


def revocation_note(run: Run) -> list[Observation]:
    """Step 4: not run (the harness has no revocation step yet: auth.revoke_cmd is refused)."""
    return [
        Observation(
            "revoke a grant with auth.revoke_cmd",
            "not run",
            "a revocation step in the harness (auth.revoke_cmd is not supported yet)",
            Status.SKIP,
        ).of("4")
    ]


@check("MIN-004", probes=MIN_004_PROBES)
def cache_honours_updates(run: Run) -> Outcome:
    """Cached ePHI honours TTL and invalidation.

    Needs ``--hipaa-allow-mutations`` and ``min.cache_ttl_s``. A sandbox record is read (to
    warm any cache), updated by an allowed principal with marked values, then read every
    half second by another principal over a new channel until ``min.cache_ttl_s`` + 5 s:
    the new value must be served within that time. A record that is not read back at all
    is INCONCLUSIVE. Step 4 (revoking a grant with ``auth.revoke_cmd``) is not run yet.
    """
    if not run.config.get("safety.allow_mutations"):
        raise NotApplicable("needs --hipaa-allow-mutations (or safety.allow_mutations = true)")
    if not run.config.has("min.cache_ttl_s"):
        raise NotApplicable("no min.cache_ttl_s declared")
    policy = policy_or_skip(run)
    plan = cache_plan(run, policy)
    run.call(plan.read.path, [plan.read_request], principal=plan.reader)  # warm the cache
    update = run.call(plan.write.path, [plan.write_request], principal=plan.writer)
    cls = _output(policy, plan.read.path)
    not_updated = judge_update(plan, update)
    observations = [not_updated or judge_cache(plan, poll_cache(run, plan, cls), cls)]
    observations += revocation_note(run)
    return Outcome.from_observations(
        CATALOGUE["MIN-004"], observations, passed="updates visible within the cache TTL"
    )
