"""Surface controls: what the target exposes beyond its declared API (REFL-*)."""

from __future__ import annotations

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
    """How many responses disclosed services or descriptors, and the service names seen."""
    count, names = 0, []
    for blob in result.responses:
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
