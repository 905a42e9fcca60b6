"""Reading the target's audit events, whatever format its stack writes them in.

The source is a file (or glob) or a read-only command; ``audit.format`` chooses the reader:

* ``jsonl``: one JSON object per line (zap, pino, logrus, structlog, the bundled reference);
* ``fhir``: FHIR AuditEvent resources, R4 or R5 (IHE BALP), one per line (NDJSON) or as a
  Bundle or an array;
* ``ocsf``: OCSF events (API Activity, class 6003, and any other class), one per line or an
  array;
* ``otlp``: OpenTelemetry log records as OTLP/JSON exports (``resourceLogs[].scopeLogs[]
  .logRecords[]``, as the collector's file exporter writes them, one export per line).

Every reader yields the records as the source holds them (an OTLP log record with its
``attributes`` and ``body`` decoded, its ``resource`` and ``scope`` beside them) and reads
the logical fields (identity, method, resource, action, outcome, request_id, timestamp,
source, emergency, reason) where its format keeps them, unless ``audit.field_map`` names a
path: a dotted path into objects and lists (``agent.0.who.identifier.value``; a key that
itself holds dots, ``attributes.enduser.id``, is found too). Every value then goes through
the same normalisation (:class:`Fields`): outcomes spelt as code names in any case,
numbers or the service's own words (``audit.outcome_map``), timestamps in RFC 3339 or epoch
numbers (``audit.timestamp_format``). Unparseable lines are counted, never fatal.

Events are matched to the harness's calls (:func:`correlate`) by the request ID the
harness sent, or, with ``audit.correlation = "tuple"``, by method, identity, resource and
time: an event is a call's when its method is the call's, its identity the call's verified
subject, the record ID it records (if any the harness knows) one the call named, and its
time within the call's send/receive interval widened by ``clock.tolerance_ms``; a call is
matched only when exactly one event fits it and that event fits no other call.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import glob
import hashlib
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc

from harness.channels import CallResult
from harness.config import Config
from harness.errors import ConfigError
from harness.plans.calls import ids_named, sent_requests, wire_values
from harness.principals import Principal
from harness.run import Run
from harness.tokens import parse

_CMD_TIMEOUT_S = 15.0

#: ``audit.format``: the readers the harness has.
FORMATS = ("jsonl", "fhir", "ocsf", "otlp")
#: ``audit.timestamp_format`` epoch units: how many per second.
EPOCH_UNITS = {"epoch_s": 1, "epoch_ms": 10**3, "epoch_us": 10**6, "epoch_ns": 10**9}
_CODES = {c.name.replace("_", ""): c for c in grpc.StatusCode}
_NUMBERS = {c.value[0]: c for c in grpc.StatusCode}

Event = dict[str, Any]


@dataclass(frozen=True)
class Events:
    """Events read from the audit source, or why none could be read.

    ``lines`` holds each event's line as the source wrote it (without its line end), or
    None for an event that shares its line or document with others (an OTLP export, a
    Bundle): what ``audit.hash_chain.canonicalization = "raw-line"`` hashes.
    """

    events: tuple[Event, ...]
    problem: str = ""
    unparsed: int = 0
    lines: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class Stamp:
    """An event's time: when (UTC), and whether it is given to a fraction of a second."""

    at: dt.datetime
    sub_second: bool


def _rfc3339(value: str) -> Stamp | None:
    text = value.strip()
    if len(text) < 20 or text[10] not in "Tt ":
        return None
    try:
        at = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        return None
    if at.tzinfo is None:  # no zone: ambiguous, however precise
        return None
    return Stamp(at.astimezone(dt.timezone.utc), "." in text[19:])


