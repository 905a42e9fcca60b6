"""A thin typed seam over grpc: channels to the target and raw-bytes calls.

Every call goes out as bytes through a generic stream-stream call, which on the wire is
the same as any gRPC method kind. So the harness needs no generated code, can send what a
generated stub never would (two messages to a unary method, malformed bytes), and gets
back one :class:`CallResult` whatever happens.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from harness.transport import Transport

Metadata = tuple[tuple[str, "str | bytes"], ...]

#: The receive limit the harness sets on its own side (responses larger than this are a
#: client-side RESOURCE_EXHAUSTED, which LIMIT-003 reports as a server finding).
CLIENT_MAX_RECEIVE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    """Where the target is and how to talk to it.

    Attributes:
        address: ``host:port`` as gRPC wants it.
        transport: TLS or cleartext HTTP/2 (as detected).
        server_name: Name to verify the server certificate against.
        ca_pem: Trust anchors; ``None`` means the system roots.
        client_cert_pem: Client certificate chain for mTLS, if configured.
        client_key_pem: Its private key.
        pin_der: Set when a gRPC client would refuse the server's TLS (see
            :mod:`harness.relay`): channels then go through a relay pinned to this
            certificate. :meth:`~harness.run.Run.new_channel` honours it.
    """

    address: str
    transport: Transport
    server_name: str | None = None
    ca_pem: bytes | None = None
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    pin_der: bytes | None = field(default=None, repr=False)

    def open_channel(self, *, with_client_cert: bool = True) -> grpc.Channel:
        """A new channel to the target; the caller closes it."""
        options: list[tuple[str, str | int]] = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", CLIENT_MAX_RECEIVE),
            ("grpc.enable_retries", 0),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self.transport is Transport.H2C:
            return grpc.insecure_channel(self.address, options=options)
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        cert = self.client_cert_pem if with_client_cert else None
        key = self.client_key_pem if with_client_cert else None
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=key, certificate_chain=cert
        )
        return grpc.secure_channel(self.address, creds, options=options)


def code_text(code: grpc.StatusCode) -> str:
    """``UNIMPLEMENTED (12)``: the catalogue's way of writing a status code."""
    return f"{code.name} ({code.value[0]})"


@dataclass(frozen=True)
class CallResult:
    """Everything observable about one call.

    Attributes:
        method: Full method path, ``/pkg.Service/Method``.
        code: Final status code.
        details: Status message as the server sent it.
        responses: Response messages, as bytes.
        initial_metadata: Response headers.
        trailing_metadata: Response trailers (``grpc-status-details-bin`` included).
        request_id: The request ID the harness sent.
        principal: Name of the principal whose credentials were sent, or ``None``.
        elapsed_s: Wall time of the call.
    """

    method: str
    code: grpc.StatusCode
    details: str
    responses: tuple[bytes, ...]
    initial_metadata: Metadata
    trailing_metadata: Metadata
    request_id: str
    principal: str | None
    elapsed_s: float
    arrivals: tuple[float, ...] = ()  # seconds from the call's start to each response
    started_at: float = 0.0  # wall-clock time (time.time()) when the call was made

    @property
    def status(self) -> str:
        """The code as ``NAME (number)``."""
        return code_text(self.code)

    def summary(self) -> str:
        """Code, message count and message text, for evidence."""
        text = f" {self.details!r}" if self.details else ""
        carried = self.carried()
        more = f"; status details carry {', '.join(carried)}" if carried else ""
        return f"{self.status} with {len(self.responses)} response message(s){text}{more}"

    def carried(self) -> tuple[str, ...]:
        """What the status details (``grpc-status-details-bin``) carry beyond an explanation.

        The payload types other than ``google.rpc.BadRequest``, ``ErrorInfo`` and
        ``LocalizedMessage`` (catalogue: "no data"), by type name; ``("undecodable status
        details",)`` when they are not a ``google.rpc.Status``: nobody can say what they hold.
        """
        return status_payloads(self.trailing_metadata)

    @property
    def http_status(self) -> int | None:
        """The HTTP status of an answer that came without ``grpc-status``, or ``None``.

        Read from the client library's wording (:func:`http_status`): a proxy in front of
        the service answered the request itself (nginx's 400, 413, 429...).
        """
        return http_status(self.code, self.details)

    @property
    def statusless(self) -> bool:
        """The answer ended without ``grpc-status``: an HTTP answer, its status stated or lost.

        :attr:`http_status` is set, or the client says the stream ended without trailers
        (:func:`statusless`): no gRPC server gave it.
        """
        return statusless(self.code, self.details)


