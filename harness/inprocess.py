"""A Python gRPC service run in-process, without a server or sockets (FUZZ-002 white-box).

``fuzz.inprocess_entrypoint = "package.module:function"`` names a function that returns
an :class:`InProcessTarget`: the service's generic handlers and its server interceptors,
exactly what it passes to ``grpc.server``. Keyword arguments come from
``fuzz.inprocess_options``. Calls are dispatched the way grpcio's server does it
(interceptors outermost first, then the first handler that knows the method), with a
servicer context that records ``abort`` and status codes, so Atheris' coverage covers
the service's own code and nothing of the network.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from harness.errors import ConfigError


@dataclass
class InProcessTarget:
    """What an in-process entry point returns.

    Attributes:
        handlers: The generic RPC handlers the service registers.
        interceptors: Its server interceptors, outermost first.
        public_methods: Methods meant to run without credentials.
        validation_errors: Exception types the service documents as validation errors
            (raising one is not a finding).
        close: Called once when fuzzing ends.
    """

    handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    interceptors: Sequence[grpc.ServerInterceptor[Any, Any]] = ()
    public_methods: frozenset[str] = frozenset()
    validation_errors: tuple[type[BaseException], ...] = ()
    close: Callable[[], None] | None = None


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class Aborted(Exception):
    """Raised by :meth:`Context.abort`, as grpcio raises after an abort."""


class Context(grpc.ServicerContext):
    """A servicer context for one in-process call."""

    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...], timeout_s: float) -> None:
        self._metadata = metadata
        self._deadline = time.monotonic() + timeout_s
        self.status: grpc.StatusCode | None = None
        self.message = ""
        self.aborted = False
        self.trailers: tuple[tuple[str, str | bytes], ...] = ()
        self.active = True

    # -- what services read ---------------------------------------------------------------

    def invocation_metadata(self) -> Any:
        """As ``grpc.ServicerContext.invocation_metadata``."""
        return self._metadata

    def peer(self) -> str:
        """As ``grpc.ServicerContext.peer``."""
        return "ipv4:127.0.0.1:1"

    def peer_identities(self) -> Any:
        """As ``grpc.ServicerContext.peer_identities``."""
        return None

    def peer_identity_key(self) -> Any:
        """As ``grpc.ServicerContext.peer_identity_key``."""
        return None

    def auth_context(self) -> Any:
        """As ``grpc.ServicerContext.auth_context``."""
        return {}

    def is_active(self) -> bool:
        """As ``grpc.ServicerContext.is_active``."""
        return self.active and time.monotonic() < self._deadline

    def time_remaining(self) -> float:
        """As ``grpc.ServicerContext.time_remaining``."""
        return max(0.0, self._deadline - time.monotonic())

    # -- what services set ----------------------------------------------------------------

    def abort(self, code: grpc.StatusCode, details: str) -> Any:
        """As ``grpc.ServicerContext.abort``."""
        self.status, self.message, self.aborted = code, details, True
        raise Aborted(details)

    def abort_with_status(self, status: Any) -> Any:
        """As ``grpc.ServicerContext.abort_with_status``."""
        self.trailers = tuple(status.trailing_metadata or ())
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        """As ``grpc.ServicerContext.set_code``."""
        self.status = code

    def set_details(self, details: str) -> None:
        """As ``grpc.ServicerContext.set_details``."""
        self.message = details

    def code(self) -> grpc.StatusCode | None:
        """The status code set so far."""
        return self.status

    def details(self) -> str:
        """The status message set so far."""
        return self.message

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        """As ``grpc.ServicerContext.code``."""
        """As ``grpc.ServicerContext.details``."""
        """As ``grpc.ServicerContext.set_trailing_metadata``."""
        self.trailers = tuple(trailing_metadata)

    def trailing_metadata(self) -> Any:
        """As ``grpc.ServicerContext.trailing_metadata``."""
        return self.trailers

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        """As ``grpc.ServicerContext.send_initial_metadata``."""
        return None

    def set_compression(self, compression: Any) -> None:
        """As ``grpc.ServicerContext.set_compression``."""
        return None

    def disable_next_message_compression(self) -> None:
        """As ``grpc.ServicerContext.disable_next_message_compression``."""
        return None

    def add_callback(self, callback: Any) -> bool:
        """As ``grpc.ServicerContext.add_callback``."""
        return False

    def cancel(self) -> None:
        """As ``grpc.ServicerContext.cancel``."""
        self.active = False


@dataclass
class Dispatched:
    """What one in-process call did.

    ``reached`` says whether the service's own handler ran (inside every interceptor);
    ``crash`` holds an exception that escaped the service (grpcio would answer UNKNOWN).
    """

    code: grpc.StatusCode
    details: str
    responses: int = 0
    reached: bool = False
    crash: BaseException | None = None


class InProcess:
    """Dispatches calls to an :class:`InProcessTarget`."""

    def __init__(self, target: InProcessTarget) -> None:
        self.target = target
        self._reached = False

    def _inner(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        for h in self.target.handlers:
            handler = h.service(details)
            if handler is not None:
                return _marked(handler, self._mark)
        return None

    def _mark(self) -> None:
        self._reached = True

    def _handler(self, details: _Details, depth: int = 0) -> grpc.RpcMethodHandler[Any, Any] | None:
        chain = self.target.interceptors
        if depth == len(chain):
            return self._inner(details)  # type: ignore[arg-type]
        return chain[depth].intercept_service(
            lambda d: self._handler(d, depth + 1),  # type: ignore[arg-type]
            details,  # type: ignore[arg-type]
        )

    def call(
        self,
        method: str,
        payload: bytes,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        *,
        max_responses: int = 2,
        timeout_s: float = 5.0,
    ) -> Dispatched:
        """Send one serialized request to ``method`` and read at most ``max_responses``."""
        self._reached = False
        details = _Details(method, tuple(metadata))
        context = Context(details.invocation_metadata, timeout_s)
        try:
            handler = self._handler(details)
        except Aborted:
            return self._done(context, 0, None)
        except Exception as exc:  # an interceptor crashed before any handler
            return self._done(context, 0, exc)
        if handler is None:
            return Dispatched(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        try:
            request = (
                handler.request_deserializer(payload) if handler.request_deserializer else payload
            )
        except Exception:  # grpcio answers a request it cannot parse with INTERNAL
            return Dispatched(grpc.StatusCode.INTERNAL, "Exception deserializing request!")
        count = 0
        try:
            if handler.unary_unary:
                handler.unary_unary(request, context)
                count = 1
            elif handler.stream_unary:
                handler.stream_unary(iter((request,)), context)
                count = 1
            else:
                behavior = handler.unary_stream or handler.stream_stream
                assert behavior is not None
                arg = request if handler.unary_stream else iter((request,))
                stream: Iterator[Any] = behavior(arg, context)  # type: ignore[arg-type]
                for _ in stream:
                    count += 1
                    if count >= max_responses:
                        # The client stops reading: grpcio cancels the call and closes the
                        # generator. What the service does on that close is not this input's.
                        context.active = False
                        with contextlib.suppress(Exception):
                            getattr(stream, "close", lambda: None)()
                        return Dispatched(grpc.StatusCode.CANCELLED, "", count, self._reached)
        except Aborted:
            pass
        except Exception as exc:
            return self._done(context, count, exc)
        return self._done(context, count, None)

    def _done(self, context: Context, count: int, exc: BaseException | None) -> Dispatched:
        if exc is not None and not context.aborted:
            if isinstance(exc, self.target.validation_errors):
                return Dispatched(
                    grpc.StatusCode.INVALID_ARGUMENT, type(exc).__name__, count, self._reached
                )
            return Dispatched(
                grpc.StatusCode.UNKNOWN,
                f"Exception calling application: {exc!r}"[:300],
                count,
                self._reached,
                exc,
            )
        code = context.status or grpc.StatusCode.OK
        return Dispatched(code, context.message, count, self._reached)


def _marked(
    handler: grpc.RpcMethodHandler[Any, Any], mark: Callable[[], None]
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behaviour wrapped to call ``mark`` when it starts."""
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    for kind, make in (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ):
        behavior = getattr(handler, kind)
        if behavior is not None:

            def wrapped(request: Any, context: Any, _b: Any = behavior) -> Any:
                mark()
                return _b(request, context)

            return make(wrapped, **kw)
    raise ValueError("an RPC method handler without a behaviour")


def _bad(problem: str) -> ConfigError:
    return ConfigError("config", "fuzz.inprocess_entrypoint", problem)


def load(spec: str, options: Mapping[str, Any], base: Path | None = None) -> InProcessTarget:
    """Import ``module:function`` and call it with ``options``.

    Raises:
        ConfigError: the spec is malformed, the import fails, or the function does not
            return an :class:`InProcessTarget`.
    """
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise _bad(f"expected 'module:function', got {spec!r}")
    for extra in (str(base) if base else None, str(Path.cwd())):
        if extra and extra not in sys.path:
            sys.path.insert(0, extra)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise _bad(f"cannot import {module_name}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise _bad(f"{module_name} has no function {func_name}")
    target = func(**options)
    if not isinstance(target, InProcessTarget):
        raise _bad(
            f"{spec} returned {type(target).__name__}, not harness.inprocess.InProcessTarget"
        )
    return target
