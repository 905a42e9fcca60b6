"""Service descriptors: what methods the target declares and what their messages look like.

Three sources, in order of preference: a FileDescriptorSet file (``schema.descriptor_set``),
.proto files compiled with grpcio-tools (``schema.proto_files``), or server reflection when
the target exposes it. All parsing is protobuf's own; each set gets a private descriptor
pool so that it never clashes with what the harness itself imports.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

from harness.errors import DescriptorError

REFLECTION_PATHS = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}
_REFLECTION_SERVICES = {
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def is_repeated(field: Any) -> bool:
    """True for repeated fields (protobuf >= 6.32 has ``is_repeated``; ``label`` before)."""
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else bool(field.label == field.LABEL_REPEATED)


@dataclass(frozen=True)
class MethodInfo:
    """One RPC method as the descriptors declare it."""

    path: str
    service: str
    name: str
    input_type: str
    output_type: str
    client_streaming: bool
    server_streaming: bool
    idempotency: str = ""  # NO_SIDE_EFFECTS or IDEMPOTENT when the method options say so
    http_verb: str = ""  # get, put, post, delete, patch, custom: its google.api.http rule


def _idempotency(options: descriptor_pb2.MethodOptions) -> str:
    level = options.idempotency_level
    if level == descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN:
        return ""
    return descriptor_pb2.MethodOptions.IdempotencyLevel.Name(level)


def _http_verb(options: descriptor_pb2.MethodOptions) -> str:
    """The verb of the method's ``google.api.http`` rule, or ``""`` without one."""
    from google.api import annotations_pb2

    # Re-parsed so that the extension, registered by the import above, is read.
    parsed = descriptor_pb2.MethodOptions.FromString(options.SerializeToString())
    if not parsed.HasExtension(annotations_pb2.http):
        return ""
    return parsed.Extensions[annotations_pb2.http].WhichOneof("pattern") or ""


class MethodCatalogue:
    """The methods of a FileDescriptorSet and message classes to build their requests."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet, source: str) -> None:
        self.source = source
        self._pool = descriptor_pool.DescriptorPool()
        by_name = {f.name: f for f in files.file}
        added: set[str] = set()

        def add(name: str, chain: tuple[str, ...]) -> None:
            if name in added:
                return
            if name in chain[:-1]:
                raise DescriptorError(f"{source}: import cycle: {' -> '.join((*chain, name))}")
            if name not in by_name:
                raise DescriptorError(
                    f"{source}: {chain[-1]} imports {name}, which is not in the set "
                    "(build it with protoc --include_imports)"
                )
            for dep in by_name[name].dependency:
                add(dep, (*chain, name))
            try:
                self._pool.Add(by_name[name])
            except (TypeError, ValueError) as exc:
                raise DescriptorError(f"{source}: cannot load {name}: {exc}") from None
            added.add(name)

        for f in files.file:
            add(f.name, (f.name,))
        methods = []
        for f in files.file:
            for svc in f.service:
                full = f"{f.package}.{svc.name}" if f.package else svc.name
                for m in svc.method:
                    methods.append(
                        MethodInfo(
                            path=f"/{full}/{m.name}",
                            service=full,
                            name=m.name,
                            input_type=m.input_type.lstrip("."),
                            output_type=m.output_type.lstrip("."),
                            client_streaming=m.client_streaming,
                            server_streaming=m.server_streaming,
                            idempotency=_idempotency(m.options),
                            http_verb=_http_verb(m.options),
                        )
                    )
        self.methods: tuple[MethodInfo, ...] = tuple(methods)

    @property
    def services(self) -> tuple[str, ...]:
        """Declared service names, in declaration order, without duplicates."""
        return tuple(dict.fromkeys(m.service for m in self.methods))

    def method(self, path: str) -> MethodInfo:
        """The method at ``path``; KeyError if the descriptors do not declare it."""
        for m in self.methods:
            if m.path == path:
                return m
        raise KeyError(path)

    def message_class(self, full_name: str) -> type[Message]:
        """The message class for ``full_name`` in this set's pool."""
        return message_factory.GetMessageClass(self._pool.FindMessageTypeByName(full_name))

    def request_bytes(self, path: str, template: str | dict[str, Any] | None) -> bytes:
        """The serialized request for ``path``: the template, or the default instance.

        Raises:
            DescriptorError: the template is not valid JSON for the input type.
        """
        cls = self.message_class(self.method(path).input_type)
        msg = cls()
        if template is not None:
            text = template if isinstance(template, str) else json.dumps(template)
            try:
                json_format.Parse(text, msg)
            except (json_format.ParseError, ValueError) as exc:
                raise DescriptorError(
                    f"schema.request_templates.{path}: "
                    f"not a valid {cls.DESCRIPTOR.full_name}: {exc}"
                ) from None
        return msg.SerializeToString()


