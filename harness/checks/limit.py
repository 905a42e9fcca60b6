"""Resource limits (LIMIT-*): message sizes, rates, exports, pages and streams.

The abusive probes (rate, concurrency, huge pages) run only with
``--hipaa-allow-transport-abuse`` and are bounded in count and time. Each control plans its
calls, sends them, and judges the recorded answers with pure functions (``judge_*``):
status codes and payloads decide, never a stack's error strings. A call that never reached
the service (UNAVAILABLE, DEADLINE_EXCEEDED) is INCONCLUSIVE, never a refusal.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import h2.exceptions
import h2.settings
from google.protobuf import json_format
from jwt.utils import base64url_decode

from harness import audit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CLIENT_MAX_RECEIVE, CallResult, code_text, invoke, new_request_id
from harness.checks import check
from harness.descriptors import (
    MethodInfo,
    Records,
    decode_each,
    is_repeated,
    page_size_field,
    record_shape,
)
from harness.errors import TargetError
from harness.h2client import H2Client, Reply, grpc_frame
from harness.oracles import (
    EDGE_TOO_LARGE,
    PERMISSION_DENIED,
    UNREACHED,
    edge_answered,
    edge_refusal,
    judge_health,
    refused,
)
from harness.outcome import NotApplicable, Observation, Outcome, Probe, Status
from harness.plans.calls import (
    TRANSPORT_ABUSE,
    Call,
    bearer,
    policy_or_skip,
    read_methods,
    send,
    template_text,
)
from harness.plans.canaries import wait_alert
from harness.plans.tokens import Held, altered, valid_tokens
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run
from harness.tokens import with_signature

OK = grpc.StatusCode.OK
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
UNKNOWN = grpc.StatusCode.UNKNOWN
_BIG = 2**31 - 1


def _abuse_allowed(run: Run) -> None:
    if not run.config.get("safety.allow_transport_abuse"):
        raise NotApplicable(TRANSPORT_ABUSE)


def _reached(result: CallResult) -> bool:
    """Whether the call got an answer from the service (not UNAVAILABLE, DEADLINE_EXCEEDED)."""
    return bool(result.responses) or result.code not in UNREACHED


def _refused_with(result: CallResult, *codes: grpc.StatusCode) -> Status:
    """PASS for one of ``codes`` and no response message; else FAIL, if it reached the service."""
    if result.code in codes and not result.responses:
        return Status.PASS
    return Status.FAIL if _reached(result) else Status.INCONCLUSIVE


def _first_allowed(run: Run, policy: Policy, path: str) -> Principal | None:
    """The first principal (by name) the matrix allows on ``path`` that the run has."""
    return next((p for n in sorted(policy.allowed(path) or ()) if (p := run.principal(n))), None)


def _from_template(cls: Any, template: str) -> Any:
    """A ``cls`` message parsed from the request template's JSON (empty when none)."""
    msg = cls()
    json_format.Parse(template or "{}", msg)
    return msg


# -- LIMIT-001 ----------------------------------------------------------------------------

LIMIT_001_PROBES = (
    Probe("a", "a request of limits.max_recv_bytes + 1 bytes, then a health check"),
    Probe("b", "a request of limits.max_recv_bytes - 1024 bytes, then a health check"),
    Probe("c", "20 KiB and 1 MiB metadata headers beside a control call, with health checks"),
    Probe("d", "a gzip request under 64 KiB inflating to 8 x the limit, then a health check"),
)
#: The custom header LIMIT-001 (c) sends, and the size of its control call's value.
PROBE_HEADER = "x-hipaa-probe"
CONTROL_HEADER_BYTES = 64
HEADER_SIZES = (20 * 1024, 1024 * 1024)


def sized(cls: Any, template: str, size: int) -> bytes | None:
    """The template with its first string/bytes field padded so the message is ``size`` bytes.

    ``None`` when the request type has no singular string or bytes field.
    """
    field = next(
        (
            f
            for f in cls.DESCRIPTOR.fields
            if f.type in (f.TYPE_STRING, f.TYPE_BYTES) and not is_repeated(f)
        ),
        None,
    )
    if field is None:
        return None
    msg = _from_template(cls, template)
    text = field.type == field.TYPE_STRING
    setattr(msg, field.name, "x" if text else b"x")
    rest = msg.ByteSize() - 2  # all but the field's one-byte length prefix and value
    pad = max(0, size - rest - 1)
    for _ in range(4):  # the length prefix grows with the payload: converge on the size
        over = rest + _varint_len(pad) + pad - size
        if over == 0:
            break
        pad = max(0, pad - over)
    setattr(msg, field.name, "x" * pad if text else b"x" * pad)
    data: bytes = msg.SerializeToString()  # once: the bomb's is 32 MiB
    return data


