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
in fixed slots, see :func:`structured`). :func:`load_seeds` reads ``fuzz.seed_corpus``.

Every remote mode goes through :func:`settle`: back-pressure (:func:`pressure`) is backed
off and tried again, never judged; a candidate failure counts only when it reproduces
alone on a new connection (or the service is down after it); a service that stops
accepting streams is a finding of its own. :class:`Pacing` keeps the inputs in flight
under the server's SETTINGS_MAX_CONCURRENT_STREAMS (:func:`server_streams`, :func:`paced`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from harness.channels import CallResult, http_status, invoke, statusless
from harness.config import Config
from harness.descriptors import MethodCatalogue, compile_protos, is_repeated, load_descriptor_set
from harness.errors import ConfigError, TargetError
from harness.h2client import advertised_streams
from harness.inprocess import Dispatched, InProcess
from harness.oracles import EDGE_THROTTLED, LEAKS, edge_refusal
from harness.policy import Policy
from harness.principals import BEARER, Presentation, presentation_of, principals_from
from harness.run import HEALTH_CHECK, Run
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
    """Why this answer breaks the fuzz oracle, or ``""``.

    A proxy's own HTTP answer (:func:`harness.channels.http_status`) is not the service's:
    a 4xx (a header, body or certificate it refused: 400, 413, 431...) or its back-pressure
    (429, 503) is never a finding, nor is an answer whose status the client lost
    (:func:`harness.channels.statusless`); a 500, 502 or 504 (it could not get an answer
    from the service) is judged by its code like the service's own.
    """
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and streaming:
        return ""  # a stream that was still delivering when the harness stopped it
    if not streaming and statusless(code, details):
        edge = http_status(code, details)
        if edge is None or edge < 500 or edge in EDGE_THROTTLED:
            return ""
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


# -- back-pressure, pacing and the replay gate --------------------------------------------

#: In flight at once when the server advertises no SETTINGS_MAX_CONCURRENT_STREAMS (and
#: never more, whatever it advertises).
DEFAULT_IN_FLIGHT = 4
#: Waits between tries of an input the server pushed back on: bounded exponential back-off.
BACKOFF_S = (0.1, 0.2, 0.4, 0.8, 1.6)
#: Time the gate may take over one input's tries, replay and control calls (the nightly
#: command gives libFuzzer a per-input timeout well above it).
GATE_SECONDS = 20.0

_KINDS = (
    # Words of grpcio, grpc-go, grpc-js, Java and Envoy. They only name the kind: whether
    # an answer is back-pressure at all is decided by its code (see pressure()).
    ("refused", re.compile(r"refused|REFUSED_STREAM|error code:? ?7\b", re.IGNORECASE)),
    ("goaway", re.compile(r"GOAWAY|go away|draining|ENHANCE_YOUR_CALM|too.many.pings", re.I)),
    ("closed", re.compile(r"transport is closing|reset|closed|broken pipe|EOF|disconnect", re.I)),
)
_SAID = {
    "refused": "REFUSED_STREAM",
    "goaway": "GOAWAY",
    "closed": "a closed connection",
    "unavailable": "UNAVAILABLE",
    "throttled": "RESOURCE_EXHAUSTED (or a proxy's HTTP 429/503)",
}


def pressure(result: CallResult) -> str:
    """What kind of back-pressure ``result`` is, or ``""`` for an answer from the service.

    UNAVAILABLE with no response message says the request may never have reached a
    handler: a stream refused past the server's concurrency (RST_STREAM REFUSED_STREAM),
    a GOAWAY (NO_ERROR while draining, ENHANCE_YOUR_CALM), a connection reset or closed
    before the response, or no connection at all. RESOURCE_EXHAUSTED with none is a rate
    limit, or a limit that this input alone meets (the gate tells them apart by sending it
    again). A proxy's 429 or 503 without grpc-status (:func:`harness.oracles.edge_refusal`:
    nginx's ``limit_req``) is a rate limit too. The kind returned (``refused``, ``goaway``,
    ``closed``, ``unavailable``, ``throttled``) only names it; the code decides.
    """
    if result.responses:
        return ""
    if result.code == grpc.StatusCode.RESOURCE_EXHAUSTED or edge_refusal(result) in EDGE_THROTTLED:
        return "throttled"
    if result.code != grpc.StatusCode.UNAVAILABLE:
        return ""
    return next((kind for kind, words in _KINDS if words.search(result.details)), "unavailable")


