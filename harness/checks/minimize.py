"""Data minimisation and resource limits (MIN-*, LIMIT-002, LIMIT-003).

Responses are decoded with the descriptors and judged field by field against the declared
allowlists (``min.role_field_allowlist``), masks and token patterns. The abusive probes
(rate, concurrency, huge pages) run only with ``--hipaa-allow-transport-abuse`` and are
bounded in count and time.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import grpc
import h2.settings
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from harness import audit
from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult, invoke
from harness.checks import check
from harness.checks._calls import (
    TRANSPORT_ABUSE,
    Probe,
    bearer,
    marked,
    named_id,
    policy_or_skip,
    send,
    strings_in,
    swap_id,
    template_text,
)
from harness.checks.access import bases
from harness.checks.audit import _wait_alert, canaries, planted_calls
from harness.descriptors import MethodInfo, is_repeated
from harness.outcome import Observation, Outcome, Status
from harness.policy import Policy
from harness.run import Run
from harness.tokens import with_signature

_BIG = 2**31 - 1


def _populated(message: Any) -> set[str]:
    return {fd.name for fd, _ in message.ListFields()}


def _records(policy: Policy, path: str, result: CallResult, record_type: str) -> list[Any]:
    """Every message of ``record_type`` in the responses (top level or nested)."""
    cls = policy.catalogue.message_class(policy.catalogue.method(path).output_type)
    found: list[Any] = []

    def walk(msg: Any) -> None:
        if msg.DESCRIPTOR.full_name == record_type:
            found.append(msg)
            return
        for fd, value in msg.ListFields():
            if fd.message_type is None or fd.message_type.GetOptions().map_entry:
                continue
            for v in value if is_repeated(fd) else [value]:
                walk(v)

    for blob in result.responses:
        try:
            walk(cls.FromString(blob))
        except DecodeError:
            continue
    return found


def _record_type(policy: Policy, run: Run) -> str | None:
    """The record message the allowlists describe: the output of the first mask method."""
    for path in run.config.table("min.mask_methods"):
        try:
            return policy.catalogue.method(path).output_type
        except KeyError:
            continue
    reads = [
        m for m in policy.protected() if not policy.is_write(m.path) and not m.server_streaming
    ]
    return reads[0].output_type if reads else None


def _record_setup(run: Run, control_id: str) -> tuple[Policy, str] | Outcome:
    """The policy and the record type MIN-002/003 judge, or the SKIP that says why not."""
    policy = policy_or_skip(run, control_id)
    if isinstance(policy, Outcome):
        return policy
    record = _record_type(policy, run)
    if record is None:
        return Outcome.skip(CATALOGUE[control_id], "no read method to take the record type from")
    return policy, record


def _reads(policy: Policy) -> list[MethodInfo]:
    return [m for m in policy.protected() if not policy.is_write(m.path)]


# -- MIN-001 ------------------------------------------------------------------------------


@check("MIN-001")
def field_mask_honoured(run: Run) -> Outcome:
    """FieldMask honoured and never widened.

    For each ``min.mask_methods`` entry (request field of type FieldMask) and each
    principal allowed on it: (a) a mask of two fields the role may see must return only
    those (plus ``min.always_returned``); (b) a field the role may not see must be refused
    (PERMISSION_DENIED, INVALID_ARGUMENT) or omitted; (c) ``does_not_exist`` must get
    INVALID_ARGUMENT (or be omitted under ``min.unknown_path_policy = "omit"``); (d) ``*``
    and (e) an empty mask must return nothing outside the role's allowlist.
    """
    control = CATALOGUE["MIN-001"]
    masks = run.config.table("min.mask_methods")
    if not masks:
        return Outcome.skip(control, "no min.mask_methods declared")
    policy = policy_or_skip(run, "MIN-001")
    if isinstance(policy, Outcome):
        return policy
    allowlists = run.config.table("min.role_field_allowlist")
    always = set(run.config.str_list("min.always_returned"))
    omit_unknown = run.config.get("min.unknown_path_policy") == "omit"
    probes: list[tuple[str, set[str], Probe]] = []
    for path, mask_field in masks.items():
        try:
            method = policy.catalogue.method(path)
        except KeyError:
            continue
        out_fields = [
            f.name for f in policy.catalogue.message_class(method.output_type).DESCRIPTOR.fields
        ]
        text = template_text(run, path) or "{}"
        for name in sorted(policy.allowed(path) or ()):
            principal = run.principal(name)
            if principal is None:
                continue
            allowed = set(allowlists.get(name, out_fields))
            visible = [f for f in out_fields if f in allowed]
            hidden = [f for f in out_fields if f not in allowed]

            def req(
                paths: list[str],
                text: str = text,
                mask_field: str = str(mask_field),
                path: str = path,
            ) -> bytes:
                msg = policy.catalogue.message_class(policy.catalogue.method(path).input_type)()
                json_format.Parse(text, msg)
                mask = getattr(msg, mask_field)
                mask.Clear()
                mask.paths.extend(paths)
                data: bytes = msg.SerializeToString()
                return data

            cases: list[tuple[str, list[str], set[str]]] = [
                ("(a) two visible fields", visible[:2], set(visible[:2]) | always),
                ("(c) unknown path", ["does_not_exist"], set()),
                ("(d) '*'", ["*"], allowed | always),
                ("(e) empty mask", [], allowed | always),
            ]
            if hidden:
                cases.insert(1, ("(b) a field the role may not see", [hidden[0]], allowed | always))
            for label, paths, limit in cases:
                probes.append(
                    (
                        label,
                        limit,
                        Probe(f"{name}: {label} {paths}", path, (req(paths),), principal),
                    )
                )
    observations = []
    for (label, limit, _), (probe, result) in zip(
        probes, send(run, [p for *_, p in probes]), strict=True
    ):
        cls = policy.catalogue.message_class(policy.catalogue.method(probe.method).output_type)
        got: set[str] = set()
        for blob in result.responses:
            try:
                got |= _populated(cls.FromString(blob))
            except DecodeError:
                continue
        extra = sorted(got - limit)
        where = f"{probe.label} -> {probe.method}"
        if label.startswith("(c)"):
            ok = result.code == grpc.StatusCode.INVALID_ARGUMENT or (
                omit_unknown and result.code == grpc.StatusCode.OK
            )
            observations.append(
                Observation(
                    where,
                    result.summary(),
                    "INVALID_ARGUMENT (3)" + (" or omitted" if omit_unknown else ""),
                    Status.PASS if ok else Status.FAIL,
                    Severity.MEDIUM,
                    result.request_id,
                )
            )
            continue
        refused = label.startswith("(b)") and result.code in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        ok = refused or (result.code == grpc.StatusCode.OK and not extra)
        observed = result.summary() + (
            f"; fields outside the mask/allowlist: {', '.join(extra)}" if extra else ""
        )
        observations.append(
            Observation(
                where,
                observed,
                f"only {sorted(limit)}",
                Status.PASS if ok else Status.FAIL,
                Severity.HIGH,
                result.request_id,
            )
        )
    if not observations:
        return Outcome.skip(control, "no principal may call a min.mask_methods entry")
    return Outcome.from_observations(control, observations, passed="masks honoured, never widened")


# -- MIN-002 / MIN-003 --------------------------------------------------------------------


def _role_reads(run: Run, policy: Policy) -> list[tuple[Probe, CallResult]]:
    """Every read and list method, once per principal allowed on it (memoised)."""

    def compute() -> list[tuple[Probe, CallResult]]:
        if policy.allow_mutations:
            planted_calls(run)  # seeds sandbox records with canary values
        probes = [
            Probe(name, m.path, (policy.request(run, m.path),), run.principal(name))
            for m in _reads(policy)
            for name in sorted(policy.allowed(m.path) or ())
            if run.principal(name) is not None
        ]
        return send(run, probes)

    return run.memo("role-reads", compute)


@check("MIN-002")
def responses_minimised_by_role(run: Run) -> Outcome:
    """Responses minimised by role.

    Every read and list method is called once per principal allowed on it (after the
    canary calls seeded sandbox records, when mutations are allowed). In every returned
    record (the mask method's output type, top level or nested), the populated fields must
    be a subset of ``min.role_field_allowlist[principal]``: an extra field is FAIL (high),
    critical when its value is a canary (a Safe Harbor category).
    """
    control = CATALOGUE["MIN-002"]
    allowlists = run.config.table("min.role_field_allowlist")
    if not allowlists:
        return Outcome.skip(control, "no min.role_field_allowlist declared")
    setup = _record_setup(run, "MIN-002")
    if isinstance(setup, Outcome):
        return setup
    policy, record = setup
    c = canaries(run)
    observations = []
    for probe, result in _role_reads(run, policy):
        name = probe.label
        if name not in allowlists:
            continue
        allowed = set(allowlists[name])
        extra: set[str] = set()
        phi = False
        for rec in _records(policy, probe.method, result, record):
            over = _populated(rec) - allowed
            extra |= over
            phi = phi or any(c.scan(str(getattr(rec, f)), "x") for f in over)
        status = Status.FAIL if extra else Status.PASS
        sev = Severity.CRITICAL if phi else Severity.HIGH
        observed = result.summary() + (
            f"; fields outside the allowlist: {', '.join(sorted(extra))}" if extra else ""
        )
        observations.append(
            Observation(
                f"{name} -> {probe.method}",
                observed,
                "only the role's allowlisted fields",
                status,
                sev,
                result.request_id,
            )
        )
    if not observations:
        return Outcome.skip(control, "no principal with an allowlist may call a read method")
    return Outcome.from_observations(
        control, observations, passed="every role sees only its allowlisted fields"
    )


@check("MIN-003")
def identifiers_tokenised(run: Run) -> Outcome:
    r"""Direct identifiers tokenised or masked for non-privileged roles.

    The same role-by-role reads as MIN-002: for every principal not in
    ``min.privileged_principals``, every non-empty field named in ``min.token_patterns``
    must match its pattern (for example ``^\\*{3}-\\*{2}-\\d{4}$``) and never be a canary
    value the run planted.
    """
    control = CATALOGUE["MIN-003"]
    patterns = {k: re.compile(str(v)) for k, v in run.config.table("min.token_patterns").items()}
    if not patterns:
        return Outcome.skip(control, "no min.token_patterns declared")
    setup = _record_setup(run, "MIN-003")
    if isinstance(setup, Outcome):
        return setup
    policy, record = setup
    privileged = set(run.config.str_list("min.privileged_principals"))
    planted = set(canaries(run).values.values())
    observations = []
    for probe, result in _role_reads(run, policy):
        if probe.label in privileged:
            continue
        bad: dict[str, int] = {}
        seen = 0
        for rec in _records(policy, probe.method, result, record):
            for field, pattern in patterns.items():
                value = getattr(rec, field, "")
                if not isinstance(value, str) or not value:
                    continue
                seen += 1
                if not pattern.match(value) or value in planted:
                    bad[field] = bad.get(field, 0) + 1
        if not seen:
            continue
        observed = (
            ", ".join(f"{n} {f} value(s) in clear" for f, n in sorted(bad.items()))
            or f"{seen} value(s) tokenised"
        )
        observations.append(
            Observation(
                f"{probe.label} -> {probe.method}",
                observed,
                "every value matches min.token_patterns",
                Status.FAIL if bad else Status.PASS,
                Severity.HIGH,
                result.request_id,
            )
        )
    if not observations:
        return Outcome.skip(
            control, "no non-privileged principal received a field named in min.token_patterns"
        )
    return Outcome.from_observations(
        control, observations, passed="identifiers tokenised for every non-privileged role"
    )


# -- MIN-004 ------------------------------------------------------------------------------


@check("MIN-004")
def cache_honours_updates(run: Run) -> Outcome:
    """Cached ePHI honours TTL and invalidation.

    Needs ``--hipaa-allow-mutations`` and ``min.cache_ttl_s``. A sandbox record is read (to
    warm any cache), updated by an allowed principal with marked values, then read every
    half second by another principal over a new channel until ``min.cache_ttl_s`` + 5 s:
    the new value must be served within that time.
    """
    control = CATALOGUE["MIN-004"]
    if not run.config.get("safety.allow_mutations"):
        return Outcome.skip(
            control, "needs --hipaa-allow-mutations (or safety.allow_mutations = true)"
        )
    if not run.config.has("min.cache_ttl_s"):
        return Outcome.skip(control, "no min.cache_ttl_s declared")
    policy = policy_or_skip(run, "MIN-004")
    if isinstance(policy, Outcome):
        return policy
    sandbox = run.config.str_list("authz.sandbox_ids")
    known = sandbox + [i for ids in run.config.table("authz.own_ids").values() for i in ids]
    write = next(
        (
            m
            for m in policy.protected()
            if policy.is_write(m.path) and named_id(template_text(run, m.path), known)
        ),
        None,
    )
    read = next(
        (
            m
            for m in _reads(policy)
            if not m.server_streaming
            and not m.client_streaming
            and named_id(template_text(run, m.path), known)
        ),
        None,
    )
    if write is None or read is None or not sandbox:
        return Outcome.skip(
            control, "needs authz.sandbox_ids and a write and a read whose templates name a record"
        )
    sid = sandbox[0]
    wtext = swap_id(
        template_text(run, write.path), named_id(template_text(run, write.path), known) or "", sid
    )
    rtext = swap_id(
        template_text(run, read.path), named_id(template_text(run, read.path), known) or "", sid
    )
    # The reader must see every field (a privileged principal); the writer is someone else.
    privileged = run.config.str_list("min.privileged_principals")
    readers = [p for n in sorted(policy.allowed(read.path) or ()) if (p := run.principal(n))]
    writers = [p for n in sorted(policy.allowed(write.path) or ()) if (p := run.principal(n))]
    reader = next((p for p in readers if p.name in privileged), readers[0] if readers else None)
    writer = next((p for p in writers if p is not reader), writers[0] if writers else None)
    if writer is None or reader is None:
        return Outcome.skip(control, "no principal may write and read the sandbox record")
    nonce = f"ttl-{run.options.seed:08x}-{int(time.time())}"
    read_req = policy.catalogue.request_bytes(read.path, rtext)
    run.call(read.path, [read_req], principal=reader)  # warm the cache
    result = run.call(
        write.path,
        [marked(policy.catalogue.message_class(write.input_type), wtext, nonce, set(known))],
        principal=writer,
    )
    if result.code != grpc.StatusCode.OK:
        return Outcome.inconclusive(control, f"the update was not accepted: {result.summary()}")
    ttl = float(run.config.get("min.cache_ttl_s"))
    deadline = time.monotonic() + ttl + 5
    start = time.monotonic()
    cls = policy.catalogue.message_class(read.output_type)
    polls = 0
    while True:
        polls += 1
        channel = run.new_channel()
        try:
            got = invoke(
                channel,
                read.path,
                [read_req],
                metadata=reader.metadata(),
                request_id_key=run.request_id_key,
                principal=reader.name,
            )
        finally:
            channel.close()
        fresh = any(nonce in s for b in got.responses for s in strings_in(cls.FromString(b)))
        if fresh or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    waited = time.monotonic() - start
    observation = Observation(
        f"{sid} updated by {writer.name}, read by {reader.name} on new channels ({polls} poll(s))",
        f"new value served after {waited:.1f} s" if fresh else f"still stale after {waited:.1f} s",
        f"served within min.cache_ttl_s + 5 s ({ttl + 5:g} s)",
        Status.PASS if fresh else Status.FAIL,
        Severity.MEDIUM,
        got.request_id,
    )
    return Outcome.from_observations(
        control, [observation], passed="updates visible within the cache TTL"
    )


# -- LIMIT-002 ----------------------------------------------------------------------------


@check("LIMIT-002")
def rate_limits(run: Run) -> Outcome:
    """Rate limiting per identity and for failed authentication.

    Needs ``--hipaa-allow-transport-abuse``. One principal sends ``2 x limits.rate.rps``
    for ``limits.rate.window_s`` (10 s) to a cheap read method, capped by
    ``safety.max_requests``: excess must get RESOURCE_EXHAUSTED (not PERMISSION_DENIED or
    UNAVAILABLE) and the accepted rate stay within 1.2 x rps; after ``cooldown_s`` one call
    must succeed. Then 50 invalid tokens from one source: throttled (RESOURCE_EXHAUSTED) or
    the ``audit.alert_type`` alert raised.
    """
    control = CATALOGUE["LIMIT-002"]
    if not run.config.get("safety.allow_transport_abuse"):
        return Outcome.skip(control, TRANSPORT_ABUSE)
    rate = run.config.table("limits.rate")
    if "rps" not in rate:
        return Outcome.skip(control, "no limits.rate.rps declared")
    rps, window = float(rate["rps"]), float(rate.get("window_s", 10))
    cooldown = float(rate.get("cooldown_s", window))
    found, why = bases(run)
    base = next((b for b in found if b.accepted and not b.method.server_streaming), None)
    if base is None:
        return Outcome.skip(control, why or "no principal with a working token on a unary read")
    count = min(int(2 * rps * window), int(run.config.get("safety.max_requests")))
    interval = window / count
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

    results = run.map(paced, range(count))
    elapsed = max(time.monotonic() - start, 1e-6)
    ok = sum(1 for r in results if r.code == grpc.StatusCode.OK)
    limited = sum(1 for r in results if r.code == grpc.StatusCode.RESOURCE_EXHAUSTED)
    wrong = sum(
        1
        for r in results
        if r.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE)
    )
    accepted = ok / elapsed
    if count / elapsed < 1.5 * rps and not limited:
        return Outcome.inconclusive(
            control,
            f"the harness sent only {count / elapsed:.0f} calls/s (wanted {2 * rps:.0f}/s): "
            "too slow to exceed the limit on this machine",
        )
    observations = [
        Observation(
            f"{count} calls by {base.principal.name} in {elapsed:.1f} s ({count / elapsed:.0f}/s)",
            f"{ok} OK ({accepted:.0f}/s), {limited} RESOURCE_EXHAUSTED, "
            f"{wrong} PERMISSION_DENIED/UNAVAILABLE",
            f"excess refused with RESOURCE_EXHAUSTED; accepted <= {1.2 * rps:.0f}/s",
            Status.PASS if limited and accepted <= 1.2 * rps and not wrong else Status.FAIL,
            Severity.MEDIUM,
        )
    ]
    time.sleep(cooldown)
    after = run.call(base.method.path, [base.request], principal=base.principal)
    observations.append(
        Observation(
            f"one call after {cooldown:g} s of cooldown",
            after.summary(),
            "OK",
            Status.PASS if after.code == grpc.StatusCode.OK else Status.FAIL,
            Severity.MEDIUM,
            after.request_id,
        )
    )
    from jwt.utils import base64url_decode

    sig = base64url_decode(base.token.segments[2])
    bad = with_signature(base.token, bytes([sig[0] ^ 1]) + sig[1:])
    burst_start = dt.datetime.now(dt.timezone.utc)
    burst = [
        r
        for _, r in send(
            run,
            [
                Probe(
                    "invalid token",
                    base.method.path,
                    (base.request,),
                    None,
                    bearer(bad),
                    retry_exhausted=False,
                )
            ]
            * 50,
        )
    ]
    throttled = any(r.code == grpc.StatusCode.RESOURCE_EXHAUSTED for r in burst)
    alert_type = run.config.str_("audit.alert_type")
    alerted, problem = (
        _wait_alert(run, str(alert_type), burst_start - dt.timedelta(seconds=60))
        if alert_type and not throttled
        else (False, "")
    )
    observations.append(
        Observation(
            "50 invalid tokens from one source",
            "throttled"
            if throttled
            else ("alert raised" if alerted else problem or "neither throttled nor alerted"),
            "throttling or an audit.alert_type alert",
            Status.PASS
            if throttled or alerted
            else Status.INCONCLUSIVE
            if problem
            else Status.FAIL,
            Severity.MEDIUM,
        )
    )
    return Outcome.from_observations(
        control,
        observations,
        passed="per-identity rate limits and failed-authentication signals in place",
    )


# -- LIMIT-003 ----------------------------------------------------------------------------


def _maxed(policy: Policy, run: Run, path: str) -> bytes:
    """The template with every integer field at 2^31 - 1 (ask for everything)."""
    msg = policy.catalogue.message_class(policy.catalogue.method(path).input_type)()
    json_format.Parse(template_text(run, path) or "{}", msg)
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


@check("LIMIT-003")
def export_and_page_bounds(run: Run) -> Outcome:
    """Bounds on streams, bulk export and pagination.

    Needs ``--hipaa-allow-transport-abuse``. (a) Each ``limits.bulk_methods`` entry asked
    for everything (integer fields at 2^31 - 1): refused (PERMISSION_DENIED) for principals
    the matrix does not allow, at most ``limits.max_export_records`` messages for one it
    does, and an audit event whose ``records`` field (``audit.field_map``) is the count;
    (b) ``limits.max_concurrent_exports`` + 1 such exports at once by one identity: the
    extra gets RESOURCE_EXHAUSTED; (c) the server's HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
    at most ``limits.max_concurrent_streams`` (a server that sends none allows any number);
    (d) methods with a ``page_size`` field asked for 2^31 - 1 items per page: at most
    ``limits.max_page_size`` per response, or INVALID_ARGUMENT.
    """
    control = CATALOGUE["LIMIT-003"]
    if not run.config.get("safety.allow_transport_abuse"):
        return Outcome.skip(control, TRANSPORT_ABUSE)
    policy = policy_or_skip(run, "LIMIT-003")
    if isinstance(policy, Outcome):
        return policy
    observations: list[Observation] = []
    max_records = run.config.get("limits.max_export_records")
    concurrent = run.config.get("limits.max_concurrent_exports")
    for path in run.config.str_list("limits.bulk_methods"):
        allowed = policy.allowed(path) or frozenset()
        request = _maxed(policy, run, path)
        outsider = next(
            (p for n, p in sorted(run.principals.items()) if n not in allowed and p.has_token), None
        )
        if outsider is not None:
            r = run.call(path, [request], principal=outsider)
            observations.append(
                Observation(
                    f"{outsider.name} (not an exporter) -> {path}",
                    r.summary(),
                    "PERMISSION_DENIED (7), no data",
                    Status.PASS
                    if r.code == grpc.StatusCode.PERMISSION_DENIED and not r.responses
                    else Status.FAIL,
                    Severity.HIGH,
                    r.request_id,
                )
            )
        exporter = next((run.principal(n) for n in sorted(allowed) if run.principal(n)), None)
        if exporter is None:
            continue
        r = run.call(path, [request], principal=exporter, max_responses=100_000, timeout=30)
        if max_records is not None:
            ok = len(r.responses) <= int(max_records) and r.code in (
                grpc.StatusCode.OK,
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            observations.append(
                Observation(
                    f"{exporter.name} asks {path} for everything",
                    r.summary(),
                    f"at most {max_records} records",
                    Status.PASS if ok else Status.FAIL,
                    Severity.HIGH,
                    r.request_id,
                )
            )
        if run.config.get("audit.source") is not None and "records" in run.config.table(
            "audit.field_map"
        ):
            events, problem = audit.wait_for(run, [r.request_id])
            counted = [audit.field(run, e, "records") for e in events.get(r.request_id, [])]
            ok = not problem and bool(counted) and counted[0] == len(r.responses)
            observations.append(
                Observation(
                    f"audit event of the export ({exporter.name})",
                    problem or f"records = {counted[0] if counted else 'missing'}",
                    f"records = {len(r.responses)}",
                    Status.INCONCLUSIVE if problem else Status.PASS if ok else Status.FAIL,
                    Severity.MEDIUM,
                    r.request_id,
                )
            )
        if concurrent is not None:
            streams = [
                Probe(
                    f"concurrent export {i + 1}", path, (request,), exporter, retry_exhausted=False
                )
                for i in range(int(concurrent) + 1)
            ]
            codes = [res.code for _, res in send(run, streams)]
            limited = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
            observations.append(
                Observation(
                    f"{len(streams)} exports at once by {exporter.name}",
                    ", ".join(c.name for c in codes),
                    f"at most {concurrent} run, the rest RESOURCE_EXHAUSTED (8)",
                    Status.PASS if limited >= 1 else Status.FAIL,
                    Severity.HIGH,
                )
            )
    max_streams = run.config.get("limits.max_concurrent_streams")
    if max_streams is not None:
        observations.append(_advertised_streams(run, int(max_streams)))
    max_page = run.config.get("limits.max_page_size")
    if max_page is not None:
        for m in _reads(policy):
            fields = policy.catalogue.message_class(m.input_type).DESCRIPTOR.fields_by_name
            if "page_size" not in fields:
                continue
            who = next(
                (
                    run.principal(n)
                    for n in sorted(policy.allowed(m.path) or ())
                    if run.principal(n)
                ),
                None,
            )
            msg: Any = policy.catalogue.message_class(m.input_type)()
            json_format.Parse(template_text(run, m.path) or "{}", msg)
            msg.page_size = _BIG
            r = run.call(m.path, [msg.SerializeToString()], principal=who)
            cls = policy.catalogue.message_class(m.output_type)
            biggest = 0
            for blob in r.responses:
                try:
                    page = cls.FromString(blob)
                except DecodeError:
                    continue
                biggest = max(
                    [biggest, *(len(v) for fd, v in page.ListFields() if is_repeated(fd))]
                )
            ok = r.code == grpc.StatusCode.INVALID_ARGUMENT or (
                r.code == grpc.StatusCode.OK and biggest <= int(max_page)
            )
            observations.append(
                Observation(
                    f"page_size = 2^31 - 1 -> {m.path}",
                    f"{r.summary()}; largest page {biggest}",
                    f"at most {max_page} items per page, or INVALID_ARGUMENT",
                    Status.PASS if ok else Status.FAIL,
                    Severity.HIGH,
                    r.request_id,
                )
            )
    if not observations:
        return Outcome.skip(
            control,
            "no limits.bulk_methods, limits.max_concurrent_streams, "
            "or page_size method with limits.max_page_size",
        )
    return Outcome.from_observations(control, observations, passed="exports and pages bounded")


#: How long LIMIT-003 (c) waits for the server's first SETTINGS frame.
SETTINGS_WAIT_S = 3.0


def _advertised_streams(run: Run, limit: int) -> Observation:
    """(c) The server's SETTINGS_MAX_CONCURRENT_STREAMS, read off a raw HTTP/2 connection.

    A server that does not send the setting allows streams without limit (RFC 9113 §6.5.2).
    """
    probe = "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS advertised by the server"
    expected = f"at most {limit} (limits.max_concurrent_streams)"
    try:
        with run.open_h2() as client:
            client.pump(SETTINGS_WAIT_S, lambda: client.server_settings is not None)
            settings = client.server_settings
    except OSError as exc:
        return Observation(probe, f"no raw HTTP/2 connection: {exc}", expected, Status.INCONCLUSIVE)
    if settings is None:
        return Observation(
            probe, f"no SETTINGS frame within {SETTINGS_WAIT_S:g} s", expected, Status.INCONCLUSIVE
        )
    value = settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
    if value is None:
        return Observation(
            probe, "not advertised: unlimited", expected, Status.FAIL, Severity.MEDIUM
        )
    return Observation(
        probe,
        str(value),
        expected,
        Status.PASS if value <= limit else Status.FAIL,
        None if value <= limit else Severity.MEDIUM,
    )


# -- LIMIT-001 ----------------------------------------------------------------------------


def _sized(policy: Policy, run: Run, path: str, size: int) -> bytes | None:
    """The template with its first string/bytes field padded so the message is ``size`` bytes."""
    cls = policy.catalogue.message_class(policy.catalogue.method(path).input_type)
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
    msg = cls()
    json_format.Parse(template_text(run, path) or "{}", msg)
    pad = size
    for _ in range(4):  # the length prefix grows with the payload: converge on the size
        setattr(msg, field.name, "x" * pad if field.type == field.TYPE_STRING else b"x" * pad)
        over = len(msg.SerializeToString()) - size
        if over == 0:
            break
        pad -= over
    data: bytes = msg.SerializeToString()
    return data


@check("LIMIT-001")
def size_limits(run: Run) -> Outcome:
    """Size limits: messages, metadata and decompressed payloads.

    Through ``limits.size_probe_method`` (else the first unary method with a string or
    bytes field), on a channel of its own with no send limit: (a) a request of
    ``limits.max_recv_bytes`` + 1 bytes (4 MiB + 1) must get RESOURCE_EXHAUSTED; (b) one of
    the limit - 1024 must not; (c) a 20 KiB and a 1 MiB metadata header must be refused
    (any non-OK code); (d) a gzip message under 64 KiB that inflates to 8 x the limit must
    get RESOURCE_EXHAUSTED (or UNIMPLEMENTED without gzip). The service must stay healthy
    after every step (health Check, or ``schema.liveness_method``).
    """
    control = CATALOGUE["LIMIT-001"]
    policy = policy_or_skip(run, "LIMIT-001")
    if isinstance(policy, Outcome):
        return policy
    limit = int(run.config.get("limits.max_recv_bytes"))
    path = run.config.str_("limits.size_probe_method")
    if path is None:
        unary = [
            m
            for m in policy.protected()
            if not m.client_streaming and not m.server_streaming and not policy.is_write(m.path)
        ]
        path = next((m.path for m in unary if _sized(policy, run, m.path, 64) is not None), None)
    if path is None:
        return Outcome.skip(
            control, "no unary method with a string or bytes field (set limits.size_probe_method)"
        )
    who = next(
        (run.principal(n) for n in sorted(policy.allowed(path) or ()) if run.principal(n)), None
    )
    md = who.metadata() if who is not None else ()
    liveness = run.liveness
    channel = run.new_channel()
    observations = []

    def call(
        requests: list[bytes], extra: tuple[tuple[str, str], ...] = (), gzip: bool = False
    ) -> CallResult:
        return invoke(
            channel, path, requests, metadata=(*md, *extra), request_id_key=run.request_id_key,
            timeout=run.options.call_timeout_s, compression=grpc.Compression.Gzip if gzip else None,
        )  # fmt: skip

    def healthy(after: str) -> None:
        check_channel = run.new_channel()
        try:
            r = invoke(check_channel, liveness, [b""], request_id_key=run.request_id_key, timeout=5)
        finally:
            check_channel.close()
        ok = r.code == grpc.StatusCode.OK
        observations.append(
            Observation(
                f"health after {after}",
                r.summary(),
                "OK",
                Status.PASS if ok else Status.FAIL,
                Severity.HIGH,
                r.request_id,
            )
        )

    try:
        big, fits = _sized(policy, run, path, limit + 1), _sized(policy, run, path, limit - 1024)
        assert big is not None
        assert fits is not None
        r = call([big])
        observations.append(
            Observation(
                f"(a) {limit + 1}-byte request -> {path}",
                r.summary(),
                "RESOURCE_EXHAUSTED (8)",
                Status.PASS if r.code == grpc.StatusCode.RESOURCE_EXHAUSTED else Status.FAIL,
                Severity.HIGH,
                r.request_id,
            )
        )
        healthy("(a)")
        r = call([fits])
        observations.append(
            Observation(
                f"(b) {limit - 1024}-byte request -> {path}",
                r.summary(),
                "not RESOURCE_EXHAUSTED",
                Status.PASS if r.code != grpc.StatusCode.RESOURCE_EXHAUSTED else Status.FAIL,
                Severity.MEDIUM,
                r.request_id,
            )
        )
        for size in (20 * 1024, 1024 * 1024):
            r = call([_sized(policy, run, path, 64) or b""], (("x-hipaa-probe", "h" * size),))
            observations.append(
                Observation(
                    f"(c) {size // 1024} KiB metadata header -> {path}",
                    r.summary(),
                    "refused (any non-OK code)",
                    Status.PASS if r.code != grpc.StatusCode.OK else Status.FAIL,
                    Severity.HIGH,
                    r.request_id,
                )
            )
            healthy(f"(c) {size // 1024} KiB header")
        bomb = _sized(policy, run, path, 8 * limit)
        assert bomb is not None
        r = call([bomb], gzip=True)
        ok = r.code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED)
        observations.append(
            Observation(
                f"(d) gzip request inflating to {8 * limit} bytes -> {path}",
                r.summary(),
                "RESOURCE_EXHAUSTED (8), or UNIMPLEMENTED (12) without gzip",
                Status.PASS if ok else Status.FAIL,
                Severity.HIGH,
                r.request_id,
            )
        )
        healthy("(d)")
    finally:
        channel.close()
    return Outcome.from_observations(
        control, observations, passed="size limits enforced; the service stayed healthy"
    )
