"""Keys, certificates and tokens for a bundled target, all generated at start-up.

Nothing secret is ever committed: every run makes a fresh CA (trustme), server and client
certificates, and an ES256 token-signing key (cryptography), and writes what a client needs
into the target's work directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Principal:
    """A caller of a bundled target: one token subject with its roles."""

    name: str
    subject: str
    roles: tuple[str, ...]
    amr: tuple[str, ...] = ("pwd",)


class TokenIssuer:
    """A tiny OAuth-style issuer: one ES256 key, tokens with iss/aud/exp/nbf/jti/typ."""

    algorithm = "ES256"

    def __init__(self, issuer: str, audience: str, ttl_s: int = 900) -> None:
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = hashlib.sha256(der).hexdigest()[:16]

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The verification key."""
        return self._key.public_key()

    def mint(self, principal: Principal, exp_in: int | None = None, **overrides: object) -> str:
        """A signed access token for ``principal``; ``overrides`` replace claims."""
        now = int(dt.datetime.now(dt.timezone.utc).timestamp())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal.subject,
            "roles": list(principal.roles),
            "amr": list(principal.amr),
            "client_id": "hipaa-harness",
            "iat": now,
            "nbf": now,
            "exp": now + (self.ttl_s if exp_in is None else exp_in),
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return jwt.encode(
            claims, self._key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "at+jwt"}
        )

    def write(self, directory: Path) -> None:
        """Write the public JWKS and the private key (mode 0600) for harness-side minting."""
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.public_key))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        (directory / "jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=2))
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(directory / "issuer-key.pem", pem)


@dataclass(frozen=True)
class Pki:
    """A CA, the server's certificate chain and one client certificate, as PEM bytes."""

    ca_pem: bytes
    server_chain_pem: bytes
    server_key_pem: bytes
    client_chain_pem: bytes
    client_key_pem: bytes

    @classmethod
    def generate(cls, client_identity: str) -> Pki:
        """Fresh CA with a 30-day server certificate and a client certificate."""
        ca = trustme.CA(organization_name="hipaa-grpc reference CA")
        now = dt.datetime.now(dt.timezone.utc)
        server = ca.issue_cert(
            *SERVER_NAMES,
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + dt.timedelta(days=30),
        )
        client = ca.issue_cert(
            client_identity,
            common_name=client_identity,
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + dt.timedelta(days=30),
        )
        return cls(
            ca_pem=ca.cert_pem.bytes(),
            server_chain_pem=b"".join(blob.bytes() for blob in server.cert_chain_pems),
            server_key_pem=server.private_key_pem.bytes(),
            client_chain_pem=b"".join(blob.bytes() for blob in client.cert_chain_pems),
            client_key_pem=client.private_key_pem.bytes(),
        )

    def write_client_side(self, directory: Path) -> None:
        """Write what a client needs: the CA bundle and the client certificate and key."""
        (directory / "ca.pem").write_bytes(self.ca_pem)
        (directory / "client.pem").write_bytes(self.client_chain_pem)
        _write_private(directory / "client-key.pem", self.client_key_pem)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
