"""LIMIT-001's steps go at once; what does not pass goes again alone, over real connections.

A grpcio server on 127.0.0.1 refuses oversized messages and headers itself (its 4 MiB
receive limit, its metadata limit). Its handler refuses a call that comes while another is
in flight, as a service with a global concurrency limit does: sent at once, the step that
comes second is refused for the load beside it, not for its size, and only its answer
alone may stand. A health check that fails once sends every step again, one at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import pytest

from harness.channels import Endpoint
from harness.checks.limit import SizePlan, _size_steps
from harness.h2client import H2Client
from harness.outcome import Status
from harness.transport import Transport

T = TypeVar("T")
U = TypeVar("U")
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


@dataclass
class _Options:
    call_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0


@dataclass
class _Run:
    """What LIMIT-001's steps read of a run."""

    port: int
    request_id_key: str = "x-request-id"
    liveness: str = HEALTH
    options: _Options = field(default_factory=_Options)

    def new_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.max_send_message_length", -1)]
        )

    def open_h2(self) -> H2Client:
        endpoint = Endpoint(f"127.0.0.1:{self.port}", Transport.H2C)
        return H2Client.open(endpoint, "127.0.0.1", self.port, 3.0)

    def map(self, fn: Callable[[T], U], items: Iterable[T]) -> list[U]:
        todo = list(items)
        with futures.ThreadPoolExecutor(len(todo)) as pool:
            return list(pool.map(fn, todo))


def _serve(sick_once: bool) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(8), handlers=[_Service(sick_once)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


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
