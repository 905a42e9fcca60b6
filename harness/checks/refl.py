"""Surface controls: what the target exposes beyond its declared API (REFL-*)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult, code_text
from harness.checks import check
from harness.descriptors import REFLECTION_PATHS
from harness.outcome import Observation, Outcome, Status
from harness.principals import Principal
from harness.run import Run

_UNREACHED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
_REFUSED_AUTH = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
_EXPECTED_PROD = (
    f"{code_text(grpc.StatusCode.UNIMPLEMENTED)}, or "
    f"{code_text(grpc.StatusCode.UNAUTHENTICATED)} / "
    f"{code_text(grpc.StatusCode.PERMISSION_DENIED)} with no response message"
)


def _revealed(result: CallResult) -> tuple[int, list[str]]:
    return revealed(result.responses)


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


@check("REFL-001")
def reflection_disabled(run: Run) -> Outcome:
    """Server reflection (v1 and v1alpha) refused.

    On both ServerReflectionInfo paths, one bidi stream sends ``list_services`` and then
    ``file_containing_symbol`` for a declared service, once without credentials and once
    with the ``least-privileged`` principal's token (if configured). In production every
    attempt must end UNIMPLEMENTED, or UNAUTHENTICATED / PERMISSION_DENIED with no response;
    elsewhere the anonymous attempt must get no response and the credentialed one may be
    answered only for roles in ``refl.allowed_roles``. A call that never reached the
    service (UNAVAILABLE, DEADLINE_EXCEEDED) is INCONCLUSIVE.
    """
    control = CATALOGUE["REFL-001"]
    production = run.config.get("environment") == "production"
    severity = Severity.HIGH if production else Severity.MEDIUM
    catalogue = run.catalogue()
    symbol = catalogue.services[0] if catalogue and catalogue.services else "grpc.health.v1.Health"
    requests = [
        rpb.ServerReflectionRequest(list_services="").SerializeToString(),
        rpb.ServerReflectionRequest(file_containing_symbol=symbol).SerializeToString(),
    ]
    callers: list[tuple[str, Principal | None]] = [("no credentials", None)]
    least = run.principal("least-privileged")
    if least is not None:
        callers.append(("least-privileged token", least))
    allowed_roles = set(run.config.str_list("refl.allowed_roles"))
    observations = []
    for version, path in REFLECTION_PATHS.items():
        for label, principal in callers:
            result = run.call(path, requests, principal=principal, timeout=5.0)
            probe = (
                f"reflection {version} list_services + file_containing_symbol({symbol}), {label}"
            )
            revealed, names = _revealed(result)
            observed = result.summary()
            if revealed:
                observed += f"; {revealed} of them disclosed services or descriptors"
            if names:
                observed += f"; services disclosed: {', '.join(sorted(set(names)))}"
            may_answer = (
                not production and principal is not None and principal.name in allowed_roles
            )
            if production:
                expected = _EXPECTED_PROD
                refused = result.code == grpc.StatusCode.UNIMPLEMENTED or (
                    result.code in _REFUSED_AUTH and not result.responses
                )
            else:
                expected = "no response message" + (
                    "" if principal is None else " (role not in refl.allowed_roles)"
                )
                refused = may_answer or not result.responses
            if refused:
                status = Status.PASS
            elif not result.responses and result.code in _UNREACHED:
                status = Status.INCONCLUSIVE
                observed += " (the call did not reach a service)"
            else:
                status = Status.FAIL
            observations.append(
                Observation(probe, observed, expected, status, severity, result.request_id)
            )
    passed = "reflection v1 and v1alpha refused"
    if least is None:
        passed += " (anonymous probes only: no least-privileged principal configured)"
    return Outcome.from_observations(control, observations, passed=passed)


_ADMIN_PROBES = (
    "/grpc.channelz.v1.Channelz/GetTopChannels",
    "/grpc.channelz.v1.Channelz/GetServers",
    "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus",
)
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@check("REFL-002")
def admin_surface(run: Run) -> Outcome:
    """Admin and debug services not exposed; health answers correctly.

    Channelz ``GetTopChannels`` / ``GetServers`` and CSDS ``FetchClientStatus`` with empty
    requests, without credentials and with the ``least-privileged`` token: each must end
    UNIMPLEMENTED, or UNAUTHENTICATED / PERMISSION_DENIED with no data; any response
    message fails (it exposes sockets, peers, security and xDS state). Health ``Check``
    with ``service=""`` must return SERVING, and with a random name NOT_FOUND with no
    response and no status details. If reflection answers, every listed service must be in
    the descriptors, health, or ``admin.allowlist``.
    """
    from grpc_health.v1 import health_pb2

    control = CATALOGUE["REFL-002"]
    least = run.principal("least-privileged")
    callers: list[tuple[str, Principal | None]] = [("no credentials", None)]
    if least is not None:
        callers.append(("least-privileged token", least))
    observations = []
    for path in _ADMIN_PROBES:
        for label, principal in callers:
            result = run.call(path, [b""], principal=principal, timeout=5.0)
            probe = f"{path}, {label}"
            refused = result.code == grpc.StatusCode.UNIMPLEMENTED or (
                result.code in _REFUSED_AUTH and not result.responses
            )
            status = Status.PASS if refused else Status.FAIL
            if not refused and not result.responses and result.code in _UNREACHED:
                status = Status.INCONCLUSIVE
            observations.append(
                Observation(
                    probe, result.summary(), _EXPECTED_PROD, status, None, result.request_id
                )
            )
    observations += _health(run, least, health_pb2)
    observations += _listed_services(run)
    return Outcome.from_observations(
        control, observations, passed="no admin service answered; health correct"
    )


def _health(run: Run, least: Principal | None, health_pb2: Any) -> list[Observation]:
    out = []
    serving = run.call(
        _HEALTH_CHECK, [health_pb2.HealthCheckRequest(service="").SerializeToString()]
    )
    if serving.code in _REFUSED_AUTH and least is not None:
        serving = run.call(
            _HEALTH_CHECK,
            [health_pb2.HealthCheckRequest(service="").SerializeToString()],
            principal=least,
        )
    status_value = None
    if serving.responses:
        try:
            status_value = health_pb2.HealthCheckResponse.FromString(serving.responses[0]).status
        except DecodeError:
            status_value = None
    ok = (
        serving.code == grpc.StatusCode.OK
        and status_value == health_pb2.HealthCheckResponse.SERVING
    )
    out.append(
        Observation(
            'health Check(service="")',
            serving.summary(),
            "OK with status SERVING",
            Status.PASS
            if ok
            else (Status.INCONCLUSIVE if serving.code in _UNREACHED else Status.FAIL),
            Severity.LOW,
            serving.request_id,
        )
    )
    name = f"h{run.options.seed:08x}"
    unknown = run.call(
        _HEALTH_CHECK,
        [health_pb2.HealthCheckRequest(service=name).SerializeToString()],
        principal=least,
    )
    details = [k for k, _ in unknown.trailing_metadata if k == "grpc-status-details-bin"]
    # Some stacks (grpcio's own health service) send an empty message with NOT_FOUND.
    ok = (
        unknown.code == grpc.StatusCode.NOT_FOUND
        and not details
        and all(not r for r in unknown.responses)
    )
    out.append(
        Observation(
            f'health Check(service="{name}")',
            unknown.summary() + (" with status details" if details else ""),
            f"{code_text(grpc.StatusCode.NOT_FOUND)} with no status details",
            Status.PASS
            if ok
            else (Status.INCONCLUSIVE if unknown.code in _UNREACHED else Status.FAIL),
            Severity.LOW,
            unknown.request_id,
        )
    )
    return out


def _listed_services(run: Run) -> list[Observation]:
    """Services reflection lists (if it answers) that nobody declared."""
    catalogue = run.catalogue()
    if catalogue is None or catalogue.source.startswith("reflection"):
        return []
    request = rpb.ServerReflectionRequest(list_services="").SerializeToString()
    listed: set[str] = set()
    for path in REFLECTION_PATHS.values():
        result = run.call(path, [request], timeout=5.0)
        for blob in result.responses:
            try:
                listed |= {
                    s.name
                    for s in rpb.ServerReflectionResponse.FromString(
                        blob
                    ).list_services_response.service
                }
            except DecodeError:
                continue
    if not listed:
        return []
    declared = (
        set(catalogue.services)
        | {"grpc.health.v1.Health"}
        | set(run.config.str_list("admin.allowlist"))
    )
    extra = sorted(s for s in listed - declared if not s.startswith("grpc.reflection."))
    return [
        Observation(
            "services listed by reflection vs. declared",
            ", ".join(extra) or "none undeclared",
            "only descriptor-set services, health, and admin.allowlist",
            Status.FAIL if extra else Status.PASS,
        )
    ]
