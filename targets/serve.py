"""Start a bundled target, describe it for clients, and keep it running.

``python -m targets serve reference+reflection --workdir DIR`` is what the harness runs for
``--hipaa-target=spawn:...``; ``hipaa-grpc targets serve`` runs the same code in the
foreground for a person. The target writes ``DIR/hipaa.toml``: the config its operators
would hand to the harness (CA bundle, client certificate, tokens per role, descriptor set,
RBAC matrix, audit and log locations), with paths relative to that file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import signal
import ssl
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from targets.catalog import BUNDLED, NGINX_DEFECTS
from targets.edge import STRICT_TLS12, Edge, EdgeSettings
from targets.issuer_http import IssuerEndpoint
from targets.operators import toml_text
from targets.pki import SERVER_NAMES, Issued, Pki, TokenIssuer
from targets.sntp import SntpServer

READY_PREFIX = "HIPAA-TARGET-READY "


@dataclass(frozen=True)
class Served:
    """What a client needs: the address and the generated config file."""

    address: str
    config: Path
    workdir: Path


def _reference_config(
    workdir: Path,
    issuer: TokenIssuer,
    defects: frozenset[str],
    jwks_uri: str,
    opaque: dict[str, str] | None = None,
    ntp_server: str = "",
) -> Path:
    edge = bool(defects & (EDGE_DEFECTS | NGINX_DEFECTS))  # one more hop either way
    from targets.reference import schema, server

    (workdir / "descriptors.pb").write_bytes(schema.descriptor_set().SerializeToString())
    tokens = workdir / "tokens"
    tokens.mkdir()
    principals: dict[str, dict[str, object]] = {}
    for p in server.PRINCIPALS:
        # The reduced-config operators hold opaque tokens (``opaque``), not JWTs.
        name = f"{p.name}.token" if opaque else f"{p.name}.jwt"
        path = tokens / name
        path.write_text(opaque[p.name] if opaque else issuer.mint(p))
        path.chmod(0o600)
        principals[f"auth.principals.{p.name}"] = {"token_file": f"tokens/{name}"}
    matrix = {
        method: [p.name for p in server.PRINCIPALS if policy.roles & set(p.roles)]
        for method, policy in server.policy_table(defects).items()
    }
    templates = {
        f"/{schema.SERVICE}/GetPatient": '{"patientId": "p-0001"}',
        f"/{schema.SERVICE}/SearchPatients": '{"familyNamePrefix": "", "pageSize": 5}',
        f"/{schema.SERVICE}/UpdatePatient": (
            '{"patient": {"patientId": "p-0002", "clinicalNotes": "harness update"},'
            ' "updateMask": "clinicalNotes"}'
        ),
        f"/{schema.SERVICE}/ExportPatients": '{"maxRecords": 3}',
        f"/{schema.SERVICE}/WatchPatient": (
            '{"patientId": "p-0001", "intervalMs": 100, "maxEvents": 2}'
        ),
        f"/{schema.SERVICE}/ReadPatients": '{"patientId": "p-0001"}',
        # The audit store's management RPCs name its first record: the start-up event.
        server.UPDATE_EVENT: '{"seq": "1", "field": "note", "value": "edited by the harness"}',
        server.DELETE_EVENT: '{"seq": "1"}',
    }
    clinician = next(p for p in server.PRINCIPALS if p.name == "clinician")
    glass = tokens / "break-glass.jwt"
    glass.write_text(
        issuer.mint(clinician, emergency_reason="harness break-glass drill", exp_in=300)
    )
    glass.chmod(0o600)
    svc = f"/{schema.SERVICE}"
    tables: dict[str, dict[str, object]] = {
        "tls": {"server_name": "localhost", "ca_bundle": "ca.pem"},
        "mtls": {
            "required": True,
            "client_cert": "client.pem",
            "client_key": "client-key.pem",
            "s2s_methods": [f"/{schema.SERVICE}/GetPatient", f"/{schema.SERVICE}/ExportPatients"],
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
            "write_methods": [f"/{schema.SERVICE}/UpdatePatient", *server.MGMT_METHODS],
            "public_methods": sorted(server.PUBLIC_METHODS),
            "liveness_method": "/grpc.health.v1.Health/Check",
        },
        "schema.request_templates": dict(templates),
        "auth": {
            "clock_skew_s": server.LEEWAY_S,
            "stream_methods": [f"{svc}/WatchPatient"],
            "stream_grace_s": 2 if edge else 1,
            "max_wait_s": 15,
            "issuer": issuer.issuer,
            "audience": issuer.audience,
            "require_typ": "at+jwt",
            "jwks_file": "jwks.json",
            "jwks_uri": jwks_uri,
            "key_rotation_days": 90,
            "issuer_private_key": "issuer-key.pem",
            "max_token_ttl_s": 3600,
            "max_privileged_ttl_s": 900,
            "privileged_methods": [f"/{schema.SERVICE}/UpdatePatient"],
            "required_amr": ["mfa"],
        },
        **principals,
        "auth.fixtures.break_glass": {"token_file": "tokens/break-glass.jwt"},
        "auth.stream_templates": {
            f"{svc}/WatchPatient": '{"patientId": "p-0001", "intervalMs": 200}'
        },
        "auth.rbac_matrix": dict(matrix),
        "authz": {
            "existence_hiding": False,
            "stream_methods": [f"{svc}/ReadPatients", f"{svc}/WatchPatient"],
            "sensitive_fields": ["patient.managing_clinician"],
            "sandbox_ids": ["p-0002", "p-0003"],
            "emergency_methods": [f"{svc}/GetPatient"],
        },
        "safety": {"allow_mutations": True, "allow_transport_abuse": True},
        "min": {
            "unknown_path_policy": "reject",
            "privileged_principals": [
                p.name for p in server.PRINCIPALS if set(p.roles) & server.PRIVILEGED_ROLES
            ],
            "cache_ttl_s": server.CACHE_TTL_S,
        },
        "min.mask_methods": {f"{svc}/GetPatient": "read_mask"},
        "min.role_field_allowlist": _allowlists(server),
        "min.token_patterns": {"ssn": r"^\*{3}-\*{2}-\d{4}$"},
        "limits": {
            "max_recv_bytes": server.MAX_RECV_BYTES,
            "size_probe_method": f"{svc}/GetPatient",
            "bulk_methods": [f"{svc}/ExportPatients"],
            "max_export_records": server.MAX_EXPORT_RECORDS,
            "max_concurrent_exports": server.MAX_CONCURRENT_EXPORTS,
            "max_concurrent_streams": server.MAX_CONCURRENT_STREAMS,
            "max_page_size": server.MAX_PAGE_SIZE,
        },
        # A sandbox on a shared CI machine: the budget allows for load (hang-input blocks
        # 1.5 s, well past it). Behind the Python TLS edge or nginx every byte takes one more
        # hop, so the edge variants (none of them a fuzz defect) get twice the budget.
        "fuzz": {
            "examples_per_method": 30,
            "latency_budget_ms": 2000 if edge else 1000,
            "atheris_seconds": 2,
            # White-box: the same service and defects in-process, trusting the same issuer.
            "inprocess_entrypoint": "targets.reference.inprocess:target",
        },
        "fuzz.inprocess_options": {"workdir": str(workdir.resolve()), "defects": sorted(defects)},
        "limits.rate": {"rps": int(server.RATE_RPS), "window_s": 1, "cooldown_s": 0.2},
        "authz.own_ids": {"clinician": ["p-0001", "p-0002"]},
        "authz.foreign_ids": {"clinician": ["p-0031", "p-0032"]},
        "phi": {"methods": [f"{svc}/UpdatePatient"]},
        "phi.field_paths": {
            "names": [
                f"{svc}/UpdatePatient.patient.given_name",
                f"{svc}/UpdatePatient.patient.family_name",
            ],
            "ssn": [f"{svc}/UpdatePatient.patient.ssn"],
            "email": [f"{svc}/UpdatePatient.patient.email"],
            "phone": [f"{svc}/UpdatePatient.patient.phone"],
            "geographic": [f"{svc}/UpdatePatient.patient.address.city"],
            "dates": [f"{svc}/UpdatePatient.patient.birth_date"],
        },
        "audit": {
            "source": "audit.jsonl",
            "phi_methods": [
                f"{svc}/{m}"
                for m in (
                    "GetPatient",
                    "SearchPatients",
                    "UpdatePatient",
                    "ExportPatients",
                    "WatchPatient",
                    "ReadPatients",
                )
            ],
            "max_events_per_call": 1,
            "alert_type": "auth_failure_burst",
            "failure_burst": server.ALERT_BURST,
            "alert_timeout_s": 3,
            "logged_fields": [f"{svc}/GetPatient.patient_id"],
            "format": "jsonl",
            "request_id_key": server.REQUEST_ID_KEY,
            "delivery_timeout_s": 3,
            "mgmt_methods": list(server.MGMT_METHODS),
        },
        "audit.hash_chain": {
            "algorithm": "sha256",
            "canonicalization": "json-sorted-compact",
            "seq_field": "seq",
            "prev_field": "prev_hash",
            "hash_field": "hash",
        },
        "clock": {"tolerance_ms": 1000, "ntp_server": ntp_server},
        "audit.field_map": {
            "identity": "identity",
            "method": "method",
            "resource": "resource",
            "action": "action",
            "outcome": "outcome",
            "request_id": "request_id",
            "timestamp": "ts",
            "source": "source",
            "emergency": "emergency",
            "reason": "reason",
            "event_type": "event_type",
            "records": "messages",
        },
        "logs": {"sinks": ["app.log"]},
    }
    if "reduced-config" in defects:
        tables = _reduced(tables)
    path = workdir / "hipaa.toml"
    path.write_text(toml_text(tables, {"environment": "production"}, "the bundled target"))
    return path


#: What the operators of a service behind a real IdP and a log pipeline the harness cannot
#: read would leave out: no issuer key or JWKS, no token fixtures, no audit or log source.
#: Their principals hold opaque tokens the service checks by lookup (see ``start``).
_REDUCED_AUTH = ("issuer", "jwks_file", "jwks_uri", "issuer_private_key", "key_rotation_days")
_REDUCED_TABLES = ("auth.fixtures.break_glass", "audit", "audit.hash_chain", "audit.field_map")


def _reduced(tables: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """``tables`` as a reduced-config operator writes them (see ``_REDUCED_AUTH``)."""
    out = {k: dict(v) for k, v in tables.items() if k not in _REDUCED_TABLES}
    for key in _REDUCED_AUTH:
        out["auth"].pop(key, None)
    out.pop("logs", None)
    out.pop("clock", None)
    return out


def _allowlists(server: Any) -> dict[str, object]:
    """Fields each principal may see, from the reference's role table."""
    from targets.reference import schema

    every = [f.name for f in schema.message("Patient").DESCRIPTOR.fields]
    out: dict[str, object] = {}
    for p in server.PRINCIPALS:
        fields: set[str] = set()
        for role in p.roles:
            allowed = server.ROLE_FIELDS.get(role, frozenset())
            fields |= set(every) if allowed is None else set(allowed)
        out[p.name] = sorted(fields)
    return out


