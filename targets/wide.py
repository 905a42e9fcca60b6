"""A generated wide target for scale benchmarks: services x methods x roles from flags.

One grpcio generic handler serves every method of a generated descriptor (``wide.v1``,
services ``S000``..., unary reads ``GetM00000``... spread over them, ``Req``/``Resp`` with
one string field). Bearer tokens are opaque (``tok-<role>``, one file per role); roles are
``admin``, ``least-privileged``, ``no-roles`` and ``r03``...; see :func:`allowed` for the
matrix, which has allowed and refused cells in every row. The directory it writes holds
``wide.pb``, one token file per role and ``hipaa.toml`` (schema, principals, matrix),
which is all the harness needs to run AUTHN-001 and AUTHZ-001 against it.

Run: ``python -m targets.wide --services 50 --methods 1000 --roles 20 --dir DIR``; it
prints ``ready 127.0.0.1:PORT`` once serving and stops on SIGTERM or end of stdin.
Not a bundled ``spawn:`` target: nothing of HIPAA is modelled beyond the matrix.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2

PACKAGE = "wide.v1"
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL


def roles(count: int) -> list[str]:
    """The role names: ``admin``, ``least-privileged``, ``no-roles``, then ``r03``, ..."""
    return ["admin", "least-privileged", "no-roles", *(f"r{i:02d}" for i in range(3, count))]


def paths(services: int, methods: int) -> list[str]:
    """Every method's full path, the methods spread evenly over the services."""
    services = max(1, min(services, methods))
    return [f"/{PACKAGE}.S{i % services:03d}/GetM{i:05d}" for i in range(methods)]


def allowed(index: int, names: list[str]) -> list[str]:
    """Who may call method ``index``.

    ``admin`` always, alone on every tenth method; on the others two of the ``rNN`` roles
    picked from ``index``, and ``least-privileged`` on one in ten; ``no-roles`` never.
    """
    if index % 10 == 0:
        return ["admin"]
    others = names[3:]
    picked = (
        {others[index % len(others)], others[(index * 7 + 3) % len(others)]} if others else set()
    )
    if index % 10 == 1:
        picked.add("least-privileged")
    return ["admin", *sorted(picked)]


def descriptors(services: int, methods: int) -> descriptor_pb2.FileDescriptorSet:
    """The generated file: ``Req``, ``Resp`` and the services with their methods."""
    fd = descriptor_pb2.FileDescriptorProto(name="wide/v1/wide.proto", package=PACKAGE)
    fd.syntax = "proto3"
    for name in ("Req", "Resp"):
        fd.message_type.add(name=name).field.add(name="id", number=1, type=_STRING, label=_OPTIONAL)
    by_service: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
    for path in paths(services, methods):
        service, method = path.removeprefix(f"/{PACKAGE}.").split("/")
        if service not in by_service:
            by_service[service] = fd.service.add(name=service)
        by_service[service].method.add(
            name=method, input_type=f".{PACKAGE}.Req", output_type=f".{PACKAGE}.Resp"
        )
    return descriptor_pb2.FileDescriptorSet(file=[fd])


def write(directory: Path, services: int, methods: int, role_count: int) -> Path:
    """The descriptor set, token files and ``hipaa.toml`` in ``directory``; the config's path."""
    names = roles(role_count)
    (directory / "wide.pb").write_bytes(descriptors(services, methods).SerializeToString())
    lines = ["[schema]", 'descriptor_set = "wide.pb"', "", "[auth.rbac_matrix]"]
    for i, path in enumerate(paths(services, methods)):
        lines.append(f"{json.dumps(path)} = {json.dumps(allowed(i, names))}")
    for role in names:
        (directory / f"{role}.tok").write_text(f"tok-{role}")
        lines += ["", f"[auth.principals.{role}]", f'token_file = "{role}.tok"']
    config = directory / "hipaa.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


class WideHandler(grpc.GenericRpcHandler):
    """Every generated method: authenticate the bearer token, authorise by the matrix."""

    def __init__(self, services: int, methods: int, role_count: int) -> None:
        names = roles(role_count)
        self._roles = frozenset(names)
        self._allowed = {
            path: frozenset(allowed(i, names)) for i, path in enumerate(paths(services, methods))
        }
        self._handlers = {path: self._handler(path) for path in self._allowed}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        """The method's handler (a dict lookup: the cost does not grow with the API)."""
        return self._handlers.get(details.method)

    def _handler(self, path: str) -> grpc.RpcMethodHandler:
        who_may = self._allowed[path]

        def behavior(request: bytes, context: grpc.ServicerContext) -> bytes:
            auth = [v for k, v in context.invocation_metadata() if k == "authorization"]
            token = auth[0] if len(auth) == 1 and isinstance(auth[0], str) else ""
            role = token.removeprefix("Bearer tok-") if token.startswith("Bearer tok-") else ""
            if role not in self._roles:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication required")
            if role not in who_may:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
            return request  # Resp has Req's shape: echo the id

        return grpc.unary_unary_rpc_method_handler(behavior)


def serve(
    services: int, methods: int, role_count: int, workers: int = 16
) -> tuple[grpc.Server, int]:
    """A started server on 127.0.0.1 and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        handlers=[WideHandler(services, methods, role_count)],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def main(argv: list[str] | None = None) -> int:
    """Write the config, serve, print the ready line, stop on SIGTERM or end of stdin."""
    parser = argparse.ArgumentParser(prog="python -m targets.wide")
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--methods", type=int, default=1000)
    parser.add_argument("--roles", type=int, default=20)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    write(args.dir, args.services, args.methods, args.roles)
    server, port = serve(args.services, args.methods, args.roles)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def until_stdin_closes() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    print(f"ready 127.0.0.1:{port}", flush=True)
    done.wait()
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
