"""Hypothesis strategies for any protobuf message, built from its descriptor.

Every scalar type comes with its edge values (0, +-1, the type's min and max, NaN, +-inf,
-0.0), strings with empty, long and non-BMP text, bytes of any value, enums with numbers
outside the declared set, repeated fields and maps, and nested messages. Recursive
messages are generated as chains whose depth is drawn uniformly up to ``max_depth``, so
deep nesting is as likely as shallow: random recursion alone would almost never go deep.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

from harness.descriptors import is_repeated

_I32, _I64 = 2**31, 2**63
_INTS = {
    FieldDescriptor.TYPE_INT32: (-_I32, _I32 - 1),
    FieldDescriptor.TYPE_SINT32: (-_I32, _I32 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-_I32, _I32 - 1),
    FieldDescriptor.TYPE_INT64: (-_I64, _I64 - 1),
    FieldDescriptor.TYPE_SINT64: (-_I64, _I64 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-_I64, _I64 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2 * _I32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2 * _I32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2 * _I64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2 * _I64 - 1),
}


def _int(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (0, 1, -1, lo, hi, lo + 1, hi - 1) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.text(max_size=40),
        st.text(
            st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF), min_size=1, max_size=8
        ),
        st.builds(lambda n: "x" * n, st.integers(1024, 65536)),
    )


def _scalar(field: Any) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INTS:
        return _int(*_INTS[t])
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.one_of(
            st.sampled_from([0.0, -0.0, float("nan"), float("inf"), -float("inf")]), st.floats()
        )
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.one_of(
            st.sampled_from([0.0, -0.0, float("nan"), float("inf")]), st.floats(width=32)
        )
    if t == FieldDescriptor.TYPE_STRING:
        return _text()
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=256)
    if t == FieldDescriptor.TYPE_ENUM:
        declared = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(declared), _int(-_I32, _I32 - 1))
    raise ValueError(f"no strategy for field type {t}")


def messages(cls: type[Any], *, max_depth: int = 20, max_items: int = 4) -> st.SearchStrategy[Any]:
    """Instances of the message class ``cls``, every field possibly set.

    The nesting depth is drawn uniformly (``sampled_from``): integer strategies favour
    small values, and deep nesting is exactly what a parser or handler gets wrong.
    """
    return st.sampled_from(range(max_depth + 1)).flatmap(lambda d: _message(cls, d, 3, max_items))


#: Strategies built by :func:`_message`, by its arguments; cleared past :data:`_KEEP`.
_BUILT: dict[tuple[Any, int, int, int], st.SearchStrategy[Any]] = {}
_KEEP = 4096


def _message(cls: type[Any], depth: int, levels: int, max_items: int) -> st.SearchStrategy[Any]:
    """The strategy of :func:`_new_message`, built once per shape.

    :func:`messages` asks for one per draw, and a strategy built again is validated again:
    that was most of the generation's time. The draws are the same either way.
    """
    key = (cls, depth, levels, max_items)
    found = _BUILT.get(key)
    if found is None:
        if len(_BUILT) >= _KEEP:
            _BUILT.clear()
        found = _BUILT[key] = _new_message(cls, depth, levels, max_items)
    return found


def _new_message(cls: type[Any], depth: int, levels: int, max_items: int) -> st.SearchStrategy[Any]:
    """A message with a self-recursive chain ``depth`` long and other nesting ``levels`` deep.

    A field of the message's own type is always set while depth remains, so the chain
    reaches the drawn depth; every other message field uses up one level (which also
    bounds mutual recursion).
    """
    desc: Descriptor = cls.DESCRIPTOR
    optional: dict[str, st.SearchStrategy[Any]] = {}
    required: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key = field.message_type.fields_by_name["key"]
            value = field.message_type.fields_by_name["value"]
            if value.message_type is None:  # maps of messages stay at their default
                optional[field.name] = st.dictionaries(
                    _scalar(key), _scalar(value), max_size=max_items
                )
            continue
        if field.message_type is not None:
            sample = getattr(cls(), field.name)
            sub_cls = type(sample.add()) if is_repeated(field) else type(sample)
            if field.message_type.full_name == desc.full_name:
                if depth <= 0:
                    continue
                # Self-recursion grows one linear chain: a tree would be exponential in depth.
                chain = _message(sub_cls, depth - 1, levels, max_items)
                required[field.name] = (
                    st.lists(chain, min_size=1, max_size=1) if is_repeated(field) else chain
                )
            elif levels > 0:
                child = _message(sub_cls, depth, levels - 1, max_items)
                optional[field.name] = (
                    st.lists(child, max_size=max_items) if is_repeated(field) else child
                )
            continue
        scalar = _scalar(field)
        optional[field.name] = (
            st.lists(scalar, max_size=max_items) if is_repeated(field) else scalar
        )
    parts = {name: st.one_of(st.none(), s) for name, s in optional.items()} | required
    return st.fixed_dictionaries(parts).map(lambda values: _build(cls, values))


def _build(cls: type[Any], values: dict[str, Any]) -> Any:
    msg = cls()
    for name, value in values.items():
        if value is None:
            continue
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(msg, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target.update(value)
        elif field.message_type is not None and is_repeated(field):
            for item in value:
                target.add().CopyFrom(item)
        elif field.message_type is not None:
            target.CopyFrom(value)
        elif is_repeated(field):
            target.extend(value)
        else:
            setattr(msg, name, value)
    return msg
