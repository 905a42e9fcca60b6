"""The fuzzers' pacing: back-pressure, the replay gate, and the server's concurrency limit.

The gate is tested on recorded answers (as grpcio, grpc-go, grpc-js, Java and Envoy word
them), then against small grpcio servers on 127.0.0.1: one advertising
``grpc.max_concurrent_streams`` = 2, and one that leaks a stream per malformed request
(grpcio's request_deserializer bug) until it refuses every stream on the connection.
"""

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import empty_pb2

from harness.channels import CallResult, Endpoint, invoke
from harness.engine import (
    BACKOFF_S,
    NO_CREDENTIALS,
    Case,
    FuzzMethod,
    Link,
    Pacing,
    Remote,
    Surface,
    paced,
    pressure,
    settle,
)
from harness.h2client import H2Client, advertised_streams
from harness.plans.fuzzcases import MethodRun, breaks, over_budget
from harness.transport import Transport
from tests.checks.recorded import answer

C = grpc.StatusCode
OK = answer(C.OK, b"\x08\x01")
CRASH = answer(C.UNKNOWN, details="Exception calling application: boom")
# REFUSED_STREAM as each stack's client words it (a proxy relays its upstream's words).
REFUSED = {
    "grpcio": "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))",
    "grpc-js": "Stream refused by server",
    "grpc-go": "stream terminated by RST_STREAM with error code: REFUSED_STREAM",
}


def refused(stack: str = "grpcio") -> CallResult:
    return answer(C.UNAVAILABLE, details=REFUSED[stack])


def never(*_: object) -> CallResult:
    raise AssertionError("the gate made a call it should not make")


def calls(*answers: CallResult) -> Callable[..., CallResult]:
    """A call that returns ``answers`` in turn (the last one for ever)."""
    it: Iterator[CallResult] = iter(answers)
    last = [answers[-1]]

    def call(*_: object) -> CallResult:
        last[0] = next(it, last[0])
        return last[0]

    return call


def link(send, alone=never, control=never, gone=lambda: "") -> Link:
    return Link(send=send, alone=alone, control=control, gone=gone, what="malformed inputs")


def oracle(result: CallResult) -> str:
    """The fuzz oracle in short: UNKNOWN and UNAVAILABLE fail."""
    return result.code.name if result.code in (C.UNKNOWN, C.UNAVAILABLE) else ""


def pacing(**kw) -> Pacing:
    return Pacing(**kw)


def no_sleep(_: float) -> None:
    return None


# -- what counts as back-pressure --------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (C.UNAVAILABLE, REFUSED["grpcio"], "refused"),
        (C.UNAVAILABLE, REFUSED["grpc-js"], "refused"),
        (C.UNAVAILABLE, REFUSED["grpc-go"], "refused"),
        (C.UNAVAILABLE, "transport is closing", "closed"),  # grpc-go, connection going away
        (C.UNAVAILABLE, "the connection is draining", "goaway"),  # grpc-go after GOAWAY
        (C.UNAVAILABLE, "GOAWAY received", "goaway"),  # grpcio
        (
            C.UNAVAILABLE,
            "Abrupt GOAWAY closed sent stream. HTTP/2 error code: ENHANCE_YOUR_CALM",
            "goaway",
        ),  # grpc-java
        (
            C.UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: "
            "connection termination",
            "closed",
        ),  # Envoy
        (C.UNAVAILABLE, "Socket closed", "closed"),  # grpcio
        (C.UNAVAILABLE, "Connection dropped", "unavailable"),  # grpc-js: named by its code
        (C.UNAVAILABLE, "", "unavailable"),
        (C.RESOURCE_EXHAUSTED, "rate limit exceeded", "throttled"),
        # The code decides: the same words under another code are an answer.
        (C.INTERNAL, "Received RST_STREAM with error code 7", ""),
        (C.UNKNOWN, "Stream refused by server", ""),
        (C.DEADLINE_EXCEEDED, "Deadline Exceeded", ""),
        (C.OK, "", ""),
    ],
)
def test_back_pressure_is_told_by_the_code_and_named_by_the_words(code, details, kind):
    assert pressure(answer(code, details=details)) == kind


