"""AUTHZ-001...005 judged on recorded answers: no server, a service that is not the reference.

The service here is a made-up chart store (``acme.charts.v2``) with its own field names;
the answers carry the status texts and metadata other stacks send (grpc-go, Node, an Envoy
front proxy). The judges must decide by status codes and decoded payloads alone.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, descriptor_pb2, struct_pb2, wrappers_pb2
from google.rpc import error_details_pb2, status_pb2

from harness.catalogue import Severity
from harness.channels import CallResult
from harness.checks import registered
from harness.checks.authz import (
    AUTHZ_001,
    AUTHZ_002,
    AUTHZ_003,
    AUTHZ_004,
    AUTHZ_005,
    Aimed,
    Tampering,
    Tried,
    ids_in,
    judge_break_glass,
    judge_flags,
    judge_foreign,
    judge_injection,
    judge_listing,
    judge_matrix,
    judge_nonexistent,
    judge_objects,
    judge_stream,
    judge_tampering,
    judge_unchanged,
    kinds_absent,
    plan_break_glass,
    plan_objects,
    plan_streams,
    plan_tampering,
)
from harness.config import parse_config
from harness.descriptors import MethodCatalogue
from harness.errors import ConfigError
from harness.outcome import NotApplicable, Observation, Status
from harness.plans.calls import Call, absent_id, as_number, named_id, swap_id
from harness.policy import Policy
from harness.principals import Principal
from tests.checks import labs
from tests.checks.recorded import answer, refs, settled

C = grpc.StatusCode
SVC = "/acme.charts.v2.Charts"
GET, LIST, UPDATE = f"{SVC}/GetChart", f"{SVC}/ListCharts", f"{SVC}/UpdateChart"
STREAM, WATCH, SYNC = f"{SVC}/StreamCharts", f"{SVC}/WatchChart", f"{SVC}/SyncCharts"
ENVOY_DOWN = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
ENVOY_TRAILERS = (("server", "envoy"), ("x-envoy-upstream-service-time", "3"))
GO_DENIED = "rpc error: code = PermissionDenied desc = caller lacks chart:read"
#: An nginx front answering HTTP 400 / 413 / 503, as the harness's client reads it.
NGINX = (("server", "nginx/1.25.3"), ("content-type", "text/html"))
NGINX_400 = "Received http2 header with status: 400"
NGINX_413 = "Received http2 header with status: 413"
JAVA_INTERNAL = "INTERNAL: java.lang.NullPointerException"


# -- a service that is not the reference ------------------------------------------------


def _catalogue() -> MethodCatalogue:
    f = descriptor_pb2.FileDescriptorProto(name="acme/charts.proto", package="acme.charts.v2")
    f.dependency.extend(["google/protobuf/any.proto", "google/rpc/status.proto"])
    fdp = descriptor_pb2.FieldDescriptorProto

    def msg(name: str, *fields: str) -> None:
        """Fields as ``name`` (a string), ``name:int64``, ``name:Type`` or ``name:Type*``.

        ``*`` marks a repeated field; a ``Type`` with a dot is a full name.
        """
        m = f.message_type.add(name=name)
        for number, spec in enumerate(fields, 1):
            fname, _, type_name = spec.partition(":")
            label = fdp.LABEL_REPEATED if type_name.endswith("*") else fdp.LABEL_OPTIONAL
            fd = m.field.add(name=fname, number=number, label=label, type=fdp.TYPE_STRING)
            kind = type_name.rstrip("*")
            if kind == "int64":
                fd.type = fdp.TYPE_INT64
            elif kind:
                fd.type = fdp.TYPE_MESSAGE
                fd.type_name = f".{kind}" if "." in kind else f".acme.charts.v2.{kind}"

    msg("Chart", "chart_id", "owner", "body", "serial:int64", "extra:google.protobuf.Any")
    msg("ChartRef", "chart_id")
    msg("ListChartsRequest", "tenant")
    msg("ListChartsResponse", "charts:Chart*", "next")
    msg("UpdateChartRequest", "chart:Chart")
    msg("ChartEvent", "chart:Chart", "error:google.rpc.Status")
    s = f.service.add(name="Charts")
    for name, req, resp, cs, ss in (
        ("GetChart", "ChartRef", "Chart", False, False),
        ("ListCharts", "ListChartsRequest", "ListChartsResponse", False, True),
        ("UpdateChart", "UpdateChartRequest", "Chart", False, False),
        ("StreamCharts", "ChartRef", "Chart", True, True),
        ("WatchChart", "ChartRef", "Chart", False, True),
        ("SyncCharts", "ChartRef", "ChartEvent", True, True),
    ):
        s.method.add(
            name=name,
            input_type=f".acme.charts.v2.{req}",
            output_type=f".acme.charts.v2.{resp}",
            client_streaming=cs,
            server_streaming=ss,
        )
    deps = []
    for module in (any_pb2, status_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        deps.append(proto)
    return MethodCatalogue(descriptor_pb2.FileDescriptorSet(file=[*deps, f]), "acme")


CATALOGUE_ = _catalogue()
MATRIX = {
    GET: frozenset({"nurse", "auditor"}),
    LIST: frozenset({"nurse", "auditor"}),
    UPDATE: frozenset({"nurse"}),
    STREAM: frozenset({"nurse"}),
    WATCH: frozenset({"nurse"}),
}
TEMPLATES = {
    GET: '{"chartId": "c-1"}',
    LIST: '{"tenant": "north"}',
    UPDATE: '{"chart": {"chartId": "c-1", "body": "note"}}',
    STREAM: '{"chartId": "c-1"}',
    WATCH: '{"chartId": "c-1"}',
}
NAMES = ("nurse", "auditor", "least-privileged", "no-roles")
PRINCIPALS = {n: Principal(n) for n in NAMES}


def policy(*, mutations: bool = False, matrix: dict[str, frozenset[str]] | None = None) -> Policy:
    return Policy(
        catalogue=CATALOGUE_,
        public=frozenset(),
        writes=frozenset({UPDATE}),
        matrix=MATRIX if matrix is None else matrix,
        allow_mutations=mutations,
    )


def chart(chart_id: str, owner: str = "u-nurse", body: str = "") -> bytes:
    cls = CATALOGUE_.message_class("acme.charts.v2.Chart")
    return cls(chart_id=chart_id, owner=owner, body=body).SerializeToString()


def page(*ids: str) -> bytes:
    cls = CATALOGUE_.message_class("acme.charts.v2.ListChartsResponse")
    chart_cls = CATALOGUE_.message_class("acme.charts.v2.Chart")
    return cls(charts=[chart_cls(chart_id=i) for i in ids]).SerializeToString()


def call(label: str, method: str, principal: str | None = None) -> Call:
    who = PRINCIPALS.get(principal or label)
    return Call(label, method, (b"",), who)


def aimed(ref: str, method: str, principal: str = "nurse", foreign=("c-7", "c-8")) -> Aimed:
    return Aimed(ref, call(principal, method, principal), frozenset(foreign))


# -- the declared probes are the catalogue's -------------------------------------------


@pytest.mark.parametrize(
    ("control_id", "expected"),
    [
        ("AUTHZ-001", {"denied": (), "allowed": (), "no-roles": ("auth.principals.no-roles",),
                       "gaps": ()}),
        ("AUTHZ-002", {"foreign": (), "listing": (), "nonexistent": ()}),
        ("AUTHZ-003", dict.fromkeys(("1", "2", "3"), ("safety.allow_mutations",))),
        ("AUTHZ-004", {"streams": (), "subscriptions": ()}),
        ("AUTHZ-005", dict.fromkeys(("emergency", "others", "audit"),
                                    ("auth.fixtures.break_glass",))),
    ],
)  # fmt: skip
def test_declared_probes_are_the_catalogue_items(control_id, expected):
    probes = registered()[control_id].probes
    assert {p.ref: p.needs for p in probes} == expected
    assert all(p.required for p in probes), "the catalogue makes none of them optional"
    module_level = {
        "AUTHZ-001": AUTHZ_001,
        "AUTHZ-002": AUTHZ_002,
        "AUTHZ-003": AUTHZ_003,
        "AUTHZ-004": AUTHZ_004,
        "AUTHZ-005": AUTHZ_005,
    }
    assert probes == module_level[control_id]


# -- AUTHZ-001 --------------------------------------------------------------------------


def matrix_calls(**codes):
    """One call per (method, principal) with the answer ``codes`` gives, OK otherwise."""
    out = []
    for method in (GET, LIST):
        for name in NAMES:
            code = codes.get(f"{name}@{method.rsplit('/', 1)[1]}")
            if code is None:
                code = C.OK if name in MATRIX[method] else C.PERMISSION_DENIED
            body = (chart("c-1"),) if code == C.OK else ()
            details = GO_DENIED if code == C.PERMISSION_DENIED else ""
            out.append((call(name, method), answer(code, *body, details=details, method=method)))
    return out


def test_matrix_held_passes_every_probe():
    observations = judge_matrix(MATRIX, [GET, LIST], matrix_calls())
    assert refs(observations) == {
        "gaps": [Status.PASS],
        "allowed": [Status.PASS] * 4,
        "denied": [Status.PASS] * 2,
        "no-roles": [Status.PASS] * 2,
    }
    assert settled("AUTHZ-001", observations, unset=()).status is Status.PASS


def test_denied_pair_answered_is_critical_and_unauthenticated_is_low():
    observations = judge_matrix(
        MATRIX,
        [GET, LIST],
        matrix_calls(
            **{"least-privileged@GetChart": C.OK, "no-roles@ListCharts": C.UNAUTHENTICATED}
        ),
    )
    failed = {(o.ref, o.severity) for o in observations if o.status is Status.FAIL}
    assert failed == {("denied", Severity.CRITICAL), ("no-roles", Severity.LOW)}
    outcome = settled("AUTHZ-001", observations, unset=())
    assert outcome.status is Status.FAIL
    assert outcome.severity is Severity.CRITICAL


def test_allowed_pair_refused_fails():
    observations = judge_matrix(
        MATRIX, [GET, LIST], matrix_calls(**{"nurse@GetChart": C.PERMISSION_DENIED})
    )
    assert [o.status for o in observations if o.ref == "allowed"].count(Status.FAIL) == 1


def test_policy_gap_fails_and_no_roles_is_still_held_there():
    calls = [
        *matrix_calls(),
        (call("nurse", UPDATE), answer(C.OK, chart("c-1"), method=UPDATE)),
        (call("no-roles", UPDATE), answer(C.OK, chart("c-1"), method=UPDATE)),
    ]
    matrix = {k: v for k, v in MATRIX.items() if k != UPDATE}
    observations = judge_matrix(matrix, [GET, LIST, UPDATE], calls)
    gaps = [o for o in observations if o.ref == "gaps"]
    assert [(o.status, o.severity) for o in gaps] == [(Status.FAIL, Severity.HIGH)]
    assert UPDATE in gaps[0].probe
    # The nurse's call to the gap is not judged; no-roles must be refused everywhere.
    assert not [o for o in observations if o.ref == "allowed" and UPDATE in o.probe]
    assert [o.status for o in observations if o.ref == "no-roles" and UPDATE in o.probe] == [
        Status.FAIL
    ]


def test_unreachable_pairs_are_inconclusive_never_a_refusal():
    observations = judge_matrix(
        MATRIX,
        [GET, LIST],
        matrix_calls(
            **{
                "nurse@GetChart": C.UNAVAILABLE,
                "least-privileged@GetChart": C.DEADLINE_EXCEEDED,
                "no-roles@GetChart": C.UNAVAILABLE,
            }
        ),
    )
    unsure = {o.ref for o in observations if o.status is Status.INCONCLUSIVE}
    assert unsure == {"allowed", "denied", "no-roles"}
    assert settled("AUTHZ-001", observations, unset=()).status is Status.INCONCLUSIVE


def test_without_a_no_roles_principal_the_control_cannot_pass():
    calls = [(c, r) for c, r in matrix_calls() if c.principal.name != "no-roles"]
    observations = judge_matrix(MATRIX, [GET, LIST], calls)
    outcome = settled("AUTHZ-001", observations, unset=("auth.principals.no-roles",))
    assert outcome.status is Status.INCONCLUSIVE
    missing = next(p for p in outcome.probes if p.id == "AUTHZ-001(no-roles)")
    assert missing.enable == "auth.principals.no-roles"


# -- AUTHZ-002 --------------------------------------------------------------------------


def test_objects_plan_foreign_nonexistent_and_listing_calls():
    principals = {k: v for k, v in PRINCIPALS.items() if k != "auditor"}
    planned, skipped = plan_objects(
        policy(),
        TEMPLATES,
        {"nurse": ["c-1"]},
        {"nurse": ["c-7", "c-8"], "auditor": ["c-1"]},
        principals,
        "0badf00d",
    )
    kinds = [(a.ref, a.call.method) for a in planned]
    assert kinds == [
        ("foreign", GET),
        ("foreign", GET),
        ("nonexistent", GET),
        ("listing", LIST),
        ("foreign", STREAM),
        ("foreign", STREAM),
        ("nonexistent", STREAM),
        ("foreign", WATCH),
        ("foreign", WATCH),
        ("nonexistent", WATCH),
    ]  # no UpdateChart: mutations are not allowed
    ref = CATALOGUE_.message_class("acme.charts.v2.ChartRef")
    assert ref.FromString(planned[1].call.requests[0]).chart_id == "c-8"
    assert ref.FromString(planned[2].call.requests[0]).chart_id == "nonexistent-0badf00d"
    assert [(o.ref, o.status, o.expected) for o in skipped] == [
        ("foreign", Status.SKIP, "auth.principals.auditor")
    ]


def test_foreign_refused_passes_and_foreign_data_is_critical():
    refused = judge_foreign(
        aimed("foreign", GET), answer(C.PERMISSION_DENIED, details=GO_DENIED), None, False
    )
    leaked = judge_foreign(aimed("foreign", GET), answer(C.OK, chart("c-7")), None, False)
    assert (refused.status, refused.ref) == (Status.PASS, "foreign")
    assert (leaked.status, leaked.severity) == (Status.FAIL, Severity.CRITICAL)


def test_existence_hiding_needs_the_same_code_and_message_as_a_nonexistent_id():
    a = aimed("foreign", GET)
    hidden = answer(C.NOT_FOUND, details="chart not found")
    same = judge_foreign(a, hidden, answer(C.NOT_FOUND, details="chart not found"), True)
    differs = judge_foreign(
        a, hidden, answer(C.NOT_FOUND, details="no such chart c-nonexistent"), True
    )
    lost_twin = judge_foreign(a, hidden, answer(C.UNAVAILABLE, details=ENVOY_DOWN), True)
    not_hiding = judge_foreign(a, hidden, answer(C.NOT_FOUND, details="chart not found"), False)
    assert same.status is Status.PASS
    assert (differs.status, differs.severity) == (Status.FAIL, Severity.HIGH)
    assert lost_twin.status is Status.INCONCLUSIVE
    assert not_hiding.status is Status.FAIL


def test_foreign_call_that_never_arrived_is_inconclusive():
    lost = answer(C.UNAVAILABLE, details=ENVOY_DOWN, trailers=ENVOY_TRAILERS)
    assert judge_foreign(aimed("foreign", GET), lost, None, False).status is Status.INCONCLUSIVE


def test_listing_with_a_foreign_id_fails_and_own_ids_pass():
    own = judge_listing(CATALOGUE_, aimed("listing", LIST), answer(C.OK, page("c-1", "c-2")))
    leaked = judge_listing(
        CATALOGUE_, aimed("listing", LIST), answer(C.OK, page("c-1"), page("c-8"))
    )
    refused = judge_listing(CATALOGUE_, aimed("listing", LIST), answer(C.PERMISSION_DENIED))
    assert own.status is refused.status is Status.PASS
    assert (leaked.status, leaked.severity) == (Status.FAIL, Severity.CRITICAL)
    assert "c-8" in leaked.observed
    assert "c-7" not in leaked.observed


@pytest.mark.parametrize(
    "lost",
    [
        answer(C.UNAVAILABLE, details=ENVOY_DOWN, trailers=ENVOY_TRAILERS),
        answer(C.DEADLINE_EXCEEDED, details="context deadline exceeded"),
        answer(C.DEADLINE_EXCEEDED, page("c-1"), details="Deadline exceeded"),
    ],
    ids=["envoy-unavailable", "go-deadline", "node-deadline-mid-stream"],
)
def test_listing_that_did_not_come_back_is_inconclusive_not_a_pass(lost):
    # The recorded case: an empty (or cut-off) listing looked like "no foreign ID" and passed.
    judged = judge_listing(CATALOGUE_, aimed("listing", LIST), lost)
    assert judged.status is Status.INCONCLUSIVE


def test_listing_that_does_not_decode_is_inconclusive():
    judged = judge_listing(CATALOGUE_, aimed("listing", LIST), answer(C.OK, b"\xff\xff\xff"))
    assert judged.status is Status.INCONCLUSIVE
    assert "did not decode" in judged.observed


def test_nonexistent_id_is_the_reference_point():
    a = aimed("nonexistent", GET)
    assert judge_nonexistent(CATALOGUE_, a, answer(C.NOT_FOUND)).status is Status.PASS
    assert judge_nonexistent(CATALOGUE_, a, answer(C.PERMISSION_DENIED)).status is Status.PASS
    lost = answer(C.UNAVAILABLE, details=ENVOY_DOWN)
    assert judge_nonexistent(CATALOGUE_, a, lost).status is Status.INCONCLUSIVE
    leaked = judge_nonexistent(CATALOGUE_, a, answer(C.OK, chart("c-7")))
    assert (leaked.status, leaked.severity) == (Status.FAIL, Severity.CRITICAL)


@pytest.mark.parametrize(
    "answered",
    [
        answer(C.NOT_FOUND, b"\xff\xff\xff"),
        answer(C.OK, b"\x98\x06\x01"),  # only a field Chart does not declare
        answer(C.NOT_FOUND, trailers=(("grpc-status-details-bin", b"\xff\x00garbage"),)),
        answer(C.INTERNAL, details=NGINX_400, headers=NGINX),
        answer(C.UNKNOWN, details=NGINX_413, headers=NGINX),
        answer(C.INTERNAL, details=JAVA_INTERNAL),
    ],
    ids=["undecodable", "unknown-fields-only", "undecodable-details", "nginx-400",
         "nginx-413", "java-internal"],
)  # fmt: skip
def test_nonexistent_id_answered_with_nothing_readable_is_inconclusive(answered):
    # The recorded case: an answer that does not decode (or an error) counted as held.
    judged = judge_nonexistent(CATALOGUE_, aimed("nonexistent", GET), answered)
    assert judged.status is Status.INCONCLUSIVE


def test_foreign_refusal_is_judged_with_what_its_details_carry():
    record = any_pb2.Any()
    record.Pack(struct_pb2.Struct(fields={"chartId": struct_pb2.Value(string_value="c-7")}))
    explained = any_pb2.Any()
    explained.Pack(error_details_pb2.ErrorInfo(reason="NOT_ON_CARE_TEAM", domain="acme.dev"))

    def denied(*payloads: any_pb2.Any) -> CallResult:
        blob = status_pb2.Status(code=7, message="denied", details=payloads).SerializeToString()
        return answer(C.PERMISSION_DENIED, trailers=(("grpc-status-details-bin", blob),))

    a = aimed("foreign", GET)
    assert judge_foreign(a, denied(explained), None, False).status is Status.PASS
    leaked = judge_foreign(a, denied(record), None, False)
    assert (leaked.status, leaked.severity) == (Status.FAIL, Severity.CRITICAL)
    garbled = answer(C.PERMISSION_DENIED, trailers=(("grpc-status-details-bin", b"\xff\x00"),))
    assert judge_foreign(a, garbled, None, False).status is Status.INCONCLUSIVE


def chart_with(**fields: object) -> bytes:
    cls = CATALOGUE_.message_class("acme.charts.v2.Chart")
    c: Any = cls(chart_id="c-1")
    for name, value in fields.items():
        if name == "extra":
            c.extra.Pack(value)
        else:
            setattr(c, name, value)
    return c.SerializeToString()


@pytest.mark.parametrize(
    ("blob", "foreign"),
    [
        (chart_with(body="see charts/c-7 for the history"), "c-7"),  # embedded in a string
        (chart_with(owner="c-7"), "c-7"),
        (chart_with(serial=7031), "7031"),  # an integer field
        (chart_with(extra=wrappers_pb2.StringValue(value="c-7")), "c-7"),  # a wrapper in an Any
        (chart_with(extra=wrappers_pb2.Int64Value(value=7031)), "7031"),
        (chart_with(extra=struct_pb2.Struct(fields={"ref": struct_pb2.Value(string_value="c-7")})),
         "c-7"),
        (chart("c-1") + b"\x52\x03c-7", "c-7"),  # field 10, which Chart does not declare
        (chart("c-1") + b"\x58\xf7\x36", "7031"),  # an undeclared varint
    ],
    ids=["embedded", "other-field", "int64", "any-string", "any-int", "any-struct",
         "unknown-string", "unknown-varint"],
)  # fmt: skip
def test_foreign_ids_are_found_wherever_a_response_holds_them(blob, foreign):
    # The recorded case: only a string field equal to the ID was seen.
    found, undecodable = ids_in(CATALOGUE_, GET, [blob], [foreign, "c-8"])
    assert (found, undecodable) == ({foreign}, 0)
    listing = judge_listing(
        CATALOGUE_, aimed("listing", GET, foreign=(foreign,)), answer(C.OK, blob)
    )
    assert (listing.status, listing.severity) == (Status.FAIL, Severity.CRITICAL)


@pytest.mark.parametrize(
    "blob",
    [
        chart_with(body="c-77 and xc-7 and c-7b"),  # a longer token is another ID
        chart_with(serial=70310),
        chart_with(body="in 27031 charts"),
    ],
)
def test_an_id_inside_a_longer_token_is_not_named(blob):
    assert ids_in(CATALOGUE_, GET, [blob], ["c-7", "7031"]) == (set(), 0)


def test_objects_judged_together_pair_each_foreign_call_with_its_twin():
    sent = [
        (aimed("foreign", GET), answer(C.NOT_FOUND, details="not found")),
        (aimed("nonexistent", GET), answer(C.NOT_FOUND, details="not found")),
        (aimed("listing", LIST), answer(C.OK, page("c-1"))),
    ]
    observations = judge_objects(CATALOGUE_, sent, hiding=True)
    assert refs(observations) == {
        "foreign": [Status.PASS],
        "nonexistent": [Status.PASS],
        "listing": [Status.PASS],
    }
    assert settled("AUTHZ-002", observations, unset=()).status is Status.PASS
    # Without a listing method the control does not pass on foreign calls alone.
    partial = settled("AUTHZ-002", observations[:2], unset=())
    assert partial.status is Status.INCONCLUSIVE
    assert "AUTHZ-002(listing)" in partial.summary


# -- AUTHZ-003 --------------------------------------------------------------------------


def tampering_plan(**kw) -> Tampering:
    args = {
        "policy": policy(mutations=True),
        "templates": TEMPLATES,
        "sandbox": ["c-9"],
        "own_ids": ["c-1"],
        "principals": PRINCIPALS,
        "sensitive": ["chart.owner", "chart.missing"],
        "nonce": "hipaa-0badf00d",
    }
    return plan_tampering(**{**args, **kw})


def test_tampering_plan_touches_the_sandbox_record_only():
    plan = tampering_plan()
    ref = CATALOGUE_.message_class("acme.charts.v2.ChartRef")
    update = CATALOGUE_.message_class("acme.charts.v2.UpdateChartRequest")
    assert plan.read.principal.name == "auditor"
    assert plan.read.method == GET
    assert ref.FromString(plan.read.requests[0]).chart_id == "c-9"
    assert [(s.ref, s.call.principal.name) for s in plan.steps] == [
        ("2", "least-privileged"),
        ("1", "nurse"),
    ]
    denied, injected = (update.FromString(s.call.requests[0]) for s in plan.steps)
    assert denied.chart.chart_id == injected.chart.chart_id == "c-9"
    assert denied.chart.body == "note-hipaa-0badf00d"
    assert injected.chart.owner == "hipaa-0badf00d"
    assert plan.skipped == ()


def test_tampering_plan_says_what_each_missing_step_needs():
    principals = {k: v for k, v in PRINCIPALS.items() if k != "least-privileged"}
    plan = tampering_plan(principals=principals, sensitive=[])
    assert plan.steps == ()
    assert {o.ref: o.status for o in plan.skipped} == dict.fromkeys(("1", "2", "3"), Status.SKIP)
    assert settled("AUTHZ-003", plan.skipped, unset=()).status is Status.SKIP
    with pytest.raises(NotApplicable):
        tampering_plan(templates={GET: TEMPLATES[GET]})


def test_denied_write_refused_and_record_unchanged_passes():
    plan = tampering_plan()
    record = answer(C.OK, chart("c-9", body="note"))
    tried = [
        Tried(plan.steps[0], answer(C.PERMISSION_DENIED, details=GO_DENIED), record, record),
        Tried(plan.steps[1], answer(C.INVALID_ARGUMENT, details="owner is read-only"), record),
    ]
    observations = judge_tampering(CATALOGUE_, plan, tried, "hipaa-0badf00d")
    assert refs(observations) == {"2": [Status.PASS], "3": [Status.PASS], "1": [Status.PASS]}
    assert settled("AUTHZ-003", observations, unset=()).status is Status.PASS


def test_denied_write_that_landed_fails():
    plan = tampering_plan()
    before = answer(C.OK, chart("c-9", body="note"))
    after = answer(C.OK, chart("c-9", body="note-hipaa-0badf00d"))
    judged = judge_unchanged(plan.read, before, after)
    assert (judged.status, judged.severity, judged.observed) == (
        Status.FAIL,
        Severity.CRITICAL,
        "changed",
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (answer(C.OK, chart("c-9")), answer(C.UNAVAILABLE, details=ENVOY_DOWN)),
        (answer(C.UNAVAILABLE, details=ENVOY_DOWN), answer(C.UNAVAILABLE, details=ENVOY_DOWN)),
        (answer(C.DEADLINE_EXCEEDED), answer(C.OK, chart("c-9"))),
        (answer(C.PERMISSION_DENIED), answer(C.PERMISSION_DENIED)),
    ],
    ids=["after-lost", "both-lost", "before-lost", "reader-refused"],
)
def test_read_back_that_shows_nothing_is_inconclusive(before, after):
    # The recorded case: two lost read-backs compared equal and passed as "unchanged".
    judged = judge_unchanged(tampering_plan().read, before, after)
    assert (judged.status, judged.ref) == (Status.INCONCLUSIVE, "3")


def test_injected_sensitive_value():
    step = tampering_plan().steps[1]
    nonce = "hipaa-0badf00d"
    stored = answer(C.OK, chart("c-9", owner=nonce))
    clean = answer(C.OK, chart("c-9", owner="u-nurse"))
    lost = answer(C.UNAVAILABLE, details=ENVOY_DOWN)

    def judged(write, back):
        return judge_injection(CATALOGUE_, "acme.charts.v2.Chart", step, write, back, nonce)

    assert judged(answer(C.OK, chart("c-9")), clean).status is Status.PASS  # ignored
    assert judged(answer(C.OK, chart("c-9", owner=nonce)), stored).status is Status.FAIL
    assert judged(answer(C.INVALID_ARGUMENT), stored).status is Status.FAIL  # partial write
    assert judged(answer(C.PERMISSION_DENIED), lost).status is Status.PASS  # refused
    assert judged(answer(C.OK, chart("c-9")), lost).status is Status.INCONCLUSIVE
    assert judged(lost, clean).status is Status.INCONCLUSIVE


def test_denied_write_accepted_is_critical():
    plan = tampering_plan()
    record = answer(C.OK, chart("c-9"))
    tried = [Tried(plan.steps[0], answer(C.OK, chart("c-9")), record, record)]
    observations = judge_tampering(CATALOGUE_, plan, tried, "hipaa-0badf00d")
    two = next(o for o in observations if o.ref == "2")
    assert (two.status, two.severity) == (Status.FAIL, Severity.CRITICAL)


# -- AUTHZ-004 --------------------------------------------------------------------------


def test_stream_plan_own_foreign_own_and_two_subscriptions():
    planned, skipped = plan_streams(
        policy(), [STREAM, WATCH], TEMPLATES, {"nurse": ["c-1"]}, {"nurse": ["c-7"]}, PRINCIPALS
    )
    ref = CATALOGUE_.message_class("acme.charts.v2.ChartRef")
    assert [(a.ref, a.call.method) for a in planned] == [
        ("streams", STREAM),
        ("subscriptions", WATCH),
        ("subscriptions", WATCH),
    ]
    sent = [ref.FromString(b).chart_id for b in planned[0].call.requests]
    assert sent == ["c-1", "c-7", "c-1"]
    assert [ref.FromString(a.call.requests[0]).chart_id for a in planned[1:]] == ["c-7", "*"]
    assert skipped == []
    _, skipped = plan_streams(
        policy(), [STREAM], {STREAM: "{}"}, {"nurse": ["c-1"]}, {"nurse": ["c-7"]}, PRINCIPALS
    )
    assert [(o.ref, o.status) for o in skipped] == [("streams", Status.SKIP)]


def test_a_stream_kind_the_service_has_not_does_not_hold_authz_004_back():
    """A service with server streams only (a Node LabOrders watch) has no client stream to
    send a foreign message on: that probe does not apply, and the control PASSes on its
    subscriptions; with neither kind declared nothing is said (the call decides)."""
    absent = kinds_absent(CATALOGUE_, [WATCH])
    assert [(o.ref, o.status) for o in absent] == [("streams", Status.SKIP)]
    assert [o.ref for o in kinds_absent(CATALOGUE_, [STREAM])] == ["subscriptions"]
    assert kinds_absent(CATALOGUE_, [STREAM, WATCH]) == []
    assert kinds_absent(CATALOGUE_, ["/acme.charts.v2.Charts/Undeclared"]) == []
    held = Observation("nurse -> WATCH", "PERMISSION_DENIED", "7", Status.PASS).of("subscriptions")
    assert settled("AUTHZ-004", [*absent, held, held]).status is Status.PASS
    assert settled("AUTHZ-004", [held]).status is Status.INCONCLUSIVE  # before: never PASS


def event(chart_id: str = "", denied: bool = False, packed: bool = False) -> bytes:
    """A ChartEvent: a chart, or a per-message google.rpc.Status (direct or in an Any)."""
    cls = CATALOGUE_.message_class("acme.charts.v2.ChartEvent")
    e: Any = cls()
    if chart_id:
        e.chart.chart_id = chart_id
    if denied:
        status = status_pb2.Status(code=7, message="not your chart")
        if packed:  # a service that wraps it: Chart.extra holds the Status
            e.chart.extra.Pack(status)
        else:
            e.error.code, e.error.message = status.code, status.message
    return e.SerializeToString()


def test_stream_refusing_the_foreign_message_passes():
    a = aimed("streams", STREAM)
    ended = answer(C.PERMISSION_DENIED, chart("c-1"), details=GO_DENIED)
    assert judge_stream(CATALOGUE_, a, ended, per_message=False).status is Status.PASS
    assert judge_stream(CATALOGUE_, a, ended, per_message=True).status is Status.PASS
    sync = aimed("streams", SYNC)
    for denial in (event(denied=True), event(denied=True, packed=True)):
        answered = answer(C.OK, event("c-1"), denial, event("c-1"))
        assert judge_stream(CATALOGUE_, sync, answered, per_message=True).status is Status.PASS
        # Without authz.per_message_errors the stream itself must end 7.
        judged = judge_stream(CATALOGUE_, sync, answered, per_message=False)
        assert judged.status is Status.FAIL


def test_per_message_errors_pass_only_on_a_per_message_refusal():
    # The recorded looseness: with authz.per_message_errors any stream ending OK passed,
    # whatever it did with the foreign message (dropped it, answered it with own data).
    sync = aimed("streams", SYNC)
    silent = answer(C.OK, event("c-1"), event("c-1"))
    judged = judge_stream(CATALOGUE_, sync, silent, per_message=True)
    assert judged.status is Status.INCONCLUSIVE
    assert "no per-message error" in judged.observed
    other_error = answer(C.OK, event("c-1"), event_with_code(13), event("c-1"))
    assert judge_stream(CATALOGUE_, sync, other_error, True).status is Status.INCONCLUSIVE
    crashed = answer(C.UNKNOWN, event("c-1"), details="Unexpected error in handler")
    assert judge_stream(CATALOGUE_, sync, crashed, True).status is Status.FAIL


def event_with_code(code: int) -> bytes:
    cls = CATALOGUE_.message_class("acme.charts.v2.ChartEvent")
    e: Any = cls()
    e.error.code = code
    return e.SerializeToString()


def test_stream_whose_answer_does_not_decode_is_inconclusive_never_a_refusal():
    a = aimed("streams", STREAM)
    garbled = answer(C.PERMISSION_DENIED, b"\xff\xff\xff", details=GO_DENIED)
    assert judge_stream(CATALOGUE_, a, garbled, per_message=False).status is Status.INCONCLUSIVE
    details = (("grpc-status-details-bin", b"\xff\x00 not a status"),)
    bad_details = answer(C.PERMISSION_DENIED, trailers=details)
    assert judge_stream(CATALOGUE_, a, bad_details, False).status is Status.INCONCLUSIVE


def test_foreign_record_in_a_refused_streams_status_details_is_critical():
    record = any_pb2.Any()
    record.Pack(CATALOGUE_.message_class("acme.charts.v2.Chart")(chart_id="c-7"))
    blob = status_pb2.Status(code=7, message="denied", details=[record]).SerializeToString()
    ended = answer(C.PERMISSION_DENIED, chart("c-1"), trailers=(("grpc-status-details-bin", blob),))
    judged = judge_stream(CATALOGUE_, aimed("streams", STREAM), ended, per_message=False)
    assert (judged.status, judged.severity) == (Status.FAIL, Severity.CRITICAL)


def test_stream_delivering_foreign_data_is_critical():
    a = aimed("streams", STREAM)
    leaked = answer(C.OK, chart("c-1"), chart("c-7"), chart("c-1"), details="")
    judged = judge_stream(CATALOGUE_, a, leaked, per_message=True)
    assert (judged.status, judged.severity) == (Status.FAIL, Severity.CRITICAL)


@pytest.mark.parametrize("ref", ["streams", "subscriptions"])
def test_stream_that_never_arrived_is_inconclusive(ref):
    lost = answer(C.UNAVAILABLE, details=ENVOY_DOWN, trailers=ENVOY_TRAILERS)
    judged = judge_stream(
        CATALOGUE_, aimed(ref, STREAM if ref == "streams" else WATCH), lost, False
    )
    assert (judged.status, judged.ref) == (Status.INCONCLUSIVE, ref)


def test_subscriptions_must_be_refused_with_no_message():
    a = aimed("subscriptions", WATCH)
    assert judge_stream(CATALOGUE_, a, answer(C.PERMISSION_DENIED), False).status is Status.PASS
    hidden = judge_stream(CATALOGUE_, a, answer(C.NOT_FOUND), False)
    assert (hidden.status, hidden.severity) == (Status.FAIL, Severity.LOW)
    wildcard = judge_stream(CATALOGUE_, a, answer(C.OK, chart("c-1"), chart("c-8")), False)
    assert (wildcard.status, wildcard.severity) == (Status.FAIL, Severity.CRITICAL)


# -- AUTHZ-005 --------------------------------------------------------------------------


def test_break_glass_plan_calls_every_method_naming_an_own_id_for_a_foreign_record():
    planned = plan_break_glass(policy(), TEMPLATES, ["c-1"], "c-7", [GET], "t0k3n")
    assert [(a.ref, a.call.method) for a in planned] == [
        ("emergency", GET),
        ("others", STREAM),
        ("others", WATCH),
    ]  # no UpdateChart without mutations, no ListCharts (it names no own ID)
    assert planned[0].call.principal is None
    assert planned[0].call.metadata == (("authorization", "Bearer t0k3n"),)


def test_break_glass_calls():
    sent = [
        (aimed("emergency", GET), answer(C.OK, chart("c-7"))),
        (aimed("others", WATCH), answer(C.PERMISSION_DENIED, details=GO_DENIED)),
    ]
    assert refs(judge_break_glass(sent)) == {"emergency": [Status.PASS], "others": [Status.PASS]}
    refused_emergency = judge_break_glass([(aimed("emergency", GET), answer(C.PERMISSION_DENIED))])
    assert [(o.status, o.severity) for o in refused_emergency] == [(Status.FAIL, Severity.MEDIUM)]
    answered_other = judge_break_glass([(aimed("others", WATCH), answer(C.OK, chart("c-7")))])
    assert [(o.status, o.severity) for o in answered_other] == [(Status.FAIL, Severity.CRITICAL)]


def test_break_glass_call_that_never_arrived_is_inconclusive_and_not_looked_up():
    lost = answer(C.DEADLINE_EXCEEDED, details="context deadline exceeded")
    judged = judge_break_glass([(aimed("emergency", GET), lost)])
    assert [o.status for o in judged] == [Status.INCONCLUSIVE]


@pytest.mark.parametrize(
    "errored",
    [
        answer(C.INTERNAL, details=NGINX_400, headers=NGINX),
        answer(C.UNKNOWN, details=NGINX_413, headers=NGINX),
        answer(C.INTERNAL, details=JAVA_INTERNAL),
        answer(C.UNKNOWN, details="Unexpected error in handler"),  # grpc-js
        answer(C.NOT_FOUND, details="rpc error: code = NotFound desc = chart"),
    ],
    ids=["nginx-400", "nginx-413", "java", "node", "go-not-found"],
)
def test_an_error_is_no_emergency_access(errored):
    # The recorded case: break-glass answered INTERNAL passed as an allowed emergency access.
    judged = judge_break_glass([(aimed("emergency", GET), errored)])
    assert [(o.ref, o.status) for o in judged] == [("emergency", Status.INCONCLUSIVE)]
    denied = judge_break_glass([(aimed("emergency", GET), answer(C.UNAUTHENTICATED))])
    assert [o.status for o in denied] == [Status.FAIL]


def test_emergency_events_must_be_flagged_with_a_reason():
    def lookup(event, name):  # another service's event shape: nested, other names
        return event.get("access", {}).get({"emergency": "breakGlass", "reason": "why"}[name])

    events = {
        "r1": [{"access": {"breakGlass": True, "why": "ED admission"}}],
        "r2": [{"access": {"breakGlass": True, "why": "  "}}],
        "r3": [{"access": {"breakGlass": "true", "why": "ED"}}],
        "r4": [],
        "r5": [{"access": {"breakGlass": "false", "why": "ED"}}],
        "r6": [{"access": {"breakGlass": 1, "why": "ED"}}],
        "r7": [{"access": {"breakGlass": True, "why": True}}],  # a flag is no reason
        "r8": [{"access": {"breakGlass": True, "why": "ED"}}, {"access": {"why": "ED"}}],
    }
    judged = judge_flags([f"r{i}" for i in range(1, 9)], events, "", lookup)
    assert [(o.ref, o.status) for o in judged] == [
        ("audit", Status.PASS),
        ("audit", Status.FAIL),
        ("audit", Status.FAIL),
        ("audit", Status.INCONCLUSIVE),
        ("audit", Status.FAIL),
        ("audit", Status.FAIL),
        ("audit", Status.FAIL),
        ("audit", Status.FAIL),
    ]
    unreadable = judge_flags(["r1"], events, "audit.source: permission denied", lookup)
    assert [o.status for o in unreadable] == [Status.INCONCLUSIVE]


def test_break_glass_without_its_audit_check_does_not_pass():
    sent = [
        (aimed("emergency", GET), answer(C.OK, chart("c-7"))),
        (aimed("others", WATCH), answer(C.PERMISSION_DENIED)),
    ]
    outcome = settled("AUTHZ-005", judge_break_glass(sent), unset=())
    assert outcome.status is Status.INCONCLUSIVE
    assert "AUTHZ-005(audit)" in outcome.summary


# -- integer IDs: a template naming a record by number ------------------------------------

NOTES = "/acme.notes.v1.Notes"
NOTE_GET, NOTE_WATCH, NOTE_SYNC = f"{NOTES}/GetNote", f"{NOTES}/WatchNotes", f"{NOTES}/SyncNotes"


def _notes() -> MethodCatalogue:
    """A service whose records are numbered: ``patient_id`` is an int64."""
    f = descriptor_pb2.FileDescriptorProto(name="acme/notes.proto", package="acme.notes.v1")
    fdp = descriptor_pb2.FieldDescriptorProto
    ref = f.message_type.add(name="NoteRef")
    ref.field.add(name="patient_id", number=1, type=fdp.TYPE_INT64, label=fdp.LABEL_OPTIONAL)
    ref.field.add(name="note", number=2, type=fdp.TYPE_STRING, label=fdp.LABEL_OPTIONAL)
    s = f.service.add(name="Notes")
    for name, cs, ss in (
        ("GetNote", False, False),
        ("WatchNotes", False, True),
        ("SyncNotes", True, True),
    ):
        s.method.add(
            name=name,
            input_type=".acme.notes.v1.NoteRef",
            output_type=".acme.notes.v1.NoteRef",
            client_streaming=cs,
            server_streaming=ss,
        )
    return MethodCatalogue(descriptor_pb2.FileDescriptorSet(file=[f]), "acme")


NOTES_CATALOGUE = _notes()
NOTE_REF = NOTES_CATALOGUE.message_class("acme.notes.v1.NoteRef")
NOTE_TEMPLATES = {
    NOTE_GET: '{"patientId": 42, "note": "42 is the answer"}',
    NOTE_WATCH: '{"patientId": 42}',
    NOTE_SYNC: '{"patientId": 42}',
}


def notes_policy() -> Policy:
    matrix = {m: frozenset({"nurse"}) for m in (NOTE_GET, NOTE_WATCH, NOTE_SYNC)}
    return Policy(NOTES_CATALOGUE, frozenset(), frozenset(), matrix, False)


def test_ids_written_as_json_numbers_are_named_and_swapped():
    text = '{"patientId": 42, "note": "p"}'
    assert named_id(text, ["42"]) == "42"
    assert named_id(text, [42]) == "42"  # as config may give it
    assert named_id('{"patientId": 421}', ["42"]) is None  # a number is named whole
    assert named_id('{"flag": true}', ["1"]) is None  # a boolean names no record
    assert named_id('{"patientId": "42"}', ["42"]) == "42"  # int64 as a JSON string
    assert json.loads(swap_id(text, "42", "77")) == {"patientId": 77, "note": "p"}
    assert json.loads(swap_id('{"patientId": "42"}', "42", 77)) == {"patientId": "77"}
    # Strings as before: values and map keys, never a longer string holding the ID.
    swapped = json.loads(swap_id('{"id": "c-1", "m": {"c-1": 1}, "t": "c-12"}', "c-1", "c-7"))
    assert swapped == {"id": "c-7", "m": {"c-7": 1}, "t": "c-12"}
    assert swap_id("not json: 'c-1' \"c-1\"", "c-1", "c-7") == "not json: 'c-1' \"c-7\""
    assert as_number(text, "42")
    assert not as_number('{"patientId": "42"}', "42")
    assert absent_id(text, "42", "0badf00d") == str(2_000_000_000 + 0x0BADF00D % 100_000_000)
    assert absent_id('{"chartId": "c-1"}', "c-1", "0badf00d") == "nonexistent-0badf00d"


def test_objects_plan_reaches_a_template_with_a_numeric_id():
    """``{"patientId": 42}`` was never planned: the ID was looked for as the string "42"."""
    planned, skipped = plan_objects(
        notes_policy(), NOTE_TEMPLATES, {"nurse": ["42"]}, {"nurse": ["77"]}, PRINCIPALS, "0badf00d"
    )
    assert skipped == []
    got = [(a.ref, a.call.method, NOTE_REF.FromString(a.call.requests[0])) for a in planned]
    absent = 2_000_000_000 + 0x0BADF00D % 100_000_000
    assert [(ref, m, r.patient_id) for ref, m, r in got] == [
        ("foreign", NOTE_GET, 77),
        ("nonexistent", NOTE_GET, absent),
        ("foreign", NOTE_WATCH, 77),
        ("nonexistent", NOTE_WATCH, absent),
        ("foreign", NOTE_SYNC, 77),
        ("nonexistent", NOTE_SYNC, absent),
    ]
    assert got[0][2].note == "42 is the answer"  # text that merely contains 42 is kept
    # A foreign record found by its number in a response is a leak.
    leaked = judge_foreign(planned[0], answer(C.OK, NOTE_REF(patient_id=77).SerializeToString()),
                           None, False)  # fmt: skip
    assert (leaked.status, leaked.severity) == (Status.FAIL, Severity.CRITICAL)


def test_stream_plan_with_a_numeric_id_sends_no_wildcard():
    """An integer field cannot hold "*": the foreign subscription only."""
    planned, _ = plan_streams(
        notes_policy(),
        [NOTE_SYNC, NOTE_WATCH],
        NOTE_TEMPLATES,
        {"nurse": ["42"]},
        {"nurse": ["77"]},
        PRINCIPALS,
    )
    assert [(a.ref, a.call.method) for a in planned] == [
        ("streams", NOTE_SYNC),
        ("subscriptions", NOTE_WATCH),
    ]
    sent = [NOTE_REF.FromString(b).patient_id for b in planned[0].call.requests]
    assert sent == [42, 77, 42]
    assert NOTE_REF.FromString(planned[1].call.requests[0]).patient_id == 77


def test_config_takes_integer_ids(tmp_path):
    raw = (
        b'[authz]\nsandbox_ids = [7, "s-1"]\n'
        b'[authz.own_ids]\nnurse = [42]\n[authz.foreign_ids]\nnurse = [77, "78"]\n'
    )
    config = parse_config(raw, "hipaa.toml", tmp_path)
    assert config.table("authz.own_ids") == {"nurse": ["42"]}
    assert config.table("authz.foreign_ids") == {"nurse": ["77", "78"]}
    assert config.get("authz.sandbox_ids") == ["7", "s-1"]
    with pytest.raises(ConfigError, match="string or an integer ID"):
        parse_config(b"[authz.own_ids]\nnurse = [true]\n", "hipaa.toml", tmp_path)


# -- a service whose responses wrap their records: filters by schema, not by shape ---------

LAB_TEMPLATES = {
    labs.GET: '{"orderId": 5001}',
    labs.LIST: '{"patientId": 42, "maxResults": 10}',
    labs.STREAM: '{"patientId": 42}',
}


def lab_policy() -> Policy:
    matrix = {m: frozenset({"nurse"}) for m in LAB_TEMPLATES}
    return Policy(labs.catalogue(), frozenset(), frozenset(), matrix, False)


def lab_planned() -> list[Aimed]:
    own, foreign = {"nurse": ["42", "5001"]}, {"nurse": ["77", "5077"]}
    planned, _ = plan_objects(lab_policy(), LAB_TEMPLATES, own, foreign, PRINCIPALS, "0badf00d")
    return planned


def lab_judged(method: str, result: CallResult, twin: CallResult | None = None, hiding=False):
    """The foreign call on ``method`` (its first), judged with the run's other calls."""
    planned = [a for a in lab_planned() if a.call.method == method]
    sent = [(planned[0], result)]
    if twin is not None:
        sent.append((next(a for a in planned if a.ref == "nonexistent"), twin))
    return judge_objects(labs.catalogue(), sent, hiding)[0]


