"""Recorded answers of a proxy in front of the service: nginx's own HTTP refusals.

nginx answers a duplicate ``authorization`` header, a missing or bad client certificate
(``ssl_verify_client on``: 496/495, sent as 400), a body over ``client_max_body_size`` and a
``limit_req`` rate with HTTP 400, 400, 413 and 429 or 503, without ``grpc-status``. Each gRPC
client maps the status to a code (gRPC's HTTP-to-gRPC mapping) and words it its own way;
these are the texts of grpcio (recorded against Debian's nginx 1.22 by
``tests/test_nginx_edge.py``), grpc-go, grpc-js and grpc-java.
"""

from __future__ import annotations

import grpc

from harness.channels import CallResult

from .recorded import answer

C = grpc.StatusCode

#: gRPC's mapping of the statuses nginx answers with (a 495/496 reaches the wire as 400;
#: another proxy may send it as is, and then it is UNKNOWN).
MAPPED = {
    400: C.INTERNAL,
    401: C.UNAUTHENTICATED,
    403: C.PERMISSION_DENIED,
    413: C.UNKNOWN,
    429: C.UNAVAILABLE,
    495: C.UNKNOWN,
    496: C.UNKNOWN,
    502: C.UNAVAILABLE,
    503: C.UNAVAILABLE,
}
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_NGINX_PAGE = (
    "<html>\r\n<head><title>{s} {r}</title></head>\r\n<body>\r\n<center><h1>{s} {r}</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _go(s: int) -> str:
    return (
        f"unexpected HTTP status code received from server: {s} ({_REASONS.get(s, '')}); "
        'transport: received unexpected content-type "text/html"'
    )


def _java(s: int) -> str:
    page = _NGINX_PAGE.format(s=s, r=_REASONS.get(s, ""))
    return (
        f"HTTP status code {s}\ninvalid content-type: text/html\nheaders: Metadata(:status={s},"
        "server=nginx,date=Mon, 30 Nov 2026 17:01:46 GMT,content-type=text/html,"
        f"content-length={len(page)})\nDATA-----------------------------\n{page}"
    )


#: The status message each client gives a status ``s``.
WORDING = {
    "grpcio": lambda s: f"Received http2 header with status: {s}",
    "grpc-go": _go,
    "grpc-js": lambda s: f"Received HTTP status code {s}",
    "grpc-java": _java,
}
CLIENTS = tuple(WORDING)
#: What nginx sends before the page: grpcio shows them as trailing metadata (the harness
#: records what the client gives it: often nothing at all).
NGINX_HEADERS = (("server", "nginx"), ("date", "Mon, 30 Nov 2026 17:01:46 GMT"))


def refusal(client: str, status: int, method: str = "/pkg.Service/Method") -> CallResult:
    """A client's record of nginx answering a call with HTTP ``status`` itself."""
    return answer(MAPPED[status], details=WORDING[client](status), method=method)


#: grpcio's record of a stream nginx cut with GOAWAY ENHANCE_YOUR_CALM (a header field
#: over ``large_client_header_buffers``), recorded against Debian's nginx 1.22.
CALMED = "Stream removed (Socket closed (GOAWAY received; Error code: 11; Debug Text: ))"
#: grpcio's record of a stream nginx ended with a graceful GOAWAY (NO_ERROR).
DRAINED = "Stream removed (GOAWAY received; Error code: 0; Debug Text: )"

#: Each client's record of a proxy's answer whose HTTP status it lost: nginx answered
#: before the request had ended, then reset the request stream (RST_STREAM NO_ERROR), and
#: the client reports a stream that ended without trailers. grpcio's was recorded against
#: Debian's nginx 1.22 (about one V8 call in ten), with nginx's headers as initial metadata.
LOST = {
    "grpcio": (
        "Stream removed (Data frame with END_STREAM flag received) "
        "(RST_STREAM (Received RST_STREAM with error code 0))"
    ),
    "grpc-go": "server closed the stream without sending trailers",
    "grpc-js": "Received RST_STREAM with code 0 (Call ended without gRPC status)",
}


def lost(client: str, method: str = "/pkg.Service/Method") -> CallResult:
    """A client's record of a proxy's answer whose status it lost (INTERNAL)."""
    headers = (*NGINX_HEADERS, ("content-length", "150")) if client == "grpcio" else ()
    return answer(C.INTERNAL, details=LOST[client], method=method, headers=headers)
