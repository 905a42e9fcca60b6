"""One fuzz property, driven by Hypothesis (in pytest) and by Atheris (nightly runs).

A :class:`Case` is one request: a method, a caller (a configured principal, no
credentials, or a garbage token) and the request bytes. :func:`judge` is the oracle every
mode shares: only OK or application codes; never UNKNOWN, UNAVAILABLE or DATA_LOSS;
INTERNAL only with generic text; no canary in any status message; within the
latency limit. Two executors run a case: :class:`Remote` over gRPC (black-box) and
:class:`Local` through :mod:`harness.inprocess` (white-box), which also fails an escaped
exception and a handler reached without credentials (an interceptor bypass).

Atheris' input bytes become a case with :meth:`Surface.decode`: byte 0 picks the method,
byte 1 the caller, bit 0 of byte 2 the encoding (the rest raw, or a message built field
in fixed slots, see :func:`structured`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from harness.channels import CallResult, invoke
from harness.config import Config
from harness.descriptors import MethodCatalogue, compile_protos, is_repeated, load_descriptor_set
from harness.inprocess import InProcess
from harness.oracles import LEAKS
from harness.policy import Policy
from harness.principals import principals_from
from harness.run import Run
from harness.tokens import load_issuer_keys, renewer

#: Codes an application may answer a strange request with (FUZZ-001's list, plus
#: CANCELLED); :func:`judge` also accepts UNAUTHENTICATED.
FINE = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.CANCELLED,  # the harness stopped reading a long stream
    }
)
NO_CREDENTIALS, GARBAGE_TOKEN = "(no credentials)", "(garbage token)"
MAX_FIELD_ITEMS = 3
MAX_STRUCT_DEPTH = 12


def judge(
    code: grpc.StatusCode,
    details: str,
    *,
    elapsed_ms: float = 0.0,
    slow_ms: float = float("inf"),
    secrets: Sequence[str] = (),
    streaming: bool = False,
) -> str:
    """Why this answer breaks the fuzz oracle, or ``""``."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and streaming:
        return ""  # a stream that was still delivering when the harness stopped it
    if elapsed_ms > slow_ms:
        return f"took {elapsed_ms:.0f} ms (limit {slow_ms:.0f} ms)"
    if details and code != grpc.StatusCode.OK:
        # Stack traces and the like in INTERNAL fail here; in other codes, ERR-001 judges them.
        leak = _leak(details) if code == grpc.StatusCode.INTERNAL else ""
        leak = leak or next(("a canary value" for s in secrets if s and s in details), "")
        if leak:
            return f"{code.name} with {leak} in its message"
    if code == grpc.StatusCode.INTERNAL or code in FINE:
        return ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return ""  # for a garbage token, or a valid one that expired during a long run
    return f"{code.name} ({code.value[0]})"


@functools.lru_cache(maxsize=4096)
def _leak(details: str) -> str:
    """The first kind of leak (stack trace, SQL, path...) in ``details``, or ``""``."""
    return next((kind for kind, pattern, _ in LEAKS if pattern.search(details)), "")