def test_an_answer_that_carried_a_message_is_never_back_pressure():
    assert pressure(answer(C.UNAVAILABLE, b"\x0a\x00", details=REFUSED["grpcio"])) == ""
    assert pressure(answer(C.RESOURCE_EXHAUSTED, b"\x0a\x00")) == ""


# -- back-pressure is waited out, never judged -------------------------------------------


@pytest.mark.parametrize("stack", sorted(REFUSED))
def test_refused_streams_are_tried_again_after_a_back_off(stack):
    waits: list[float] = []
    p = pacing(limit=8)
    got = settle(link(calls(refused(stack), refused(stack), OK)), oracle, p, waits.append)
    assert got.answered
    assert not got.finding
    assert got.result is OK
    assert [pressure(c) for c in got.set_aside] == ["refused", "refused"]
    assert waits == list(BACKOFF_S[:2])  # exponential
    assert p.pressured == 2
    assert p.in_flight < 8  # and what goes out at once shrank


def test_the_back_off_is_bounded_in_tries_and_in_time():
    sends = []

    def send() -> CallResult:
        sends.append(1)
        return answer(C.RESOURCE_EXHAUSTED)

    waits: list[float] = []
    control = calls(answer(C.RESOURCE_EXHAUSTED))
    got = settle(link(send, alone=send, control=control), oracle, pacing(), waits.append)
    assert not got.answered
    assert not got.finding
    assert len(sends) <= 2 * (len(BACKOFF_S) + 1)
    assert sum(waits) <= 2 * sum(BACKOFF_S)
    assert got.notes


def test_no_budget_left_means_no_retry_and_no_finding():
    got = settle(link(calls(refused())), oracle, pacing(spare=0), no_sleep)
    assert not got.answered
    assert not got.finding
    got = settle(link(calls(CRASH)), oracle, pacing(spare=0), no_sleep)
    assert not got.answered
    assert not got.finding
    assert "not confirmed" in got.notes[0]


def test_nothing_is_tried_past_the_deadline():
    got = settle(link(calls(refused())), oracle, pacing(deadline=time.monotonic() - 1), no_sleep)
    assert not got.answered
    assert not got.set_aside


# -- lasting back-pressure: the input, the connection, or the service --------------------


def test_a_connection_that_refuses_every_stream_is_a_denial_of_service():
    # The usual connection refuses even a valid control call; a new one serves the input.
    p = pacing()
    p.sent = 99
    got = settle(
        link(
            calls(refused()),
            alone=calls(answer(C.INTERNAL, details="grpc: error unmarshalling request")),
            control=lambda fresh: OK if fresh else refused(),
        ),
        oracle,
        p,
        no_sleep,
    )
    assert got.finding.startswith(
        "the service stops accepting streams after 100 malformed inputs on one connection"
    )
    assert "REFUSED_STREAM persists after back-off" in got.finding
    assert "a denial of service" in got.finding


def test_a_service_that_refuses_every_stream_everywhere_is_a_denial_of_service():
    got = settle(
        link(calls(refused("grpc-go")), alone=calls(refused("grpc-go")), control=calls(refused())),
        oracle,
        pacing(),
        no_sleep,
    )
    assert "stops accepting streams" in got.finding
    assert "even a valid control call on a new connection is refused" in got.finding


def test_a_busy_connection_that_recovers_is_no_finding():
    fresh = answer(C.INVALID_ARGUMENT, details="page_size must be positive")
    got = settle(
        link(calls(refused()), alone=calls(fresh), control=lambda fresh: OK),
        oracle,
        pacing(),
        no_sleep,
    )
    assert got.answered
    assert not got.finding
    assert got.result is fresh


def test_a_service_that_went_away_is_a_finding():
    gone = "connection refused"
    closing = answer(C.UNAVAILABLE, details="transport is closing")
    got = settle(
        link(calls(closing), alone=calls(closing), gone=lambda: gone), oracle, pacing(), no_sleep
    )
    assert got.finding == f"the service went down after 1 malformed inputs ({gone})"