def test_lab_objects_plan_filters_naming_foreign_int64_ids():
    request = labs.message("ListLabOrdersRequest")
    lists = [a for a in lab_planned() if a.call.method == labs.LIST]
    assert [(a.ref, request.FromString(a.call.requests[0]).patient_id) for a in lists] == [
        ("foreign", 77),
        ("foreign", 5077),
        ("nonexistent", 2_000_000_000 + 0x0BADF00D % 100_000_000),
    ]
    assert request.FromString(lists[0].call.requests[0]).max_results == 10


def test_an_empty_page_for_a_foreign_filter_is_the_filter_holding():
    """The recorded case: ListLabOrders{patient_id: 77} -> OK, no orders, was a critical leak."""
    empty = lab_judged(labs.LIST, answer(C.OK, labs.listed()))
    assert (empty.status, empty.ref) == (Status.PASS, "foreign")
    assert "0 record(s), none naming a foreign ID" in empty.observed
    # An empty page whose token encodes the query, or a wrapper echoing the filter: no record.
    token = lab_judged(labs.LIST, answer(C.OK, labs.listed(token="patient=77;offset=10")))
    assert token.status is Status.PASS
    # The caller's own orders (the service ignored the filter and scoped to the caller).
    own = labs.listed(labs.order(order_id=5001, patient_id=42, test_code="CBC"))
    assert lab_judged(labs.LIST, answer(C.OK, own)).status is Status.PASS
    # A grpc-js server stream of orders that sends none.
    assert lab_judged(labs.STREAM, answer(C.OK)).status is Status.PASS
    refused = answer(C.PERMISSION_DENIED, details=GO_DENIED)
    assert lab_judged(labs.LIST, refused).status is Status.PASS


