"""Shared plumbing of the call-based checks: calls to make, fan-out, request templates."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import empty_pb2, json_format, unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from harness.channels import CallResult
from harness.descriptors import MethodInfo, Records, is_repeated
from harness.outcome import NotApplicable
from harness.policy import Policy
from harness.principals import BEARER, Presentation, Principal
from harness.run import Run

#: Why a control that needs the target's methods did not run ({}: the catalogue's problem).
NO_DESCRIPTORS = "no method descriptors: {}"


#: Why a control that sends bursts or malformed transport traffic did not run.
TRANSPORT_ABUSE = "needs --hipaa-allow-transport-abuse (or safety.allow_transport_abuse = true)"


def bearer(token: str, presentation: Presentation = BEARER) -> tuple[tuple[str, str], ...]:
    """Metadata carrying ``token`` as a credential, where ``presentation`` puts it.

    ``authorization: Bearer <token>`` by default; pass the presentation of the principal
    the token stands for (``Principal.presentation``: ``auth.header``, ``auth.scheme``).
    """
    return presentation.metadata(token)


@dataclass(frozen=True)
class Call:
    """One call to make: what to send, and how to describe it in evidence."""

    label: str
    method: str
    requests: tuple[bytes, ...]
    principal: Principal | None = None
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    retry_exhausted: bool = True  # False where RESOURCE_EXHAUSTED is itself the answer


def send(run: Run, calls: Sequence[Call]) -> list[tuple[Call, CallResult]]:
    """Make every call, concurrently over the run's channel, in order."""

    def one(p: Call) -> tuple[Call, CallResult]:
        return p, run.call(
            p.method,
            p.requests,
            principal=p.principal,
            extra_metadata=p.metadata,
            retry_exhausted=p.retry_exhausted,
        )

    made = run.map(one, calls)
    remember(run, [(r.request_id, c.requests) for c, r in made])
    return made


#: The most request bytes of one call :func:`remember` keeps.
_REMEMBERED_BYTES = 64 * 1024


def remember(run: Run, sent: Sequence[tuple[str, Sequence[bytes]]]) -> None:
    """Keep what each call (by request ID) sent, so that its events can be told by resource.

    Under tuple correlation an event that records the record ID a call named is that call's
    rather than another's (:func:`harness.audit.correlate`); a call over 64 KiB is not kept,
    nor anything by a run that keeps no memo (a replay of recorded answers).
    """
    if not hasattr(run, "memo"):
        return
    kept = run.memo(REQUESTS, dict)
    for request_id, requests in sent:
        if request_id and sum(len(r) for r in requests) <= _REMEMBERED_BYTES:
            kept[request_id] = tuple(requests)


#: The run memo that holds what :func:`send` sent, by request ID.
REQUESTS = "sent-requests"


def sent_requests(run: Run) -> dict[str, tuple[bytes, ...]]:
    """What each call made through :func:`send` sent, by request ID (a copy)."""
    return dict(run.memo(REQUESTS, dict))


def policy_or_skip(run: Run) -> Policy:
    """The run's policy (descriptors x declared policy).

    Raises:
        NotApplicable: There are no method descriptors (the check is a SKIP saying why).
    """
    policy = Policy.of(run)
    if policy is None:
        raise NotApplicable(NO_DESCRIPTORS.format(run.catalogue_problem()))
    return policy


def read_methods(policy: Policy) -> list[MethodInfo]:
    """Every protected method that does not write (the MIN and LIMIT controls read them)."""
    return [m for m in policy.protected() if not policy.is_write(m.path)]


def strings_in(message: Any) -> set[str]:
    """Every string value in a decoded message, nested messages and maps included."""
    found: set[str] = set()
    for field, value in message.ListFields():
        values = value if is_repeated(field) else [value]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            values = [value[k] for k in value] + list(value)
        for v in values:
            if isinstance(v, str):
                found.add(v)
            elif hasattr(v, "ListFields"):
                found |= strings_in(v)
    return found


#: Scalars :func:`values_in` reads: text, bytes, and integers of any width (not bools,
#: enums or floats, which name no record).
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_SCALARS = _INTEGERS | {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES}
#: The protobuf wire type of strings, bytes and nested messages.
WIRE_LENGTH_DELIMITED = 2
#: How deep :func:`values_in` follows nested messages and raw wire bytes.
_DEPTH = 32
Scalar = str | bytes | int
Resolve = Callable[[str], Any]


#: What may not touch an ID for a string to name it (``patients/p-7`` names ``p-7``;
#: ``p-71`` does not).
_ID_EDGE = "A-Za-z0-9"


