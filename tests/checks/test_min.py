"""MIN-001 ... MIN-004 judges on recorded answers, no server.

Answers are decoded as the declared output type and judged by status code and populated
fields: a grpc-go, grpc-js or Envoy error text decides nothing. Bytes that do not decode,
and answers with no record in them, are nothing to judge: never a PASS.
"""

import re
from pathlib import Path

import grpc
import pytest

from harness.catalogue import Severity
from harness.checks.min import (
    CachePlan,
    MaskCase,
    decode,
    detokenise_plan,
    freshness,
    judge_cache,
    judge_detokenise,
    judge_identifiers,
    judge_mask,
    judge_role_read,
    judge_update,
    mask_cases,
    mask_plan,
    masked_request,
    record_fields,
    record_types,
    records_in,
)
from harness.config import Config
from harness.descriptors import MethodInfo, record_shape
from harness.outcome import Observation, Status
from harness.plans.calls import Call
from harness.policy import Policy
from harness.principals import Principal
from targets.reference import schema
from tests.checks import labs
from tests.checks.recorded import answer, declared, probe_statuses, settled

C = grpc.StatusCode
PATIENT = schema.message("Patient")
PAGE = schema.message("SearchPatientsResponse")
GET = "/hipaagrpc.reference.v1.PatientRecords/GetPatient"
RECORD = "hipaagrpc.reference.v1.Patient"
FIELDS = [f.name for f in PATIENT.DESCRIPTOR.fields]
BILLING = Principal("billing", token_file=Path("tokens/billing.jwt"))
ADMIN = Principal("admin", token_file=Path("tokens/admin.jwt"))
#: Bytes no Patient parser reads: a field tag with wire type 7 (there is none).
GARBAGE = b"\xff\xff\xff\xff"
#: A well-formed message of some other type: only field 99 (unknown to Patient).
FOREIGN = b"\x98\x06\x01"


def patient(**fields) -> bytes:
    return PATIENT(**fields).SerializeToString()


def test_declared_probes_follow_the_catalogue_rows():
    allowlist = ("min.role_field_allowlist",)
    assert declared("MIN-001") == [
        ("a", True, ("min.mask_methods",)),
        ("b", True, allowlist),
        ("c", True, ("min.mask_methods",)),
        ("d", True, allowlist),
        ("e", True, allowlist),
    ]
    # MIN-002's row has no items: one probe, every read once per role.
    assert declared("MIN-002") == [("reads", True, allowlist)]
    # MIN-003: the detokenise method only "if there is one".
    assert declared("MIN-003") == [
        ("tokens", True, ("min.token_patterns",)),
        ("detokenise", False, ("min.detokenize_method",)),
    ]
    # MIN-004: steps 1-3 are one probe (warm, update, poll); step 4 "if auth.revoke_cmd".
    assert declared("MIN-004") == [
        ("1-3", True, ("safety.allow_mutations",)),
        ("4", False, ()),  # auth.revoke_cmd is refused until the harness can run it
    ]


# -- MIN-001: the plan ----------------------------------------------------------------------


def test_mask_cases_for_a_role_with_an_allowlist():
    cases = mask_cases(FIELDS, ["patient_id", "given_name", "mrn"], ["patient_id"])
    assert [(ref, paths) for ref, _, paths, _ in cases] == [
        ("a", ["patient_id", "given_name"]),
        ("b", ["family_name"]),
        ("c", ["does_not_exist"]),
        ("d", ["*"]),
        ("e", []),
    ]
    limits = {ref: limit for ref, _, _, limit in cases}
    assert limits["a"] == {"patient_id", "given_name"}
    assert limits["d"] == limits["e"] == {"patient_id", "given_name", "mrn"}
    assert limits["c"] == frozenset()


def test_mask_cases_without_an_allowlist_plan_only_what_needs_none():
    # (b), (d), (e) are judged against the role's allowlist: without one they are not sent.
    assert [ref for ref, *_ in mask_cases(FIELDS, None, [])] == ["a", "c"]
    # A role that may see everything has no field to ask for in (b).
    assert [ref for ref, *_ in mask_cases(FIELDS, FIELDS, [])] == ["a", "c", "d", "e"]


