"""Surface controls: what the target exposes beyond its declared API (REFL-*).

Each control plans its calls, sends them, and judges the recorded answers with pure
functions (``judge_*``): status codes and payloads decide, never a stack's error strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult, code_text
from harness.checks import check
from harness.descriptors import REFLECTION_PATHS
from harness.errors import TargetError
from harness.oracles import PERMISSION_DENIED, UNAUTHENTICATED, UNREACHED
from harness.outcome import Observation, Outcome, Probe, Status
from harness.plans.calls import Call
from harness.principals import Principal
from harness.run import Run
from harness.transport import Transport, detect_transport, fmt_address

_REFUSED_AUTH = frozenset({UNAUTHENTICATED, PERMISSION_DENIED})
#: What :meth:`CallResult.carried` says of status details that are not a google.rpc.Status.
_UNDECODABLE = "undecodable status details"
REFUSED_EXPECTED = (
    f"{code_text(grpc.StatusCode.UNIMPLEMENTED)}, or "
    f"{code_text(UNAUTHENTICATED)} / {code_text(PERMISSION_DENIED)} with no response message"
)
#: Seconds each reflection or admin call may take.
CALL_TIMEOUT_S = 5.0
LEAST = "least-privileged"
HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_CHECK = f"/{HEALTH_SERVICE}/Check"


def revealed(blobs: Sequence[bytes]) -> tuple[int, list[str]]:
    """How many responses disclosed services or descriptors, and the service names seen."""
    count, names = 0, []
    for blob in blobs:
        try:
            response = rpb.ServerReflectionResponse.FromString(blob)
        except DecodeError:
            continue
        kind = response.WhichOneof("message_response")
        if kind in ("list_services_response", "file_descriptor_response"):
            count += 1
            names += [s.name for s in response.list_services_response.service]
    return count, names


def refused_outright(result: CallResult) -> bool:
    """UNIMPLEMENTED, or UNAUTHENTICATED / PERMISSION_DENIED with no response message."""
    return result.code == grpc.StatusCode.UNIMPLEMENTED or (
        result.code in _REFUSED_AUTH and not result.responses
    )


def callers(least: Principal | None) -> list[tuple[str, Principal | None]]:
    """Who each probe is sent as: no credentials, then the least-privileged principal."""
    out: list[tuple[str, Principal | None]] = [("no credentials", None)]
    if least is not None:
        out.append((f"{LEAST} token", least))
    return out


# -- REFL-001 ---------------------------------------------------------------------------

REFL_001_PROBES = (
    Probe("a", "reflection v1 and v1alpha without credentials"),
    Probe(
        "b",
        f"reflection v1 and v1alpha with the {LEAST} token",
        needs=(f"auth.principals.{LEAST}",),
    ),
)


def reflection_plan(symbol: str, least: Principal | None) -> list[tuple[str, Call]]:
    """REFL-001's calls, each with its probe: (a) anonymous, (b) least-privileged.

    On both ``ServerReflectionInfo`` paths one bidi stream sends ``list_services`` and then
    ``file_containing_symbol`` for ``symbol``.
    """
    requests = (
        rpb.ServerReflectionRequest(list_services="").SerializeToString(),
        rpb.ServerReflectionRequest(file_containing_symbol=symbol).SerializeToString(),
    )
    plan = []
    for version, path in REFLECTION_PATHS.items():
        for (label, principal), ref in zip(callers(least), "ab", strict=False):
            what = f"reflection {version} list_services + file_containing_symbol({symbol}), {label}"
            plan.append((ref, Call(what, path, requests, principal)))
    return plan


def judge_reflection(
    ref: str,
    call: Call,
    result: CallResult,
    *,
    production: bool,
    allowed_roles: Iterable[str] = (),
) -> Observation:
    """One reflection attempt against the catalogue's oracle, filed under probe ``ref``.

    Production: UNIMPLEMENTED, or UNAUTHENTICATED / PERMISSION_DENIED with no response
    message. Elsewhere: no response message without credentials; with a token, only roles
    in ``refl.allowed_roles`` may be answered. No answer and UNAVAILABLE or
    DEADLINE_EXCEEDED is INCONCLUSIVE: the call never reached the service.
    """
    count, names = revealed(result.responses)
    observed = result.summary()
    if count:
        observed += f"; {count} of them disclosed services or descriptors"
    if names:
        observed += f"; services disclosed: {', '.join(sorted(set(names)))}"
    role = call.principal.name if call.principal is not None else None
    if production:
        expected, ok = REFUSED_EXPECTED, refused_outright(result)
    else:
        may_answer = role is not None and role in set(allowed_roles)
        expected = "no response message" + (
            "" if role is None else " (role not in refl.allowed_roles)"
        )
        ok = may_answer or not result.responses
    severity = Severity.HIGH if production else Severity.MEDIUM
    if not result.responses and result.code in UNREACHED:  # before ok: never a refusal
        status = Status.INCONCLUSIVE
        observed += " (the call did not reach a service)"
    elif ok:
        status = Status.PASS
    else:
        status = Status.FAIL
    return Observation(call.label, observed, expected, status, severity, result.request_id).of(ref)


@check("REFL-001", probes=REFL_001_PROBES)
def reflection_disabled(run: Run) -> Outcome:
    """Server reflection (v1 and v1alpha) refused.

    On both ServerReflectionInfo paths, one bidi stream sends ``list_services`` and then
    ``file_containing_symbol`` for a declared service, (a) without credentials and (b) with
    the ``least-privileged`` principal's token. In production every attempt must end
    UNIMPLEMENTED, or UNAUTHENTICATED / PERMISSION_DENIED with no response; elsewhere the
    anonymous attempt must get no response and the credentialed one may be answered only
    for roles in ``refl.allowed_roles``. A call that never reached the service
    (UNAVAILABLE, DEADLINE_EXCEEDED) is INCONCLUSIVE.
    """
    production = run.config.get("environment") == "production"
    catalogue = run.catalogue()
    symbol = catalogue.services[0] if catalogue and catalogue.services else HEALTH_SERVICE
    allowed = run.config.str_list("refl.allowed_roles")
    observations = []
    for ref, call in reflection_plan(symbol, run.principal(LEAST)):
        result = run.call(
            call.method, call.requests, principal=call.principal, timeout=CALL_TIMEOUT_S
        )
        judged = judge_reflection(ref, call, result, production=production, allowed_roles=allowed)
        observations.append(judged)
    return Outcome.from_observations(
        CATALOGUE["REFL-001"], observations, passed="reflection v1 and v1alpha refused"
    )


# -- REFL-002 ---------------------------------------------------------------------------

CHANNELZ = (
    "/grpc.channelz.v1.Channelz/GetTopChannels",
    "/grpc.channelz.v1.Channelz/GetServers",
)
_LISTED = "services listed by reflection vs. declared"
CSDS = ("/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus",)

REFL_002_PROBES = (
    Probe("channelz", "Channelz GetTopChannels and GetServers: not served on the main port"),
    Probe("csds", "CSDS FetchClientStatus: not served on the main port"),
    Probe(
        "admin-port",
        "Channelz and CSDS on admin.port refused without the allowlisted identity",
        required=False,
        needs=("admin.port",),
    ),
    Probe("health", 'health Check: SERVING for "", NOT_FOUND for a random name', required=False),
    Probe("services", "services reflection lists are all declared", required=False),
)
#: Codes only a service's own handler sends (gRPC libraries never generate them): an
#: admin method that answers with one is served, and was reached.
SERVED_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DATA_LOSS,
    }
)
MAIN_PORT_EXPECTED = f"{code_text(grpc.StatusCode.UNIMPLEMENTED)}: not served on this port"


def admin_plan(least: Principal | None, where: str = "") -> list[tuple[str, Call]]:
    """Channelz and CSDS with empty requests, without credentials and as least-privileged.

    Filed under ``channelz`` and ``csds`` on the main port; under ``admin-port`` when
    ``where`` names the admin port (it is added to each label).
    """
    return [
        (ref if not where else "admin-port", Call(f"{path}, {label}{where}", path, (b"",), who))
        for ref, paths in (("channelz", CHANNELZ), ("csds", CSDS))
        for path in paths
        for label, who in callers(least)
    ]


def judge_admin(
    ref: str, sent: Sequence[tuple[Call, CallResult]], *, gated_port: bool = False
) -> list[Observation]:
    """Channelz and CSDS calls of one port, judged together (each filed under ``ref``).

    Any response message, data in the status details, or an answer only the service
    itself gives (:data:`SERVED_CODES`) FAILs: the admin service is served there and was
    reached. UNIMPLEMENTED passes. On the main port a refusal (UNAUTHENTICATED or
    PERMISSION_DENIED, no data) passes only when another caller's call of the same method
    got UNIMPLEMENTED (the refusal came before routing; the method is not served);
    alone, it does not show the service is absent (INCONCLUSIVE). On ``admin.port``
    (``gated_port``: a separate, gated port) the refusal passes. A call that never
    reached the service, an error (INTERNAL, UNKNOWN: a proxy's HTTP 400 or 413) or
    throttling shows nothing: INCONCLUSIVE.
    """
    absent = {c.method for c, r in sent if r.code == grpc.StatusCode.UNIMPLEMENTED}
    expected = REFUSED_EXPECTED if gated_port else MAIN_PORT_EXPECTED
    out = []
    for call, result in sent:
        carried = result.carried()
        observed = result.summary()
        refused = result.code in _REFUSED_AUTH and not carried
        if result.responses or result.code in SERVED_CODES or set(carried) - {_UNDECODABLE}:
            status = Status.FAIL
        elif result.code == grpc.StatusCode.UNIMPLEMENTED or (
            refused and (gated_port or call.method in absent)
        ):
            status = Status.PASS
        else:
            status = Status.INCONCLUSIVE
            if refused:
                observed += " (refused before routing: does not show the service is absent)"
        out.append(
            Observation(call.label, observed, expected, status, None, result.request_id).of(ref)
        )
    return out


def health_request(service: str) -> bytes:
    """A serialized ``HealthCheckRequest`` for ``service``."""
    data: bytes = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    return data


def health_served(result: CallResult) -> bool:
    """False when ``Check("")`` came back UNIMPLEMENTED: the target has no health service."""
    return result.code != grpc.StatusCode.UNIMPLEMENTED


def judge_health_unserved(result: CallResult, liveness: str | None) -> Observation:
    """No health service: recorded, not a finding (the liveness method comes from config)."""
    where = f"schema.liveness_method {liveness}" if liveness else "no schema.liveness_method"
    return Observation(
        'health Check(service="")',
        f"{result.summary()}: the target serves no health service ({where})",
        f"a served {HEALTH_SERVICE} (checked only where it is served)",
        Status.SKIP,
        Severity.LOW,
        result.request_id,
    ).of("health")


def judge_health_serving(result: CallResult) -> Observation:
    """``Check(service="")`` must answer OK with status SERVING."""
    status_value = None
    if result.responses:
        try:
            status_value = health_pb2.HealthCheckResponse.FromString(result.responses[0]).status
        except DecodeError:
            status_value = None
    ok = (
        result.code == grpc.StatusCode.OK and status_value == health_pb2.HealthCheckResponse.SERVING
    )
    unreached = result.code in UNREACHED and not result.responses
    status = Status.PASS if ok else Status.INCONCLUSIVE if unreached else Status.FAIL
    return Observation(
        'health Check(service="")',
        result.summary(),
        "OK with status SERVING",
        status,
        Severity.LOW,
        result.request_id,
    ).of("health")


def judge_health_unknown(name: str, result: CallResult) -> Observation:
    """``Check(service=<random>)`` must end NOT_FOUND with no data and no status details.

    Some stacks (grpcio's own health service) send an empty message with NOT_FOUND.
    """
    details = any(k == "grpc-status-details-bin" for k, _ in result.trailing_metadata)
    ok = (
        result.code == grpc.StatusCode.NOT_FOUND
        and not details
        and all(not r for r in result.responses)
    )
    unreached = result.code in UNREACHED and not result.responses
    status = Status.PASS if ok else Status.INCONCLUSIVE if unreached else Status.FAIL
    return Observation(
        f'health Check(service="{name}")',
        result.summary() + (" with status details" if details else ""),
        f"{code_text(grpc.StatusCode.NOT_FOUND)} with no status details",
        status,
        Severity.LOW,
        result.request_id,
    ).of("health")


def listed_services(results: Iterable[CallResult]) -> set[str]:
    """Every service name in the ``list_services`` answers of ``results``."""
    listed: set[str] = set()
    for result in results:
        for blob in result.responses:
            try:
                response = rpb.ServerReflectionResponse.FromString(blob)
            except DecodeError:
                continue
            listed |= {s.name for s in response.list_services_response.service}
    return listed


def judge_listed(
    listed: set[str], declared: Iterable[str], allowlist: Iterable[str]
) -> Observation:
    """Listed services must be declared, health, or in ``admin.allowlist``."""
    known = set(declared) | {HEALTH_SERVICE} | set(allowlist)
    extra = sorted(s for s in listed - known if not s.startswith("grpc.reflection."))
    return Observation(
        _LISTED,
        ", ".join(extra) or "none undeclared",
        "only descriptor-set services, health, and admin.allowlist",
        Status.FAIL if extra else Status.PASS,
    ).of("services")


def judge_unlisted(why: str) -> Observation:
    """Nothing to compare (``why``): the listing is judged only if reflection answered."""
    expected = "a reflection listing and a descriptor set to compare it with"
    return Observation(_LISTED, why, expected, Status.SKIP).of("services")


@check("REFL-002", probes=REFL_002_PROBES)
def admin_surface(run: Run) -> Outcome:
    """Admin and debug services not exposed; health answers correctly.

    Channelz ``GetTopChannels`` / ``GetServers`` and CSDS ``FetchClientStatus`` with empty
    requests, without credentials and with the ``least-privileged`` token. On the main
    port each must end UNIMPLEMENTED (a refusal, UNAUTHENTICATED or PERMISSION_DENIED,
    counts only when the other caller's call of the method got UNIMPLEMENTED: alone it
    does not show the service is absent). With ``admin.port`` (a separate, gated port)
    the same calls go there too, and must end UNIMPLEMENTED, or UNAUTHENTICATED /
    PERMISSION_DENIED with no data. Any response message fails anywhere (it exposes
    sockets, peers, security and xDS state). Health ``Check``, where it is served, with
    ``service=""`` must return SERVING, and with a random name NOT_FOUND with no response
    and no status details (a target without the health service is recorded, not a
    finding). If reflection answers, every listed service must be in the descriptors,
    health, or ``admin.allowlist``.
    """
    least = run.principal(LEAST)
    observations = []
    for ref in ("channelz", "csds"):
        observations += judge_admin(ref, _sent(run, [c for r, c in admin_plan(least) if r == ref]))
    observations += _admin_port(run, least)
    observations += _health(run, least)
    observations += _listed(run)
    return Outcome.from_observations(
        CATALOGUE["REFL-002"], observations, passed="no admin service answered; health correct"
    )


def _sent(
    run: Run, calls: Sequence[Call], channel: grpc.Channel | None = None
) -> list[tuple[Call, CallResult]]:
    return [
        (c, run.call(c.method, c.requests, principal=c.principal, channel=channel,
                     timeout=CALL_TIMEOUT_S))
        for c in calls
    ]  # fmt: skip


def _admin_port(run: Run, least: Principal | None) -> list[Observation]:
    """The admin calls on ``admin.port`` (none when it is not declared)."""
    port = run.config.get("admin.port")
    if port is None:
        return []
    where = f" on admin.port {port}"
    if int(port) == run.target.port:
        opened: grpc.Channel | str = f"admin.port {port} is the target's own port, not another"
    else:
        opened = admin_channel(run, int(port))
    if isinstance(opened, str):
        seen = Observation(
            f"Channelz and CSDS{where}", opened, REFUSED_EXPECTED, Status.INCONCLUSIVE
        )
        return [seen.of("admin-port")]
    try:
        sent = _sent(run, [c for _, c in admin_plan(least, where)], opened)
    finally:
        opened.close()
    return judge_admin("admin-port", sent, gated_port=True)


def admin_channel(run: Run, port: int) -> grpc.Channel | str:
    """A channel to ``port`` on the target's host, opened as the main port's are.

    The same TLS settings and client certificate, once the port's transport is known;
    else why there is none.
    """
    host = run.target.host
    cert, key = run.config.path("mtls.client_cert"), run.config.path("mtls.client_key")
    timeout = run.options.connect_timeout_s
    try:
        detected = detect_transport(host, port, client_cert=cert, client_key=key, timeout=timeout)
    except TargetError as exc:
        return f"admin.port: {exc}"
    if run.endpoint.pin_der is not None and detected.transport is Transport.TLS:
        return (
            "admin.port: the main port is reached through a relay pinned to its certificate, "
            "which cannot reach another port"
        )
    endpoint = replace(run.endpoint, address=fmt_address(host, port), transport=detected.transport)
    return run.new_channel(endpoint)


def _health(run: Run, least: Principal | None) -> list[Observation]:
    serving = run.call(HEALTH_CHECK, [health_request("")])
    if serving.code in _REFUSED_AUTH and least is not None:
        serving = run.call(HEALTH_CHECK, [health_request("")], principal=least)
    if not health_served(serving):
        return [judge_health_unserved(serving, run.config.str_("schema.liveness_method"))]
    name = f"h{run.options.seed:08x}"
    unknown = run.call(HEALTH_CHECK, [health_request(name)], principal=least)
    return [judge_health_serving(serving), judge_health_unknown(name, unknown)]


def _listed(run: Run) -> list[Observation]:
    """Services reflection lists (if it answers) that nobody declared."""
    catalogue = run.catalogue()
    if catalogue is None or catalogue.source.startswith("reflection"):
        why = "the declared API is reflection's own answer" if catalogue else "no descriptors"
        return [judge_unlisted(why)]
    request = rpb.ServerReflectionRequest(list_services="").SerializeToString()
    results = [run.call(p, [request], timeout=CALL_TIMEOUT_S) for p in REFLECTION_PATHS.values()]
    listed = listed_services(results)
    if not listed:
        return [judge_unlisted("reflection listed no service")]
    allowlist = run.config.str_list("admin.allowlist")
    return [judge_listed(listed, catalogue.services, allowlist)]
