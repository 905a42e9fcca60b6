"""KEY-001 end to end: JWKS documents served over HTTP on 127.0.0.1, one flaw at a time.

The judge alone, on recorded documents, is in ``tests/checks/test_key.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import closed_port
from harness.catalogue import Severity
from harness.checks import run_check
from harness.checks.key import thumbprint
from harness.config import Config
from harness.outcome import Outcome, Status
from harness.run import Run, RunOptions
from harness.target import parse_target
from targets.issuer_http import IssuerEndpoint
from tests.checks.recorded import ec_jwk, rsa_jwk


@pytest.fixture(scope="module")
def grpc_port() -> Iterator[int]:
    """Any cleartext gRPC server: KEY-001 never calls it, but a run needs a target."""
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


@pytest.fixture
def judge(grpc_port: int, tmp_path: Path) -> Iterator[Callable[..., Outcome]]:
    """Publish a JWKS, run KEY-001 with ``auth`` settings (and more) against it.

    Unless a test says otherwise, keys are remembered in a fresh ``evidence.history_dir``
    and held to a 90-day rotation, so that every probe runs.
    """
    endpoints: list[IssuerEndpoint] = []

    def run_with(keys: list[dict[str, Any]] | None, **config: Any) -> Outcome:
        if keys is not None:
            endpoints.append(IssuerEndpoint("https://issuer.test", {"keys": keys}))
            config.setdefault("auth", {}).setdefault("jwks_uri", endpoints[-1].jwks_uri)
        config.setdefault("auth", {}).setdefault("key_rotation_days", 90)
        config.setdefault("evidence", {"history_dir": str(tmp_path / "history")})
        run = Run.open(parse_target(f"127.0.0.1:{grpc_port}"), Config(config), RunOptions())
        try:
            return run_check("KEY-001", run)
        finally:
            run.close()

    yield run_with
    for endpoint in endpoints:
        endpoint.stop()


def by_probe(outcome: Outcome) -> dict[str, Status]:
    return {p.id: p.status for p in outcome.probes}


def test_public_strong_distinct_keys_pass(judge):
    outcome = judge([ec_jwk(kid="a", alg="ES256"), rsa_jwk(2048, kid="b", alg="RS256")])
    assert outcome.status is Status.PASS, outcome.summary
    probes = by_probe(outcome)
    # A first run with this history shows nothing about rotation: that probe waits.
    assert probes.pop("KEY-001(rotation)") is Status.SKIP
    assert all(status is Status.PASS for status in probes.values()), outcome.probes


@pytest.mark.parametrize(
    ("key", "severity", "why"),
    [
        (ec_jwk(kid="a", alg="ES256", d="AAAA"), Severity.CRITICAL, "private key members: d"),
        (rsa_jwk(2048, private=True, kid="a", alg="RS256"), Severity.CRITICAL, "d, p, q"),
        ({"kty": "oct", "k": "c2VjcmV0", "kid": "a", "alg": "HS256"}, Severity.CRITICAL, "k"),
        (rsa_jwk(1024, kid="a", alg="RS256"), Severity.MEDIUM, "RSA modulus of 1024 bits"),
        (ec_jwk(ec.SECP256K1(), kid="a", alg="ES256K"), Severity.MEDIUM, "secp256k1"),
        (ec_jwk(kid="a"), Severity.MEDIUM, "no alg declared"),
    ],
    ids=["ec-d", "rsa-private", "oct", "rsa-1024", "secp256k1", "no-alg"],
)
def test_each_flawed_key_fails_with_its_severity(judge, key, severity, why):
    outcome = judge([ec_jwk(kid="good", alg="ES256"), key])
    assert outcome.status is Status.FAIL
    assert outcome.severity is severity
    flawed = [o for o in outcome.observations if o.status is Status.FAIL]
    assert len(flawed) == 1, flawed
    assert why in flawed[0].observed
    assert key.get("d", "no-d") not in outcome.summary  # private values never recorded


def test_repeated_kid_fails(judge):
    outcome = judge([ec_jwk(kid="k1", alg="ES256"), ec_jwk(kid="k1", alg="ES256")])
    assert outcome.status is Status.FAIL
    assert by_probe(outcome)["KEY-001(kid)"] is Status.FAIL


def test_rotation_judged_from_history(judge, tmp_path: Path):
    old = ec_jwk(kid="old", alg="ES256")
    seen = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=200)).isoformat()
    (tmp_path / "jwks-keys.json").write_text(json.dumps({thumbprint(old): seen}))
    settings = {"evidence": {"history_dir": str(tmp_path)}}
    stale = judge([old], auth={"key_rotation_days": 90}, **settings)
    assert stale.status is Status.FAIL
    assert stale.severity is Severity.LOW
    assert "first seen 200 day(s) ago" in stale.summary
    rotated = judge(
        [old, ec_jwk(kid="new", alg="ES256")], auth={"key_rotation_days": 90}, **settings
    )
    assert rotated.status is Status.PASS, rotated.summary
    assert len(json.loads((tmp_path / "jwks-keys.json").read_text())) == 2


def test_jwks_found_through_openid_discovery(judge):
    endpoint = IssuerEndpoint("https://issuer.test", {"keys": [ec_jwk(kid="a", alg="ES256")]})
    try:
        outcome = judge(None, auth={"issuer": endpoint.base})
    finally:
        endpoint.stop()
    assert outcome.status is Status.PASS, outcome.summary
    assert outcome.observations[0].probe.startswith(endpoint.jwks_uri)


def test_unreachable_or_garbage_jwks_is_inconclusive_in_one_line(judge, tcp_server):
    port = closed_port()
    down = judge(None, auth={"jwks_uri": f"http://127.0.0.1:{port}/jwks.json"})
    assert down.status is Status.INCONCLUSIVE
    assert "not fetched" in down.summary

    def html(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n<html>")

    garbage = tcp_server(html)
    bad = judge(None, auth={"jwks_uri": f"http://127.0.0.1:{garbage}/jwks.json"})
    assert bad.status is Status.INCONCLUSIVE
    assert "not JSON" in bad.summary
    assert "\n" not in down.summary + bad.summary


def test_no_source_is_a_skip(judge):
    assert judge(None).status is Status.SKIP


def test_without_history_the_rotation_probe_does_not_run(judge):
    outcome = judge([ec_jwk(kid="a", alg="ES256")], evidence={})
    assert outcome.status is Status.PASS
    assert by_probe(outcome)["KEY-001(rotation)"] is Status.SKIP
    (rotation,) = (p for p in outcome.probes if p.id == "KEY-001(rotation)")
    assert rotation.reason == "needs evidence.history_dir"


def test_the_jwks_file_is_judged_before_the_published_uri(judge, tmp_path: Path):
    """One order for KEY-001 and AUTHN-002: auth.jwks_file, then auth.jwks_uri, then discovery.

    The operators' copy carries a private member the published one does not: the copy is
    what KEY-001 judges (it used to fetch the URI first, and AUTHN-002 read the file first).
    """
    copy = tmp_path / "jwks.json"
    copy.write_text(json.dumps({"keys": [ec_jwk(kid="a", alg="ES256", d="AAAA")]}))
    outcome = judge([ec_jwk(kid="a", alg="ES256")], auth={"jwks_file": copy})
    assert (outcome.status, outcome.severity) == (Status.FAIL, Severity.CRITICAL)
    assert outcome.observations[0].probe.startswith("auth.jwks_file jwks.json")
