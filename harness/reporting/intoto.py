"""The bundle as an in-toto statement (v1) in a DSSE envelope: ``evidence.intoto.json``.

The statement's subjects are the bundle's files, each with its SHA-256 (``SHA256SUMS``
among them, so the attestations' evidence hashes it lists are covered too). Its predicate
(type :data:`PREDICATE_TYPE`) says which run the bundle is and when it was signed::

    {"report_id": "...", "target": "...", "started": "...", "finished": "...",
     "harness": {"name": "pytest-hipaa-grpc", "version": "..."}, "signed_at": "..."}

The envelope is DSSE (https://github.com/secure-systems-lab/dsse): the statement's bytes as
``payload`` (base64), ``payloadType`` :data:`PAYLOAD_TYPE`, and one signature per signer
over the pre-authentication encoding (:func:`pae`) with its ``keyid`` (``SHA256:`` of the
public key's DER SubjectPublicKeyInfo; empty for a signature ``evidence.signing_cmd`` made,
whose key the harness does not see). This module only builds and reads the format;
:mod:`harness.reporting.signing` signs and verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness import __version__
from harness.reporting.model import Json, Results

ENVELOPE = "evidence.intoto.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: Ours: a pytest-hipaa-grpc evidence bundle (the predicate above).
PREDICATE_TYPE = "https://pypi.org/project/pytest-hipaa-grpc/predicates/evidence-bundle/v1"


def statement(files: Mapping[str, bytes], results: Results, signed_at: str) -> Json:
    """The in-toto statement over ``files`` (every one of them, sorted by name)."""
    run = results.run
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": hashlib.sha256(blob).hexdigest()}}
            for name, blob in sorted(files.items())
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "report_id": results.report_id,
            "target": run.target,
            "started": run.started,
            "finished": run.finished,
            "harness": {"name": "pytest-hipaa-grpc", "version": __version__},
            "signed_at": signed_at,
        },
    }


def payload(data: Json) -> bytes:
    """The statement's bytes as the envelope carries (and the signature covers) them."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed, never the bare payload."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def envelope(body: bytes, signatures: list[tuple[str, bytes]]) -> Json:
    """The DSSE envelope of ``body`` with each (keyid, signature)."""
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode(),
        "signatures": [
            {"keyid": keyid, "sig": base64.b64encode(sig).decode()} for keyid, sig in signatures
        ],
    }


@dataclass(frozen=True)
class Envelope:
    """An envelope as read back: the statement, the signed bytes, the signatures."""

    statement: Json
    signed: bytes
    signatures: tuple[tuple[str, bytes], ...]

    @property
    def subjects(self) -> dict[str, str]:
        """File name -> SHA-256 (hex), as the statement lists them."""
        return {
            str(s["name"]): str(s.get("digest", {}).get("sha256", ""))
            for s in self.statement.get("subject", [])
        }

    @property
    def predicate(self) -> dict[str, Any]:
        """The statement's predicate (``{}`` when missing)."""
        found = self.statement.get("predicate")
        return found if isinstance(found, dict) else {}


def read_envelope(blob: bytes) -> Envelope:
    """The envelope in ``blob``.

    Raises:
        ValueError: not JSON, not DSSE, not an in-toto v1 statement, in one line.
    """
    try:
        data = json.loads(blob)
        body = base64.b64decode(data["payload"], validate=True)
        kind = str(data["payloadType"])
        sigs = tuple(
            (str(s.get("keyid", "")), base64.b64decode(s["sig"], validate=True))
            for s in data["signatures"]
        )
        inner = json.loads(body)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"not a DSSE envelope ({type(exc).__name__})") from None
    if kind != PAYLOAD_TYPE or not isinstance(inner, dict):
        raise ValueError(f"payload type {kind!r} is not {PAYLOAD_TYPE}")
    if inner.get("_type") != STATEMENT_TYPE or not isinstance(inner.get("subject"), list):
        raise ValueError(f"not an in-toto statement v1 ({inner.get('_type')!r})")
    return Envelope(inner, pae(kind, body), sigs)