def test_masked_request_sets_the_mask_field():
    cls = schema.message("GetPatientRequest")
    request = cls.FromString(masked_request(cls, '{"patientId": "p-0001"}', "read_mask", ["ssn"]))
    assert request.patient_id == "p-0001"
    assert list(request.read_mask.paths) == ["ssn"]


# -- MIN-001: the judge ---------------------------------------------------------------------


def case(ref: str, limit=("patient_id", "given_name")) -> MaskCase:
    return MaskCase(ref, Call(f"billing: ({ref})", GET, (b"",), BILLING), frozenset(limit))


def test_mask_honoured_passes():
    got = judge_mask(case("a"), answer(C.OK, patient(patient_id="p-1", given_name="Ann")), PATIENT)
    assert (got.status, got.ref) == (Status.PASS, "a")


def test_mask_ignored_fails_high_and_names_the_fields():
    full = patient(patient_id="p-1", given_name="Ann", ssn="123-45-6789", clinical_notes="x")
    got = judge_mask(case("a"), answer(C.OK, full), PATIENT)
    assert (got.status, got.severity) == (Status.FAIL, Severity.HIGH)
    assert "clinical_notes, ssn" in got.observed


@pytest.mark.parametrize("code", [C.PERMISSION_DENIED, C.INVALID_ARGUMENT])
def test_hidden_field_refused_passes(code):
    # grpc-go's wording; only the code counts.
    refused = answer(code, details="rpc error: code = PermissionDenied desc = field not visible")
    assert judge_mask(case("b"), refused, PATIENT).status is Status.PASS


def test_hidden_field_omitted_passes_even_as_an_empty_message():
    # grpcio serialises a Patient with every field masked away as zero bytes.
    assert judge_mask(case("b"), answer(C.OK, b""), PATIENT).status is Status.PASS


def test_hidden_field_populated_fails():
    got = judge_mask(case("b"), answer(C.OK, patient(birth_date="1970-01-01")), PATIENT)
    assert got.status is Status.FAIL


@pytest.mark.parametrize("ref", ["a", "b", "d", "e"])
@pytest.mark.parametrize(
    "result",
    [
        answer(C.UNAVAILABLE, details="upstream connect error or disconnect/reset before headers"),
        answer(C.DEADLINE_EXCEEDED, details="context deadline exceeded"),
    ],
)
def test_unreached_is_inconclusive_never_a_refusal(ref, result):
    assert judge_mask(case(ref), result, PATIENT).status is Status.INCONCLUSIVE


@pytest.mark.parametrize("ref", ["a", "b", "d", "e"])
@pytest.mark.parametrize("blob", [GARBAGE, FOREIGN], ids=["parse-error", "only-unknown-fields"])
def test_undecodable_answer_is_inconclusive_not_a_pass(ref, blob):
    # The recorded case: a response that did not decode added no field, so "no field
    # outside the mask" passed on nothing.
    got = judge_mask(case(ref), answer(C.OK, blob), PATIENT)
    assert got.status is Status.INCONCLUSIVE
    assert "not decodable as hipaagrpc.reference.v1.Patient" in got.observed


def test_undecodable_beside_a_widened_record_still_fails():
    widened = answer(C.OK, GARBAGE, patient(ssn="123-45-6789"))
    assert judge_mask(case("a"), widened, PATIENT).status is Status.FAIL


@pytest.mark.parametrize("blobs", [(), (b"",)], ids=["no-message", "empty-message"])
def test_ok_with_no_record_is_nothing_to_judge(blobs):
    got = judge_mask(case("d"), answer(C.OK, *blobs), PATIENT)
    assert got.status is Status.INCONCLUSIVE


def test_other_codes_on_a_readable_mask_fail():
    # Node's grpc-js for an unhandled exception: UNKNOWN.
    got = judge_mask(case("a"), answer(C.UNKNOWN, details="Unknown Error"), PATIENT)
    assert got.status is Status.FAIL


