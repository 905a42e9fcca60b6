"""The bundled reference target is compliant by construction: prove it over real mTLS."""

import hashlib
import json

import grpc
import pytest

from targets.reference import schema

SVC = "/hipaagrpc.reference.v1.PatientRecords"


def patient(data: bytes):
    return schema.message("Patient").FromString(data)


def get_request(pid: str, *paths: str) -> bytes:
    msg = schema.message("GetPatientRequest")(patient_id=pid)
    msg.read_mask.paths.extend(paths)
    return msg.SerializeToString()


def test_health_is_public(reference_run):
    result = reference_run.call("/grpc.health.v1.Health/Check")
    assert result.code == grpc.StatusCode.OK
    assert len(result.responses) == 1


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer abc", "Basic dXNlcjpwYXNz", "Bearer a.b.c"],
)
def test_bad_credentials_get_one_generic_unauthenticated(reference_run, authorization):
    extra = [("authorization", authorization)] if authorization else []
    result = reference_run.call(f"{SVC}/GetPatient", [get_request("p-0001")], extra_metadata=extra)
    assert result.code == grpc.StatusCode.UNAUTHENTICATED
    assert result.details == "authentication required"
    assert not result.responses


def test_two_authorization_entries_are_refused(reference_run):
    admin = reference_run.principal("admin")
    result = reference_run.call(
        f"{SVC}/GetPatient",
        [get_request("p-0001")],
        principal=reference_run.principal("least-privileged"),
        extra_metadata=admin.metadata(),
    )
    assert result.code == grpc.StatusCode.UNAUTHENTICATED


def test_rbac_allows_and_denies_per_method(reference_run):
    billing = reference_run.principal("billing")
    ok = reference_run.call(f"{SVC}/GetPatient", [get_request("p-0001")], principal=billing)
    assert ok.code == grpc.StatusCode.OK
    assert patient(ok.responses[0]).patient_id == "p-0001"
    denied = reference_run.call(f"{SVC}/SearchPatients", principal=billing)
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert not denied.responses
    nobody = reference_run.call(
        f"{SVC}/GetPatient", [get_request("p-0001")], principal=reference_run.principal("no-roles")
    )
    assert nobody.code == grpc.StatusCode.PERMISSION_DENIED


