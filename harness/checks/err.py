"""Error hygiene (ERR-*): what error statuses tell a caller.

Each control judges the calls it plans: its own probes, and the calls of AUTHN-001,
AUTHZ-001 and FUZZ-001 (:mod:`harness.plans`, made once per run by whichever control asks
first), never the run's journal, whose content depends on which controls ran before: so
no verdict depends on test order or ``-k`` selection. Planning and judging are pure
functions (``*_plan``, ``judge_*``): recorded answers are decided by status codes and
payloads, never by one stack's error strings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from jwt.utils import base64url_decode

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult, code_text
from harness.checks import check
from harness.oracles import LEAKS, unreached
from harness.outcome import Observation, Outcome, Probe, Status, filed
from harness.plans.calls import (
    Call,
    absent_id,
    bearer,
    named_id,
    send,
    swap_id,
    template_text,
)
from harness.plans.fuzzcases import fuzz_calls
from harness.plans.tokens import Base, authn_basic_calls, authz_matrix_calls, bases, run_nonce
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run
from harness.tokens import IssuerKeys, harness_key, sign, with_signature

#: Statuses the client library makes up itself: their text describes our side, not the server.
CLIENT_SIDE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
DEBUG_INFO = "google.rpc.DebugInfo"
_SERVER_BANNER = re.compile(r"\d+\.\d+")
_DETAILS_KEY = "grpc-status-details-bin"
UNKNOWN_SERVICE = "/hipaa.harness.v1.Probe/Nope"
#: A length-delimited field 1 whose length (a 5-byte varint) runs far past the message.
MALFORMED = b"\x0a\xff\xff\xff\xff\x0f\x12"
LEAST = "least-privileged"


def shared_calls(run: Run) -> list[CallResult]:
    """The calls of AUTHN-001, AUTHZ-001 and FUZZ-001 (the liveness checks after fuzzing too).

    Each plan is made once per run, by whichever control asks first, so a verdict over
    them depends neither on test order nor on ``-k``.
    """
    out: list[CallResult] = []
    for planned in (authn_basic_calls(run), authz_matrix_calls(run)):
        if not isinstance(planned, str):
            out += [result for _, result in planned]
    fuzzed = fuzz_calls(run)
    if not isinstance(fuzzed, str):
        for method in fuzzed:
            out += method.results
            out += [method.healthy] if method.healthy is not None else []
    return out


def texts(result: CallResult) -> Iterable[tuple[str, str]]:
    """(where, text) pairs a caller sees in a failed call: message, details, metadata.

    Binary metadata is read as UTF-8 text; status details that are not a
    ``google.rpc.Status`` are scanned as they came, read as text.
    """
    yield "status message", result.details
    for key, value in (*result.initial_metadata, *result.trailing_metadata):
        blob = value.encode("latin-1") if isinstance(value, str) else value
        if key != _DETAILS_KEY:
            yield f"metadata {key}", value if isinstance(value, str) else _text(value)
            continue
        try:
            status = status_pb2.Status.FromString(blob)
        except DecodeError:
            yield "status details (not a google.rpc.Status)", _text(blob)
            continue
        yield "status details", status.message
        for detail in status.details:
            yield f"status detail {detail.type_url.rsplit('/', 1)[-1]}", _text(detail.value)


def _text(blob: bytes) -> str:
    return blob.decode("utf-8", "replace")


def detail_types(result: CallResult) -> tuple[str, ...]:
    """The type names of the ``google.rpc.Status`` details in the trailers."""
    for key, value in result.trailing_metadata:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return tuple(
                    d.type_url.rsplit("/", 1)[-1]
                    for d in status_pb2.Status.FromString(value).details
                )
            except DecodeError:
                return ("<undecodable>",)
    return ()


# -- ERR-001 ----------------------------------------------------------------------------

ERR_001_PROBES = (
    Probe("unknown-service", "an unknown service: UNIMPLEMENTED"),
    Probe("unknown-method", "an unknown method of a declared service: UNIMPLEMENTED"),
    Probe("two-messages", "two request messages to a unary method: recorded, at most WARN"),
    Probe("malformed", "malformed protobuf bytes: INTERNAL or INVALID_ARGUMENT"),
    Probe(
        "leaks",
        "every error status of these and the shared AUTHN/AUTHZ/FUZZ calls: no leak pattern, "
        "no DebugInfo",
    ),
)

#: What each dedicated probe must end with.
_DEDICATED_WANT: dict[str, tuple[grpc.StatusCode, ...]] = {
    "unknown-service": (grpc.StatusCode.UNIMPLEMENTED,),
    "unknown-method": (grpc.StatusCode.UNIMPLEMENTED,),
    "malformed": (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT),
}
#: Refusals that come before routing or parsing (an authenticating proxy, an interceptor).
_REFUSED_FIRST = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


def dedicated_plan(
    unary: str, request: bytes, least: Principal | None, seed: int
) -> list[tuple[str, Call]]:
    """ERR-001's four dedicated calls, each with its probe, sent as ``least``.

    ``unary`` is a unary method (``request`` a valid request for it); the unknown method
    is asked of its service.
    """
    service = unary.rsplit("/", 1)[0]
    return [
        ("unknown-service", Call("unknown service", UNKNOWN_SERVICE, (b"",), least)),
        (
            "unknown-method",
            Call(
                "unknown method on a declared service",
                f"{service}/Nope{seed % 1000}",
                (b"",),
                least,
            ),
        ),
        (
            "two-messages",
            Call("two request messages to a unary method", unary, (request, request), least),
        ),
        ("malformed", Call("malformed protobuf bytes", unary, (MALFORMED,), least)),
    ]


def judge_dedicated(ref: str, call: Call, result: CallResult) -> Observation:
    """One dedicated probe: the status it must end with, and no response message.

    The cardinality probe (``two-messages``) is recorded: OK is what common stacks answer,
    only UNKNOWN (an unhandled exception) is a WARN (low). A call that never reached the
    service, or was refused (UNAUTHENTICATED, PERMISSION_DENIED) before it reached the
    routing or parsing it tests, is INCONCLUSIVE: neither a pass nor a finding.
    """
    where = f"{call.label} -> {call.method}"
    observed = result.summary()
    if ref == "two-messages":
        expected = "recorded; UNIMPLEMENTED preferred"
        status = Status.WARN if result.code == grpc.StatusCode.UNKNOWN else Status.PASS
        severity = Severity.LOW
    else:
        want = _DEDICATED_WANT[ref]
        expected = " or ".join(code_text(c) for c in want)
        ok = result.code in want and not result.responses
        status = Status.PASS if ok else Status.FAIL
        severity = Severity.MEDIUM
    if unreached(result):
        status = Status.INCONCLUSIVE
        observed += " (the call did not reach the service)"
    elif not result.responses and result.code in _REFUSED_FIRST:
        status = Status.INCONCLUSIVE
        observed += " (refused before it reached what the probe tests)"
    return Observation(where, observed, expected, status, severity, result.request_id).of(ref)


def judge_banners(results: Iterable[CallResult]) -> list[Observation]:
    """A ``server`` response header with a product version: WARN (low), once per value."""
    seen: set[str] = set()
    out = []
    for result in results:
        for key, value in result.initial_metadata:
            if key != "server" or not isinstance(value, str) or value in seen:
                continue
            if _SERVER_BANNER.search(value):
                seen.add(value)
                out.append(
                    Observation(
                        f"server header on {result.method}",
                        value,
                        "no product version",
                        Status.WARN,
                        Severity.LOW,
                        result.request_id,
                    )
                )
    return out


def judge_error_texts(
    result: CallResult, allowed: Iterable[str] = (), domains: Iterable[str] = ()
) -> list[Observation]:
    """One error status: a DebugInfo detail (high), and each leak kind its texts match.

    Texts in ``errors.allowed_messages`` are not scanned; ``errors.internal_domains`` are
    matched case-insensitively. Each kind is reported once per place (message, details,
    metadata key) at the worst severity its patterns carry.
    """
    return [o for _, o in _findings(result, set(allowed), [d.lower() for d in domains])]


def _findings(
    result: CallResult, allowed: set[str], domains: list[str]
) -> list[tuple[tuple[str, str], Observation]]:
    """:func:`judge_error_texts`, each finding keyed by (place, kind) within its call."""
    heading = f"{result.method} ({result.status})"
    out = []
    if DEBUG_INFO in detail_types(result):
        found = "google.rpc.DebugInfo detail"
        debug = Observation(
            heading, found, "no DebugInfo", Status.FAIL, Severity.HIGH, result.request_id
        )
        out.append((("status details", DEBUG_INFO), debug))
    for where, text in texts(result):
        if not text or text in allowed:
            continue
        hits: dict[str, Severity] = {}
        for kind, pattern, sev in LEAKS:
            if pattern.search(text):
                hits[kind] = max(sev, hits.get(kind, sev))
        if any(d in text.lower() for d in domains):
            hits.setdefault("internal domain", Severity.MEDIUM)
        out += [
            (
                (where, kind),
                Observation(
                    f"{where} of {heading}",
                    f"{kind} in {text[:160]!r}",
                    f"generic text, no {kind}",
                    Status.FAIL,
                    sev,
                    result.request_id,
                ),
            )
            for kind, sev in hits.items()
        ]
    return out


def server_errors(results: Iterable[CallResult]) -> list[CallResult]:
    """The error statuses the server sent: not OK, and not made up by the client library.

    UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED describe our side, not the server's words.
    """
    return [r for r in results if r.code != grpc.StatusCode.OK and r.code not in CLIENT_SIDE]


def judge_leaks(
    results: Sequence[CallResult], allowed: Iterable[str] = (), domains: Iterable[str] = ()
) -> list[Observation]:
    """Every error status the server sent, scanned (:func:`judge_error_texts`): ``leaks``.

    The same leak in the same place of the same method is reported once. With no error
    status to scan nothing is judged (a SKIP that says so), never a PASS.
    """
    waived, lowered = set(allowed), [d.lower() for d in domains]
    errors = server_errors(results)
    out = judge_banners(results)
    reported: set[tuple[str, tuple[str, str]]] = set()
    for result in errors:
        for key, o in _findings(result, waived, lowered):
            if (result.method, key) not in reported:
                reported.add((result.method, key))
                out.append(o)
    if errors:
        scanned = f"{len(errors)} error statuses scanned"
        out.append(Observation(scanned, "scanned", "no leak", Status.PASS))
    else:
        out.append(Observation("error statuses of the run", "none", "an error status", Status.SKIP))
    return filed("leaks", out)


@check("ERR-001", probes=ERR_001_PROBES)
def errors_sanitised(run: Run) -> Outcome:
    """Error details sanitised.

    Four dedicated probes (unknown service and method must get UNIMPLEMENTED, malformed
    bytes INTERNAL or INVALID_ARGUMENT; two messages to a unary method is recorded, at most
    WARN), sent to a protected unary method, else to the liveness method. Then every
    non-OK status of these calls and of the calls it shares with AUTHN-001, AUTHZ-001 and
    FUZZ-001 (:func:`shared_calls`: made once per run, so the verdict depends neither on
    test order nor on ``-k``) has its message, ``grpc-status-details-bin`` (decoded, or
    as it came when it is not a ``google.rpc.Status``) and metadata scanned for stack
    traces, SQL, absolute paths, private addresses, ``errors.internal_domains`` and
    version banners, and for a ``google.rpc.DebugInfo`` detail. A ``server`` header with a
    version is WARN (low). Statuses the client library generates (UNAVAILABLE,
    DEADLINE_EXCEEDED, CANCELLED) are not the server's words and are not scanned.
    """
    unary, request = _unary_method(run)
    plan = dedicated_plan(unary, request, run.principal(LEAST), run.options.seed)
    sent = send(run, [call for _, call in plan])
    observations = [
        judge_dedicated(ref, call, result)
        for (ref, _), (call, result) in zip(plan, sent, strict=True)
    ]
    allowed = run.config.str_list("errors.allowed_messages")
    domains = run.config.str_list("errors.internal_domains")
    calls = [result for _, result in sent] + shared_calls(run)
    observations += judge_leaks(calls, allowed, domains)
    scanned = len(server_errors(calls))
    return Outcome.from_observations(
        CATALOGUE["ERR-001"],
        observations,
        passed=f"{scanned} error statuses carry generic text only",
    )


def _unary_method(run: Run) -> tuple[str, bytes]:
    """The first protected unary method and its request, else the liveness method."""
    policy = Policy.of(run)
    if policy is not None:
        for m in policy.protected():
            if not m.client_streaming and not m.server_streaming:
                return m.path, policy.request(run, m.path)
    return run.liveness, b""


# -- ERR-002 ----------------------------------------------------------------------------

ERR_002_PROBES = (
    Probe(
        "codes",
        "no UNKNOWN (2) or DATA_LOSS (15) in its calls and the shared AUTHN/AUTHZ/FUZZ calls",
    ),
    Probe(
        "authn",
        "authentication failure variants indistinguishable",
        needs=("auth.principals",),
    ),
    Probe(
        "existence",
        "foreign and nonexistent IDs indistinguishable (existence hiding)",
        required=False,
        needs=("authz.existence_hiding",),
    ),
)
#: At most this many UNKNOWN / DATA_LOSS calls are listed.
SHOWN = 10
AUTHN_COMPARED = "authentication failures compared"


def judge_codes(results: Sequence[CallResult]) -> list[Observation]:
    """UNKNOWN (2) and DATA_LOSS (15) must never occur: each (up to ten) is a FAIL.

    Filed under ``codes``. Only calls that reached the service count: no call at all is
    nothing to judge (a SKIP), and calls none of which reached the service
    (UNAVAILABLE, DEADLINE_EXCEEDED, or a proxy's own answer without ``grpc-status``,
    which gRPC clients map to INTERNAL or UNKNOWN) show no mapping either way
    (INCONCLUSIVE); neither is ever a PASS.
    """
    reached = [r for r in results if not unreached(r)]
    bad = [r for r in reached if r.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS)]
    expected = "never UNKNOWN (2) or DATA_LOSS (15)"
    lost = len(results) - len(reached)
    if not results:
        out = [Observation("calls of the run", "none", "calls to judge", Status.SKIP)]
    elif not reached:
        observed = f"none of {len(results)} calls reached the service"
        out = [Observation("calls of the run", observed, expected, Status.INCONCLUSIVE)]
    elif not bad:
        counted = f"{len(reached)} calls that reached the service"
        counted += f" ({lost} more did not)" if lost else ""
        out = [Observation(counted, "no UNKNOWN or DATA_LOSS", expected, Status.PASS)]
    else:
        out = [
            Observation(r.method, r.summary(), expected, Status.FAIL, Severity.MEDIUM, r.request_id)
            for r in bad[:SHOWN]
        ]
    return filed("codes", out)


def shape(result: CallResult) -> tuple[grpc.StatusCode, str, tuple[str, ...]]:
    """What a caller can tell a refusal by: (code, message, detail types)."""
    return result.code, result.details, detail_types(result)


#: What counts as a refusal in each comparison: a credential refused (``authn``), a
#: record refused or hidden (``existence``). Any other error is no refusal.
REFUSALS: dict[str, frozenset[grpc.StatusCode]] = {
    "authn": frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}),
    "existence": frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND}),
}


def judge_uniform(ref: str, what: str, sent: Sequence[tuple[Call, CallResult]]) -> Observation:
    """Refusals that must look alike: one (code, message, detail types) for all of them.

    Filed under ``ref`` (``authn``: token variants; ``existence``: foreign vs. absent IDs).

    Accepted variants (OK or data) are other controls' findings and are left out. Answers
    a caller can tell apart FAIL. Otherwise a variant that never reached the service, or
    answers that are errors rather than refusals (:data:`REFUSALS`: INTERNAL from a proxy,
    UNKNOWN from a crash), leave the comparison INCONCLUSIVE, and fewer than two refusals
    leave nothing to compare.
    """
    expected = "one identical (code, message, detail types) for every refusal"
    missed: list[str] = []
    answered, accepted = [], []
    for call, result in sent:
        if unreached(result):
            missed.append(call.label)
        elif result.code != grpc.StatusCode.OK and not result.responses:
            answered.append((call, result))
        else:
            accepted.append(call.label)
    described = "; ".join(f"{c.label}: {r.summary()}" for c, r in answered) or "none refused"
    if accepted:
        described += f" (accepted, so not compared: {', '.join(accepted)})"
    if len({shape(r) for _, r in answered}) > 1:
        return Observation(what, described, expected, Status.FAIL, Severity.MEDIUM).of(ref)
    errors = [c.label for c, r in answered if r.code not in REFUSALS.get(ref, frozenset())]
    if missed:
        observed = f"{', '.join(missed)}: did not reach the service"
    elif errors:
        observed = f"{described}: errors, not refusals"
    elif len(answered) < 2:
        observed = f"{described}: fewer than two refusals to compare"
    else:
        return Observation(what, described, expected, Status.PASS).of(ref)
    return Observation(what, observed, expected, Status.INCONCLUSIVE).of(ref)


#: The variants only the issuer's private key can make: validly signed, wrong otherwise.
MINTED = ("expired", "wrong aud", "unknown user")
#: Claims that name the user, besides ``sub``: an unknown user has none of T's.
_USER_CLAIMS = ("preferred_username", "email", "upn", "oid", "uid")


def unknown_user(claims: dict[str, Any], nonce: str) -> dict[str, Any]:
    """T's claims for a subject the service does not know.

    ``sub``, and any other claim naming the user, replaced by ``unknown-user-<nonce>``;
    roles and scopes kept.
    """
    who = f"unknown-user-{nonce}"
    named = {k: who for k in _USER_CLAIMS if k in claims}
    return {**claims, **named, "sub": who}


def failure_variants(base: Base, keys: IssuerKeys, nonce: str, now: int) -> list[Call]:
    """Differently-wrong tokens, made from ``base``'s valid token, that must be refused alike.

    A bad signature and an unknown ``kid`` always; with the issuer's private key also
    (:data:`MINTED`, validly signed) an expired token, one for another audience and one
    for a subject the service does not know (:func:`unknown_user`).
    """
    t = base.token
    sig = base64url_decode(t.segments[2])
    header = {**t.header, "kid": f"unknown-{nonce}"}
    tokens = [
        ("bad signature", with_signature(t, bytes([sig[0] ^ 1]) + sig[1:])),
        ("unknown kid", sign(t.claims, harness_key("ec"), "ES256", header)),
    ]
    if keys.private_key is not None:
        expired = {**t.claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
        other = {**t.claims, "aud": f"https://other-{nonce}.invalid"}
        minted = (expired, other, unknown_user(dict(t.claims), nonce))
        tokens += [(label, keys.mint(c, t.header)) for label, c in zip(MINTED, minted, strict=True)]
    return [
        Call(
            label,
            base.method.path,
            (base.request,),
            None,
            bearer(token, base.principal.presentation),
        )
        for label, token in tokens
    ]


def unminted(keys: IssuerKeys) -> list[Observation]:
    """The :data:`MINTED` variants not sent: a SKIP under ``authn`` naming the key needed.

    Empty when the issuer's private key is there (they were sent).
    """
    if keys.private_key is not None:
        return []
    return [
        Observation(
            f"{', '.join(MINTED)} tokens",
            "not sent",
            "auth.issuer_private_key (to mint them validly signed)",
            Status.SKIP,
        ).of("authn")
    ]


def existence_plan(
    policy: Policy,
    principals: Mapping[str, Principal],
    ids: tuple[Mapping[str, list[str]], Mapping[str, list[str]]],
    templates: Mapping[str, str],
    nonce: str,
) -> list[tuple[str, list[Call]]]:
    """Per principal (by name), its foreign IDs and a nonexistent one on one readable method.

    ``ids`` is (``authz.own_ids``, ``authz.foreign_ids``). The method is the first
    protected read the principal may call whose template (``templates``: method -> JSON
    text) names one of its own IDs.
    """
    own, foreign = ids
    groups: list[tuple[str, list[Call]]] = []
    for name, foreign_ids in foreign.items():
        principal = principals.get(name)
        if principal is None:
            continue
        for m in policy.protected():
            text = templates.get(m.path, "")
            mine = named_id(text, list(own.get(name, [])))
            if mine is None or policy.is_write(m.path):
                continue
            if name not in (policy.allowed(m.path) or ()):
                continue
            asks = [(f"foreign {fid}", fid) for fid in foreign_ids]
            asks.append(("a nonexistent ID", absent_id(text, mine, nonce)))
            groups.append(
                (
                    name,
                    [
                        Call(
                            f"{name} asks for {label}",
                            m.path,
                            (policy.catalogue.request_bytes(m.path, swap_id(text, mine, other)),),
                            principal,
                        )
                        for label, other in asks
                    ],
                )
            )
            break
    return groups


@check("ERR-002", probes=ERR_002_PROBES)
def errors_uniform(run: Run) -> Outcome:
    """Errors mapped robustly; no user or credential enumeration.

    Differently-wrong tokens (bad signature, unknown ``kid``, and with the issuer key:
    expired, wrong ``aud``, an unknown user) go to the same method: the ones refused must
    all look identical to the caller (code, message, detail types); without the key the
    minted ones are not sent, and a SKIP says so. With
    ``authz.existence_hiding``, a principal's foreign IDs and a nonexistent one must be
    refused identically too. Over these calls and those it shares with AUTHN-001,
    AUTHZ-001 and FUZZ-001 (:func:`shared_calls`: made once per run, so the verdict
    depends neither on test order nor on ``-k``), UNKNOWN and DATA_LOSS must never occur.
    """
    observations, sent = _authn_uniform(run)
    if run.config.get("authz.existence_hiding"):
        existence, more = _existence_uniform(run)
        observations += existence
        sent += more
    found, _ = bases(run)
    own = [b.control for b in found] + [result for _, result in sent]
    observations = judge_codes(own + shared_calls(run)) + observations
    return Outcome.from_observations(
        CATALOGUE["ERR-002"],
        observations,
        passed="no UNKNOWN or DATA_LOSS; authentication failures indistinguishable",
    )


Sent = list[tuple[Call, CallResult]]


def authn_unsent(why: str) -> Observation:
    """No accepted JWT T to make the failure variants from: SKIP, saying what is needed."""
    need = "a principal whose JWT bearer token is accepted"
    return Observation(
        AUTHN_COMPARED, "not sent", f"{need} ({why})" if why else need, Status.SKIP
    ).of("authn")


def _authn_uniform(run: Run) -> tuple[list[Observation], Sent]:
    found, why = bases(run)
    accepted = [b for b in found if b.accepted]
    if not accepted:
        return [authn_unsent(why)], []
    keys = run.issuer_keys()
    calls = failure_variants(accepted[0], keys, run_nonce(run), int(time.time()))
    sent = send(run, calls)
    return [judge_uniform("authn", AUTHN_COMPARED, sent), *unminted(keys)], sent


def _existence_uniform(run: Run) -> tuple[list[Observation], Sent]:
    policy = Policy.of(run)
    groups: list[tuple[str, list[Call]]] = []
    if policy is not None:
        templates = {m.path: template_text(run, m.path) for m in policy.protected()}
        ids = (run.config.table("authz.own_ids"), run.config.table("authz.foreign_ids"))
        groups = existence_plan(policy, run.principals, ids, templates, run_nonce(run))
    if not groups:
        need = "authz.foreign_ids, and authz.own_ids named in a readable method's template"
        skipped = Observation("foreign vs. nonexistent IDs", "not sent", need, Status.SKIP)
        return [skipped.of("existence")], []
    observations, every = [], []
    for name, calls in groups:
        sent = send(run, calls)
        what = f"foreign vs. nonexistent IDs of {name}"
        observations.append(judge_uniform("existence", what, sent))
        every += sent
    return observations, every