#: How gRPC clients word a non-200 HTTP answer that carried no ``grpc-status``, with the
#: status (HTTP to gRPC mapping, gRPC's doc/http-grpc-status-mapping.md).
_HTTP_ANSWER = re.compile(
    r"(?:Received http2 header with status: "  # grpcio and the other gRPC core wrappers
    r"|unexpected HTTP status code received from server: "  # grpc-go
    r"|Received HTTP status code "  # grpc-js
    r"|HTTP status code "  # grpc-java (then 'invalid content-type: text/html')
    r"|grpc-status header missing, mapped from HTTP status code "  # tonic
    r"|Bad gRPC response\. HTTP status code: "  # grpc-dotnet
    r")(?P<status>[1-5]\d\d)\b",
    re.IGNORECASE,
)
#: The codes that mapping gives (400 and 431 INTERNAL, 401 UNAUTHENTICATED, 403
#: PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, others UNKNOWN).
HTTP_MAPPED = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def http_status(code: grpc.StatusCode, details: str) -> int | None:
    """The HTTP status a client reports for an answer without ``grpc-status``, or ``None``.

    ``details`` must begin with a client's wording of it (grpcio's "Received http2 header
    with status: 413", grpc-go's "unexpected HTTP status code received from server: 413
    (Request Entity Too Large)", grpc-js's "Received HTTP status code 413", grpc-java's
    "HTTP status code 413", tonic's, grpc-dotnet's) and ``code`` be one the HTTP-to-gRPC
    mapping gives: a service's own status message that merely quotes such a text under
    another code is not one. A 200 is ``None`` (an HTTP answer that was a gRPC answer).
    """
    if code not in HTTP_MAPPED:
        return None
    m = _HTTP_ANSWER.match(details)
    if m is None:
        return None
    status = int(m["status"])
    return None if status == 200 else status


#: How clients word a stream that ended without trailers, and so without ``grpc-status``,
#: when they do not give the HTTP status: grpcio when nginx resets the request stream
#: (RST_STREAM NO_ERROR) right after its own answer, as HTTP/2 lets a server that answered
#: before the request ended; grpc-go; grpc-js.
_NO_TRAILERS = re.compile(
    r"Stream removed \(Data frame with END_STREAM flag received\)"
    r"|^server closed the stream without sending trailers"
    r"|\(Call ended without gRPC status\)"
)


def statusless(code: grpc.StatusCode, details: str) -> bool:
    """Whether a client reports an answer that ended without ``grpc-status``.

    Either a non-200 HTTP status (:func:`http_status`), or a stream that ended without
    trailers under INTERNAL or UNKNOWN: a gRPC server always ends a call with its status,
    so something else answered (a proxy's error page), though the client lost its status.
    """
    if http_status(code, details) is not None:
        return True
    lost = code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    return lost and _NO_TRAILERS.search(details) is not None


#: Status-detail payloads that explain a refusal without carrying data (catalogue 0).
EXPLANATIONS = frozenset(
    {"google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.LocalizedMessage"}
)


def status_payloads(trailers: Metadata) -> tuple[str, ...]:
    """The payload types in ``grpc-status-details-bin`` other than :data:`EXPLANATIONS`."""
    from google.protobuf.message import DecodeError
    from google.rpc import status_pb2

    out: list[str] = []
    for key, value in trailers:
        if key != "grpc-status-details-bin":
            continue
        blob = value if isinstance(value, bytes) else value.encode("latin-1")
        try:
            status = status_pb2.Status.FromString(blob)
        except DecodeError:
            return ("undecodable status details",)
        for detail in status.details:
            name = detail.type_url.rsplit("/", 1)[-1]
            if name not in EXPLANATIONS:
                out.append(name or "a payload without a type")
    return tuple(out)


def new_request_id() -> str:
    """A fresh UUIDv4 for ``x-request-id`` (or the configured key)."""
    return str(uuid.uuid4())


