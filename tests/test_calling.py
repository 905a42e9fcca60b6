"""The calling seam's pacing, and when background work starts (no target needed)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from harness import checks
from harness.calling import MAX_PACING_S, Pacer
from harness.config import Config
from harness.fuzz import _message, messages


class Clock:
    """A clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_a_principal_s_calls_keep_to_the_declared_rate_and_principals_do_not_wait_on_each_other():
    clock = Clock()
    pacer = Pacer(50.0, clock.time, clock.sleep)
    waits = [pacer.wait("admin") for _ in range(3)] + [pacer.wait("billing")]
    assert [round(w, 6) for w in waits] == [0.0, 0.02, 0.02, 0.0]
    clock.now += 1.0  # idle for a while: the next call goes at once, not in a burst later
    assert pacer.wait("admin") == 0.0
    assert clock.slept == [0.02, 0.02]


def test_calls_are_not_paced_without_a_declared_rate():
    assert Pacer.of(Config()).interval == 0.0
    assert Pacer.of(Config({"limits": {"rate": {"rps": 0}}})).interval == 0.0
    assert Pacer.of(Config({"limits": {"rate": {"rps": 50}}})).interval == 0.02
    assert Pacer(None).wait("admin") == 0.0


def test_a_tiny_declared_rate_never_spaces_calls_more_than_a_second():
    # limits.rate.rps = 0.001 spaced calls 1,000 s apart: an unbounded wait per call.
    assert Pacer.of(Config({"limits": {"rate": {"rps": 0.001}}})).interval == MAX_PACING_S == 1.0
    assert Pacer(2.0).interval == 0.5


def test_the_message_strategy_is_built_once_per_shape():
    """One strategy per (type, depth, levels): a new one per draw was validated every time."""
    from google.protobuf import struct_pb2

    assert _message(struct_pb2.Value, 3, 3, 4) is _message(struct_pb2.Value, 3, 3, 4)
    assert messages(struct_pb2.Value) is not None


class _Target:
    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def background(self, thread: threading.Thread) -> None:
        self.threads.append(thread)


class _Run:
    def __init__(self) -> None:
        self.target = _Target()


def test_a_late_warmup_waits_for_the_scan_but_not_for_a_token_held_to_expire(monkeypatch: Any):
    """AUTHN-009's streams waited behind AUTHN-005's eight-second hold, in sequence."""
    hold_released, scan_done, late_ran = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def hold(run: object) -> None:
        hold_released.wait(10)

    def scan(run: object) -> None:
        order.append("scan")
        scan_done.set()

    def late(run: object) -> None:
        order.append("late")
        late_ran.set()

    monkeypatch.setattr(checks, "_WARMUPS", {"X-HOLD": hold, "X-SCAN": scan, "X-LATE": late})
    monkeypatch.setattr(checks, "_LATE", {late})
    monkeypatch.setattr(checks, "_WAITS", {hold})
    monkeypatch.setattr(checks, "_CHILD", set())
    run = _Run()
    checks.start_warmups(run, ["X-HOLD", "X-SCAN", "X-LATE"])  # type: ignore[arg-type]
    try:
        assert late_ran.wait(5), "the late warm-up waited for the hold"
        assert order == ["scan", "late"]
    finally:
        hold_released.set()
        for thread in run.target.threads:
            thread.join(5)


def test_methods_are_fuzzed_side_by_side_only_within_the_server_s_stream_limit():
    from harness.engine import DEFAULT_IN_FLIGHT
    from harness.plans.fuzzcases import METHOD_LANES, method_lanes

    assert method_lanes(None) == 1  # nothing advertised, or not readable: one at a time
    assert method_lanes(DEFAULT_IN_FLIGHT) == 1
    assert method_lanes(2 * DEFAULT_IN_FLIGHT) == 2
    assert method_lanes(100) == METHOD_LANES
    assert method_lanes(1) == 1


def test_a_run_opened_early_is_taken_by_the_next_open_with_the_same_arguments():
    """The plugin starts spawning the target while tests are collected; ``hipaa_run``'s
    ``Run.open`` takes that run (or raises its error) instead of opening a second one."""
    import harness.run as run_module
    from harness.errors import HarnessError
    from harness.run import Run, RunOptions, discard_early
    from harness.target import parse_target

    with socket_closed() as port:
        spec, config, options = parse_target(f"127.0.0.1:{port}"), Config(), RunOptions(seed=3)
        Run.open_early(spec, config, options)
        Run.open_early(spec, config, options)  # once per arguments
        assert len(run_module._EARLY) == 1
        with pytest.raises(HarnessError, match=str(port)):  # the early attempt's own error
            Run.open(spec, config, options)
        assert run_module._EARLY == {}
        Run.open_early(spec, config, options)
        discard_early(wait_s=30)  # nobody took it: closed (here, it had failed to open)
        assert run_module._EARLY == {}


