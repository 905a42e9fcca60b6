"""Starting the Node reference (``spawn:reference-node``): LabOrders on @grpc/grpc-js.

The service itself is JavaScript (``targets/node/``); this module is what its operators
would do around it: install its npm dependencies once (``npm ci``), make its PKI and its
issuer's RS256 key, publish the issuer's JWKS over HTTP on 127.0.0.1 (the service fetches
it, as real services do), mint the operators' tokens, start ``node server.js`` on a free
loopback port, and write the ``hipaa.toml`` they would hand to the harness. Who may do what
comes from ``targets/node/policy.json``, which the service reads too.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.spawn import await_line
from targets import operators
from targets.catalog import REFERENCE_NODE
from targets.issuer_http import IssuerEndpoint
from targets.operators import toml_text
from targets.pki import SERVER_NAMES, Issued, Pki
from targets.sntp import SntpServer

if TYPE_CHECKING:
    from targets.serve import Served

NODE_DIR = Path(__file__).resolve().parent / "node"
PACKAGE = "hipaagrpc.labs.v1"
SERVICE = f"{PACKAGE}.LabOrders"
TRAIL = f"{PACKAGE}.AuditTrail"
CLIENT_IDENTITY = "svc-harness.labs.hipaa.test"
#: TLS 1.3 suites and the TLS 1.2 ECDHE AEAD suites: grpc-js takes its list from this variable.
CIPHER_SUITES = ":".join(
    (
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
LEEWAY_S = 2
TOKEN_TTL_S = 900
READY_TIMEOUT_S = 20.0
NPM_TIMEOUT_S = 300.0
# What server.js, orders.js and store.js hold themselves to (the operators' documentation).
MAX_RECV_BYTES = 2 * 1024 * 1024
MAX_CONCURRENT_STREAMS = 64
MAX_PAGE_SIZE = 50
MAX_EXPORT = 25
MAX_CONCURRENT_EXPORTS = 2
RATE_RPS = 40
ALERT_BURST = 15
CACHE_TTL_S = 2
OWN_IDS = [1001, 1002]  # ordered by the physician
FOREIGN_IDS = [1041, 1042]  # ordered by another physician
SANDBOX_IDS = [1002, 1003]
#: Where each chained record keeps its sequence number and the previous record's hash.
CHAIN_SEQ = "extension.0.valueInteger"
CHAIN_PREV = "extension.1.valueString"


class NodeUnavailable(RuntimeError):
    """node or npm is missing, or the service's dependencies could not be installed."""


def policy() -> dict[str, Any]:
    """``targets/node/policy.json``: principals, method scopes, field allowlists."""
    data: dict[str, Any] = json.loads((NODE_DIR / "policy.json").read_text())
    return data


