"""Token-signing key hygiene and rotation (KEY-001), judged from the issuer's published JWKS.

The JWKS comes from ``auth.jwks_file``, else from ``auth.jwks_uri``, else from
``<auth.issuer>/.well-known/openid-configuration``: the one resolution order of
:mod:`harness.plans.jwks`, through which AUTHN-002 reads the same document. Keys are
loaded with PyJWT (which uses ``cryptography``), so their sizes and curves are those of the
real key objects; a key is identified across runs by its RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check
from harness.history import HistoryError, first_seen
from harness.outcome import CannotObserve, NotApplicable, Observation, Outcome, Probe, Status
from harness.plans.jwks import issuer_jwks
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
#: RFC 7638 §3.2: the members a thumbprint covers, per key type.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
}


KEY_001_PROBES = (
    Probe("private", "no private members and no oct secret in any key (critical)"),
    Probe("strength", f"RSA >= {MIN_RSA_BITS} bits, EC on P-256/P-384/P-521"),
    Probe("kid", "every kid unique"),
    Probe("alg", "every key declares alg (medium)"),
    # Optional: it compares runs, so it needs a history and a second run; its absence is
    # shown (probe SKIP, with the key that enables it), never counted as a pass.
    Probe(
        "rotation",
        "newest key first seen within auth.key_rotation_days (low)",
        required=False,
        needs=("evidence.history_dir",),
    ),
)


@check("KEY-001", probes=KEY_001_PROBES, needs_channel=False)
def signing_key_hygiene(run: Run) -> Outcome:
    """Token-signing key hygiene and rotation (JWKS).

    Every key of the issuer's JWKS must be public only (no ``d``, ``p``, ``q``, ``dp``,
    ``dq``, ``qi``, and no ``oct`` key at all: critical), RSA of at least 2048 bits or on
    P-256, P-384, P-521 (or Ed25519/Ed448), with a unique ``kid`` and a declared ``alg``
    (medium). With ``evidence.history_dir`` each key's first sighting is recorded there, and
    the newest key must have been first seen within ``auth.key_rotation_days`` (low).
    """
    jwks = issuer_jwks(run)
    if jwks.problem:
        raise CannotObserve(jwks.problem)
    if not jwks.source:
        raise NotApplicable(
            "no auth.jwks_file, no auth.jwks_uri, no http(s) auth.issuer to discover it"
        )
    source = jwks.source
    keys = jwks_keys(source, jwks.document)
    observations = judge_keys(source, keys)
    rotation = _rotation(run, source, keys)
    if rotation is not None:
        observations.append(rotation)
    return Outcome.from_observations(
        CATALOGUE["KEY-001"], observations, passed=f"{len(keys)} public signing key(s), well formed"
    )


def jwks_keys(source: str, document: Any) -> list[dict[str, Any]]:
    """The keys of a JWKS document.

    Raises:
        CannotObserve: It is not a JWKS (no list of key objects), or it holds no key.
    """
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise CannotObserve(f"{source}: not a JWKS (no list of keys)")
    if not keys:
        raise CannotObserve(f"{source}: the JWKS holds no key")
    return keys


def judge_keys(source: str, keys: list[dict[str, Any]]) -> list[Observation]:
    """Every key's private material, strength and ``alg``, then the key IDs, each filed."""
    observations = [o for i, key in enumerate(keys) for o in judge_key(source, i, key)]
    observations.append(judge_kids(source, keys))
    return observations


def judge_key(source: str, index: int, key: dict[str, Any]) -> list[Observation]:
    """One key: private material (critical), strength and declared algorithm (medium).

    Private values are never recorded, only the names of the members present.
    """
    kty = str(key.get("kty", "?"))
    name = f"{source}: key {index + 1} (kty {kty}, kid {key.get('kid', 'none')})"
    private = [m for m in PRIVATE_MEMBERS.get(kty, ("d",)) if m in key]
    what = "a symmetric secret" if kty == "oct" else "private key members"
    secret = Observation(
        name,
        f"publishes {what}: {', '.join(private)} (values not recorded)"
        if private
        else "public members only",
        "public members only",
        Status.FAIL if private else Status.PASS,
        Severity.CRITICAL,
    ).of("private")
    wanted = f"RSA >= {MIN_RSA_BITS} bits or P-256/P-384/P-521"
    if kty == "oct":  # a shared secret has no public key to measure: "private" fails it
        strength = Observation(name, "a symmetric key", wanted, Status.SKIP).of("strength")
    else:
        described, problems = _strength(key)
        strength = Observation(
            name,
            "; ".join([described, *problems]),
            wanted,
            Status.FAIL if problems else Status.PASS,
            Severity.MEDIUM,
        ).of("strength")
    has_alg = "alg" in key
    alg = Observation(
        name,
        f"alg {key['alg']}"
        if has_alg
        else "no alg declared (one algorithm per key, RFC 8725 §3.1)",
        "alg declared",
        Status.PASS if has_alg else Status.FAIL,
        Severity.MEDIUM,
    ).of("alg")
    return [secret, strength, alg]