def test_an_input_that_alone_meets_unavailable_while_others_are_served_is_its_answer():
    # Envoy in front, its backend resetting on this input only: the oracle's "no 14".
    edge = answer(
        C.UNAVAILABLE,
        details="upstream connect error or disconnect/reset before headers. reset reason: "
        "connection termination",
    )
    got = settle(
        link(calls(edge), alone=calls(edge), control=lambda fresh: OK), oracle, pacing(), no_sleep
    )
    assert got.answered
    assert not got.finding
    assert oracle(got.result) == "UNAVAILABLE"


def test_a_limit_this_input_alone_meets_is_its_answer_not_a_finding():
    too_big = answer(C.RESOURCE_EXHAUSTED, details="Received message larger than max")
    got = settle(
        link(calls(too_big), alone=calls(too_big), control=lambda fresh: OK),
        oracle,
        pacing(),
        no_sleep,
    )
    assert got.answered
    assert not got.finding
    assert oracle(got.result) == ""


# -- the replay gate ---------------------------------------------------------------------


def test_a_candidate_that_does_not_reproduce_is_a_note_not_a_finding():
    p = pacing()
    got = settle(link(calls(CRASH), alone=calls(OK)), oracle, p, no_sleep)
    assert got.answered
    assert not got.finding
    assert got.result is OK  # the input's answer is the replay's
    assert got.notes[0].startswith("not reproduced: UNKNOWN")
    assert p.not_reproduced == 1


def test_a_candidate_that_reproduces_alone_on_a_new_connection_stands():
    got = settle(link(calls(CRASH), alone=calls(CRASH)), oracle, pacing(), no_sleep)
    assert got.answered
    assert got.result is CRASH
    assert oracle(got.result) == "UNKNOWN"


def test_a_candidate_after_which_the_service_is_down_is_reproduced_by_definition():
    got = settle(link(calls(CRASH), gone=lambda: "connection refused"), oracle, pacing(), no_sleep)
    assert got.finding == "UNKNOWN; the service is down after it (connection refused)"


def test_a_candidate_whose_replay_meets_back_pressure_is_not_confirmed():
    got = settle(link(calls(CRASH), alone=calls(refused())), oracle, pacing(), no_sleep)
    assert not got.answered
    assert not got.finding
    assert got.notes[0].startswith("not confirmed: UNKNOWN")


def test_a_slow_answer_counts_against_the_p99_only_if_slow_again_alone():
    slow, fast = answer(C.OK, elapsed_s=1.5), answer(C.OK, elapsed_s=0.01)
    assert over_budget(slow, 3000.0).startswith("took 1500 ms")
    assert over_budget(fast, 3000.0) == ""
    got = settle(
        link(calls(slow), alone=calls(fast)), lambda r: over_budget(r, 3000.0), pacing(), no_sleep
    )
    assert got.result is fast
    got = settle(
        link(calls(slow), alone=calls(slow)), lambda r: over_budget(r, 3000.0), pacing(), no_sleep
    )
    assert got.result is slow  # hang-input: 1.5 s every time


def test_a_method_run_files_answers_and_back_pressure_apart():
    r = MethodRun("/pkg.Service/Method")
    assert r.record(settle(link(calls(refused(), OK)), oracle, pacing(), no_sleep), 3000) == ""
    lasting = settle(link(calls(refused())), oracle, pacing(spare=0), no_sleep)
    assert r.record(lasting, 3000) == ""
    assert not breaks(lasting, 3000)
    assert r.results == [OK]
    assert [pressure(c) for c in r.unanswered] == ["refused"]
    assert [pressure(c) for c in r.set_aside] == ["refused"]


# -- the in-flight limit -----------------------------------------------------------------


def test_pacing_follows_the_advertised_limit_and_shrinks_and_grows():
    assert Pacing.under(None).limit == 4
    assert Pacing.under(2).limit == 2
    assert Pacing.under(1000).limit == 4  # never more than the fuzzer's own default
    assert Pacing.under(0).limit == 1  # a server that allows none now: one at a time
    p = Pacing.under(8, default=8)
    p.pushed_back()
    p.pushed_back()
    assert p.in_flight == 2
    p.eased()
    assert p.in_flight == 3
    for _ in range(20):
        p.eased()
    assert p.in_flight == 8