@pytest.mark.parametrize(
    ("code", "omit", "status"),
    [
        (C.INVALID_ARGUMENT, False, Status.PASS),
        (C.OK, False, Status.FAIL),
        (C.OK, True, Status.PASS),
        (C.UNAVAILABLE, False, Status.INCONCLUSIVE),
        (C.NOT_FOUND, False, Status.FAIL),
    ],
)
def test_unknown_path(code, omit, status):
    got = judge_mask(case("c", ()), answer(code), PATIENT, omit_unknown=omit)
    assert (got.status, got.ref, got.severity) == (status, "c", Severity.MEDIUM)


def test_min_001_without_allowlists_is_inconclusive_naming_them():
    observations = [
        judge_mask(case("a"), answer(C.OK, patient(patient_id="p")), PATIENT),
        judge_mask(case("c", ()), answer(C.INVALID_ARGUMENT), PATIENT),
    ]
    outcome = settled("MIN-001", observations, "min.mask_methods")
    assert outcome.status is Status.INCONCLUSIVE
    assert {p.id: p.enable for p in outcome.probes if p.status is Status.SKIP} == {
        "MIN-001(b)": "min.role_field_allowlist",
        "MIN-001(d)": "min.role_field_allowlist",
        "MIN-001(e)": "min.role_field_allowlist",
    }


# -- decoding -------------------------------------------------------------------------------


def test_decode_counts_what_does_not_read_as_the_type():
    decoded = decode(PATIENT, [patient(patient_id="p"), b"", GARBAGE, FOREIGN])
    assert (len(decoded.messages), decoded.undecodable) == (2, 2)


def test_records_are_found_nested():
    page = PAGE(patients=[PATIENT(patient_id="a"), PATIENT(patient_id="b")])
    assert [r.patient_id for r in records_in(page, RECORD)] == ["a", "b"]


# -- MIN-002 --------------------------------------------------------------------------------

ALLOWED = ["patient_id", "given_name", "family_name", "insurance_plan_id"]


def read(**kwargs) -> Observation:
    result = kwargs.pop("result")
    cls = kwargs.pop("cls", PATIENT)
    holds_phi = kwargs.pop("holds_phi", lambda text: False)
    return judge_role_read(Call("billing", GET, (b"",)), result, cls, RECORD, ALLOWED, holds_phi)


def test_role_sees_only_its_fields():
    got = read(result=answer(C.OK, patient(patient_id="p", insurance_plan_id="i")))
    assert (got.status, got.ref) == (Status.PASS, "reads")


def test_extra_field_fails_high_and_critical_when_it_holds_a_canary():
    extra = answer(C.OK, patient(patient_id="p", clinical_notes="notes"))
    assert (read(result=extra).status, read(result=extra).severity) == (Status.FAIL, Severity.HIGH)
    phi = read(result=extra, holds_phi=lambda text: "notes" in text)
    assert phi.severity is Severity.CRITICAL


def test_nested_records_are_judged():
    page = PAGE(patients=[PATIENT(patient_id="a"), PATIENT(patient_id="b", ssn="123-45-6789")])
    got = read(result=answer(C.OK, page.SerializeToString()), cls=PAGE)
    assert got.status is Status.FAIL
    assert "ssn" in got.observed


def test_no_record_is_nothing_to_judge():
    # grpc-go's refusal text; a refused read holds no record: not a PASS.
    denied = answer(C.PERMISSION_DENIED, details="rpc error: code = PermissionDenied")
    assert read(result=denied).status is Status.SKIP
    assert read(result=answer(C.OK, PAGE().SerializeToString()), cls=PAGE).status is Status.SKIP


def test_role_read_undecodable_or_unreached_is_inconclusive():
    # The recorded case: an undecodable answer held "no extra field" and passed.
    assert read(result=answer(C.OK, GARBAGE)).status is Status.INCONCLUSIVE
    envoy = answer(C.UNAVAILABLE, details="no healthy upstream")
    assert read(result=envoy).status is Status.INCONCLUSIVE


def test_min_002_with_no_record_anywhere_is_not_a_pass():
    outcome = settled("MIN-002", [read(result=answer(C.OK, b""))], "min.role_field_allowlist")
    assert outcome.status is Status.SKIP


# -- MIN-003 --------------------------------------------------------------------------------

PATTERNS = {"ssn": re.compile(r"^\*{3}-\*{2}-\d{4}$")}
CANARY_SSN = "900-00-0001"