@dataclass
class Pacing:
    """How fast a fuzzer goes: its in-flight limit, its back-off, and what the gate may spend.

    ``limit`` follows the server's SETTINGS_MAX_CONCURRENT_STREAMS (:meth:`under`);
    ``in_flight`` starts there, halves on each back-pressure answer and grows by one per
    input answered without it, never past ``limit`` (additive increase, multiplicative
    decrease). The gate adds at most ``spare`` calls (tries, replays, control calls), and
    none past ``deadline`` (``time.monotonic()``). The counters are the run's stats.
    """

    limit: int = DEFAULT_IN_FLIGHT
    deadline: float = math.inf
    spare: int = 1000
    waits_s: tuple[float, ...] = BACKOFF_S
    in_flight: int = 0
    sent: int = 0  # inputs sent
    pressured: int = 0  # back-pressure answers set aside
    not_reproduced: int = 0
    peak: int = 0  # the most inputs ever in flight at once
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.limit = max(1, self.limit)
        self.in_flight = min(self.limit, self.in_flight or self.limit)

    @classmethod
    def under(cls, advertised: int | None, default: int = DEFAULT_IN_FLIGHT, **kw: Any) -> Pacing:
        """Pacing for a server advertising ``advertised`` concurrent streams (``None``: none)."""
        return cls(limit=default if advertised is None else min(default, advertised), **kw)

    def spend(self, until: float, wait: float = 0.0) -> bool:
        """Take one more gate call, after ``wait`` s, if the budget and ``until`` allow it."""
        with self._lock:
            if self.spare <= 0 or time.monotonic() + wait > min(until, self.deadline):
                return False
            self.spare -= 1
            return True

    def count(self, name: str) -> int:
        """Add one to the counter ``name`` (``sent``, ``not_reproduced``); its new value."""
        with self._lock:
            value = int(getattr(self, name)) + 1
            setattr(self, name, value)
            return value

    def pushed_back(self) -> None:
        """A back-pressure answer: halve what goes out at once."""
        with self._lock:
            self.pressured += 1
            self.in_flight = max(1, self.in_flight // 2)

    def eased(self) -> None:
        """An answer without back-pressure: one more may go out at once."""
        with self._lock:
            self.in_flight = min(self.limit, self.in_flight + 1)

    def stats(self) -> str:
        """The counters in words."""
        return (
            f"{self.sent} inputs, at most {self.peak} in flight of {self.limit} allowed, "
            f"{self.pressured} back-pressure answers set aside, "
            f"{self.not_reproduced} candidates not reproduced"
        )


T = TypeVar("T")
U = TypeVar("U")


#: How long a fuzzer waits for the server's first SETTINGS frame.
SETTINGS_WAIT_S = 2.0


def server_streams(run: Run) -> int | None:
    """The target's SETTINGS_MAX_CONCURRENT_STREAMS, read once per run.

    From a raw HTTP/2 connection; ``None`` when it advertises none or cannot be read.
    """

    def read() -> int | None:
        try:
            with run.open_h2() as client:
                return advertised_streams(client, SETTINGS_WAIT_S)
        except (OSError, TargetError):  # the calls will meet it, and say so
            return None

    return run.memo("fuzz-max-streams", read)


def paced(
    pacing: Pacing, items: Sequence[T], fn: Callable[[T], U], stop: Callable[[U], bool]
) -> list[U]:
    """``fn`` over ``items`` in order, ``pacing.in_flight`` at a time, until ``stop(result)``.

    Each window of inputs goes out at once and is waited for whole; the next window is as
    wide as the pacing then allows. Nothing starts past ``pacing.deadline``.
    """
    out: list[U] = []
    at = 0
    while at < len(items) and time.monotonic() < pacing.deadline:
        window = items[at : at + pacing.in_flight]
        at += len(window)
        pacing.peak = max(pacing.peak, len(window))
        if len(window) == 1:
            got = [fn(window[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(window)) as pool:
                got = list(pool.map(fn, window))
        out += got
        if any(stop(g) for g in got):
            break
    return out


@dataclass(frozen=True)
class Link:
    """The calls the gate may make for one input; each returns an answer, none raises."""

    send: Callable[[], CallResult]  # the input, on the usual connection
    alone: Callable[[], CallResult]  # the input alone, on a new connection
    control: Callable[[bool], CallResult]  # a valid control call; True: on a new connection
    gone: Callable[[], str]  # why the target accepts no connection any more, or ""
    what: str = "inputs"  # what the inputs are, in a finding's words


@dataclass(frozen=True)
class Settled:
    """One input through the gate (:func:`settle`).

    Attributes:
        result: The answer to judge the input by; the last back-pressure answer when
            ``answered`` is False.
        answered: False when back-pressure lasted, or a candidate could not be replayed:
            nothing to judge, no finding, and not an input that reached a handler.
        finding: What the gate established itself: the service went down, or stopped
            accepting streams.
        set_aside: Back-pressure answers that were tried again.
        notes: What happened on the way (a candidate not reproduced...), for the stats.
    """

    result: CallResult
    answered: bool = True
    finding: str = ""
    set_aside: tuple[CallResult, ...] = ()
    notes: tuple[str, ...] = ()


def settle(
    link: Link,
    suspect: Callable[[CallResult], str],
    pacing: Pacing,
    sleep: Callable[[float], None] = time.sleep,
) -> Settled:
    """Send one input through back-pressure and the replay gate.

    Back-pressure (:func:`pressure`) is waited out with the pacing's back-off, the input
    sent again each time; it never counts as a finding or as an answer. When it outlasts
    the back-off, the input goes out alone on a new connection, and a valid control call
    tells the rest apart: the usual connection wedged while a new one is served, or the
    service refusing every stream, is a denial of service; a service that stopped
    accepting connections went down; the input alone meeting it again on a new
    connection, while the control call is served, is its answer. An answer ``suspect``
    flags (a candidate crash, leak or hang) counts only when the service is down after it
    (reproduced by definition) or it shows again when the input is replayed alone on a
    new connection; otherwise the replay's answer is the input's, with a note.
    """
    return _Gate(link, suspect, pacing, sleep).run()


class _Gate:
    """One input's way through :func:`settle`."""

    def __init__(
        self,
        link: Link,
        suspect: Callable[[CallResult], str],
        pacing: Pacing,
        sleep: Callable[[float], None],
    ) -> None:
        self.link, self.suspect, self.pacing, self.sleep = link, suspect, pacing, sleep
        self.until = time.monotonic() + GATE_SECONDS
        self.aside: list[CallResult] = []
        self.n = 0

    def run(self) -> Settled:
        self.n = self.pacing.count("sent")
        result = self._tried(self.link.send)
        kind = pressure(result)
        if kind:
            return self._lasting(result, kind)
        self.pacing.eased()
        return self._judged(result)

    def _done(self, result: CallResult, **kw: Any) -> Settled:
        return Settled(result, set_aside=tuple(self.aside), **kw)

    def _tried(self, send: Callable[[], CallResult]) -> CallResult:
        """``send()``, tried again after each back-off wait while it meets back-pressure."""
        result = send()
        for wait in self.pacing.waits_s:
            if not pressure(result) or not self.pacing.spend(self.until, wait):
                break
            self.aside.append(result)
            self.pacing.pushed_back()
            self.sleep(wait)
            result = send()
        return result

    def _judged(self, result: CallResult) -> Settled:
        """An answer: the input's, unless it is a candidate that does not reproduce."""
        why = self.suspect(result)
        if not why:
            return self._done(result)
        gone = self.link.gone()
        if gone:  # the service died on it: reproduced by definition
            return self._done(result, finding=f"{why}; the service is down after it ({gone})")
        if not self.pacing.spend(self.until):
            note = f"not confirmed (no budget left to replay it): {why}"
            return self._done(result, answered=False, notes=(note,))
        again = self._tried(self.link.alone)
        if pressure(again):
            self.aside.append(again)
            note = f"not confirmed: {why}; its replay met back-pressure ({again.summary()})"
            return self._done(result, answered=False, notes=(note,))
        if self.suspect(again):
            return self._done(result)
        self.pacing.count("not_reproduced")
        note = f"not reproduced: {why}; alone on a new connection: {again.summary()}"
        return self._done(again, notes=(note,))

    def _lasting(self, result: CallResult, kind: str) -> Settled:
        """Back-pressure outlasted the back-off: is it the input, the connection, the service?"""
        if not self.pacing.spend(self.until):
            note = f"{_SAID[kind]} to the end of the back-off"
            return self._done(result, answered=False, notes=(note,))
        self.aside.append(result)
        fresh = self.link.alone()
        if not pressure(fresh):
            wedged = self.link.control(False)
            if pressure(wedged) not in ("", "throttled"):
                return self._done(result, finding=self._stops(kind, wedged, everywhere=False))
            return self._judged(fresh)  # the usual connection was only busy
        gone = self.link.gone()
        if gone:
            return self._done(
                result, finding=f"the service went down after {self.n} {self.link.what} ({gone})"
            )
        control = self.link.control(True)
        if not pressure(control):
            return self._done(fresh)  # only this input meets it, even alone: its answer
        if "throttled" in (kind, pressure(control)):
            note = f"{_SAID['throttled']} to the end, for a valid control call too"
            return self._done(result, answered=False, notes=(note,))
        return self._done(result, finding=self._stops(kind, control, everywhere=True))

    def _stops(self, kind: str, control: CallResult, *, everywhere: bool) -> str:
        where = (
            "even a valid control call on a new connection is refused"
            if everywhere
            else "a valid control call on that connection is refused too, while a new "
            "connection is served"
        )
        scope = "" if everywhere else " on one connection"
        return (
            f"the service stops accepting streams after {self.n} {self.link.what}{scope}: "
            f"{_SAID[kind]} persists after back-off, and {where} ({control.summary()}); "
            "a denial of service"
        )


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
    corpus: tuple[Case, ...] = ()  # the seeds of fuzz.seed_corpus (load_seeds)
    presentation: Presentation = BEARER  # where the garbage token goes (auth.header, .scheme)

    def metadata(self, caller: str) -> tuple[tuple[str, str], ...]:
        """The metadata a caller sends."""
        if caller == NO_CREDENTIALS:
            return ()
        if caller == GARBAGE_TOKEN:
            return self.presentation.metadata("eyJhbGciOiJub25lIn0.e30.AAAA")
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

    def seeds(self, *, valid: bool = True) -> list[bytes]:
        """Engine inputs to start from.

        One valid input per method and allowed caller (if ``valid``), then the seed corpus's.
        """
        made = [Case(m, c, m.seed) for m in self.methods for c in m.callers] if valid else []
        return [self.encode(c) for c in made + [c for c in self.corpus if c.method in self.methods]]

    def seeded(self, m: FuzzMethod) -> list[bytes]:
        """The seed corpus's requests for ``m``."""
        return [c.payload for c in self.corpus if c.method == m]


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
            config.table("auth.principals"),
            source,
            refresh=True,
            renew=renewer(keys),
            presentation=presentation_of(config),
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
    surface = surface_of(
        policy.catalogue, chosen, credentials, secrets=secrets, slow_ms=3 * budget_ms
    )
    surface.presentation = presentation_of(config)
    corpus = config.path("fuzz.seed_corpus")
    if corpus is not None:
        source = config.sources[-1] if config.sources else "config"
        surface.corpus = tuple(load_seeds(corpus, surface, source))
    return surface


#: A seed corpus is read up to this many inputs, each of at most this many bytes.
MAX_SEEDS, MAX_SEED_BYTES = 2000, 1 << 20


def load_seeds(directory: Path, surface: Surface, source: str = "config") -> list[Case]:
    """The seed inputs in ``directory`` (``fuzz.seed_corpus``), as cases of ``surface``.

    Two layouts, which may be mixed:

    * a subdirectory named for a method (``GetPatient``, or with its service,
      ``pkg.v1.Service.GetPatient``) holds that method's requests, one serialised
      protobuf message per file; they go out as the method's first allowed caller;
    * a file at the top is an engine input, as ``hipaa-grpc fuzz --corpus`` keeps them
      (see :meth:`Surface.decode`), so last night's corpus can seed the next run.

    Hidden files, files over :data:`MAX_SEED_BYTES` and subdirectories that name no
    fuzzed method are passed over; at most :data:`MAX_SEEDS` inputs, in name order.

    Raises:
        ConfigError: the directory, or a file in it, cannot be read.
    """
    names: dict[str, FuzzMethod] = {}
    for m in surface.methods:
        full = m.path.strip("/").replace("/", ".")
        names.setdefault(full, m)
        names.setdefault(full.rsplit(".", 1)[-1], m)
    out: list[Case] = []
    for entry in _listed(directory, source):
        if len(out) >= MAX_SEEDS:
            break
        if entry.is_dir() and entry.name in names:
            m = names[entry.name]
            caller = m.callers[0] if m.callers else NO_CREDENTIALS
            for f in _listed(entry, source)[: MAX_SEEDS - len(out)]:
                data = _seed_bytes(f, source)
                if data is not None:
                    out.append(Case(m, caller, data))
        elif entry.is_file():
            data = _seed_bytes(entry, source)
            if data is not None:
                out.append(surface.decode(data))
    return out


def _listed(directory: Path, source: str) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise ConfigError(
            source, "fuzz.seed_corpus", f"cannot read {directory}: {exc.strerror or exc}"
        ) from None


def _seed_bytes(path: Path, source: str) -> bytes | None:
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_SEED_BYTES:
            return None
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            source, "fuzz.seed_corpus", f"cannot read {path}: {exc.strerror or exc}"
        ) from None


class Executor(Protocol):
    """Runs a case and judges it."""

    notes: list[str]  # candidates not reproduced and the like, for the run's stats
    unanswered: str  # why the last case got no answer to judge (back-pressure), or ""

    def check(self, case: Case) -> Finding | None:
        """Judge one case; ``None`` when it passes."""

    def stats(self) -> str:
        """The run's counters in words (``""`` when there are none)."""


def _never_gone() -> str:
    return ""


@dataclass
class Remote:
    """Black-box: one gRPC call per case, bytes passed through unserialized.

    ``new_channel`` opens a connection of its own for a replay (the usual channel's when
    ``None``), ``gone`` says why the target accepts no connection any more, ``liveness``
    is the valid control call; ``pacing`` is the run's (see :func:`settle`).
    """

    surface: Surface
    channel: grpc.Channel
    request_id_key: str = "x-request-id"
    pacing: Pacing = field(default_factory=Pacing)
    liveness: str = HEALTH_CHECK
    new_channel: Callable[[], grpc.Channel] | None = None
    gone: Callable[[], str] = _never_gone
    notes: list[str] = field(default_factory=list)
    unanswered: str = ""

    def check(self, case: Case) -> Finding | None:
        """Run ``case`` through back-pressure and the replay gate (:func:`settle`); judge it.

        Back-pressure is never a finding; a candidate counts only when it reproduces alone
        on a new connection, or the service is down after it; a wedged connection (the
        service stops accepting streams on it) is a finding, and the fuzzer goes on over
        a new one.
        """
        link = Link(
            send=lambda: self._call(case, self.channel),
            alone=lambda: self._fresh(lambda ch: self._call(case, ch)),
            control=self._control,
            gone=self.gone,
        )
        self.pacing.peak = 1  # one case at a time: Atheris calls this once per input
        settled = settle(link, self._suspect, self.pacing)
        self.notes += settled.notes
        self.unanswered = "" if settled.answered else settled.result.summary()
        why = settled.finding or (self._suspect(settled.result) if settled.answered else "")
        if settled.finding and self.new_channel is not None:
            self.channel = self.new_channel()  # the wedged one is left to the run to close
        if not why:
            return None
        result = settled.result
        return Finding(
            case.method.path, case.caller, result.code.name, result.details, why, case.payload
        )

    def stats(self) -> str:
        """The pacing's counters."""
        return self.pacing.stats()

    def _suspect(self, result: CallResult) -> str:
        return judge(
            result.code,
            result.details,
            elapsed_ms=result.elapsed_s * 1000,
            slow_ms=self.surface.slow_ms,
            secrets=self.surface.secrets,
            streaming=bool(result.responses),
        )

    def _call(self, case: Case, channel: grpc.Channel) -> CallResult:
        return invoke(
            channel,
            case.method.path,
            [case.payload],
            metadata=self.surface.metadata(case.caller),
            request_id_key=self.request_id_key,
            timeout=self.surface.slow_ms / 1000 + 1,
            max_responses=1,
        )

    def _control(self, fresh: bool) -> CallResult:
        def health(channel: grpc.Channel) -> CallResult:
            return invoke(
                channel, self.liveness, [b""], request_id_key=self.request_id_key, timeout=5
            )

        return self._fresh(health) if fresh else health(self.channel)

    def _fresh(self, call: Callable[[grpc.Channel], CallResult]) -> CallResult:
        if self.new_channel is None:
            return call(self.channel)
        channel = self.new_channel()
        try:
            return call(channel)
        finally:
            channel.close()


@dataclass
class Local:
    """White-box: the case dispatched in-process; escaped exceptions and bypasses fail.

    A failing case is dispatched once more before it counts: one that passes then (a
    slow answer under load) is noted as not reproduced.
    """

    surface: Surface
    service: InProcess
    public: frozenset[str] = frozenset()
    modules: set[str] = field(default_factory=set)  # the service's own code
    notes: list[str] = field(default_factory=list)
    unanswered: str = ""  # in-process, every case is answered
    not_reproduced: int = 0

    def check(self, case: Case) -> Finding | None:
        """Run ``case`` and judge it; ``None`` when it passes or does not reproduce."""
        why, out = self._run(case)
        if why and not self._run(case)[0]:
            self.not_reproduced += 1
            self.notes.append(f"not reproduced: {case.method.path} as {case.caller}: {why}")
            return None
        if not why:
            return None
        return Finding(case.method.path, case.caller, out.code.name, out.details, why, case.payload)

    def stats(self) -> str:
        """How many failing cases did not fail again."""
        return f"{self.not_reproduced} candidates not reproduced"

    def _run(self, case: Case) -> tuple[str, Dispatched]:
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
        return why, out


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
