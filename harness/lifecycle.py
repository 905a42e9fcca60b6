"""The target and its lifecycle: where it is, what its port speaks, and what the run started.

:meth:`Target.open` spawns a bundled target if asked (its generated config goes under the
user's), finds out what the port speaks (TLS, h2c, a self-signed or misnamed certificate),
and builds the :class:`~harness.channels.Endpoint` every channel is opened from. The target
owns what must be torn down at the end: relays, helper processes, extra channels, and the
spawned target itself.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from harness.channels import Endpoint
from harness.config import Config
from harness.errors import TargetError
from harness.h2client import H2Client
from harness.relay import Relay
from harness.spawn import Spawned, spawn_configured
from harness.target import TargetSpec
from harness.transport import (
    Detected,
    Transport,
    client_context,
    connect,
    detect_transport,
    verified_handshake_problem,
)

DEFAULT_CALL_TIMEOUT_S = 10.0
#: How long closing a run waits for background work (warm-ups) to finish.
BACKGROUND_GRACE_S = 15.0


@dataclass(frozen=True)
class RunOptions:
    """Run-wide settings from the command line."""

    seed: int = 0
    profile: str = "hipaa-strict"
    connect_timeout_s: float = 3.0
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S


class Target:
    """One target: its address, what it speaks, and what the run started for it."""

    def __init__(
        self,
        spec: TargetSpec,
        endpoint: Endpoint,
        detected: Detected,
        options: RunOptions,
        spawned: Spawned | None = None,
    ) -> None:
        self.spec = spec
        self.endpoint = endpoint
        self.detected = detected
        self.options = options
        self.spawned = spawned
        self._lock = threading.Lock()
        self._relays: list[Relay] = []
        self._channels: list[grpc.Channel] = []
        self._children: list[subprocess.Popen[str]] = []
        self._background: list[threading.Thread] = []

    @property
    def host(self) -> str:
        """The target's host (a spec that reached a :class:`Target` always has one)."""
        assert self.spec.host is not None
        return self.spec.host

    @property
    def port(self) -> int:
        """The target's port."""
        assert self.spec.port is not None
        return self.spec.port

    @classmethod
    def open(
        cls, spec: TargetSpec, user_config: Config, options: RunOptions
    ) -> tuple[Target, Config]:
        """Spawn (if asked) and detect the transport; the target and the config in force.

        Raises:
            TargetError: the target cannot be started or reached.
            ConfigError: the spawned target's generated config does not load.
        """
        spawned = None
        config = user_config
        if spec.is_spawn:
            spawned, spec, config = spawn_configured(spec, user_config)
        try:
            endpoint, detected = _endpoint(spec, config, options)
        except BaseException:
            if spawned is not None:
                spawned.stop()
            raise
        return cls(spec, endpoint, detected, options, spawned), config

    def new_channel(
        self, endpoint: Endpoint | None = None, *, with_client_cert: bool = True
    ) -> grpc.Channel:
        """A new channel to the target; the caller closes it (or hands it to :meth:`keep`).

        It goes through a relay pinned to the certificate when the endpoint needs one.
        """
        endpoint = endpoint or self.endpoint
        if endpoint.pin_der is not None:
            with_cert = with_client_cert and endpoint.client_cert_pem is not None
            context = client_context(
                ca_pem=None,
                verify=False,
                client_cert_pem=endpoint.client_cert_pem if with_cert else None,
                client_key_pem=endpoint.client_key_pem if with_cert else None,
            )
            relay = Relay(
                self.host,
                self.port,
                context,
                endpoint.pin_der,
                endpoint.server_name or self.host,
                self.options.connect_timeout_s,
            )
            with self._lock:
                self._relays.append(relay)
            endpoint = replace(
                endpoint, address=relay.address, transport=Transport.H2C, pin_der=None
            )
        return endpoint.open_channel(with_client_cert=with_client_cert)

    def keep(self, channel: grpc.Channel) -> grpc.Channel:
        """Close ``channel`` when the run closes."""
        with self._lock:
            self._channels.append(channel)
        return channel

    def open_h2(self) -> H2Client:
        """A raw HTTP/2 connection to the target (the h2 library), preface sent.

        Raises:
            OSError: TCP or TLS failed.
        """
        return H2Client.open(self.endpoint, self.host, self.port, self.options.connect_timeout_s)

    def gone(self) -> str:
        """Why the target no longer accepts TCP connections, or ``""`` while it does."""
        try:
            connect(self.host, self.port, self.options.connect_timeout_s).close()
        except TargetError as exc:
            return str(exc)
        return ""

    def background(self, thread: threading.Thread) -> None:
        """Wait for ``thread`` (a warm-up reading the target's files) before the target stops."""
        with self._lock:
            self._background.append(thread)

    def start_child(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        """Start a helper process (a fuzzer); :meth:`close` kills it if it still runs."""
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        with self._lock:
            self._children.append(child)
        return child

    def close(self) -> None:
        """Kill helper processes, close channels and relays, and stop a spawned target.

        Background work still running (an sslyze scan reading the client certificate from a
        spawned target's directory) is waited for first, :data:`BACKGROUND_GRACE_S` at most.
        """
        with self._lock:
            background, self._background = self._background, []
        end = time.monotonic() + BACKGROUND_GRACE_S
        for thread in background:
            thread.join(max(0.0, end - time.monotonic()))
        with self._lock:
            children, self._children = self._children, []
            channels, self._channels = self._channels, []
            relays, self._relays = self._relays, []
        for child in children:
            if child.poll() is None:
                child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
        for channel in channels:
            channel.close()
        for relay in relays:
            relay.stop()
        if self.spawned is not None:
            self.spawned.stop()


def _endpoint(spec: TargetSpec, config: Config, options: RunOptions) -> tuple[Endpoint, Detected]:
    """What the port speaks, and the endpoint to open channels from."""
    assert spec.host is not None
    assert spec.port is not None
    cert, key = config.path("mtls.client_cert"), config.path("mtls.client_key")
    detected = detect_transport(
        spec.host, spec.port, client_cert=cert, client_key=key, timeout=options.connect_timeout_s
    )
    ca_pem = read_file(config.path("tls.ca_bundle"))
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
        client_cert_pem=read_file(cert),
        client_key_pem=read_file(key),
    )
    if detected.transport is not Transport.TLS or detected.leaf_der is None:
        return endpoint, detected
    problem = verified_handshake_problem(
        spec.host,
        spec.port,
        ca_pem=ca_pem,
        server_name=server_name,
        client_cert_pem=endpoint.client_cert_pem,
        client_key_pem=endpoint.client_key_pem,
        timeout=options.connect_timeout_s,
    )
    if problem is None:
        return endpoint, detected
    note = (
        f"{detected.note}; {problem}: the transport controls judge that, and the other "
        "controls probe through a local relay pinned to the presented certificate"
    )
    return replace(endpoint, pin_der=detected.leaf_der), replace(detected, note=note)


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


def read_file(path: Path | None) -> bytes | None:
    """The file's bytes, or ``None`` for no path.

    Raises:
        TargetError: the file cannot be read.
    """
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TargetError(f"cannot read {path}: {exc.strerror}") from None
