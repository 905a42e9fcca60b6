"""The bundled issuer's key publication: its JWKS and OpenID discovery document over HTTP.

Real issuers publish their signing keys at a ``jwks_uri`` that clients fetch; KEY-001 judges
what is published there. This one listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JWKS_PATH = "/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


class IssuerEndpoint:
    """A tiny HTTP server publishing ``jwks`` and a discovery document that points at it."""

    def __init__(self, issuer: str, jwks: dict[str, Any], host: str = "127.0.0.1") -> None:
        documents: dict[str, bytes] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = documents.get(self.path.split("?", 1)[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                return  # stay quiet: the service's own log is checked for leaks

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://{host}:{self._server.server_address[1]}"
        documents[JWKS_PATH] = json.dumps(jwks).encode()
        documents[DISCOVERY_PATH] = json.dumps(
            {"issuer": issuer, "jwks_uri": self.base + JWKS_PATH}
        ).encode()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def jwks_uri(self) -> str:
        """Where the JWKS is published."""
        return self.base + JWKS_PATH

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
