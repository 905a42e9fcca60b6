"""Data minimisation controls (MIN-*).

Responses are decoded with the descriptors and judged field by field against the declared
allowlists (``min.role_field_allowlist``), masks and token patterns.
"""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult, invoke
from harness.checks import check
from harness.descriptors import is_repeated
from harness.outcome import Observation, Outcome, Status
from harness.plans.calls import (
    Call,
    marked,
    named_id,
    policy_or_skip,
    read_methods,
    send,
    strings_in,
    swap_id,
    template_text,
)
from harness.plans.canaries import canaries, planted_calls
from harness.policy import Policy
from harness.run import Run


def _populated(message: Any) -> set[str]:
    return {fd.name for fd, _ in message.ListFields()}


def _records(policy: Policy, path: str, result: CallResult, record_type: str) -> list[Any]:
    """Every message of ``record_type`` in the responses (top level or nested)."""
    cls = policy.catalogue.message_class(policy.catalogue.method(path).output_type)
    found: list[Any] = []

    def walk(msg: Any) -> None:
        if msg.DESCRIPTOR.full_name == record_type:
            found.append(msg)
            return
        for fd, value in msg.ListFields():
            if fd.message_type is None or fd.message_type.GetOptions().map_entry:
                continue
            for v in value if is_repeated(fd) else [value]:
                walk(v)

    for blob in result.responses:
        try:
            walk(cls.FromString(blob))
        except DecodeError:
            continue
    return found


def _record_type(policy: Policy, run: Run) -> str | None:
    """The record message the allowlists describe: the output of the first mask method."""
    for path in run.config.table("min.mask_methods"):
        try:
            return policy.catalogue.method(path).output_type
        except KeyError:
            continue
    reads = [
        m for m in policy.protected() if not policy.is_write(m.path) and not m.server_streaming
    ]
    return reads[0].output_type if reads else None


def _record_setup(run: Run, control_id: str) -> tuple[Policy, str] | Outcome:
    """The policy and the record type MIN-002/003 judge, or the SKIP that says why not."""
    policy = policy_or_skip(run, control_id)
    if isinstance(policy, Outcome):
        return policy
    record = _record_type(policy, run)
    if record is None:
        return Outcome.skip(CATALOGUE[control_id], "no read method to take the record type from")
    return policy, record


# -- MIN-001 ------------------------------------------------------------------------------


@check("MIN-001")
def field_mask_honoured(run: Run) -> Outcome:
    """FieldMask honoured and never widened.

    For each ``min.mask_methods`` entry (request field of type FieldMask) and each
    principal allowed on it: (a) a mask of two fields the role may see must return only
    those (plus ``min.always_returned``); (b) a field the role may not see must be refused
    (PERMISSION_DENIED, INVALID_ARGUMENT) or omitted; (c) ``does_not_exist`` must get
    INVALID_ARGUMENT (or be omitted under ``min.unknown_path_policy = "omit"``); (d) ``*``
    and (e) an empty mask must return nothing outside the role's allowlist.
    """
    control = CATALOGUE["MIN-001"]
    masks = run.config.table("min.mask_methods")
    if not masks:
        return Outcome.skip(control, "no min.mask_methods declared")
    policy = policy_or_skip(run, "MIN-001")
    if isinstance(policy, Outcome):
        return policy
    allowlists = run.config.table("min.role_field_allowlist")
    always = set(run.config.str_list("min.always_returned"))
    omit_unknown = run.config.get("min.unknown_path_policy") == "omit"
    probes: list[tuple[str, set[str], Call]] = []
    for path, mask_field in masks.items():
        try:
            method = policy.catalogue.method(path)
        except KeyError:
            continue
        out_fields = [
            f.name for f in policy.catalogue.message_class(method.output_type).DESCRIPTOR.fields
        ]
        text = template_text(run, path) or "{}"
        for name in sorted(policy.allowed(path) or ()):
            principal = run.principal(name)
            if principal is None:
                continue
            allowed = set(allowlists.get(name, out_fields))
            visible = [f for f in out_fields if f in allowed]
            hidden = [f for f in out_fields if f not in allowed]

            def req(
                paths: list[str],
                text: str = text,
                mask_field: str = str(mask_field),
                path: str = path,
            ) -> bytes:
                msg = policy.catalogue.message_class(policy.catalogue.method(path).input_type)()
                json_format.Parse(text, msg)
                mask = getattr(msg, mask_field)
                mask.Clear()
                mask.paths.extend(paths)
                data: bytes = msg.SerializeToString()
                return data

            cases: list[tuple[str, list[str], set[str]]] = [
                ("(a) two visible fields", visible[:2], set(visible[:2]) | always),
                ("(c) unknown path", ["does_not_exist"], set()),
                ("(d) '*'", ["*"], allowed | always),
                ("(e) empty mask", [], allowed | always),
            ]
            if hidden:
                cases.insert(1, ("(b) a field the role may not see", [hidden[0]], allowed | always))
            for label, paths, limit in cases:
                probes.append(
                    (
                        label,
                        limit,
                        Call(f"{name}: {label} {paths}", path, (req(paths),), principal),
                    )
                )
    observations = []
    for (label, limit, _), (probe, result) in zip(
        probes, send(run, [p for *_, p in probes]), strict=True
    ):
        cls = policy.catalogue.message_class(policy.catalogue.method(probe.method).output_type)
        got: set[str] = set()
        for blob in result.responses:
            try:
                got |= _populated(cls.FromString(blob))
            except DecodeError:
                continue
        extra = sorted(got - limit)
        where = f"{probe.label} -> {probe.method}"
        if label.startswith("(c)"):
            ok = result.code == grpc.StatusCode.INVALID_ARGUMENT or (
                omit_unknown and result.code == grpc.StatusCode.OK
            )
            observations.append(
                Observation(
                    where,
                    result.summary(),
                    "INVALID_ARGUMENT (3)" + (" or omitted" if omit_unknown else ""),
                    Status.PASS if ok else Status.FAIL,
                    Severity.MEDIUM,
                    result.request_id,
                )
            )
            continue
        refused = label.startswith("(b)") and result.code in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        ok = refused or (result.code == grpc.StatusCode.OK and not extra)
        observed = result.summary() + (
            f"; fields outside the mask/allowlist: {', '.join(extra)}" if extra else ""
        )
        observations.append(
            Observation(
                where,
                observed,
                f"only {sorted(limit)}",
                Status.PASS if ok else Status.FAIL,
                Severity.HIGH,
                result.request_id,
            )
        )
    if not observations:
        return Outcome.skip(control, "no principal may call a min.mask_methods entry")
    return Outcome.from_observations(control, observations, passed="masks honoured, never widened")