def invoke(
    channel: grpc.Channel,
    method: str,
    requests: Sequence[bytes] | Iterator[bytes],
    *,
    metadata: Iterable[tuple[str, str | bytes]] = (),
    request_id_key: str = "x-request-id",
    principal: str | None = None,
    timeout: float = 10.0,
    max_responses: int = 1000,
    compression: grpc.Compression | None = None,
    unary_response: bool = False,
) -> CallResult:
    """Make one call with raw request bytes and collect everything it returns.

    Args:
        channel: Channel to the target.
        method: Full method path.
        requests: Serialized request messages (one for a unary method).
        metadata: Extra metadata (credentials), sent with a fresh request ID.
        request_id_key: Metadata key for the request ID.
        principal: Whose credentials ``metadata`` holds, for the record only.
        timeout: Deadline in seconds.
        max_responses: Stop reading (and cancel) after this many responses.
        compression: Compress the request (gzip for decompression-bomb probes).
        unary_response: The method answers with one message (its descriptor says so):
            one request is sent as a unary call, which grpcio makes in one blocking
            operation instead of a response stream read by its channel thread (a third
            more calls per second). A message sent beside an error status is kept; a
            second message holds the call until its deadline (grpcio waits for the status),
            so :class:`~harness.calling.Caller` reads such a method as a stream afterwards.

    Returns:
        The call's outcome. Transport failures come back as their status
        (UNAVAILABLE, DEADLINE_EXCEEDED), never as exceptions.
    """
    request_id = new_request_id()
    wall = time.time()
    md = ((request_id_key, request_id), *metadata)
    start = time.monotonic()
    responses: list[bytes] = []
    arrivals: list[float] = []
    call: Any
    single = None
    if not isinstance(requests, Iterator) and len(requests) == 1:
        single = requests[0]
    if single is not None and unary_response and _UNARY_KEEPS_RESPONSE:
        return _unary(channel, method, single, md, request_id, principal, timeout,
                      compression, wall, start)  # fmt: skip
    if single is not None:
        # One message then half-close, whatever the method's kind: the same on the wire as
        # a stream of one, without the thread grpcio starts to read a request iterator.
        one = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
        call = one(single, metadata=md, timeout=timeout, compression=compression)
    else:
        many = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
        outgoing = requests if isinstance(requests, Iterator) else iter(list(requests))
        call = many(outgoing, metadata=md, timeout=timeout, compression=compression)
    try:
        for response in call:
            responses.append(response)
            arrivals.append(time.monotonic() - start)
            if len(responses) >= max_responses:
                call.cancel()
                break
        code, details = call.code(), call.details() or ""
    except grpc.RpcError:
        code = call.code()
        details = call.details() or ""
    elapsed = time.monotonic() - start
    return CallResult(
        method=method,
        code=code,
        details=details,
        responses=tuple(responses),
        initial_metadata=tuple(call.initial_metadata() or ()),
        trailing_metadata=tuple(call.trailing_metadata() or ()),
        request_id=request_id,
        principal=principal,
        elapsed_s=elapsed,
        arrivals=tuple(arrivals),
        started_at=wall,
    )


def _keeps_response() -> bool:
    """Whether grpcio's error of a unary call keeps a message the server sent beside it.

    grpcio's ``_InactiveRpcError`` holds the call's state, whose ``response`` is that
    message; it is not public API, so this is checked on the installed grpcio (without it,
    every call reads a response stream, which shows every message).
    """
    try:
        from grpc import _channel

        error_init = _channel._InactiveRpcError.__init__.__code__
        state_init = _channel._RPCState.__init__.__code__
    except (ImportError, AttributeError):
        return False
    return "_state" in error_init.co_names and "response" in state_init.co_names


_UNARY_KEEPS_RESPONSE = _keeps_response()


def _unary(
    channel: grpc.Channel,
    method: str,
    request: bytes,
    md: tuple[tuple[str, str | bytes], ...],
    request_id: str,
    principal: str | None,
    timeout: float,
    compression: grpc.Compression | None,
    wall: float,
    start: float,
) -> CallResult:
    """:func:`invoke` of a method that answers with one message."""
    one = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    call: Any
    try:
        response, call = one.with_call(
            request, metadata=md, timeout=timeout, compression=compression
        )
    except grpc.RpcError as exc:
        call = exc
        response = getattr(getattr(exc, "_state", None), "response", None)
    elapsed = time.monotonic() - start
    responses = (response,) if response is not None else ()
    return CallResult(
        method=method,
        code=call.code(),
        details=call.details() or "",
        responses=responses,
        initial_metadata=tuple(call.initial_metadata() or ()),
        trailing_metadata=tuple(call.trailing_metadata() or ()),
        request_id=request_id,
        principal=principal,
        elapsed_s=elapsed,
        arrivals=(elapsed,) * len(responses),
        started_at=wall,
    )