def judge_kids(source: str, keys: list[dict[str, Any]]) -> Observation:
    """Every ``kid`` unique; with more than one key, every key has one."""
    kids = Counter(str(k["kid"]) for k in keys if "kid" in k)
    twice = sorted(kid for kid, n in kids.items() if n > 1)
    missing = sum(1 for k in keys if "kid" not in k) if len(keys) > 1 else 0
    return Observation(
        f"{source}: key IDs",
        (f"repeated: {', '.join(twice)}" if twice else "all distinct")
        + (f"; {missing} key(s) without kid" if missing else ""),
        "every kid unique",
        Status.FAIL if twice or missing else Status.PASS,
        Severity.MEDIUM,
    ).of("kid")


#: How a key is loaded to measure it, whatever its own ``alg`` (an encryption key's
#: ``RSA-OAEP`` is no signing algorithm PyJWT knows): by ``kty``, and by curve for EC.
_LOAD_AS = {"RSA": "RS256", "OKP": "EdDSA", "P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def _strength(key: dict[str, Any]) -> tuple[str, list[str]]:
    """The key in a few words (algorithm, size or curve), and why it is weak or unusable.

    The public members alone are loaded: a published private member is the ``private``
    probe's finding, and must not make the public key unusable here.
    """
    kty = str(key.get("kty"))
    parts = [f"alg {key['alg']}"] if "alg" in key else []
    if "crv" in key:
        parts.append(f"curve {key['crv']}")
    if kty in ("EC", "OKP") and key.get("crv") not in ALLOWED_CURVES:
        return ", ".join(parts), [f"curve {key.get('crv')!r} not allowed"]
    public = {k: v for k, v in key.items() if k not in PRIVATE_MEMBERS.get(kty, ())}
    algorithm = _LOAD_AS.get(str(key.get("crv")) if kty == "EC" else kty)
    try:
        loaded = jwt.PyJWK(public, algorithm=algorithm).key
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


def judge_rotation(
    source: str, seen: dict[str, dt.datetime], now: dt.datetime, days: int | None
) -> Observation:
    """The newest key's first sighting against ``auth.key_rotation_days``: ``rotation``.

    Without ``auth.key_rotation_days`` the sightings are recorded but nothing is judged:
    a SKIP that says what it needs. So is a first run: every key is new to the history,
    which shows nothing about how old the keys are.
    """
    age = (now - max(seen.values())).days
    observed = f"newest key first seen {age} day(s) ago ({len(seen)} key(s) recorded)"
    if all(when >= now for when in seen.values()):
        return Observation(
            f"{source}: key rotation",
            f"every key first seen in this run ({len(seen)} recorded)",
            "an earlier run in evidence.history_dir to compare with",
            Status.SKIP,
        ).of("rotation")
    if days is None:
        return Observation(
            f"{source}: key rotation", observed, "auth.key_rotation_days", Status.SKIP
        ).of("rotation")
    return Observation(
        f"{source}: key rotation",
        observed,
        f"a key first seen within {days} days (auth.key_rotation_days)",
        Status.PASS if age <= days else Status.FAIL,
        Severity.LOW,
    ).of("rotation")


def _rotation(run: Run, source: str, keys: list[dict[str, Any]]) -> Observation | None:
    """Record each key's first sighting in ``evidence.history_dir`` and judge the newest."""
    directory = run.config.get("evidence.history_dir")
    if not directory:
        return None  # the probe does not run: it needs evidence.history_dir
    days = run.config.get("auth.key_rotation_days")
    now = dt.datetime.now(dt.timezone.utc)
    try:
        seen = first_seen(Path(directory), "jwks-keys", [thumbprint(k) for k in keys], now)
    except HistoryError as exc:
        return Observation(
            f"{source}: key history", str(exc), "readable and writable", Status.INCONCLUSIVE
        ).of("rotation")
    return judge_rotation(source, seen, now, None if days is None else int(days))