def tokens(result, cls=PATIENT, patterns=PATTERNS) -> Observation:
    return judge_identifiers(
        Call("billing", GET, (b"",)), result, cls, RECORD, patterns, {CANARY_SSN}
    )


def test_masked_identifiers_pass():
    got = tokens(answer(C.OK, patient(ssn="***-**-0001")))
    assert (got.status, got.ref, got.observed) == (Status.PASS, "tokens", "1 value(s) tokenised")


def test_clear_identifier_fails():
    got = tokens(answer(C.OK, patient(ssn=CANARY_SSN)))
    assert (got.status, got.severity) == (Status.FAIL, Severity.HIGH)
    assert got.observed == "1 ssn value(s) in clear"


def test_canary_value_fails_even_when_it_matches_the_pattern():
    loose = {"ssn": re.compile(r"^.+$")}
    assert tokens(answer(C.OK, patient(ssn=CANARY_SSN)), patterns=loose).status is Status.FAIL


def test_no_identifier_field_is_nothing_to_judge():
    assert tokens(answer(C.OK, patient(patient_id="p"))).status is Status.SKIP
    unreached = answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded")
    assert tokens(unreached).status is Status.INCONCLUSIVE


def test_undecodable_identifiers_are_inconclusive():
    assert tokens(answer(C.OK, FOREIGN)).status is Status.INCONCLUSIVE


def test_detokenise_plan_marks_the_privileged():
    unset = Principal("anonymous")
    plan = detokenise_plan(
        "/x.T/Detokenize", b"", {"admin": ADMIN, "billing": BILLING, "none": unset}, ["admin"]
    )
    assert [(p, c.label) for p, c in plan] == [
        (True, "admin (privileged)"),
        (False, "billing (not privileged)"),
    ]


DETOK = Call("billing (not privileged)", "/x.T/Detokenize", (b"",), BILLING)


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.PERMISSION_DENIED, details="forbidden"), Status.PASS),
        (answer(C.OK, b"\n\x0b123-45-6789"), Status.FAIL),
        (answer(C.UNAVAILABLE, details="upstream connect error"), Status.INCONCLUSIVE),
    ],
)
def test_detokenise_refused_to_the_non_privileged(result, status):
    got = judge_detokenise(False, DETOK, result)
    assert (got.status, got.ref) == (status, "detokenise")


@pytest.mark.parametrize(
    ("result", "events", "problem", "status"),
    [
        (answer(C.OK, b"x"), [{"request_id": "r"}], "", Status.PASS),
        (answer(C.OK, b"x"), [], "", Status.FAIL),
        (answer(C.OK, b"x"), None, "", Status.INCONCLUSIVE),
        (answer(C.OK, b"x"), [], "audit.jsonl: not found", Status.INCONCLUSIVE),
        (answer(C.PERMISSION_DENIED), None, "", Status.FAIL),
        (answer(C.DEADLINE_EXCEEDED), None, "", Status.INCONCLUSIVE),
    ],
)
def test_detokenise_answered_and_audited_for_the_privileged(result, events, problem, status):
    assert judge_detokenise(True, DETOK, result, events, problem).status is status


def test_min_003_passes_without_the_optional_detokenise_probe():
    outcome = settled("MIN-003", [tokens(answer(C.OK, patient(ssn="***-**-0001")))])
    assert outcome.status is Status.PASS
    assert probe_statuses(outcome)["MIN-003(detokenise)"] is Status.SKIP


# -- MIN-004 --------------------------------------------------------------------------------

READ = MethodInfo(GET, "PatientRecords", "GetPatient", "GetPatientRequest", RECORD, False, False)
WRITE = MethodInfo(
    GET.replace("Get", "Update"), "PatientRecords", "UpdatePatient", "U", RECORD, False, False
)
NONCE = "ttl-0000002a-1700000000"
PLAN = CachePlan("p-0002", WRITE, b"", READ, b"", BILLING, ADMIN, NONCE, 1.0)


def polls(*results):
    return [(0.5 * i, r) for i, r in enumerate(results)]