def test_a_record_carrying_the_foreign_id_is_the_leak():
    page = labs.listed(labs.order(order_id=9, patient_id=77, result="positive"))
    leaked = lab_judged(labs.LIST, answer(C.OK, page))
    assert (leaked.status, leaked.severity) == (Status.FAIL, Severity.CRITICAL)
    assert "77" in leaked.observed
    streamed = labs.order(order_id=9, patient_id=77).SerializeToString()
    cut = answer(C.DEADLINE_EXCEEDED, streamed, details="Deadline exceeded")
    assert lab_judged(labs.STREAM, cut).status is Status.FAIL
    # A foreign order in a field the descriptors do not declare is still a record.
    own = labs.listed(labs.order(order_id=5001, patient_id=42))
    undeclared = own + b"\x1a\x02\x10\x4d"  # field 3 (not declared) {field 2: 77}
    assert lab_judged(labs.LIST, answer(C.OK, undeclared)).status is Status.FAIL
    # A Get's wrapper carrying the foreign order leaks as before.
    got = lab_judged(labs.GET, answer(C.OK, labs.got(labs.order(order_id=5077))))
    assert (got.status, got.severity) == (Status.FAIL, Severity.CRITICAL)


@pytest.mark.parametrize(
    "result",
    [
        answer(C.OK, b"\xff\xff\xff"),
        answer(C.UNAVAILABLE, details=ENVOY_DOWN, trailers=ENVOY_TRAILERS),
        # own records streamed, then the connection was cut: the filter is not shown
        answer(C.UNAVAILABLE, labs.order(patient_id=42).SerializeToString()),
    ],
    ids=["undecodable", "envoy-unavailable", "cut-after-own-records"],
)
def test_a_foreign_filter_answered_with_nothing_readable_is_inconclusive(result):
    method = labs.STREAM if result.responses and result.code != C.OK else labs.LIST
    assert lab_judged(method, result).status is Status.INCONCLUSIVE