def _varint_len(n: int) -> int:
    return max(1, -(-n.bit_length() // 7))


@dataclass(frozen=True)
class SizePlan:
    """LIMIT-001's method, credentials and requests."""

    path: str
    metadata: tuple[tuple[str, str], ...]
    limit: int
    oversized: bytes
    fits: bytes
    plain: bytes  # the template: the request beside the (c) headers
    bomb: bytes
    who: Principal | None = None  # whose credentials (and client certificate) go


def _size_probe_path(run: Run, policy: Policy) -> str | None:
    path = run.config.str_("limits.size_probe_method")
    if path is not None:
        return path
    for m in policy.protected():
        if m.client_streaming or m.server_streaming or policy.is_write(m.path):
            continue
        cls = policy.catalogue.message_class(m.input_type)
        if sized(cls, template_text(run, m.path), 64) is not None:
            return m.path
    return None


def size_plan(run: Run, policy: Policy) -> SizePlan:
    """The size-probe method, its first allowed principal, and the requests of (a)-(d).

    The method is ``limits.size_probe_method``, else the first unary read with a string or
    bytes field.

    Raises:
        NotApplicable: no such method.
    """
    path = _size_probe_path(run, policy)
    try:
        cls = policy.catalogue.message_class(policy.catalogue.method(path or "").input_type)
    except KeyError:
        cls = None
    limit = int(run.config.get("limits.max_recv_bytes"))
    text = template_text(run, path) if path else ""
    requests = [sized(cls, text, n) for n in (limit + 1, limit - 1024, 8 * limit)] if cls else []
    if path is None or cls is None or None in requests:
        raise NotApplicable(
            "no unary method in the descriptors with a string or bytes field "
            "(set limits.size_probe_method)"
        )
    who = _first_allowed(run, policy, path)
    oversized, fits, bomb = (r or b"" for r in requests)
    md = tuple(who.metadata()) if who is not None else ()
    return SizePlan(path, md, limit, oversized, fits, policy.request(run, path), bomb, who)


#: HTTP statuses refusing an oversized header block: 431 Request Header Fields Too Large (RFC
#: 6585; RFC 9113 10.5.1), 400 (nginx past ``large_client_header_buffers``), 413.
EDGE_HEADER_REFUSALS = frozenset({400, 413, 431})
#: gRPC status numbers of a call that never reached the service (14, 4), and -1: a stream
#: ended without a grpc-status (:class:`~harness.h2client.Reply`).
_UNREACHED_NUMBERS = frozenset(c.value[0] for c in UNREACHED)
_UNKNOWN_NUMBER = UNKNOWN.value[0]


def _size_observation(
    ref: str, probe: str, result: CallResult, expected: str, status: Status, severity: Severity
) -> Observation:
    return Observation(probe, result.summary(), expected, status, severity, result.request_id).of(
        ref
    )


def judge_oversized(plan: SizePlan, result: CallResult) -> Observation:
    """(a) ``limit + 1`` bytes: RESOURCE_EXHAUSTED; OK, UNKNOWN or another code a FAIL."""
    if edge_refusal(result) == EDGE_TOO_LARGE:  # a proxy's body limit held it: enforced
        status = Status.PASS  # (the catalogue asks for 8; docs/controls.md says why not here)
    elif edge_answered(result):  # a proxy's other answer: the request never reached the limit
        status = Status.INCONCLUSIVE
    else:
        status = _refused_with(result, RESOURCE_EXHAUSTED)
    probe = f"(a) {plan.limit + 1}-byte request -> {plan.path}"
    return _size_observation(
        "a", probe, result, code_text(RESOURCE_EXHAUSTED), status, Severity.HIGH
    )


def judge_fits(plan: SizePlan, result: CallResult) -> Observation:
    """(b) ``limit - 1024`` bytes: anything but RESOURCE_EXHAUSTED (or UNKNOWN: a crash)."""
    if not _reached(result):
        status = Status.INCONCLUSIVE
    elif result.code in (RESOURCE_EXHAUSTED, UNKNOWN):
        status = Status.FAIL
    else:
        status = Status.PASS
    probe = f"(b) {plan.limit - 1024}-byte request -> {plan.path}"
    expected = "not RESOURCE_EXHAUSTED (8) (nor UNKNOWN (2))"
    return _size_observation("b", probe, result, expected, status, Severity.MEDIUM)


#: RST_STREAM codes that refuse nothing: none, NO_ERROR (RFC 9113 8.1: stop sending, the
#: answer is complete) and REFUSED_STREAM (not processed, retry: back-pressure).
_NOT_REFUSALS = frozenset({None, 0, 7})


def header_refusal(reply: Reply) -> str:
    """How the server refused a request's header block on the wire, or ``""``.

    An HTTP status in :data:`EDGE_HEADER_REFUSALS` without grpc-status, a RST_STREAM with
    an error code (not NO_ERROR or REFUSED_STREAM), or a GOAWAY with an error code (RFC 9113
    5.4: nghttp2, so grpc-js, ends the connection with COMPRESSION_ERROR on a field over its
    limit; nginx with ENHANCE_YOUR_CALM) on a stream that got no response message. A GOAWAY
    with NO_ERROR (a graceful shutdown), or a close with no frame saying why, states no
    refusal.
    """
    if reply.messages or reply.grpc_status == 0:
        return ""
    if reply.http_status in EDGE_HEADER_REFUSALS and reply.grpc_status in (None, -1):
        return f"HTTP {reply.http_status}"
    if reply.reset_code not in _NOT_REFUSALS:
        return f"RST_STREAM code {reply.reset_code}"
    if reply.goaway_code:
        return f"GOAWAY code {reply.goaway_code}"
    return ""


def _answered(reply: Reply) -> bool:
    """The service answered the call: served, or a grpc-status of its own (not 14 or 4)."""
    code = reply.grpc_status
    return reply.ok or (code is not None and code >= 0 and code not in _UNREACHED_NUMBERS)


def judge_header(
    plan: SizePlan, size: int, reply: Reply | str, control: Reply | str, rid: str = ""
) -> Observation:
    """(c) One oversized header, beside the control call (the same request, a small header).

    Both are read off a raw HTTP/2 connection. The header is refused by a gRPC error of the
    implementation's choosing other than UNKNOWN and the control call's own (a code both
    share, UNAUTHENTICATED without credentials say, shows nothing about the header), or on
    the wire (:func:`header_refusal`: HTTP 431/400/413, RST_STREAM, a GOAWAY with an error
    code). Served (a response message, grpc-status 0) or UNKNOWN fails. No answer within
    the call timeout, UNAVAILABLE or DEADLINE_EXCEEDED, a connection that closed without
    saying why, or a control call the service did not answer, is INCONCLUSIVE: a timeout
    is no refusal. ``reply`` and ``control`` are a string when there was no connection.
    """
    probe = f"(c) {size // 1024} KiB metadata header -> {plan.path}"
    expected = (
        "refused: a gRPC error other than UNKNOWN and the control call's, HTTP 431/400/413, "
        "RST_STREAM or GOAWAY with an error code"
    )
    said = control if isinstance(control, str) else control.describe()
    if isinstance(reply, str):
        return Observation(probe, reply, expected, Status.INCONCLUSIVE, None, rid).of("c")
    observed = f"{reply.describe()}; control call: {said}"
    wire = header_refusal(reply)
    if reply.messages or reply.grpc_status in (0, _UNKNOWN_NUMBER):
        status = Status.FAIL
    elif not wire and not _answered(reply):
        status = Status.INCONCLUSIVE
        observed += " (no refusal stated: a timeout or a close is not one)"
    elif isinstance(control, str) or not _answered(control):
        status = Status.INCONCLUSIVE
        observed += " (the control call did not reach the service)"
    elif not wire and reply.grpc_status == control.grpc_status:
        status = Status.INCONCLUSIVE
        observed += " (answered as the control call was: the header's refusal is not shown)"
    else:
        status = Status.PASS
    severity = Severity.HIGH if status is Status.FAIL else None
    return Observation(probe, observed, expected, status, severity, rid).of("c")


def send_header(run: Run, plan: SizePlan, size: int) -> tuple[Reply | str, str]:
    """(c)'s request with a ``size``-byte header on a fresh raw HTTP/2 connection.

    As a gRPC client does, it first takes the server's SETTINGS (and so acknowledges them:
    C-core servers enforce their header limit only once acknowledged, RFC 9113 6.5.3). It
    reads while it sends, so a server that ends the connection mid-block answers at once,
    and waits at most the call timeout. Returns the reply (or why there was no
    connection) and the request ID sent.
    """
    rid = new_request_id()
    metadata = (*plan.metadata, (PROBE_HEADER, "h" * size), (run.request_id_key, rid))
    deadline = time.monotonic() + run.options.call_timeout_s
    try:
        with _h2_as(run, plan.who) if plan.who else run.open_h2() as client:
            client.pump(SETTINGS_WAIT_S, lambda: client.server_settings is not None)
            headers = client.headers(plan.path, metadata=metadata)
            left = max(0.0, deadline - time.monotonic())
            who = plan.who.name if plan.who and plan.who.has_cert else None
            sid = client.request(
                headers, grpc_frame(plan.plain), within=left, record=rid, principal=who
            )
            return client.wait(sid, max(0.0, deadline - time.monotonic())), rid
    except _NO_H2 as exc:
        return f"no raw HTTP/2 connection: {exc}", rid


def judge_bomb(plan: SizePlan, result: CallResult) -> Observation:
    """(d) The gzip bomb: RESOURCE_EXHAUSTED, or UNIMPLEMENTED when gzip is unsupported."""
    status = _refused_with(result, RESOURCE_EXHAUSTED, UNIMPLEMENTED)
    probe = f"(d) gzip request inflating to {8 * plan.limit} bytes -> {plan.path}"
    expected = "RESOURCE_EXHAUSTED (8), or UNIMPLEMENTED (12) without gzip"
    return _size_observation("d", probe, result, expected, status, Severity.HIGH)


def _healthy(run: Run, ref: str, after: str) -> Observation:
    channel = run.new_channel()
    try:
        r = invoke(channel, run.liveness, [b""], request_id_key=run.request_id_key, timeout=5)
    finally:
        channel.close()
    return judge_health(f"health after {after}", r).of(ref)


def _message(run: Run, plan: SizePlan, request: bytes, gzip: bool = False) -> CallResult:
    """One of (a), (b), (d): ``request`` on a channel of its own (no send limit)."""
    channel = run.new_channel()
    try:
        return invoke(
            channel, plan.path, [request], metadata=plan.metadata,
            request_id_key=run.request_id_key, timeout=run.options.call_timeout_s,
            compression=grpc.Compression.Gzip if gzip else None,
        )  # fmt: skip
    finally:
        channel.close()


def _headers(run: Run, plan: SizePlan, health: bool) -> list[Observation]:
    """(c): the control call and each oversized header, at once or (``health``) in turn.

    In turn, a health check follows each header.
    """
    if not health:
        sizes = (CONTROL_HEADER_BYTES, *HEADER_SIZES)
        (control, _), *sent = run.map(lambda size: send_header(run, plan, size), sizes)
        return [
            judge_header(plan, size, reply, control, rid)
            for size, (reply, rid) in zip(HEADER_SIZES, sent, strict=True)
        ]
    control = send_header(run, plan, CONTROL_HEADER_BYTES)[0]
    observations = []
    for size in HEADER_SIZES:
        reply, rid = send_header(run, plan, size)
        observations.append(judge_header(plan, size, reply, control, rid))
        observations.append(_healthy(run, "c", f"(c) {size // 1024} KiB header"))
    return observations


def _size_step(run: Run, plan: SizePlan, ref: str, health: bool) -> list[Observation]:
    """Step ``ref`` of (a)-(d), judged; with ``health``, a health check after it."""
    if ref == "c":
        return _headers(run, plan, health)
    if ref == "a":
        observations = [judge_oversized(plan, _message(run, plan, plan.oversized))]
    elif ref == "b":
        observations = [judge_fits(plan, _message(run, plan, plan.fits))]
    else:
        observations = [judge_bomb(plan, _message(run, plan, plan.bomb, gzip=True))]
    if health:
        observations.append(_healthy(run, ref, f"({ref})"))
    return observations


#: LIMIT-001's steps, in the catalogue's order.
SIZE_STEPS = ("a", "b", "c", "d")


def _size_steps(run: Run, plan: SizePlan) -> list[Observation]:
    """(a)-(d) at once, each on connections of its own, then one health check.

    Most of the time these steps take is the service refusing them, so they wait for it
    together. Where a step did not pass, or the service was not healthy after them all,
    those steps go again one at a time, a health check after each (the catalogue's order),
    and their answers stand: a finding, or a step left unjudged, must show with the step
    alone, never from the load of the others beside it.
    """
    together = run.map(lambda ref: _size_step(run, plan, ref, health=False), SIZE_STEPS)
    health = _healthy(run, "", "(a)-(d), sent at once")
    healthy = health.status is Status.PASS
    observations: list[Observation] = []
    for ref, judged in zip(SIZE_STEPS, together, strict=True):
        if healthy and all(o.status is Status.PASS for o in judged):
            observations += [*judged, health.of(ref)]
        else:
            observations += _size_step(run, plan, ref, health=True)
    return observations


@check("LIMIT-001", probes=LIMIT_001_PROBES)
def size_limits(run: Run) -> Outcome:
    """Size limits: messages, metadata and decompressed payloads.

    Through ``limits.size_probe_method`` (else the first unary method with a string or
    bytes field), each on a channel of its own with no send limit: (a) a request of
    ``limits.max_recv_bytes`` + 1 bytes (4 MiB + 1) must get RESOURCE_EXHAUSTED; (b) one of
    the limit - 1024 must not; (c) a 20 KiB and a 1 MiB metadata header, each on a raw
    HTTP/2 connection of its own, must be refused: a code other than OK, UNKNOWN and that of
    a control call (the same request with a 64-byte header), or on the wire (HTTP 431,
    RST_STREAM, GOAWAY with an error code: :func:`judge_header`); (d) a gzip message under
    64 KiB that inflates to 8 x the limit must get RESOURCE_EXHAUSTED (or UNIMPLEMENTED
    without gzip). UNKNOWN is a FAIL anywhere.
    The service must stay healthy after every step (health Check, or
    ``schema.liveness_method``). The steps go at once, then one health check; a step that
    did not pass, or every step when the service was not healthy, goes again alone with a
    health check after it, and that answer stands (:func:`_size_steps`).
    """
    policy = policy_or_skip(run)
    plan = size_plan(run, policy)
    return Outcome.from_observations(
        CATALOGUE["LIMIT-001"],
        _size_steps(run, plan),
        passed="size limits enforced; the service stayed healthy",
    )


# -- LIMIT-002 ----------------------------------------------------------------------------

LIMIT_002_PROBES = (
    Probe(
        "1",
        "one principal sends 2 x limits.rate.rps for window_s to a cheap read",
        needs=("safety.allow_transport_abuse",),
    ),
    Probe("2", "one request after cooldown_s", needs=("safety.allow_transport_abuse",)),
    Probe("3", "50 invalid tokens from one source", needs=("safety.allow_transport_abuse",)),
)
#: How many invalid tokens step 3 sends.
INVALID_BURST = 50
#: The wrong codes for throttling: the catalogue's "not 7 or 14".
_WRONG_THROTTLE = (PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE)


@dataclass(frozen=True)
class RatePlan:
    """LIMIT-002's principal and method (its valid token T, a JWT or opaque), pace, pauses."""

    base: Held
    rps: float
    window_s: float
    cooldown_s: float
    count: int


def rate_plan(
    rate: Mapping[str, Any], max_requests: int, found: Sequence[Held], why: str = ""
) -> RatePlan:
    """2 x ``rps`` for ``window_s`` (capped by ``safety.max_requests``) by one principal.

    The principal is the first of ``found`` (every role's token, a JWT or opaque) whose
    token works on a unary read (``why`` says why there is none).

    Raises:
        NotApplicable: no ``limits.rate.rps``, or no such principal.
    """
    if "rps" not in rate:
        raise NotApplicable("no limits.rate.rps declared")
    rps, window = float(rate["rps"]), float(rate.get("window_s", 10))
    base = next((b for b in found if b.accepted and not b.method.server_streaming), None)
    if base is None:
        raise NotApplicable(why or "no principal with a working token on a unary read")
    count = min(int(2 * rps * window), max_requests)
    return RatePlan(base, rps, window, float(rate.get("cooldown_s", window)), count)


def judge_burst(plan: RatePlan, results: Sequence[CallResult], elapsed: float) -> Observation:
    """Step 1: excess refused with RESOURCE_EXHAUSTED, the accepted rate within 1.2 x rps.

    PERMISSION_DENIED or UNAVAILABLE for the excess is a FAIL (the catalogue's "not 7 or
    14"). A harness too slow to exceed the limit (under 1.5 x rps, nothing refused), or a burst
    none of which reached the service, is INCONCLUSIVE.
    """
    elapsed = max(elapsed, 1e-6)
    sent = len(results) / elapsed
    ok = sum(1 for r in results if r.code == OK)
    limited = sum(1 for r in results if r.code == RESOURCE_EXHAUSTED)
    wrong = sum(1 for r in results if r.code in _WRONG_THROTTLE)
    accepted = ok / elapsed
    probe = f"{len(results)} calls by {plan.base.principal.name} in {elapsed:.1f} s ({sent:.0f}/s)"
    observed = (
        f"{ok} OK ({accepted:.0f}/s), {limited} RESOURCE_EXHAUSTED, "
        f"{wrong} PERMISSION_DENIED/UNAVAILABLE"
    )
    expected = f"excess refused with RESOURCE_EXHAUSTED; accepted <= {1.2 * plan.rps:.0f}/s"
    if not limited and sent < 1.5 * plan.rps:
        status = Status.INCONCLUSIVE
        observed = (
            f"the harness sent only {sent:.0f} calls/s (wanted {2 * plan.rps:.0f}/s): "
            "too slow to exceed the limit on this machine"
        )
    elif not any(_reached(r) for r in results):
        status = Status.INCONCLUSIVE
        observed += " (no call reached the service)"
    elif limited and accepted <= 1.2 * plan.rps and not wrong:
        status = Status.PASS
    else:
        status = Status.FAIL
    return Observation(probe, observed, expected, status, Severity.MEDIUM).of("1")


def judge_cooldown(plan: RatePlan, result: CallResult) -> Observation:
    """Step 2: the call after ``cooldown_s`` succeeds."""
    if result.code == OK:
        status = Status.PASS
    elif not _reached(result):
        status = Status.INCONCLUSIVE
    else:
        status = Status.FAIL
    return Observation(
        f"one call after {plan.cooldown_s:g} s of cooldown",
        result.summary(),
        "OK",
        status,
        Severity.MEDIUM,
        result.request_id,
    ).of("2")


def judge_failed_auth(
    results: Sequence[CallResult], alerted: bool, problem: str, alert_type: str | None
) -> Observation:
    """Step 3: the invalid-token burst throttled (RESOURCE_EXHAUSTED) or alerted on.

    An unreadable alert source, a burst none of which reached the service, or no throttling
    without a configured alert to look for, is INCONCLUSIVE.
    """
    throttled = any(r.code == RESOURCE_EXHAUSTED for r in results)
    expected = "throttling or an audit.alert_type alert" if alert_type else "throttling"
    if throttled or alerted:
        status, observed = Status.PASS, "throttled" if throttled else "alert raised"
    elif problem:
        status, observed = Status.INCONCLUSIVE, problem
    elif not any(_reached(r) for r in results):
        status, observed = Status.INCONCLUSIVE, "no invalid-token call reached the service"
    elif not alert_type:  # an alert may well have been raised where we cannot see it
        status, observed = (
            Status.INCONCLUSIVE,
            "not throttled, and an alert cannot be observed without audit.alert_type",
        )
    else:
        status, observed = Status.FAIL, "neither throttled nor alerted"
    probe = f"{len(results)} invalid tokens from one source"
    return Observation(probe, observed, expected, status, Severity.MEDIUM).of("3")


def invalid_token(base: Held) -> str:
    """T made invalid: a JWT with one bit of its signature flipped, an opaque T altered.

    An opaque token (checked by lookup or introspection) has no signature: one of its
    characters is changed (:func:`harness.plans.tokens.altered`), as AUTHN-003 (b) does.
    """
    if base.token is None:
        return altered(base.principal.token())
    sig = base64url_decode(base.token.segments[2])
    return with_signature(base.token, bytes([sig[0] ^ 1]) + sig[1:])


def _burst(run: Run, plan: RatePlan) -> tuple[list[CallResult], float]:
    """Step 1: ``plan.count`` calls, paced evenly over ``window_s``; and the time taken."""
    base, interval = plan.base, plan.window_s / plan.count
    start = time.monotonic()

    def paced(i: int) -> CallResult:
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return run.call(
            base.method.path,
            [base.request],
            principal=base.principal,
            timeout=5,
            retry_exhausted=False,
        )

    results = run.map(paced, range(plan.count))
    return results, time.monotonic() - start


def _failed_auth(run: Run, plan: RatePlan) -> Observation:
    """Step 3: send the invalid tokens, then watch for the alert unless throttled."""
    base = plan.base
    bad = bearer(invalid_token(base), base.principal.presentation)
    call = Call("invalid token", base.method.path, (base.request,), None, bad, False)
    burst_start = dt.datetime.now(dt.timezone.utc)
    results = [r for _, r in send(run, [call] * INVALID_BURST)]
    alert_type = run.config.str_("audit.alert_type")
    alerted, problem = False, ""
    if alert_type and not any(r.code == RESOURCE_EXHAUSTED for r in results):
        alerted, problem = wait_alert(run, alert_type, burst_start - dt.timedelta(seconds=60))
    return judge_failed_auth(results, alerted, problem, alert_type)


@check("LIMIT-002", probes=LIMIT_002_PROBES)
def rate_limits(run: Run) -> Outcome:
    """Rate limiting per identity and for failed authentication.

    Needs ``--hipaa-allow-transport-abuse``. (1) One principal sends ``2 x limits.rate.rps``
    for ``limits.rate.window_s`` (10 s) to a cheap read method, capped by
    ``safety.max_requests``: excess must get RESOURCE_EXHAUSTED (not PERMISSION_DENIED or
    UNAVAILABLE) and the accepted rate stay within 1.2 x rps; (2) after ``cooldown_s`` one
    call must succeed. (3) Then 50 invalid tokens from one source (T with one bit of its
    signature flipped; an opaque T with one character changed): throttled
    (RESOURCE_EXHAUSTED) or the ``audit.alert_type`` alert raised. The principal is the
    first whose token (a JWT or opaque) works on a unary read.
    """
    _abuse_allowed(run)
    rate = run.config.table("limits.rate")
    if "rps" not in rate:
        raise NotApplicable("no limits.rate.rps declared")
    found, why = valid_tokens(run)
    plan = rate_plan(rate, int(run.config.get("safety.max_requests")), found, why)
    first = judge_burst(plan, *_burst(run, plan))
    if first.status is Status.INCONCLUSIVE:
        return Outcome.from_observations(CATALOGUE["LIMIT-002"], [first], passed="")
    time.sleep(plan.cooldown_s)
    base = plan.base
    after = run.call(base.method.path, [base.request], principal=base.principal)
    observations = [first, judge_cooldown(plan, after), _failed_auth(run, plan)]
    return Outcome.from_observations(
        CATALOGUE["LIMIT-002"],
        observations,
        passed="per-identity rate limits and failed-authentication signals in place",
    )


# -- LIMIT-003 ----------------------------------------------------------------------------

LIMIT_003_PROBES = (
    Probe(
        "a",
        "limits.bulk_methods by a role that may not export, then by the export role",
        needs=("limits.bulk_methods",),
    ),
    Probe(
        "b",
        "limits.max_concurrent_exports + 1 exports at once by one identity",
        needs=("limits.max_concurrent_exports",),
    ),
    Probe(
        "c",
        "the server's HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS",
        required=False,
        needs=("limits.max_concurrent_streams",),
    ),
    Probe(
        "d",
        "list methods asked for 2^31 - 1 items per page (page_size or another page-size field)",
        needs=("limits.max_page_size",),
    ),
)
#: How long LIMIT-003 (c) waits for the server's first SETTINGS frame.
SETTINGS_WAIT_S = 3.0
#: How many messages, and how many seconds, an export may take before the harness stops it.
EXPORT_MAX_MESSAGES = 100_000
EXPORT_TIMEOUT_S = 30.0
#: What a raw HTTP/2 connection raises when there is none: no TCP connection (a closed
#: port), a failed TLS handshake, a broken HTTP/2 exchange.
_NO_H2 = (TargetError, OSError, h2.exceptions.H2Error)
_CLIENT_LIMIT_NOTE = (
    " (RESOURCE_EXHAUSTED: when the client raised it, a response exceeded its receive "
    "limit, which is a server finding too)"
)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def receive_limit(configured: Any) -> int | None:
    """The harness's receive limit for LIMIT-003: ``limits.max_response_bytes``, if set.

    At most :data:`~harness.channels.CLIENT_MAX_RECEIVE` (64 MiB), the limit of the
    harness's own channels: a larger response comes back as a client RESOURCE_EXHAUSTED.
    """
    if configured is None:
        return None
    return min(int(configured), CLIENT_MAX_RECEIVE)


def _oversized(largest: int, limit: int | None) -> str:
    """Why a response is over the receive limit, or ``""``."""
    if limit is None or largest <= limit:
        return ""
    return f"; a {largest}-byte response, over limits.max_response_bytes ({limit})"


def maxed(cls: Any, template: str) -> bytes:
    """The template with every singular integer field at 2^31 - 1 (ask for everything)."""
    msg = _from_template(cls, template)
    for fd in msg.DESCRIPTOR.fields:
        if fd.type in (
            fd.TYPE_INT32,
            fd.TYPE_INT64,
            fd.TYPE_UINT32,
            fd.TYPE_UINT64,
        ) and not is_repeated(fd):
            setattr(msg, fd.name, _BIG)
    data: bytes = msg.SerializeToString()
    return data


@dataclass(frozen=True)
class ExportPlan:
    """One bulk method: its maxed request, a principal it refuses and one it serves.

    ``response`` is its output message class and ``records`` where its responses carry
    records (:func:`~harness.descriptors.record_shape`), to count them (:func:`exported`).
    """

    path: str
    request: bytes
    outsider: Principal | None
    exporter: Principal | None
    response: Any = None
    records: Records | None = None


def export_plan(run: Run, policy: Policy) -> tuple[list[ExportPlan], list[Observation]]:
    """Each ``limits.bulk_methods`` entry with who calls it; notes on entries not declared."""
    plans: list[ExportPlan] = []
    notes: list[Observation] = []
    for path in run.config.str_list("limits.bulk_methods"):
        try:
            method = policy.catalogue.method(path)
        except KeyError:
            needs = "a method in the descriptors"
            notes.append(Observation(f"export {path}", "not sent", needs, Status.SKIP).of("a"))
            continue
        allowed = policy.allowed(path) or frozenset()
        request = maxed(policy.catalogue.message_class(method.input_type), template_text(run, path))
        principals = sorted(run.principals.items())
        outsider = next((p for n, p in principals if n not in allowed and p.has_token), None)
        exporter = next((p for n, p in principals if n in allowed), None)
        out = policy.catalogue.message_class(method.output_type)
        shape = record_shape(policy.catalogue, path, run.config.str_list("schema.record_types"))
        plans.append(ExportPlan(path, request, outsider, exporter, out, shape))
    return plans, notes


def judge_outsider(call: Call, result: CallResult) -> Observation:
    """(a) A principal the matrix does not allow to export: PERMISSION_DENIED, no data."""
    return refused(
        call, result, expected=(PERMISSION_DENIED,), low=(), data_severity=Severity.HIGH
    ).of("a")


def exported(cls: Any, records: Records | None, responses: Sequence[bytes]) -> tuple[int, int]:
    """How many records an export's ``responses`` hold, and how many did not decode.

    With ``records`` (:func:`~harness.descriptors.record_shape`), the records each
    response carries (``ExportLabOrdersResponse{repeated orders}`` holds many); without,
    or where the record type was not found, one per message.
    """
    if cls is None or records is None or not records.found:
        return len(responses), 0
    count = undecodable = 0
    for each in decode_each(cls, responses):
        undecodable += each.undecodable
        if each.message is not None:
            count += len(records.records(each.message))
    return count, undecodable


def judge_export_count(
    label: str,
    result: CallResult,
    max_records: int | None,
    max_bytes: int | None = None,
    counted: tuple[int, int] | None = None,
) -> Observation:
    """(a) An export asked for everything: at most ``max_records`` records.

    ``counted`` is (records, responses that did not decode) as :func:`exported` reads
    them; without it, one record per message. It ends OK, or INVALID_ARGUMENT (too much
    was asked). RESOURCE_EXHAUSTED is a FAIL (if the client raised it, a response was too
    large), and so is a response over the receive limit ``max_bytes``
    (:func:`receive_limit`); an OK with no record, or responses that do not decode, show
    no bound (INCONCLUSIVE), nor does a call that never reached the service.
    """
    n, undecodable = counted or (len(result.responses), 0)
    largest = max((len(b) for b in result.responses), default=0)
    over = _oversized(largest, max_bytes)
    observed = f"{result.summary()}; {n} record(s), {sum(map(len, result.responses))} bytes{over}"
    if (max_records is not None and n > max_records) or over:
        status = Status.FAIL
    elif undecodable:
        status = Status.INCONCLUSIVE
        observed += f"; {undecodable} response(s) did not decode: records not counted"
    elif result.code == RESOURCE_EXHAUSTED:
        status, observed = Status.FAIL, observed + _CLIENT_LIMIT_NOTE
    elif not _reached(result):
        status = Status.INCONCLUSIVE
    elif result.code == INVALID_ARGUMENT or (result.code == OK and n):
        status = Status.PASS
    elif result.code == OK:
        status, observed = Status.INCONCLUSIVE, f"{observed}; no record exported: no bound shown"
    else:
        status = Status.FAIL
    expected = " and ".join(
        [f"at most {max_records} records"] * (max_records is not None)
        + [f"responses of at most {max_bytes} bytes"] * (max_bytes is not None)
    )
    return Observation(label, observed, expected, status, Severity.HIGH, result.request_id).of("a")


def judge_export_audit(
    label: str, result: CallResult, counted: Sequence[Any], problem: str, n: int | None = None
) -> Observation:
    """(a) The audit event of an export answered OK carries its record count.

    ``counted`` are the ``records`` values (``audit.field_map``) of the events found for
    its request ID; ``problem`` says why the audit source could not be read; ``n`` is how
    many records the export held (:func:`exported`; without it, one per message).
    """
    n = len(result.responses) if n is None else n
    ok = not problem and bool(counted) and str(counted[0]) == str(n)
    status = Status.INCONCLUSIVE if problem else Status.PASS if ok else Status.FAIL
    observed = problem or f"records = {counted[0] if counted else 'missing'}"
    return Observation(
        label, observed, f"records = {n}", status, Severity.MEDIUM, result.request_id
    ).of("a")


def judge_concurrent(
    label: str, replies: Sequence[Reply], allowed: int, max_bytes: int | None = None
) -> Observation:
    """(b) ``allowed`` + 1 exports at once: the server refuses one with RESOURCE_EXHAUSTED.

    The streams are read off a raw HTTP/2 connection, so every status is one the server
    sent (``grpc-status``): a RESOURCE_EXHAUSTED the client library raises itself (a
    response over its receive limit, headers over its metadata limit) can never pass for
    the server's refusal. All served (OK, or still sending when the harness stopped
    reading) is a FAIL, as is a response over the receive limit ``max_bytes``; a stream
    the server answered otherwise (an error, UNAVAILABLE from a proxy, an HTTP error
    page, a reset, nothing in time) shows no limit: INCONCLUSIVE.
    """
    limited = sum(1 for r in replies if r.grpc_status == RESOURCE_EXHAUSTED.value[0])
    served = [r for r in replies if r.grpc_status == 0 or (r.timed_out and r.messages)]
    over = _oversized(max((r.largest for r in replies), default=0), max_bytes)
    observed = "; ".join(_stream_text(r) for r in replies) + over
    if over:
        status = Status.FAIL
    elif limited:
        status = Status.PASS
    elif replies and len(served) == len(replies):
        status = Status.FAIL
    else:
        status = Status.INCONCLUSIVE
    return Observation(
        label,
        observed,
        f"at most {allowed} run, the rest RESOURCE_EXHAUSTED (8) from the server",
        status,
        Severity.HIGH,
    ).of("b")


@dataclass(frozen=True)
class ExportBounds:
    """What LIMIT-003 holds exports to (each ``None`` when not declared).

    Attributes:
        records: Messages per export (``limits.max_export_records``).
        concurrent: Exports at once per identity (``limits.max_concurrent_exports``).
        response_bytes: The harness's receive limit (:func:`receive_limit`).
    """

    records: int | None
    concurrent: int | None
    response_bytes: int | None


def _export(run: Run, plan: ExportPlan, bounds: ExportBounds) -> list[Observation]:
    """(a) and (b) for one bulk method: send, look up the audit event, judge."""
    observations = []
    if plan.outsider is not None:
        call = Call(f"{plan.outsider.name} (not an exporter)", plan.path, (plan.request,))
        observations.append(
            judge_outsider(call, run.call(plan.path, [plan.request], principal=plan.outsider))
        )
    exporter = plan.exporter
    if exporter is None:
        return observations
    r = run.call(
        plan.path,
        [plan.request],
        principal=exporter,
        max_responses=EXPORT_MAX_MESSAGES,
        timeout=EXPORT_TIMEOUT_S,
    )
    label = f"{exporter.name} asks {plan.path} for everything"
    n = exported(plan.response, plan.records, r.responses)
    if bounds.records is not None or bounds.response_bytes is not None:
        observations.append(judge_export_count(label, r, bounds.records, bounds.response_bytes, n))
    counts = "records" in run.config.table("audit.field_map")
    if r.code == OK and counts and run.config.get("audit.source") is not None:
        events, problem = audit.wait_for(run, [r.request_id])
        counted = [audit.field(run, e, "records") for e in events.get(r.request_id, [])]
        audited = f"audit event of the export ({exporter.name})"
        observations.append(judge_export_audit(audited, r, counted, problem, n[0]))
    if bounds.concurrent is not None:
        count = bounds.concurrent + 1
        label = f"{count} exports at once by {exporter.name}"
        replies = concurrent_exports(run, plan, exporter, count)
        if isinstance(replies, str):
            seen = Observation(label, replies, "a raw HTTP/2 connection", Status.INCONCLUSIVE)
            observations.append(seen.of("b"))
        else:
            observations.append(
                judge_concurrent(label, replies, bounds.concurrent, bounds.response_bytes)
            )
    return observations


def _stream_text(reply: Reply) -> str:
    """One export stream in evidence: how it ended, or that it was still open."""
    counted = f"{reply.messages} message(s)"
    if reply.timed_out and reply.http_status is not None:
        return f"HTTP {reply.http_status}, still open after {counted}"
    return f"{reply.describe()}, {counted}"


def _h2_as(run: Run, principal: Principal) -> H2Client:
    """A raw HTTP/2 connection presenting ``principal``'s client certificate, if it has one."""
    if not (principal.has_cert and principal.client_cert and principal.client_key):
        return run.open_h2()
    endpoint = replace(
        run.endpoint,
        client_cert_pem=principal.client_cert.read_bytes(),
        client_key_pem=principal.client_key.read_bytes(),
    )
    target = run.target
    return H2Client.open(endpoint, target.host, target.port, run.options.connect_timeout_s)


def concurrent_exports(
    run: Run, plan: ExportPlan, exporter: Principal, count: int
) -> list[Reply] | str:
    """``count`` exports by ``exporter``, opened at once on one raw HTTP/2 connection.

    Read until the server refuses one (RESOURCE_EXHAUSTED), every stream ends, or the
    run's call timeout passes; the messages are counted, never kept. Returns the replies,
    or why there was no connection.
    """
    refusal = RESOURCE_EXHAUSTED.value[0]
    try:
        with _h2_as(run, exporter) as client:
            sids = [
                client.request(
                    client.headers(
                        plan.path,
                        metadata=(*exporter.metadata(), (run.request_id_key, new_request_id())),
                    ),
                    grpc_frame(plan.request),
                )
                for _ in range(count)
            ]
            replies = [client.replies[sid] for sid in sids]

            def ended(r: Reply) -> bool:
                return r.grpc_status is not None or r.reset_code is not None

            started = time.monotonic()
            client.pump(
                run.options.call_timeout_s,
                lambda: any(r.grpc_status == refusal for r in replies) or all(map(ended, replies)),
            )
            for r in replies:
                r.timed_out = not (ended(r) or client.closed)
                r.closed, r.goaway_code = client.closed, client.goaway_code
                r.elapsed_s = time.monotonic() - started
    except _NO_H2 as exc:
        return f"no raw HTTP/2 connection: {exc}"
    return replies


def judge_streams(settings: Mapping[int, int] | None, limit: int, problem: str = "") -> Observation:
    """(c) SETTINGS_MAX_CONCURRENT_STREAMS at most ``limit``.

    None sent means unlimited (RFC 9113 section 6.5.2). ``settings`` is ``None`` when no
    SETTINGS frame came.
    """
    probe = "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS advertised by the server"
    expected = f"at most {limit} (limits.max_concurrent_streams)"
    if problem or settings is None:
        observed = problem or f"no SETTINGS frame within {SETTINGS_WAIT_S:g} s"
        return Observation(probe, observed, expected, Status.INCONCLUSIVE).of("c")
    value = settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
    if value is None:
        observed, status = "not advertised: unlimited", Status.FAIL
    else:
        observed, status = str(value), Status.PASS if value <= limit else Status.FAIL
    severity = Severity.MEDIUM if status is Status.FAIL else None
    return Observation(probe, observed, expected, status, severity).of("c")


def read_settings(run: Run) -> tuple[Mapping[int, int] | None, str]:
    """The server's first SETTINGS, read off a raw HTTP/2 connection, or why not.

    No TCP connection (a closed port: :class:`~harness.errors.TargetError`), a failed TLS
    handshake or a broken HTTP/2 exchange is a reason (INCONCLUSIVE), never an error.
    """
    try:
        with run.open_h2() as client:
            client.pump(SETTINGS_WAIT_S, lambda: client.server_settings is not None)
            settings = client.server_settings
    except _NO_H2 as exc:
        return None, f"no raw HTTP/2 connection: {exc}"
    return (dict(settings) if settings is not None else None), ""


def set_integer(message: Any, dotted: str, value: int) -> None:
    """Set the integer field at ``dotted`` (proto names, ``paging.limit``) to ``value``."""
    *parents, leaf = dotted.split(".")
    for name in parents:
        message = getattr(message, name)
    setattr(message, leaf, value)


def page_plan(run: Run, policy: Policy) -> list[tuple[MethodInfo, Call]]:
    """Every read with a page-size field, asked for 2^31 - 1 items in one page.

    The field is ``limits.page_size_field`` where the request has it, else AIP-158
    ``page_size`` or another name services use (``max_results``, ``limit``, ``pageSize``,
    ``paging.limit``: :func:`~harness.descriptors.page_size_field`). Each read is sent by
    the first principal the matrix allows on it; a read no principal may call is left out.
    """
    declared = run.config.str_("limits.page_size_field")
    plan = []
    for m in read_methods(policy):
        field = page_size_field(policy.catalogue, m.path, declared)
        if field is None:
            continue
        who = _first_allowed(run, policy, m.path)
        if who is None:
            continue
        msg = _from_template(
            policy.catalogue.message_class(m.input_type), template_text(run, m.path)
        )
        set_integer(msg, field, _BIG)
        label = f"{field} = 2^31 - 1 -> {m.path}"
        plan.append((m, Call(label, m.path, (msg.SerializeToString(),), who)))
    return plan


def page_items(cls: Any, records: Records | None, responses: Sequence[bytes]) -> tuple[int, int]:
    """The largest page in ``responses`` (items), and how many responses did not decode.

    With ``records`` (:func:`~harness.descriptors.record_shape`): the records each page
    holds (``ListLabOrdersResponse{repeated orders}``, or nested in a wrapper), or, where
    each response carries one record (a server stream of records), all of them: the
    stream is the page. Without, or where the record type was not found (the response
    taken for it): the longest repeated field of any response.
    """
    if records is not None and not records.found:
        records = None
    sizes, undecodable = [], 0
    for each in decode_each(cls, responses):
        undecodable += each.undecodable
        page = each.message
        if page is None:
            continue
        if records is None:
            sizes += [len(v) for fd, v in page.ListFields() if is_repeated(fd)]
        else:
            sizes.append(len(records.records(page)))
    if records is not None and not records.repeated:
        return sum(sizes), undecodable
    return max(sizes, default=0), undecodable


def judge_page(
    call: Call,
    result: CallResult,
    cls: Any,
    max_page: int,
    max_bytes: int | None = None,
    records: Records | None = None,
) -> Observation:
    """(d) A page asked for 2^31 - 1 items: INVALID_ARGUMENT, or at most ``max_page`` items.

    The items are the records the method's pages carry (``records``; without it, every
    repeated field of every response counts: :func:`page_items`). Bytes that do not
    decode, an OK with no item, or a call that never reached the service show no bound
    (INCONCLUSIVE); RESOURCE_EXHAUSTED is a FAIL, and so is a response over the receive
    limit ``max_bytes`` (:func:`receive_limit`).
    """
    biggest, undecodable = page_items(cls, records, result.responses)
    over = _oversized(max((len(b) for b in result.responses), default=0), max_bytes)
    observed = f"{result.summary()}; largest page {biggest}{over}"
    if biggest > max_page or over:
        status = Status.FAIL
    elif undecodable:
        status = Status.INCONCLUSIVE
        observed += f"; {undecodable} response(s) not decodable as {cls.DESCRIPTOR.full_name}"
    elif result.code == RESOURCE_EXHAUSTED:
        status, observed = Status.FAIL, observed + _CLIENT_LIMIT_NOTE
    elif result.code == INVALID_ARGUMENT:
        status = Status.PASS
    elif not _reached(result):
        status = Status.INCONCLUSIVE
    elif result.code == OK:
        status = Status.PASS if biggest else Status.INCONCLUSIVE
        observed += "" if biggest else "; no item returned: no bound shown"
    else:
        status = Status.FAIL
    expected = f"at most {max_page} items per page, or INVALID_ARGUMENT"
    return Observation(call.label, observed, expected, status, Severity.HIGH, result.request_id).of(
        "d"
    )


def _pages(run: Run, policy: Policy, max_page: int, max_bytes: int | None) -> list[Observation]:
    """(d) for every paginated read."""
    plan = page_plan(run, policy)
    if not plan:
        where, needs = (
            "a page of 2^31 - 1 items",
            "a read with a page-size field (limits.page_size_field, page_size, max_results, "
            "limit, ...) that a principal may call",
        )
        return [Observation(where, "not sent", needs, Status.SKIP).of("d")]
    declared = run.config.str_list("schema.record_types")
    observations = []
    for (m, call), (_, result) in zip(plan, send(run, [c for _, c in plan]), strict=True):
        cls = policy.catalogue.message_class(m.output_type)
        records = record_shape(policy.catalogue, m.path, declared)
        observations.append(judge_page(call, result, cls, max_page, max_bytes, records))
    return observations


@check("LIMIT-003", probes=LIMIT_003_PROBES)
def export_and_page_bounds(run: Run) -> Outcome:
    """Bounds on streams, bulk export and pagination.

    Needs ``--hipaa-allow-transport-abuse``. (a) Each ``limits.bulk_methods`` entry asked
    for everything (integer fields at 2^31 - 1): refused (PERMISSION_DENIED) for principals
    the matrix does not allow, at most ``limits.max_export_records`` messages for one it
    does, and an audit event whose ``records`` field (``audit.field_map``) is the count;
    (b) ``limits.max_concurrent_exports`` + 1 such exports at once by one identity, on a
    raw HTTP/2 connection: the server answers the extra with RESOURCE_EXHAUSTED (a status
    the client library raised itself never counts); (c) the server's HTTP/2
    SETTINGS_MAX_CONCURRENT_STREAMS at most ``limits.max_concurrent_streams`` (a server
    that sends none allows any number); (d) methods with a page-size field
    (``limits.page_size_field``, ``page_size``, ``max_results``, ``limit``, ...) asked for
    2^31 - 1 items per page: at most ``limits.max_page_size`` records per page, or
    INVALID_ARGUMENT. With ``limits.max_response_bytes`` (the harness's receive limit, at
    most 64 MiB), a response message larger than it in (a), (b) or (d) is a FAIL: a
    server finding, as a client-side RESOURCE_EXHAUSTED on it would be.
    """
    _abuse_allowed(run)
    policy = policy_or_skip(run)
    bounds = ExportBounds(
        _int_or_none(run.config.get("limits.max_export_records")),
        _int_or_none(run.config.get("limits.max_concurrent_exports")),
        receive_limit(run.config.get("limits.max_response_bytes")),
    )
    plans, observations = export_plan(run, policy)
    for plan in plans:
        observations += _export(run, plan, bounds)
    max_streams = run.config.get("limits.max_concurrent_streams")
    if max_streams is not None:
        settings, problem = read_settings(run)
        observations.append(judge_streams(settings, int(max_streams), problem))
    max_page = run.config.get("limits.max_page_size")
    if max_page is not None:
        observations += _pages(run, policy, int(max_page), bounds.response_bytes)
    if not observations:
        raise NotApplicable(
            "no limits.bulk_methods, limits.max_concurrent_streams, or limits.max_page_size"
        )
    return Outcome.from_observations(
        CATALOGUE["LIMIT-003"], observations, passed="exports and pages bounded"
    )