CLIENT_IDENTITY = "svc-harness.reference.hipaa.test"

#: Defects that put the TLS edge (targets/edge.py) in front of the service.
EDGE_DEFECTS = frozenset(d.name for t in BUNDLED.values() for d in t.defects if d.edge)


def _edge_variant(defects: frozenset[str], pki: Pki) -> tuple[EdgeSettings, Issued] | None:
    """The edge's TLS settings and server certificate for ``defects``, or ``None``."""
    if not defects & EDGE_DEFECTS:
        return None
    settings = EdgeSettings()
    leaf: dict[str, Any] = {}
    if "tls10" in defects:
        # TLS 1.0 has no AEAD suite, and OpenSSL cannot limit a suite to one protocol
        # version: the CBC suite it needs is accepted under TLS 1.2 as well.
        settings = replace(
            settings,
            minimum=ssl.TLSVersion.TLSv1,
            ciphers=f"{STRICT_TLS12}:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0",
        )
    if "cbc" in defects:
        settings = replace(settings, ciphers=f"{STRICT_TLS12}:ECDHE-ECDSA-AES128-SHA256")
    if "no-pfs" in defects:  # static RSA key exchange needs an RSA certificate
        settings = replace(settings, ciphers=f"{STRICT_TLS12}:AES128-GCM-SHA256")
        leaf["key"] = "rsa-2048"
    if "no-tls13" in defects:
        settings = replace(settings, maximum=ssl.TLSVersion.TLSv1_2)
    if "no-alpn" in defects:
        settings = replace(settings, alpn=False)
    if "expired-cert" in defects:
        leaf.update(valid_from=-dt.timedelta(days=40), valid_for=dt.timedelta(days=30))
    if "wrong-san" in defects:
        leaf["names"] = ("wrong-host.hipaa.test",)
    if "long-lived-cert" in defects:
        leaf["valid_for"] = dt.timedelta(days=825)
    if "weak-key" in defects:
        leaf["key"] = "rsa-1024"
        settings = replace(settings, ciphers=f"{settings.ciphers}:@SECLEVEL=1")
    if "sha1-cert" in defects:
        leaf["sha1"] = True  # OpenSSL 3 refuses SHA-1 certificates above level 0
        settings = replace(settings, ciphers=f"{settings.ciphers}:@SECLEVEL=0")
    if "client-cert-optional" in defects:
        settings = replace(settings, client_auth=ssl.CERT_OPTIONAL)
    if "no-client-auth" in defects:
        settings = replace(settings, client_auth=ssl.CERT_NONE)
    if "client-renegotiation" in defects:
        settings = replace(settings, client_renegotiation=True)
    if "client-cert-expiry-unchecked" in defects:
        settings = replace(settings, check_client_cert_dates=False)
    names = leaf.pop("names", SERVER_NAMES)
    return settings, pki.ca.issue(names, **leaf)


