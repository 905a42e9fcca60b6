"""A grpc-js server with @grpc/reflection, a third-party Node service, judged correctly.

``tests/grpcjs/server.cjs`` is a small Claims service written the way the grpc-js examples
teach: TLS from a trustme CA (ECDSA P-256 leaf), bearer tokens checked in each handler,
grpc.health.v1 served, and server reflection added with ``@grpc/reflection`` (the pinned
version in ``targets/node/package.json``), which answers on both the v1 and the v1alpha
path, to anyone. Node's defaults decide the rest. The test asserts what the catalogue's
rows give for that:

* REFL-001 FAIL: reflection lists the services to a caller without credentials, on v1 and
  on v1alpha alike (``environment`` is production by default);
* REFL-002 PASS: no channelz or CSDS (grpc-js registers neither unless asked), health
  serving ``""`` and NOT_FOUND for an unknown name, and the services reflection lists are
  the descriptor set's and health;
* transport: TLS 1.2 and 1.3 only (TLS-001, TLS-002 PASS), ALPN h2 (TLS-005 PASS),
  Node's default cipher list, which keeps CBC suites for TLS 1.2 (TLS-003 FAIL) but only
  ECDHE ones with an ECDSA key (TLS-004 PASS), OpenSSL 3's hygiene (TLS-006 PASS, each
  fact sslyze infers on a TLS 1.3 server measured at TLS 1.2); trustme's chain: a path by
  OpenSSL's rules without an OCSP pointer (CERT-001 WARN), the right names and EKU
  (CERT-002 PASS), a 1000-year leaf (CERT-003 FAIL).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from conftest import control_statuses
from harness.spawn import await_line
from targets.node_reference import NODE_DIR, NodeUnavailable, ensure_installed

HERE = Path(__file__).parent / "grpcjs"
PROTO = HERE / "claims.proto"
GET = "/acme.claims.v1.Claims/GetClaim"
LIST = "/acme.claims.v1.Claims/ListClaims"
V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

pytestmark = [pytest.mark.slow]
_LISTENING = re.compile(r"LISTENING (\d+)")


@dataclass(frozen=True)
class Claims:
    """The running server: its port, the CA that issued its certificate, the callers' tokens."""

    port: int
    ca: Path
    tokens: dict[str, Path]