def test_freshness():
    assert freshness(answer(C.OK, patient(clinical_notes=f"n-{NONCE}")), PATIENT, NONCE) == "fresh"
    assert freshness(answer(C.OK, patient(clinical_notes="n")), PATIENT, NONCE) == "stale"
    assert freshness(answer(C.NOT_FOUND), PATIENT, NONCE) == "unread"
    assert freshness(answer(C.OK, GARBAGE), PATIENT, NONCE) == "unread"


def test_update_served_in_time_passes():
    stale, fresh = patient(clinical_notes="old"), patient(clinical_notes=f"new-{NONCE}")
    got = judge_cache(PLAN, polls(answer(C.OK, stale), answer(C.OK, fresh)), PATIENT)
    assert (got.status, got.ref) == (Status.PASS, "1-3")


def test_stale_record_at_the_deadline_fails():
    stale = answer(C.OK, patient(clinical_notes="old"))
    got = judge_cache(PLAN, polls(stale, stale, stale), PATIENT)
    assert (got.status, got.severity) == (Status.FAIL, Severity.MEDIUM)
    assert got.observed.startswith("still stale after 1.0 s")


@pytest.mark.parametrize(
    "last",
    [
        answer(C.UNAVAILABLE, details="Connection reset by peer"),
        answer(C.NOT_FOUND, details="rpc error: code = NotFound desc = no such record"),
        answer(C.OK, GARBAGE),
    ],
)
def test_record_not_read_back_is_inconclusive(last):
    got = judge_cache(PLAN, polls(answer(C.OK, patient(clinical_notes="old")), last), PATIENT)
    assert got.status is Status.INCONCLUSIVE


def test_refused_update_is_inconclusive():
    assert judge_update(PLAN, answer(C.OK, b"")) is None
    got = judge_update(PLAN, answer(C.PERMISSION_DENIED))
    assert got is not None
    assert (got.status, got.ref) == (Status.INCONCLUSIVE, "1-3")


def test_min_004_revocation_is_optional():
    fresh = answer(C.OK, patient(clinical_notes=f"new-{NONCE}"))
    outcome = settled("MIN-004", [judge_cache(PLAN, polls(fresh), PATIENT)])
    assert outcome.status is Status.PASS
    assert probe_statuses(outcome) == {"MIN-004(1-3)": Status.PASS, "MIN-004(4)": Status.SKIP}


# -- a service whose responses wrap their records (GetLabOrderResponse{order}, ...) --------

LAB_FIELDS = [f.name for f in labs.message("LabOrder").DESCRIPTOR.fields]
LAB_MASK = {labs.GET: "read_mask", labs.FETCH: "read_mask"}
LAB_READS = [m for m in labs.catalogue().methods if m.service == "acme.lab.v1.LabOrders"]


class _LabRun:
    """What MIN-001's plan reads of a run: config and principals."""

    def __init__(self, **config) -> None:
        self.config = Config(config)

    def principal(self, name: str) -> Principal:
        return BILLING if name == "billing" else ADMIN


def lab_policy() -> Policy:
    matrix = {m.path: frozenset({"billing"}) for m in labs.catalogue().methods}
    return Policy(labs.catalogue(), frozenset(), frozenset(), matrix, False)


def test_mask_plan_names_the_fields_of_the_record_a_wrapper_carries():
    """The mask's paths are the LabOrder's fields (AIP-157), never ``order`` or ``etag``."""
    run = _LabRun(
        schema={"request_templates": {labs.GET: '{"orderId": 42}'}},
        min={
            "mask_methods": {labs.GET: "read_mask"},
            "role_field_allowlist": {"billing": ["order_id", "test_code", "result"]},
        },
    )
    plan = mask_plan(run, lab_policy())  # type: ignore[arg-type]
    request = labs.message("GetLabOrderRequest")
    sent = {c.ref: list(request.FromString(c.call.requests[0]).read_mask.paths) for c in plan}
    assert sent == {
        "a": ["order_id", "test_code"],
        "b": ["patient_id"],
        "c": ["does_not_exist"],
        "d": ["*"],
        "e": [],
    }
    assert request.FromString(plan[0].call.requests[0]).order_id == 42
    assert {c.records.path for c in plan} == {("order",)}
    assert record_fields(labs.catalogue(), plan[0].records) == LAB_FIELDS


