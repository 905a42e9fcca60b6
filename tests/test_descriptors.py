from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from harness.descriptors import (
    MethodCatalogue,
    compile_protos,
    fetch_via_reflection,
    load_descriptor_set,
    page_size_field,
    record_shape,
    resource_noun,
    singular,
)
from harness.errors import DescriptorError
from tests.checks import labs

ROOT = Path(__file__).resolve().parents[1]
PKG = "hipaagrpc.reference.v1"
SVC = f"{PKG}.PatientRecords"


def test_descriptor_set_file(reference_run):
    cat = load_descriptor_set(reference_run.config.path("schema.descriptor_set"))
    assert SVC in cat.services
    get = cat.method(f"/{SVC}/GetPatient")
    assert (get.client_streaming, get.server_streaming) == (False, False)
    assert cat.method(f"/{SVC}/ExportPatients").server_streaming
    data = cat.request_bytes(f"/{SVC}/GetPatient", '{"patientId": "p-1", "readMask": "givenName"}')
    msg = cat.message_class(get.input_type).FromString(data)
    assert msg.patient_id == "p-1"
    assert list(msg.read_mask.paths) == ["given_name"]


def test_proto_files_compile_with_grpcio_tools():
    cat = compile_protos([ROOT / "targets/reference/v1/patient_records.proto"], [ROOT])
    assert [m.name for m in cat.methods] == [
        "GetPatient",
        "SearchPatients",
        "UpdatePatient",
        "ExportPatients",
        "WatchPatient",
        "ReadPatients",
        "UpdateEvent",  # AuditAdmin: audit.mgmt_methods, refused to every role (AUDIT-006 (a))
        "DeleteEvent",
    ]


def test_reflection_when_exposed(reflection_run):
    cat = fetch_via_reflection(reflection_run.channel())
    assert SVC in cat.services
    assert "grpc.health.v1.Health" in cat.services


def test_reflection_off_is_a_clear_error(reference_run):
    with pytest.raises(
        DescriptorError,
        match=r"reflection gave no descriptors .v1: UNIMPLEMENTED; v1alpha: UNIMPLEMENTED.",
    ):
        fetch_via_reflection(reference_run.channel())


def test_bad_inputs(tmp_path):
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(DescriptorError, match="is not a FileDescriptorSet"):
        load_descriptor_set(junk)
    fd = descriptor_pb2.FileDescriptorProto(name="a.proto", dependency=["missing.proto"])
    partial = tmp_path / "partial.pb"
    partial.write_bytes(descriptor_pb2.FileDescriptorSet(file=[fd]).SerializeToString())
    with pytest.raises(
        DescriptorError, match=r"a\.proto imports missing\.proto.*--include_imports"
    ):
        load_descriptor_set(partial)
    bad = tmp_path / "bad.proto"
    bad.write_text("syntax = 'proto3'; message {")
    with pytest.raises(DescriptorError, match=r"protoc could not compile bad\.proto"):
        compile_protos([bad], [])


def test_bad_request_template(reference_run):
    cat = load_descriptor_set(reference_run.config.path("schema.descriptor_set"))
    with pytest.raises(
        DescriptorError, match=r"not a valid hipaagrpc\.reference\.v1\.GetPatientRequest"
    ):
        cat.request_bytes(f"/{SVC}/GetPatient", '{"nope": 1}')


# -- where responses carry records; what sets a page's size (a service not the reference) --


def test_records_found_in_wrappers_pages_and_families():

    cat = labs.catalogue()

    def shape(path, declared=()):
        s = record_shape(cat, path, declared)
        return s.record_type.rsplit(".", 1)[-1], s.path, s.repeated, s.lists, s.basis

    assert shape(labs.GET) == ("LabOrder", ("order",), False, False, "named")
    assert shape(labs.LIST) == ("LabOrder", ("orders",), True, True, "named")
    assert shape(labs.STREAM) == ("LabOrder", (), False, True, "named")  # a stream of records
    assert shape(labs.EXPORT) == ("LabOrder", ("orders",), True, True, "named")
    assert shape(labs.FETCH) == ("LabOrder", ("data", "order"), False, False, "named")
    # Results' methods name no type: LabOrder is what both of them carry.
    assert shape(labs.GET_RESULT) == ("LabOrder", ("payload",), False, False, "family")
    assert shape(labs.LIST_RESULTS) == ("LabOrder", ("results",), True, True, "family")
    # No record in it: the response itself, and nothing claims it was found.
    assert shape(labs.COUNT) == ("CountLabOrdersResponse", (), False, False, "response")
    assert not record_shape(cat, labs.COUNT).found
    # A declared type comes first, wherever it sits.
    declared = ("acme.lab.v1.Specimen",)
    assert shape(labs.GET, declared) == ("Specimen", ("order", "specimen"), False, False,
                                         "declared")  # fmt: skip


