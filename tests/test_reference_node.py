"""The Node reference (``spawn:reference-node``, LabOrders on grpc-js) over real mTLS.

It is built apart from the Python reference (tokens, IDs, response shapes, error texts,
audit format): these tests hold it to its own design. It is in ``targets.catalog.BUNDLED``,
so the detection matrix (tests/test_detection_matrix.py) runs the whole suite against it
and against each of its defects, by the same rules as the Python reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import open_run
from harness.channels import CallResult
from harness.run import Run
from harness.target import parse_target
from targets.catalog import BUNDLED
from targets.node_reference import (
    CHAIN_PREV,
    CHAIN_SEQ,
    NodeUnavailable,
    descriptor_set,
    ensure_installed,
)

SVC = "/hipaagrpc.labs.v1.LabOrders"
PKG = "hipaagrpc.labs.v1"


@pytest.fixture(scope="module")
def node() -> Iterator[Run]:
    run = open_run("spawn:reference-node")
    yield run
    run.close()


def message(run: Run, name: str, **fields: object) -> bytes:
    catalogue = run.catalogue()
    assert catalogue is not None
    data: bytes = catalogue.message_class(f"{PKG}.{name}")(**fields).SerializeToString()
    return data


def decode(run: Run, name: str, data: bytes) -> Any:
    catalogue = run.catalogue()
    assert catalogue is not None
    return catalogue.message_class(f"{PKG}.{name}").FromString(data)


def get(run: Run, who: str | None, order_id: int, *paths: str) -> CallResult:
    request = decode(run, "GetLabOrderRequest", message(run, "GetLabOrderRequest"))
    request.order_id = order_id
    request.read_mask.paths.extend(paths)
    principal = run.principal(who) if who else None
    return run.call(f"{SVC}/GetLabOrder", [request.SerializeToString()], principal=principal)


def records(run: Run) -> list[dict[str, object]]:
    path = run.config.path("audit.source")
    assert path is not None
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def test_spawn_spec_is_bundled():
    spec = parse_target("spawn:reference-node")
    assert spec.bundled == "reference-node"
    assert "reference-node" in BUNDLED


def test_health_is_public_and_bad_credentials_get_one_text(node):
    assert node.call("/grpc.health.v1.Health/Check").code == grpc.StatusCode.OK
    for value in (None, "Bearer", "Bearer abc", "Basic dXNlcjpwYXNz"):
        extra = [("authorization", value)] if value else []
        result = node.call(
            f"{SVC}/GetLabOrder",
            [message(node, "GetLabOrderRequest", order_id=1001)],
            extra_metadata=extra,
        )
        assert (result.code, result.details, result.responses) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthenticated",
            (),
        )


def test_a_repeated_authorization_is_refused_although_node_keeps_only_the_first(node):
    # Node's http2 layer drops a second authorization header; the service reads raw headers.
    admin, least = node.principal("admin"), node.principal("least-privileged")
    result = node.call(
        f"{SVC}/ListLabOrders",
        [message(node, "ListLabOrdersRequest", page_size=1)],
        principal=admin,
        extra_metadata=least.metadata(),
    )
    assert result.code == grpc.StatusCode.UNAUTHENTICATED
    assert not result.responses


def test_a_header_list_over_16_kib_is_never_served(node):
    result = node.call(
        f"{SVC}/GetLabOrder",
        [message(node, "GetLabOrderRequest", order_id=1001)],
        principal=node.principal("admin"),
        extra_metadata=[("x-padding", "a" * 20 * 1024)],
    )
    # The service answers RESOURCE_EXHAUSTED; under load grpcio sometimes reports the
    # same answer as INTERNAL ('Stream removed'). Either way nothing is served.
    assert result.code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
    assert not result.responses


def test_orders_come_wrapped_and_only_to_those_who_may_see_them(node):
    own = get(node, "physician", 1001)
    assert own.code == grpc.StatusCode.OK
    order = decode(node, "GetLabOrderResponse", own.responses[0]).order
    assert order.order_id == 1001
    assert order.ordering_provider == "u-2001"
    foreign = get(node, "physician", 1041)
    assert (foreign.code, foreign.details) == (grpc.StatusCode.PERMISSION_DENIED, "access denied")
    assert get(node, "physician", 99999).code == grpc.StatusCode.NOT_FOUND
    assert get(node, "no-roles", 1001).code == grpc.StatusCode.PERMISSION_DENIED
    assert get(node, "svc-lis", 1001).code == grpc.StatusCode.PERMISSION_DENIED


def test_fields_are_limited_by_role_and_mask_and_identifiers_masked(node):
    def fields(who: str, *paths: str) -> dict[str, object]:
        result = get(node, who, 1001, *paths)
        assert result.code == grpc.StatusCode.OK, result.details
        order = decode(node, "GetLabOrderResponse", result.responses[0]).order
        return {f.name: v for f, v in order.ListFields()}

    assert set(fields("compliance")) == {"order_id", "ordering_provider", "status", "updated_at"}
    billing = fields("billing")
    assert "results" not in billing
    assert "clinical_indication" not in billing
    assert str(billing["ssn"]).startswith("***-**-")
    assert not str(fields("admin")["ssn"]).startswith("*")
    assert set(fields("physician", "order_id", "test_code")) == {"order_id", "test_code"}
    bad = get(node, "physician", 1001, "does_not_exist")
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "does_not_exist" not in bad.details


def test_exports_are_bounded_and_pages_capped(node):
    export = node.call(
        f"{SVC}/ExportLabOrders",
        [message(node, "ExportLabOrdersRequest", limit=2**31 - 1)],
        principal=node.principal("svc-lis"),
    )
    assert export.code == grpc.StatusCode.OK
    assert len(export.responses) == 25
    page = node.call(
        f"{SVC}/ListLabOrders",
        [message(node, "ListLabOrdersRequest", page_size=2**31 - 1)],
        principal=node.principal("admin"),
    )
    listed = decode(node, "ListLabOrdersResponse", page.responses[0])
    assert len(listed.orders) == 50


def _at(record: dict[str, object], dotted: str) -> object:
    node: object = record
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    return node


def test_audit_trail_is_fhir_with_the_chain_in_each_record_and_no_request_id(node):
    import hashlib

    sent = get(node, "physician", 1002)
    assert sent.code == grpc.StatusCode.OK
    trail = records(node)
    assert all(r["resourceType"] == "AuditEvent" for r in trail)
    assert sent.request_id not in json.dumps(trail)
    ours = [
        r
        for r in trail
        if _at(r, "subtype.0.code") == f"{SVC}/GetLabOrder"
        and _at(r, "entity.0.what.identifier.value") == "1002"
    ]
    assert _at(ours[-1], "agent.0.who.identifier.value") == "u-2001"
    assert _at(ours[-1], "outcomeDesc") == "Ok"
    assert str(_at(ours[-1], "recorded")).endswith("Z")
    prev = "0" * 64
    for seq, record in enumerate(trail, 1):
        assert _at(record, CHAIN_SEQ) == seq
        assert _at(record, CHAIN_PREV) == prev
        # RFC 8785 for these records (ASCII keys, integers and strings only) is sorted,
        # compact JSON with non-ASCII text kept as it is.
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        prev = hashlib.sha256(canonical.encode()).hexdigest()


def test_the_application_log_is_pino_json_without_tokens(node):
    get(node, "billing", 1003)
    sink = node.config.get("logs.sinks")[0]
    text = Path(sink).read_text()
    lines = [json.loads(line) for line in text.splitlines() if line]
    assert any(line.get("msg") == "rpc" and line.get("sub") == "u-4001" for line in lines)
    assert all(isinstance(line["time"], int) for line in lines)  # epoch milliseconds
    token = node.principal("billing").token()
    assert token not in text
    assert token.rsplit(".", 1)[1] not in text


def test_the_descriptor_set_holds_the_service_and_health():
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set())
    services = {f"{f.package}.{s.name}" for f in fds.file for s in f.service}
    assert services == {f"{PKG}.LabOrders", f"{PKG}.AuditTrail", "grpc.health.v1.Health"}


def test_the_issuer_publishes_private_members_only_with_jwks_private():
    from targets.node_reference import RsaIssuer

    issuer = RsaIssuer("https://issuer.test", "api://x")
    private = {"d", "p", "q", "dp", "dq", "qi"}
    (public,) = issuer.jwks()["keys"]
    (leaky,) = issuer.jwks(private=True)["keys"]
    assert not private & set(public)
    assert private <= set(leaky)
    assert {k: leaky[k] for k in public} == public  # same key, same kid, alg and use


def test_the_cert_defects_change_only_the_server_certificate():
    import datetime as dt

    from cryptography import x509

    from targets.node_reference import CLIENT_IDENTITY, _server_leaf
    from targets.pki import Pki

    pki = Pki.generate(CLIENT_IDENTITY)
    assert _server_leaf(frozenset({"raw-ssn"}), pki) is pki.server

    def leaf(defect: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(_server_leaf(frozenset({defect}), pki).chain_pem)

    wrong = leaf("wrong-san").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert wrong.value.get_values_for_type(x509.DNSName) == ["lab-orders.labs.svc.cluster.local"]
    long_lived = leaf("long-lived-cert")
    lifetime = long_lived.not_valid_after_utc - long_lived.not_valid_before_utc
    assert lifetime == dt.timedelta(days=825)


def test_without_node_the_launcher_says_so_in_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(NodeUnavailable, match=r"needs node and npm on PATH"):
        ensure_installed(Path("/nonexistent"))


def test_a_failed_npm_ci_is_one_line_with_npms_own_reason(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in (
        ("node", "exit 0"),
        (
            "npm",
            "echo 'npm error code ENOTFOUND' >&2\n"
            "echo 'npm error syscall getaddrinfo' >&2\n"
            "echo 'npm error network request failed' >&2\n"
            "echo 'npm error A complete log of this run can be found in: /x.log' >&2\n"
            "exit 1",
        ),
    ):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(NodeUnavailable) as caught:
        ensure_installed(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith("code ENOTFOUND; network request failed")
