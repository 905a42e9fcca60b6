from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from harness.descriptors import compile_protos, fetch_via_reflection, load_descriptor_set
from harness.errors import DescriptorError

ROOT = Path(__file__).resolve().parents[1]
SVC = "hipaagrpc.reference.v1.PatientRecords"


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