def test_paced_windows_never_exceed_the_in_flight_limit_and_stop_at_a_finding():
    p = Pacing(limit=3)
    now, peak, lock = [0], [0], threading.Lock()

    def one(i: int) -> int:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.01)
        with lock:
            now[0] -= 1
        return i

    assert paced(p, list(range(10)), one, lambda i: False) == list(range(10))
    assert peak[0] <= 3
    assert p.peak == 3
    assert paced(Pacing(limit=2), list(range(10)), one, lambda i: i == 4) == [0, 1, 2, 3, 4, 5]


@pytest.fixture
def limited_server():
    """A grpcio server advertising SETTINGS_MAX_CONCURRENT_STREAMS = 2, counting in-flight."""
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return b""

    handler = grpc.method_handlers_generic_handler(
        "t.S", {"M": grpc.unary_unary_rpc_method_handler(slow)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(8), options=[("grpc.max_concurrent_streams", 2)]
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, state
    server.stop(0)


def test_the_fuzzers_learn_the_servers_limit_and_keep_under_it(limited_server):
    port, state = limited_server
    endpoint = Endpoint(f"127.0.0.1:{port}", Transport.H2C)
    with H2Client.open(endpoint, "127.0.0.1", port, 5.0) as client:
        advertised = advertised_streams(client, 2.0)
    assert advertised == 2
    p = Pacing.under(advertised)
    channels = [grpc.insecure_channel(endpoint.address) for _ in range(8)]
    try:
        got = paced(
            p,
            list(range(16)),
            lambda i: invoke(channels[i % 8], "/t.S/M", [b""], timeout=5),
            lambda r: False,
        )
    finally:
        for ch in channels:
            ch.close()
    # Seen twice under load, one call UNAVAILABLE each time (CI, details not kept; then a
    # full local suite beside benchmarks: RST_STREAM REFUSED_STREAM (7), on a connection
    # with no other stream of ours open, while the server's handlers never ran more than
    # two at once): grpc-core still counting a stream whose status it has sent. That is
    # back-pressure, which the fuzzers' settle() absorbs (this test calls invoke() bare);
    # anything else, or more than one, fails.
    failed = [(i, r.code, r.details) for i, r in enumerate(got) if r.code != C.OK]
    assert len(got) == 16
    refused = [f for f in failed if f[1] == C.UNAVAILABLE and "error code 7" in f[2]]
    assert failed == refused, failed
    assert len(refused) <= 1, failed
    # Over eight connections, each with its own limit: the pacing held the fuzzer to two.
    assert p.peak <= 2
    assert state["peak"] <= 2


# -- a service that leaks a stream per malformed request ---------------------------------


@pytest.fixture
def leaking_server():
    """grpcio (1.85): a request its request_deserializer rejects never completes its call,
    so after max_concurrent_streams of them every stream on that connection is refused."""

    def reject(raw: bytes) -> object:
        raise ValueError("not a request")

    handler = grpc.method_handlers_generic_handler(
        "t.S",
        {
            "M": grpc.unary_unary_rpc_method_handler(lambda r, c: b"", request_deserializer=reject),
            "Ok": grpc.unary_unary_rpc_method_handler(lambda r, c: b""),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(4), options=[("grpc.max_concurrent_streams", 3)]
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_a_service_that_stops_accepting_streams_after_malformed_inputs_is_named_so(
    leaking_server,
):
    options = [("grpc.enable_retries", 0), ("grpc.use_local_subchannel_pool", 1)]

    def new_channel() -> grpc.Channel:
        return grpc.insecure_channel(leaking_server, options=options)

    method = FuzzMethod("/t.S/M", empty_pb2.Empty, b"", (), False)
    surface = Surface([method], {})
    remote = Remote(
        surface,
        new_channel(),
        pacing=Pacing(limit=1, waits_s=(0.05, 0.1)),
        liveness="/t.S/Ok",
        new_channel=new_channel,
    )
    found = [remote.check(Case(method, NO_CREDENTIALS, b"\xff\xff")) for _ in range(8)]
    findings = [f for f in found if f is not None]
    assert findings, remote.notes
    why = findings[0].why
    assert why.startswith("the service stops accepting streams after ")
    assert "inputs on one connection: REFUSED_STREAM persists after back-off" in why
    # The fuzzer goes on over a new connection, where the malformed input is answered.
    assert remote.check(Case(method, NO_CREDENTIALS, b"\xff\xff")) is None