def test_existence_hiding_holds_an_empty_page_to_the_nonexistent_filter():
    empty = answer(C.OK, labs.listed())
    same = lab_judged(labs.LIST, empty, twin=answer(C.OK, labs.listed()), hiding=True)
    shown = lab_judged(labs.LIST, empty, twin=answer(C.NOT_FOUND, details="no patient"),
                       hiding=True)  # fmt: skip
    lost = lab_judged(labs.LIST, empty, twin=answer(C.UNAVAILABLE), hiding=True)
    assert same.status is Status.PASS
    assert (shown.status, shown.severity) == (Status.FAIL, Severity.HIGH)
    assert lost.status is Status.INCONCLUSIVE


# -- AUTHZ-002 listing: a unary AIP-132 List is a listing too ------------------------------


def test_objects_plan_a_listing_for_a_unary_list_found_by_schema():
    """ListLabOrders (unary, ``repeated orders`` beside ``next_page_token``) whose template
    names no own ID was never called: the listing probe was planned for streams only."""
    templates = {labs.GET: '{"orderId": 5001}', labs.LIST: '{"maxResults": 10}'}
    own, foreign = {"nurse": ["5001"]}, {"nurse": ["5077"]}
    planned, _ = plan_objects(lab_policy(), templates, own, foreign, PRINCIPALS, "0badf00d")
    listing = [a for a in planned if a.ref == "listing" and a.call.method != labs.STREAM]
    assert [(a.call.method, a.foreign) for a in listing] == [(labs.LIST, frozenset({"5077"}))]
    request = labs.message("ListLabOrdersRequest").FromString(listing[0].call.requests[0])
    assert request.max_results == 10
    # A unary method that returns one record is no listing: nothing is planned for it.
    planned, _ = plan_objects(lab_policy(), {labs.GET: "{}"}, own, foreign, PRINCIPALS, "0badf00d")
    assert [a for a in planned if a.call.method == labs.GET] == []


