"""Token-signing key hygiene and rotation (KEY-001), judged from the issuer's published JWKS.

The JWKS comes from ``auth.jwks_uri``, else from ``<auth.issuer>/.well-known/
openid-configuration``, else from ``auth.jwks_file``. Keys are loaded with PyJWT (which
uses ``cryptography``), so their sizes and curves are those of the real key objects; a
key is identified across runs by its RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check
from harness.history import HistoryError, first_seen
from harness.outcome import Observation, Outcome, Status
from harness.run import Run

#: Members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
PRIVATE_MEMBERS = {
    "EC": ("d",),
    "OKP": ("d",),
    "RSA": ("d", "p", "q", "dp", "dq", "qi", "oth"),
    "oct": ("k",),
}
ALLOWED_CURVES = frozenset({"P-256", "P-384", "P-521", "Ed25519", "Ed448"})
MIN_RSA_BITS = 2048
#: Bounds of one fetch: the JWKS or the discovery document.
FETCH_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024
#: RFC 7638 §3.2: the members a thumbprint covers, per key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
}


class FetchError(Exception):
    """A document could not be fetched or parsed; the message says why, in one line."""


@check("KEY-001", needs_channel=False)
def signing_key_hygiene(run: Run) -> Outcome:
    """Token-signing key hygiene and rotation (JWKS).

    Every key of the issuer's JWKS must be public only (no ``d``, ``p``, ``q``, ``dp``,
    ``dq``, ``qi``, and no ``oct`` key at all: critical), RSA of at least 2048 bits or on
    P-256, P-384, P-521 (or Ed25519/Ed448), with a unique ``kid`` and a declared ``alg``
    (medium). With ``evidence.history_dir`` each key's first sighting is recorded there, and
    the newest key must have been first seen within ``auth.key_rotation_days`` (low).
    """
    control = CATALOGUE["KEY-001"]
    try:
        source, document = _jwks(run)
    except FetchError as exc:
        return Outcome.inconclusive(control, str(exc))
    if source is None:
        return Outcome.skip(
            control, "no auth.jwks_uri, no http(s) auth.issuer to discover it, no auth.jwks_file"
        )
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        return Outcome.inconclusive(control, f"{source}: not a JWKS (no list of keys)")
    if not keys:
        return Outcome.inconclusive(control, f"{source}: the JWKS holds no key")
    observations = [_judge(source, i, key) for i, key in enumerate(keys)]
    kids = Counter(str(k["kid"]) for k in keys if "kid" in k)
    twice = sorted(kid for kid, n in kids.items() if n > 1)
    missing = sum(1 for k in keys if "kid" not in k)
    observations.append(
        Observation(
            f"{source}: key IDs",
            (f"repeated: {', '.join(twice)}" if twice else "all distinct")
            + (f"; {missing} key(s) without kid" if missing and len(keys) > 1 else ""),
            "every kid unique",
            Status.FAIL if twice or (missing and len(keys) > 1) else Status.PASS,
            Severity.MEDIUM,
        )
    )
    rotation = _rotation(run, source, keys)
    if rotation is not None:
        observations.append(rotation)
    return Outcome.from_observations(
        control, observations, passed=f"{len(keys)} public signing key(s), well formed"
    )


def _judge(source: str, index: int, key: dict[str, Any]) -> Observation:
    """One key: private material (critical), strength, declared algorithm (medium)."""
    kty = str(key.get("kty", "?"))
    name = f"{source}: key {index + 1} (kty {kty}, kid {key.get('kid', 'none')})"
    private = [m for m in PRIVATE_MEMBERS.get(kty, ("d",)) if m in key]
    if private:
        what = "a symmetric secret" if kty == "oct" else "private key members"
        return Observation(
            name,
            f"publishes {what}: {', '.join(private)} (values not recorded)",
            "public members only",
            Status.FAIL,
            Severity.CRITICAL,
        )
    described, problems = _strength(key)
    if "alg" not in key:
        problems.append("no alg declared (one algorithm per key, RFC 8725 §3.1)")
    return Observation(
        name,
        "; ".join([described, *problems]),
        f"RSA >= {MIN_RSA_BITS} bits or P-256/P-384/P-521, alg declared",
        Status.FAIL if problems else Status.PASS,
        Severity.MEDIUM,
    )


def _strength(key: dict[str, Any]) -> tuple[str, list[str]]:
    """The key in a few words (algorithm, size or curve), and why it is weak or unusable."""
    parts = [f"alg {key['alg']}"] if "alg" in key else []
    if "crv" in key:
        parts.append(f"curve {key['crv']}")
    if key.get("kty") in ("EC", "OKP") and key.get("crv") not in ALLOWED_CURVES:
        return ", ".join(parts), [f"curve {key.get('crv')!r} not allowed"]
    try:
        loaded = jwt.PyJWK(key).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        return ", ".join(parts) or "a key", [f"not a usable key ({exc})"]
    problems = []
    if isinstance(loaded, rsa.RSAPublicKey):
        parts.append(f"{loaded.key_size}-bit modulus")
        if loaded.key_size < MIN_RSA_BITS:
            problems.append(f"RSA modulus of {loaded.key_size} bits")
    return ", ".join(parts) or "public key", problems


def thumbprint(key: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url), or a digest of the whole key."""
    members = _THUMBPRINT_MEMBERS.get(str(key.get("kty")))
    if members is None or not all(isinstance(key.get(m), str) for m in members):
        canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    else:
        canonical = json.dumps({m: key[m] for m in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _rotation(run: Run, source: str, keys: list[dict[str, Any]]) -> Observation | None:
    """The newest key's first sighting against ``auth.key_rotation_days``."""
    directory = run.config.get("evidence.history_dir")
    days = run.config.get("auth.key_rotation_days")
    if not directory:
        return None
    now = dt.datetime.now(dt.timezone.utc)
    prints = [thumbprint(k) for k in keys]
    try:
        seen = first_seen(Path(directory), "jwks-keys", prints, now)
    except HistoryError as exc:
        return Observation(
            f"{source}: key history", str(exc), "readable and writable", Status.INCONCLUSIVE
        )
    newest = max(seen.values())
    age = (now - newest).days
    observed = f"newest key first seen {age} day(s) ago ({len(keys)} key(s) recorded)"
    if days is None:
        return Observation(
            f"{source}: key rotation", observed, "recorded (no auth.key_rotation_days)", Status.PASS
        )
    return Observation(
        f"{source}: key rotation",
        observed,
        f"a key first seen within {days} days (auth.key_rotation_days)",
        Status.PASS if age <= int(days) else Status.FAIL,
        Severity.LOW,
    )


# -- finding and fetching the JWKS ------------------------------------------------------


def _jwks(run: Run) -> tuple[str | None, Any]:
    """Where the JWKS came from (``None`` when nowhere is configured) and its JSON.

    Raises:
        FetchError: The configured source could not be read.
    """
    uri = run.config.str_("auth.jwks_uri")
    if uri:
        return uri, _fetch_json(uri)
    issuer = run.config.str_("auth.issuer") or ""
    if urllib.parse.urlsplit(issuer).scheme in ("http", "https"):
        discovery = issuer.rstrip("/") + "/.well-known/openid-configuration"
        meta = _fetch_json(discovery)
        found = meta.get("jwks_uri") if isinstance(meta, dict) else None
        if not isinstance(found, str):
            raise FetchError(f"{discovery}: no jwks_uri in the discovery document")
        return found, _fetch_json(found)
    path = run.config.path("auth.jwks_file")
    if path is not None:
        try:
            return f"auth.jwks_file {path.name}", json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FetchError(f"auth.jwks_file {path}: {exc}") from None
    return None, None


def _fetch_json(url: str) -> Any:
    """GET ``url`` (http or https, system trust store), bounded in time and size."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"{url}: only http and https URLs are fetched")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    end = time.monotonic() + 2 * FETCH_TIMEOUT_S
    body = b""
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
            while len(body) <= MAX_DOCUMENT_BYTES:
                if time.monotonic() > end:
                    raise FetchError(f"{url}: not sent in full within {2 * FETCH_TIMEOUT_S:g} s")
                chunk = response.read1(65536)
                if not chunk:
                    break
                body += chunk
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: not fetched ({reason})") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{url}: not JSON ({exc})") from None