# -- MIN-002 / MIN-003 --------------------------------------------------------------------


def _role_reads(run: Run, policy: Policy) -> list[tuple[Call, CallResult]]:
    """Every read and list method, once per principal allowed on it (memoised)."""

    def compute() -> list[tuple[Call, CallResult]]:
        if policy.allow_mutations:
            planted_calls(run)  # seeds sandbox records with canary values
        probes = [
            Call(name, m.path, (policy.request(run, m.path),), run.principal(name))
            for m in read_methods(policy)
            for name in sorted(policy.allowed(m.path) or ())
            if run.principal(name) is not None
        ]
        return send(run, probes)

    return run.memo("role-reads", compute)


@check("MIN-002")
def responses_minimised_by_role(run: Run) -> Outcome:
    """Responses minimised by role.

    Every read and list method is called once per principal allowed on it (after the
    canary calls seeded sandbox records, when mutations are allowed). In every returned
    record (the mask method's output type, top level or nested), the populated fields must
    be a subset of ``min.role_field_allowlist[principal]``: an extra field is FAIL (high),
    critical when its value is a canary (a Safe Harbor category).
    """
    control = CATALOGUE["MIN-002"]
    allowlists = run.config.table("min.role_field_allowlist")
    if not allowlists:
        return Outcome.skip(control, "no min.role_field_allowlist declared")
    setup = _record_setup(run, "MIN-002")
    if isinstance(setup, Outcome):
        return setup
    policy, record = setup
    c = canaries(run)
    observations = []
    for probe, result in _role_reads(run, policy):
        name = probe.label
        if name not in allowlists:
            continue
        allowed = set(allowlists[name])
        extra: set[str] = set()
        phi = False
        for rec in _records(policy, probe.method, result, record):
            over = _populated(rec) - allowed
            extra |= over
            phi = phi or any(c.scan(str(getattr(rec, f)), "x") for f in over)
        status = Status.FAIL if extra else Status.PASS
        sev = Severity.CRITICAL if phi else Severity.HIGH
        observed = result.summary() + (
            f"; fields outside the allowlist: {', '.join(sorted(extra))}" if extra else ""
        )
        observations.append(
            Observation(
                f"{name} -> {probe.method}",
                observed,
                "only the role's allowlisted fields",
                status,
                sev,
                result.request_id,
            )
        )
    if not observations:
        return Outcome.skip(control, "no principal with an allowlist may call a read method")
    return Outcome.from_observations(
        control, observations, passed="every role sees only its allowlisted fields"
    )


@check("MIN-003")
def identifiers_tokenised(run: Run) -> Outcome:
    r"""Direct identifiers tokenised or masked for non-privileged roles.

    The same role-by-role reads as MIN-002: for every principal not in
    ``min.privileged_principals``, every non-empty field named in ``min.token_patterns``
    must match its pattern (for example ``^\\*{3}-\\*{2}-\\d{4}$``) and never be a canary
    value the run planted.
    """
    control = CATALOGUE["MIN-003"]
    patterns = {k: re.compile(str(v)) for k, v in run.config.table("min.token_patterns").items()}
    if not patterns:
        return Outcome.skip(control, "no min.token_patterns declared")
    setup = _record_setup(run, "MIN-003")
    if isinstance(setup, Outcome):
        return setup
    policy, record = setup
    privileged = set(run.config.str_list("min.privileged_principals"))
    planted = set(canaries(run).values.values())
    observations = []
    for probe, result in _role_reads(run, policy):
        if probe.label in privileged:
            continue
        bad: dict[str, int] = {}
        seen = 0
        for rec in _records(policy, probe.method, result, record):
            for field, pattern in patterns.items():
                value = getattr(rec, field, "")
                if not isinstance(value, str) or not value:
                    continue
                seen += 1
                if not pattern.match(value) or value in planted:
                    bad[field] = bad.get(field, 0) + 1
        if not seen:
            continue
        observed = (
            ", ".join(f"{n} {f} value(s) in clear" for f, n in sorted(bad.items()))
            or f"{seen} value(s) tokenised"
        )
        observations.append(
            Observation(
                f"{probe.label} -> {probe.method}",
                observed,
                "every value matches min.token_patterns",
                Status.FAIL if bad else Status.PASS,
                Severity.HIGH,
                result.request_id,
            )
        )
    if not observations:
        return Outcome.skip(
            control, "no non-privileged principal received a field named in min.token_patterns"
        )
    return Outcome.from_observations(
        control, observations, passed="identifiers tokenised for every non-privileged role"
    )


