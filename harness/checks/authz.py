"""Authorization controls (AUTHZ-*): the RBAC matrix, objects, writes, streams, break-glass.

IDs are swapped in request templates (an own ID for a foreign, sandbox or wildcard one),
written as JSON strings or, for integer IDs, as JSON numbers
(:func:`~harness.plans.calls.swap_id`), and responses are judged by decoding them with
the descriptors, so the checks need no knowledge of the target's field names beyond its
config.

Each control is planned (config and descriptors -> :class:`Aimed` calls), sent, and judged
(recorded :class:`~harness.channels.CallResult` s -> observations) by pure functions; the
check functions only wire them. Judges decide by status codes and decoded payloads, never
by a server's message text, and a call that never reached the service (UNAVAILABLE,
DEADLINE_EXCEEDED) is INCONCLUSIVE, never a refusal and never a pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from harness import audit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult
from harness.checks import check
from harness.descriptors import (
    MethodCatalogue,
    MethodInfo,
    Records,
    decode_each,
    is_repeated,
    record_shape,
)
from harness.oracles import UNREACHED, lost, refused
from harness.outcome import NotApplicable, Observation, Outcome, Probe, Status, not_applicable
from harness.plans.calls import (
    Call,
    absent_id,
    as_number,
    bearer,
    ids_named,
    marked,
    named_id,
    policy_or_skip,
    record_values,
    send,
    set_path,
    strings_in,
    swap_id,
    template_text,
    values_in,
    wire_values,
)
from harness.plans.tokens import authz_matrix_calls, run_nonce
from harness.policy import Policy
from harness.principals import BEARER, Presentation, Principal, presentation_of, principals_from
from harness.run import Run

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT

#: The principal with a valid token and no roles or scopes (catalogue: AUTHZ-001).
NO_ROLES = "no-roles"
#: What :meth:`CallResult.carried` says of status details that are not a google.rpc.Status.
UNDECODABLE_DETAILS = "undecodable status details"
RPC_STATUS = "google.rpc.Status"
#: Codes that are no answer of the service about a record: never reached, or an error
#: (a proxy's HTTP 400 reads as INTERNAL, its other errors as UNKNOWN), or throttled.
NO_ANSWER = UNREACHED | {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass(frozen=True)
class Aimed:
    """A planned call, the probe it is filed under, and the IDs its answer must not hold.

    Attributes:
        ref: The declared probe the call's observation is filed under.
        call: What to send.
        foreign: IDs of records the caller may not see.
    """

    ref: str
    call: Call
    foreign: frozenset[str] = frozenset()

    @property
    def where(self) -> str:
        """The call in evidence: ``label -> method``."""
        return f"{self.call.label} -> {self.call.method}"


def _templates(run: Run, policy: Policy) -> dict[str, str]:
    return {m.path: template_text(run, m.path) for m in policy.protected()}


def _sent(run: Run, aimed: Sequence[Aimed]) -> list[tuple[Aimed, CallResult]]:
    results = send(run, [a.call for a in aimed])
    return [(a, r) for a, (_, r) in zip(aimed, results, strict=True)]


def ids_in(
    catalogue: MethodCatalogue, method: str, responses: Iterable[bytes], ids: Iterable[str]
) -> tuple[set[str], int]:
    """Which of ``ids`` the ``responses`` of ``method`` name; how many did not decode.

    Every value counts (:func:`ids_named`): nested, in maps, packed in an ``Any``, or in a
    field the descriptors do not declare. A response that does not decode, or holds no
    declared field, is counted as undecodable (nobody can say what it holds); its bytes
    are searched all the same.
    """
    cls = catalogue.message_class(catalogue.method(method).output_type)
    wanted = [str(i) for i in ids]
    found: set[str] = set()
    undecodable = 0
    for each in decode_each(cls, responses):
        undecodable += each.undecodable
        if each.message is None:
            found |= ids_named(wire_values(each.blob), wanted)
            continue
        found |= ids_named(values_in(each.message, catalogue.message_class), wanted)
    return found, undecodable


# -- AUTHZ-001 --------------------------------------------------------------------------

AUTHZ_001 = (
    Probe("denied", "pairs the matrix does not allow get PERMISSION_DENIED and no data"),
    Probe("allowed", "pairs the matrix allows get neither PERMISSION_DENIED nor UNAUTHENTICATED"),
    Probe(
        "no-roles",
        "a valid token with no roles gets PERMISSION_DENIED on every protected method",
        needs=("auth.principals.no-roles",),
    ),
    Probe("gaps", "every protected method has an explicit matrix entry"),
)


def judge_gaps(matrix: Mapping[str, frozenset[str]], protected: Sequence[str]) -> list[Observation]:
    """AUTHZ-001 (gaps): a protected method without a matrix entry is a policy gap (FAIL)."""
    gaps = sorted(p for p in protected if p not in matrix)
    if not protected:
        return []
    if not gaps:
        return [
            Observation(
                f"matrix entries for {len(protected)} protected method(s)",
                "every one has an explicit entry",
                "an explicit entry per method",
                Status.PASS,
            ).of("gaps")
        ]
    return [
        Observation(
            f"matrix entry for {path}",
            "none",
            "an explicit entry (policy gap)",
            Status.FAIL,
            Severity.HIGH,
        ).of("gaps")
        for path in gaps
    ]


def judge_allowed(call: Call, result: CallResult) -> Observation:
    """AUTHZ-001 (allowed): an allowed pair gets a code other than 7 and 16."""
    return Observation(
        f"{call.label} (allowed) -> {call.method}",
        result.summary(),
        "neither PERMISSION_DENIED nor UNAUTHENTICATED",
        _let_in(result),
        Severity.HIGH,
        result.request_id,
    ).of("allowed")


def _let_in(result: CallResult) -> Status:
    """A call that must be allowed: any code but 7 and 16 passes (never reached: INCONCLUSIVE)."""
    if lost(result):
        return Status.INCONCLUSIVE
    return Status.FAIL if result.code in (DENIED, UNAUTHENTICATED) else Status.PASS


def judge_matrix(
    matrix: Mapping[str, frozenset[str]],
    protected: Sequence[str],
    calls: Iterable[tuple[Call, CallResult]],
) -> list[Observation]:
    """AUTHZ-001: every (method, principal) call against the declared matrix.

    ``no-roles`` must get PERMISSION_DENIED on every protected method, whatever the matrix
    says; other principals are judged as allowed or denied pairs; methods without an entry
    are policy gaps, and their other calls are not judged.
    """
    observations = judge_gaps(matrix, protected)
    for call, result in calls:
        name = call.principal.name if call.principal is not None else ""
        allowed = matrix.get(call.method)
        if name != NO_ROLES and allowed is None:
            continue
        if name != NO_ROLES and allowed is not None and name in allowed:
            observations.append(judge_allowed(call, result))
            continue
        observation = refused(
            Call(f"{call.label} (not allowed)", call.method, call.requests),
            result,
            expected=(DENIED,),
            low=(UNAUTHENTICATED,),
        )
        observations.append(observation.of(NO_ROLES if name == NO_ROLES else "denied"))
    return observations


@check("AUTHZ-001", probes=AUTHZ_001)
def rbac_matrix(run: Run) -> Outcome:
    """Deny-by-default RBAC matrix per method.

    One call per (declared method, principal) with its template. Pairs the matrix does not
    allow must get PERMISSION_DENIED and no data (OK or data is critical, UNAUTHENTICATED
    for a valid identity is FAIL (low)); allowed pairs must get neither PERMISSION_DENIED
    nor UNAUTHENTICATED; ``no-roles`` must get PERMISSION_DENIED on every protected method;
    a method without a matrix entry is a "policy gap" FAIL.
    """
    if not run.config.table("auth.rbac_matrix"):
        raise NotApplicable("no auth.rbac_matrix declared")
    policy = policy_or_skip(run)
    calls = authz_matrix_calls(run)
    if isinstance(calls, str):
        raise NotApplicable(calls)
    protected = [m.path for m in policy.protected()]
    return Outcome.from_observations(
        CATALOGUE["AUTHZ-001"],
        judge_matrix(policy.matrix, protected, calls),
        passed="every (method, principal) pair matched the declared matrix",
    )


# -- AUTHZ-002 --------------------------------------------------------------------------

AUTHZ_002 = (
    Probe("foreign", "Get, Update and Delete of another principal's records"),
    Probe("listing", "List and Search results hold no foreign ID"),
    Probe("nonexistent", "one ID that does not exist"),
)


def _object_calls(
    catalogue: MethodCatalogue,
    method: MethodInfo,
    text: str,
    mine: Sequence[str],
    foreign_ids: Sequence[str],
    principal: Principal,
    nonce: str,
    lists: bool = False,
) -> list[Aimed]:
    """AUTHZ-002's calls on one method for one principal.

    A foreign and a nonexistent call when its template names an own ID; else a listing
    call when it lists records (``lists``: a page of records, or a server stream); else
    none.
    """
    path, name, foreign = method.path, principal.name, frozenset(foreign_ids)

    def aimed(ref: str, label: str, body: str | None) -> Aimed:
        return Aimed(
            ref, Call(label, path, (catalogue.request_bytes(path, body),), principal), foreign
        )

    named = named_id(text, list(mine))
    if named is not None:
        out = [
            aimed("foreign", f"{name} asks for foreign {fid}", swap_id(text, named, fid))
            for fid in foreign_ids
        ]
        absent = swap_id(text, named, absent_id(text, named, nonce))
        return [*out, aimed("nonexistent", f"{name} asks for a nonexistent ID", absent)]
    if method.server_streaming or lists:
        return [aimed("listing", f"{name} lists", text or None)]
    return []


def lists_records(catalogue: MethodCatalogue, path: str, record_types: Collection[str]) -> bool:
    """Whether ``path`` answers with any number of records (:func:`record_shape`).

    A unary AIP-132 List (a repeated record field beside ``next_page_token``) as well as
    a server stream of records from a List, Search or Export.
    """
    try:
        return record_shape(catalogue, path, record_types).lists
    except KeyError:
        return False


def plan_objects(
    policy: Policy,
    templates: Mapping[str, str],
    own: Mapping[str, Sequence[str]],
    foreign: Mapping[str, Sequence[str]],
    principals: Mapping[str, Principal],
    nonce: str,
    record_types: Collection[str] = (),
) -> tuple[list[Aimed], list[Observation]]:
    """AUTHZ-002's calls: each principal's foreign, nonexistent and listing calls.

    Every protected method a principal may call is used; writes only when mutations are
    allowed. A method lists when the descriptors say it answers with records
    (:func:`lists_records`, with ``schema.record_types``). Returns the calls and a SKIP
    observation per principal with no credential.
    """
    aimed: list[Aimed] = []
    skipped: list[Observation] = []
    for name, foreign_ids in foreign.items():
        principal = principals.get(name)
        if principal is None:
            skipped.append(
                Observation(
                    f"objects of {name}", "not sent", f"auth.principals.{name}", Status.SKIP
                ).of("foreign")
            )
            continue
        for m in policy.protected():
            if name not in (policy.allowed(m.path) or ()):
                continue
            if policy.is_write(m.path) and not policy.allow_mutations:
                continue
            text = templates.get(m.path, "")
            mine = own.get(name, [])
            lists = lists_records(policy.catalogue, m.path, record_types)
            aimed += _object_calls(
                policy.catalogue, m, text, mine, foreign_ids, principal, nonce, lists
            )
    return aimed, skipped


def judge_foreign(
    aimed: Aimed, result: CallResult, twin: CallResult | None, hiding: bool
) -> Observation:
    """AUTHZ-002 (foreign): PERMISSION_DENIED and no data.

    With existence hiding, NOT_FOUND exactly as the nonexistent ID (``twin``) got it. Data
    is a response, OK, or a payload in the status details other than an explanation;
    status details nobody can decode leave it INCONCLUSIVE.
    """
    expected = (
        "PERMISSION_DENIED (7)"
        + (", or NOT_FOUND (5) exactly as for a nonexistent ID" if hiding else "")
        + ", no data"
    )
    hidden = hiding and result.code == NOT_FOUND
    twin_unreached = twin is None or lost(twin)
    carried = result.carried()
    status: Status = Status.FAIL
    severity: Severity | None = Severity.HIGH
    if result.responses or result.code == OK or set(carried) - {UNDECODABLE_DETAILS}:
        severity = Severity.CRITICAL
    elif carried or lost(result) or (hidden and twin_unreached):
        status = Status.INCONCLUSIVE  # unreadable details, or the call or its twin got lost
    elif result.code == DENIED or (
        hidden and twin is not None and (twin.code, twin.details) == (result.code, result.details)
    ):
        status, severity = Status.PASS, None
    return Observation(
        aimed.where, result.summary(), expected, status, severity, result.request_id
    ).of("foreign")


def records_naming(
    catalogue: MethodCatalogue, records: Records, responses: Iterable[bytes], ids: Iterable[str]
) -> tuple[set[str], int, int]:
    """Which of ``ids`` the records in ``responses`` name; how many records; how many undecodable.

    Only the records count (:func:`~harness.plans.calls.record_values`), not the wrapper
    around them: a page that echoes its filter, or a ``next_page_token`` encoding it,
    returns no record. Bytes that do not decode are searched whole.
    """
    cls = catalogue.message_class(catalogue.method(records.method).output_type)
    wanted = [str(i) for i in ids]
    found: set[str] = set()
    count = undecodable = 0
    for each in decode_each(cls, responses):
        undecodable += each.undecodable
        if each.message is None:
            found |= ids_named(wire_values(each.blob), wanted)
            continue
        n, values = record_values(each.message, records, catalogue.message_class)
        count += n
        found |= ids_named(values, wanted)
    return found, count, undecodable


def judge_filtered(
    catalogue: MethodCatalogue,
    records: Records,
    aimed: Aimed,
    result: CallResult,
    twin: CallResult | None,
    hiding: bool,
) -> Observation:
    """AUTHZ-002 (foreign) on a List or Search whose filter names a foreign ID.

    The filter holds when the service answers with no foreign record: PERMISSION_DENIED
    (as for a Get), or OK with records none of which names a foreign ID (an empty page,
    or the caller's own records); with existence hiding, an OK only if the nonexistent
    ID's filter (``twin``) got OK too. A record naming a foreign ID anywhere in it is a
    leak (critical). An OK whose responses do not decode, or whose twin got lost, is
    INCONCLUSIVE; any other answer is judged as a foreign Get's (:func:`judge_foreign`).
    """
    leaked, count, undecodable = records_naming(catalogue, records, result.responses, aimed.foreign)
    if not leaked and result.code != OK:
        return _filter_refused(aimed, result, twin, hiding, count, undecodable)
    observed = result.summary() + (
        f"; records naming foreign IDs: {', '.join(sorted(leaked))}"
        if leaked
        else f"; {count} record(s), none naming a foreign ID"
    )
    status, severity = Status.PASS, None
    if leaked:
        status, severity = Status.FAIL, Severity.CRITICAL
    elif undecodable:
        status = Status.INCONCLUSIVE
        observed += f"; {undecodable} response(s) did not decode"
    elif hiding and (twin is None or twin.code in NO_ANSWER):
        status = Status.INCONCLUSIVE
        observed += "; the nonexistent ID's filter got no answer to compare with"
    elif hiding and twin is not None and twin.code != OK:
        status, severity = Status.FAIL, Severity.HIGH
        observed += f"; the nonexistent ID's filter got {twin.summary()}"
    expected = "PERMISSION_DENIED (7), or no record naming a foreign ID" + (
        " (OK exactly as for a nonexistent ID)" if hiding else ""
    )
    return Observation(aimed.where, observed, expected, status, severity, result.request_id).of(
        "foreign"
    )


def _filter_refused(
    aimed: Aimed,
    result: CallResult,
    twin: CallResult | None,
    hiding: bool,
    count: int,
    undecodable: int,
) -> Observation:
    """A foreign filter's error, judged as a foreign Get's (:func:`judge_foreign`).

    Records a stream sent before the error that name no foreign ID are no data of the
    foreign record; records that did not decode leave a refusal INCONCLUSIVE.
    """
    if not result.responses:
        return judge_foreign(aimed, result, twin, hiding)
    judged = judge_foreign(aimed, dataclasses.replace(result, responses=()), twin, hiding)
    status = judged.status
    if undecodable and status is Status.PASS:
        status = Status.INCONCLUSIVE
    observed = f"{result.summary()}; {count} record(s) before it, none naming a foreign ID"
    observed += f"; {undecodable} response(s) did not decode" if undecodable else ""
    return dataclasses.replace(judged, observed=observed, status=status)


def judge_nonexistent(catalogue: MethodCatalogue, aimed: Aimed, result: CallResult) -> Observation:
    """AUTHZ-002 (nonexistent): the service answered, and with no foreign record.

    This call is the reference point existence hiding is held to (:func:`judge_foreign`).
    An answer that shows nothing is INCONCLUSIVE: responses or status details that do not
    decode, a call that never reached the service, or an error (UNKNOWN, INTERNAL,
    CANCELLED, RESOURCE_EXHAUSTED: a proxy's HTTP 400 reads as INTERNAL) rather than the
    service's answer about the ID.
    """
    leaked, undecodable = ids_in(catalogue, aimed.call.method, result.responses, aimed.foreign)
    observed = result.summary()
    status = Status.PASS
    if leaked:
        observed += f"; foreign IDs returned: {', '.join(sorted(leaked))}"
        status = Status.FAIL
    elif undecodable:
        observed += f"; {undecodable} response(s) did not decode"
        status = Status.INCONCLUSIVE
    elif result.carried() == (UNDECODABLE_DETAILS,) or result.code in NO_ANSWER:
        status = Status.INCONCLUSIVE
    return Observation(
        aimed.where,
        observed,
        "an answer from the service, with no foreign record",
        status,
        Severity.CRITICAL if leaked else None,
        result.request_id,
    ).of("nonexistent")


def judge_listing(
    catalogue: MethodCatalogue, aimed: Aimed, result: CallResult, records: Records | None = None
) -> Observation:
    """AUTHZ-002 (listing): no foreign ID in any response.

    With the method's ``records`` (a page or a stream of them), only the records count, not
    the page around them (an echoed filter, a ``next_page_token``): an OK page with no
    record naming a foreign ID holds, an empty one too. Without, every value counts. A
    listing that did not reach the service (UNAVAILABLE, DEADLINE_EXCEEDED) or whose
    responses do not decode shows nothing either way: INCONCLUSIVE unless it leaked.
    """
    if records is not None and records.lists:
        leaked, count, undecodable = records_naming(
            catalogue, records, result.responses, aimed.foreign
        )
    else:
        leaked, undecodable = ids_in(catalogue, aimed.call.method, result.responses, aimed.foreign)
        count = None
    observed = result.summary()
    if count is not None and result.code == OK:
        observed += f"; {count} record(s)"
    if leaked:
        observed += f"; foreign IDs returned: {', '.join(sorted(leaked))}"
    if undecodable:
        observed += f"; {undecodable} response(s) did not decode"
    if leaked:
        status = Status.FAIL
    elif undecodable or lost(result):
        status = Status.INCONCLUSIVE
    else:
        status = Status.PASS
    return Observation(
        aimed.where,
        observed,
        "no foreign ID in any response",
        status,
        Severity.CRITICAL if leaked else None,
        result.request_id,
    ).of("listing")


def judge_objects(
    catalogue: MethodCatalogue,
    sent: Sequence[tuple[Aimed, CallResult]],
    hiding: bool,
    record_types: Collection[str] = (),
) -> list[Observation]:
    """AUTHZ-002: every foreign, nonexistent and listing call, judged.

    A foreign call to a method that lists records (a repeated record field, or a stream
    of them from a List or Search: :func:`~harness.descriptors.record_shape`, with
    ``schema.record_types``) is a filter naming a foreign ID (:func:`judge_filtered`).
    """

    def key(aimed: Aimed) -> tuple[str, str]:
        who = aimed.call.principal.name if aimed.call.principal is not None else ""
        return who, aimed.call.method

    absent = {key(a): r for a, r in sent if a.ref == "nonexistent"}
    out = []
    for aimed, result in sent:
        twin = absent.get(key(aimed))
        records = record_shape(catalogue, aimed.call.method, record_types)
        if aimed.ref == "foreign" and records.lists:
            out.append(judge_filtered(catalogue, records, aimed, result, twin, hiding))
        elif aimed.ref == "foreign":
            out.append(judge_foreign(aimed, result, twin, hiding))
        elif aimed.ref == "nonexistent":
            out.append(judge_nonexistent(catalogue, aimed, result))
        else:
            out.append(judge_listing(catalogue, aimed, result, records))
    return out


@check("AUTHZ-002", probes=AUTHZ_002)
def object_level(run: Run) -> Outcome:
    """Object-level authorization: another patient's records stay out of reach.

    For each principal with ``authz.foreign_ids``: every method it may call whose template
    names one of its ``authz.own_ids`` is called with each foreign ID instead, and with an
    ID that does not exist. Foreign IDs must get PERMISSION_DENIED (or, with
    ``authz.existence_hiding``, NOT_FOUND exactly like the nonexistent ID) and never data.
    Streaming and list methods are called with their template and every response is
    decoded: no foreign ID may appear in it. A List or Search whose template names an own
    ID gets the foreign ID in its filter: an OK page with no record naming a foreign ID is
    the filter holding, a record naming one a leak. Records are found by the descriptors
    (``schema.record_types``, or the type named for the method's resource), not by the
    response's shape. Writes are skipped unless mutations are allowed.
    """
    own, foreign = run.config.table("authz.own_ids"), run.config.table("authz.foreign_ids")
    if not foreign:
        raise NotApplicable("no authz.foreign_ids (and authz.own_ids) declared")
    policy = policy_or_skip(run)
    declared = run.config.str_list("schema.record_types")
    aimed, skipped = plan_objects(
        policy, _templates(run, policy), own, foreign, run.principals, run_nonce(run), declared
    )
    if not aimed and not skipped:
        raise NotApplicable(
            "no allowed method names an own ID in its template, and none lists records"
        )
    hiding = bool(run.config.get("authz.existence_hiding", False))
    observations = skipped + judge_objects(policy.catalogue, _sent(run, aimed), hiding, declared)
    return Outcome.from_observations(
        CATALOGUE["AUTHZ-002"], observations, passed="no foreign record reachable"
    )


# -- AUTHZ-003 --------------------------------------------------------------------------

AUTHZ_003 = (
    Probe(
        "1",
        "writes setting authz.sensitive_fields are refused or not stored",
        needs=("safety.allow_mutations",),
    ),
    Probe(
        "2",
        "least-privileged's denied mutation gets PERMISSION_DENIED",
        needs=("safety.allow_mutations",),
    ),
    Probe(
        "3",
        "the record reads back byte-identical after the denied mutation",
        needs=("safety.allow_mutations",),
    ),
)


@dataclass(frozen=True)
class Tampering:
    """AUTHZ-003's plan: the read-back, and the writes in the order they are made.

    Attributes:
        read: A reader's read of the sandbox record (before and after each step).
        read_type: The read's response message type.
        steps: ``"2"`` steps (least-privileged's denied write, read before and after) and
            ``"1"`` steps (a write setting a sensitive field, read after).
        skipped: SKIP observations of steps that cannot be planned, with what they need.
    """

    read: Call
    read_type: str
    steps: tuple[Aimed, ...]
    skipped: tuple[Observation, ...] = ()


@dataclass(frozen=True)
class Tried:
    """One AUTHZ-003 step as sent: the write, and the record read back around it."""

    aimed: Aimed
    write: CallResult
    after: CallResult
    before: CallResult | None = None


def _reads_and_writes(
    policy: Policy, templates: Mapping[str, str], known: list[str]
) -> tuple[list[MethodInfo], list[MethodInfo]]:
    """Unary reads and the writes whose templates name a known (own or sandbox) ID."""
    named = [m for m in policy.protected() if named_id(templates.get(m.path, ""), known)]
    writes = [m for m in named if policy.is_write(m.path)]
    reads = [
        m
        for m in named
        if not policy.is_write(m.path) and not m.server_streaming and not m.client_streaming
    ]
    return reads, writes


def _tamper_steps(
    policy: Policy,
    write: MethodInfo,
    text: str,
    principals: Mapping[str, Principal],
    sensitive: Sequence[str],
    nonce: str,
    known: list[str],
) -> list[Aimed]:
    """One write method's steps.

    Least-privileged's denied write, then each allowed writer setting each sensitive field
    to the nonce.
    """
    cls = policy.catalogue.message_class(write.input_type)
    allowed = policy.allowed(write.path) or frozenset()
    least = principals.get("least-privileged")
    steps = []
    if least is not None and least.name not in allowed:
        body = marked(cls, text, nonce, set(known))
        label = "least-privileged attempts a denied write"
        steps.append(Aimed("2", Call(label, write.path, (body,), least)))
    writers = [principals[n] for n in sorted(allowed) if n in principals]
    for writer in writers:
        for path in sensitive:
            msg = cls()
            json_format.Parse(text, msg)
            if set_path(msg, path, nonce):
                label = f"{writer.name} sets {path}"
                call = Call(label, write.path, (msg.SerializeToString(),), writer)
                steps.append(Aimed("1", call))
    return steps


def plan_tampering(
    policy: Policy,
    templates: Mapping[str, str],
    sandbox: list[str],
    own_ids: list[str],
    principals: Mapping[str, Principal],
    sensitive: Sequence[str],
    nonce: str,
) -> Tampering:
    """AUTHZ-003's plan on ``sandbox[0]``: only sandbox records are touched.

    Raises:
        NotApplicable: no write and unary read name an own or sandbox ID, or no principal
            may read records back.
    """
    known = sandbox + own_ids
    reads, writes = _reads_and_writes(policy, templates, known)
    if not writes or not reads:
        raise NotApplicable(
            "needs a write and a unary read method whose templates name an own or sandbox ID"
        )
    read, sid = reads[0], sandbox[0]
    allowed = sorted(policy.allowed(read.path) or ())
    reader = principals.get("auditor") or next(
        (principals[n] for n in allowed if n in principals), None
    )
    if reader is None:
        raise NotApplicable(f"no principal may call {read.path} to read records back")
    text = templates[read.path]
    request = policy.catalogue.request_bytes(
        read.path, swap_id(text, named_id(text, known) or "", sid)
    )
    steps: list[Aimed] = []
    for w in writes:
        text = swap_id(templates[w.path], named_id(templates[w.path], known) or "", sid)
        steps += _tamper_steps(policy, w, text, principals, sensitive, nonce, known)
    skipped = []
    if not any(s.ref == "1" for s in steps):
        need = "authz.sensitive_fields naming a string field of a write an allowed writer sends"
        skipped.append(Observation("sensitive fields set", "not sent", need, Status.SKIP).of("1"))
    if not any(s.ref == "2" for s in steps):
        need = "auth.principals.least-privileged and a write the matrix denies it"
        for ref in ("2", "3"):
            skipped.append(Observation("a denied write", "not sent", need, Status.SKIP).of(ref))
    read_call = Call(f"{sid} read back by {reader.name}", read.path, (request,), reader)
    return Tampering(read_call, read.output_type, tuple(steps), tuple(skipped))


def send_tampering(run: Run, plan: Tampering) -> list[Tried]:
    """Each step in order: the denied write between two reads, each injection then a read."""

    def one(call: Call) -> CallResult:
        return send(run, [call])[0][1]

    tried = []
    for step in plan.steps:
        before = one(plan.read) if step.ref == "2" else None
        write = one(step.call)
        tried.append(Tried(step, write, one(plan.read), before))
    return tried


def judge_unchanged(read: Call, before: CallResult, after: CallResult) -> Observation:
    """AUTHZ-003 (3): the record reads back byte-identical after a denied write.

    A read-back that did not reach the service, or a reader that could not read the record
    before, shows nothing: INCONCLUSIVE.
    """
    where = f"{read.label} after the denied write"
    same = before.responses == after.responses and before.code == after.code
    if lost(before) or lost(after):
        observed = (
            f"read-back did not reach the service: before {before.status}, after {after.status}"
        )
        status = Status.INCONCLUSIVE
    elif before.code != OK:
        observed, status = f"the record could not be read: {before.summary()}", Status.INCONCLUSIVE
    else:
        observed, status = ("unchanged", Status.PASS) if same else ("changed", Status.FAIL)
    return Observation(
        where, observed, "byte-identical", status, Severity.CRITICAL, after.request_id
    ).of("3")


def judge_injection(
    catalogue: MethodCatalogue,
    read_type: str,
    step: Aimed,
    result: CallResult,
    back: CallResult,
    nonce: str,
) -> Observation:
    """AUTHZ-003 (1): a write setting a sensitive field is refused (3 or 7) or not stored.

    A refused write whose value shows in the read-back is a partial write (FAIL); an
    accepted one needs a read-back that reached the service and decoded.
    """
    cls = catalogue.message_class(read_type)
    stored, undecodable = False, 0
    for blob in back.responses:
        try:
            stored = stored or nonce in strings_in(cls.FromString(blob))
        except DecodeError:
            undecodable += 1
    observed = result.summary() + ("; the injected value was stored" if stored else "")
    read_back = back.code == OK and not undecodable
    if stored:
        status = Status.FAIL
    elif result.code in (INVALID_ARGUMENT, DENIED):
        status = Status.PASS
    elif lost(result) or not read_back:
        observed += f"; read back: {back.summary()}"
        status = Status.INCONCLUSIVE
    else:
        status = Status.PASS
    return Observation(
        step.where,
        observed,
        "refused (3 or 7), or the value not stored",
        status,
        Severity.CRITICAL,
        result.request_id,
    ).of("1")


def judge_tampering(
    catalogue: MethodCatalogue, plan: Tampering, tried: Sequence[Tried], nonce: str
) -> list[Observation]:
    """AUTHZ-003: every step of ``plan`` as ``tried``, judged."""
    out = list(plan.skipped)
    for t in tried:
        if t.aimed.ref == "2" and t.before is not None:
            out.append(refused(t.aimed.call, t.write, expected=(DENIED,), low=()).of("2"))
            out.append(judge_unchanged(plan.read, t.before, t.after))
        else:
            out.append(judge_injection(catalogue, plan.read_type, t.aimed, t.write, t.after, nonce))
    return out


@check("AUTHZ-003", probes=AUTHZ_003)
def no_escalation_by_tampering(run: Run) -> Outcome:
    """No escalation or side effects from tampered or denied requests.

    Needs ``--hipaa-allow-mutations`` and ``authz.sandbox_ids``; only sandbox records are
    touched. A reader (``auditor``, else the first principal that can read) snapshots a
    sandbox record. The ``least-privileged`` principal then attempts each write the
    matrix denies it: PERMISSION_DENIED, and the record must read back byte-identical.
    Every principal allowed to write then sends the write with each
    ``authz.sensitive_fields`` path set to a harness value: it must be refused
    (INVALID_ARGUMENT or PERMISSION_DENIED) or the stored value must not be the injected
    one. A read-back that does not reach the service is INCONCLUSIVE.
    """
    if not run.config.get("safety.allow_mutations"):
        raise NotApplicable("needs --hipaa-allow-mutations (or safety.allow_mutations = true)")
    sandbox = run.config.str_list("authz.sandbox_ids")
    if not sandbox:
        raise NotApplicable("no authz.sandbox_ids: no record may be changed")
    policy = policy_or_skip(run)
    own = [i for ids in run.config.table("authz.own_ids").values() for i in ids]
    nonce = f"hipaa-{run_nonce(run)}"
    plan = plan_tampering(
        policy,
        _templates(run, policy),
        sandbox,
        own,
        run.principals,
        run.config.str_list("authz.sensitive_fields"),
        nonce,
    )
    observations = judge_tampering(policy.catalogue, plan, send_tampering(run, plan), nonce)
    return Outcome.from_observations(
        CATALOGUE["AUTHZ-003"], observations, passed="no write across owners, no partial write"
    )


# -- AUTHZ-004 --------------------------------------------------------------------------

AUTHZ_004 = (
    Probe("streams", "client-streaming and bidi: own, foreign, own; the foreign one refused"),
    Probe("subscriptions", "server streams subscribed to a foreign ID and to a wildcard"),
)


def _stream_calls(
    catalogue: MethodCatalogue,
    path: str,
    text: str,
    named: str,
    foreign_ids: Sequence[str],
    principal: Principal,
) -> list[Aimed]:
    """One stream method's calls for one principal.

    Own, foreign, own on a client stream; a foreign and a wildcard subscription on a server
    stream (no wildcard where the template writes the ID as a number: an integer field
    cannot hold one).
    """
    build, name, foreign = catalogue.request_bytes, principal.name, frozenset(foreign_ids)
    other = foreign_ids[0]
    if catalogue.method(path).client_streaming:
        msgs = (build(path, text), build(path, swap_id(text, named, other)), build(path, text))
        label = f"{name} sends own, foreign {other}, own"
        return [Aimed("streams", Call(label, path, msgs, principal), foreign)]
    return [
        Aimed(
            "subscriptions",
            Call(label, path, (build(path, swap_id(text, named, target)),), principal),
            foreign,
        )
        for label, target in (
            (f"{name} subscribes to foreign {other}", other),
            *[(f"{name} subscribes to the wildcard", "*")] * (not as_number(text, named)),
        )
    ]


def plan_streams(
    policy: Policy,
    methods: Sequence[str],
    templates: Mapping[str, str],
    own: Mapping[str, Sequence[str]],
    foreign: Mapping[str, Sequence[str]],
    principals: Mapping[str, Principal],
) -> tuple[list[Aimed], list[Observation]]:
    """AUTHZ-004's calls: each principal with own and foreign IDs on each stream it may call.

    Returns the calls and a SKIP observation per method whose template names none of the
    principal's own IDs.
    """
    aimed: list[Aimed] = []
    skipped: list[Observation] = []
    for name, foreign_ids in foreign.items():
        principal, mine = principals.get(name), list(own.get(name, []))
        if principal is None or not mine or not foreign_ids:
            continue
        for path in methods:
            if name not in (policy.allowed(path) or ()):
                continue
            text = templates.get(path, "")
            named = named_id(text, mine)
            if named is not None:
                aimed += _stream_calls(policy.catalogue, path, text, named, foreign_ids, principal)
                continue
            client = policy.catalogue.method(path).client_streaming
            need = "a template naming one of its own IDs"
            skip = Observation(f"{path} as {name}", "not sent", need, Status.SKIP)
            skipped.append(skip.of("streams" if client else "subscriptions"))
    return aimed, skipped


def kinds_absent(catalogue: MethodCatalogue, methods: Sequence[str]) -> list[Observation]:
    """A probe per stream kind that no declared method is: it does not apply to the service.

    A service with server streams only has no client stream to send a foreign message on,
    and one with client streams only nothing to subscribe to. A method the descriptors do
    not declare counts as neither (its call is planned, and judged, as it is).
    """
    kinds = set()
    for path in methods:
        try:
            kinds.add(catalogue.method(path).client_streaming)
        except KeyError:
            return []
    out = []
    if True not in kinds:
        why = "no authz.stream_methods entry streams from the client (client-streaming, bidi)"
        out.append(not_applicable("streams", "client-streaming and bidi methods", why))
    if False not in kinds:
        why = "no authz.stream_methods entry is a server stream"
        out.append(not_applicable("subscriptions", "server streams", why))
    return out


def statuses_in(message: Any, depth: int = 0) -> Iterator[int]:
    """The codes of the ``google.rpc.Status`` messages in ``message`` (nested or packed)."""
    name = message.DESCRIPTOR.full_name
    if name == RPC_STATUS:
        yield int(message.code)
    elif name == "google.protobuf.Any" and message.type_url.rsplit("/", 1)[-1] == RPC_STATUS:
        with contextlib.suppress(DecodeError):
            yield int(status_pb2.Status.FromString(message.value).code)
    if depth >= 32:
        return
    for fd, value in message.ListFields():
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        for item in value if is_repeated(fd) else [value]:
            yield from statuses_in(item, depth + 1)


def per_message_denials(catalogue: MethodCatalogue, method: str, responses: Iterable[bytes]) -> int:
    """How many responses carry a ``google.rpc.Status`` PERMISSION_DENIED (7).

    Per-message errors, as a stream that refuses one message and goes on sends them.
    """
    cls = catalogue.message_class(catalogue.method(method).output_type)
    count = 0
    for blob in responses:
        with contextlib.suppress(DecodeError):
            count += any(c == DENIED.value[0] for c in statuses_in(cls.FromString(blob)))
    return count


def details_ids(catalogue: MethodCatalogue, result: CallResult, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` the status details (``grpc-status-details-bin``) name."""
    found: set[str] = set()
    for key, value in result.trailing_metadata:
        if key != "grpc-status-details-bin":
            continue
        blob = value if isinstance(value, bytes) else value.encode("latin-1")
        try:
            found |= ids_named(
                values_in(status_pb2.Status.FromString(blob), catalogue.message_class), ids
            )
        except DecodeError:
            found |= ids_named(wire_values(blob), ids)
    return found


def judge_stream(
    catalogue: MethodCatalogue, aimed: Aimed, result: CallResult, per_message: bool
) -> Observation:
    """AUTHZ-004: no foreign data on any stream, in responses or status details.

    A subscription is refused with 7 and zero messages. A client stream must end
    PERMISSION_DENIED, or, under ``authz.per_message_errors``, answer the foreign message
    with a per-message error: a response carrying a ``google.rpc.Status``
    PERMISSION_DENIED. Responses or details that do not decode, a stream that never
    reached the service, or one that ended OK with no per-message error recognised, show
    no refusal: INCONCLUSIVE.
    """
    path = aimed.call.method
    leaked, undecodable = ids_in(catalogue, path, result.responses, aimed.foreign)
    leaked |= details_ids(catalogue, result, aimed.foreign)
    if leaked:
        observed = f"{result.summary()}; foreign IDs delivered: {', '.join(sorted(leaked))}"
        return Observation(
            aimed.where, observed, "no foreign data", Status.FAIL, Severity.CRITICAL,
            result.request_id,
        ).of(aimed.ref)  # fmt: skip
    if aimed.ref == "subscriptions":
        judged = refused(aimed.call, result, expected=(DENIED,), low=(NOT_FOUND,))
        return judged.of(aimed.ref)
    observed, expected = (
        result.summary(),
        "the foreign message refused: stream ends "
        + (
            "PERMISSION_DENIED (7), or a per-message google.rpc.Status PERMISSION_DENIED"
            if per_message
            else "PERMISSION_DENIED (7)"
        ),
    )
    denials = per_message_denials(catalogue, path, result.responses) if per_message else 0
    status = Status.FAIL
    if undecodable or UNDECODABLE_DETAILS in result.carried():
        observed += "; responses or status details that do not decode"
        status = Status.INCONCLUSIVE
    elif result.code == DENIED or denials:
        status = Status.PASS
    elif lost(result):
        status = Status.INCONCLUSIVE
    elif per_message and result.code == OK:
        observed += "; no per-message error recognised"
        status = Status.INCONCLUSIVE
    return Observation(
        aimed.where, observed, expected, status, Severity.HIGH, result.request_id
    ).of(aimed.ref)


@check("AUTHZ-004", probes=AUTHZ_004)
def per_message_authorization(run: Run) -> Outcome:
    """Per-message authorization on streams.

    For each ``authz.stream_methods`` entry and each principal with ``authz.own_ids`` and
    ``authz.foreign_ids`` allowed on it: a client-streaming or bidi call sends own, foreign,
    own; no foreign ID may come back (in responses or status details) and the stream must
    end PERMISSION_DENIED, or, under ``authz.per_message_errors``, answer the foreign
    message with a per-message error (a response carrying a ``google.rpc.Status``
    PERMISSION_DENIED). A server stream is subscribed to a foreign ID and to the wildcard
    ``*``: PERMISSION_DENIED with zero messages.
    """
    methods = run.config.str_list("authz.stream_methods")
    own, foreign = run.config.table("authz.own_ids"), run.config.table("authz.foreign_ids")
    if not methods or not foreign:
        raise NotApplicable("needs authz.stream_methods, authz.own_ids and authz.foreign_ids")
    policy = policy_or_skip(run)
    templates = {path: template_text(run, path) for path in methods}
    aimed, skipped = plan_streams(policy, methods, templates, own, foreign, run.principals)
    if not aimed and not skipped:
        raise NotApplicable(
            "no principal with own and foreign IDs may call an authz.stream_methods entry"
        )
    per_message = bool(run.config.get("authz.per_message_errors", False))
    judged = [judge_stream(policy.catalogue, a, r, per_message) for a, r in _sent(run, aimed)]
    return Outcome.from_observations(
        CATALOGUE["AUTHZ-004"],
        kinds_absent(policy.catalogue, methods) + skipped + judged,
        passed="every stream message authorized on its own",
    )


# -- AUTHZ-005 --------------------------------------------------------------------------

AUTHZ_005 = (
    Probe(
        "emergency",
        "break-glass calls of authz.emergency_methods succeed",
        needs=("auth.fixtures.break_glass",),
    ),
    Probe(
        "others",
        "break-glass calls of other methods get PERMISSION_DENIED",
        needs=("auth.fixtures.break_glass",),
    ),
    Probe(
        "audit",
        "each emergency call's audit event is flagged emergency with a reason",
        needs=("auth.fixtures.break_glass",),
    ),
)


def plan_break_glass(
    policy: Policy,
    templates: Mapping[str, str],
    own_ids: list[str],
    foreign_id: str,
    emergency: Sequence[str],
    token: str,
    where: Presentation = BEARER,
) -> list[Aimed]:
    """AUTHZ-005's calls, with the break-glass token, for a record outside the normal scope.

    Every method whose template names an own ID is called for ``foreign_id``; writes only
    when mutations are allowed. The token travels as ``where`` says (``auth.header``).
    """
    aimed = []
    for m in policy.protected():
        if policy.is_write(m.path) and not policy.allow_mutations:
            continue
        text = templates.get(m.path, "")
        named = named_id(text, own_ids)
        if named is None:
            continue
        body = policy.catalogue.request_bytes(m.path, swap_id(text, named, foreign_id))
        ref = "emergency" if m.path in emergency else "others"
        label = (
            f"break-glass {'emergency' if ref == 'emergency' else 'other'} call for {foreign_id}"
        )
        aimed.append(Aimed(ref, Call(label, m.path, (body,), None, bearer(token, where))))
    return aimed


def judge_break_glass(sent: Sequence[tuple[Aimed, CallResult]]) -> list[Observation]:
    """AUTHZ-005 (emergency, others): emergency methods answered, the others refused.

    Emergency methods must succeed (OK): PERMISSION_DENIED or UNAUTHENTICATED is a FAIL,
    and any other answer (an error such as INTERNAL, or a call that never reached the
    service) shows no emergency access: INCONCLUSIVE. The others must get
    PERMISSION_DENIED.
    """
    out = []
    for aimed, result in sent:
        if aimed.ref == "others":
            out.append(refused(aimed.call, result, expected=(DENIED,), low=()).of("others"))
            continue
        if result.code == OK:
            status = Status.PASS
        elif result.code in (DENIED, UNAUTHENTICATED):
            status = Status.FAIL
        else:
            status = Status.INCONCLUSIVE
        out.append(
            Observation(
                aimed.where,
                result.summary(),
                "allowed: OK",
                status,
                Severity.MEDIUM,
                result.request_id,
            ).of("emergency")
        )
    return out


def judge_flags(
    request_ids: Sequence[str],
    events: Mapping[str, Sequence[dict[str, Any]]],
    problem: str,
    lookup: Callable[[dict[str, Any], str], Any],
) -> list[Observation]:
    """AUTHZ-005 (audit): each emergency call's events are flagged, with a reason.

    Every event must have the emergency marker JSON ``true`` (not ``"true"``, ``1`` or any
    other truthy value) and a reason that is non-empty text; ``lookup(event, name)`` reads
    a logical field through ``audit.field_map``. An unreadable source or a missing event is
    INCONCLUSIVE.
    """
    out = []
    for rid in request_ids:
        evs = events.get(rid, [])
        where = f"audit event for {rid}"
        if problem or not evs:
            observed = problem or "none within audit.delivery_timeout_s"
            expected = "an event flagged emergency with a reason"
            out.append(Observation(where, observed, expected, Status.INCONCLUSIVE, request_id=rid))
            continue
        flagged = all(
            lookup(e, "emergency") is True and _a_reason(lookup(e, "reason")) for e in evs
        )
        out.append(
            Observation(
                where,
                "flagged with a reason" if flagged else "not flagged as emergency, or no reason",
                "emergency marker true and a non-empty reason",
                Status.PASS if flagged else Status.FAIL,
                Severity.HIGH,
                rid,
            )
        )
    return [o.of("audit") for o in out]


def _a_reason(value: Any) -> bool:
    """A reason is text with something in it (``true`` or ``1`` is no reason)."""
    return isinstance(value, str) and bool(value.strip())


@check("AUTHZ-005", probes=AUTHZ_005)
def break_glass(run: Run) -> Outcome:
    """Emergency (break-glass) access constrained and flagged.

    With ``auth.fixtures.break_glass``: each ``authz.emergency_methods`` entry, called for
    a record outside the normal scope (a foreign ID), must succeed; other methods called
    for a foreign record must get PERMISSION_DENIED; and every emergency call must have an
    audit event with the emergency marker true and a non-empty reason
    (``audit.field_map.emergency`` / ``reason``). Under tuple correlation the calls go
    apart from every other call to their methods (the fixture's user may be anyone's), and
    one whose event another call made ambiguous goes again once
    (:func:`harness.audit.send_matched`). SKIP when no break-glass mechanism is
    declared (ATT-006 must then cover the procedure); INCONCLUSIVE when the audit source
    cannot be read.
    """
    fixtures = principals_from(
        run.config.table("auth.fixtures"), "config", presentation=presentation_of(run.config)
    )
    emergency = run.config.str_list("authz.emergency_methods")
    if "break_glass" not in fixtures or not emergency:
        raise NotApplicable(
            "no break-glass mechanism declared (auth.fixtures.break_glass, "
            "authz.emergency_methods); ATT-006 must cover it"
        )
    policy = policy_or_skip(run)
    own = [i for ids in run.config.table("authz.own_ids").values() for i in ids]
    foreign = [i for ids in run.config.table("authz.foreign_ids").values() for i in ids]
    if not foreign:
        raise NotApplicable("needs authz.foreign_ids: a record outside the normal scope")
    token = fixtures["break_glass"].token()
    where = fixtures["break_glass"].presentation
    templates = _templates(run, policy)
    aimed = plan_break_glass(policy, templates, own, foreign[0], emergency, token, where)
    urgent = [a.call for a in aimed if a.ref == "emergency"]

    def owed(call: Call, result: CallResult) -> bool:
        return result.code == OK and any(call is u for u in urgent)

    made, polled = audit.send_matched(run, [a.call for a in aimed], send, owed)
    observations = judge_break_glass([(a, r) for a, (_, r) in zip(aimed, made, strict=True)])
    answered = [
        o.request_id
        for o in observations
        if o.ref == "emergency" and o.status is Status.PASS and o.request_id
    ]
    if answered:

        def lookup(event: dict[str, Any], name: str) -> Any:
            return audit.field(run, event, name)

        problem = audit.unmatched(polled, answered)
        observations += judge_flags(answered, polled.found, problem, lookup)
    return Outcome.from_observations(
        CATALOGUE["AUTHZ-005"],
        observations,
        passed="break-glass limited to emergency methods and flagged in the audit log",
    )
