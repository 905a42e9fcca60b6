"""What a bundled target's operators write for the harness: its ``hipaa.toml``, its schema.

Shared by every bundled reference (``targets/serve.py`` for the Python one,
``targets/node_reference.py`` for the Node one), so that each writes its config and compiles
its descriptors the same way.
"""

from __future__ import annotations

import json
import re
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_text(tables: dict[str, dict[str, object]], top: dict[str, object], written_by: str) -> str:
    """TOML of top-level keys and ``{table: {key: value}}``, keys quoted where TOML needs it."""
    lines = [f"# Written by {written_by}: what its operators would give the harness.", ""]
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def descriptor_set(proto: Path, include: Path) -> descriptor_pb2.FileDescriptorSet:
    """``proto`` compiled with all its imports (grpcio-tools' protoc), health.proto added.

    Raises:
        RuntimeError: protoc could not compile it.
    """
    from grpc_health.v1 import health_pb2
    from grpc_tools import protoc

    wkt = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["protoc", f"-I{include}", f"-I{wkt}", "--include_imports"]
        rc = protoc.main([*args, f"--descriptor_set_out={out}", str(proto)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto.name} (exit {rc})")
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    health = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(health)
    fds.file.append(health)
    return fds