def ids_named(values: Iterable[Scalar], ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` the values name.

    A string, or bytes read as UTF-8, names an ID it holds as a whole token
    (``patients/p-7``, ``"note on p-7"``); an integer names a numeric ID it equals.
    """
    wanted = {str(i) for i in ids if str(i)}
    if not wanted:
        return set()
    alternatives = "|".join(re.escape(i) for i in sorted(wanted, key=len, reverse=True))
    pattern = re.compile(rf"(?<![{_ID_EDGE}])(?:{alternatives})(?![{_ID_EDGE}])")
    found: set[str] = set()
    for value in values:
        if isinstance(value, int):
            found |= {str(value)} & wanted
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        found |= set(pattern.findall(text))
    return found


def values_in(message: Any, resolve: Resolve | None = None, depth: int = 0) -> Iterator[Scalar]:
    """Every string, bytes and integer value in a decoded message, at any depth.

    Nested messages, map keys and values, ``google.protobuf.Any`` payloads (decoded with
    ``resolve(type_name)`` -> message class when it knows the type, else read as raw wire
    format) and fields the message's type does not declare (raw wire format: see
    :func:`wire_values`) are all read.
    """
    if depth > _DEPTH:
        return
    if message.DESCRIPTOR.full_name == "google.protobuf.Any":
        yield from _packed(message, resolve, depth)
        return
    for fd, value in message.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            items: list[Any] = [*value, *(value[k] for k in value)]
        else:
            items = list(value) if is_repeated(fd) else [value]
        for item in items:
            if hasattr(item, "ListFields"):
                yield from values_in(item, resolve, depth + 1)
            elif isinstance(item, (str, bytes)) or (
                isinstance(item, int) and not isinstance(item, bool) and fd.type in _SCALARS
            ):
                yield item
    yield from _unknown(message, depth)


def record_values(
    message: Any, records: Records, resolve: Resolve | None = None
) -> tuple[int, list[Scalar]]:
    """The records a decoded response carries (``records``): how many, and their values.

    Every value of every record (:func:`values_in`), and those of the fields the
    response's type does not declare (nobody can say they are not records); never the
    wrapper's own declared fields, such as an echoed filter or a ``next_page_token``
    that encodes the query.
    """
    found = records.records(message)
    values: list[Scalar] = [v for record in found for v in values_in(record, resolve)]
    values += _unknown(message, 0)
    return len(found), values


def _packed(message: Any, resolve: Resolve | None, depth: int) -> Iterator[Scalar]:
    """The values of an ``Any``'s payload: decoded when ``resolve`` knows its type."""
    cls = None
    if resolve is not None:
        with contextlib.suppress(KeyError):
            cls = resolve(message.type_url.rsplit("/", 1)[-1])
    if cls is not None:
        try:
            payload = cls.FromString(message.value)
        except DecodeError:
            payload = None
        if payload is not None:
            yield from values_in(payload, resolve, depth + 1)
            return
    yield from wire_values(message.value, depth + 1)


def _unknown(message: Any, depth: int) -> Iterator[Scalar]:
    """The values of the fields ``message``'s type does not declare (raw wire format)."""
    found = unknown_fields.UnknownFieldSet(message)
    for f in (found[i] for i in range(len(found))):
        if f.wire_type == WIRE_LENGTH_DELIMITED:
            yield from _raw_bytes(f.data, depth + 1)
        elif isinstance(f.data, int):
            yield f.data


def wire_values(blob: bytes, depth: int = 0) -> Iterator[Scalar]:
    """The values in protobuf bytes of a type nobody declared.

    Varints and fixed-width fields as integers, length-delimited ones as bytes and, unless
    they read as text, as a nested message. Bytes that do not parse are one bytes value.
    """
    try:
        parsed = empty_pb2.Empty.FromString(blob)
    except DecodeError:
        yield blob
        return
    yield from _unknown(parsed, depth)


def _raw_bytes(data: bytes, depth: int) -> Iterator[Scalar]:
    yield data
    try:
        printable = data.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        printable = False
    if data and not printable and depth <= _DEPTH:  # text would parse as noise
        with contextlib.suppress(DecodeError):
            yield from _unknown(empty_pb2.Empty.FromString(data), depth)


def template_text(run: Run, path: str, key: str = "schema.request_templates") -> str:
    """The request template of ``path`` as JSON text (from ``key``, else the request ones)."""
    value = run.config.table(key).get(path)
    if value is None and key != "schema.request_templates":
        value = run.config.table("schema.request_templates").get(path)
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


#: An integer ID as config gives it (``42``, ``"42"``, ``"-7"``) or a template holds it.
_INTEGER = re.compile(r"-?[0-9]+")
#: Where a nonexistent integer ID is made up: high in int32, clear of small sequences.
_ABSENT_BASE, _ABSENT_SPAN = 2_000_000_000, 100_000_000


#: What :func:`_document` returns for text that is not JSON.
_UNPARSED = object()


def _document(text: str) -> Any:
    """The template parsed as JSON; :data:`_UNPARSED` when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return _UNPARSED


def _number_is(value: Any, ident: str) -> bool:
    """Whether ``value`` is a JSON integer equal to the ID ``ident`` (digits)."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and _INTEGER.fullmatch(ident) is not None
        and value == int(ident)
    )


def _slots(node: Any, ident: str) -> Iterator[str]:
    """Where ``node`` (parsed JSON) names ``ident``: ``"string"`` and/or ``"number"`` each time.

    A string value or an object key equal to it, or an integer value equal to it.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key == ident:
                yield "string"
            yield from _slots(value, ident)
    elif isinstance(node, list):
        for value in node:
            yield from _slots(value, ident)
    elif isinstance(node, str) and node == ident:
        yield "string"
    elif _number_is(node, ident):
        yield "number"


def _swapped(node: Any, old: str, new: str) -> Any:
    """``node`` with each slot naming ``old`` naming ``new`` (a number stays a number)."""
    if isinstance(node, dict):
        return {(new if k == old else k): _swapped(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_swapped(v, old, new) for v in node]
    if isinstance(node, str) and node == old:
        return new
    if _number_is(node, old):
        return int(new) if _INTEGER.fullmatch(new) else new
    return node


def swap_id(text: str, old: str | int, new: str | int) -> str:
    """``text`` (a JSON template) with the ID ``old`` replaced by ``new`` wherever it is named.

    An ID may be written as a JSON string (``"p-7"``, ``"42"``) or, when it is an integer,
    as a JSON number (``{"patientId": 42}``): a number slot gets ``new`` as a number when
    ``new`` is an integer too (see :func:`absent_id`). Text that is not JSON has the JSON
    string ``old`` replaced as text.
    """
    old, new = str(old), str(new)
    document = _document(text)
    if document is _UNPARSED:
        return text.replace(json.dumps(old), json.dumps(new))
    return json.dumps(_swapped(document, old, new))


def named_id(text: str, ids: Sequence[str | int]) -> str | None:
    """The first of ``ids`` that ``text`` names (:func:`swap_id`: a string or a number)."""
    document = _document(text)
    for ident in map(str, ids):
        if document is _UNPARSED:
            if json.dumps(ident) in text:
                return ident
        elif next(_slots(document, ident), None) is not None:
            return ident
    return None


def as_number(text: str, ident: str) -> bool:
    """Whether the JSON template ``text`` writes the ID ``ident`` as a number (an integer field)."""
    document = _document(text)
    return document is not _UNPARSED and "number" in _slots(document, str(ident))


def absent_id(text: str, named: str, nonce: str) -> str:
    """An ID no record has, to put where ``text`` names ``named``.

    ``nonexistent-<nonce>``; where the template writes ``named`` as a JSON number (an
    integer field), an integer made from the run's ``nonce`` (hex), which such a field
    can hold.
    """
    if as_number(text, named):
        return str(_ABSENT_BASE + int(nonce, 16) % _ABSENT_SPAN)
    return f"nonexistent-{nonce}"


def set_path(message: Any, dotted: str, value: str) -> bool:
    """Set string field ``dotted`` (proto names) in ``message``; False if there is none."""
    *parents, leaf = dotted.split(".")
    node = message
    for name in parents:
        if name not in node.DESCRIPTOR.fields_by_name:
            return False
        node = getattr(node, name)
    fd = node.DESCRIPTOR.fields_by_name.get(leaf)
    if fd is None or fd.type != fd.TYPE_STRING:
        return False
    setattr(node, leaf, value)
    for fm in message.DESCRIPTOR.fields:  # keep AIP-134 update masks in step
        if fm.message_type is not None and fm.message_type.full_name == "google.protobuf.FieldMask":
            mask = getattr(message, fm.name)
            relative = ".".join(dotted.split(".")[1:]) if parents else dotted
            if relative and relative not in mask.paths:
                mask.paths.append(relative)
    return True


def marked(cls: Any, text: str, nonce: str, ids: set[str]) -> bytes:
    """The template with every non-ID string value suffixed with ``nonce``.

    A denied write must leave no trace; marking its values makes any trace visible even if
    an earlier, allowed write stored the template's own values.
    """
    msg = cls()
    json_format.Parse(text, msg)

    def mark(node: Any) -> None:
        for fd, value in node.ListFields():
            if fd.type == fd.TYPE_STRING and isinstance(value, str) and value and value not in ids:
                setattr(node, fd.name, f"{value}-{nonce}")
            elif (
                fd.message_type is not None
                and hasattr(value, "ListFields")
                and fd.message_type.full_name != "google.protobuf.FieldMask"
            ):
                mark(value)

    mark(msg)
    data: bytes = msg.SerializeToString()
    return data
