"""A run: one target, its config, the channel to it, and every call made.

:meth:`Run.open` turns a target spec and the user's config into something checks can use:
it spawns a bundled target if asked (whose generated config goes under the user's), finds
out what the port speaks, and prepares credentials. Checks then call :meth:`Run.call`;
every result is kept in :attr:`Run.journal` for the controls that judge all calls (ERR-*).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc

from harness.channels import CLIENT_MAX_RECEIVE, CallResult, Endpoint, invoke
from harness.config import Config, load_config
from harness.descriptors import (
    MethodCatalogue,
    compile_protos,
    fetch_via_reflection,
    load_descriptor_set,
)
from harness.errors import DescriptorError, HarnessError, TargetError
from harness.h2client import H2Client, grpc_problem
from harness.principals import Principal, principals_from
from harness.relay import Relay
from harness.spawn import Spawned, spawn
from harness.target import TargetSpec
from harness.tokens import IssuerKeys, load_issuer_keys, renewer
from harness.transport import (
    Detected,
    Transport,
    client_context,
    connect,
    detect_transport,
    verified_handshake_problem,
)

DEFAULT_CALL_TIMEOUT_S = 10.0
#: Calls in flight at once when a control fans out (one channel, HTTP/2 streams).
CALL_CONCURRENCY = 16
#: Consecutive calls that hit their deadline before the target counts as unresponsive.
UNRESPONSIVE_AFTER = 3
#: The liveness method when the config names none.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class RunOptions:
    """Run-wide settings from the command line."""

    seed: int = 0
    profile: str = "hipaa-strict"
    connect_timeout_s: float = 3.0
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S


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
        self.spec = spec
        self.config = config
        self.endpoint = endpoint
        self.detected = detected
        self.options = options
        self.opened = time.monotonic()
        self.spawned = spawned
        self.journal: list[CallResult] = []
        source = config.sources[-1] if config.sources else "config"
        self.principals: dict[str, Principal] = principals_from(
            config.table("auth.principals"),
            source,
            refresh=True,
            renew=renewer(lambda: self.issuer_keys()),
        )
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._catalogue: MethodCatalogue | None = None
        self._catalogue_problem: str | None = None
        self._memo: dict[str, Any] = {}
        self._deadline_streak = 0
        self.unresponsive = ""  # why the run stopped sending, once the target stopped answering
        self._extra_channels: list[grpc.Channel] = []
        self._memo_locks: dict[str, threading.Lock] = {}
        self._relays: list[Relay] = []
        self._children: list[subprocess.Popen[str]] = []
        self._backoffs = _backoffs(config)

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def open(cls, spec: TargetSpec, user_config: Config, options: RunOptions) -> Run:
        """Spawn (if asked), detect the transport, and prepare the run.

        Raises:
            TargetError: the target cannot be started or reached.
            ConfigError: the spawned target's generated config does not load.
        """
        spawned = None
        config = user_config
        if spec.is_spawn:
            spawned = spawn(spec)
            spec = spec.at(spawned.host, spawned.port)
            try:
                config = load_config(spawned.config_path).overlay(user_config)
            except HarnessError:
                spawned.stop()
                raise
        try:
            assert spec.host is not None
            assert spec.port is not None
            cert, key = config.path("mtls.client_cert"), config.path("mtls.client_key")
            detected = detect_transport(
                spec.host,
                spec.port,
                client_cert=cert,
                client_key=key,
                timeout=options.connect_timeout_s,
            )
            ca_pem = _read(config.path("tls.ca_bundle"))
            server_name = config.str_("tls.server_name")
            if ca_pem is None and detected.leaf_der is not None:
                pinned = _self_signed_anchor(detected.leaf_der, spec.host, server_name)
                if pinned is not None:
                    ca_pem, server_name = pinned
                    detected = Detected(
                        detected.transport,
                        f"{detected.note}; no tls.ca_bundle: trusting the presented "
                        "self-signed certificate for probing (CERT-* judge it)",
                        detected.leaf_der,
                    )
            endpoint = Endpoint(
                address=spec.address,
                transport=detected.transport,
                server_name=server_name,
                ca_pem=ca_pem,
                client_cert_pem=_read(cert),
                client_key_pem=_read(key),
            )
            if detected.transport is Transport.TLS and detected.leaf_der is not None:
                problem = verified_handshake_problem(
                    spec.host,
                    spec.port,
                    ca_pem=ca_pem,
                    server_name=server_name,
                    client_cert_pem=endpoint.client_cert_pem,
                    client_key_pem=endpoint.client_key_pem,
                    timeout=options.connect_timeout_s,
                )
                if problem is not None:
                    endpoint = replace(endpoint, pin_der=detected.leaf_der)
                    detected = replace(
                        detected,
                        note=f"{detected.note}; {problem}: the transport controls judge "
                        "that, and the other controls probe through a local relay pinned "
                        "to the presented certificate",
                    )
        except BaseException:
            if spawned is not None:
                spawned.stop()
            raise
        return cls(spec, config, endpoint, detected, options, spawned)

    def start_child(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        """Start a helper process (a fuzzer); :meth:`close` kills it if it still runs."""
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        with self._lock:
            self._children.append(child)
        return child

    def close(self) -> None:
        """Close the channels and relays, kill helper processes, and stop a spawned target."""
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            if child.poll() is None:
                child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
            for extra in self._extra_channels:
                extra.close()
            self._extra_channels.clear()
            for relay in self._relays:
                relay.stop()
            self._relays.clear()
        if self.spawned is not None:
            self.spawned.stop()

    # -- calls --------------------------------------------------------------------------

    def channel(self) -> grpc.Channel:
        """The shared channel (with the client certificate, if configured)."""
        with self._lock:
            channel = self._channel
        if channel is None:
            channel = self.new_channel()
            with self._lock:
                if self._channel is None:
                    self._channel = channel
                else:
                    channel.close()
                channel = self._channel
        return channel

    def new_channel(
        self, endpoint: Endpoint | None = None, *, with_client_cert: bool = True
    ) -> grpc.Channel:
        """A new channel to the target; the caller closes it.

        It goes through a relay pinned to the certificate when the endpoint needs one.
        """
        endpoint = endpoint or self.endpoint
        if endpoint.pin_der is not None:
            assert self.spec.host is not None
            assert self.spec.port is not None
            with_cert = with_client_cert and endpoint.client_cert_pem is not None
            context = client_context(
                ca_pem=None,
                verify=False,
                client_cert_pem=endpoint.client_cert_pem if with_cert else None,
                client_key_pem=endpoint.client_key_pem if with_cert else None,
            )
            relay = Relay(
                self.spec.host,
                self.spec.port,
                context,
                endpoint.pin_der,
                endpoint.server_name or self.spec.host,
                self.options.connect_timeout_s,
            )
            with self._lock:
                self._relays.append(relay)
            endpoint = replace(
                endpoint, address=relay.address, transport=Transport.H2C, pin_der=None
            )
        return endpoint.open_channel(with_client_cert=with_client_cert)

    def channel_problem(self) -> str:
        """Why the harness's gRPC client cannot open a channel to the target, or ``""``.

        Checked once per run; the controls that need application calls are INCONCLUSIVE
        with this reason instead of judging connection failures as the service's answers.
        A channel that opens is not enough: one raw HTTP/2 request to the liveness method
        must get a gRPC answer (:func:`harness.h2client.grpc_problem`), or the server is
        not one whose answers mean anything.
        """

        def probe() -> str:
            try:
                grpc.channel_ready_future(self.channel()).result(
                    timeout=self.options.connect_timeout_s
                )
            except grpc.FutureTimeoutError:
                return (
                    f"the harness's gRPC client could not open a channel to {self.spec.address} "
                    f"within {self.options.connect_timeout_s:g} s ({self.detected.note})"
                )
            liveness = self.liveness
            timeout = min(5.0, self.options.call_timeout_s)
            try:
                with self.open_h2() as client:
                    problem = grpc_problem(client, liveness, timeout, CLIENT_MAX_RECEIVE)
            except OSError:
                return ""  # the gRPC channel opened: leave connection trouble to the calls
            return (
                f"{self.spec.address} is not usable as a gRPC server: {problem}" if problem else ""
            )

        return self.memo("channel-problem", probe)

    def open_h2(self) -> H2Client:
        """A raw HTTP/2 connection to the target (the h2 library), preface sent.

        Raises:
            OSError: TCP or TLS failed.
        """
        assert self.spec.host is not None
        assert self.spec.port is not None
        return H2Client.open(
            self.endpoint, self.spec.host, self.spec.port, self.options.connect_timeout_s
        )

    @property
    def liveness(self) -> str:
        """The method that says whether the target is up (``schema.liveness_method``)."""
        return self.config.str_("schema.liveness_method") or HEALTH_CHECK

    @property
    def request_id_key(self) -> str:
        """Metadata key that carries the harness's request ID."""
        return str(self.config.get("audit.request_id_key"))

    def principal(self, name: str) -> Principal | None:
        """The configured principal ``name``, or ``None``."""
        return self.principals.get(name)

    def channel_for(self, principal: Principal) -> grpc.Channel:
        """A channel presenting ``principal``'s client certificate (one per principal)."""
        if not principal.has_cert:
            return self.channel()

        def open_() -> grpc.Channel:
            endpoint = replace(
                self.endpoint,
                client_cert_pem=_read(principal.client_cert),
                client_key_pem=_read(principal.client_key),
            )
            channel = self.new_channel(endpoint)
            with self._lock:
                self._extra_channels.append(channel)
            return channel

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

        A RESOURCE_EXHAUSTED answer (a rate limit) is retried with backoff (1.75 s in all,
        see :func:`_backoffs`), so that throttling is never mistaken for a verdict;
        probes for which RESOURCE_EXHAUSTED *is* the answer pass ``retry_exhausted=False``.

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
        if channel is None:
            channel = self.channel_for(principal) if principal is not None else self.channel()
        replayable = not isinstance(requests, Iterator)
        for backoff in (*self._backoffs, None):
            result = invoke(
                channel,
                method,
                list(requests) if replayable else requests,
                metadata=md,
                request_id_key=self.request_id_key,
                principal=principal.name if principal else None,
                timeout=timeout or self.options.call_timeout_s,
                max_responses=max_responses,
            )
            throttled = result.code == grpc.StatusCode.RESOURCE_EXHAUSTED and not result.responses
            if backoff is None or not (throttled and retry_exhausted and replayable):
                break
            time.sleep(backoff)
        with self._lock:
            self.journal.append(result)
            hung = result.code == grpc.StatusCode.DEADLINE_EXCEEDED and not result.responses
            self._deadline_streak = self._deadline_streak + 1 if hung else 0
            if self._deadline_streak >= UNRESPONSIVE_AFTER and not self.unresponsive:
                self.unresponsive = (
                    f"the target stopped answering: {self._deadline_streak} calls in a row "
                    "hit their deadline; nothing more was sent"
                )
        if result.code == grpc.StatusCode.UNAVAILABLE and not result.responses:
            self.still_there()  # UNAVAILABLE is also an answer (a refused client certificate)
        return result

    def still_there(self) -> bool:
        """Whether the target still accepts TCP connections; if not, the run stops sending.

        Every control after that is INCONCLUSIVE with this one reason, and a control
        that was running when it happened cannot keep its verdict (see ``run_check``).
        """
        if self.unresponsive:
            return False
        assert self.spec.host is not None
        assert self.spec.port is not None
        try:
            connect(self.spec.host, self.spec.port, self.options.connect_timeout_s).close()
        except TargetError as exc:
            with self._lock:
                if not self.unresponsive:
                    self.unresponsive = (
                        f"the target went away during the run ({exc}); nothing more was sent"
                    )
            return False
        return True

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

    def issuer_keys(self) -> IssuerKeys:
        """The token issuer's keys as far as the config gives them (spawned targets: all)."""
        source = self.config.sources[-1] if self.config.sources else "config"
        return self.memo(
            "issuer-keys",
            lambda: load_issuer_keys(
                self.config.path("auth.jwks_file"),
                self.config.path("auth.issuer_private_key"),
                source,
            ),
        )

    # -- descriptors --------------------------------------------------------------------

    def catalogue(self) -> MethodCatalogue | None:
        """The target's methods from descriptors, or ``None`` (see :meth:`catalogue_problem`)."""
        with self._lock:
            if self._catalogue is not None or self._catalogue_problem is not None:
                return self._catalogue
        catalogue, problem = self._load_catalogue()
        with self._lock:
            self._catalogue, self._catalogue_problem = catalogue, problem
        return catalogue

    def catalogue_problem(self) -> str:
        """Why :meth:`catalogue` is ``None``."""
        self.catalogue()
        return self._catalogue_problem or ""

    def _load_catalogue(self) -> tuple[MethodCatalogue | None, str | None]:
        try:
            path = self.config.path("schema.descriptor_set")
            if path is not None:
                return load_descriptor_set(path), None
            files = self.config.get("schema.proto_files")
            if files:
                return compile_protos(files, self.config.get("schema.proto_paths", [])), None
            try:
                return fetch_via_reflection(
                    self.channel(), timeout=self.options.connect_timeout_s
                ), None
            except DescriptorError as exc:
                return None, (
                    f"no schema.descriptor_set or schema.proto_files in the config, and {exc}"
                )
        except DescriptorError as exc:
            return None, str(exc)


def _backoffs(config: Config) -> tuple[float, ...]:
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


def _self_signed_anchor(
    leaf_der: bytes, host: str, server_name: str | None
) -> tuple[bytes, str | None] | None:
    """Trust a self-signed leaf for probing when no CA bundle is configured.

    Returns the leaf as PEM and the name to verify it against (the configured name, the
    host if the certificate names it, else its first DNS name), or ``None`` when the leaf
    is not self-signed (then the system roots apply and a failure is reported as such).
    """
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        cert = x509.load_der_x509_certificate(leaf_der)
        if cert.issuer != cert.subject:
            return None
        cert.verify_directly_issued_by(cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return None
    names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    if server_name is None and host not in names + ips and names:
        server_name = names[0]
    return cert.public_bytes(Encoding.PEM), server_name


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TargetError(f"cannot read {path}: {exc.strerror}") from None
