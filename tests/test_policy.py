"""Which methods may write: shown to be reads by the schema or the config, else writes."""

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from harness.config import Config
from harness.descriptors import MethodCatalogue
from harness.policy import Policy

SERVICE = "acme.care.v1.Wards"


def catalogue() -> MethodCatalogue:
    f = descriptor_pb2.FileDescriptorProto(name="wards.proto", package="acme.care.v1")
    f.message_type.add(name="Req")
    svc = f.service.add(name="Wards")

    def method(name: str, verb: str = "", idempotency: int = 0) -> None:
        m = svc.method.add(
            name=name, input_type=".acme.care.v1.Req", output_type=".acme.care.v1.Req"
        )
        if verb:
            setattr(m.options.Extensions[annotations_pb2.http], verb, f"/v1/{name}")
        if idempotency:
            m.options.idempotency_level = idempotency  # type: ignore[assignment]

    for name in ("AdmitPatient", "SubmitClaim", "CancelOrder", "MergeRecords", "UpdateBed"):
        method(name)
    for name in ("GetPatient", "ListWards", "SearchBeds", "BatchGetBeds", "WatchWard"):
        method(name)
    method("Occupancy", idempotency=descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS)
    method("Census", verb="get")
    method("SearchPatients", verb="post")
    method("GetAndRelease", verb="delete")
    method("Discharge", idempotency=descriptor_pb2.MethodOptions.IDEMPOTENT)
    method("Transfer")
    return MethodCatalogue(descriptor_pb2.FileDescriptorSet(file=[f]), "test")


def writes(config: Config) -> set[str]:
    policy = Policy.from_config(catalogue(), config)
    return {p.rsplit("/", 1)[1] for p in policy.writes}


def test_anything_not_shown_to_be_a_read_is_a_write():
    assert writes(Config()) == {
        "AdmitPatient",
        "SubmitClaim",
        "CancelOrder",
        "MergeRecords",
        "UpdateBed",
        "GetAndRelease",  # an HTTP DELETE, whatever its name
        "Discharge",  # IDEMPOTENT has side effects
        "Transfer",
    }


def test_schema_read_methods_shows_a_read():
    config = Config({"schema": {"read_methods": [f"/{SERVICE}/Transfer"]}})
    assert "Transfer" not in writes(config)


def test_declared_write_methods_are_the_whole_list():
    config = Config({"schema": {"write_methods": [f"/{SERVICE}/UpdateBed"]}})
    assert writes(config) == {"UpdateBed"}
