"""PatientRecords: the compliant reference ePHI service, and its named defects.

Built the way a careful team would build it:

* TLS from grpcio with client certificates required (mTLS);
* JWT bearer authentication in a server interceptor: one algorithm (ES256), iss, aud, exp,
  nbf and typ checked, one identical message for every authentication failure; with a
  token store (the reduced-config variant, as behind an IdP that issues opaque tokens),
  opaque bearer tokens too, looked up by their SHA-256 like an introspection endpoint
  would answer, with their expiry enforced the same way;
* per-method RBAC from a policy table, deny by default (a method missing from the table is
  refused, reflection included);
* an audit event per call, denied calls included, appended as JSON lines with a SHA-256
  hash chain;
* logs that name record IDs and request IDs, never field values;
* sanitized errors: generic text, field paths but never values, no tracebacks;
* a bounded receive size, reflection off.

A defect (see :mod:`targets.catalog`) changes exactly one of these.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import grpc
import jwt
from google.protobuf import descriptor_pool, field_mask_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from targets.pki import Principal, TokenIssuer
from targets.reference import schema

ISSUER = "https://issuer.reference.hipaa.test"
AUDIENCE = "hipaagrpc.reference"
MAX_RECV_BYTES = 4 * 1024 * 1024
MAX_PAGE_SIZE = 25
MAX_EXPORT_RECORDS = 25
MAX_CONCURRENT_EXPORTS = 2
MAX_CONCURRENT_STREAMS = 100  # per connection, advertised in HTTP/2 SETTINGS
TARPIT_S = 0.005  # the tarpit defect's delay per stream without credentials
EXPORT_RECORD_DELAY_S = 0.008  # an export takes a while (LIMIT-003 (b) overlaps three)
VERIFIED_CACHE_SIZE = 1024
#: The service's store of issued opaque tokens (their SHA-256, never the tokens themselves).
OPAQUE_STORE = "opaque-tokens.json"
RATE_RPS, RATE_BURST = 200.0, 5.0  # per identity (token bucket)
CACHE_TTL_S = 1.0
MAX_FILTER_DEPTH = 8
SORT_KEYS: dict[int, Callable[[Any], Any]] = {
    0: lambda r: r.patient_id,
    1: lambda r: r.patient_id,
    2: lambda r: (r.family_name, r.given_name),
}
_CLINICAL = (
    "patient_id",
    "given_name",
    "family_name",
    "birth_date",
    "ssn",
    "mrn",
    "email",
    "phone",
)
#: Fields each role may see (top-level Patient fields); roles not listed see none.
ROLE_FIELDS: dict[str, frozenset[str] | None] = {
    "admin": None,  # everything
    "clinician": frozenset(
        {*_CLINICAL, "address", "clinical_notes", "updated_at", "managing_clinician"}
    ),
    "billing": frozenset(
        {"patient_id", "given_name", "family_name", "ssn", "address", "insurance_plan_id"}
        | {"billing_account", "updated_at"}
    ),
    "auditor": frozenset({"patient_id", "mrn", "updated_at", "managing_clinician"}),
    "exporter": frozenset(
        {"patient_id", "given_name", "family_name", "birth_date", "mrn", "updated_at"}
    ),
}
PRIVILEGED_ROLES = frozenset({"admin"})  # see SSNs in clear
MAX_WATCH_S = 120.0
MAX_WATCH_INTERVAL_MS = 5000  # a client cannot park a server thread for longer
#: Defects whose exceptions escape the service (grpcio answers UNKNOWN).
CRASH_DEFECTS = frozenset({"crash-enum", "crash-nested", "deep-bug"})
SORT_BY_NAME = 2
#: Clock-skew leeway on exp/nbf, at the door and on every message of a long stream.
LEEWAY_S = 1
REQUEST_ID_KEY = "x-request-id"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Failed authentications from one peer within ALERT_WINDOW_S that raise a security alert.
ALERT_BURST = 20
ALERT_WINDOW_S = 60.0

PRINCIPALS = (
    Principal("admin", "u-admin-01", ("admin",), ("pwd", "mfa")),
    Principal("clinician", "u-clin-01", ("clinician",), ("pwd", "mfa")),
    Principal("billing", "u-bill-01", ("billing",)),
    Principal("auditor", "u-audit-01", ("auditor",)),
    Principal("svc-export", "svc-export", ("exporter",)),
    Principal("least-privileged", "u-min-01", ("billing",)),
    Principal("no-roles", "u-none-01", ()),
)

#: Clinicians see only the patients of their care team; organisation-wide roles see all.
CARE_TEAMS = {"u-clin-01": frozenset(f"p-{i:04d}" for i in range(1, 21))}
ORG_WIDE_ROLES = frozenset({"admin", "billing", "auditor", "exporter"})
CURRENT_IDENTITY: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "current_identity", default=None
)

HEALTH_SERVICE = "grpc.health.v1.Health"
PUBLIC_METHODS = frozenset(
    {f"/{HEALTH_SERVICE}/Check", f"/{HEALTH_SERVICE}/Watch"},
)
CHANNELZ_METHODS = (
    "GetTopChannels",
    "GetServers",
    "GetServer",
    "GetServerSockets",
    "GetChannel",
    "GetSubchannel",
    "GetSocket",
)
REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)


@dataclass(frozen=True)
class MethodPolicy:
    """Who may call a method, what the call does, and which record it names."""

    roles: frozenset[str]
    action: str
    resource: Callable[[Any], str]
    step_up: bool = False  # requires MFA evidence (amr contains "mfa")


def _m(name: str) -> str:
    return f"/{schema.SERVICE}/{name}"


POLICY: dict[str, MethodPolicy] = {
    _m("GetPatient"): MethodPolicy(
        frozenset({"admin", "clinician", "billing", "auditor"}), "read", lambda r: r.patient_id
    ),
    _m("SearchPatients"): MethodPolicy(
        frozenset({"admin", "clinician", "auditor"}),
        "search",
        lambda r: f"search:{r.family_name_prefix}" if r.family_name_prefix else "search:*",
    ),
    _m("UpdatePatient"): MethodPolicy(
        frozenset({"admin", "clinician"}), "update", lambda r: r.patient.patient_id, step_up=True
    ),
    _m("ExportPatients"): MethodPolicy(frozenset({"exporter"}), "export", lambda r: "export:*"),
    _m("WatchPatient"): MethodPolicy(
        frozenset({"admin", "clinician", "auditor"}), "watch", lambda r: r.patient_id
    ),
    _m("ReadPatients"): MethodPolicy(
        frozenset({"admin", "clinician", "billing", "auditor"}), "read", lambda r: "stream"
    ),
}

#: The audit store's management API (``audit.mgmt_methods``): no role may call it.
AUDIT_ADMIN = f"{schema.PACKAGE}.AuditAdmin"
UPDATE_EVENT = f"/{AUDIT_ADMIN}/UpdateEvent"
DELETE_EVENT = f"/{AUDIT_ADMIN}/DeleteEvent"
MGMT_METHODS = (UPDATE_EVENT, DELETE_EVENT)
POLICY.update(
    {
        UPDATE_EVENT: MethodPolicy(frozenset(), "audit-update", lambda r: f"audit:{r.seq}"),
        DELETE_EVENT: MethodPolicy(frozenset(), "audit-delete", lambda r: f"audit:{r.seq}"),
    }
)


def policy_table(defects: frozenset[str] = frozenset()) -> dict[str, MethodPolicy]:
    """Who may call what: :data:`POLICY`, and under ``audit-mutable`` admins on the audit store."""
    if "audit-mutable" not in defects:
        return POLICY
    grant = {m: replace(POLICY[m], roles=frozenset({"admin"})) for m in MGMT_METHODS}
    return {**POLICY, **grant}


@dataclass
class Options:
    """How to build the service: which defects are on and where files go."""

    workdir: Path
    defects: frozenset[str] = frozenset()
    host: str = "127.0.0.1"
    port: int = 0
    simulated_io: bool = True  # exports pause per record, as real storage would
    token_store: Path | None = None  # opaque tokens accepted besides JWTs (OPAQUE_STORE)


@dataclass(frozen=True)
class Identity:
    """The verified caller."""

    subject: str
    roles: frozenset[str]
    amr: tuple[str, ...] = ()
    expires: float = float("inf")
    emergency_reason: str = ""  # break-glass: a non-empty reason claim


class _Denied(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuditLog:
    """Append-only JSON-lines audit log with a SHA-256 hash chain.

    ``hash_i = SHA-256(hash_{i-1} || 0x0A || canonical_json(record_i without "hash"))``,
    where canonical JSON has sorted keys, no spaces and UTF-8 text; the first record links
    to 64 zeros.
    """

    GENESIS = "0" * 64
    CHAIN_FIELDS = frozenset({"seq", "prev_hash", "hash"})

    def __init__(self, path: Path, defects: frozenset[str] = frozenset()) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._seq = 0
        self._prev = self.GENESIS
        self._fh = path.open("a", encoding="utf-8")
        self._broken_chain = "broken-chain" in defects
        self._rewrite = "log-rewrite" in defects
        self._kept: list[dict[str, Any]] = []

    @staticmethod
    def canonical(record: dict[str, Any]) -> bytes:
        """Canonical JSON of a record, as hashed."""
        body = {k: v for k, v in record.items() if k != "hash"}
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def _link(self, event: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        record = {**event, "seq": self._seq, "prev_hash": self._prev}
        digest = hashlib.sha256(self._prev.encode() + b"\n" + self.canonical(record))
        if self._broken_chain and self._seq % 7 == 0:  # defect: a link computed wrongly
            digest = hashlib.sha256(self.canonical(record))
        record["hash"] = digest.hexdigest()
        self._prev = record["hash"]
        return record

    def append(self, event: dict[str, Any]) -> None:
        """Add one event with its sequence number and chain hash."""
        with self._lock:
            if self._fh.closed:  # a handler still finishing after stop(): nowhere to write
                return
            record = self._link(event)
            self._kept.append(record)
            if self._rewrite and len(self._kept) >= 40:  # defect: truncate and rewrite
                survivors = [
                    {k: v for k, v in r.items() if k not in ("seq", "prev_hash", "hash")}
                    for r in self._kept[-10:]
                ]
                self._seq, self._prev, self._kept = 0, self.GENESIS, []
                self._fh.close()
                self._fh = self._path.open("w", encoding="utf-8")
                for old in survivors:
                    rec = self._link(old)
                    self._kept.append(rec)
                    self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                self._fh.flush()
                return
            if not self._rewrite:
                self._kept.clear()
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()

    def edit(self, seq: int, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bool:
        """The audit-mutable defect: change (or, ``change`` giving None, drop) record ``seq``.

        The records from there on are renumbered and re-hashed, as a store whose admin API
        holds the chain does it: the chain still verifies with no gap, and the record is
        changed or gone. False when no record has that number.
        """
        with self._lock:
            if self._fh.closed:
                return False
            self._fh.flush()
            text = self._path.read_text(encoding="utf-8")
            records = [json.loads(line) for line in text.split("\n") if line.strip()]
            at = next((i for i, r in enumerate(records) if r.get("seq") == seq), None)
            if at is None:
                return False
            prev = str(records[at].get("prev_hash", self.GENESIS))
            changed = change(dict(records[at]))
            tail = ([changed] if changed is not None else []) + records[at + 1 :]
            for number, record in enumerate(tail, start=seq):
                record["seq"], record["prev_hash"] = number, prev
                digest = hashlib.sha256(prev.encode() + b"\n" + self.canonical(record))
                record["hash"] = prev = digest.hexdigest()
            self._seq, self._prev = seq + len(tail) - 1, prev
            kept = records[:at] + tail
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8"
            )
            self._fh.close()
            os.replace(tmp, self._path)
            self._fh = self._path.open("a", encoding="utf-8")
            return True

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._fh.close()


@dataclass
class _Store:
    """Synthetic patient records, in memory."""

    records: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def seeded(cls, count: int = 40) -> _Store:
        patient = schema.message("Patient")
        given = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan")
        family = ("Quill", "Rowan", "Sable", "Thorne", "Vale", "Wren", "Yarrow", "Zephyr")
        store = cls()
        for i in range(1, count + 1):
            pid = f"p-{i:04d}"
            rec = patient(
                patient_id=pid,
                given_name=given[i % len(given)],
                family_name=family[(i * 3) % len(family)],
                birth_date=f"19{50 + i % 50:02d}-0{1 + i % 9}-1{i % 10}",
                ssn=f"9{i % 100:02d}-5{i % 10}-{1000 + i:04d}",
                mrn=f"MRN-{100000 + i}",
                email=f"patient{i}@example.com",
                phone=f"+1-202-555-01{i % 100:02d}",
                clinical_notes=f"synthetic note {i}",
                insurance_plan_id=f"HPB-{5000 + i}",
                billing_account=f"ACCT-{7000 + i}",
            )
            rec.address.street = f"{i} Example St"
            rec.address.city = "Springfield"
            rec.address.state = "ZZ"
            rec.address.zip = "00000"
            rec.updated_at.GetCurrentTime()
            rec.managing_clinician = "u-clin-01" if i <= 20 else "u-clin-02"
            store.records[pid] = rec
        return store


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


class PatientRecords:
    """The business logic. Assumes the interceptor already authenticated and authorized."""

    def __init__(self, store: _Store, defects: frozenset[str] = frozenset()) -> None:
        self._store = store
        self._verbose = "verbose-errors" in defects
        self._idor = "idor" in defects
        self._mass_assignment = "mass-assignment" in defects
        self._recheck_streams = "stream-outlives-token" not in defects
        self._per_message_authz = "stream-authz-once" not in defects
        # Not a defect: one stream overruns its token by half a second, once, the way a
        # loaded host delays an honest server. AUTHN-009 must not call that a finding.
        self._jitter_once = threading.Event() if "stream-jitter" in defects else None
        self._phi_in_error = "phi-in-error" in defects
        self._phi_in_logs = "phi-in-logs" in defects
        self._phi_in_trailers = "phi-in-trailers" in defects
        self._overshare = "overshare" in defects
        self._raw_ssn = "raw-ssn" in defects
        self._mask_ignored = "mask-ignored" in defects
        self._stale_cache = "stale-cache" in defects
        self._unbounded_export = "unbounded-export" in defects
        self._page_uncapped = "page-size-uncapped" in defects
        self._cache: dict[str, tuple[float, Message]] = {}
        self._crash_enum = "crash-enum" in defects
        self._crash_nested = "crash-nested" in defects
        self._hang_input = "hang-input" in defects
        self._deep_bug = "deep-bug" in defects
        self.export_delay_s = EXPORT_RECORD_DELAY_S
        self._exports: dict[str, int] = {}
        self._patient = schema.message("Patient")
        self._page = schema.message("SearchPatientsResponse")

    def _may_see(self, patient_id: str, *, emergency_ok: bool = False) -> bool:
        """Object-level authorization: org-wide roles see all, clinicians their care team.

        A break-glass token (``emergency_reason``) opens single-record reads only.
        """
        identity = CURRENT_IDENTITY.get()
        if identity is None or identity.roles & ORG_WIDE_ROLES or self._idor:
            return True
        if emergency_ok and identity.emergency_reason:
            return True
        return patient_id in CARE_TEAMS.get(identity.subject, frozenset())

    def _visible(self) -> tuple[frozenset[str] | None, bool]:
        """The caller's field allowlist (None: all) and whether it sees SSNs in clear."""
        identity = CURRENT_IDENTITY.get()
        if identity is None:  # no interceptor (in-process use): everything
            return None, True
        fields: set[str] = set()
        for role in identity.roles:
            allowed = ROLE_FIELDS.get(role, frozenset())
            if allowed is None:
                return None, True
            fields |= allowed
        if self._overshare and "billing" in identity.roles:  # defect
            fields |= {"clinical_notes", "birth_date"}
        return frozenset(fields), bool(identity.roles & PRIVILEGED_ROLES) or self._raw_ssn

    def _project(self, rec: Message) -> Message:
        """``rec`` as the caller may see it: allowed fields only, SSN tokenized if need be."""
        allowed, clear_ssn = self._visible()
        out = self._patient()
        if allowed is None:
            out.CopyFrom(rec)
        elif allowed:
            field_mask_pb2.FieldMask(paths=sorted(allowed)).MergeMessage(rec, out)
        if out.ssn and not clear_ssn:
            out.ssn = f"***-**-{out.ssn[-4:]}"
        return out

    def _load(self, patient_id: str) -> Message | None:
        """A record through the read cache (TTL, invalidated on every write)."""
        now = time.monotonic()
        with self._store.lock:
            hit = self._cache.get(patient_id)
            if hit is not None and (hit[0] > now or self._stale_cache):
                return hit[1]
            rec = self._store.records.get(patient_id)
            if rec is None:
                return None
            copy = self._patient()
            copy.CopyFrom(rec)
            self._cache[patient_id] = (now + CACHE_TTL_S, copy)
            return copy

    def _get(self, patient_id: str, context: grpc.ServicerContext) -> Message:
        rec = self._load(patient_id)
        if rec is None:
            self._fail(context, grpc.StatusCode.NOT_FOUND, "patient not found")
        return self._project(rec)

    def _fail(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
        if self._verbose:  # defect: the stack goes to the caller
            message += "\n" + "".join(traceback.format_stack(limit=4))
        _abort(context, code, message)

    def _validate_mask(self, mask: field_mask_pb2.FieldMask, context: grpc.ServicerContext) -> None:
        paths = [p for p in mask.paths if p != "*"]
        descriptor: Any = self._patient.DESCRIPTOR
        valid = field_mask_pb2.FieldMask(paths=paths).IsValidForDescriptor(descriptor)
        if not valid or not all(paths):
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid field mask path")

    def get_patient(self, request: Any, context: grpc.ServicerContext) -> Message:
        """Read one record, limited to ``read_mask`` when one is given."""
        if not request.patient_id:
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "patient_id is required")
        self._validate_mask(request.read_mask, context)
        if not self._may_see(request.patient_id, emergency_ok=True):
            self._fail(context, grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        out = self._get(request.patient_id, context)
        paths = [p for p in request.read_mask.paths if p != "*"]
        if paths and len(paths) == len(request.read_mask.paths) and not self._mask_ignored:
            masked = self._patient()
            field_mask_pb2.FieldMask(paths=paths).MergeMessage(out, masked)
            return masked
        return out

    def _depth(self, flt: Any, depth: int = 1) -> int:
        return max([depth, *(self._depth(f, depth + 1) for f in flt.any_of)])

    def _matches(self, flt: Any, rec: Any) -> bool:
        own = bool(rec.family_name.startswith(flt.family_name_prefix))
        return own and (not flt.any_of or any(self._matches(f, rec) for f in flt.any_of))

    def search_patients(self, request: Any, context: grpc.ServicerContext) -> Iterator[Message]:
        """Stream pages of matching records; page size capped at MAX_PAGE_SIZE."""
        if request.page_size < 0 and self._hang_input:  # defect: a slow path for bad input
            time.sleep(1.5)
        if request.HasField("filter") and self._depth(request.filter) > MAX_FILTER_DEPTH:
            if self._crash_nested:  # defect: an unchecked recursion limit
                raise RecursionError("filter nesting")
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "filter nested too deeply")
        if request.sort not in SORT_KEYS:
            if self._crash_enum:  # defect: unknown enum numbers reach a dict lookup
                raise KeyError(request.sort)
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "unknown sort order")
        if request.page_size < 0:
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        # Defect: a corner no test reached. Two conditions, two branches (as code grows).
        if self._deep_bug and request.page_size == 7919:  # noqa: SIM102
            if request.sort == SORT_BY_NAME:
                raise ZeroDivisionError("cursor arithmetic")
        size = request.page_size or 20
        if not self._page_uncapped:  # the defect serves whatever size is asked for
            size = min(size, MAX_PAGE_SIZE)
        try:
            start = int(request.page_token or "0")
        except ValueError:
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "invalid page_token")
        with self._store.lock:
            hits = [
                r
                for _, r in sorted(self._store.records.items())
                if r.family_name.startswith(request.family_name_prefix)
                and self._may_see(r.patient_id)
            ]
        if request.HasField("filter"):
            hits = [r for r in hits if self._matches(request.filter, r)]
        hits.sort(key=SORT_KEYS[request.sort])
        for offset in range(start, len(hits), size):
            page = self._page()
            page.patients.extend(self._project(r) for r in hits[offset : offset + size])
            if offset + size < len(hits):
                page.next_page_token = str(offset + size)
            yield page

    def update_patient(self, request: Any, context: grpc.ServicerContext) -> Message:
        """Apply ``update_mask`` (required) to a record."""
        pid = request.patient.patient_id
        if not pid or not request.update_mask.paths:
            self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "patient.patient_id and update_mask are required",
            )
        if "patient_id" in request.update_mask.paths:
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "patient_id cannot be updated")
        if "managing_clinician" in request.update_mask.paths and not self._mass_assignment:
            self._fail(
                context, grpc.StatusCode.INVALID_ARGUMENT, "managing_clinician cannot be updated"
            )
        self._validate_mask(request.update_mask, context)
        if "birth_date" in request.update_mask.paths and not _DATE_RE.match(
            request.patient.birth_date
        ):
            detail = "invalid patient.birth_date"
            if self._phi_in_error:  # defect: the value goes back to the caller
                detail += f": {request.patient.birth_date!r} for {request.patient.given_name}"
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, detail)
        if self._phi_in_logs:  # defect: the request, values and all, in the application log
            logging.getLogger("hipaagrpc.reference").info("update request %s", request)
        if self._phi_in_trailers and request.patient.given_name:  # defect
            context.set_trailing_metadata(
                (
                    (
                        "x-debug-patient",
                        f"{request.patient.given_name} {request.patient.family_name}",
                    ),
                )
            )
        if not self._may_see(pid):
            self._fail(context, grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        with self._store.lock:
            rec = self._store.records.get(pid)
            if rec is None:
                self._fail(context, grpc.StatusCode.NOT_FOUND, "patient not found")
            request.update_mask.MergeMessage(request.patient, rec, replace_message_field=True)
            rec.updated_at.GetCurrentTime()
            if not self._stale_cache:
                self._cache.pop(pid, None)
            out = self._patient()
            out.CopyFrom(rec)
        return out

    def export_patients(self, request: Any, context: grpc.ServicerContext) -> Iterator[Message]:
        """Stream records for bulk export, bounded per call and in concurrency per identity."""
        identity = CURRENT_IDENTITY.get()
        who = identity.subject if identity else ""
        with self._store.lock:
            running = self._exports.get(who, 0)
            busy = running >= MAX_CONCURRENT_EXPORTS and not self._unbounded_export
            if not busy:
                self._exports[who] = running + 1
        if busy:
            self._fail(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent exports")
        try:
            limit = request.max_records or MAX_EXPORT_RECORDS
            if not self._unbounded_export:
                limit = min(limit, MAX_EXPORT_RECORDS)
            with self._store.lock:
                records = [r for _, r in sorted(self._store.records.items())][:limit]
            for rec in records:
                time.sleep(self.export_delay_s)
                yield self._project(rec)
        finally:
            with self._store.lock:
                self._exports[who] -= 1

    def apply_unchecked(self, request: Any) -> None:
        """The write-before-check defect: apply an update that will then be refused."""
        with self._store.lock:
            rec = self._store.records.get(request.patient.patient_id)
            if rec is not None and request.update_mask.paths:
                with contextlib.suppress(ValueError):
                    request.update_mask.MergeMessage(
                        request.patient, rec, replace_message_field=True
                    )
                    rec.updated_at.GetCurrentTime()
                    self._cache.pop(request.patient.patient_id, None)

    def watch_patient(self, request: Any, context: grpc.ServicerContext) -> Iterator[Message]:
        """Stream a record's state every ``interval_ms`` while the credential is valid."""
        identity = CURRENT_IDENTITY.get()
        if request.patient_id == "*":
            if identity is None or not identity.roles & ORG_WIDE_ROLES:
                self._fail(context, grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        elif not self._may_see(request.patient_id):
            self._fail(context, grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        interval = min(max(request.interval_ms or 500, 100), MAX_WATCH_INTERVAL_MS) / 1000
        deadline = time.monotonic() + MAX_WATCH_S
        sent = 0
        event = schema.message("PatientEvent")
        while context.is_active() and time.monotonic() < deadline:
            if request.max_events and sent >= request.max_events:
                return
            if (
                self._recheck_streams
                and identity is not None
                and time.time() > identity.expires + LEEWAY_S
            ):
                if self._jitter_once is None or self._jitter_once.is_set():
                    self._fail(context, grpc.StatusCode.UNAUTHENTICATED, "authentication required")
                self._jitter_once.set()
                time.sleep(0.5)
            ids = sorted(self._store.records) if request.patient_id == "*" else [request.patient_id]
            for pid in ids:
                out = event(patient=self._get(pid, context))
                out.observed_at.GetCurrentTime()
                yield out
            sent += 1
            until = time.monotonic() + interval
            while context.is_active() and time.monotonic() < until:  # a cancel frees the thread
                time.sleep(min(0.05, max(0.0, until - time.monotonic())))

    def read_patients(
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Message]:
        """One record per request message, each authorized on its own."""
        for i, request in enumerate(requests):
            if not request.patient_id:
                self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "patient_id is required")
            checked = i == 0 or self._per_message_authz
            if checked and not self._may_see(request.patient_id):
                self._fail(context, grpc.StatusCode.PERMISSION_DENIED, "permission denied")
            yield self._get(request.patient_id, context)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler for the service, built from its descriptor."""
        return _service_handler(schema.service_descriptor(), self)


def _service_handler(service: Any, servicer: object) -> grpc.GenericRpcHandler:
    """The generic handler for ``service`` (a descriptor), served by ``servicer``.

    Each RPC ``FooBar`` is served by the method ``foo_bar``; kinds and message types
    come from the .proto, so the two cannot drift apart.
    """
    handlers = {}
    for method in service.methods:
        behavior = getattr(servicer, re.sub(r"(?<!^)(?=[A-Z])", "_", method.name).lower())
        kind = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(
            behavior,
            request_deserializer=schema.message(method.input_type.name).FromString,
            response_serializer=schema.message(method.output_type.name).SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class AuditAdmin:
    """The audit store's management API, which refuses everyone: the log is append-only.

    No role may call it, so the gatekeeper refuses every caller (PERMISSION_DENIED, and
    the refusal is audited); the methods refuse too, should a call ever get this far.
    The audit-mutable defect lets admins in, and applies their change.
    """

    def __init__(self, audit: AuditLog, defects: frozenset[str] = frozenset()) -> None:
        self._audit = audit
        self._mutable = "audit-mutable" in defects
        self._ref = schema.message("AuditEventRef")

    def _refuse_unless_mutable(self, context: grpc.ServicerContext) -> None:
        if not self._mutable:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "permission denied")

    def update_event(self, request: Any, context: grpc.ServicerContext) -> Message:
        """Set one field of a record (the audit-mutable defect only)."""
        self._refuse_unless_mutable(context)
        if not request.field or request.field in AuditLog.CHAIN_FIELDS:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "this field cannot be set")

        def change(record: dict[str, Any]) -> dict[str, Any]:
            return {**record, request.field: request.value}

        if not self._audit.edit(request.seq, change):
            _abort(context, grpc.StatusCode.NOT_FOUND, "audit event not found")
        return self._ref(seq=request.seq)

    def delete_event(self, request: Any, context: grpc.ServicerContext) -> Message:
        """Drop a record (the audit-mutable defect only)."""
        self._refuse_unless_mutable(context)
        if not self._audit.edit(request.seq, lambda record: None):
            _abort(context, grpc.StatusCode.NOT_FOUND, "audit event not found")
        return self._ref(seq=request.seq)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler for the AuditAdmin service."""
        return _service_handler(descriptor_pool.Default().FindServiceByName(AUDIT_ADMIN), self)


class Gatekeeper(grpc.ServerInterceptor):
    """Authentication, authorization and audit for every method, in one interceptor."""

    def __init__(
        self,
        issuer: TokenIssuer,
        audit: AuditLog,
        log: logging.Logger,
        public: frozenset[str],
        defects: frozenset[str] = frozenset(),
        opaque: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._issuer = issuer
        self._opaque = opaque or {}  # SHA-256 of an opaque token -> its grant
        self._audit = audit
        self._log = log
        self._public = public
        self._defects = defects
        self._verified_signatures: set[str] = set()  # used only by the sig-cache defect
        self._verified: dict[str, dict[str, Any]] = {}  # whole tokens, as real gateways cache
        self.rate_limited = True  # off in-process: a fuzzer calls far faster than any client
        self._failures: dict[str, list[float]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._alerted: dict[str, float] = {}
        self._burst_lock = threading.Lock()
        self.policies = policy_table(defects)  # who may call what
        self.write_before_check: Callable[[Any], None] | None = None  # the defect's hook
        self.silent_break_glass = "silent-break-glass" in defects  # defect: not flagged

    # -- policy -------------------------------------------------------------------------

    def failed_authentication(self, peer: str, metadata: tuple[tuple[str, Any], ...]) -> None:
        """Count failures per peer address; a burst raises one security alert event."""
        if "token-in-logs" in self._defects:  # defect: the credential goes to the log
            presented = [v for k, v in metadata if k == "authorization"]
            self._log.warning("authentication failed peer=%s authorization=%s", peer, presented)
        address = peer.rsplit(":", 1)[0]
        now = time.monotonic()
        with self._burst_lock:
            times = [t for t in self._failures.get(address, []) if now - t < ALERT_WINDOW_S]
            times.append(now)
            self._failures[address] = times
            fire = (
                len(times) >= ALERT_BURST
                and now - self._alerted.get(address, -1e9) > ALERT_WINDOW_S
            )
            if fire:
                self._alerted[address] = now
        if fire and "no-alert" not in self._defects:
            ts = (
                dt.datetime.now(dt.timezone.utc)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
            )
            self._audit.append(
                {
                    "ts": ts,
                    "event_type": "security_alert",
                    "alert": "auth_failure_burst",
                    "source": address,
                    "count": len(times),
                }
            )

    def _refuse(self, reason: str) -> _Denied:
        if "auth-oracle" in self._defects:  # defect: tells the caller why
            return _Denied(grpc.StatusCode.UNAUTHENTICATED, f"authentication failed: {reason}")
        return _Denied(grpc.StatusCode.UNAUTHENTICATED, "authentication required")

    def authenticate(self, metadata: tuple[tuple[str, Any], ...]) -> Identity:
        """Verify the single bearer token; every failure reads the same to the caller."""
        values = [v for k, v in metadata if k == "authorization"]
        if not values and "no-auth" in self._defects:  # defect: fail open without credentials
            return Identity(
                "anonymous", frozenset(r for p in POLICY.values() for r in p.roles), ("mfa",)
            )
        if len(values) != 1 or not isinstance(values[0], str):
            raise self._anonymous()
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._anonymous()
        try:
            claims = self._verify(token)
        except jwt.InvalidTokenError as exc:
            raise self._refuse(type(exc).__name__) from None
        roles = claims.get("roles", [])
        amr = claims.get("amr", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise self._refuse("roles")
        if not isinstance(amr, list):
            raise self._refuse("amr")
        reason = claims.get("emergency_reason", "")
        return Identity(
            str(claims["sub"]),
            frozenset(roles),
            tuple(str(a) for a in amr),
            float(claims["exp"]),
            reason if isinstance(reason, str) else "",
        )

    def _anonymous(self) -> _Denied:
        if "wrong-code" in self._defects:  # defect: PERMISSION_DENIED for "who are you?"
            return _Denied(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        return self._refuse("missing credentials")

    def _introspect(self, token: str) -> dict[str, Any] | None:
        """An opaque token's grant as claims, as an introspection endpoint answers.

        ``None`` when the store does not hold it (it may still be a JWT). Looked up by
        digest, so a prefix, a truncation or a lookalike of a token matches nothing.
        """
        grant = self._opaque.get(_digest(token))
        if grant is None:
            return None
        if time.time() > float(grant["exp"]) + LEEWAY_S:
            raise jwt.ExpiredSignatureError("token expired")
        return dict(grant)

    def _verify(self, token: str) -> dict[str, Any]:
        granted = self._introspect(token) if self._opaque else None
        if granted is not None:
            return granted
        d = self._defects
        known = self._verified.get(token)  # this exact token verified before: only time moves
        if known is not None:
            now = time.time()
            exp_ignored = bool(d & {"expired-ok", "cache-outlives-exp"})  # defects
            if now > float(known["exp"]) + LEEWAY_S and not exp_ignored:
                raise jwt.ExpiredSignatureError("Signature has expired")
            if now < float(known["nbf"]) - LEEWAY_S:
                raise jwt.ImmatureSignatureError("The token is not yet valid (nbf)")
            return known
        header = jwt.get_unverified_header(token)
        alg = str(header.get("alg", ""))
        signature = token.rsplit(".", 1)[-1]
        options: dict[str, Any] = {"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]}
        key: Any = self._issuer.public_key
        unsigned_ok = "alg-none" in d and alg.lower() == "none"  # defect: unsigned accepted
        cached = "sig-cache" in d and signature in self._verified_signatures  # defect
        if unsigned_ok or cached:
            options["verify_signature"] = False
        elif "jwk-header" in d and isinstance(header.get("jwk"), dict):  # defect: trusts the token
            key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(header["jwk"]))
        elif header.get("kid") != self._issuer.kid:
            raise jwt.InvalidTokenError("unknown key")
        if header.get("typ") != "at+jwt" and "typ-ignored" not in d:
            raise jwt.InvalidTokenError("unexpected token type")
        if "expired-ok" in d:  # defect: exp not enforced
            options["verify_exp"] = False
        if "aud-ignored" in d:  # defect: any audience, or none
            options["verify_aud"] = False
            options["require"] = [c for c in options["require"] if c != "aud"]
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[TokenIssuer.algorithm],
            audience=self._issuer.audience,
            issuer=self._issuer.issuer,
            leeway=LEEWAY_S,
            options=options,  # type: ignore[arg-type]
        )
        if "sig-cache" in d:
            self._verified_signatures.add(signature)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _rate_ok(self, subject: str) -> bool:
        """Token bucket per identity: RATE_RPS sustained, RATE_BURST at once."""
        if "no-rate-limit" in self._defects or not self.rate_limited:
            return True
        now = time.monotonic()
        with self._burst_lock:
            tokens, last = self._buckets.get(subject, (RATE_BURST, now))
            tokens = min(RATE_BURST, tokens + (now - last) * RATE_RPS)
            ok = tokens >= 1
            self._buckets[subject] = (tokens - 1 if ok else tokens, now)
        return ok

    def authorize(self, identity: Identity, method: str) -> MethodPolicy | None:
        """The method's policy if the identity may call it; deny by default."""
        if not self._rate_ok(identity.subject):
            raise _Denied(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded")
        policy = self.policies.get(method)
        if policy is not None and "rbac-hole" in self._defects and method == _m("SearchPatients"):
            return policy  # defect: every authenticated caller may search
        if policy is None or not (policy.roles & identity.roles):
            raise _Denied(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        if policy.step_up and "mfa" not in identity.amr and "no-step-up" not in self._defects:
            raise _Denied(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        return policy

    # -- plumbing -----------------------------------------------------------------------

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap the handler so that every call is checked and audited."""
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return None
        if method in self._public:
            return _self_decoding(handler)
        if "tarpit" in self._defects and not any(
            key == "authorization" for key, _ in handler_call_details.invocation_metadata or ()
        ):
            # Defect: a brute-force "tarpit" that sleeps in grpcio's dispatch thread, where
            # interceptors run as soon as a stream's HEADERS arrive: every stream without
            # credentials, even one reset at once, stalls every other caller.
            time.sleep(TARPIT_S)
        # Requests are decoded before the gate, as grpcio would, but without its leak (below).
        return _self_decoding(
            _wrap_handler(
                handler, lambda behavior, streaming: self._guarded(method, behavior, streaming)
            )
        )

    def _guarded(
        self, method: str, behavior: Callable[..., Any], streaming: bool
    ) -> Callable[..., Any]:
        if streaming:

            def stream_behavior(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                call = _Call(self, method, request, context)
                call.begin()
                count = 0
                try:
                    for item in behavior(request, context):
                        count += 1
                        yield item
                except BaseException as exc:
                    call.finish(exc, count)
                    raise
                call.finish(None, count)

            return stream_behavior

        def unary_behavior(request: Any, context: grpc.ServicerContext) -> Any:
            call = _Call(self, method, request, context)
            call.begin()
            try:
                response = behavior(request, context)
            except BaseException as exc:
                call.finish(exc, 0)
                raise
            call.finish(None, 1)
            return response

        return unary_behavior


class _Call:
    """One call through the gatekeeper: request ID, identity, and its audit event."""

    def __init__(
        self, gate: Gatekeeper, method: str, request: Any, context: grpc.ServicerContext
    ) -> None:
        self.gate = gate
        self.method = method
        self.request = request
        self.context = context
        self.metadata = tuple(context.invocation_metadata())
        sent = next((v for k, v in self.metadata if k == REQUEST_ID_KEY), None)
        ok = isinstance(sent, str) and _REQUEST_ID_RE.match(sent)
        self.request_id = sent if ok and isinstance(sent, str) else str(uuid.uuid4())
        self.identity: Identity | None = None
        self.policy: MethodPolicy | None = gate.policies.get(method)

    def begin(self) -> None:
        try:
            self.identity = self.gate.authenticate(self.metadata)
            CURRENT_IDENTITY.set(self.identity)
            self.policy = self.gate.authorize(self.identity, self.method)
        except _Denied as denied:
            if (
                self.gate.write_before_check is not None
                and denied.code == grpc.StatusCode.PERMISSION_DENIED
                and self.method == _m("UpdatePatient")
            ):
                self.gate.write_before_check(self.request)  # defect: the write lands anyway
            self.finish(None, 0, denied.code)
            self.context.abort(denied.code, denied.message)

    def finish(
        self, exc: BaseException | None, messages: int, code: grpc.StatusCode | None = None
    ) -> None:
        if code is None:
            context: Any = self.context  # ServicerContext.code() exists since grpcio 1.38
            code = context.code() if exc is not None else None
            crash_defect = bool(self.gate._defects & CRASH_DEFECTS)
            if exc is not None and code is None and crash_defect and isinstance(exc, Exception):
                self._record(grpc.StatusCode.UNKNOWN, messages)  # defect: no catch-all
                return
            if exc is not None and code is None:
                # An unexpected error: log its type only (values may hold PHI), answer INTERNAL.
                self.gate._log.error(
                    "rpc failed method=%s request_id=%s error=%s",
                    self.method,
                    self.request_id,
                    type(exc).__name__,
                )
                code = grpc.StatusCode.INTERNAL
                self._record(code, messages)
                detail = "internal error"
                if "verbose-errors" in self.gate._defects:  # defect
                    detail += "\n" + "".join(traceback.format_exception(exc))
                self.context.abort(grpc.StatusCode.INTERNAL, detail)
            code = code or grpc.StatusCode.OK
        self._record(code, messages)

    def _record(self, code: grpc.StatusCode, messages: int) -> None:
        d = self.gate._defects
        refused = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            self.gate.failed_authentication(self.context.peer(), self.metadata)
        if refused and "no-audit-on-deny" in d:  # defect: refusals leave no trace
            return
        resource = ""
        if self.policy is not None and not hasattr(self.request, "__next__"):
            with contextlib.suppress(Exception):
                resource = self.policy.resource(self.request)
        now = dt.datetime.now(dt.timezone.utc)
        event = {
            "ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": self.request_id,
            "identity": self.identity.subject if self.identity else "",
            "identity_verified": self.identity is not None,
            "method": self.method,
            "action": self.policy.action if self.policy else "unknown",
            "resource": resource,
            "outcome": code.name,
            "messages": messages,
            "source": self.context.peer(),
            "emergency": bool(
                self.identity
                and self.identity.emergency_reason
                and not self.gate.silent_break_glass
            ),
            "reason": self.identity.emergency_reason
            if self.identity and not self.gate.silent_break_glass
            else "",
        }
        if self.identity is None and "forged-actor" in d:  # defect: the unverified sub is the actor
            event["identity"] = _unverified_subject(self.metadata)
        if "clock-skew" in d:  # defect: the service clock runs five minutes fast
            event["ts"] = (
                (now + dt.timedelta(minutes=5))
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
            )
        if "audit-missing-fields" in d:  # defect
            del event["source"], event["resource"]
        if "phi-in-audit" in d and hasattr(
            self.request, "patient"
        ):  # defect: values, not references
            p = self.request.patient
            event["details"] = f"{p.given_name} {p.family_name} ssn={p.ssn} email={p.email}"
        self.gate._audit.append(event)
        self.gate._log.info(
            "rpc method=%s request_id=%s outcome=%s identity=%s",
            self.method,
            self.request_id,
            code.name,
            event["identity"] or "-",
        )


def _unverified_subject(metadata: tuple[tuple[str, Any], ...]) -> str:
    """The ``sub`` a presented token claims, unverified (only the forged-actor defect uses it)."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            with contextlib.suppress(jwt.InvalidTokenError, ValueError):
                claims = jwt.decode(value.partition(" ")[2], options={"verify_signature": False})
                return str(claims.get("sub", ""))
    return ""


def _wrap_handler(
    handler: grpc.RpcMethodHandler,
    guard: Callable[[Callable[..., Any], bool], Callable[..., Any]],
) -> grpc.RpcMethodHandler:
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(guard(handler.unary_unary, False), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(guard(handler.unary_stream, True), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(guard(handler.stream_unary, False), **kw)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(guard(handler.stream_stream, True), **kw)
    raise ValueError("RPC method handler without a behaviour")


#: What grpcio answers a request its deserializer rejects; the service answers the same.
UNDECODABLE = "Exception deserializing request!"


def _self_decoding(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` taking raw bytes and decoding them in its behaviour.

    When grpcio's ``request_deserializer`` rejects a message, grpcio (1.85) sends INTERNAL
    but never completes the server call: the HTTP/2 stream stays open and counted against
    ``grpc.max_concurrent_streams``, so after that many malformed requests on one
    connection every new stream is refused (REFUSED_STREAM) until the client reconnects.
    Decoding here instead gives the caller the same answer through an ordinary abort,
    which completes the call and frees the stream.
    """
    decode = handler.request_deserializer
    if decode is None:
        return handler

    def one(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return decode(raw)
        except Exception:
            context.abort(grpc.StatusCode.INTERNAL, UNDECODABLE)

    def each(raws: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        for raw in raws:
            yield one(raw, context)

    kw = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        uu = handler.unary_unary
        return grpc.unary_unary_rpc_method_handler(lambda r, c: uu(one(r, c), c), **kw)
    if handler.unary_stream:
        us = handler.unary_stream
        return grpc.unary_stream_rpc_method_handler(lambda r, c: us(one(r, c), c), **kw)
    if handler.stream_unary:
        su = handler.stream_unary
        return grpc.stream_unary_rpc_method_handler(lambda r, c: su(each(r, c), c), **kw)
    if handler.stream_stream:
        ss = handler.stream_stream
        return grpc.stream_stream_rpc_method_handler(lambda r, c: ss(each(r, c), c), **kw)
    raise ValueError("RPC method handler without a behaviour")


def _reflection_handlers() -> list[grpc.GenericRpcHandler]:
    """Reflection v1alpha (grpcio-reflection) and v1 (same messages, v1 service name)."""
    from grpc_reflection.v1alpha import reflection, reflection_pb2

    servicer = reflection.ReflectionServicer(
        [schema.SERVICE, AUDIT_ADMIN, HEALTH_SERVICE, *REFLECTION_SERVICES]
    )
    handlers = []
    for service in REFLECTION_SERVICES:
        handlers.append(
            grpc.method_handlers_generic_handler(
                service,
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        servicer.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            )
        )
    return handlers


@dataclass
class Running:
    """A started reference server and what a client needs to reach it."""

    server: grpc.Server
    port: int
    audit: AuditLog

    def stop(self, grace: float = 0.0) -> None:
        """Stop serving and close the audit log.

        No grace by default: grpcio keeps a bidi call whose request failed to parse alive
        until the grace period ends, even with no handler running, and whoever stops the
        target (the harness, at the end of its run) has no call left to wait for. Measured
        at the end of a default run: 0.62 s to stop the spawned target with 0.25 s of
        grace, 0.37 s without.
        """
        self.server.stop(grace).wait(grace + 0.25)
        self.audit.close()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_opaque_tokens(workdir: Path, ttl_s: int) -> dict[str, str]:
    """A random opaque token per principal, valid ``ttl_s``, kept in ``workdir``'s store.

    The store holds each token's SHA-256 and grant (subject, roles, amr, exp), as an IdP's
    token table would; the tokens themselves go only to the caller (the operators).
    """
    now = int(time.time())
    tokens = {p.name: secrets.token_urlsafe(32) for p in PRINCIPALS}
    by_name = {p.name: p for p in PRINCIPALS}
    store = {
        _digest(token): {
            "sub": by_name[name].subject,
            "roles": list(by_name[name].roles),
            "amr": list(by_name[name].amr),
            "iat": now,
            "nbf": now,
            "exp": now + ttl_s,
        }
        for name, token in tokens.items()
    }
    path = workdir / OPAQUE_STORE
    path.write_text(json.dumps(store))
    path.chmod(0o600)
    return tokens


def load_token_store(path: Path) -> dict[str, dict[str, Any]]:
    """The grants :func:`issue_opaque_tokens` wrote, by token digest."""
    store: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return store


def _started() -> dict[str, Any]:
    """The audit log's first record: the service started (its own request ID, as any event)."""
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event_type": "service_started",
        "request_id": str(uuid.uuid4()),
        "identity": "",
        "action": "start",
        "outcome": "OK",
        "source": "hipaagrpc.reference",
    }


@dataclass
class Built:
    """The service before it is bound to a port: handlers, interceptor, audit log."""

    handlers: list[grpc.GenericRpcHandler]
    gatekeeper: Gatekeeper
    audit: AuditLog


def build(options: Options, issuer: TokenIssuer) -> Built:
    """The handlers and interceptor a server (or an in-process fuzzer) runs."""
    schema.message("Patient")  # registers the descriptors before any handler is built
    log = logging.getLogger("hipaagrpc.reference")
    audit = AuditLog(options.workdir / "audit.jsonl", options.defects)
    audit.append(_started())
    public = set(PUBLIC_METHODS)
    records = PatientRecords(_Store.seeded(), options.defects)
    records.export_delay_s = EXPORT_RECORD_DELAY_S if options.simulated_io else 0.0
    admin = AuditAdmin(audit, options.defects)
    handlers: list[grpc.GenericRpcHandler] = [records.handler(), admin.handler()]
    if "reflection" in options.defects:
        handlers.extend(_reflection_handlers())
        public |= {f"/{s}/ServerReflectionInfo" for s in REFLECTION_SERVICES}
    if "channelz" in options.defects:
        public |= {f"/grpc.channelz.v1.Channelz/{m}" for m in CHANNELZ_METHODS}
    opaque = load_token_store(options.token_store) if options.token_store else None
    gatekeeper = Gatekeeper(issuer, audit, log, frozenset(public), options.defects, opaque)
    if "write-before-check" in options.defects:
        gatekeeper.write_before_check = records.apply_unchecked
    return Built(handlers, gatekeeper, audit)


def start(
    options: Options, issuer: TokenIssuer, server_credentials: grpc.ServerCredentials | None
) -> Running:
    """Build and start the server; ``server_credentials=None`` means cleartext."""
    built = build(options, issuer)
    handlers, gatekeeper, audit = built.handlers, built.gatekeeper, built.audit
    recv_limit = 256 * 1024 * 1024 if "no-size-limit" in options.defects else MAX_RECV_BYTES
    server_options: list[tuple[str, Any]] = [
        # The no-size-limit defect raises the limit far past what the service needs.
        ("grpc.max_receive_message_length", recv_limit),
        ("grpc.so_reuseport", 0),
    ]
    if "unbounded-streams" not in options.defects:  # grpcio advertises no limit by default
        server_options.append(("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        interceptors=[gatekeeper],
        options=server_options,
        handlers=handlers,
    )
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(schema.SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{options.host}:{options.port}"
    if server_credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    if "channelz" in options.defects:  # defect: admin services on the public port, no auth
        from grpc_channelz.v1 import channelz

        channelz.add_channelz_servicer(server)
    server.start()
    return Running(server, port, audit)