def socket_closed() -> Any:
    """A context giving a local TCP port nothing listens on."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed() -> Any:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield port

    return closed()


def test_one_message_goes_out_without_a_request_thread_to_methods_of_every_kind():
    """One request message is sent as unary-stream (no thread to read a request iterator),
    and answers like a stream of one from unary, server-streaming and client-streaming
    methods; several messages still go out as a stream."""
    from concurrent import futures

    import grpc

    from harness.channels import invoke

    def client_stream(requests: Any, context: Any) -> bytes:
        return b"%d" % sum(1 for _ in requests)

    handler = grpc.method_handlers_generic_handler(
        "t.S",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(lambda r, c: r + b"!"),
            "Server": grpc.unary_stream_rpc_method_handler(lambda r, c: iter([r, r, r])),
            "Client": grpc.stream_unary_rpc_method_handler(client_stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    streams: list[str] = []
    real = channel.stream_stream

    def spied(method: str, **kw: Any) -> Any:
        streams.append(method)
        return real(method, **kw)

    channel.stream_stream = spied  # type: ignore[method-assign]
    try:
        assert invoke(channel, "/t.S/Unary", [b"a"], timeout=5).responses == (b"a!",)
        assert invoke(channel, "/t.S/Server", [b"b"], timeout=5).responses == (b"b",) * 3
        assert invoke(channel, "/t.S/Client", [b"c"], timeout=5).responses == (b"1",)
        assert streams == []
        assert invoke(channel, "/t.S/Client", [b"c", b"d"], timeout=5).responses == (b"2",)
        assert streams == ["/t.S/Client"]
    finally:
        channel.close()
        server.stop(0)


def test_a_unary_call_keeps_what_a_stream_read_shows_a_message_beside_an_error_included():
    """Methods the descriptors call unary are sent as one blocking unary call: the same
    code, details, metadata and messages as the stream read, a message sent beside an
    error status included (a refusal that leaks data must still be seen)."""
    from concurrent import futures

    import grpc

    from harness.channels import invoke

    def leaky(request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("why", "denied"),))
        context.set_code(grpc.StatusCode.PERMISSION_DENIED)
        context.set_details("no")
        return b"record of p-0001"

    def empty(request: bytes, context: Any) -> None:
        return None

    handler = grpc.method_handlers_generic_handler(
        "t.S",
        {
            "Leaky": grpc.unary_unary_rpc_method_handler(leaky),
            "Ok": grpc.unary_unary_rpc_method_handler(lambda r, c: r + b"!"),
            "Empty": grpc.unary_unary_rpc_method_handler(empty),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        for path in ("/t.S/Leaky", "/t.S/Ok", "/t.S/Empty", "/t.S/Missing"):
            streamed = invoke(channel, path, [b"a"], timeout=5)
            unary = invoke(channel, path, [b"a"], timeout=5, unary_response=True)
            assert (unary.code, unary.details, unary.responses) == (
                streamed.code,
                streamed.details,
                streamed.responses,
            ), path
            assert dict(unary.trailing_metadata).get("why") == dict(streamed.trailing_metadata).get(
                "why"
            )
        leak = invoke(channel, "/t.S/Leaky", [b"a"], timeout=5, unary_response=True)
        assert leak.code == grpc.StatusCode.PERMISSION_DENIED
        assert leak.responses == (b"record of p-0001",)
    finally:
        channel.close()
        server.stop(0)


def test_a_method_described_unary_that_streams_is_read_as_a_stream_from_then_on():
    """A unary call to a method that sends two messages lasts to its deadline (grpcio waits
    for the status): the caller then reads that method as a stream, both messages seen.
    Callers that stop after one message (max_responses=1) always read a stream."""
    from concurrent import futures
    from types import SimpleNamespace

    import grpc

    from harness.calling import Caller
    from harness.config import Config

    def two(request: bytes, context: Any) -> Any:
        yield b"first"
        yield b"second"

    handler = grpc.method_handlers_generic_handler(
        "t.S", {"Misdescribed": grpc.unary_stream_rpc_method_handler(two)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    target = SimpleNamespace(options=SimpleNamespace(call_timeout_s=1.0))
    caller = Caller(target, Config())  # type: ignore[arg-type]
    caller.unary_response = lambda path: True  # the descriptors say unary
    path = "/t.S/Misdescribed"
    try:
        first = caller.call(path, [b""], channel=channel, max_responses=1)
        assert (first.code, first.responses) == (grpc.StatusCode.CANCELLED, (b"first",))
        held = caller.call(path, [b""], channel=channel)
        assert held.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert held.responses == (b"first",)
        again = caller.call(path, [b""], channel=channel)
        assert (again.code, again.responses) == (grpc.StatusCode.OK, (b"first", b"second"))
    finally:
        channel.close()
        server.stop(0)