def lab_case(ref: str, method: str = labs.GET, limit=("order_id", "test_code")) -> MaskCase:
    shape = record_shape(labs.catalogue(), method)
    return MaskCase(
        ref, Call(f"billing: ({ref})", method, (b"",), BILLING), frozenset(limit), shape
    )


@pytest.mark.parametrize("method", [labs.GET, labs.FETCH])
def test_mask_judged_on_the_record_a_wrapper_carries(method):
    """A grpc-js answer GetLabOrderResponse{order, etag}: its ``order`` is what was masked.

    Judged as the response itself, {order, etag} was outside every mask: a FAIL for a
    service that honoured it.
    """
    out = labs.message(labs.catalogue().method(method).output_type.rsplit(".", 1)[-1])

    def wrapped(**fields) -> bytes:
        record = labs.order(**fields)
        if method == labs.FETCH:  # {data: {order: ...}}
            return out(data={"order": record}).SerializeToString()
        return out(order=record, etag="W/1").SerializeToString()

    honoured = answer(C.OK, wrapped(order_id=42, test_code="CBC"))
    assert judge_mask(lab_case("a", method), honoured, out).status is Status.PASS
    widened = answer(C.OK, wrapped(order_id=42, test_code="CBC", ssn="900-00-0001"))
    got = judge_mask(lab_case("a", method), widened, out)
    assert (got.status, got.severity) == (Status.FAIL, Severity.HIGH)
    assert got.observed.endswith("fields outside the mask/allowlist: ssn")
    # A wrapper without its record holds nothing to judge; for (b) the field is omitted.
    empty = answer(C.OK, out().SerializeToString())
    assert judge_mask(lab_case("a", method), empty, out).status is Status.INCONCLUSIVE
    assert judge_mask(lab_case("b", method), empty, out).status is Status.PASS


def test_record_types_are_the_records_wrappers_carry():
    catalogue = labs.catalogue()
    assert record_types(catalogue, [labs.GET], LAB_READS) == {labs.RECORD}
    # Without a mask method, the first unary read's record (not the wrapper).
    assert record_types(catalogue, [], LAB_READS) == {labs.RECORD}
    assert record_types(catalogue, [], []) == frozenset()
    declared = ["acme.lab.v1.Specimen"]
    assert record_types(catalogue, [labs.GET], LAB_READS, declared) == {"acme.lab.v1.Specimen"}
    # The reference's reads return the record itself.
    reads = [MethodInfo(GET, "s", "GetPatient", "x", RECORD, False, False)]
    assert record_types(labs.reference(), [], reads) == {RECORD}


def test_role_reads_judge_the_records_in_a_wrapped_page():
    page = labs.listed(labs.order(order_id=1, test_code="CBC"), labs.order(order_id=2), token="t")
    cls = labs.message("ListLabOrdersResponse")
    records = record_types(labs.catalogue(), [labs.GET], LAB_READS)
    allowed = ["order_id", "test_code"]

    def judged(blob: bytes) -> Observation:
        call = Call("billing", labs.LIST, (b"",))
        return judge_role_read(call, answer(C.OK, blob), cls, records, allowed, lambda t: False)

    assert judged(page).status is Status.PASS  # next_page_token is the page's, not a field
    leaked = judged(labs.listed(labs.order(order_id=1, clinician_note="n")))
    assert (leaked.status, "clinician_note" in leaked.observed) == (Status.FAIL, True)
    assert judged(labs.listed()).status is Status.SKIP


def test_identifiers_in_a_wrapped_answer_are_judged():
    cls = labs.message("GetLabOrderResponse")
    records = record_types(labs.catalogue(), [labs.GET], LAB_READS)

    def judged(ssn: str) -> Observation:
        result = answer(C.OK, labs.got(labs.order(order_id=42, ssn=ssn)))
        return judge_identifiers(Call("billing", labs.GET, (b"",)), result, cls, records,
                                 PATTERNS, {CANARY_SSN})  # fmt: skip

    assert judged("***-**-0001").status is Status.PASS
    assert judged(CANARY_SSN).status is Status.FAIL