def _epoch(value: Any, unit: str) -> Stamp | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if unit == "auto":  # the unit from the magnitude: seconds stay below 1e11 until 5138
        bounds = {"epoch_s": 1e11, "epoch_ms": 1e14, "epoch_us": 1e17}
        unit = next((u for u, bound in bounds.items() if abs(number) < bound), "epoch_ns")
    per_second = EPOCH_UNITS[unit]
    fraction = isinstance(value, float) or (isinstance(value, str) and "." in value)
    try:
        if isinstance(value, str) and value.strip().isdigit():  # int64 text: exact
            whole, rest = divmod(int(value), per_second)
            at = dt.datetime.fromtimestamp(whole, dt.timezone.utc)
            at += dt.timedelta(microseconds=rest * 10**6 // per_second)
        else:
            at = dt.datetime.fromtimestamp(number / per_second, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return Stamp(at, per_second > 1 or fraction)


def parse_time(value: Any, time_format: str = "auto") -> Stamp | None:
    """``value`` as an unambiguous time, or None.

    RFC 3339 needs ``Z`` or an offset; an epoch number is UTC by definition, in the unit
    ``time_format`` declares (``epoch_s``/``_ms``/``_us``/``_ns``), or, with ``auto``, the
    unit its magnitude implies. ``rfc3339`` accepts only the text form, an epoch unit only
    numbers (or numeric strings).
    """
    if time_format in ("rfc3339", "auto") and isinstance(value, str):
        stamp = _rfc3339(value)
        if stamp is not None or time_format == "rfc3339":
            return stamp
    if time_format == "auto" or time_format in EPOCH_UNITS:
        return _epoch(value, time_format)
    return None


def outcome_code(
    value: Any, outcome_map: Mapping[str, Any] | None = None
) -> grpc.StatusCode | None:
    """The gRPC code an event's outcome names, or None.

    ``outcome_map`` (``audit.outcome_map``) maps the service's own spellings
    (``PermissionDenied``, ``403``) to codes; code names in any case, with or without
    underscores, and code numbers are understood without it.
    """
    if isinstance(value, bool) or value is None:
        return None
    mapped = (outcome_map or {}).get(str(value))
    if mapped is not None and str(mapped) != str(value):
        return outcome_code(mapped)
    if isinstance(value, int):
        return _NUMBERS.get(value)
    text = str(value).strip()
    if text.isdigit():
        return _NUMBERS.get(int(text))
    return _CODES.get(text.upper().replace("_", "").replace("-", "").replace(" ", ""))


# -- paths into records -------------------------------------------------------------------


def lookup(node: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``node`` (None when there is none).

    A part is an object key or a list index (``agent.0.who``); a key may itself hold dots
    (``attributes.enduser.id`` finds the key ``enduser.id``): the longest key that leads
    somewhere wins.
    """
    return _walk(node, path.split(".")) if path else None


def _walk(node: Any, parts: Sequence[str]) -> Any:
    if not parts:
        return node
    if isinstance(node, Mapping):
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in node:
                found = _walk(node[key], parts[i:])
                if found is not None:
                    return found
        return None
    if isinstance(node, list) and parts[0].isdigit() and int(parts[0]) < len(node):
        return _walk(node[int(parts[0])], parts[1:])
    return None


def without(record: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A copy of ``record`` without the value at ``path`` (the same when it has none)."""
    out = copy.deepcopy(dict(record))
    if path:
        _drop(out, path.split("."))
    return out


def _drop(node: Any, parts: Sequence[str]) -> bool:
    if isinstance(node, dict):
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in node:
                if i == len(parts):
                    del node[key]
                    return True
                if _drop(node[key], parts[i:]):
                    return True
        return False
    if isinstance(node, list) and parts[0].isdigit() and int(parts[0]) < len(node):
        if len(parts) == 1:
            del node[int(parts[0])]
            return True
        return _drop(node[int(parts[0])], parts[1:])
    return False


# -- the readers --------------------------------------------------------------------------

FieldReader = Callable[[Mapping[str, Any], "Fields"], Any]


@dataclass(frozen=True)
class Fields:
    """How to read an event: ``audit.format``, ``audit.field_map``, outcomes and times.

    A name ``audit.field_map`` maps is read at its path (:func:`lookup`); any other is read
    where the format keeps it (a FHIR AuditEvent's requestor agent, an OCSF event's
    ``actor.user.uid``...), and in ``jsonl`` under its own name.
    """

    names: Mapping[str, str] = dc_field(default_factory=dict)
    outcomes: Mapping[str, Any] = dc_field(default_factory=dict)
    time_format: str = "auto"
    kind: str = "jsonl"
    request_id_key: str = "x-request-id"

    @classmethod
    def of(cls, config: Config) -> Fields:
        """The fields a run's configuration declares."""
        return cls(
            {k: str(v) for k, v in config.table("audit.field_map").items()},
            config.table("audit.outcome_map"),
            str(config.get("audit.timestamp_format") or "auto"),
            str(config.get("audit.format") or "jsonl"),
            str(config.get("audit.request_id_key") or "x-request-id"),
        )

    @property
    def reader(self) -> _Reader:
        """The reader of ``audit.format``."""
        return READERS[self.kind]

    def __call__(self, event: Mapping[str, Any], name: str) -> Any:
        """The value of logical field ``name`` in ``event`` (None when it has none)."""
        path = self.names.get(name)
        if path is not None:
            return lookup(event, path)
        read = self.reader.fields.get(name)
        return read(event, self) if read is not None else lookup(event, name)

    def outcome(self, event: Mapping[str, Any]) -> grpc.StatusCode | None:
        """The code the event's outcome names."""
        if "outcome" in self.names or self.reader.outcome is None:
            return outcome_code(self(event, "outcome"), self.outcomes)
        return self.reader.outcome(event, self)

    def time(self, event: Mapping[str, Any]) -> Stamp | None:
        """The event's timestamp, if it is unambiguous."""
        if "timestamp" in self.names or self.reader.time is None:
            return parse_time(self(event, "timestamp"), self.time_format)
        return self.reader.time(event, self)


@dataclass(frozen=True)
class _Reader:
    """One ``audit.format``: the records a JSON document holds, and where fields are."""

    records: Callable[[Any], list[Event] | None]  # None: the document holds no event
    fields: Mapping[str, FieldReader] = dc_field(default_factory=dict)
    outcome: Callable[[Mapping[str, Any], Fields], grpc.StatusCode | None] | None = None
    time: Callable[[Mapping[str, Any], Fields], Stamp | None] | None = None
    documents: bool = False  # a chunk may be one JSON document spread over lines


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list (a lone object as a list of one)."""
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _flat(doc: Any, one: Callable[[dict[str, Any]], list[Event] | None]) -> list[Event] | None:
    """The records of ``doc``: ``one`` of an object, each item of an array."""
    if isinstance(doc, list):
        found = [one(d) for d in _dicts(doc)]
        return (
            None if not doc or any(f is None for f in found) else [e for f in found if f for e in f]
        )
    return one(doc) if isinstance(doc, dict) else None


def _judged(
    words: Iterable[Any], coarse: Any, succeeded: bool, fields: Fields
) -> grpc.StatusCode | None:
    """The first of ``words`` naming a code; else the format's coarse outcome.

    A coarse outcome (FHIR's 0/4/8/12, OCSF's status_id) names a code only through
    ``audit.outcome_map``, or as success (``succeeded``): "minor failure" is no
    particular code.
    """
    for word in words:
        code = outcome_code(word, fields.outcomes)
        if code is not None:
            return code
    if coarse is None or isinstance(coarse, bool):
        return None
    mapped = fields.outcomes.get(str(coarse))
    if mapped is not None:
        return outcome_code(mapped)
    return grpc.StatusCode.OK if succeeded else None


# JSON lines: the record is the object; every field under its own name or field_map's.

JSONL = _Reader(lambda doc: [doc] if isinstance(doc, dict) else None)


# FHIR AuditEvent, R4 and R5 (IHE BALP) ---------------------------------------------------

_GRPC_PATH = re.compile(r"^/?[A-Za-z_][\w.]*/[A-Za-z_]\w*$")
_BALP_IDS = frozenset({"XrequestId", "Traceparent", "Tracestate"})


def _fhir_records(doc: Any) -> list[Event] | None:
    def one(d: dict[str, Any]) -> list[Event] | None:
        kind = d.get("resourceType")
        if kind == "AuditEvent":
            return [d]
        if kind == "Bundle":
            found = [e.get("resource") for e in _dicts(d.get("entry"))]
            return [
                r for r in found if isinstance(r, dict) and r.get("resourceType") == "AuditEvent"
            ]
        return None

    return _flat(doc, one)


def _codes(node: Any) -> list[str]:
    """The codes of a Coding, a CodeableConcept, or a list of either."""
    out: list[str] = []
    for d in _dicts(node):
        if "coding" in d:
            out += _codes(d["coding"])
        elif isinstance(d.get("code"), str):
            out.append(d["code"])
    return out


def _requestor(event: Mapping[str, Any]) -> dict[str, Any]:
    return next((a for a in _dicts(event.get("agent")) if a.get("requestor") is True), {})


def _fhir_identity(event: Mapping[str, Any], _: Fields) -> Any:
    who = _requestor(event).get("who")
    if not isinstance(who, dict):
        return None
    value = lookup(who, "identifier.value")
    return value if value is not None else who.get("reference")


def grpc_path(value: Any) -> Any:
    """A method named ``pkg.Svc/M`` (OpenTelemetry's form) as the path ``/pkg.Svc/M``."""
    if isinstance(value, str) and _GRPC_PATH.match(value) and not value.startswith("/"):
        return "/" + value
    return value


def _fhir_method(event: Mapping[str, Any], _: Fields) -> Any:
    codes = _codes(event.get("subtype")) + _codes(event.get("code"))  # R4, R5
    return grpc_path(next((c for c in codes if _GRPC_PATH.match(c)), None))


def _what(entity: Mapping[str, Any]) -> Any:
    what = entity.get("what")
    if not isinstance(what, dict):
        return None
    for path in ("identifier.value", "reference", "display"):
        if (value := lookup(what, path)) is not None:
            return value
    return None


def _balp_id(entity: Mapping[str, Any]) -> bool:
    return bool(_BALP_IDS & set(_codes(entity.get("type")) + _codes(entity.get("role"))))


def _fhir_resource(event: Mapping[str, Any], _: Fields) -> Any:
    entities = [e for e in _dicts(event.get("entity")) if not _balp_id(e)]
    entities.sort(key=lambda e: "4" not in _codes(e.get("role")))  # domain resources first
    return next((w for e in entities if (w := _what(e)) is not None), None)


def _fhir_request_id(event: Mapping[str, Any], _: Fields) -> Any:
    ids = [e for e in _dicts(event.get("entity")) if "XrequestId" in _codes(e.get("type"))]
    return next((w for e in ids if (w := _what(e)) is not None), None)


def _network(agent: Mapping[str, Any]) -> Any:
    for path in ("network.address", "networkString", "networkUri", "networkReference.display"):
        if (value := lookup(agent, path)) is not None:
            return value
    return None


def _fhir_source(event: Mapping[str, Any], _: Fields) -> Any:
    agents = _dicts(event.get("agent"))
    client = [a for a in agents if "110153" in _codes(a.get("type"))]  # DICOM Source Role ID
    rest = [a for a in agents if "110152" not in _codes(a.get("type"))]  # not the server
    return next((v for a in [_requestor(event), *client, *rest] if (v := _network(a))), None)


def _purposes(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The purposes of use: R4 ``purposeOfEvent``, R5 ``authorization``, and the agents'."""
    out = _dicts(event.get("purposeOfEvent")) + _dicts(event.get("authorization"))
    for agent in _dicts(event.get("agent")):
        out += _dicts(agent.get("purposeOfUse")) + _dicts(agent.get("authorization"))
    return out


def _fhir_emergency(event: Mapping[str, Any], _: Fields) -> bool:
    return any("BTG" in _codes(p) for p in _purposes(event))  # v3-ActReason break the glass


def _fhir_reason(event: Mapping[str, Any], _: Fields) -> Any:
    purposes = sorted(_purposes(event), key=lambda p: "BTG" not in _codes(p))
    return next((p["text"] for p in purposes if isinstance(p.get("text"), str)), None)


def _fhir_words(event: Mapping[str, Any]) -> list[Any]:
    """The detailed outcome: R4 ``outcomeDesc``, R5 ``outcome.detail`` codes and text."""
    words: list[Any] = [event.get("outcomeDesc")]
    outcome = event.get("outcome")
    if isinstance(outcome, dict):
        for detail in _dicts(outcome.get("detail")):
            words += [*_codes(detail), detail.get("text")]
    return [w for w in words if isinstance(w, (str, int)) and not isinstance(w, bool)]


def _fhir_coarse(event: Mapping[str, Any]) -> Any:
    """R4 ``outcome`` (0, 4, 8, 12), or R5 ``outcome.code.code``."""
    outcome = event.get("outcome")
    return lookup(outcome, "code.code") if isinstance(outcome, dict) else outcome


def _fhir_outcome(event: Mapping[str, Any], fields: Fields) -> grpc.StatusCode | None:
    coarse = _fhir_coarse(event)
    return _judged(_fhir_words(event), coarse, str(coarse) == "0", fields)


FHIR = _Reader(
    _fhir_records,
    {
        "identity": _fhir_identity,
        "method": _fhir_method,
        "resource": _fhir_resource,
        "action": lambda e, _: e.get("action"),
        "outcome": lambda e, _: next(iter(_fhir_words(e)), _fhir_coarse(e)),
        "request_id": _fhir_request_id,
        "timestamp": lambda e, _: e.get("recorded"),
        "source": _fhir_source,
        "emergency": _fhir_emergency,
        "reason": _fhir_reason,
    },
    _fhir_outcome,
    lambda e, _: parse_time(e.get("recorded"), "rfc3339"),
    documents=True,
)


# OCSF (API Activity, class_uid 6003; any class is read) ----------------------------------


def _ocsf_records(doc: Any) -> list[Event] | None:
    return _flat(doc, lambda d: [d] if "class_uid" in d or "type_uid" in d else None)


def _ocsf_method(event: Mapping[str, Any], _: Fields) -> Any:
    operation, service = lookup(event, "api.operation"), lookup(event, "api.service.name")
    if isinstance(operation, str) and "/" not in operation and isinstance(service, str):
        return f"/{service}/{operation}"
    return grpc_path(operation)


def _ocsf_resource(event: Mapping[str, Any], _: Fields) -> Any:
    for resource in _dicts(event.get("resources")):
        for key in ("uid", "name"):
            if resource.get(key) is not None:
                return resource[key]
    return None


def _ocsf_words(event: Mapping[str, Any]) -> list[Any]:
    return [lookup(event, p) for p in ("status_code", "api.response.error", "api.response.code")]


def _ocsf_outcome(event: Mapping[str, Any], fields: Fields) -> grpc.StatusCode | None:
    status = event.get("status_id")
    return _judged(_ocsf_words(event), status, status == 1, fields)


def _ocsf_time(event: Mapping[str, Any], _: Fields) -> Stamp | None:
    stamp = parse_time(event.get("time"), "epoch_ms")  # OCSF timestamp_t: epoch milliseconds
    return stamp if stamp is not None else parse_time(event.get("time_dt"), "rfc3339")


def _first(*paths: str) -> FieldReader:
    """A reader of the first of ``paths`` that holds a value."""

    def read(event: Mapping[str, Any], _: Fields) -> Any:
        return next((v for p in paths if (v := lookup(event, p)) is not None), None)

    return read


OCSF = _Reader(
    _ocsf_records,
    {
        "identity": _first("actor.user.uid"),
        "method": _ocsf_method,
        "resource": _ocsf_resource,
        "action": _first("activity_name", "activity_id"),
        "outcome": lambda e, _: next(
            (w for w in _ocsf_words(e) if w is not None), e.get("status_id")
        ),
        "request_id": _first("api.request.uid"),
        "timestamp": _first("time", "time_dt"),
        "source": _first("src_endpoint.ip", "src_endpoint.hostname"),
    },
    _ocsf_outcome,
    _ocsf_time,
    documents=True,
)


# OpenTelemetry log records (OTLP/JSON) ---------------------------------------------------


def _any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as plain JSON (int64 text as a number, bytes left base64)."""
    if not isinstance(value, dict):
        return value
    for kind in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "arrayValue" in value:
        return [_any_value(v) for v in (lookup(value, "arrayValue.values") or [])]
    if "kvlistValue" in value:
        return _attributes(lookup(value, "kvlistValue.values"))
    return None


def _attributes(items: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` list as an object."""
    return {
        kv["key"]: _any_value(kv.get("value"))
        for kv in _dicts(items)
        if isinstance(kv.get("key"), str)
    }


def _otlp_records(doc: Any) -> list[Event] | None:
    def one(d: dict[str, Any]) -> list[Event] | None:
        if "resourceLogs" not in d:
            return None
        out = []
        for logs in _dicts(d.get("resourceLogs")):
            resource = _attributes(lookup(logs, "resource.attributes"))
            for scoped in _dicts(logs.get("scopeLogs")):
                scope = dict(_dicts(scoped.get("scope"))[0]) if _dicts(scoped.get("scope")) else {}
                scope["attributes"] = _attributes(scope.get("attributes"))
                for record in _dicts(scoped.get("logRecords")):
                    flat = {**record, "attributes": _attributes(record.get("attributes"))}
                    if "body" in record:
                        flat["body"] = _any_value(record["body"])
                    out.append({**flat, "resource": resource, "scope": scope})
        return out

    return _flat(doc, one)


def _otlp_method(event: Mapping[str, Any], _: Fields) -> Any:
    method, service = (
        lookup(event, "attributes.rpc.method"),
        lookup(event, "attributes.rpc.service"),
    )
    if isinstance(method, str) and "/" not in method and isinstance(service, str):
        return f"/{service}/{method}"
    return grpc_path(method)  # semantic conventions 1.37 on: "pkg.Svc/Method"


def _otlp_request_id(event: Mapping[str, Any], fields: Fields) -> Any:
    key = fields.request_id_key.lower()
    for prefix in ("rpc.request.metadata.", "rpc.grpc.request.metadata."):
        value = lookup(event, f"attributes.{prefix}{key}")
        if isinstance(value, list):  # metadata values are string arrays
            value = value[0] if value else None
        if value is not None:
            return value
    return None


_OTLP_WORDS = ("attributes.rpc.grpc.status_code", "attributes.rpc.response.status_code")


def _otlp_time(event: Mapping[str, Any], _: Fields) -> Stamp | None:
    for key in ("timeUnixNano", "observedTimeUnixNano"):  # 0: unknown
        value = event.get(key)
        if value not in (None, 0, "0"):
            return parse_time(value, "epoch_ns")
    return None


OTLP = _Reader(
    _otlp_records,
    {
        "identity": _first("attributes.enduser.id", "attributes.user.id"),
        "method": _otlp_method,
        "resource": lambda e, _: None,  # no convention (and "resource" is OTel's own)
        "action": lambda e, _: None,
        "outcome": _first(*_OTLP_WORDS),
        "request_id": _otlp_request_id,
        "timestamp": _first("timeUnixNano", "observedTimeUnixNano"),
        "source": _first(
            "attributes.client.address", "attributes.network.peer.address", "attributes.net.peer.ip"
        ),
    },
    lambda e, fields: _judged([lookup(e, p) for p in _OTLP_WORDS], None, False, fields),
    _otlp_time,
    documents=True,
)

#: The reader of each ``audit.format``.
READERS: dict[str, _Reader] = {"jsonl": JSONL, "fhir": FHIR, "ocsf": OCSF, "otlp": OTLP}


def field(run: Run, event: dict[str, Any], name: str) -> Any:
    """The value of logical field ``name`` in ``event``, as :class:`Fields` reads it."""
    return Fields.of(run.config)(event, name)


def by_request_id(
    events: Iterable[Mapping[str, Any]], request_ids: Iterable[str], fields: Fields
) -> dict[str, list[dict[str, Any]]]:
    """The events of each request ID (an empty list for one with none)."""
    found: dict[str, list[dict[str, Any]]] = {rid: [] for rid in request_ids}
    for event in events:
        rid = fields(event, "request_id")
        if isinstance(rid, str) and rid in found:
            found[rid].append(dict(event))
    return found


# -- correlation: which events are a call's -----------------------------------------------


@dataclass(frozen=True)
class Matches:
    """Each call's events, by request ID.

    ``found``: the events attributed to the call (by its request ID; or the one event
    tuple correlation attributes to it alone). ``candidates``: every event that could be
    the call's (the same under request-ID correlation). ``near``: for a call with no
    candidate, how many events of its method and identity the source gained while the
    calls went out, outside every call's time window.
    """

    found: dict[str, list[Event]]
    candidates: dict[str, list[Event]]
    near: dict[str, int] = dc_field(default_factory=dict)

    @classmethod
    def exact(cls, found: Mapping[str, list[Event]]) -> Matches:
        """Matches by request ID: every candidate is the call's."""
        return cls(dict(found), dict(found))

    def ambiguous(self, request_id: str) -> bool:
        """Whether events fit the call but cannot be told to be its (tuple correlation)."""
        return bool(self.candidates.get(request_id)) and not self.found.get(request_id)

    def unsure(self, request_id: str) -> str:
        """Why the call's events cannot be told ("" when they can, or surely are none)."""
        fit = self.candidates.get(request_id) or []
        if fit and not self.found.get(request_id):
            return f"{len(fit)} event(s) fit the call (method, identity, time): ambiguous"
        if not fit and self.near.get(request_id):
            return (
                f"{self.near[request_id]} event(s) of its method and identity were written "
                "outside its time window (the service's clock may be off: AUDIT-004)"
            )
        return ""


@dataclass(frozen=True)
class ByTuple:
    """Tuple correlation's knowledge of the run (``audit.correlation = "tuple"``).

    ``subjects``: each principal's verified subject; ``tolerance_s``: how far each side of
    a call's send/receive interval its event may be stamped (``clock.tolerance_ms``);
    ``claimants``: every call the run made (an event one of them fits is not another's
    alone); ``per_call``: how many events one call may have (``audit.max_events_per_call``);
    ``named``: the record IDs a call's request names, by request ID, for the calls whose
    requests the harness kept (:func:`harness.plans.calls.remember`) and that name one;
    ``records``: every record ID the harness knows (``authz.*_ids`` and those named).
    """

    subjects: Mapping[str, str]
    tolerance_s: float = 1.0
    claimants: Sequence[CallResult] = ()
    per_call: int = 1
    named: Mapping[str, frozenset[str]] = dc_field(default_factory=dict)
    records: frozenset[str] = frozenset()

    def by_resource(self, calls: list[CallResult], resource: Any) -> list[CallResult]:
        """Of ``calls`` an event fits, those whose record it may be about.

        An event that records a known record ID (``resource``) is not the event of a
        call that named other record IDs and not that one; a call that named none, or
        whose request the harness did not keep, may be the event's.
        """
        if not self.named or isinstance(resource, bool) or not isinstance(resource, str | int):
            return calls
        about = ids_named([resource], self.records)
        if not about:
            return calls
        return [c for c in calls if self.named.get(c.request_id, about) & about]


def method_names(path: str) -> set[str]:
    """How an event may name ``path``: ``/pkg.Svc/M``, ``pkg.Svc/M``, ``pkg.Svc.M``, ``M``."""
    bare = path.lstrip("/")
    service, _, method = bare.rpartition("/")
    return {path, bare, f"{service}.{method}", method} if service else {path}


_THROTTLED = grpc.StatusCode.RESOURCE_EXHAUSTED


def fits(
    call: CallResult,
    identity: Any,
    subjects: Mapping[str, str],
    outcome: grpc.StatusCode | None = None,
) -> bool:
    """Whether an event naming ``identity`` (and ``outcome``) may be ``call``'s.

    A call whose principal's token was accepted is audited under its subject; a call
    accepted on credentials sent outside a principal (a fixture token in metadata) under
    any identity (the journal does not say whose they were); any other (no credentials, a
    forged or refused one, a principal whose subject is unknown) under no identity, an
    unverified one or its own claim, never another principal's subject.
    An event of a throttled attempt (RESOURCE_EXHAUSTED) is no call's that ended
    otherwise: the harness retries throttled attempts and journals only the last.
    """
    if outcome is _THROTTLED and call.code is not _THROTTLED:
        return False
    own = subjects.get(call.principal or "")
    name = None if identity in (None, "") else str(identity)
    if own and call.code != grpc.StatusCode.UNAUTHENTICATED:
        return name == own
    if call.principal is None and call.code not in (grpc.StatusCode.UNAUTHENTICATED, _THROTTLED):
        return True
    return name == own or name not in set(subjects.values())


class _Windows:
    """The run's calls by every name of their method, each with its time window."""

    def __init__(self, calls: Iterable[CallResult], tolerance_s: float) -> None:
        self.by: dict[str, list[tuple[float, float, CallResult]]] = {}
        for c in {c.request_id: c for c in calls}.values():
            window = (c.started_at - tolerance_s, c.started_at + c.elapsed_s + tolerance_s, c)
            for name in method_names(c.method):
                self.by.setdefault(name, []).append(window)
        for windows in self.by.values():
            windows.sort(key=lambda w: w[0])
        self.starts = {name: [w[0] for w in ws] for name, ws in self.by.items()}
        self.widest = max((w[1] - w[0] for ws in self.by.values() for w in ws), default=0.0)

    def around(self, method: str, at: float | None) -> list[CallResult]:
        """The calls of ``method`` whose window holds ``at`` (every one, when undated)."""
        windows = self.by.get(method, [])
        if at is None or not windows:
            return [w[2] for w in windows]
        starts = self.starts[method]
        low, high = bisect.bisect_left(starts, at - self.widest), bisect.bisect_right(starts, at)
        return [w[2] for w in windows[low:high] if w[1] >= at]


def correlate(
    events: Sequence[Mapping[str, Any]],
    calls: Sequence[CallResult],
    fields: Fields,
    by: ByTuple | None = None,
    since: int | None = None,
) -> Matches:
    """Each of ``calls``' events: by request ID, or (``by``) by method, identity and time.

    Under tuple correlation an event is a candidate of every call whose method it names,
    whose identity it may carry (:func:`fits`), whose window holds its time (an event
    of unreadable time: every such call's) and, when it records a record ID the harness
    knows, that named it or no other (:meth:`ByTuple.by_resource`). A call's candidates
    are its events only when there are 1 to ``by.per_call`` of them, all dated, and no
    other call of the run fits any of them; otherwise the call is ambiguous, never matched
    by guess. ``since``: the index from which ``events`` were written while the calls
    went out (for ``near``).
    """
    if by is None:
        return Matches.exact(by_request_id(events, [c.request_id for c in calls], fields))
    windows = _Windows([*by.claimants, *calls], by.tolerance_s)
    claims: list[list[CallResult]] = []
    dated: list[bool] = []
    candidates: dict[str, list[int]] = {c.request_id: [] for c in calls}
    for i, event in enumerate(events):
        method, stamp = fields(event, "method"), fields.time(event)
        at = stamp.at.timestamp() if stamp is not None else None
        near = windows.around(method, at) if isinstance(method, str) else []
        identity, outcome = fields(event, "identity"), fields.outcome(event)
        fitting = [c for c in near if fits(c, identity, by.subjects, outcome)]
        claims.append(by.by_resource(fitting, fields(event, "resource")))
        dated.append(at is not None)
        for c in claims[-1]:
            if c.request_id in candidates:
                candidates[c.request_id].append(i)
    found = {
        rid: [dict(events[i]) for i in idx]
        if 1 <= len(idx) <= by.per_call and all(dated[i] and len(claims[i]) == 1 for i in idx)
        else []
        for rid, idx in candidates.items()
    }
    fit = {rid: [dict(events[i]) for i in idx] for rid, idx in candidates.items()}
    return Matches(found, fit, _near(events, calls, fields, by, claims, since))


def _near(
    events: Sequence[Mapping[str, Any]],
    calls: Sequence[CallResult],
    fields: Fields,
    by: ByTuple,
    claims: Sequence[Sequence[CallResult]],
    since: int | None,
) -> dict[str, int]:
    """For each call with no candidate: the fresh events of its method and identity no call fits."""
    if since is None:
        return {}
    stray = [
        (fields(e, "method"), fields(e, "identity"), fields.outcome(e))
        for i, e in enumerate(events)
        if i >= since and not claims[i]
    ]
    out = {}
    for c in calls:
        names = method_names(c.method)
        n = sum(1 for m, who, code in stray if m in names and fits(c, who, by.subjects, code))
        if n:
            out[c.request_id] = n
    return out


def paired(
    events: Sequence[Mapping[str, Any]],
    calls: Sequence[CallResult],
    fields: Fields,
    subjects: Mapping[str, str],
) -> tuple[dict[str, list[Event]], str]:
    """Sequential calls' events by write order, whatever their time says.

    ``events`` are those the source gained while ``calls`` went out one after another;
    for each (method, principal), the events whose method and identity fit are paired
    with its calls in order, when there is exactly one per call. Otherwise nothing is
    paired and the problem says why. (Tuple correlation for a control that judges the
    times themselves: an event stamped by a clock far off is still the call's.)
    """
    groups: dict[tuple[str, str | None], list[CallResult]] = {}
    for c in calls:
        groups.setdefault((c.method, c.principal), []).append(c)
    out: dict[str, list[Event]] = {}
    for (method, _), group in groups.items():
        names = method_names(method)
        fit = [
            dict(e)
            for e in events
            if fields(e, "method") in names
            and fits(group[0], fields(e, "identity"), subjects, fields.outcome(e))
        ]
        if len(fit) != len(group):
            return {}, (
                f"{len(fit)} new event(s) of {method} and its caller for {len(group)} "
                "sequential call(s): they cannot be paired"
            )
        out.update({c.request_id: [e] for c, e in zip(group, fit, strict=True)})
    return out, ""


class Sendable(Protocol):
    """A planned call: its method, whose credentials it carries, and its other metadata."""

    @property
    def method(self) -> str:
        """The full method path."""
        ...

    @property
    def principal(self) -> Principal | None:
        """The principal whose credentials it carries (None: none, or others in metadata)."""
        ...

    @property
    def metadata(self) -> Sequence[tuple[str, str | bytes]]:
        """Metadata sent besides the principal's (a fixture's credentials, say)."""
        ...


C = TypeVar("C", bound=Sendable)

#: Whose events a call may claim when the harness cannot say (:func:`fits`): anyone's.
ANYONE = "\x00anyone"


def _planned_who(c: Sendable, subjects: Mapping[str, str]) -> str | None:
    """Whose identity a planned call's event may carry.

    Its principal's subject; None for no credentials or a subject the harness does not
    know; :data:`ANYONE` for credentials sent outside a principal (a fixture's token).
    """
    if c.principal is not None:
        return subjects.get(c.principal.name)
    return ANYONE if c.metadata else None


def _claims_of(c: CallResult, subjects: Mapping[str, str]) -> set[str | None]:
    """The identities a made call's events may carry, as :func:`fits` reads them."""
    own = subjects.get(c.principal or "")
    if own and c.code != grpc.StatusCode.UNAUTHENTICATED:
        return {own}
    if c.principal is None and c.code not in (grpc.StatusCode.UNAUTHENTICATED, _THROTTLED):
        return {ANYONE}
    return {None, own}


def _clash(who: str | None, others: set[str | None]) -> bool:
    """Whether an event of ``who`` may be taken for one of ``others``' (none: never)."""
    return bool(others) and (who == ANYONE or ANYONE in others or who in others)


def send_apart(
    run: Run, calls: Sequence[C], send: Callable[[Run, Sequence[C]], list[tuple[C, CallResult]]]
) -> list[tuple[C, CallResult]]:
    """``send(run, calls)`` so that tuple correlation can tell their events apart, in order.

    Under request-ID correlation, ``send`` as is. Under tuple correlation the calls go in
    waves in which no two to one method may carry one identity (a call on credentials
    outside a principal may carry any), each wave once no earlier call of the run to its
    methods that may carry one of its identities is near enough in time to be confused
    with it (:func:`clearance`).
    """
    if correlation(run) is None:
        return send(run, calls)
    subjects = subjects_of(run)
    waves: list[list[tuple[int, C]]] = []
    for i, c in enumerate(calls):
        who = _planned_who(c, subjects)
        wave = next(
            (
                w
                for w in waves
                if not _clash(
                    who, {_planned_who(x, subjects) for _, x in w if x.method == c.method}
                )
            ),
            None,
        )
        if wave is None:
            waves.append(wave := [])
        wave.append((i, c))
    out: dict[int, tuple[C, CallResult]] = {}
    for wave in waves:
        time.sleep(_clearance(run, {(c.method, _planned_who(c, subjects)) for _, c in wave}))
        sent = send(run, [c for _, c in wave])
        out.update({i: pair for (i, _), pair in zip(wave, sent, strict=True)})
    return [out[i] for i in range(len(calls))]


def send_matched(
    run: Run,
    calls: Sequence[C],
    send: Callable[[Run, Sequence[C]], list[tuple[C, CallResult]]],
    owed: Callable[[C, CallResult], bool] = lambda c, r: True,
) -> tuple[list[tuple[C, CallResult]], Polled]:
    """``calls`` sent apart (:func:`send_apart`), then polled for the events they owe.

    ``owed(call, result)``: whether the call owes an event (all do by default). Under
    tuple correlation a call whose event cannot be told from another's (a call the run
    made meanwhile, such as a background probe's, fit it too) is sent again, apart, once:
    the result returned is the second's. Events are counted from the source's size before.
    """
    since = events_now(run) if correlation(run) is not None else None
    made = send_apart(run, calls, send)

    def wanted() -> list[str]:
        return [r.request_id for c, r in made if owed(c, r)]

    polled = poll(run, wanted(), since)
    again = [
        i for i, (c, r) in enumerate(made) if owed(c, r) and polled.matches.ambiguous(r.request_id)
    ]
    if since is None or polled.problem or not again:
        return made, polled
    redone = send_apart(run, [made[i][0] for i in again], send)
    for i, pair in zip(again, redone, strict=True):
        made[i] = pair
    return made, poll(run, wanted(), since)


def subjects_of(run: Run) -> dict[str, str]:
    """Each principal's verified subject, as its events name it: its JWT's ``sub``."""

    def compute() -> dict[str, str]:
        out = {}
        for name, p in run.principals.items():
            try:
                token = parse(p.token()) if p.has_token else None
            except ConfigError:  # a token source that fails names no one
                continue
            if token is not None and token.claims.get("sub") is not None:
                out[name] = str(token.claims["sub"])
        return out

    return run.memo("audit-subjects", compute)


def correlation(run: Run) -> ByTuple | None:
    """Tuple correlation's view of the run now; None under request-ID correlation."""
    if run.config.get("audit.correlation") != "tuple":
        return None
    declared = record_ids(run.config)
    named = {}
    for request_id, requests in sent_requests(run).items():
        ids = frozenset(ids_named([v for r in requests for v in wire_values(r)], declared))
        if ids:
            named[request_id] = ids
    return ByTuple(
        subjects_of(run),
        int(run.config.get("clock.tolerance_ms", 1000)) / 1000,
        run.calls(),
        int(run.config.get("audit.max_events_per_call", 1)),
        named,
        declared,
    )


def record_ids(config: Config) -> frozenset[str]:
    """The record IDs the configuration names (``authz.own_ids``, ``.foreign_ids``, ...)."""
    lists = [config.get("authz.sandbox_ids", [])]
    for key in ("authz.own_ids", "authz.foreign_ids"):
        lists += list(config.table(key).values())
    return frozenset(str(i) for ids in lists if isinstance(ids, list) for i in ids if str(i))


def clearance(run: Run, calls: Iterable[tuple[str, str | None]]) -> float:
    """Seconds to wait before ``calls`` ((method, principal name)) under tuple correlation.

    Long enough that no earlier call of the run by the same identity to the same method
    has a time window overlapping theirs (twice ``clock.tolerance_ms`` after it ended):
    the events of the two can then be told apart. 0 under request-ID correlation.
    """
    by = correlation(run)
    if by is None:
        return 0.0
    return _clearance(run, {(m, by.subjects.get(p or "")) for m, p in calls}, by)


def _clearance(run: Run, keys: set[tuple[str, str | None]], by: ByTuple | None = None) -> float:
    """:func:`clearance` for (method, identity) keys (:data:`ANYONE`: any identity)."""
    by = by or correlation(run)
    if by is None:
        return 0.0
    ends = [
        c.started_at + c.elapsed_s
        for c in by.claimants
        if any(m == c.method and _clash(who, _claims_of(c, by.subjects)) for m, who in keys)
    ]
    if not ends:
        return 0.0
    return max(0.0, max(ends) + 2 * by.tolerance_s + 0.05 - time.time())


def read_raw(
    source: Path | list[str] | None, what: str = "audit.source"
) -> tuple[list[tuple[str, bytes]], str]:
    """The bytes of a file, a glob's files, or a command's stdout, and a problem if any."""
    if source is None:
        return [], f"no {what} configured"
    if isinstance(source, list):
        try:
            done = subprocess.run(source, capture_output=True, timeout=_CMD_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [], f"{what} command failed: {type(exc).__name__}"
        if done.returncode != 0:
            return [], f"{what} command exited {done.returncode}"
        return [(" ".join(source), done.stdout)], ""
    paths = sorted(glob.glob(str(source))) if glob.has_magic(str(source)) else [str(source)]
    chunks = []
    for path in paths:
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device can block forever
                return [], f"{what} {path} is not a regular file: the harness reads files"
            chunks.append((path, Path(path).read_bytes()))
        except OSError as exc:
            return [], f"{what} {path}: {exc.strerror}"
    return chunks, ""


def read(run: Run) -> Events:
    """Every event the source holds now, read as ``audit.format`` says."""
    chunks, problem = read_raw(run.config.get("audit.source"))
    if problem:
        return Events((), problem)
    return parse_events(chunks, Fields.of(run.config).kind)


_NO_DOCUMENT = object()


def _document(text: str) -> Any:
    """``text`` as one JSON document spread over lines (a Bundle, an export), if it is one."""
    body = text.strip()
    if "\n" not in body or body[:1] not in "{[":
        return _NO_DOCUMENT
    try:
        return json.loads(body)
    except ValueError:
        return _NO_DOCUMENT


def parse_events(chunks: Iterable[tuple[str, bytes]], kind: str = "jsonl") -> Events:
    """The events of raw chunks, read as ``kind`` (``audit.format``).

    A chunk is JSON lines, or for the formats that allow it one JSON document; a line (or
    document) that is not JSON, or holds no event of the format, is counted.
    """
    reader = READERS[kind]
    events: list[Event] = []
    lines: list[str | None] = []
    unparsed = 0
    for _, blob in chunks:
        text = blob.decode("utf-8", "replace")
        doc = _document(text) if reader.documents else _NO_DOCUMENT
        # JSON lines split on "\n" only: str.splitlines() also splits on U+2028 and
        # friends, which JSON allows unescaped inside strings.
        pieces = [text] if doc is not _NO_DOCUMENT else text.split("\n")
        for piece in pieces:
            if not piece.strip():
                continue
            found = _records(reader, piece if doc is _NO_DOCUMENT else doc)
            if found is None:
                unparsed += 1
                continue
            events += found
            one = len(found) == 1 and doc is _NO_DOCUMENT
            lines += [piece.removesuffix("\r") if one else None] * len(found)
    return Events(tuple(events), "", unparsed, tuple(lines))


def _records(reader: _Reader, piece: Any) -> list[Event] | None:
    """The records of one line (text) or document (parsed); None: no event of the format."""
    if isinstance(piece, str):
        try:
            piece = json.loads(piece)
        except ValueError:
            return None
    return reader.records(piece)


@dataclass(frozen=True)
class Polled:
    """The source as last read while waiting for events: per request ID, parsed, raw.

    ``found`` is ``matches.found``: the events attributed to each call.
    """

    found: dict[str, list[dict[str, Any]]]
    events: Events
    chunks: list[tuple[str, bytes]]
    problem: str = ""
    matches: Matches = dc_field(default_factory=lambda: Matches({}, {}))


def poll(run: Run, request_ids: Iterable[str], since: int | None = None) -> Polled:
    """Read the source until every request ID has an event, or ``audit.delivery_timeout_s``.

    Events are matched to the calls by ``audit.correlation`` (:func:`correlate`): under
    tuple correlation the calls are the run's own (its journal), ``since`` the number of
    events the source held before they went out. Waiting ends when every call has a
    candidate event. The last read is kept whole (:class:`Polled`), so a check reads the
    source once.
    """
    wanted = list(dict.fromkeys(request_ids))
    fields = Fields.of(run.config)
    by = correlation(run)
    journal = {c.request_id: c for c in by.claimants} if by else {}
    calls = [journal[r] for r in wanted if r in journal]
    deadline = time.monotonic() + float(run.config.get("audit.delivery_timeout_s", 30))
    while True:
        chunks, problem = read_raw(run.config.get("audit.source"))
        got = Events((), problem) if problem else parse_events(chunks, fields.kind)
        if by is None:
            matched = Matches.exact(by_request_id(got.events, wanted, fields))
        else:
            matched = correlate(got.events, calls, fields, by, since)
        done = all(matched.candidates.get(rid) for rid in wanted)
        if problem or done or time.monotonic() >= deadline:
            return Polled(matched.found, got, chunks, problem, matched)
        time.sleep(0.1)


def wait_for(run: Run, request_ids: Iterable[str]) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Poll the source until every request ID has an event, or ``audit.delivery_timeout_s``.

    Returns the events attributed to each request ID (possibly empty lists) and a problem,
    if any: under tuple correlation, calls whose events cannot be told apart from other
    calls' are one (their empty lists are not "no event").
    """
    wanted = list(request_ids)
    polled = poll(run, wanted)
    return polled.found, unmatched(polled, wanted)


def unmatched(polled: Polled, request_ids: Iterable[str]) -> str:
    """Why events of ``request_ids`` cannot be read or told apart ("" when they can)."""
    unsure = [why for rid in request_ids if (why := polled.matches.unsure(rid))]
    if polled.problem or not unsure:
        return polled.problem
    return f"audit.correlation = tuple: {len(unsure)} call(s) unmatched: {unsure[0]}"


def events_now(run: Run) -> int:
    """How many events the source holds now (0 when it cannot be read): a ``since`` mark."""
    return len(read(run).events)


def appended(
    before: Iterable[tuple[str, bytes]], after: Iterable[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """What each source of ``after`` holds that ``before`` did not: the bytes written since.

    A source that no longer starts with what it held (rewritten, rotated) is new whole.
    """
    earlier = dict(before)
    out = []
    for name, blob in after:
        old = earlier.get(name, b"")
        out.append((name, blob[len(old) :] if blob.startswith(old) else blob))
    return out


def marks(source: Path | list[str] | None, what: str) -> tuple[dict[str, str], str]:
    """A mark of each file of ``source`` (size and mtime), or of a command's output (digest).

    Two marks of a source differ when it was written in between; a file not there has no
    mark. Returns the marks and a problem, if any.
    """
    if source is None:
        return {}, f"no {what} configured"
    if isinstance(source, list):
        chunks, problem = read_raw(source, what)
        return {n: hashlib.sha256(b).hexdigest() for n, b in chunks}, problem
    paths = sorted(glob.glob(str(source))) if glob.has_magic(str(source)) else [str(source)]
    out = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out[path] = f"{st.st_size}:{st.st_mtime_ns}"
    return out, ""


#: Where AUDIT-005 keeps each audit source's last (seq, hash), in ``evidence.history_dir``.
ANCHORS = "audit-anchors.json"


def load_anchor(directory: Path, key: str) -> tuple[dict[str, Any] | None, str]:
    """The anchor an earlier run saved for source ``key`` (None: none), and a problem."""
    path = directory / ANCHORS
    try:
        saved = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        return None, f"unreadable {path}: {exc}"
    if not isinstance(saved, dict):
        return None, f"unreadable {path}: not a JSON object"
    anchor = saved.get(key)
    return (anchor if isinstance(anchor, dict) else None), ""


def save_anchor(directory: Path, key: str, anchor: Mapping[str, Any]) -> str:
    """Record ``anchor`` for source ``key`` (atomically); a problem, if any."""
    path = directory / ANCHORS
    try:
        saved = json.loads(path.read_text()) if path.exists() else {}
        saved = saved if isinstance(saved, dict) else {}
        saved[key] = dict(anchor)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=2, sort_keys=True))
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        return f"cannot write {path}: {exc}"
    return ""
