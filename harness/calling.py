"""The calling seam: channels to the target, every call recorded, and the per-run memo.

A check never opens channels or times calls itself: :meth:`Caller.call` sends, retries
throttling, records the result in the journal (the controls that judge all calls read it),
and notices a target that stopped answering. :meth:`Caller.memo` shares work several
controls judge, so no verdict depends on test order or ``-k``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import grpc

from harness.channels import CLIENT_MAX_RECEIVE, CallResult, invoke
from harness.config import Config
from harness.h2client import grpc_problem
from harness.lifecycle import Target, read_file
from harness.principals import Principal
from harness.replay import DEFAULT, OTHER, PRINCIPAL, Sent, SentLog

#: Calls in flight at once when a control fans out (one channel, HTTP/2 streams).
CALL_CONCURRENCY = 16
#: Consecutive calls that hit their deadline before the target counts as unresponsive.
UNRESPONSIVE_AFTER = 3

T = TypeVar("T")
U = TypeVar("U")


class Caller:
    """Channels, calls, the journal of every call, and the memo, for one target."""

    def __init__(self, target: Target, config: Config) -> None:
        self.target = target
        self.journal: list[CallResult] = []
        self.sent = SentLog()  # what each call sent, for the reproducers (never written)
        self.unresponsive = ""  # why the run stopped sending, once the target stopped answering
        self.request_id_key = str(config.get("audit.request_id_key"))
        self._backoffs = backoffs(config)
        self._pacer = Pacer.of(config)
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._memo: dict[str, Any] = {}
        self._memo_locks: dict[str, threading.Lock] = {}
        self._deadline_streak = 0
        #: Whether the method at a path answers with one message (set by the run from its
        #: descriptors; False, the stream path, where they do not say).
        self.unary_response: Callable[[str], bool] = lambda path: False
        self._streamed: set[str] = set()  # described unary, seen sending more than one

    def channel(self) -> grpc.Channel:
        """The shared channel (with the client certificate, if configured)."""
        with self._lock:
            channel = self._channel
        if channel is None:
            channel = self.target.new_channel()
            with self._lock:
                if self._channel is None:
                    self._channel = self.target.keep(channel)
                else:
                    channel.close()
                channel = self._channel
        return channel

    def channel_for(self, principal: Principal) -> grpc.Channel:
        """A channel presenting ``principal``'s client certificate (one per principal)."""
        if not principal.has_cert:
            return self.channel()

        def open_() -> grpc.Channel:
            endpoint = replace(
                self.target.endpoint,
                client_cert_pem=read_file(principal.client_cert),
                client_key_pem=read_file(principal.client_key),
            )
            return self.target.keep(self.target.new_channel(endpoint))

        return self.memo(f"channel:{principal.name}", open_)

    def call(
        self,
        method: str,
        requests: Sequence[bytes] | Iterator[bytes] = (b"",),
        *,
        principal: Principal | None = None,
        channel: grpc.Channel | None = None,
        extra_metadata: Iterable[tuple[str, str | bytes]] = (),
        timeout: float | None = None,
        max_responses: int = 1000,
        retry_exhausted: bool = True,
    ) -> CallResult:
        """One call to the target, recorded in the journal.

        A principal's calls keep to the declared rate (``limits.rate.rps``, see
        :class:`Pacer`), and a RESOURCE_EXHAUSTED answer (a rate limit) is retried with
        backoff (1.75 s in all, see :func:`backoffs`), so that throttling is never mistaken
        for a verdict; probes for which RESOURCE_EXHAUSTED *is* the answer pass
        ``retry_exhausted=False`` (neither paced nor retried).

        Args:
            method: Full method path.
            requests: Serialized request messages.
            principal: Whose bearer token to send; ``None`` sends no credentials.
            channel: Another channel (for example one without a client certificate).
            extra_metadata: More metadata to send.
            timeout: Deadline; the run's default when ``None``.
            max_responses: Stop after this many response messages.
            retry_exhausted: Retry RESOURCE_EXHAUSTED (False where it is the answer).
        """
        if self.unresponsive:
            return self._not_sent(method, principal)
        md: list[tuple[str, str | bytes]] = list(principal.metadata()) if principal else []
        md.extend(extra_metadata)
        kind = PRINCIPAL if principal is not None and principal.has_cert else DEFAULT
        kind = OTHER if channel is not None else kind
        if channel is None:
            channel = self.channel_for(principal) if principal is not None else self.channel()
        replayable = not isinstance(requests, Iterator)
        if replayable:
            requests = tuple(requests)
        if principal is not None and retry_exhausted:
            self._pacer.wait(principal.name)
        unary = replayable and self._unary(method, max_responses)
        for backoff in (*self._backoffs, None):
            result = invoke(
                channel,
                method,
                list(requests) if replayable else requests,
                metadata=md,
                request_id_key=self.request_id_key,
                principal=principal.name if principal else None,
                timeout=timeout or self.target.options.call_timeout_s,
                max_responses=max_responses,
                unary_response=unary,
            )
            if unary and result.code == grpc.StatusCode.DEADLINE_EXCEEDED and result.responses:
                # A second message holds a unary call until its deadline (grpcio waits for
                # the status): this method streams in practice; its next calls read a stream.
                self._streamed.add(method)
            throttled = result.code == grpc.StatusCode.RESOURCE_EXHAUSTED and not result.responses
            if backoff is None or not (throttled and retry_exhausted and replayable):
                break
            time.sleep(backoff)
        self._record(result)
        kept = requests if isinstance(requests, tuple) else None
        name = principal.name if principal else None
        deadline = timeout or self.target.options.call_timeout_s
        self.sent.add(
            result.request_id, Sent(method, kept, tuple(md), name, kind, deadline, result.status)
        )
        if result.code == grpc.StatusCode.UNAVAILABLE and not result.responses:
            self.still_there()  # UNAVAILABLE is also an answer (a refused client certificate)
        return result

    def _unary(self, method: str, max_responses: int) -> bool:
        """Whether to make ``method``'s call one blocking unary call.

        Yes where the descriptors say one message comes back, unless the caller stops early
        (``max_responses``) or the method sent more than one before.
        """
        if max_responses <= 1 or method in self._streamed:
            return False
        return self.unary_response(method)

    def _record(self, result: CallResult) -> None:
        with self._lock:
            self.journal.append(result)
            hung = result.code == grpc.StatusCode.DEADLINE_EXCEEDED and not result.responses
            self._deadline_streak = self._deadline_streak + 1 if hung else 0
            if self._deadline_streak >= UNRESPONSIVE_AFTER and not self.unresponsive:
                self.unresponsive = (
                    f"the target stopped answering: {self._deadline_streak} calls in a row "
                    "hit their deadline; nothing more was sent"
                )

    def still_there(self) -> bool:
        """Whether the target still accepts TCP connections; if not, sending stops.

        Every control after that is INCONCLUSIVE with this one reason, and a control
        that was running when it happened cannot keep its verdict (see ``run_check``).
        """
        if self.unresponsive:
            return False
        gone = self.target.gone()
        if not gone:
            return True
        with self._lock:
            if not self.unresponsive:
                self.unresponsive = (
                    f"the target went away during the run ({gone}); nothing more was sent"
                )
        return False

    def _not_sent(self, method: str, principal: Principal | None) -> CallResult:
        """What a call returns once the target is unresponsive: nothing was sent."""
        return CallResult(
            method=method,
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
            details=f"not sent: {self.unresponsive}",
            responses=(),
            initial_metadata=(),
            trailing_metadata=(),
            request_id="",
            principal=principal.name if principal else None,
            elapsed_s=0.0,
            started_at=time.time(),
        )

    def channel_problem(self, liveness: str) -> str:
        """Why the harness's gRPC client cannot use the target, or ``""`` (checked once).

        A channel that opens is not enough: one raw HTTP/2 request to the liveness method
        must get a gRPC answer (:func:`harness.h2client.grpc_problem`), or the server is
        not one whose answers mean anything.
        """
        return self.memo("channel-problem", lambda: self._channel_problem(liveness))

    def _channel_problem(self, liveness: str) -> str:
        target = self.target
        try:
            grpc.channel_ready_future(self.channel()).result(
                timeout=target.options.connect_timeout_s
            )
        except grpc.FutureTimeoutError:
            return (
                f"the harness's gRPC client could not open a channel to {target.spec.address} "
                f"within {target.options.connect_timeout_s:g} s ({target.detected.note})"
            )
        timeout = min(5.0, target.options.call_timeout_s)
        try:
            with target.open_h2() as client:
                problem = grpc_problem(client, liveness, timeout, CLIENT_MAX_RECEIVE)
        except OSError:
            return ""  # the gRPC channel opened: leave connection trouble to the calls
        if not problem:
            return ""
        return f"{target.spec.address} is not usable as a gRPC server: {problem}"

    def calls(self) -> list[CallResult]:
        """Every call made so far (a copy of the journal)."""
        with self._lock:
            return list(self.journal)

    def map(self, fn: Callable[[T], U], items: Iterable[T]) -> list[U]:
        """``fn`` over ``items``, at most :data:`CALL_CONCURRENCY` at a time, in order."""
        todo = list(items)
        if len(todo) <= 1:
            return [fn(i) for i in todo]
        with ThreadPoolExecutor(max_workers=min(CALL_CONCURRENCY, len(todo))) as pool:
            return list(pool.map(fn, todo))

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per run: controls that judge the same calls share them."""
        with self._lock:
            lock = self._memo_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                self._memo[key] = compute()
            value: T = self._memo[key]
            return value


def backoffs(config: Config) -> tuple[float, ...]:
    """Waits between retries of a throttled call: 0.25, 0.5 and 1 s by default.

    When the config declares ``limits.rate.rps``, the waits double from two refill
    intervals (2 / rps) instead, within the same 1.75 s in all: a token bucket has a token
    again long before a quarter of a second.
    """
    rps = config.table("limits.rate").get("rps")
    if not isinstance(rps, (int, float)) or rps <= 0:
        return (0.25, 0.5, 1.0)
    waits: list[float] = []
    wait = 2.0 / float(rps)
    while sum(waits) + wait <= 1.75:
        waits.append(wait)
        wait *= 2
    return tuple(waits) or (1.75,)


#: The longest spacing the pacer puts between one identity's calls.
MAX_PACING_S = 1.0


class Pacer:
    """Each identity's calls spaced ``1 / limits.rate.rps`` apart (no spacing without it).

    A limit declared per identity is policy: calls over it come back RESOURCE_EXHAUSTED and
    are retried after a backoff that doubles, which overshoots the refill of a token bucket
    and holds back every call waited for with them. Spacing the calls at the declared rate
    sends no call the policy refuses and waits no longer than it asks.
    """

    def __init__(
        self,
        rps: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # Below one call a second the spacing stops at 1 s: a call over the policy then
        # meets its refusal and the bounded backoff, never a wait of minutes per call.
        self.interval = min(1.0 / rps, MAX_PACING_S) if rps else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, config: Config) -> Pacer:
        """The pacer for the config's ``limits.rate.rps`` (none when it is not declared)."""
        rps = config.table("limits.rate").get("rps")
        if isinstance(rps, bool) or not isinstance(rps, (int, float)) or rps <= 0:
            return cls(None)
        return cls(float(rps))

    def wait(self, who: str) -> float:
        """Wait for ``who``'s next slot and take it; the seconds waited."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            at = max(now, self._next.get(who, now))
            self._next[who] = at + self.interval
        if at > now:
            self._sleep(at - now)
        return at - now
