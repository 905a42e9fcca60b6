"""LIMIT-001 (c), LIMIT-001's steps at once, and LIMIT-003 (b), over the wire.

LIMIT-003 (b): a grpcio server on 127.0.0.1 answers each export as its method says: one
stream of a message larger than a gRPC client's receive limit (grpcio raises
RESOURCE_EXHAUSTED for it itself, "Received message larger than max"), one refusal the
server sends. Read off a raw HTTP/2 connection, only the second is a RESOURCE_EXHAUSTED.

LIMIT-001 (c): the oversized header goes out on a raw HTTP/2 connection, read while it is
written: a server that ends the connection mid-block (nghttp2's GOAWAY COMPRESSION_ERROR)
answers at once, a server that says nothing is a timeout (INCONCLUSIVE), and a grpcio
server enforces its header limit once its SETTINGS are acknowledged.

LIMIT-001 (a)-(d) go at once; a step that does not pass goes again alone (see below).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from hyperframe.frame import GoAwayFrame, SettingsFrame

from harness.channels import Endpoint
from harness.checks.limit import (
    CONTROL_HEADER_BYTES,
    ExportPlan,
    SizePlan,
    _size_steps,
    concurrent_exports,
    judge_concurrent,
    judge_header,
    send_header,
)
from harness.h2client import H2Client, Reply
from harness.outcome import Status
from harness.principals import Principal
from harness.transport import Transport

T = TypeVar("T")
U = TypeVar("U")
BIG = 5 * 1024 * 1024  # over the 4 MiB receive limit a gRPC client has by default


def _export(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    next(requests)
    if dict(context.invocation_metadata()).get("authorization") == "Bearer busy":
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent exports")
    yield b"x" * BIG


class _Handlers(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == "/acme.Exports/Get":
            return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
        if details.method != "/acme.Exports/Export":
            return None
        return grpc.stream_stream_rpc_method_handler(_export)


@pytest.fixture
def server() -> Iterator[int]:
    yield from _grpc_server(_Handlers(), options=[("grpc.max_send_message_length", -1)])


def _grpc_server(handler: grpc.GenericRpcHandler, **kwargs: Any) -> Iterator[int]:
    """A grpcio server on 127.0.0.1 serving ``handler``, stopped when done: its port."""
    s = grpc.server(futures.ThreadPoolExecutor(8), handlers=[handler], **kwargs)
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
    """What these probes read of a run: connections, a request-ID key, the liveness method."""

    port: int
    request_id_key: str = "x-request-id"
    liveness: str = "/grpc.health.v1.Health/Check"
    options: _Options = field(default_factory=_Options)

    def open_h2(self) -> H2Client:
        endpoint = Endpoint(f"127.0.0.1:{self.port}", Transport.H2C)
        return H2Client.open(endpoint, "127.0.0.1", self.port, 3.0)

    def new_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.max_send_message_length", -1)]
        )

    def map(self, fn: Callable[[T], U], items: Iterable[T]) -> list[U]:
        todo = list(items)
        with futures.ThreadPoolExecutor(len(todo)) as pool:
            return list(pool.map(fn, todo))


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


# -- LIMIT-001 (c) ----------------------------------------------------------------------

GET = SizePlan("/acme.Exports/Get", (), 4 * 1024 * 1024, b"", b"", b"", b"")
MIB = 1024 * 1024


def test_a_grpcio_server_refuses_a_header_over_its_limit_once_its_settings_are_acked(server):
    # C-core applies the limit it advertises (SETTINGS_MAX_HEADER_LIST_SIZE 16384) only
    # once the client acknowledged it: a request sent before that was served.
    control, _ = send_header(_Run(server), GET, CONTROL_HEADER_BYTES)  # type: ignore[arg-type]
    reply, rid = send_header(_Run(server), GET, 20 * 1024)  # type: ignore[arg-type]
    assert not isinstance(reply, str)
    assert (reply.http_status, reply.grpc_status) == (200, 8)
    assert judge_header(GET, 20 * 1024, reply, control, rid).status.value == "PASS"


def _raw_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback HTTP/2 'server' whose every connection ``handle`` serves, in a thread."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the sender fills it soon
    done = threading.Event()

    def loop() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                handle(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        done.set()
        thread.join(timeout=10)
        srv.close()


def _read(conn: socket.socket, count: int) -> None:
    got = 0
    conn.settimeout(5)
    while got < count:
        data = conn.recv(65536)
        if not data:
            return
        got += len(data)


def _nghttp2_like(conn: socket.socket) -> None:
    """SETTINGS, then GOAWAY COMPRESSION_ERROR once 40 KB of the header block came, as
    nghttp2 ends a connection on a field over its limit; then it reads nothing more."""
    conn.sendall(SettingsFrame(0).serialize())
    _read(conn, 40_000)
    conn.sendall(GoAwayFrame(0, last_stream_id=0, error_code=9).serialize())
    time.sleep(3)  # keeps the connection open, unread: a blocking sender would hang here


def _silent(conn: socket.socket) -> None:
    """SETTINGS, then it reads everything and answers nothing."""
    conn.sendall(SettingsFrame(0).serialize())
    conn.settimeout(5)
    while True:
        try:
            if not conn.recv(65536):
                return
        except OSError:
            return


@pytest.fixture
def nghttp2_like() -> Iterator[int]:
    yield from _raw_server(_nghttp2_like)


@pytest.fixture
def silent() -> Iterator[int]:
    yield from _raw_server(_silent)


def test_a_goaway_mid_header_block_is_read_at_once_and_is_a_refusal(nghttp2_like):
    # Issue #19: grpcio's client, blocked writing the block nghttp2 no longer read, ran
    # into its 10 s deadline (DEADLINE_EXCEEDED: INCONCLUSIVE). The probe now reads while
    # it writes: the GOAWAY ends it, well within a call timeout it never reaches.
    run = _Run(nghttp2_like, options=_Options(call_timeout_s=60.0))
    reply, rid = send_header(run, GET, MIB)  # type: ignore[arg-type]
    assert not isinstance(reply, str)
    assert (reply.goaway_code, reply.goaway_last_stream, reply.timed_out) == (9, 0, False)
    control = Reply(http_status=200, grpc_status=0, messages=1)
    assert judge_header(GET, MIB, reply, control, rid).status.value == "PASS"


def test_a_server_that_says_nothing_is_a_timeout_not_a_refusal(silent):
    run = _Run(silent, options=_Options(call_timeout_s=1.0))
    reply, rid = send_header(run, GET, MIB)  # type: ignore[arg-type]
    assert not isinstance(reply, str)
    assert reply.timed_out
    control = Reply(http_status=200, grpc_status=0, messages=1)
    got = judge_header(GET, MIB, reply, control, rid)
    assert got.status.value == "INCONCLUSIVE"
    assert "no answer" in got.observed


def _refuses_at_once(conn: socket.socket) -> None:
    """SETTINGS and GOAWAY at once, then nothing read for a while, then a close."""
    conn.sendall(SettingsFrame(0).serialize())
    conn.sendall(GoAwayFrame(0, last_stream_id=0, error_code=11).serialize())
    time.sleep(3)


@pytest.fixture
def refuses_at_once() -> Iterator[int]:
    yield from _raw_server(_refuses_at_once)


def test_a_request_written_while_reading_stops_at_the_servers_goaway(refuses_at_once):
    # 16 MiB of header block is more than loopback buffers take: written whole, the
    # request blocked until the server closed, then raised (a broken pipe, no GOAWAY read).
    client = _Run(refuses_at_once).open_h2()
    with client:
        headers = client.headers("/acme.Exports/Get", metadata=(("x-pad", "h" * 16 * MIB),))
        sid = client.request(headers, b"", within=30.0)
        reply = client.wait(sid, 30.0)
    assert (reply.goaway_code, reply.timed_out) == (11, False)


# -- LIMIT-001 (a)-(d) at once ----------------------------------------------------------
# A grpcio server refuses oversized messages and headers itself. Its handler refuses a call
# that comes while another is in flight, as a service with a global concurrency limit
# does: sent at once, the step that comes second is refused for the load beside it, not
# for its size, and only its answer alone may stand. A health check that fails once sends
# every step again, one at a time.

LIMIT = 4 * 1024 * 1024
HEALTH = "/grpc.health.v1.Health/Check"


class _Service(grpc.GenericRpcHandler):
    """Get holds each call 1 s and refuses one that comes meanwhile; Health answers."""

    def __init__(self, sick_once: bool) -> None:
        self.busy = threading.Lock()
        self.sick = sick_once

    def _get(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if not self.busy.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
        try:
            time.sleep(1.0)
            return b""
        finally:
            self.busy.release()

    def _health(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        if self.sick:
            self.sick = False
            context.abort(grpc.StatusCode.UNAVAILABLE, "starting over")
        return b""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == "/acme.Sizes/Get":
            return grpc.unary_unary_rpc_method_handler(self._get)
        if details.method == HEALTH:
            return grpc.unary_unary_rpc_method_handler(self._health)
        return None


def _serve(sick_once: bool) -> Iterator[int]:
    yield from _grpc_server(_Service(sick_once))


@pytest.fixture
def limited() -> Iterator[int]:
    yield from _serve(sick_once=False)


@pytest.fixture
def sick_once() -> Iterator[int]:
    yield from _serve(sick_once=True)


PLAN = SizePlan(
    "/acme.Sizes/Get",
    (),
    LIMIT,
    oversized=b"x" * (LIMIT + 1),
    fits=b"x" * (LIMIT - 1024),
    plain=b"",
    bomb=bytes(8 * LIMIT),
)


def _healths(observations: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for o in observations:
        if o.probe.startswith("health after"):
            out.setdefault(o.ref, []).append(o.probe)
    return out


@pytest.mark.timeout(60)
def test_a_step_refused_for_the_load_beside_it_is_judged_by_its_answer_alone(limited):
    observations = _size_steps(_Run(limited), PLAN)  # type: ignore[arg-type]
    assert {o.status for o in observations} == {Status.PASS}, observations
    healths = _healths(observations)
    assert sorted(healths) == ["a", "b", "c", "d"]
    # (b) and (c)'s control call reach the handler together: one of them is refused for
    # the other and goes again alone, with its own health checks; the rest stand as sent.
    alone = [ref for ref, probes in healths.items() if "(a)-(d), sent at once" not in probes[0]]
    assert alone in (["b"], ["c"]), healths
    assert healths["a"] == ["health after (a)-(d), sent at once"]
    assert healths["d"] == ["health after (a)-(d), sent at once"]


@pytest.mark.timeout(60)
def test_a_failed_health_check_sends_every_step_again_one_at_a_time(sick_once):
    observations = _size_steps(_Run(sick_once), PLAN)  # type: ignore[arg-type]
    assert {o.status for o in observations} == {Status.PASS}, observations
    assert _healths(observations) == {
        "a": ["health after (a)"],
        "b": ["health after (b)"],
        "c": ["health after (c) 20 KiB header", "health after (c) 1024 KiB header"],
        "d": ["health after (d)"],
    }
