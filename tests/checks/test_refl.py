"""REFL-001 and REFL-002 judged on recorded answers: no server.

The answers are shaped as other stacks send them (grpc-go, Node's @grpc/grpc-js, an Envoy
front proxy with its RBAC and jwt_authn filters): the judges decide by status codes and
decoded reflection or health payloads, never by the reference's own strings.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from harness.catalogue import Severity
from harness.checks import registered
from harness.checks.refl import (
    REFL_001_PROBES,
    REFL_002_PROBES,
    admin_plan,
    health_served,
    judge_admin,
    judge_health_serving,
    judge_health_unknown,
    judge_health_unserved,
    judge_listed,
    judge_reflection,
    judge_unlisted,
    listed_services,
    reflection_plan,
    revealed,
)
from harness.config import parse_config
from harness.descriptors import REFLECTION_PATHS
from harness.outcome import Status
from harness.plans.calls import Call
from harness.principals import Principal
from tests.checks.recorded import answer, refs, settled

C = grpc.StatusCode
LEAST = Principal("least-privileged")
V1 = REFLECTION_PATHS["v1"]
GO_UNIMPLEMENTED = "unknown service grpc.reflection.v1.ServerReflection"
NODE_UNIMPLEMENTED = "The server does not implement the method ServerReflectionInfo"
ENVOY_RBAC = "RBAC: access denied"
ENVOY_JWT = "Jwt is missing"
ENVOY_HEADERS = (("server", "envoy"), ("x-envoy-upstream-service-time", "1"))


def listing(*services: str) -> bytes:
    response = rpb.ServerReflectionResponse(
        list_services_response=rpb.ListServiceResponse(
            service=[rpb.ServiceResponse(name=s) for s in services]
        )
    )
    return response.SerializeToString()


def descriptor_answer() -> bytes:
    return rpb.ServerReflectionResponse(
        file_descriptor_response=rpb.FileDescriptorResponse(file_descriptor_proto=[b"\n\x01x"])
    ).SerializeToString()


def reflection_error() -> bytes:
    return rpb.ServerReflectionResponse(
        error_response=rpb.ErrorResponse(error_code=5, error_message="not found")
    ).SerializeToString()


def health(status: int) -> bytes:
    return health_pb2.HealthCheckResponse(status=status).SerializeToString()  # type: ignore[arg-type]


# -- the declared probes are the catalogue's -------------------------------------------


def test_refl_001_declares_a_and_b_both_required():
    probes = registered()["REFL-001"].probes
    assert probes == REFL_001_PROBES
    assert {p.ref: (p.required, p.needs) for p in probes} == {
        "a": (True, ()),
        "b": (True, ("auth.principals.least-privileged",)),
    }


def test_refl_002_declares_its_bullets_health_and_listing_conditional():
    probes = registered()["REFL-002"].probes
    assert probes == REFL_002_PROBES
    # Health is judged "where it is served"; the listing "if reflection answered"; the
    # admin port "when admin.port is a separate, gated port".
    assert {p.ref: (p.required, p.needs) for p in probes} == {
        "channelz": (True, ()),
        "csds": (True, ()),
        "admin-port": (False, ("admin.port",)),
        "health": (False, ()),
        "services": (False, ()),
    }


def test_admin_port_is_accepted_and_a_lost_admin_port_leaves_the_control_open(tmp_path):
    # The recorded case: admin.port was refused at load ("not supported yet").
    config = parse_config(b"[admin]\nport = 9901\n", "hipaa.toml", tmp_path)
    assert config.get("admin.port") == 9901
    main = [
        o
        for ref, call in admin_plan(LEAST)
        for o in judge_admin(ref, [(call, answer(C.UNIMPLEMENTED))])
    ]
    lost = [
        o
        for _, call in admin_plan(LEAST, " on admin.port 9901")
        for o in judge_admin("admin-port", [(call, answer(C.UNAVAILABLE))], gated_port=True)
    ]
    assert settled("REFL-002", main, unset=()).status is Status.PASS
    assert settled("REFL-002", [*main, *lost], unset=()).status is Status.INCONCLUSIVE
    open_admin = judge_admin(
        "admin-port", [(ANONYMOUS, answer(C.OK, b"\x0a\x00"))], gated_port=True
    )
    assert settled("REFL-002", [*main, *open_admin], unset=()).status is Status.FAIL


# -- REFL-001 ---------------------------------------------------------------------------


def test_reflection_plan_files_anonymous_under_a_and_least_privileged_under_b():
    plan = reflection_plan("acme.charts.v2.Charts", LEAST)
    assert [(ref, c.method, c.principal) for ref, c in plan] == [
        ("a", V1, None),
        ("b", V1, LEAST),
        ("a", REFLECTION_PATHS["v1alpha"], None),
        ("b", REFLECTION_PATHS["v1alpha"], LEAST),
    ]
    first, second = (rpb.ServerReflectionRequest.FromString(r) for r in plan[0][1].requests)
    assert first.WhichOneof("message_request") == "list_services"
    assert second.file_containing_symbol == "acme.charts.v2.Charts"
    assert {ref for ref, _ in reflection_plan("x.Y", None)} == {"a"}


def attempt(ref: str = "a") -> Call:
    return Call(f"reflection v1, {ref}", V1, (b"",), LEAST if ref == "b" else None)


@pytest.mark.parametrize(
    "result",
    [
        answer(C.UNIMPLEMENTED, details=GO_UNIMPLEMENTED),
        answer(C.UNIMPLEMENTED, details=NODE_UNIMPLEMENTED),
        answer(C.UNAUTHENTICATED, details=ENVOY_JWT, headers=ENVOY_HEADERS),
        answer(C.PERMISSION_DENIED, details=ENVOY_RBAC, headers=ENVOY_HEADERS),
    ],
    ids=["go", "node", "envoy-jwt", "envoy-rbac"],
)
def test_production_refusals_of_any_stack_pass(result):
    judged = judge_reflection("a", attempt(), result, production=True)
    assert (judged.status, judged.ref, judged.severity) == (Status.PASS, "a", Severity.HIGH)


def test_production_listing_fails_high_and_names_the_services():
    result = answer(C.OK, listing("acme.charts.v2.Charts", "grpc.health.v1.Health"))
    judged = judge_reflection("b", attempt("b"), result, production=True)
    assert (judged.status, judged.severity, judged.ref) == (Status.FAIL, Severity.HIGH, "b")
    assert "services disclosed: acme.charts.v2.Charts, grpc.health.v1.Health" in judged.observed


def test_production_refusal_code_with_a_descriptor_still_fails():
    """PERMISSION_DENIED after a file_descriptor_response: the data went out."""
    result = answer(C.PERMISSION_DENIED, descriptor_answer(), details=ENVOY_RBAC)
    assert judge_reflection("a", attempt(), result, production=True).status is Status.FAIL


@pytest.mark.parametrize("code", [C.UNAVAILABLE, C.DEADLINE_EXCEEDED])
def test_unreached_reflection_is_inconclusive_not_a_refusal(code):
    result = answer(code, details="upstream connect error or disconnect/reset before headers")
    judged = judge_reflection("a", attempt(), result, production=True)
    assert judged.status is Status.INCONCLUSIVE
    assert "did not reach a service" in judged.observed


def test_non_production_allows_answers_only_to_listed_roles():
    listed = answer(C.OK, listing("acme.charts.v2.Charts"))
    anonymous = judge_reflection("a", attempt("a"), listed, production=False)
    assert (anonymous.status, anonymous.severity) == (Status.FAIL, Severity.MEDIUM)
    allowed = judge_reflection(
        "b", attempt("b"), listed, production=False, allowed_roles=["least-privileged"]
    )
    assert allowed.status is Status.PASS
    other = judge_reflection("b", attempt("b"), listed, production=False, allowed_roles=["admin"])
    assert other.status is Status.FAIL
    # Elsewhere an error stream with no message is no disclosure.
    assert judge_reflection("a", attempt(), answer(C.OK), production=False).status is Status.PASS


def test_revealed_counts_only_disclosures():
    blobs = [listing("a.B"), descriptor_answer(), reflection_error(), b"\xff\xff"]
    assert revealed(blobs) == (2, ["a.B"])


def test_refl_001_without_its_b_probe_is_inconclusive_naming_the_key():
    observations = [
        judge_reflection("a", attempt(), answer(C.UNIMPLEMENTED), production=True) for _ in range(2)
    ]
    unset = settled("REFL-001", observations, unset=("auth.principals.least-privileged",))
    assert unset.status is Status.INCONCLUSIVE
    (b,) = (p for p in unset.probes if p.id == "REFL-001(b)")
    assert b.enable == "auth.principals.least-privileged"
    late = judge_reflection("b", attempt("b"), answer(C.UNIMPLEMENTED), production=True)
    both = [*observations, late]
    assert settled("REFL-001", both, unset=()).status is Status.PASS


# -- REFL-002 ---------------------------------------------------------------------------


def test_admin_plan_covers_channelz_and_csds_for_each_caller():
    plan = admin_plan(LEAST)
    assert [ref for ref, _ in plan] == ["channelz"] * 4 + ["csds"] * 2
    assert {c.principal.name if c.principal else None for _, c in plan} == {None, LEAST.name}
    assert len(admin_plan(None)) == 3
    elsewhere = admin_plan(LEAST, " on admin.port 9901")
    assert {ref for ref, _ in elsewhere} == {"admin-port"}
    assert all(c.label.endswith(" on admin.port 9901") for _, c in elsewhere)


GET_SERVERS = "/grpc.channelz.v1.Channelz/GetServers"
ANONYMOUS = Call("channelz, no credentials", GET_SERVERS, (b"",))
AS_LEAST = Call("channelz, least-privileged token", GET_SERVERS, (b"",), LEAST)


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.UNIMPLEMENTED, details=GO_UNIMPLEMENTED), Status.PASS),
        (answer(C.UNIMPLEMENTED, details="Received http2 header with status: 404"), Status.PASS),
        (answer(C.OK, b"\x0a\x02\x08\x01"), Status.FAIL),
        (answer(C.PERMISSION_DENIED, b"\x0a\x00"), Status.FAIL),
        (answer(C.INVALID_ARGUMENT, details="start_server_id must be >= 0"), Status.FAIL),
        (answer(C.NOT_FOUND, details="rpc error: code = NotFound desc = no server"), Status.FAIL),
        (
            answer(C.UNAVAILABLE, details="no healthy upstream", headers=ENVOY_HEADERS),
            Status.INCONCLUSIVE,
        ),
        (answer(C.DEADLINE_EXCEEDED), Status.INCONCLUSIVE),
        (answer(C.INTERNAL, details="Received http2 header with status: 400"), Status.INCONCLUSIVE),
        (answer(C.UNKNOWN, details="Received http2 header with status: 413"), Status.INCONCLUSIVE),
    ],
    ids=[
        "unimplemented",
        "proxy-404",
        "channelz-data",
        "denied-after-data",
        "served-invalid-argument",
        "served-not-found",
        "envoy-503",
        "deadline",
        "nginx-400",
        "nginx-413",
    ],
)
def test_admin_services_judged_by_code_and_data(result, status):
    for gated in (False, True):
        (judged,) = judge_admin("channelz", [(ANONYMOUS, result)], gated_port=gated)
        assert (judged.status, judged.ref) == (status, "channelz")


@pytest.mark.parametrize(
    "refusal",
    [
        answer(C.PERMISSION_DENIED, details=ENVOY_RBAC, headers=ENVOY_HEADERS),
        answer(C.UNAUTHENTICATED, details=ENVOY_JWT, headers=ENVOY_HEADERS),
        answer(C.UNAUTHENTICATED, details="rpc error: code = Unauthenticated desc = no token"),
    ],
    ids=["envoy-rbac", "envoy-jwt", "go-interceptor"],
)
def test_a_refusal_on_the_main_port_does_not_show_the_service_is_absent(refusal):
    # The recorded case: 16 or 7 with no data passed, though the row accepts them only on a
    # separate, gated admin.port: a refusal before routing says nothing of what is served.
    alone = judge_admin("channelz", [(ANONYMOUS, refusal), (AS_LEAST, refusal)])
    assert [o.status for o in alone] == [Status.INCONCLUSIVE] * 2
    assert "does not show the service is absent" in alone[0].observed
    # The other caller got through to routing: the method is not there (Envoy's jwt_authn
    # refuses the anonymous call first, the backend answers the token's UNIMPLEMENTED).
    shown = judge_admin("channelz", [(ANONYMOUS, refusal), (AS_LEAST, answer(C.UNIMPLEMENTED))])
    assert [o.status for o in shown] == [Status.PASS] * 2
    gated = judge_admin("admin-port", [(ANONYMOUS, refusal), (AS_LEAST, refusal)], gated_port=True)
    assert [(o.status, o.ref) for o in gated] == [(Status.PASS, "admin-port")] * 2


def test_a_refusal_with_data_or_unreadable_details_is_no_refusal():
    garbled = answer(C.PERMISSION_DENIED, trailers=(("grpc-status-details-bin", b"\xff\x00"),))
    (judged,) = judge_admin("admin-port", [(ANONYMOUS, garbled)], gated_port=True)
    assert judged.status is Status.INCONCLUSIVE


def test_health_served_correctly_passes():
    serving = judge_health_serving(answer(C.OK, health(health_pb2.HealthCheckResponse.SERVING)))
    # grpcio's health service sends an empty message with NOT_FOUND; Go sends none.
    unknown = judge_health_unknown("h1", answer(C.NOT_FOUND, b"", details="unknown service"))
    go = judge_health_unknown("h1", answer(C.NOT_FOUND, details="unknown service"))
    assert [serving.status, unknown.status, go.status] == [Status.PASS] * 3
    assert {serving.ref, unknown.ref, go.ref} == {"health"}


def test_health_wrong_answers_fail_low():
    not_serving = answer(C.OK, health(health_pb2.HealthCheckResponse.NOT_SERVING))
    assert judge_health_serving(not_serving).status is Status.FAIL
    with_details = answer(C.NOT_FOUND, trailers=(("grpc-status-details-bin", b"\x08\x05"),))
    judged = judge_health_unknown("h1", with_details)
    assert (judged.status, judged.severity) == (Status.FAIL, Severity.LOW)
    assert "with status details" in judged.observed
    answered = judge_health_unknown("h1", answer(C.OK, health(1)))
    assert answered.status is Status.FAIL


@pytest.mark.parametrize("code", [C.UNAVAILABLE, C.DEADLINE_EXCEEDED])
def test_health_unreached_is_inconclusive(code):
    assert judge_health_serving(answer(code)).status is Status.INCONCLUSIVE
    assert judge_health_unknown("h1", answer(code)).status is Status.INCONCLUSIVE


def test_no_health_service_is_recorded_not_a_finding():
    unimplemented = answer(C.UNIMPLEMENTED, details="unknown service grpc.health.v1.Health")
    assert not health_served(unimplemented)
    judged = judge_health_unserved(unimplemented, "/acme.charts.v2.Charts/Ping")
    assert (judged.status, judged.ref) == (Status.SKIP, "health")
    assert "/acme.charts.v2.Charts/Ping" in judged.observed
    admin = [
        o
        for ref, call in admin_plan(LEAST)
        for o in judge_admin(ref, [(call, answer(C.UNIMPLEMENTED))])
    ]
    outcome = settled("REFL-002", [*admin, judged], unset=())
    assert outcome.status is Status.PASS, outcome.summary


def test_listed_services_outside_the_declared_api_fail():
    results = [answer(C.OK, listing("acme.charts.v2.Charts", "grpc.channelz.v1.Channelz"))]
    listed = listed_services([*results, answer(C.UNIMPLEMENTED), answer(C.OK, b"\xff")])
    judged = judge_listed(listed, ["acme.charts.v2.Charts"], [])
    assert (judged.status, judged.ref) == (Status.FAIL, "services")
    assert judged.observed == "grpc.channelz.v1.Channelz"
    allowed = judge_listed(listed, ["acme.charts.v2.Charts"], ["grpc.channelz.v1.Channelz"])
    assert allowed.status is Status.PASS
    infra = {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "acme.charts.v2.Charts",
    }
    assert judge_listed(infra, ["acme.charts.v2.Charts"], []).status is Status.PASS


def test_refl_002_with_channelz_answering_fails():
    observations = [
        o
        for ref, call in admin_plan(None)
        for o in judge_admin(
            ref,
            [(call, answer(C.OK, b"\x0a\x00") if ref == "channelz" else answer(C.UNIMPLEMENTED))],
        )
    ]
    outcome = settled("REFL-002", observations, unset=())
    assert outcome.status is Status.FAIL
    assert refs(observations) == {"channelz": [Status.FAIL] * 2, "csds": [Status.PASS]}


def test_no_listing_to_compare_is_recorded_not_passed():
    judged = judge_unlisted("reflection listed no service")
    assert (judged.status, judged.ref) == (Status.SKIP, "services")


def test_outside_production_a_call_that_never_arrived_is_not_a_refusal():
    for result in (
        answer(C.UNAVAILABLE, details="no healthy upstream"),
        answer(C.DEADLINE_EXCEEDED),
    ):
        judged = judge_reflection("a", attempt(), result, production=False)
        assert judged.status is Status.INCONCLUSIVE