def ensure_installed(node_dir: Path = NODE_DIR) -> None:
    """Install the service's pinned npm dependencies once (``npm ci --omit=dev``).

    Raises:
        NodeUnavailable: node or npm is not on PATH, or ``npm ci`` failed (one line).
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise NodeUnavailable("spawn:reference-node needs node and npm on PATH (Node.js >= 20)")
    if _installed(node_dir):
        return
    try:
        done = subprocess.run(
            ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"],
            cwd=node_dir,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NodeUnavailable(
            f"npm ci in {node_dir} took over {NPM_TIMEOUT_S:g} s: is the npm registry reachable?"
        ) from None
    if done.returncode != 0:
        # npm's error code and message, not its stack or the pointer to its debug log.
        said = [
            ln.removeprefix("npm error").strip()
            for ln in done.stderr.splitlines()
            if ln.startswith("npm error")
            and not re.match(r"npm error\s+(at |syscall|errno|A complete log)", ln)
        ]
        why = "; ".join(said[:2])[:240] or f"exit {done.returncode}"
        raise NodeUnavailable(f"npm ci in {node_dir} failed (is the registry reachable?): {why}")


def _installed(node_dir: Path) -> bool:
    """Whether ``node_modules`` holds the versions ``package-lock.json`` pins (npm's own record)."""

    def versions(path: Path) -> dict[str, Any]:
        packages = json.loads(path.read_text()).get("packages", {})
        return {k: v.get("version") for k, v in packages.items() if k}

    try:
        return versions(node_dir / "node_modules" / ".package-lock.json") == versions(
            node_dir / "package-lock.json"
        )
    except (OSError, ValueError, AttributeError):
        return False


class RsaIssuer:
    """The lab's identity provider: one RS256 key, access tokens per RFC 9068."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = rsa.generate_private_key(65537, 2048)
        numbers = self._key.public_key().public_numbers()
        self._jwk = {"e": _b64uint(numbers.e), "kty": "RSA", "n": _b64uint(numbers.n)}
        thumbprint = json.dumps(self._jwk, separators=(",", ":"), sort_keys=True).encode()
        self.kid = _b64(hashlib.sha256(thumbprint).digest())  # RFC 7638

    def jwks(self, *, private: bool = False) -> dict[str, Any]:
        """The published key set: the public key only, unless ``private`` (a defect).

        ``private`` is what an issuer built with jose's ``exportJWK(privateKey)`` publishes:
        ``d``, ``p``, ``q``, ``dp``, ``dq`` and ``qi`` beside ``n`` and ``e``.
        """
        jwk = dict(self._jwk)
        if private:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._key, as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def public_pem(self) -> bytes:
        """The verification key, SubjectPublicKeyInfo PEM."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        """The signing key, PKCS#8 PEM (for the harness to mint its own test tokens)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def mint(self, principal: dict[str, Any], exp_in: int = TOKEN_TTL_S, **extra: Any) -> str:
        """An access token for a ``policy.json`` principal."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal["sub"],
            "scope": principal["scope"],
            "client_id": "lab-portal",
            "iat": now,
            "nbf": now,
            "exp": now + exp_in,
            "jti": str(uuid.uuid4()),
        }
        if principal.get("acr"):
            claims["acr"] = principal["acr"]
        if principal.get("amr"):
            claims["amr"] = list(principal["amr"])
        claims.update(extra)
        headers = {"kid": self.kid, "typ": "at+jwt"}
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def descriptor_set() -> bytes:
    """The FileDescriptorSet of ``lab_orders.proto`` with its imports and health.proto."""
    proto = NODE_DIR / "proto" / "lab_orders.proto"
    return operators.descriptor_set(proto, proto.parent).SerializeToString()


@dataclass(frozen=True)
class Facts:
    """What the launcher learnt while starting the service, for its config."""

    jwks_uri: str
    ntp_server: str
    first_event_id: str
    tokens: dict[str, str]
    edge: bool = False  # served through nginx (``+nginx-edge``): one more hop per byte


def _m(name: str, service: str = SERVICE) -> str:
    return f"/{service}/{name}"


def _allowlists(pol: dict[str, Any], fields: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in pol["principals"]:
        seen: set[str] = set()
        for scope in p["scope"].split():
            allowed = pol["fields"].get(scope, [])
            seen |= set(fields) if allowed == "*" else set(allowed)
        out[p["name"]] = sorted(seen)
    return out


def _templates(first_event_id: str) -> dict[str, object]:
    return {
        _m("GetLabOrder"): '{"orderId": 1001}',
        _m("ListLabOrders"): '{"pageSize": 5}',
        _m("UpdateLabOrder"): (
            '{"order": {"orderId": 1002, "clinicalIndication": "harness update"},'
            ' "updateMask": "clinicalIndication"}'
        ),
        _m("ExportLabOrders"): '{"limit": 3}',
        _m("WatchResults"): '{"orderId": 1001, "intervalMs": 100, "maxEvents": 2}',
        # The trail's maintenance RPCs name its first record: the start-up event.
        _m("RedactEntry", TRAIL): json.dumps({"entryId": first_event_id, "reason": "harness"}),
        _m("PurgeEntries", TRAIL): '{"before": "2999-01-01T00:00:00Z"}',
    }


def _auth_tables(pol: dict[str, Any], facts: Facts) -> dict[str, dict[str, object]]:
    tables: dict[str, dict[str, object]] = {
        "auth": {
            "issuer": pol["issuer"],
            "audience": pol["audience"],
            "require_typ": "at+jwt",
            "jwks_file": "jwks.json",
            "jwks_uri": facts.jwks_uri,
            "issuer_private_key": "issuer-key.pem",
            "key_rotation_days": 90,
            "clock_skew_s": LEEWAY_S,
            "max_token_ttl_s": 3600,
            "max_privileged_ttl_s": 900,
            "privileged_methods": [_m("UpdateLabOrder")],
            "required_acr": pol["stepUpAcr"],
            "step_up_code": 16,  # RFC 9470: insufficient_user_authentication
            "stream_methods": [_m("WatchResults")],
            "stream_grace_s": 1,
            "max_wait_s": 15,
        }
    }
    for name in facts.tokens:
        tables[f"auth.principals.{name}"] = {"token_file": f"tokens/{name}.jwt"}
    tables["auth.fixtures.break_glass"] = {"token_file": "tokens/break-glass.jwt"}
    tables["auth.stream_templates"] = {_m("WatchResults"): '{"orderId": 1001, "intervalMs": 200}'}
    tables["auth.rbac_matrix"] = {
        method: [
            p["name"] for p in pol["principals"] if set(rule["scopes"]) & set(p["scope"].split())
        ]
        for method, rule in pol["methods"].items()
    }
    return tables


def _audit_tables(pol: dict[str, Any], facts: Facts) -> dict[str, dict[str, object]]:
    phi = [_m(n) for n in ("GetLabOrder", "ListLabOrders", "UpdateLabOrder")]
    phi += [_m("ExportLabOrders"), _m("WatchResults")]
    return {
        "audit": {
            "source": "audit.jsonl",
            "format": "fhir",  # R4 AuditEvent, IHE BALP
            "correlation": "tuple",  # the service logs no request ID
            "phi_methods": phi,
            "max_events_per_call": 1,
            "alert_type": "110113",  # DICOM "Security Alert"
            "failure_burst": ALERT_BURST,
            "alert_timeout_s": 3,
            "logged_fields": [f"{_m('ListLabOrders')}.mrn"],
            "delivery_timeout_s": 3,
            "mgmt_methods": [_m("RedactEntry", TRAIL), _m("PurgeEntries", TRAIL)],
        },
        "audit.action_map": {m: rule["action"] for m, rule in pol["methods"].items()},
        "audit.hash_chain": {
            "algorithm": "sha256",
            "canonicalization": "jcs",
            "link": "prev-in-record",
            "genesis": "0" * 64,
            "seq_field": CHAIN_SEQ,
            "prev_field": CHAIN_PREV,
            "hash_field": "",  # no record stores its own hash: the next one's prev holds it
        },
        # The rest is where BALP keeps it (the requestor agent, subtype, outcomeDesc,
        # purposeOfEvent BTG); how many orders a call returned is the service's own detail.
        "audit.field_map": {"records": "entity.0.detail.0.valueString"},
        "clock": {"tolerance_ms": 1000, "ntp_server": facts.ntp_server},
        "logs": {"sinks": ["app.log"]},
    }


def write_config(workdir: Path, facts: Facts) -> Path:
    """``hipaa.toml``: what LabOrders' operators would give the harness."""
    from google.protobuf import descriptor_pb2

    pol = policy()
    raw = descriptor_set()
    (workdir / "descriptors.pb").write_bytes(raw)
    fds = descriptor_pb2.FileDescriptorSet.FromString(raw)
    order = next(m for f in fds.file for m in f.message_type if m.name == "LabOrder")
    fields = [f.name for f in order.field]
    update = _m("UpdateLabOrder")
    tables: dict[str, dict[str, object]] = {
        "tls": {"server_name": "localhost", "ca_bundle": "ca.pem"},
        "mtls": {
            "required": True,
            "client_cert": "client.pem",
            "client_key": "client-key.pem",
            "s2s_methods": [_m("GetLabOrder"), _m("ExportLabOrders")],
        },
        "mtls.fixtures.expired": {
            "cert": "mtls-fixtures/expired.pem",
            "key": "mtls-fixtures/expired-key.pem",
        },
        "mtls.fixtures.wrong_eku": {
            "cert": "mtls-fixtures/wrong-eku.pem",
            "key": "mtls-fixtures/wrong-eku-key.pem",
        },
        "schema": {
            "descriptor_set": "descriptors.pb",
            "write_methods": [update, _m("RedactEntry", TRAIL), _m("PurgeEntries", TRAIL)],
            "public_methods": [f"/grpc.health.v1.Health/{m}" for m in ("Check", "List", "Watch")],
            "liveness_method": "/grpc.health.v1.Health/Check",
        },
        "schema.request_templates": _templates(facts.first_event_id),
        **_auth_tables(pol, facts),
        "authz": {
            "existence_hiding": False,
            "stream_methods": [_m("WatchResults")],
            "sensitive_fields": ["order.ordering_provider"],
            "sandbox_ids": SANDBOX_IDS,
            "emergency_methods": list(pol["emergencyMethods"]),
        },
        "authz.own_ids": {"physician": OWN_IDS},
        "authz.foreign_ids": {"physician": FOREIGN_IDS},
        "safety": {"allow_mutations": True, "allow_transport_abuse": True},
        "min": {
            "unknown_path_policy": "reject",
            "privileged_principals": [
                p["name"]
                for p in pol["principals"]
                if set(p["scope"].split()) & set(pol["clearIdentifierScopes"])
            ],
            "cache_ttl_s": CACHE_TTL_S,
        },
        "min.mask_methods": {_m("GetLabOrder"): "read_mask"},
        "min.role_field_allowlist": _allowlists(pol, fields),
        "min.token_patterns": {"ssn": r"^\*{3}-\*{2}-\d{4}$"},
        "limits": {
            "max_recv_bytes": MAX_RECV_BYTES,
            "size_probe_method": _m("ListLabOrders"),
            "bulk_methods": [_m("ExportLabOrders")],
            "max_export_records": MAX_EXPORT,
            "max_concurrent_exports": MAX_CONCURRENT_EXPORTS,
            "max_concurrent_streams": MAX_CONCURRENT_STREAMS,
            "max_page_size": MAX_PAGE_SIZE,
        },
        "limits.rate": {"rps": RATE_RPS, "window_s": 2, "cooldown_s": 0.5},
        # Behind nginx every byte takes one more hop: twice the budget, as for the Python one.
        "fuzz": {
            "examples_per_method": 30,
            "latency_budget_ms": 2000 if facts.edge else 1000,
            "atheris_seconds": 2,
        },
        "phi": {"methods": [update]},
        "phi.field_paths": {
            "names": [f"{update}.order.given_name", f"{update}.order.family_name"],
            "ssn": [f"{update}.order.ssn"],
            "email": [f"{update}.order.email"],
            "phone": [f"{update}.order.phone"],
            "geographic": [f"{update}.order.city"],
            "dates": [f"{update}.order.birth_date"],
        },
        **_audit_tables(pol, facts),
    }
    path = workdir / "hipaa.toml"
    path.write_text(toml_text(tables, {"environment": "production"}, "spawn:reference-node"))
    return path


def _write_private(path: Path, data: bytes | str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def _issue_tokens(workdir: Path, issuer: RsaIssuer, pol: dict[str, Any]) -> dict[str, str]:
    tokens = workdir / "tokens"
    tokens.mkdir()
    minted = {}
    for p in pol["principals"]:
        minted[p["name"]] = issuer.mint(p)
        _write_private(tokens / f"{p['name']}.jwt", minted[p["name"]])
    physician = next(p for p in pol["principals"] if p["name"] == "physician")
    glass = issuer.mint(
        physician, exp_in=300, purpose_of_use="BTG", btg_reason="harness break-glass drill"
    )
    _write_private(tokens / "break-glass.jwt", glass)
    return minted


class NodeService:
    """``node server.js`` and what runs beside it (JWKS endpoint, time server)."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, *parts: Any) -> None:
        self.process = process
        self.port = port
        self._parts = parts

    def stop(self) -> None:
        """Stop node (SIGTERM, then SIGKILL after 3 s), then the parts beside it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(3)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        for part in self._parts:
            part.stop()


def _wait_listening(process: subprocess.Popen[bytes], stderr: Path) -> int:
    try:
        found = await_line(process, re.compile(r"LISTENING (\d+)$"), READY_TIMEOUT_S)
    except EOFError:
        lines = stderr.read_text(errors="replace").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else "node exited before it listened") from None
    except TimeoutError:
        raise RuntimeError(f"node did not listen within {READY_TIMEOUT_S:g} s") from None
    return int(found.group(1))


def _launch(workdir: Path, config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    (workdir / "node-config.json").write_text(json.dumps(config, indent=2))
    stderr = workdir / "node.stderr"
    env = {**os.environ, "GRPC_SSL_CIPHER_SUITES": CIPHER_SUITES}
    if "node-default-ciphers" in config["defects"]:  # Node's own list, CBC suites and all
        env.pop("GRPC_SSL_CIPHER_SUITES")
    env.pop("NODE_OPTIONS", None)
    node = shutil.which("node") or "node"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [node, str(NODE_DIR / "server.js"), str(workdir / "node-config.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=workdir,
            env=env,
        )
    try:
        return process, _wait_listening(process, stderr)
    except BaseException:
        process.kill()
        process.wait(3)
        raise


def _first_event_id(audit: Path) -> str:
    first = audit.read_text(encoding="utf-8").split("\n", 1)[0]
    return str(json.loads(first)["id"])


#: The server certificate's names and lifetime for the CERT defects (the names clients use,
#: 30 days, otherwise).
_LEAF: dict[str, dict[str, Any]] = {
    # Issued for the name the service has inside its cluster, not the one its clients use.
    "wrong-san": {"names": ("lab-orders.labs.svc.cluster.local",)},
    # An internal CA's two-year default (hipaa-strict, the default profile, caps it at 366).
    "long-lived-cert": {"valid_for": dt.timedelta(days=825)},
}


def _server_leaf(defects: frozenset[str], pki: Pki) -> Issued:
    """The service's certificate: the PKI's own, or the one a CERT defect asks for."""
    asked: dict[str, Any] = {}
    for d in sorted(defects & _LEAF.keys()):
        asked.update(_LEAF[d])
    if not asked:
        return pki.server
    return pki.ca.issue(asked.pop("names", SERVER_NAMES), **asked)


def start(defects: frozenset[str], workdir: Path) -> tuple[Served, threading.Event, Any]:
    """Start LabOrders with ``defects``: (what a client needs, a stop event, a handle).

    The handle (a :class:`NodeService`) has the ``port`` and ``stop()`` of ``serve``'s own.
    """
    from targets.serve import Served

    for d in defects:
        REFERENCE_NODE.defect(d)  # KeyError for an unknown defect
    ensure_installed()
    pol = policy()
    issuer = RsaIssuer(pol["issuer"], pol["audience"])
    # The jwks-private defect: the issuer publishes its private key's members too (and
    # auth.jwks_file, the operators' copy of what it publishes, holds them as well).
    leaky = "jwks-private" in defects
    (workdir / "jwks.json").write_text(json.dumps(issuer.jwks(private=leaky), indent=2))
    _write_private(workdir / "issuer-key.pem", issuer.private_pem())
    tokens = _issue_tokens(workdir, issuer, pol)
    pki = Pki.generate(CLIENT_IDENTITY)
    pki.write_client_side(workdir, CLIENT_IDENTITY)
    _server_leaf(defects, pki).write(workdir / "server", "server")
    keys = IssuerEndpoint(pol["issuer"], issuer.jwks(private=leaky))
    clock = SntpServer()
    tls = {
        "ca": str(workdir / "ca.pem"),
        "cert": str(workdir / "server" / "server.pem"),
        "key": str(workdir / "server" / "server-key.pem"),
    }
    config = {
        "host": "127.0.0.1",
        "tls": None if "plaintext" in defects else tls,
        "jwksUri": keys.jwks_uri,
        "auditLog": str(workdir / "audit.jsonl"),
        "appLog": str(workdir / "app.log"),
        "leewayS": LEEWAY_S,
        "defects": sorted(defects),
    }
    if leaky:  # jose refuses a key set with private members: the key is given as PEM
        (workdir / "issuer-public.pem").write_bytes(issuer.public_pem())
        config["issuerPublicKey"] = str(workdir / "issuer-public.pem")
    try:
        process, port = _launch(workdir, config)
    except BaseException:
        keys.stop()
        clock.stop()
        raise
    handle = NodeService(process, port, keys, clock)
    if "nginx-edge" in defects:
        try:
            proxy = _nginx_edge(workdir, port)
        except BaseException:
            handle.stop()
            raise
        handle = NodeService(process, proxy.port, proxy, keys, clock)
    first = _first_event_id(workdir / "audit.jsonl")
    facts = Facts(keys.jwks_uri, clock.address, first, tokens, edge="nginx-edge" in defects)
    path = write_config(workdir, facts)
    return Served(f"127.0.0.1:{handle.port}", path, workdir), threading.Event(), handle


def _nginx_edge(workdir: Path, backend: int) -> Any:
    """Debian's nginx in front of the service (``+nginx-edge``), with this service's limits.

    As in front of the Python reference: :func:`targets.nginx.in_front`.
    """
    from targets import nginx

    return nginx.in_front(
        workdir,
        workdir / "server",
        backend,
        recv_bytes=MAX_RECV_BYTES,
        rate_rps=RATE_RPS,
        streams=MAX_CONCURRENT_STREAMS,
    )
