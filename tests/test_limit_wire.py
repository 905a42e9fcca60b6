"""LIMIT-003 (b) over the wire: the concurrent exports read statuses the server sent.

A grpcio server on 127.0.0.1 answers each export as its method says: one stream of a
message larger than a gRPC client's receive limit (grpcio raises RESOURCE_EXHAUSTED for it
itself, "Received message larger than max"), one refusal the server sends. Read off a raw
HTTP/2 connection, only the second is a RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from harness.channels import Endpoint
from harness.checks.limit import ExportPlan, concurrent_exports, judge_concurrent
from harness.h2client import H2Client
from harness.principals import Principal
from harness.transport import Transport

BIG = 5 * 1024 * 1024  # over the 4 MiB receive limit a gRPC client has by default


def _export(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    next(requests)
    if dict(context.invocation_metadata()).get("authorization") == "Bearer busy":
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent exports")
    yield b"x" * BIG


class _Handlers(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != "/acme.Exports/Export":
            return None
        return grpc.stream_stream_rpc_method_handler(_export)


@pytest.fixture
def server() -> Iterator[int]:
    s = grpc.server(
        futures.ThreadPoolExecutor(4),
        handlers=[_Handlers()],
        options=[("grpc.max_send_message_length", -1)],
    )
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    try:
        yield port
    finally:
        s.stop(0)


@dataclass
class _Options:
    call_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0


@dataclass
class _Run:
    """What concurrent_exports reads of a run: a raw HTTP/2 connection, a request-ID key."""

    port: int
    request_id_key: str = "x-request-id"
    options: _Options = field(default_factory=_Options)

    def open_h2(self) -> H2Client:
        endpoint = Endpoint(f"127.0.0.1:{self.port}", Transport.H2C)
        return H2Client.open(endpoint, "127.0.0.1", self.port, 3.0)


def _exporter(tmp_path: Path, token: str) -> Principal:
    path = tmp_path / f"{token}.jwt"
    path.write_text(token)
    return Principal("svc-export", token_file=path)


def test_an_oversized_export_is_never_read_as_the_servers_refusal(server, tmp_path):
    channel = grpc.insecure_channel(f"127.0.0.1:{server}")
    try:  # what a gRPC client makes of it: a RESOURCE_EXHAUSTED it raised itself
        call = channel.stream_stream("/acme.Exports/Export")(iter([b""]), timeout=10)
        with pytest.raises(grpc.RpcError):
            list(call)
        assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        channel.close()
    plan = ExportPlan("/acme.Exports/Export", b"", None, None)
    replies = concurrent_exports(_Run(server), plan, _exporter(tmp_path, "idle"), 2)  # type: ignore[arg-type]
    assert not isinstance(replies, str)
    assert [(r.grpc_status, r.messages, r.largest) for r in replies] == [(0, 1, BIG)] * 2
    assert judge_concurrent("2 at once", replies, 1).status.value == "FAIL"


def test_the_servers_own_refusal_is_read_as_it_was_sent(server, tmp_path):
    plan = ExportPlan("/acme.Exports/Export", b"", None, None)
    replies = concurrent_exports(_Run(server), plan, _exporter(tmp_path, "busy"), 2)  # type: ignore[arg-type]
    assert not isinstance(replies, str)
    assert any(r.grpc_status == 8 for r in replies)
    assert judge_concurrent("2 at once", replies, 1).status.value == "PASS"