def test_unary_listing_judges_the_records_not_the_page_around_them():
    templates = {labs.LIST: '{"maxResults": 10}'}
    planned, _ = plan_objects(
        lab_policy(), templates, {"nurse": ["5001"]}, {"nurse": ["5077"]}, PRINCIPALS, "x"
    )
    (listing,) = [a for a in planned if a.call.method == labs.LIST]

    def judged(blob: bytes):
        return judge_objects(labs.catalogue(), [(listing, answer(C.OK, blob))], False)[0]

    own = judged(labs.listed(labs.order(order_id=5001), labs.order(order_id=5002)))
    assert (own.ref, own.status) == ("listing", Status.PASS)
    assert "2 record(s)" in own.observed
    empty = judged(labs.listed())  # OK and empty: nothing of anyone's is no leak
    assert empty.status is Status.PASS
    # A page token that happens to spell a foreign ID is the page's, not a record.
    assert judged(labs.listed(labs.order(order_id=5001), token="5077")).status is Status.PASS
    leaked = judged(labs.listed(labs.order(order_id=5001), labs.order(order_id=5077)))
    assert (leaked.status, leaked.severity) == (Status.FAIL, Severity.CRITICAL)
    assert "5077" in leaked.observed
    unread = judged(b"\xff\xff\xff")
    assert unread.status is Status.INCONCLUSIVE