def test_read_mask_is_honoured_and_unknown_paths_rejected(reference_run):
    clinician = reference_run.principal("clinician")
    masked = reference_run.call(
        f"{SVC}/GetPatient",
        [get_request("p-0003", "patient_id", "given_name")],
        principal=clinician,
    )
    got = patient(masked.responses[0])
    assert {f.name for f, _ in got.ListFields()} == {"patient_id", "given_name"}
    bad = reference_run.call(
        f"{SVC}/GetPatient", [get_request("p-0003", "does_not_exist")], principal=clinician
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "does_not_exist" not in bad.details


def test_search_pages_are_capped(reference_run):
    req = schema.message("SearchPatientsRequest")(page_size=2**31 - 1).SerializeToString()
    result = reference_run.call(
        f"{SVC}/SearchPatients", [req], principal=reference_run.principal("auditor")
    )
    assert result.code == grpc.StatusCode.OK
    pages = [schema.message("SearchPatientsResponse").FromString(r) for r in result.responses]
    assert all(len(p.patients) <= 50 for p in pages)
    assert sum(len(p.patients) for p in pages) == 40


def test_clinicians_see_only_their_care_team(reference_run):
    clinician = reference_run.principal("clinician")
    own = reference_run.call(f"{SVC}/GetPatient", [get_request("p-0002")], principal=clinician)
    assert own.code == grpc.StatusCode.OK
    foreign = reference_run.call(f"{SVC}/GetPatient", [get_request("p-0031")], principal=clinician)
    assert foreign.code == grpc.StatusCode.PERMISSION_DENIED
    assert not foreign.responses
    req = schema.message("SearchPatientsRequest")(page_size=50).SerializeToString()
    listed = reference_run.call(f"{SVC}/SearchPatients", [req], principal=clinician)
    ids = {
        p.patient_id
        for r in listed.responses
        for p in schema.message("SearchPatientsResponse").FromString(r).patients
    }
    assert ids == {f"p-{i:04d}" for i in range(1, 21)}


def test_not_found_is_generic(reference_run):
    result = reference_run.call(
        f"{SVC}/GetPatient", [get_request("p-9999")], principal=reference_run.principal("admin")
    )
    assert result.code == grpc.StatusCode.NOT_FOUND
    assert result.details == "patient not found"


def test_every_call_is_audited_in_a_hash_chain(reference_run):
    calls = [
        reference_run.call(
            f"{SVC}/GetPatient",
            [get_request("p-0004")],
            principal=reference_run.principal("clinician"),
        ),
        reference_run.call(f"{SVC}/GetPatient", [get_request("p-0004")]),
        reference_run.call(f"{SVC}/ExportPatients", principal=reference_run.principal("clinician")),
    ]
    audit_path = reference_run.config.get("audit.source")
    lines = (reference_run.spawned.workdir / audit_path).read_text().splitlines()
    events = [json.loads(line) for line in lines]
    by_id = {e["request_id"]: e for e in events}
    for call in calls:
        event = by_id[call.request_id]
        assert event["outcome"] == call.code.name
        assert event["method"] == call.method
        assert event["ts"].endswith("Z")
        assert event["source"]
    assert by_id[calls[0].request_id]["identity"] == "u-clin-01"
    assert by_id[calls[0].request_id]["resource"] == "p-0004"
    assert by_id[calls[1].request_id]["identity"] == ""
    prev = "0" * 64
    for seq, event in enumerate(events, start=1):
        assert event["seq"] == seq
        assert event["prev_hash"] == prev
        body = {k: v for k, v in event.items() if k != "hash"}
        canonical = json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        assert event["hash"] == hashlib.sha256(prev.encode() + b"\n" + canonical).hexdigest()
        prev = event["hash"]


def test_logs_hold_no_record_values(reference_run):
    reference_run.call(
        f"{SVC}/GetPatient", [get_request("p-0005")], principal=reference_run.principal("clinician")
    )
    record = reference_run.call(
        f"{SVC}/GetPatient", [get_request("p-0005")], principal=reference_run.principal("admin")
    )
    p = patient(record.responses[0])
    log = (reference_run.spawned.workdir / "app.log").read_text()
    for value in (p.ssn, p.mrn, p.email, p.given_name + " " + p.family_name):
        assert value not in log


def test_mtls_is_required(reference_run):
    channel = reference_run.endpoint.open_channel(with_client_cert=False)
    try:
        result = reference_run.call("/grpc.health.v1.Health/Check", channel=channel, timeout=5)
    finally:
        channel.close()
    assert result.code == grpc.StatusCode.UNAVAILABLE
    assert not result.responses


def test_oversized_requests_are_refused(reference_run):
    big = schema.message("GetPatientRequest")(
        patient_id="x" * (4 * 1024 * 1024 + 1)
    ).SerializeToString()
    result = reference_run.call(
        f"{SVC}/GetPatient", [big], principal=reference_run.principal("clinician")
    )
    assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_certificate_principals_get_their_own_channel(reference_run, tmp_path):
    import trustme

    from harness.principals import Principal

    rogue = trustme.CA().issue_cert("svc-rogue.example")
    cert, key = tmp_path / "rogue.pem", tmp_path / "rogue-key.pem"
    rogue.cert_chain_pems[0].write_to_path(str(cert))
    rogue.private_key_pem.write_to_path(str(key))
    principal = Principal("svc-rogue", client_cert=cert, client_key=key)
    result = reference_run.call("/grpc.health.v1.Health/Check", principal=principal, timeout=5)
    # The server requires certificates from its own CA: the rogue identity never gets in.
    assert result.code == grpc.StatusCode.UNAVAILABLE
    assert reference_run.call("/grpc.health.v1.Health/Check").code == grpc.StatusCode.OK