def load_descriptor_set(path: Path) -> MethodCatalogue:
    """Load a FileDescriptorSet file (``protoc --include_imports --descriptor_set_out``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DescriptorError(
            f"schema.descriptor_set: cannot read {path}: {exc.strerror}"
        ) from None
    return catalogue_from_bytes(data, str(path))


def catalogue_from_bytes(data: bytes, source: str) -> MethodCatalogue:
    """A catalogue from a serialized FileDescriptorSet.

    Raises:
        DescriptorError: not a FileDescriptorSet, empty, or not loadable (never anything
            else).
    """
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(data)
    except DecodeError:
        raise DescriptorError(
            f"schema.descriptor_set: {source} is not a FileDescriptorSet"
        ) from None
    if not files.file:
        raise DescriptorError(f"schema.descriptor_set: {source} holds no files")
    return MethodCatalogue(files, source)


def compile_protos(files: Sequence[Path], include_paths: Sequence[Path]) -> MethodCatalogue:
    """Compile .proto files with grpcio-tools' protoc and load the result."""
    from grpc_tools import protoc

    wkt = resources.files("grpc_tools") / "_proto"
    includes = [*include_paths, *{f.parent for f in files}]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["protoc", *(f"-I{p}" for p in includes), f"-I{wkt}", "--include_imports"]
        args += [f"--descriptor_set_out={out}", *(str(f) for f in files)]
        if protoc.main(args) != 0 or not out.exists():
            names = ", ".join(f.name for f in files)
            raise DescriptorError(
                f"schema.proto_files: protoc could not compile {names} (see its output above)"
            )
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return MethodCatalogue(fds, "schema.proto_files")


def fetch_via_reflection(
    channel: grpc.Channel,
    metadata: Iterable[tuple[str, str]] = (),
    *,
    timeout: float = 5.0,
    max_requests: int = 200,
) -> MethodCatalogue:
    """Ask the target's reflection service (v1, then v1alpha) for its descriptors.

    Raises:
        DescriptorError: neither reflection version answered with descriptors.
    """
    from grpc_reflection.v1alpha import reflection_pb2 as rpb

    md = tuple(metadata)
    problems = []
    for version, path in REFLECTION_PATHS.items():

        def ask(requests: list[Any], path: str = path) -> list[Any]:
            call = channel.stream_stream(
                path,
                request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                response_deserializer=rpb.ServerReflectionResponse.FromString,
            )
            return list(call(iter(requests), metadata=md, timeout=timeout))

        try:
            listing = ask([rpb.ServerReflectionRequest(list_services="")])
            services = [
                s.name
                for r in listing
                for s in r.list_services_response.service
                if s.name not in _REFLECTION_SERVICES
            ]
            files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
            wanted = [rpb.ServerReflectionRequest(file_containing_symbol=s) for s in services]
            sent = 0
            while wanted and sent < max_requests:
                batch, wanted = wanted[:20], wanted[20:]
                sent += len(batch)
                for r in ask(batch):
                    for blob in r.file_descriptor_response.file_descriptor_proto:
                        fd = descriptor_pb2.FileDescriptorProto.FromString(blob)
                        files.setdefault(fd.name, fd)
                missing = {d for f in files.values() for d in f.dependency} - set(files)
                wanted += [rpb.ServerReflectionRequest(file_by_filename=n) for n in sorted(missing)]
            if files:
                return MethodCatalogue(
                    descriptor_pb2.FileDescriptorSet(file=list(files.values())),
                    f"reflection {version}",
                )
            problems.append(f"{version}: no descriptors")
        except grpc.RpcError as err:
            problems.append(f"{version}: {err.code().name}")
        except DecodeError:
            problems.append(f"{version}: undecodable reply")
    raise DescriptorError("reflection gave no descriptors (" + "; ".join(problems) + ")")
