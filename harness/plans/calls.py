"""Shared plumbing of the call-based checks: calls to make, fan-out, request templates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from harness.channels import CallResult
from harness.descriptors import MethodInfo, is_repeated
from harness.outcome import NotApplicable
from harness.policy import Policy
from harness.principals import Principal
from harness.run import Run

#: Why a control that needs the target's methods did not run ({}: the catalogue's problem).
NO_DESCRIPTORS = "no method descriptors: {}"


#: Why a control that sends bursts or malformed transport traffic did not run.
TRANSPORT_ABUSE = "needs --hipaa-allow-transport-abuse (or safety.allow_transport_abuse = true)"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata carrying ``token`` as a bearer credential."""
    return (("authorization", f"Bearer {token}"),)


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

    return run.map(one, calls)


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


def template_text(run: Run, path: str, key: str = "schema.request_templates") -> str:
    """The request template of ``path`` as JSON text (from ``key``, else the request ones)."""
    value = run.config.table(key).get(path)
    if value is None and key != "schema.request_templates":
        value = run.config.table("schema.request_templates").get(path)
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def swap_id(text: str, old: str, new: str) -> str:
    """``text`` with the JSON string ``old`` replaced by ``new``."""
    return text.replace(json.dumps(old), json.dumps(new))


def named_id(text: str, ids: list[str]) -> str | None:
    """The first of ``ids`` that ``text`` names as a JSON string, if any."""
    return next((i for i in ids if json.dumps(i) in text), None)


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