# -- MIN-004 ------------------------------------------------------------------------------


@check("MIN-004")
def cache_honours_updates(run: Run) -> Outcome:
    """Cached ePHI honours TTL and invalidation.

    Needs ``--hipaa-allow-mutations`` and ``min.cache_ttl_s``. A sandbox record is read (to
    warm any cache), updated by an allowed principal with marked values, then read every
    half second by another principal over a new channel until ``min.cache_ttl_s`` + 5 s:
    the new value must be served within that time.
    """
    control = CATALOGUE["MIN-004"]
    if not run.config.get("safety.allow_mutations"):
        return Outcome.skip(
            control, "needs --hipaa-allow-mutations (or safety.allow_mutations = true)"
        )
    if not run.config.has("min.cache_ttl_s"):
        return Outcome.skip(control, "no min.cache_ttl_s declared")
    policy = policy_or_skip(run, "MIN-004")
    if isinstance(policy, Outcome):
        return policy
    sandbox = run.config.str_list("authz.sandbox_ids")
    known = sandbox + [i for ids in run.config.table("authz.own_ids").values() for i in ids]
    write = next(
        (
            m
            for m in policy.protected()
            if policy.is_write(m.path) and named_id(template_text(run, m.path), known)
        ),
        None,
    )
    read = next(
        (
            m
            for m in read_methods(policy)
            if not m.server_streaming
            and not m.client_streaming
            and named_id(template_text(run, m.path), known)
        ),
        None,
    )
    if write is None or read is None or not sandbox:
        return Outcome.skip(
            control, "needs authz.sandbox_ids and a write and a read whose templates name a record"
        )
    sid = sandbox[0]
    wtext = swap_id(
        template_text(run, write.path), named_id(template_text(run, write.path), known) or "", sid
    )
    rtext = swap_id(
        template_text(run, read.path), named_id(template_text(run, read.path), known) or "", sid
    )
    # The reader must see every field (a privileged principal); the writer is someone else.
    privileged = run.config.str_list("min.privileged_principals")
    readers = [p for n in sorted(policy.allowed(read.path) or ()) if (p := run.principal(n))]
    writers = [p for n in sorted(policy.allowed(write.path) or ()) if (p := run.principal(n))]
    reader = next((p for p in readers if p.name in privileged), readers[0] if readers else None)
    writer = next((p for p in writers if p is not reader), writers[0] if writers else None)
    if writer is None or reader is None:
        return Outcome.skip(control, "no principal may write and read the sandbox record")
    nonce = f"ttl-{run.options.seed:08x}-{int(time.time())}"
    read_req = policy.catalogue.request_bytes(read.path, rtext)
    run.call(read.path, [read_req], principal=reader)  # warm the cache
    result = run.call(
        write.path,
        [marked(policy.catalogue.message_class(write.input_type), wtext, nonce, set(known))],
        principal=writer,
    )
    if result.code != grpc.StatusCode.OK:
        return Outcome.inconclusive(control, f"the update was not accepted: {result.summary()}")
    ttl = float(run.config.get("min.cache_ttl_s"))
    deadline = time.monotonic() + ttl + 5
    start = time.monotonic()
    cls = policy.catalogue.message_class(read.output_type)
    polls = 0
    while True:
        polls += 1
        channel = run.new_channel()
        try:
            got = invoke(
                channel,
                read.path,
                [read_req],
                metadata=reader.metadata(),
                request_id_key=run.request_id_key,
                principal=reader.name,
            )
        finally:
            channel.close()
        fresh = any(nonce in s for b in got.responses for s in strings_in(cls.FromString(b)))
        if fresh or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    waited = time.monotonic() - start
    observation = Observation(
        f"{sid} updated by {writer.name}, read by {reader.name} on new channels ({polls} poll(s))",
        f"new value served after {waited:.1f} s" if fresh else f"still stale after {waited:.1f} s",
        f"served within min.cache_ttl_s + 5 s ({ttl + 5:g} s)",
        Status.PASS if fresh else Status.FAIL,
        Severity.MEDIUM,
        got.request_id,
    )
    return Outcome.from_observations(
        control, [observation], passed="updates visible within the cache TTL"
    )
