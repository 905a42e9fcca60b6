"""Keys, certificates and tokens for a bundled target, all generated at start-up.

Nothing secret is ever committed: every run makes a fresh CA (trustme), server and client
certificates, and an ES256 token-signing key (cryptography), and writes what a client needs
into the target's work directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
#: Where the bundled CA would publish OCSP (never contacted: it only has to be there).
OCSP_URL = "http://ocsp.reference.hipaa.test/"


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

    def __init__(
        self,
        issuer: str,
        audience: str,
        ttl_s: int = 900,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self._key = key or ec.generate_private_key(ec.SECP256R1())
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

    @classmethod
    def load(cls, directory: Path, issuer: str, audience: str) -> TokenIssuer:
        """The issuer whose key :meth:`write` put in ``directory``."""
        key = serialization.load_pem_private_key(
            (directory / "issuer-key.pem").read_bytes(), password=None
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / 'issuer-key.pem'}: not an EC key")
        return cls(issuer, audience, key=key)

    def jwks(self, *, private: bool = False) -> dict[str, Any]:
        """The JWKS that publishes the key: public members only unless ``private``."""
        key = self._key if private else self.public_key
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return {"keys": [jwk]}

    def write(self, directory: Path) -> None:
        """Write the public JWKS and the private key (mode 0600) for harness-side minting."""
        (directory / "jwks.json").write_text(json.dumps(self.jwks(), indent=2))
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(directory / "issuer-key.pem", pem)


@dataclass(frozen=True)
class Issued:
    """A certificate chain (leaf first, without the root) and its private key, as PEM."""

    chain_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> None:
        """Write ``STEM.pem`` and ``STEM-key.pem`` (mode 0600), creating ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{stem}.pem").write_bytes(self.chain_pem)
        _write_private(directory / f"{stem}-key.pem", self.key_pem)


class CertificateAuthority:
    """A root CA (trustme) that issues leaves the way a careful private PKI does.

    trustme's own leaves carry a critical SAN and no EKU or AIA; ours are built with
    ``cryptography``: non-critical SAN, KeyUsage, the EKU the leaf is for, SKI/AKI and an
    OCSP pointer, with the lifetime, key and signature hash a variant asks for.
    """

    def __init__(self, organization: str) -> None:
        self._ca = trustme.CA(organization_name=organization)
        self.cert_pem = self._ca.cert_pem.bytes()
        self._cert = x509.load_pem_x509_certificate(self.cert_pem)
        key = serialization.load_pem_private_key(self._ca.private_key_pem.bytes(), None)
        assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
        self._key = key

    def issue(
        self,
        names: tuple[str, ...],
        *,
        client: bool = False,
        eku: x509.ObjectIdentifier | None = None,
        valid_from: dt.timedelta = -dt.timedelta(minutes=5),
        valid_for: dt.timedelta = dt.timedelta(days=30),
        key: str = "ec-p256",
        sha1: bool = False,
    ) -> Issued:
        """A leaf for ``names`` (DNS names or IP addresses), valid from now + ``valid_from``."""
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if key.startswith("rsa-"):
            private = rsa.generate_private_key(65537, int(key.removeprefix("rsa-")))
        else:
            private = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        default_eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            # openssl re-signs only a self-signed input (issuer = subject, no foreign AKI).
            .issuer_name(subject if sha1 else self._cert.subject)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + valid_from)
            .not_valid_after(now + valid_from + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=isinstance(private, rsa.RSAPrivateKey),
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku or default_eku]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(OCSP_URL),
                        )
                    ]
                ),
                critical=False,
            )
        )
        if not sha1:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        signer = private if sha1 else self._key
        cert_pem = builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        if sha1:
            cert_pem = self._resign_sha1(cert_pem, valid_for)
        return Issued(
            cert_pem,
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    def _resign_sha1(self, cert_pem: bytes, valid_for: dt.timedelta) -> bytes:
        """The same certificate signed with SHA-1, for the ``sha1-cert`` defect.

        ``cryptography`` refuses to make SHA-1 signatures, so this asks the OS's ``openssl``
        command, which re-signs the certificate and keeps its extensions.
        """
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("the sha1-cert defect needs the openssl command on PATH")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "leaf.pem").write_bytes(cert_pem)
            (work / "ca.pem").write_bytes(self.cert_pem)
            _write_private(work / "ca-key.pem", self._ca.private_key_pem.bytes())
            subprocess.run(
                [
                    *(openssl, "x509", "-in", "leaf.pem", "-CA", "ca.pem", "-CAkey", "ca-key.pem"),
                    *("-sha1", "-days", str(max(1, valid_for.days)), "-out", "sha1.pem"),
                ],
                cwd=work,
                check=True,
                capture_output=True,
                timeout=30,
            )
            return (work / "sha1.pem").read_bytes()


@dataclass(frozen=True)
class Pki:
    """A CA, the server's certificate and one client certificate."""

    ca: CertificateAuthority
    server: Issued
    client: Issued

    @property
    def ca_pem(self) -> bytes:
        """The trust anchor, PEM."""
        return self.ca.cert_pem

    @classmethod
    def generate(cls, client_identity: str) -> Pki:
        """Fresh CA with a 30-day ECDSA P-256 server certificate and a client certificate."""
        ca = CertificateAuthority("hipaa-grpc reference CA")
        return cls(ca, ca.issue(SERVER_NAMES), ca.issue((client_identity,), client=True))

    def write_client_side(self, directory: Path, client_identity: str) -> None:
        """Write what a client needs: the CA bundle and the client certificate and key.

        Also the invalid client certificates a tester uses as MTLS-002 fixtures.
        """
        (directory / "ca.pem").write_bytes(self.ca_pem)
        self.client.write(directory, "client")
        fixtures = directory / "mtls-fixtures"
        fixtures.mkdir(exist_ok=True)
        self.ca.issue((client_identity,), client=True, valid_from=-dt.timedelta(days=40)).write(
            fixtures, "expired"
        )
        self.ca.issue((client_identity,), client=True, eku=ExtendedKeyUsageOID.SERVER_AUTH).write(
            fixtures, "wrong-eku"
        )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
