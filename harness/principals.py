"""Principals: the callers the harness impersonates, each with a token source.

Tokens come from a file, an environment variable or a command's stdout; they are read when
first needed and never written anywhere (``repr`` hides them). A token travels as the
service takes it (:class:`Presentation`: ``auth.header`` and ``auth.scheme``, per principal
too): ``authorization: Bearer <t>`` by default, ``token: <t>`` for etcd. A principal of
``auth.principals`` re-reads its source when its JWT is within 30 s of ``exp`` (a sidecar
may have rotated the file, a command gives a fresh one), and re-signs it when the source
still gives the old one and the issuer's key is configured: long fuzz runs keep calling as
their principals instead of collecting UNAUTHENTICATED.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from harness.config import Config
from harness.errors import ConfigError

_CMD_TIMEOUT_S = 15.0
#: A token this close to ``exp`` is re-read (and, failing that, renewed).
REFRESH_MARGIN_S = 30.0
#: The source of an expiring token is read again at most this often.
_REREAD_EVERY_S = 10.0
#: A metadata key a credential may travel under: lower case, gRPC's key alphabet, ASCII.
_HEADER = re.compile(r"^[0-9a-z_.-]+$")


@dataclass(frozen=True)
class Presentation:
    """Where a credential travels in metadata, and how (``auth.header``, ``auth.scheme``).

    Attributes:
        header: The metadata key (``authorization``; ``token`` for etcd).
        scheme: The word before the token (``Bearer``); ``""`` sends the bare token.
    """

    header: str = "authorization"
    scheme: str = "Bearer"

    def value(self, token: str) -> str:
        """The metadata value carrying ``token``: ``Bearer <t>``, or ``<t>`` bare."""
        return f"{self.scheme} {token}" if self.scheme else token

    def metadata(self, token: str) -> tuple[tuple[str, str], ...]:
        """``token`` as the one metadata entry the service reads it from."""
        return ((self.header, self.value(token)),)

    def describe(self) -> str:
        """``authorization: Bearer <token>``, for evidence and messages."""
        return f"{self.header}: {self.value('<token>')}"

    @classmethod
    def of(
        cls, table: dict[str, Any], source: str, key: str, base: Presentation | None = None
    ) -> Presentation:
        """The ``header``/``scheme`` of ``table`` (at ``key``), ``base``'s where unset.

        Raises:
            ConfigError: the header is no metadata key a credential can travel under, or
                the scheme is not one word.
        """
        base = base or cls()
        header = str(table.get("header", base.header))
        scheme = str(table.get("scheme", base.scheme))
        if not _HEADER.match(header) or header.startswith("grpc-") or header.endswith("-bin"):
            raise ConfigError(
                source,
                f"{key}.header",
                f"{header!r} is not a text metadata key (lower case, no grpc- prefix, no -bin)",
            )
        if any(c.isspace() or not c.isprintable() or not c.isascii() for c in scheme):
            raise ConfigError(source, f"{key}.scheme", f"{scheme!r} is not one ASCII word")
        return cls(header, scheme)


#: Where a credential goes when the config says nothing: ``authorization: Bearer <t>``.
BEARER = Presentation()


def presentation_of(config: Config) -> Presentation:
    """The run's ``auth.header`` / ``auth.scheme`` (what a principal without its own uses).

    Raises:
        ConfigError: either is malformed.
    """
    source = config.sources[-1] if config.sources else "config"
    return Presentation.of(config.table("auth"), source, "auth")


@dataclass
class Principal:
    """One configured caller.

    Attributes:
        name: The name in ``auth.principals`` (``admin``, ``least-privileged``...).
        token_file: File holding the bearer token.
        token_env: Environment variable holding it.
        token_cmd: Command whose stdout is the token.
        source: Config file that declared it, for error messages.
        presentation: Where its token travels (``auth.principals.<name>.header`` and
            ``.scheme``, else ``auth.header`` and ``auth.scheme``).
    """

    name: str
    token_file: Path | None = None
    token_env: str | None = None
    token_cmd: list[str] | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    source: str = "config"
    presentation: Presentation = BEARER
    refresh: bool = False
    renew: Callable[[str], str | None] | None = field(default=None, repr=False, compare=False)
    _token: str | None = field(default=None, repr=False)
    _expires: float | None = field(default=None, repr=False)
    _read_at: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def has_token(self) -> bool:
        """True if a token source is configured."""
        return bool(self.token_file or self.token_env or self.token_cmd)

    @property
    def has_cert(self) -> bool:
        """True if the principal presents its own client certificate (an mTLS identity)."""
        return self.client_cert is not None

    def token(self) -> str:
        """The bearer token: read once, and again near its expiry when ``refresh`` is set.

        Raises:
            ConfigError: the source is empty, missing or failed.
        """
        with self._lock:
            now = time.time()
            if self._token is None:
                self._keep(self._read(), now)
            elif (
                self.refresh
                and self._expires is not None
                and self._expires - now < REFRESH_MARGIN_S
                and now - self._read_at >= _REREAD_EVERY_S
            ):
                fresh = self._read()
                expires = _expiry(fresh)
                if expires is not None and expires - now < REFRESH_MARGIN_S and self.renew:
                    fresh = self.renew(fresh) or fresh  # the source has nothing newer
                self._keep(fresh, now)
            assert self._token is not None
            return self._token

    def _keep(self, token: str, now: float) -> None:
        self._token, self._expires, self._read_at = token, _expiry(token), now

    def _read(self) -> str:
        key = f"auth.principals.{self.name}"
        if self.token_file is not None:
            try:
                text = self.token_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    self.source, f"{key}.token_file", f"cannot read: {exc.strerror}"
                ) from None
            where = f"{key}.token_file"
        elif self.token_env is not None:
            text = os.environ.get(self.token_env, "")
            where = f"{key}.token_env"
            if not text:
                raise ConfigError(
                    self.source, where, f"environment variable {self.token_env} is not set"
                )
        elif self.token_cmd:
            where = f"{key}.token_cmd"
            try:
                done = subprocess.run(
                    self.token_cmd,
                    capture_output=True,
                    text=True,
                    timeout=_CMD_TIMEOUT_S,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConfigError(
                    self.source, where, f"command failed: {exc.__class__.__name__}"
                ) from None
            if done.returncode != 0:
                raise ConfigError(self.source, where, f"command exited {done.returncode}")
            text = done.stdout
        else:
            raise ConfigError(self.source, key, "no token_file, token_env or token_cmd")
        token = text.strip()
        if not token or any(c.isspace() for c in token):
            raise ConfigError(self.source, where, "does not hold exactly one token")
        return token

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Its token where the service reads it, or nothing for a certificate-only identity."""
        return self.present(self.token()) if self.has_token else ()

    def present(self, token: str) -> tuple[tuple[str, str], ...]:
        """Any ``token`` (a forgery of its own, a fixture) where this principal's goes."""
        return self.presentation.metadata(token)


