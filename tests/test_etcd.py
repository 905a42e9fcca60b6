"""etcd 3.4 from Debian's packages: a third-party gRPC server, judged as a correct harness must.

etcd (Go 1.19, grpc-go) is started on 127.0.0.1 in five modes, each the way its operators
run it: plaintext, TLS only, mutual TLS (``--client-cert-auth``), TLS with a strict
``--cipher-suites`` list, and TLS with authentication (users and roles, ``etcdctl auth
enable``). Its certificate chain is a private one as ``openssl req -x509`` and ``openssl
x509 -req`` make it (CAs without a key-usage extension, an intermediate CA): what TLS
clients accept and the WebPKI profile does not. Each test asserts the verdicts the
catalogue's rows give for what etcd does:

* plaintext: cleartext HTTP/2 is served (TLS-001 FAIL), nothing else TLS to judge (SKIP);
* TLS only: Go 1.19's default suites include CBC (TLS-003 FAIL) and static RSA key
  exchange (TLS-004 FAIL), and Go before 1.21 never negotiates the extended master secret
  on TLS 1.2 (TLS-006 FAIL: sslyze answers "supported" untested when TLS 1.3 is on); the
  private chain validates (CERT-001 PASS); reflection is not registered (REFL-001 PASS); a
  client certificate is not required although the config claims mTLS (MTLS-001 FAIL);
* mTLS: the client certificate is required and forged ones are refused (MTLS-001/002 PASS);
* strict suites: the six ECDHE AEAD suites only (TLS-003, TLS-004 PASS), EMS still missing;
* auth: etcd's RBAC through its own token header (``token: <t>``, ``auth.header``): a user
  with read on a prefix may Range but not Put, a user without roles neither (AUTHZ-001 PASS);
  sent as ``authorization: Bearer <t>`` every token is "invalid", and AUTHZ-001 FAILs. The
  credential variants go in that header too, and AUTHN-001 FAILs on what etcd does with
  them: no token is INVALID_ARGUMENT ("user name is empty"), not UNAUTHENTICATED, and of
  two ``token`` entries the first wins, so an admin's before a reader's writes.

Tokens come from etcd's Authenticate RPC. The descriptors are a hand-written subset of
etcd's API (package ``etcdserverpb``: the fields used here, by their numbers on the wire).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from conftest import control_statuses

ETCD, ETCDCTL = shutil.which("etcd"), shutil.which("etcdctl")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        ETCD is None or ETCDCTL is None,
        reason="etcd is not installed: .ci/run installs Debian's etcd-server and etcd-client",
    ),
]

#: The part of etcd's API the tests call (etcdserverpb, field numbers as etcd sends them).
ETCD_PROTO = """
syntax = "proto3";
package etcdserverpb;

service KV {
  rpc Range(RangeRequest) returns (RangeResponse) {}
  rpc Put(PutRequest) returns (PutResponse) {}
}
service Auth {
  rpc Authenticate(AuthenticateRequest) returns (AuthenticateResponse) {}
}

