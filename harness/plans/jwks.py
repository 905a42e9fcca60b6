"""The issuer's JWKS: where it is, and one bounded fetch of it (KEY-001, AUTHN-002).

One resolution order for every control (:func:`resolve_jwks`): ``auth.jwks_file`` (the
operator's copy, read locally), else ``auth.jwks_uri``, else the ``jwks_uri`` of
``auth.issuer``'s OpenID discovery document (``<issuer>/.well-known/openid-configuration``).
The first source configured is the one used: a source that cannot be read is reported, not
silently replaced by the next. Each document is fetched over http or https (the system
trust store), within :data:`FETCH_TIMEOUT_S` per read, twice that in all, and
:data:`MAX_DOCUMENT_BYTES`.

Nothing reaches beyond the target without the user's opt-in: a document is fetched only
from the target's own host or the loopback, unless ``safety.allow_issuer_fetch`` is true,
and a redirect to another host is never followed.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.config import Config

if TYPE_CHECKING:
    from harness.run import Run

#: Bounds of one fetch: the JWKS or the discovery document.
FETCH_TIMEOUT_S = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024


class FetchError(ValueError):
    """A document could not be fetched or parsed; the message says why, in one line."""


@dataclass(frozen=True)
class Reach:
    """Where the harness may fetch from: the target's host and the loopback, or anywhere.

    Attributes:
        target_host: The host the user pointed the harness at.
        anywhere: ``safety.allow_issuer_fetch``: the user allows fetching the issuer's
            documents from other hosts.
    """

    target_host: str = ""
    anywhere: bool = False

    @classmethod
    def of(cls, config: Config, target_host: str | None) -> Reach:
        """The reach a run's config allows."""
        return cls(target_host or "", bool(config.get("safety.allow_issuer_fetch")))

    def refusal(self, url: str) -> str:
        """Why ``url`` may not be fetched, or ``""``."""
        host = urllib.parse.urlsplit(url).hostname or ""
        if self.anywhere or _loopback(host) or host.lower() == self.target_host.lower():
            return ""
        return (
            f"{url}: not fetched: {host} is neither the target's host nor the loopback "
            "(set safety.allow_issuer_fetch = true to let the harness fetch it)"
        )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _SameHost(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the host the request went to."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (new.hostname, new.port) != (old.hostname, old.port):
            raise FetchError(
                f"{req.full_url}: redirected to another host ({new.hostname}): not followed"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class Jwks:
    """The issuer's JWKS document, where it came from, or why it could not be read.

    Attributes:
        source: ``auth.jwks_file <name>`` or the URL it was fetched from; ``""`` when no
            source is configured.
        document: The parsed JSON (``None`` unless read).
        problem: Why the configured source could not be read (``""`` otherwise).
    """

    source: str = ""
    document: Any = None
    problem: str = ""


def resolve_jwks(config: Config, reach: Reach) -> Jwks:
    """The JWKS from the first configured source: jwks_file, jwks_uri, then discovery.

    Never raises for what it reads: a source that fails gives a :class:`Jwks` whose
    ``problem`` says why in one line.
    """
    path = config.path("auth.jwks_file")
    if path is not None:
        source = f"auth.jwks_file {path.name}"
        try:
            return Jwks(source, json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            return Jwks(source, problem=f"{source}: not read ({exc})")
    uri: str | None = None
    try:
        uri = jwks_uri(config, reach)
        if uri is None:
            return Jwks()
        return Jwks(uri, fetch_json(uri, reach))
    except FetchError as exc:
        return Jwks(uri or config.str_("auth.issuer") or "", problem=str(exc))


def issuer_jwks(run: Run) -> Jwks:
    """:func:`resolve_jwks` for the run, fetched once (KEY-001 and AUTHN-002 share it)."""
    return run.memo(
        "issuer-jwks", lambda: resolve_jwks(run.config, Reach.of(run.config, run.spec.host))
    )


def jwks_uri(config: Config, reach: Reach) -> str | None:
    """The JWKS URL: ``auth.jwks_uri``, else the ``jwks_uri`` of ``auth.issuer``'s discovery.

    ``None`` when neither is configured (an issuer that is not an http(s) URL is not
    discovered).

    Raises:
        FetchError: The discovery document could not be fetched, or names no ``jwks_uri``.
    """
    uri = config.str_("auth.jwks_uri")
    if uri:
        return uri
    issuer = config.str_("auth.issuer") or ""
    if urllib.parse.urlsplit(issuer).scheme not in ("http", "https"):
        return None
    discovery = issuer.rstrip("/") + "/.well-known/openid-configuration"
    return discovered_jwks_uri(discovery, fetch_json(discovery, reach))


def discovered_jwks_uri(discovery: str, document: Any) -> str:
    """The ``jwks_uri`` of the OpenID discovery document fetched from ``discovery``.

    Raises:
        FetchError: It names none.
    """
    found = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(found, str) or not found:
        raise FetchError(f"{discovery}: no jwks_uri in the discovery document")
    return found


def fetch_json(url: str, reach: Reach) -> Any:
    """GET ``url`` (http or https) if ``reach`` allows, bounded in time and size, as JSON.

    Raises:
        FetchError: It may not be fetched, could not be fetched in full, or is not JSON; the
            message says why.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"{url}: only http and https URLs are fetched")
    if refusal := reach.refusal(url):
        raise FetchError(refusal)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    end = time.monotonic() + 2 * FETCH_TIMEOUT_S
    body, complete = b"", False
    opener = urllib.request.build_opener(_SameHost())
    try:
        with opener.open(request, timeout=FETCH_TIMEOUT_S) as response:
            while not complete and len(body) <= MAX_DOCUMENT_BYTES and time.monotonic() < end:
                chunk = response.read1(65536)
                complete = not chunk
                body += chunk
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise FetchError(f"{url}: not fetched ({getattr(exc, 'reason', exc)})") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    if not complete:
        raise FetchError(f"{url}: not sent in full within {2 * FETCH_TIMEOUT_S:g} s")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{url}: not JSON ({exc})") from None
