"""Resource limits (LIMIT-*): message sizes, rates, exports, pages and streams.

The abusive probes (rate, concurrency, huge pages) run only with
``--hipaa-allow-transport-abuse`` and are bounded in count and time.
"""

from __future__ import annotations

import datetime as dt
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
from harness.descriptors import is_repeated
from harness.outcome import Observation, Outcome, Status
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
from harness.plans.tokens import bases
from harness.policy import Policy
from harness.run import Run
from harness.tokens import with_signature

_BIG = 2**31 - 1


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
                Call(
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
        wait_alert(run, str(alert_type), burst_start - dt.timedelta(seconds=60))
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
                Call(
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
        for m in read_methods(policy):
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