def test_records_read_out_of_decoded_responses():

    cat = labs.catalogue()
    get = labs.message("GetLabOrderResponse")
    assert [o.order_id for o in record_shape(cat, labs.GET).records(get.FromString(
        labs.got(labs.order(order_id=42))))] == [42]  # fmt: skip
    assert record_shape(cat, labs.GET).records(get(etag="x")) == []
    page = labs.message("ListLabOrdersResponse").FromString(
        labs.listed(labs.order(order_id=1), labs.order(order_id=2), token="t")
    )
    assert [o.order_id for o in record_shape(cat, labs.LIST).records(page)] == [1, 2]
    envelope = labs.message("LabOrderEnvelope")
    fetch = record_shape(cat, labs.FETCH)
    assert fetch.records(envelope()) == []
    assert [o.order_id for o in fetch.records(envelope(data={"order": {"order_id": 7}}))] == [7]


def test_reference_shapes_are_read_as_before():

    ref = labs.reference()
    records = {m.name: record_shape(ref, m.path) for m in ref.methods if m.service == SVC}
    assert {n: (r.record_type, r.path) for n, r in records.items()} == {
        "GetPatient": (f"{PKG}.Patient", ()),
        "SearchPatients": (f"{PKG}.Patient", ("patients",)),
        "UpdatePatient": (f"{PKG}.Patient", ()),
        "ExportPatients": (f"{PKG}.Patient", ()),
        "WatchPatient": (f"{PKG}.Patient", ("patient",)),
        "ReadPatients": (f"{PKG}.Patient", ()),
    }
    pages = {m.name: page_size_field(ref, m.path) for m in ref.methods if m.service == SVC}
    # ExportPatients' max_records bounds an export, not a page (LIMIT-003 (a) asks it).
    assert {n: f for n, f in pages.items() if f} == {"SearchPatients": "page_size"}


def test_page_size_fields_by_config_aip_names_and_paging_messages():

    cat = labs.catalogue()
    assert page_size_field(cat, labs.LIST) == "max_results"
    assert page_size_field(cat, labs.LIST_RESULTS) == "pageSize"
    assert page_size_field(cat, labs.EXPORT) == "paging.limit"
    assert page_size_field(cat, labs.GET) is None
    # limits.page_size_field, by proto or JSON name, where the request has it.
    assert page_size_field(cat, labs.LIST, "take") == "take"
    assert page_size_field(cat, labs.EXPORT, "paging.limit") == "paging.limit"
    assert page_size_field(cat, labs.LIST, "patientId") == "patient_id"
    assert page_size_field(cat, labs.LIST_RESULTS, "take") == "pageSize"
    # A string is no page size.
    assert page_size_field(cat, labs.LIST, "page_token") == "max_results"


def test_resource_nouns():

    assert resource_noun("GetLabOrder") == "LabOrder"
    assert resource_noun("BatchGetLabOrders") == "LabOrders"
    assert resource_noun("Getaway") == ""
    assert resource_noun("Ping") == ""
    assert [singular(n) for n in ("Patients", "Histories", "Addresses", "Status", "Batches")] == [
        "Patient", "History", "Address", "Status", "Batch"]  # fmt: skip


def test_a_method_is_found_by_its_path_in_a_wide_api():
    """A lookup per call scanned every method: quadratic in the RBAC matrix of a wide API."""
    from targets import wide

    catalogue = MethodCatalogue(wide.descriptors(50, 1000), "wide")
    paths = wide.paths(50, 1000)
    assert [catalogue.method(p).path for p in paths] == paths
    assert catalogue.method(paths[-1]).name == "GetM00999"
    with pytest.raises(KeyError):
        catalogue.method("/wide.v1.S000/Nope")
