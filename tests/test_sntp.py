"""The bundled targets' loopback SNTP server, measured by the harness's own SNTP client."""

from __future__ import annotations

import socket
import time

import pytest

from harness.checks import audit as checks
from targets.sntp import SntpServer, answer


@pytest.fixture
def server():
    running = SntpServer()
    yield running
    running.stop()


def test_the_harness_bounds_its_offset_against_the_host_clock(server):
    host, _, port = server.address.partition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    offset, problem = checks.measure_offset(server.address)
    assert problem == ""
    # The server serves the harness's own clock: the offset is within the exchange's bound.
    assert abs(offset.offset_s) <= offset.uncertainty_s + 0.05
    assert offset.uncertainty_s < 0.5


def test_only_client_requests_are_answered():
    request = checks.sntp_request(time.time())
    reply = answer(request, 100.0, 100.001)
    assert reply is not None
    assert checks.sntp_offset(reply, request, time.time(), time.time()) is not None
    assert (reply[0] & 7, reply[0] >> 6, reply[1]) == (4, 0, 10)  # server, no alarm, stratum
    assert reply[24:32] == request[40:48]  # the client's transmit time, echoed
    server_packet = bytes([0x24]) + request[1:]
    assert answer(server_packet, 100.0, 100.0) is None
    assert answer(request[:47], 100.0, 100.0) is None


def test_a_stopped_server_answers_nothing():
    running = SntpServer()
    address = running.address
    running.stop()
    offset, problem = checks.measure_offset(address, timeout_s=0.3)
    assert offset is None
    assert problem


def test_garbage_does_not_stop_it(server):
    host, _, port = server.address.partition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00" * 3, (host, int(port)))
        sock.sendto(b"\xff" * 600, (host, int(port)))
    offset, problem = checks.measure_offset(server.address)
    assert (offset is not None, problem) == (True, "")