def _expiry(token: str) -> float | None:
    """The token's ``exp`` if it is a JWT that has one (read, not verified)."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if isinstance(exp, (int, float)) else None


def principals_from(
    table: dict[str, Any],
    source: str,
    *,
    refresh: bool = False,
    renew: Callable[[str], str | None] | None = None,
    presentation: Presentation = BEARER,
) -> dict[str, Principal]:
    """Build principals from a validated ``auth.principals`` table.

    ``refresh`` (for the run's own callers, never for fixtures such as an expired token)
    re-reads tokens near expiry, and ``renew`` re-signs them when the source has no newer one.
    ``presentation`` (:func:`presentation_of` the config) is where a token goes unless the
    principal names its own ``header`` or ``scheme``.
    """
    out = {}
    key = "auth.principals"
    for name, spec in table.items():
        sources = [k for k in ("token_file", "token_env", "token_cmd") if k in spec]
        if len(sources) > 1:
            raise ConfigError(
                source, f"auth.principals.{name}", f"give one token source, not {sources}"
            )
        if ("client_cert" in spec) != ("client_key" in spec):
            raise ConfigError(
                source, f"auth.principals.{name}", "client_cert and client_key go together"
            )
        if not sources and "client_cert" not in spec:
            raise ConfigError(
                source, f"auth.principals.{name}", "needs a token source or a client_cert"
            )
        out[name] = Principal(
            name=name,
            token_file=spec.get("token_file"),
            token_env=spec.get("token_env"),
            token_cmd=spec.get("token_cmd"),
            client_cert=spec.get("client_cert"),
            client_key=spec.get("client_key"),
            source=source,
            presentation=Presentation.of(spec, source, f"{key}.{name}", presentation),
            refresh=refresh,
            renew=renew,
        )
    return out
