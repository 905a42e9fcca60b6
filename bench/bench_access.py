"""Benchmark of the access-control suites.

1. The access-control controls (AUTHN-*, AUTHZ-*, REFL-002, ERR-*) against the bundled
   reference target: wall time per control and in total.
2. Per-call overhead at scale: a generated service with 100 unary methods and 5 roles
   (descriptors built here), AUTHN-001 and AUTHZ-001 against it: calls made, wall time,
   calls per second and microseconds per call.

Run: ``python bench/bench_access.py``. Figures go to stdout; nothing is asserted.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2

from harness.checks import registered, run_check
from harness.config import Config, load_config
from harness.run import Run, RunOptions
from harness.target import parse_target

ACCESS = [c for c in registered() if c.startswith(("AUTHN-", "AUTHZ-", "ERR-")) or c == "REFL-002"]
METHODS, ROLES = 100, ("admin", "clinician", "billing", "auditor", "least-privileged")


def bench_reference() -> None:
    run = Run.open(parse_target("spawn:reference"), Config(), RunOptions(seed=7))
    try:
        total = time.perf_counter()
        rows = []
        for control in sorted(ACCESS):
            start = time.perf_counter()
            outcome = run_check(control, run)
            rows.append((control, time.perf_counter() - start, outcome.status.value))
        elapsed = time.perf_counter() - total
    finally:
        run.close()
    print(
        f"access-control suites vs spawn:reference: {elapsed:.2f} s wall, {len(run.journal)} calls"
    )
    for control, seconds, status in rows:
        print(f"  {control:<10} {seconds * 1000:8.1f} ms  {status}")


def _wide_descriptors() -> descriptor_pb2.FileDescriptorSet:
    fd = descriptor_pb2.FileDescriptorProto(
        name="bench/wide.proto", package="bench.v1", syntax="proto3"
    )
    for name in ("Req", "Resp"):
        msg = fd.message_type.add(name=name)
        msg.field.add(
            name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1
        )
    svc = fd.service.add(name="Wide")
    for i in range(METHODS):
        svc.method.add(name=f"M{i:03d}", input_type=".bench.v1.Req", output_type=".bench.v1.Resp")
    return descriptor_pb2.FileDescriptorSet(file=[fd])


def _allowed(i: int) -> set[str]:
    return {"admin", ROLES[1 + i % 4]} - {"least-privileged"} | (
        {"least-privileged"} if i % 10 == 0 else set()
    )


class _Wide(grpc.GenericRpcHandler):
    """Any /bench.v1.Wide/Mnnn: bearer token 'tok-<role>'; RBAC as _allowed()."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        prefix = "/bench.v1.Wide/M"
        if not details.method.startswith(prefix):
            return None
        index = int(details.method[len(prefix) :])

        def behavior(request: bytes, context: grpc.ServicerContext) -> bytes:
            auth = [v for k, v in context.invocation_metadata() if k == "authorization"]
            role = (
                auth[0].removeprefix("Bearer tok-")
                if len(auth) == 1 and auth[0].startswith("Bearer tok-")
                else None
            )
            if role not in ROLES:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication required")
            if role not in _allowed(index):
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
            return b"\x0a\x02ok"

        return grpc.unary_unary_rpc_method_handler(behavior)


def bench_wide() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "wide.pb").write_bytes(_wide_descriptors().SerializeToString())
        lines = ["[schema]", 'descriptor_set = "wide.pb"', "[auth.rbac_matrix]"]
        for i in range(METHODS):
            lines.append(f'"/bench.v1.Wide/M{i:03d}" = {sorted(_allowed(i))!r}'.replace("'", '"'))
        for role in ROLES:
            (d / f"{role}.tok").write_text(f"tok-{role}")
            lines += [f"[auth.principals.{role}]", f'token_file = "{role}.tok"']
        (d / "hipaa.toml").write_text("\n".join(lines) + "\n")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=[_Wide()])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            run = Run.open(
                parse_target(f"127.0.0.1:{port}"), load_config(d / "hipaa.toml"), RunOptions(seed=7)
            )
            start = time.perf_counter()
            statuses = {c: run_check(c, run).status.value for c in ("AUTHN-001", "AUTHZ-001")}
            elapsed = time.perf_counter() - start
            calls = len(run.journal)
            run.close()
        finally:
            server.stop(0)
    print(
        f"{METHODS} methods x {len(ROLES)} roles (AUTHN-001 + AUTHZ-001, cleartext loopback): "
        f"{calls} calls in {elapsed:.2f} s = {calls / elapsed:.0f} calls/s, "
        f"{elapsed / calls * 1e6:.0f} us per call; {statuses}"
    )


if __name__ == "__main__":
    bench_reference()
    bench_wide()
    sys.exit(0)
