"""A run: one target, what the run is configured with, and the seam every call goes through.

:meth:`Run.open` turns a target spec and the user's config into something checks can use.
A run is three parts, each in its own module:

* :attr:`Run.target` (:mod:`harness.lifecycle`): the target, what its port speaks, and
  what the run started for it (a spawned target, relays, helper processes);
* :attr:`Run.caller` (:mod:`harness.calling`): channels, every call recorded in the
  journal, the per-run memo, and whether the target still answers;
* :attr:`Run.subject` (:mod:`harness.subject`): the config, the principals, the issuer's
  keys and the service's schema.

Checks see the run through the narrow methods below, each a thin pass to one of the parts.
"""

from __future__ import annotations

import atexit
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import TypeVar

import grpc

from harness.calling import CALL_CONCURRENCY, UNRESPONSIVE_AFTER, Caller
from harness.channels import CallResult, Endpoint
from harness.config import Config
from harness.descriptors import MethodCatalogue
from harness.h2client import H2Client
from harness.lifecycle import DEFAULT_CALL_TIMEOUT_S, RunOptions, Target
from harness.principals import Principal
from harness.spawn import Spawned
from harness.subject import HEALTH_CHECK, Subject
from harness.target import TargetSpec
from harness.tokens import IssuerKeys
from harness.transport import Detected

__all__ = [
    "CALL_CONCURRENCY",
    "DEFAULT_CALL_TIMEOUT_S",
    "HEALTH_CHECK",
    "UNRESPONSIVE_AFTER",
    "Run",
    "RunOptions",
]

T = TypeVar("T")
U = TypeVar("U")

#: Runs :meth:`Run.open_early` started, until :meth:`Run.open` takes them.
_EARLY: dict[tuple[str, int, RunOptions], Future[Run]] = {}
_EARLY_LOCK = threading.Lock()


