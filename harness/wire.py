"""Wire-level mutations of serialized protobuf requests (FUZZ-002).

A valid request is split into its top-level fields by protobuf itself (parsed as an
empty message, every field lands in its unknown-field set), then damaged the ways
parsers and handlers get wrong: truncated and over-long varints, wrong wire types, field
number 0, length prefixes larger than the data, duplicated singular fields, unknown
fields, invalid UTF-8 in strings, and nesting bombs (deep recursive messages and deep
unknown groups). Only *encoding* is done here; decoding stays with protobuf.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_FIELD = 2**29 - 1
#: Nesting depths tried: past typical handler limits, around protobuf's limit of 100, far past.
BOMB_DEPTHS = (9, 16, 33, 99, 101, 1000, 10_000)

Field = tuple[int, int, bytes]  # number, wire type, encoded value (no tag)


def varint(n: int) -> bytes:
    """``n`` as a protobuf varint (negative numbers as their 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """The key of a field."""
    return varint((number << 3) | wire_type)


def length_delimited(number: int, data: bytes) -> bytes:
    """A LEN field holding ``data``."""
    return tag(number, LEN) + varint(len(data)) + data


def split(payload: bytes) -> list[Field] | None:
    """The top-level fields of ``payload`` as protobuf parses them; None if it does not parse."""
    try:
        parsed = UnknownFieldSet(empty_pb2.Empty.FromString(payload))
    except (DecodeError, RuntimeError, ValueError):
        return None
    fields: list[Field] = []
    for f in parsed:  # type: ignore[attr-defined]
        if f.wire_type == VARINT:
            fields.append((f.field_number, VARINT, varint(f.data)))
        elif f.wire_type == I64:
            fields.append((f.field_number, I64, int(f.data).to_bytes(8, "little")))
        elif f.wire_type == I32:
            fields.append((f.field_number, I32, int(f.data).to_bytes(4, "little")))
        elif f.wire_type == LEN:
            fields.append((f.field_number, LEN, varint(len(f.data)) + bytes(f.data)))
        else:  # groups are rare in proto3 requests: keep the field out of the rebuilt message
            continue
    return fields


def join(fields: list[Field]) -> bytes:
    """Serialize fields again."""
    return b"".join(tag(n, w) + v for n, w, v in fields)


def _pick(fields: list[Field], rng: random.Random, wire_type: int | None = None) -> int | None:
    idx = [i for i, f in enumerate(fields) if wire_type is None or f[1] == wire_type]
    return rng.choice(idx) if idx else None


def _truncated_varint(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    if fields and (i := _pick(fields, rng, VARINT)) is not None:
        n, w, _v = fields[i]
        cut = [*fields[:i], *fields[i + 1 :]]
        return join(cut) + tag(n, w) + b"\xff" * rng.randint(1, 9)  # continuation bits, then EOF
    return payload + tag(rng.randint(1, 15), VARINT) + b"\x80"


def _overlong_varint(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    # 11 continuation bytes: longer than any 64-bit varint may be.
    return payload + tag(rng.randint(1, 15), VARINT) + b"\xff" * 10 + b"\x01"


def _wrong_wire_type(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    i = _pick(fields, rng)
    if i is None:
        return tag(1, rng.choice((I64, LEN, I32))) + b"\x01"
    n, w, v = fields[i]
    other = rng.choice([t for t in (VARINT, I64, LEN, I32) if t != w])
    return join(fields[:i]) + tag(n, other) + v + join(fields[i + 1 :])


def _field_zero(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    zero = rng.choice((tag(0, VARINT) + b"\x01", tag(0, LEN) + b"\x01x", b"\x00"))
    return zero + payload if rng.random() < 0.5 else payload + zero


def _overlong_length(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    i = _pick(fields, rng, LEN)
    number = fields[i][0] if i is not None else rng.randint(1, 15)
    claimed = rng.choice((2**31 - 1, 2**32 - 1, 2**63, 1 << 20, 64))
    rest = [f for j, f in enumerate(fields) if j != i]
    return join(rest) + tag(number, LEN) + varint(claimed) + b"x" * rng.randint(0, 8)


def _duplicated(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    i = _pick(fields, rng)
    if i is None:
        return payload
    n, w, v = fields[i]
    if w == VARINT:
        other = varint(rng.choice((0, 1, 2**31 - 1, 2**63 - 1, 2**64 - 1)))
    elif w == LEN:
        other = varint(1) + b"\x00"
    else:
        other = bytes(len(v))
    return payload + tag(n, w) + other + tag(n, w) + v


def _unknown_fields(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    extra = [
        tag(rng.choice((MAX_FIELD, 1000, 18999, 20000)), VARINT) + varint(rng.getrandbits(64)),
        tag(rng.randint(100, 5000), I32) + bytes(4),
        tag(rng.randint(100, 5000), I64) + bytes(8),
        length_delimited(rng.randint(100, 5000), rng.randbytes(rng.randint(0, 64))),
    ]
    rng.shuffle(extra)
    return payload + b"".join(extra[: rng.randint(1, 4)])


def _group_bomb(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    depth = rng.choice(BOMB_DEPTHS)
    number = rng.randint(100, 5000)
    return payload + tag(number, SGROUP) * depth + tag(number, EGROUP) * depth


def _bad_utf8(payload: bytes, fields: list[Field], rng: random.Random, desc: Any) -> bytes:
    strings = [f.number for f in desc.fields if f.type == FieldDescriptor.TYPE_STRING]
    if not strings:
        return payload
    bad = rng.choice((b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"ok\x80"))
    return payload + length_delimited(rng.choice(strings), bad)


def recursion_path(desc: Descriptor) -> list[FieldDescriptor] | None:
    """Fields leading from ``desc`` to a message field of its own type somewhere below.

    The path ends with the self-referencing field, so repeating its last element nests
    without bound. Breadth-first, so the shortest path wins.
    """
    queue: list[tuple[Descriptor, list[FieldDescriptor]]] = [(desc, [])]
    seen = {desc.full_name}
    while queue:
        current, path = queue.pop(0)
        for f in current.fields:
            sub = f.message_type
            if sub is None or sub.GetOptions().map_entry:
                continue
            if sub.full_name == current.full_name:
                return [*path, f]
            if sub.full_name not in seen:
                seen.add(sub.full_name)
                queue.append((sub, [*path, f]))
    return None


def nesting_bomb(desc: Descriptor, depth: int) -> bytes | None:
    """A ``desc`` request nesting its recursive field ``depth`` deep; None if none recurses."""
    path = recursion_path(desc)
    if path is None:
        return None
    inner = b""
    for _ in range(depth):
        inner = length_delimited(path[-1].number, inner)
    for f in reversed(path[:-1]):
        inner = length_delimited(f.number, inner)
    return inner


def _recursion_bomb(payload: bytes, fields: list[Field], rng: random.Random, desc: Any) -> bytes:
    bomb = nesting_bomb(desc, rng.choice(BOMB_DEPTHS))
    return payload + bomb if bomb is not None else _group_bomb(payload, fields, rng, desc)


def _truncated(payload: bytes, fields: list[Field], rng: random.Random, _: Any) -> bytes:
    return payload[: rng.randint(0, max(0, len(payload) - 1))] if payload else b"\x0a"


Mutation = Callable[[bytes, list[Field], random.Random, Any], bytes]
MUTATIONS: dict[str, Mutation] = {
    "truncated-varint": _truncated_varint,
    "overlong-varint": _overlong_varint,
    "wrong-wire-type": _wrong_wire_type,
    "field-number-0": _field_zero,
    "overlong-length": _overlong_length,
    "duplicated-field": _duplicated,
    "unknown-fields": _unknown_fields,
    "group-bomb": _group_bomb,
    "recursion-bomb": _recursion_bomb,
    "invalid-utf8": _bad_utf8,
    "truncated": _truncated,
}


def mutate(payload: bytes, kind: str, rng: random.Random, desc: Descriptor) -> bytes:
    """``payload`` (a serialized ``desc`` message) damaged by mutation ``kind``."""
    fields = split(payload) or []
    return MUTATIONS[kind](payload, fields, rng, desc)