def shape(details: str) -> str:
    """``details`` with numbers, quoted text and hex runs blanked: one bug, one shape."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", details[:200])
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "N", text)


#: Pauses before a black-box case that failed as load would make it fail is sent again.
REPLAY_WAITS_S = (0.2, 1.0)
_PRESSURE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def _maybe_pressure(result: CallResult, why: str) -> bool:
    """Whether back-pressure or load alone could explain this failure."""
    return why.startswith("took ") or (result.code in _PRESSURE and "canary" not in why)


@dataclass(frozen=True)
class Finding:
    """A request that broke the oracle, with everything needed to send it again."""

    method: str
    caller: str
    code: str
    details: str
    why: str
    payload: bytes
    data: bytes = b""  # the engine input that produced it (Atheris), if any

    @property
    def key(self) -> str:
        """Deduplication key: method, status and message shape."""
        text = f"{self.method}|{self.code}|{shape(self.details)}|{self.why.split(' ')[0]}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object."""
        return {
            "key": self.key,
            "method": self.method,
            "caller": self.caller,
            "code": self.code,
            "details": self.details,
            "why": self.why,
            "payload_b64": base64.b64encode(self.payload).decode(),
            "data_b64": base64.b64encode(self.data).decode(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Finding:
        """A finding from :meth:`to_json`'s output."""
        return cls(
            method=str(doc["method"]),
            caller=str(doc["caller"]),
            code=str(doc["code"]),
            details=str(doc["details"]),
            why=str(doc["why"]),
            payload=base64.b64decode(doc["payload_b64"]),
            data=base64.b64decode(doc.get("data_b64", "")),
        )


@dataclass(frozen=True)
class FuzzMethod:
    """A method to fuzz and the principals allowed on it."""

    path: str
    cls: type[Message]
    seed: bytes
    callers: tuple[str, ...]
    streaming: bool


@dataclass(frozen=True)
class Case:
    """One request to send."""

    method: FuzzMethod
    caller: str
    payload: bytes


@dataclass
class Surface:
    """What may be fuzzed, with whose credentials."""

    methods: list[FuzzMethod]
    credentials: dict[str, Callable[[], tuple[tuple[str, str], ...]]]  # fresh on each call
    secrets: tuple[str, ...] = ()
    slow_ms: float = 3000.0

    def metadata(self, caller: str) -> tuple[tuple[str, str], ...]:
        """The metadata a caller sends."""
        if caller == NO_CREDENTIALS:
            return ()
        if caller == GARBAGE_TOKEN:
            return (("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.AAAA"),)
        fresh = self.credentials.get(caller)
        return fresh() if fresh is not None else ()

    def method(self, path: str) -> FuzzMethod:
        """The method with this path."""
        return next(m for m in self.methods if m.path == path)

    def decode(self, data: bytes) -> Case:
        """The case an engine input stands for (any bytes decode)."""
        head = data[:3].ljust(3, b"\0")
        m = self.methods[head[0] % len(self.methods)]
        callers = [*m.callers, NO_CREDENTIALS, GARBAGE_TOKEN]
        # Most inputs use an allowed identity: that is where the handlers' code is.
        pick = head[1] % (2 * len(callers))
        caller = callers[pick] if pick < len(callers) else callers[pick % max(1, len(m.callers))]
        body = data[3:]
        if head[2] & 1:
            body = structured(m.cls, body).SerializeToString()
        return Case(m, caller, body)

    def encode(self, case: Case) -> bytes:
        """An engine input that decodes to ``case`` (raw encoding), for seed corpora."""
        m = self.methods.index(case.method)
        callers = [*case.method.callers, NO_CREDENTIALS, GARBAGE_TOKEN]
        return bytes([m, callers.index(case.caller), 0]) + case.payload

    def seeds(self) -> list[bytes]:
        """One valid input per method and allowed caller."""
        return [self.encode(Case(m, c, m.seed)) for m in self.methods for c in m.callers]


def structured(cls: type[Message], body: bytes) -> Message:
    """A ``cls`` message built from ``body``, field by field.

    Each message reads a presence bitmap, then a value for every fixed-width scalar field
    (present or not), then its strings and bytes (a length byte and the text), then its
    present message fields. Numbers thus keep their offsets whatever happens to the
    text, so a mutation that solves one comparison does not undo another: that is what
    lets coverage guidance combine conditions on several fields.
    """
    return _fill(cls(), _Slots(body), MAX_STRUCT_DEPTH)


class _Slots:
    """Reads ``body`` front to back; past its end, zeros."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def take(self, n: int) -> bytes:
        chunk = self.body[self.at : self.at + n]
        self.at += n
        return chunk.ljust(n, b"\0")

    def done(self) -> bool:
        return self.at >= len(self.body)


MAX_STRING = 64
_VARIABLE = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
_FIXED_INT = {
    FieldDescriptor.TYPE_INT32: (4, True),
    FieldDescriptor.TYPE_SINT32: (4, True),
    FieldDescriptor.TYPE_SFIXED32: (4, True),
    FieldDescriptor.TYPE_INT64: (8, True),
    FieldDescriptor.TYPE_SINT64: (8, True),
    FieldDescriptor.TYPE_SFIXED64: (8, True),
    FieldDescriptor.TYPE_UINT32: (4, False),
    FieldDescriptor.TYPE_FIXED32: (4, False),
    FieldDescriptor.TYPE_UINT64: (8, False),
    FieldDescriptor.TYPE_FIXED64: (8, False),
}


def _value(f: Any, slots: _Slots) -> Any:
    t = f.type
    if t == FieldDescriptor.TYPE_ENUM:  # mostly declared numbers, where the code paths are
        declared = [v.number for v in f.enum_type.values]
        pick, raw = slots.take(1)[0], int.from_bytes(slots.take(4), "little", signed=True)
        return (
            declared[pick % (len(declared) + 1)]
            if pick % (len(declared) + 1) < len(declared)
            else raw
        )
    if t in _FIXED_INT:
        width, signed = _FIXED_INT[t]
        return int.from_bytes(slots.take(width), "little", signed=signed)
    if t == FieldDescriptor.TYPE_BOOL:
        return bool(slots.take(1)[0] & 1)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return struct.unpack("<d", slots.take(8))[0]
    if t == FieldDescriptor.TYPE_FLOAT:
        return struct.unpack("<f", slots.take(4))[0]
    text = slots.take(slots.take(1)[0] % (MAX_STRING + 1))
    if t == FieldDescriptor.TYPE_STRING:
        return text.decode("utf-8", "replace")
    return text


def _fill(msg: Message, slots: _Slots, depth: int) -> Message:
    fields = [
        f
        for f in msg.DESCRIPTOR.fields
        if not (f.message_type is not None and f.message_type.GetOptions().map_entry)
    ]
    bits = int.from_bytes(slots.take((len(fields) + 7) // 8), "little")
    present = {f.name for i, f in enumerate(fields) if bits >> i & 1}
    # Fixed-width scalars first, then strings and bytes, then messages: a field's offset
    # moves only when a variable-length field before it changes, and few come first.
    order = sorted(
        fields,
        key=lambda f: 2 if f.message_type is not None else 1 if f.type in _VARIABLE else 0,
    )
    for f in order:
        if f.message_type is not None:
            if f.name not in present or depth <= 0 or slots.done():
                continue
            target = getattr(msg, f.name)
            if is_repeated(f):
                for _ in range(slots.take(1)[0] % (MAX_FIELD_ITEMS + 1)):
                    _fill(target.add(), slots, depth - 1)
            else:
                _fill(target, slots, depth - 1)
                target.SetInParent()
        elif is_repeated(f):
            count = slots.take(1)[0] % (MAX_FIELD_ITEMS + 1)
            values = [_value(f, slots) for _ in range(count)]
            if f.name in present:
                getattr(msg, f.name).extend(values)
        else:
            value = _value(f, slots)
            if f.name in present:
                setattr(msg, f.name, value)
    return msg


def surface_of(
    catalogue: MethodCatalogue,
    methods: Sequence[tuple[str, bytes, Sequence[str]]],
    credentials: dict[str, Callable[[], tuple[tuple[str, str], ...]]],
    *,
    secrets: Sequence[str] = (),
    slow_ms: float = 3000.0,
) -> Surface:
    """A surface from ``(path, seed request, allowed callers)`` triples."""
    out = []
    for path, seed, callers in methods:
        info = catalogue.method(path)
        out.append(
            FuzzMethod(
                path,
                catalogue.message_class(info.input_type),
                seed,
                tuple(c for c in callers if c in credentials),
                info.server_streaming,
            )
        )
    return Surface(out, credentials, tuple(secrets), slow_ms)


def surface_from(
    run: Run | None, config: Config | None = None, secrets: Sequence[str] = ()
) -> Surface | str:
    """The methods ``run`` (or, without a target, ``config``) lets the harness fuzz.

    Writes only under ``safety.allow_mutations``; each method with the principals the
    matrix allows on it that have a token, ``least-privileged`` first. A string says why
    there is nothing to fuzz.
    """
    if run is not None and not secrets:  # the checks ask several times per run: once is enough
        return run.memo("fuzz-surface", lambda: _surface(run, None, secrets))
    return _surface(run, config, secrets)


def _surface(run: Run | None, config: Config | None, secrets: Sequence[str]) -> Surface | str:
    if run is not None:
        config = run.config
        policy = Policy.of(run)
        if policy is None:
            return "no method descriptors: " + run.catalogue_problem()
        principals = run.principals
    else:
        assert config is not None
        path = config.path("schema.descriptor_set")
        files = config.get("schema.proto_files")
        if path is not None:
            catalogue = load_descriptor_set(path)
        elif files:
            catalogue = compile_protos(files, config.get("schema.proto_paths", []))
        else:
            return "white-box fuzzing needs schema.descriptor_set or schema.proto_files"
        policy = Policy.from_config(catalogue, config)
        source = config.sources[-1] if config.sources else "config"
        keys = functools.cache(
            functools.partial(
                load_issuer_keys,
                config.path("auth.jwks_file"),
                config.path("auth.issuer_private_key"),
                source,
            )
        )
        principals = principals_from(
            config.table("auth.principals"), source, refresh=True, renew=renewer(keys)
        )
    credentials = {n: p.metadata for n, p in principals.items() if p.has_token}
    chosen = []
    for m in policy.protected():
        if policy.is_write(m.path) and not policy.allow_mutations:
            continue
        allowed = sorted(
            sorted(policy.allowed(m.path) or ()), key=lambda n: n != "least-privileged"
        )
        chosen.append((m.path, policy.request_from(config, m.path), allowed))
    if not chosen:
        return "no method to fuzz (all are public, or writes without mutations allowed)"
    budget_ms = float(config.get("fuzz.latency_budget_ms", 1000))
    return surface_of(policy.catalogue, chosen, credentials, secrets=secrets, slow_ms=3 * budget_ms)


class Executor(Protocol):
    """Runs a case and judges it."""

    def check(self, case: Case) -> Finding | None:
        """Judge one case; ``None`` when it passes."""


@dataclass
class Remote:
    """Black-box: one gRPC call per case, bytes passed through unserialized."""

    surface: Surface
    channel: grpc.Channel
    request_id_key: str = "x-request-id"

    def check(self, case: Case) -> Finding | None:
        """Run ``case`` and judge it; ``None`` when it passes.

        A failure that back-pressure or load can cause (UNAVAILABLE: REFUSED_STREAM past
        the server's concurrency, a GOAWAY, a dropped connection; RESOURCE_EXHAUSTED; a
        slow answer) counts only when it shows again: the case is sent again after a pause
        (REPLAY_WAITS_S), and any answer that passes means the first was not a defect.
        Anything else (a crash, a leak in the message) is a finding the first time.
        """
        why, result = self._judged(case)
        for wait in REPLAY_WAITS_S:
            if not why or not _maybe_pressure(result, why):
                break
            time.sleep(wait)
            why, result = self._judged(case)
        if not why:
            return None
        return Finding(
            case.method.path, case.caller, result.code.name, result.details, why, case.payload
        )

    def _judged(self, case: Case) -> tuple[str, CallResult]:
        result = invoke(
            self.channel,
            case.method.path,
            [case.payload],
            metadata=self.surface.metadata(case.caller),
            request_id_key=self.request_id_key,
            timeout=self.surface.slow_ms / 1000 + 1,
            max_responses=1,
        )
        why = judge(
            result.code,
            result.details,
            elapsed_ms=result.elapsed_s * 1000,
            slow_ms=self.surface.slow_ms,
            secrets=self.surface.secrets,
            streaming=bool(result.responses),
        )
        return why, result


@dataclass
class Local:
    """White-box: the case dispatched in-process; escaped exceptions and bypasses fail."""

    surface: Surface
    service: InProcess
    public: frozenset[str] = frozenset()
    modules: set[str] = field(default_factory=set)  # the service's own code

    def check(self, case: Case) -> Finding | None:
        """Run ``case`` and judge it; ``None`` when it passes."""
        start = time.monotonic()
        out = self.service.call(
            case.method.path,
            case.payload,
            self.surface.metadata(case.caller),
            max_responses=1,
            timeout_s=self.surface.slow_ms / 1000,
        )
        elapsed_ms = (time.monotonic() - start) * 1000
        authenticated = case.caller in self.surface.credentials
        if out.crash is not None:
            why = f"uncaught {type(out.crash).__name__}"
        elif out.reached and not authenticated and case.method.path not in self.public:
            why = f"handler ran for a call with {case.caller} (interceptor bypass)"
        else:
            why = judge(
                out.code,
                out.details,
                elapsed_ms=elapsed_ms,
                slow_ms=self.surface.slow_ms,
                secrets=self.surface.secrets,
            )
        if not why:
            return None
        return Finding(case.method.path, case.caller, out.code.name, out.details, why, case.payload)


@dataclass
class Findings:
    """Distinct findings, deduplicated by :attr:`Finding.key`, with a callback for new ones."""

    on_new: Callable[[Finding], None] | None = None
    known: dict[str, Finding | None] = field(default_factory=dict)  # None: found by an earlier run

    def add(self, finding: Finding) -> bool:
        """Count ``finding``; True if it is new."""
        if finding.key in self.known:
            return False
        self.known[finding.key] = finding
        if self.on_new is not None:
            self.on_new(finding)
        return True


def dumps(finding: Finding, replay: str) -> str:
    """A reproducer file's text."""
    return json.dumps({**finding.to_json(), "replay": replay}, indent=2) + "\n"