class Run:
    """Everything a check needs to probe one target."""

    def __init__(
        self,
        spec: TargetSpec,
        config: Config,
        endpoint: Endpoint,
        detected: Detected,
        options: RunOptions,
        spawned: Spawned | None = None,
    ) -> None:
        self.target = Target(spec, endpoint, detected, options, spawned)
        self.caller = Caller(self.target, config)
        self.subject = Subject(config, self.caller.channel, options.connect_timeout_s)
        self.caller.unary_response = self._unary_response
        self.opened = time.monotonic()

    def _unary_response(self, path: str) -> bool:
        """Whether the descriptors, once loaded, say the method answers with one message."""
        catalogue = self.subject.loaded_catalogue()
        if catalogue is None:
            return False
        try:
            return not catalogue.method(path).server_streaming
        except KeyError:
            return False

    @classmethod
    def open(cls, spec: TargetSpec, user_config: Config, options: RunOptions) -> Run:
        """Spawn (if asked), detect the transport, and prepare the run.

        A run :meth:`open_early` started with the same arguments is taken instead (its
        error, if it failed, is raised here).

        Raises:
            TargetError: the target cannot be started or reached.
            ConfigError: the spawned target's generated config does not load.
        """
        with _EARLY_LOCK:
            early = _EARLY.pop((spec.raw, id(user_config), options), None)
        if early is not None:
            return early.result()
        return cls._opened(spec, user_config, options)

    @classmethod
    def _opened(cls, spec: TargetSpec, user_config: Config, options: RunOptions) -> Run:
        target, config = Target.open(spec, user_config, options)
        return cls(target.spec, config, target.endpoint, target.detected, options, target.spawned)

    @classmethod
    def open_early(cls, spec: TargetSpec, user_config: Config, options: RunOptions) -> None:
        """Start :meth:`open` in a background thread, for the next ``open`` to take.

        The next :meth:`open` with the same arguments takes the run. Spawning a target
        takes about half a second, which the test collection and imports can cover. A run
        nobody takes is closed by :func:`discard_early` (and at exit).
        """
        key = (spec.raw, id(user_config), options)
        future: Future[Run] = Future()
        with _EARLY_LOCK:
            if key in _EARLY:
                return
            _EARLY[key] = future

        def work() -> None:
            try:
                future.set_result(cls._opened(spec, user_config, options))
            except BaseException as exc:  # handed to whoever takes the run
                future.set_exception(exc)

        threading.Thread(target=work, name="hipaa-open-early", daemon=True).start()

    def close(self) -> None:
        """Close the channels and relays, kill helper processes, and stop a spawned target."""
        self.target.close()

    # -- the target -----------------------------------------------------------------------

    @property
    def spec(self) -> TargetSpec:
        """The target as given (``spawn:`` specs resolved to their address)."""
        return self.target.spec

    @property
    def endpoint(self) -> Endpoint:
        """What channels are opened from."""
        return self.target.endpoint

    @property
    def detected(self) -> Detected:
        """What the port speaks, in words too."""
        return self.target.detected

    @property
    def options(self) -> RunOptions:
        """Run-wide settings from the command line."""
        return self.target.options

    @property
    def spawned(self) -> Spawned | None:
        """The bundled target this run started, if any."""
        return self.target.spawned

    def new_channel(
        self, endpoint: Endpoint | None = None, *, with_client_cert: bool = True
    ) -> grpc.Channel:
        """A new channel to the target; the caller closes it."""
        return self.target.new_channel(endpoint, with_client_cert=with_client_cert)

    def open_h2(self) -> H2Client:
        """A raw HTTP/2 connection to the target, preface sent (raises OSError)."""
        return self.target.open_h2()

    def start_child(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        """Start a helper process (a fuzzer); :meth:`close` kills it if it still runs."""
        return self.target.start_child(command, env)

    # -- calls ----------------------------------------------------------------------------

    @property
    def journal(self) -> list[CallResult]:
        """Every call made so far, in order (read it with :meth:`calls` from threads)."""
        return self.caller.journal

    @property
    def unresponsive(self) -> str:
        """Why the run stopped sending, once the target stopped answering; else ``""``."""
        return self.caller.unresponsive

    @unresponsive.setter
    def unresponsive(self, reason: str) -> None:
        self.caller.unresponsive = reason

    def channel(self) -> grpc.Channel:
        """The shared channel (with the client certificate, if configured)."""
        return self.caller.channel()

    def channel_for(self, principal: Principal) -> grpc.Channel:
        """A channel presenting ``principal``'s client certificate (one per principal)."""
        return self.caller.channel_for(principal)

    def channel_problem(self) -> str:
        """Why the harness's gRPC client cannot use the target, or ``""`` (checked once)."""
        return self.caller.channel_problem(self.liveness)

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
        """One call to the target, recorded in the journal (see :meth:`Caller.call`)."""
        return self.caller.call(
            method,
            requests,
            principal=principal,
            channel=channel,
            extra_metadata=extra_metadata,
            timeout=timeout,
            max_responses=max_responses,
            retry_exhausted=retry_exhausted,
        )

    def still_there(self) -> bool:
        """Whether the target still accepts TCP connections; if not, sending stops."""
        return self.caller.still_there()

    def calls(self) -> list[CallResult]:
        """Every call made so far (a copy of the journal)."""
        return self.caller.calls()

    def map(self, fn: Callable[[T], U], items: Iterable[T]) -> list[U]:
        """``fn`` over ``items``, at most :data:`CALL_CONCURRENCY` at a time, in order."""
        return self.caller.map(fn, items)

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` once per run: controls that judge the same calls share them."""
        return self.caller.memo(key, compute)

    @property
    def request_id_key(self) -> str:
        """Metadata key that carries the harness's request ID."""
        return self.caller.request_id_key

    # -- what the run is configured with ------------------------------------------------

    @property
    def config(self) -> Config:
        """The config in force (a spawned target's generated one under the user's)."""
        return self.subject.config

    @property
    def principals(self) -> dict[str, Principal]:
        """The configured principals, by name."""
        return self.subject.principals

    @property
    def liveness(self) -> str:
        """The method that says whether the target is up (``schema.liveness_method``)."""
        return self.subject.liveness

    def principal(self, name: str) -> Principal | None:
        """The configured principal ``name``, or ``None``."""
        return self.subject.principal(name)

    def issuer_keys(self) -> IssuerKeys:
        """The token issuer's keys as far as the config gives them."""
        return self.subject.issuer_keys()

    def catalogue(self) -> MethodCatalogue | None:
        """The target's methods from descriptors, or ``None`` (see :meth:`catalogue_problem`)."""
        return self.subject.catalogue()

    def catalogue_problem(self) -> str:
        """Why :meth:`catalogue` is ``None``."""
        return self.subject.catalogue_problem()


@atexit.register
def discard_early(wait_s: float = 60.0) -> None:
    """Close the runs :meth:`Run.open_early` started that nobody took, once they opened.

    A session that selected no control, or ``--collect-only``, leaves one behind.
    """
    with _EARLY_LOCK:
        left = list(_EARLY.values())
        _EARLY.clear()
    for future in left:
        try:
            future.result(timeout=wait_s).close()
        except BaseException:  # it failed to open, or is still opening: nothing to close
            continue