message ResponseHeader {
  uint64 cluster_id = 1;
  uint64 member_id = 2;
  int64 revision = 3;
  uint64 raft_term = 4;
}
message KeyValue {
  bytes key = 1;
  int64 create_revision = 2;
  int64 mod_revision = 3;
  int64 version = 4;
  bytes value = 5;
  int64 lease = 6;
}
message RangeRequest {
  bytes key = 1;
  bytes range_end = 2;
  int64 limit = 3;
}
message RangeResponse {
  ResponseHeader header = 1;
  repeated KeyValue kvs = 2;
  bool more = 3;
  int64 count = 4;
}
message PutRequest {
  bytes key = 1;
  bytes value = 2;
}
message PutResponse {
  ResponseHeader header = 1;
}
message AuthenticateRequest {
  string name = 1;
  string password = 2;
}
message AuthenticateResponse {
  ResponseHeader header = 1;
  string token = 2;
}
"""
RANGE, PUT = "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put"
AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
KEY = base64.b64encode(b"hipaa/record-1").decode()
#: Go's TLS 1.2 suites etcd accepts under --cipher-suites: the ECDHE AEAD ones (RSA key).
STRICT_SUITES = (
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,"
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
)
TRANSPORT = "TLS or CERT or MTLS"


# -- a private PKI, as the openssl command line makes it ---------------------------------

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    """The files etcd and the harness are given, and etcd's API subset (``etcd.proto``)."""

    directory: Path
    root: Path  # the anchor (tls.ca_bundle, --trusted-ca-file)
    server: Path  # etcd's leaf and the intermediate
    server_key: Path
    client: Path  # the harness's client certificate and the intermediate
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    key: Key,
    issuer: tuple[x509.Certificate, Key] | None,
    extensions: list[tuple[x509.ExtensionType, bool]],
    days: int = 60,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _leaf_extensions(
    names: list[x509.GeneralName], usages: list[x509.ObjectIdentifier]
) -> list[tuple[x509.ExtensionType, bool]]:
    return [(x509.SubjectAlternativeName(names), False), (x509.ExtendedKeyUsage(usages), False)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Root and intermediate CAs with basicConstraints only; an RSA server leaf; a client."""
    out = tmp_path_factory.mktemp("etcd-pki")
    ca_only: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=None), True)
    ]
    root_key = ec.generate_private_key(ec.SECP256R1())
    int_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue("etcd-root-ca", root_key, None, ca_only, days=3650)
    inter = _issue("etcd-intermediate-ca", int_key, (root, root_key), ca_only, days=1000)
    ocsp = x509.AccessDescription(
        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://ocsp.invalid")
    )
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    server_ext = [
        *_leaf_extensions(sans, both),
        (x509.AuthorityInformationAccess([ocsp]), False),
    ]
    server = _issue("etcd", server_key, (inter, int_key), server_ext)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_ext = _leaf_extensions(
        [x509.DNSName("hipaa-harness")], [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    client = _issue("hipaa-harness", client_key, (inter, int_key), client_ext)
    files = {
        "root.pem": _pem(root),
        "server.pem": _pem(server, inter),
        "server-key.pem": _key_pem(server_key),
        "client.pem": _pem(client, inter),
        "client-key.pem": _key_pem(client_key),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "etcd.proto").write_text(ETCD_PROTO)
    return Pki(out, *(out / n for n in files))


# -- etcd on 127.0.0.1 ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Etcd:
    """One running etcd: its client port and how to reach it."""

    port: int
    pki: Pki
    tls: bool

    def channel(self, *, client_cert: bool = False) -> grpc.Channel:
        """A channel to it (TLS trusting the root; the client certificate if asked)."""
        target = f"127.0.0.1:{self.port}"
        if not self.tls:
            return grpc.insecure_channel(target)
        creds = grpc.ssl_channel_credentials(
            self.pki.root.read_bytes(),
            self.pki.client_key.read_bytes() if client_cert else None,
            self.pki.client.read_bytes() if client_cert else None,
        )
        options = (("grpc.ssl_target_name_override", "localhost"),)
        return grpc.secure_channel(target, creds, options)

    def etcdctl(self, *args: str) -> str:
        """Run ``etcdctl`` against it."""
        scheme = "https" if self.tls else "http"
        flags = [f"--endpoints={scheme}://127.0.0.1:{self.port}"]
        if self.tls:
            flags += [
                f"--cacert={self.pki.root}",
                f"--cert={self.pki.client}",
                f"--key={self.pki.client_key}",
            ]
        assert ETCDCTL is not None
        done = subprocess.run(
            [ETCDCTL, *flags, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, f"etcdctl {args[0]}: {done.stderr.strip()}"
        return done.stdout

    def authenticate(self, name: str, password: str) -> str:
        """A token from etcd's Authenticate RPC (a simple token: opaque)."""
        from google.protobuf import json_format

        from harness.channels import invoke
        from harness.descriptors import compile_protos

        catalogue = compile_protos([self.pki.directory / "etcd.proto"], [self.pki.directory])
        body = catalogue.request_bytes(
            AUTHENTICATE, json.dumps({"name": name, "password": password})
        )
        with self.channel() as channel:
            result = invoke(channel, AUTHENTICATE, [body], timeout=10)
        assert result.code == grpc.StatusCode.OK, result.summary()
        response = catalogue.message_class("etcdserverpb.AuthenticateResponse")()
        response.ParseFromString(result.responses[0])
        return str(json_format.MessageToDict(response)["token"])


def _healthy(server: Etcd) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with server.channel(client_cert=True) as channel, contextlib.suppress(grpc.RpcError):
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
    return False


@pytest.fixture
def start_etcd(tmp_path: Path, pki: Pki) -> Iterator[Callable[..., Etcd]]:
    """Start etcd on free 127.0.0.1 ports with extra flags; each is stopped at teardown.

    ``start(*flags)`` serves TLS with the private chain, ``start(tls=False)`` plaintext.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(*flags: str, tls: bool = True) -> Etcd:
        client, peer = _free_port(), _free_port()
        url = f"{'https' if tls else 'http'}://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        certs = [f"--cert-file={pki.server}", f"--key-file={pki.server_key}"] if tls else []
        log = tmp_path / f"etcd-{client}.log"
        assert ETCD is not None
        command = [
            ETCD,
            "--name=hipaa",
            f"--data-dir={tmp_path / f'data-{client}'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=hipaa={peer_url}",
            "--logger=zap",
            "--log-outputs=stderr",
            *certs,
            *flags,
        ]
        with log.open("wb") as sink:
            procs.append(subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT))
        server = Etcd(client, pki, tls)
        deadline = time.monotonic() + 20
        while not _healthy(server):
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"etcd did not become healthy: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        return server

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- the harness against it ------------------------------------------------------------------


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def write_config(directory: Path, tables: dict[str, dict[str, object]]) -> Path:
    """A hipaa.toml with these tables (method paths quoted as keys)."""
    lines = []
    for table, keys in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{json.dumps(k) if '/' in k else k} = {_toml(v)}" for k, v in keys.items()]
    path = directory / "etcd-hipaa.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def schema(pki: Pki) -> dict[str, dict[str, object]]:
    """The descriptors and request templates every mode shares."""
    value = base64.b64encode(b"v").decode()
    return {
        "schema": {
            "proto_files": [pki.directory / "etcd.proto"],
            "proto_paths": [pki.directory],
            "public_methods": [AUTHENTICATE],
            "read_methods": [RANGE],
        },
        "schema.request_templates": {
            RANGE: json.dumps({"key": KEY}),
            PUT: json.dumps({"key": KEY, "value": value}),
        },
    }


def tls_tables(pki: Pki, *, s2s: bool = False) -> dict[str, dict[str, object]]:
    """The private root, the server name, and the claim that the endpoint is mTLS."""
    mtls: dict[str, object] = {
        "required": True,
        "client_cert": pki.client,
        "client_key": pki.client_key,
    }
    if s2s:
        mtls["s2s_methods"] = [RANGE]
    return {"tls": {"ca_bundle": pki.root, "server_name": "localhost"}, "mtls": mtls}


def judge(pytester: pytest.Pytester, server: Etcd, config: Path, only: str) -> dict[str, str]:
    """Run the harness's suites selected by ``only`` (``-k``) against ``server``.

    Calls time out after 3 s: etcd holds a simple token whose index is ahead of its raft
    log until the deadline (AUTHN-001's mutated tokens make some), and answers locally in
    milliseconds otherwise.
    """
    return control_statuses(
        pytester,
        f"--hipaa-target=127.0.0.1:{server.port}",
        f"--hipaa-config={config}",
        "--hipaa-call-timeout=3",
        "-k",
        only,
    )


# -- the modes ------------------------------------------------------------------------------


def test_plaintext_etcd_serves_cleartext_http2(pytester, start_etcd, pki, tmp_path):
    server = start_etcd(tls=False)
    config = write_config(tmp_path, schema(pki))
    statuses = judge(pytester, server, config, "TLS or CERT or REFL_001")
    assert statuses["TLS-001"] == "FAIL"  # gRPC over cleartext h2c
    for control in ("TLS-002", "TLS-003", "TLS-004", "TLS-006", "CERT-001", "CERT-003"):
        assert statuses[control] == "SKIP", control
    # No principal: the least-privileged probe cannot run (its PASS is under auth, below).
    assert statuses["REFL-001"] == "INCONCLUSIVE"


def test_tls_etcd_with_go_defaults(pytester, start_etcd, pki, tmp_path):
    server = start_etcd()
    config = write_config(tmp_path, {**schema(pki), **tls_tables(pki)})
    statuses = judge(pytester, server, config, TRANSPORT)
    assert statuses["TLS-001"] == "PASS"  # etcd sets TLS 1.2 as its floor
    assert statuses["TLS-002"] == "PASS"
    assert statuses["TLS-003"] == "FAIL"  # ECDHE-RSA-AES-CBC-SHA among Go 1.19's defaults
    assert statuses["TLS-004"] == "FAIL"  # and static RSA key exchange (an RSA certificate)
    assert statuses["TLS-006"] == "FAIL"  # no extended master secret on TLS 1.2 (Go < 1.21)
    assert statuses["CERT-001"] == "PASS"  # the private chain, intermediate and all
    assert statuses["CERT-002"] == "PASS"
    assert statuses["CERT-003"] == "PASS"
    assert statuses["MTLS-001"] == "FAIL"  # mtls.required, but no client certificate asked
    assert statuses["MTLS-002"] == "FAIL"  # so a forged one is never checked


def test_mtls_etcd_requires_the_client_certificate(pytester, start_etcd, pki, tmp_path):
    server = start_etcd("--client-cert-auth", f"--trusted-ca-file={pki.root}")
    config = write_config(tmp_path, {**schema(pki), **tls_tables(pki, s2s=True)})
    statuses = judge(pytester, server, config, "MTLS or TLS_006 or CERT_001")
    assert statuses["MTLS-001"] == "PASS"
    assert statuses["MTLS-002"] == "PASS"  # the look-alike and the rogue CA are refused
    assert statuses["TLS-006"] == "FAIL"  # EMS measured with the client certificate
    assert statuses["CERT-001"] == "PASS"


def test_etcd_with_strict_cipher_suites(pytester, start_etcd, pki, tmp_path):
    server = start_etcd(f"--cipher-suites={STRICT_SUITES}")
    config = write_config(tmp_path, {**schema(pki), **tls_tables(pki)})
    statuses = judge(pytester, server, config, "TLS_003 or TLS_004 or TLS_006")
    assert statuses["TLS-003"] == "PASS"
    assert statuses["TLS-004"] == "PASS"
    assert statuses["TLS-006"] == "FAIL"  # the suites do not bring EMS


def _enable_auth(server: Etcd, directory: Path) -> dict[str, Path]:
    """root, a reader (read on hipaa/*) and a user without roles; auth on; their tokens."""
    passwords = {"root": "root-pw", "reader": "reader-pw", "nobody": "nobody-pw"}
    for user, password in passwords.items():
        server.etcdctl("user", "add", f"{user}:{password}")
    server.etcdctl("role", "add", "reader")
    server.etcdctl("role", "grant-permission", "reader", "read", "hipaa/", "--prefix=true")
    server.etcdctl("user", "grant-role", "reader", "reader")
    server.etcdctl("auth", "enable")
    tokens = {}
    for user, password in passwords.items():
        tokens[user] = directory / f"{user}.token"
        tokens[user].write_text(server.authenticate(user, password))
    return tokens


def _auth_tables(tokens: dict[str, Path], **where: str) -> dict[str, dict[str, object]]:
    names = {"admin": "root", "least-privileged": "reader", "no-roles": "nobody"}
    tables: dict[str, dict[str, object]] = {"auth": dict(where)}
    tables |= {f"auth.principals.{p}": {"token_file": tokens[u]} for p, u in names.items()}
    tables["auth.rbac_matrix"] = {RANGE: ["admin", "least-privileged"], PUT: ["admin"]}
    tables["safety"] = {"allow_mutations": True}  # the test's own etcd: hipaa/record-1
    return tables


def test_etcd_rbac_through_its_own_token_header(pytester, start_etcd, pki, tmp_path):
    server = start_etcd("--auth-token-ttl=600")
    tokens = _enable_auth(server, tmp_path)
    base = {**schema(pki), "tls": tls_tables(pki)["tls"]}
    config = write_config(tmp_path, {**base, **_auth_tables(tokens, header="token", scheme="")})
    statuses = judge(pytester, server, config, "AUTHZ_001 or REFL_001 or AUTHN_001")
    # reader: Range allowed, Put PERMISSION_DENIED; nobody: both PERMISSION_DENIED; root: OK.
    assert statuses["AUTHZ-001"] == "PASS"
    assert statuses["REFL-001"] == "PASS"  # no reflection service: UNIMPLEMENTED to all
    # No token: INVALID_ARGUMENT; "token: <admin>, token: <reader>": Put succeeds (critical).
    assert statuses["AUTHN-001"] == "FAIL"
    # The same tokens as authorization: Bearer <t>: etcd answers "invalid auth token"
    # (UNAUTHENTICATED) to every call, the allowed ones too.
    config = write_config(tmp_path, {**base, **_auth_tables(tokens)})
    assert judge(pytester, server, config, "AUTHZ_001")["AUTHZ-001"] == "FAIL"