@pytest.fixture(scope="module")
def claims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Claims]:
    """The Claims server on 127.0.0.1, stopped (its standard input closed) at teardown."""
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH")
    try:
        ensure_installed(NODE_DIR)
    except NodeUnavailable as exc:
        pytest.skip(str(exc))
    out = tmp_path_factory.mktemp("grpcjs")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.private_key_pem.write_to_path(str(out / "server-key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(out / "server.pem"))
    ca.cert_pem.write_to_path(str(out / "ca.pem"))
    tokens = {"reader": "reader-t0k3n", "clerk": "clerk-t0k3n"}
    (out / "config.json").write_text(
        json.dumps(
            {
                "cert": str(out / "server.pem"),
                "key": str(out / "server-key.pem"),
                "tokens": {t: who for who, t in tokens.items()},
            }
        )
    )
    env = {"PATH": os.environ["PATH"], "NODE_PATH": str(NODE_DIR / "node_modules")}
    process = subprocess.Popen(
        ["node", str(HERE / "server.cjs"), str(out / "config.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        port = int(await_line(process, _LISTENING, 30).group(1))
        files = {}
        for who, token in tokens.items():
            files[who] = out / f"{who}.token"
            files[who].write_text(token)
        yield Claims(port, out / "ca.pem", files)
    finally:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.close()
        process.stdout.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def write_config(directory: Path, claims: Claims) -> Path:
    """The user's hipaa.toml: descriptors, the private CA, two principals and the matrix."""
    lines = [
        "[schema]",
        f"proto_files = [{json.dumps(str(PROTO))}]",
        f"proto_paths = [{json.dumps(str(HERE))}]",
        "[schema.request_templates]",
        f'"{GET}" = {json.dumps(json.dumps({"claim_id": "c-100"}))}',
        f'"{LIST}" = {json.dumps(json.dumps({"member_id": "m-1"}))}',
        "[tls]",
        f"ca_bundle = {json.dumps(str(claims.ca))}",
        'server_name = "localhost"',
        "require_ocsp = false",
        "[auth.principals.least-privileged]",
        f"token_file = {json.dumps(str(claims.tokens['clerk']))}",
        "[auth.principals.admin]",
        f"token_file = {json.dumps(str(claims.tokens['reader']))}",
        "[auth.rbac_matrix]",
        f'"{GET}" = ["admin", "least-privileged"]',
        f'"{LIST}" = ["admin", "least-privileged"]',
    ]
    path = directory / "claims-hipaa.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def judge(pytester: pytest.Pytester, claims: Claims, config: Path, only: str) -> dict[str, str]:
    """Run the suites selected by ``only`` (``-k``) against the server; a report in ``report/``."""
    return control_statuses(
        pytester,
        f"--hipaa-target=127.0.0.1:{claims.port}",
        f"--hipaa-config={config}",
        "--hipaa-call-timeout=5",
        f"--hipaa-report={pytester.path / 'report'}",
        "-k",
        only,
    )


def observations(pytester: pytest.Pytester, control: str) -> list[dict[str, str]]:
    """The observations the last run's report holds for ``control``."""
    results = json.loads((pytester.path / "report" / "results.json").read_text())
    found = next(c for c in results["controls"] if c["id"] == control)
    return list(found["observations"])


def test_reflection_on_both_paths_is_open_to_the_unauthenticated(pytester, claims, tmp_path):
    config = write_config(tmp_path, claims)
    statuses = judge(pytester, claims, config, "REFL")
    assert statuses["REFL-001"] == "FAIL"
    assert statuses["REFL-002"] == "PASS"
    failed = {
        (o["probe"].split()[1], o["ref"])
        for o in observations(pytester, "REFL-001")
        if o["status"] == "FAIL" and "acme.claims.v1.Claims" in o["observed"]
    }
    # Both paths disclose the service, without credentials (a) and with a token (b).
    assert failed == {("v1", "a"), ("v1", "b"), ("v1alpha", "a"), ("v1alpha", "b")}
    listed = {o["ref"]: o for o in observations(pytester, "REFL-002")}["services"]
    assert (listed["observed"], listed["status"]) == ("none undeclared", "PASS")


def test_transport_facts_of_nodes_defaults(pytester, claims, tmp_path):
    config = write_config(tmp_path, claims)
    statuses = judge(pytester, claims, config, "TLS or CERT")
    assert statuses["TLS-001"] == "PASS"  # Node's floor is TLS 1.2
    assert statuses["TLS-002"] == "PASS"  # TLS 1.3 offered
    assert statuses["TLS-003"] == "FAIL"  # ECDHE-ECDSA-AES*-SHA (CBC) in Node's default list
    assert statuses["TLS-004"] == "PASS"  # an ECDSA key: every TLS 1.2 suite is ECDHE
    assert statuses["TLS-005"] == "PASS"  # grpc-js selects h2
    assert statuses["TLS-006"] == "PASS"  # OpenSSL 3: EMS, no client renegotiation, SCSV
    measured = {o["ref"]: o["observed"] for o in observations(pytester, "TLS-006")}
    for ref in ("heartbleed", "ccs", "fallback", "ems"):  # each measured at TLS 1.2
        assert "TLS 1.2" in measured[ref], ref
    assert statuses["CERT-001"] == "WARN"  # the path holds; no OCSP pointer (not required)
    assert statuses["CERT-002"] == "PASS"  # SANs localhost and 127.0.0.1, serverAuth EKU
    assert statuses["CERT-003"] == "FAIL"  # trustme's leaves live 1000 years
