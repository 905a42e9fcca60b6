"""Service descriptors: what methods the target declares and what their messages look like.

Three sources, in order of preference: a FileDescriptorSet file (``schema.descriptor_set``),
.proto files compiled with grpcio-tools (``schema.proto_files``), or server reflection when
the target exposes it. All parsing is protobuf's own; each set gets a private descriptor
pool so that it never clashes with what the harness itself imports.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Sequence
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
        self._by_path: dict[str, MethodInfo] = {}
        for info in self.methods:
            self._by_path.setdefault(info.path, info)  # the first declared, as a scan would

    @property
    def services(self) -> tuple[str, ...]:
        """Declared service names, in declaration order, without duplicates."""
        return tuple(dict.fromkeys(m.service for m in self.methods))

    def method(self, path: str) -> MethodInfo:
        """The method at ``path``; KeyError if the descriptors do not declare it."""
        return self._by_path[path]

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


@dataclass(frozen=True)
class Decoded:
    """One response message as read: the bytes, and the message (``None``: it did not parse).

    ``undecodable`` also holds for bytes that parsed into no declared field at all (only
    unknown ones): the descriptors say nothing of what they carry.
    """

    blob: bytes
    message: Message | None

    @property
    def undecodable(self) -> bool:
        """It did not parse, or parsed into no declared field."""
        return self.message is None or (bool(self.blob) and not self.message.ListFields())


def decode_each(cls: type[Message], responses: Iterable[bytes]) -> list[Decoded]:
    """Each of ``responses`` parsed as ``cls``, in order."""
    out = []
    for blob in responses:
        try:
            out.append(Decoded(blob, cls.FromString(blob)))
        except DecodeError:
            out.append(Decoded(blob, None))
    return out


# -- where responses carry records, and what sets a page's size ---------------------------

#: Verbs a method name starts with (AIP standard methods and common custom ones); what
#: follows is the resource it acts on (``GetLabOrder`` -> ``LabOrder``). Longest first.
_VERBS = (
    "BatchGet", "Subscribe", "Describe", "Export", "Search", "Lookup", "Stream", "Update",
    "Create", "Delete", "Upsert", "Query", "Fetch", "Watch", "Count", "Patch", "List",
    "Find", "Read", "Scan", "Get",
)  # fmt: skip
#: Verbs whose methods answer with any number of records (a filter narrows them).
_LISTING_VERBS = frozenset({"List", "Search", "Query", "Find", "Stream", "Export", "Scan"})
#: Message types that are never a service's record (timestamps, masks, statuses, ...).
_NOT_RECORDS = ("google.protobuf.", "google.rpc.", "google.type.")
#: How many fields deep a record may sit in a response (``{data: {patient: ...}}`` is 2).
_RECORD_DEPTH = 3


@dataclass(frozen=True)
class Records:
    """Where a method's response messages carry its records, as the descriptors say.

    Attributes:
        method: The method's path.
        record_type: The record message's full name.
        path: Field names from the response message to the records; ``()`` when each
            response message is a record itself.
        repeated: The last field of ``path`` is repeated: a page of records (AIP-132
            ``repeated X xs`` beside ``next_page_token``).
        lists: The method answers with any number of records: a page, or a server stream
            of records from a listing method (List, Search, Query, Find, Stream, Export).
        basis: How the record type was found: ``declared`` (``schema.record_types``),
            ``named`` (the type named for the method's resource), ``family`` (the type
            the methods of one resource share), ``page`` (the one repeated message field
            of a response), or ``response`` (nothing else: the response itself).
    """

    method: str
    record_type: str
    path: tuple[str, ...] = ()
    repeated: bool = False
    lists: bool = False
    basis: str = "response"

    @property
    def found(self) -> bool:
        """Whether the record type was found (not merely the response taken for it)."""
        return self.basis != "response"

    def records(self, message: Any) -> list[Any]:
        """The records in one decoded response message (none where a field on the path is unset)."""
        node = message
        for name in self.path[:-1]:
            if not node.HasField(name):
                return []
            node = getattr(node, name)
        if not self.path:
            return [node]
        last = self.path[-1]
        if self.repeated:
            return list(getattr(node, last))
        return [getattr(node, last)] if node.HasField(last) else []


def resource_noun(method_name: str) -> str:
    """The resource a method acts on: its name without a leading verb (``""`` if none)."""
    for verb in _VERBS:
        rest = method_name[len(verb) :]
        if method_name.startswith(verb) and rest[:1].isupper():
            return rest
    return ""


def _verb(method_name: str) -> str:
    noun = resource_noun(method_name)
    return method_name[: len(method_name) - len(noun)] if noun else ""


def singular(noun: str) -> str:
    """An English plural made singular, as resource names are (``Histories`` -> ``History``)."""
    if noun.endswith("ies") and len(noun) > 3:
        return noun[:-3] + "y"
    if noun.endswith(("sses", "xes", "ches", "shes", "zes")):
        return noun[:-2]
    if noun.endswith("s") and not noun.endswith(("ss", "us", "is")):
        return noun[:-1]
    return noun


def _is_record_type(message: Any) -> bool:
    return not message.full_name.startswith(_NOT_RECORDS) and not message.GetOptions().map_entry


def carriers(message: Any, depth: int = _RECORD_DEPTH) -> list[tuple[tuple[str, ...], Any, bool]]:
    """The message fields of ``message`` a record could sit in, shallowest first.

    (path, message type, repeated) each, down to ``depth`` fields: through singular message
    fields only (a repeated field ends a path), never into map entries or the well-known
    google.* types.
    """
    found: list[tuple[tuple[str, ...], Any, bool]] = []
    level: list[tuple[tuple[str, ...], Any]] = [((), message)]
    for _ in range(depth):
        below = []
        for path, node in level:
            for fd in node.fields:
                kind = fd.message_type
                if kind is None or not _is_record_type(kind):
                    continue
                found.append(((*path, fd.name), kind, is_repeated(fd)))
                if not is_repeated(fd):
                    below.append(((*path, fd.name), kind))
        level = below
    return found


def _shape(
    method: MethodInfo, output: Any, wanted: Callable[[Any], bool], basis: str
) -> Records | None:
    """The shallowest place in ``output`` whose type ``wanted(type)`` accepts."""
    lists = method.server_streaming and _verb(method.name) in _LISTING_VERBS
    if wanted(output):
        return Records(method.path, output.full_name, (), False, lists, basis)
    for path, kind, repeated in carriers(output):
        if wanted(kind):
            return Records(method.path, kind.full_name, path, repeated, lists or repeated, basis)
    return None


def _family_types(catalogue: MethodCatalogue, method: MethodInfo) -> set[str]:
    """The record types the methods of ``method``'s resource (same service) share.

    The types carried (:func:`carriers`, or the response itself) by the most methods of
    the family, at least two: ``LabOrder`` for ``GetResult -> {payload: LabOrder}`` and
    ``ListResults -> {repeated LabOrder results}``.
    """
    noun = singular(resource_noun(method.name))
    if not noun:
        return set()
    counts: dict[str, int] = {}
    for m in catalogue.methods:
        if m.service != method.service or singular(resource_noun(m.name)) != noun:
            continue
        output = catalogue.message_class(m.output_type).DESCRIPTOR
        kinds = {kind.full_name for _, kind, _ in carriers(output)}
        if _is_record_type(output):
            kinds.add(output.full_name)
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
    most = max(counts.values(), default=0)
    return {kind for kind, n in counts.items() if n == most} if most >= 2 else set()


def record_shape(catalogue: MethodCatalogue, path: str, declared: Iterable[str] = ()) -> Records:
    """Where ``path``'s responses carry its records (:class:`Records`).

    In order: a type of ``declared`` (``schema.record_types``); the type named for the
    method's resource (``LabOrder`` for ``GetLabOrder`` and ``ListLabOrders``); the type
    every method of that resource can carry; the one repeated message field of an AIP-132
    page. Each is looked for in the response itself, then in its message fields, one or
    two levels down (``GetLabOrderResponse{order}``, ``{data: {patient: ...}}``),
    shallowest first. Failing all, the response itself.

    Raises:
        KeyError: the descriptors do not declare ``path``.
    """
    method = catalogue.method(path)
    output = catalogue.message_class(method.output_type).DESCRIPTOR
    names = {n.lower() for n in (resource_noun(method.name), singular(resource_noun(method.name)))}
    names.discard("")
    family = _family_types(catalogue, method)
    declared = set(declared)
    for basis, wanted in (
        ("declared", lambda t: t.full_name in declared),
        ("named", lambda t: t.name.lower() in names),
        ("family", lambda t: t.full_name in family),
    ):
        shape = _shape(method, output, wanted, basis)
        if shape is not None:
            return shape
    pages = [(p, k) for p, k, repeated in carriers(output, 1) if repeated]
    if len(pages) == 1:
        (field,), kind = pages[0]
        return Records(path, kind.full_name, (field,), True, True, "page")
    lists = method.server_streaming and _verb(method.name) in _LISTING_VERBS
    return Records(path, output.full_name, (), False, lists)


#: Request fields that set a page's size, in order of preference, as their names read
#: lower-cased without underscores: AIP-158 ``page_size``, then the common others.
PAGE_SIZE_NAMES = (
    "pagesize", "maxresults", "limit", "pagelimit", "perpage", "maxpagesize", "first",
    "count", "top", "maxitems",
)  # fmt: skip
#: A message field holding the page settings (``paging { limit }``): its name has one.
_PAGE_HOLDERS = ("page", "pagin")
_INTEGER_TYPES = frozenset(
    {
        descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
        descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
        descriptor_pb2.FieldDescriptorProto.TYPE_SINT32,
        descriptor_pb2.FieldDescriptorProto.TYPE_SINT64,
        descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32,
        descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64,
        descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32,
        descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64,
    }
)


def _squashed(name: str) -> str:
    return name.replace("_", "").lower()


def _integer_field(message: Any, dotted: str) -> bool:
    """Whether ``dotted`` (proto or JSON names) is a singular integer field of ``message``."""
    node, fd = message, None
    for part in dotted.split("."):
        if node is None:
            return False
        fd = node.fields_by_name.get(part) or next(
            (f for f in node.fields if f.json_name == part), None
        )
        if fd is None or is_repeated(fd):
            return False
        node = fd.message_type
    return fd is not None and fd.type in _INTEGER_TYPES


def _proto_path(message: Any, dotted: str) -> str:
    """``dotted`` with JSON names written as proto names."""
    names, node = [], message
    for part in dotted.split("."):
        fd = node.fields_by_name.get(part) or next(f for f in node.fields if f.json_name == part)
        names.append(fd.name)
        node = fd.message_type
    return ".".join(names)


def page_size_field(
    catalogue: MethodCatalogue, path: str, declared: str | None = None
) -> str | None:
    """The request field of ``path`` that sets a page's size, as a dotted proto path.

    ``declared`` (``limits.page_size_field``) when the request has it, else the first
    integer field named in :data:`PAGE_SIZE_NAMES` (``page_size``, ``max_results``,
    ``limit``, ``pageSize``, ...), else one inside a paging message (``paging.limit``,
    ``page.size``). ``None`` when the request has none.

    Raises:
        KeyError: the descriptors do not declare ``path``.
    """
    request = catalogue.message_class(catalogue.method(path).input_type).DESCRIPTOR
    if declared and _integer_field(request, declared):
        return _proto_path(request, declared)
    integers = {
        _squashed(f.name): f.name
        for f in request.fields
        if f.type in _INTEGER_TYPES and not is_repeated(f)
    }
    for name in PAGE_SIZE_NAMES:
        if name in integers:
            return integers[name]
    for holder in request.fields:
        kind = holder.message_type
        if (
            kind is None
            or is_repeated(holder)
            or not _squashed(holder.name).startswith(_PAGE_HOLDERS)
        ):
            continue
        inner = {_squashed(f.name): f.name for f in kind.fields if f.type in _INTEGER_TYPES}
        for name in (*PAGE_SIZE_NAMES, "size"):
            if name in inner and not is_repeated(kind.fields_by_name[inner[name]]):
                return f"{holder.name}.{inner[name]}"
    return None
