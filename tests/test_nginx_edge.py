"""Debian's nginx in front of the reference (``spawn:reference+nginx-edge``), over real TLS.

nginx terminates TLS with the service's certificate, requires a client certificate, and
re-encrypts to the service presenting the harness's identity; it answers some requests
itself with an HTTP status and no ``grpc-status``. These tests record what grpcio makes of
each of them (the texts ``tests/checks/edges.py`` holds for the judges' unit tests) and
that the harness's oracles tell them apart from the service's answers: a duplicate
``authorization`` header (400), no client certificate (400), a body over
``client_max_body_size`` (413), a burst over the per-identity ``limit_req`` (429), and a
header field over ``large_client_header_buffers`` (GOAWAY ENHANCE_YOUR_CALM).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from conftest import open_run
from harness.channels import CallResult, invoke
from harness.checks.authn import judge_basic
from harness.engine import judge, pressure
from harness.oracles import EDGE_TOO_LARGE, calmed, edge_answered, edge_refusal, unreached
from harness.outcome import Status
from harness.plans.calls import Call
from harness.run import Run
from targets import nginx, serve
from targets.reference import schema, server
from tests.checks.edges import CALMED, WORDING

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(nginx.binary() is None, reason=nginx.MISSING),
]

GET = f"/{schema.SERVICE}/GetPatient"
C = grpc.StatusCode
GRPCIO = WORDING["grpcio"]


def lost(result: CallResult) -> bool:
    """grpcio's record of nginx's answer whose status it lost: no grpc-status, no message."""
    return result.statusless and not result.responses and "Stream removed" in result.details


def get(pid: str = "p-0001", pad: int = 0) -> bytes:
    msg = schema.message("GetPatientRequest")(patient_id=pid + "x" * pad)
    return msg.SerializeToString()


@pytest.fixture(scope="module")
def edge_run() -> Iterator[Run]:
    run = open_run("spawn:reference+nginx-edge")
    yield run
    run.close()


def _call(run: Run, *extra: tuple[str, str], request: bytes = b"") -> CallResult:
    return run.call(
        GET, [request or get()], principal=run.principal("clinician"), extra_metadata=extra
    )


def test_calls_reach_the_service_through_nginx(edge_run):
    ok = _call(edge_run)
    assert ok.code == C.OK
    assert len(ok.responses) == 1
    assert edge_refusal(ok) is None
    assert not unreached(ok)
    # The service's own refusal comes through as the service sent it.
    billing = edge_run.principal("billing")
    denied = edge_run.call(f"/{schema.SERVICE}/SearchPatients", principal=billing)
    assert denied.code == C.PERMISSION_DENIED
    assert edge_refusal(denied) is None
    # server_tokens off: nginx names itself, not its version.
    server_header = dict(ok.initial_metadata).get("server")
    assert server_header == "nginx"


def test_a_duplicate_authorization_header_is_nginxs_400(edge_run):
    admin = edge_run.principal("admin")
    assert admin is not None
    call = Call("V8 two authorization entries", GET, (get(),))
    for _ in range(5):
        result = _call(edge_run, *admin.metadata())
        # grpcio loses the status about one time in ten (nginx resets the request stream),
        # as INTERNAL or, when the call is sent as unary-stream, UNKNOWN: statusless.
        assert (result.code, result.details) == (C.INTERNAL, GRPCIO(400)) or lost(result)
        assert edge_refusal(result) in (400, None)
        assert edge_answered(result)
        assert unreached(result)
        assert judge_basic(call, result).status is Status.PASS


def test_no_client_certificate_is_nginxs_400(edge_run):
    channel = edge_run.new_channel(with_client_cert=False)
    try:
        result = edge_run.call(
            GET, [get()], principal=edge_run.principal("clinician"), channel=channel
        )
    finally:
        channel.close()
    assert (result.code, result.details) == (C.INTERNAL, GRPCIO(400)) or lost(result)
    assert edge_answered(result)


def test_the_service_judges_a_body_over_its_own_limit(edge_run):
    # nginx lets the service's limit + 1 MiB through (unbuffered, as gRPC streams it): the
    # service reads the frame's length and refuses first, RESOURCE_EXHAUSTED, its own.
    over = _call(edge_run, request=get(pad=server.MAX_RECV_BYTES + 2 * 1024 * 1024))
    assert over.code == C.RESOURCE_EXHAUSTED
    assert edge_refusal(over) is None


@pytest.fixture
def small_edge(edge_run, tmp_path) -> Iterator[int]:
    """A second nginx in front of the same service, with a 64 KiB body limit."""
    spawned = edge_run.spawned
    assert spawned is not None
    conf = (spawned.workdir / "nginx" / "nginx.conf").read_text()
    found = re.search(r"server 127\.0\.0\.1:(\d+);", conf)
    assert found is not None
    backend = int(found[1])
    w = spawned.workdir
    files = nginx.EdgeFiles(
        w / "edge" / "server.pem", w / "edge" / "server-key.pem", w / "ca.pem",
        w / "client.pem", w / "client-key.pem",
    )  # fmt: skip
    edge = nginx.NginxEdge(tmp_path, nginx.NginxSettings(64 * 1024, 100, 100), files, backend)
    try:
        yield edge.port
    finally:
        edge.stop()


def test_a_body_over_client_max_body_size_is_nginxs_413(edge_run, small_edge):
    endpoint = replace(edge_run.endpoint, address=f"127.0.0.1:{small_edge}")
    channel = edge_run.new_channel(endpoint)
    who = edge_run.principal("clinician")
    try:
        result = edge_run.call(GET, [get(pad=256 * 1024)], principal=who, channel=channel)
        fits = edge_run.call(GET, [get()], principal=who, channel=channel)
    finally:
        channel.close()
    assert (result.code, result.details) == (C.UNKNOWN, GRPCIO(413)) or lost(result)
    assert edge_refusal(result) in (EDGE_TOO_LARGE, None)  # None: grpcio lost it
    assert edge_answered(result)
    assert judge(result.code, result.details) == ""  # a size refusal, never a crash
    assert pressure(result) == ""
    assert fits.code == C.OK


def test_a_burst_over_limit_req_is_nginxs_429(edge_run):
    token = edge_run.principal("clinician")
    assert token is not None
    channel = edge_run.new_channel()

    def one(_: int) -> CallResult:
        return invoke(channel, GET, [get()], metadata=token.metadata(), timeout=10)

    try:
        with ThreadPoolExecutor(16) as pool:
            # nginx: twice the service's rate per second, and a burst as large
            results = list(pool.map(one, range(int(6 * server.RATE_RPS))))
    finally:
        channel.close()
    throttled = [r for r in results if edge_refusal(r) == 429]
    assert throttled, sorted({(r.code.name, r.details) for r in results})
    assert {(r.code, r.details) for r in throttled} == {(C.UNAVAILABLE, GRPCIO(429))}
    assert {pressure(r) for r in throttled} == {"throttled"}


def test_a_header_field_over_nginxs_buffers_ends_the_connection(edge_run):
    channel = edge_run.new_channel()
    try:
        result = edge_run.call(
            GET,
            [get()],
            principal=edge_run.principal("clinician"),
            channel=channel,
            extra_metadata=(("x-hipaa-probe", "h" * 20 * 1024),),
        )
    finally:
        channel.close()
    assert (result.code, result.details) == (C.UNAVAILABLE, CALMED)
    assert calmed(result)
    assert unreached(result)


def test_nginx_stops_with_the_target(tmp_path):
    run = open_run("spawn:reference+nginx-edge")
    spawned = run.spawned
    assert spawned is not None
    pid = int((spawned.workdir / "nginx" / "logs" / "nginx.pid").read_text())
    assert _alive(pid)
    run.close()
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_without_nginx_the_target_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(nginx, "binary", lambda: None)
    code = serve.main(["serve", "reference+nginx-edge", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"cannot start reference+nginx-edge: {nginx.MISSING}"]
    assert not (tmp_path / "hipaa.toml").exists()  # nothing was started


def test_the_config_is_nginxs_and_runs_as_the_current_user(tmp_path):
    files = nginx.EdgeFiles(
        *(tmp_path / n for n in ("s.pem", "s-key.pem", "ca.pem", "c.pem", "c-key.pem"))
    )
    text = nginx.config(nginx.NginxSettings(5 << 20, 100, 100), files, 4443, 5443)
    for directive in (
        "listen 127.0.0.1:4443 ssl http2;",
        "ssl_verify_client on;",
        f"ssl_client_certificate {tmp_path / 'ca.pem'};",
        "server 127.0.0.1:5443;",
        "grpc_pass grpcs://service;",
        f"grpc_ssl_certificate {tmp_path / 'c.pem'};",
        "grpc_ssl_verify on;",
        f"client_max_body_size {5 << 20};",
        "limit_req zone=per_identity burst=100 nodelay;",
        "limit_req_status 429;",
        "server_tokens off;",
    ):
        assert directive in text
    assert ("user " in text) is (os.geteuid() == 0)  # root: its workers stay root's user