def _nginx_installed() -> None:
    """Raise RuntimeError, in one line, when ``+nginx-edge`` has no nginx to run."""
    from targets import nginx

    if nginx.binary() is None:
        raise RuntimeError(nginx.MISSING)


def _nginx_edge(
    workdir: Path, pki: Pki, backend: int, service: Any, early_data: bool = False
) -> Any:
    """Debian's nginx in front of ``backend`` (``+nginx-edge``, see :func:`targets.nginx.in_front`).

    The limits are the ``service`` module's MAX_RECV_BYTES, RATE_RPS, MAX_CONCURRENT_STREAMS;
    ``early_data`` turns ``ssl_early_data`` on (``+nginx-early-data``).
    """
    from targets import nginx

    pki.server.write(workdir / "edge", "server")
    return nginx.in_front(
        workdir,
        workdir / "edge",
        backend,
        recv_bytes=service.MAX_RECV_BYTES,
        rate_rps=service.RATE_RPS,
        streams=service.MAX_CONCURRENT_STREAMS,
        early_data=early_data,
    )


class _Parts:
    """The service and what runs beside it (TLS edge, keys, time server), stopped together."""

    def __init__(self, port: int, *parts: Any) -> None:
        self.port = port
        self._parts = parts

    def stop(self) -> None:
        """Stop every part at once: each takes a moment to notice, none needs another."""
        threads = [threading.Thread(target=part.stop) for part in self._parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def wait_for(stop: threading.Event) -> None:
    """Block until ``stop`` is set, by a signal handler too.

    A timed wait: with an untimed one, the harness's SIGTERM went unnoticed until its 5 s
    stop timeout sent SIGKILL (measured at the end of a run: 5.0 s; now the reference stops
    in 0.08 s, the signal noticed within 10 ms).
    """
    while not stop.wait(0.01):
        pass


def start(
    name: str, defects: frozenset[str], workdir: Path
) -> tuple[Served, threading.Event, _Parts]:
    """Start the bundled target ``name`` with ``defects``; return it, a stop event and a handle."""
    if name == "reference-node":  # LabOrders on Node: its own launcher
        from targets import node_reference

        return node_reference.start(defects, workdir)
    if name == "aws-reference":  # a cloud estate in moto: the CLOUD controls' target
        from targets import aws_reference

        served, moto = aws_reference.start(defects, workdir)
        return served, threading.Event(), _Parts(moto.port, moto)
    target = BUNDLED[name]
    for d in defects:
        target.defect(d)  # KeyError for an unknown defect
    if defects & NGINX_DEFECTS:
        _nginx_installed()
    from targets.reference import server

    logging.basicConfig(
        filename=workdir / "app.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    issuer = TokenIssuer(server.ISSUER, server.AUDIENCE)
    issuer.write(workdir)
    if "jwks-private" in defects:
        # auth.jwks_file is the operators' copy of what the issuer publishes: the private
        # scalar too (KEY-001 reads auth.jwks_file first, then auth.jwks_uri).
        (workdir / "jwks.json").write_text(json.dumps(issuer.jwks(private=True), indent=2))
    pki = Pki.generate(CLIENT_IDENTITY)
    pki.write_client_side(workdir, CLIENT_IDENTITY)
    edge = _edge_variant(defects, pki)
    creds = None
    if "plaintext" not in defects and edge is None:
        creds = grpc.ssl_server_credentials(
            [(pki.server.key_pem, pki.server.chain_pem)],
            root_certificates=pki.ca_pem,
            require_client_auth=True,
        )
    # Reduced-config: the IdP issues opaque tokens, which the service looks up in its store.
    opaque = None
    if "reduced-config" in defects:
        opaque = server.issue_opaque_tokens(workdir, issuer.ttl_s)
    store = workdir / server.OPAQUE_STORE if opaque else None
    options = server.Options(workdir=workdir, defects=defects, token_store=store)
    running = server.start(options, issuer, creds)
    # The jwks-private defect publishes the signing key's private scalar with it.
    keys = IssuerEndpoint(issuer.issuer, issuer.jwks(private="jwks-private" in defects))
    clock = SntpServer()  # the host clock, which the service stamps its events with
    if edge is not None:
        settings, leaf = edge
        leaf.write(workdir / "edge", "server")
        context = settings.context(
            str(workdir / "edge" / "server.pem"),
            str(workdir / "edge" / "server-key.pem"),
            str(workdir / "ca.pem"),
        )
        backend = (options.host, running.port)
        front = Edge(context, backend, options.host, require_h2=settings.alpn)
        handle = _Parts(front.port, front, running, keys, clock)
    elif defects & NGINX_DEFECTS:  # re-encrypts to the service, whose mTLS stays on
        proxy = _nginx_edge(workdir, pki, running.port, server, "nginx-early-data" in defects)
        handle = _Parts(proxy.port, proxy, running, keys, clock)
    else:
        handle = _Parts(running.port, running, keys, clock)
    config = _reference_config(workdir, issuer, defects, keys.jwks_uri, opaque, clock.address)
    served = Served(f"127.0.0.1:{handle.port}", config, workdir)
    return served, threading.Event(), handle


def main(argv: list[str] | None = None) -> int:
    """``python -m targets serve SPEC --workdir DIR``: serve until SIGTERM or stdin EOF."""
    parser = argparse.ArgumentParser(prog="python -m targets")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start a bundled target")
    serve.add_argument("spec", help="NAME[+DEFECT...], e.g. reference+reflection")
    serve.add_argument("--workdir", type=Path, required=True)
    serve.add_argument("--exit-on-stdin-eof", action="store_true")
    serve.add_argument(
        "--remove-workdir",
        action="store_true",
        help="delete the work directory on exit (the harness's temporary one)",
    )
    args = parser.parse_args(argv)
    name, *defects = args.spec.split("+")
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        served, stop, running = start(name, frozenset(defects), args.workdir)
    except KeyError as exc:
        print(f"unknown bundled target or defect: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # something it needs is missing (nginx, openssl): one line
        print(f"cannot start {args.spec}: {exc}", file=sys.stderr)
        return 2

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.exit_on_stdin_eof:

        def _watch() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=_watch, daemon=True).start()
    ready = {
        "address": served.address,
        "config": str(served.config),
        "workdir": str(served.workdir),
    }
    try:
        print(READY_PREFIX + json.dumps(ready), flush=True)
        wait_for(stop)
    except BrokenPipeError:  # the harness died before it read the ready line
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (interpreter exit flushes stdout)
    finally:
        running.stop()
        if args.remove_workdir:  # also when the harness was killed and only closed stdin
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0
