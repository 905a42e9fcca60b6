"""Parsing ``--hipaa-target``: a bundled target to spawn, or a host and port to test."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import TargetSpecError
from targets.catalog import BUNDLED, SPAWNABLE

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_USAGE = "expected HOST:PORT, [IPV6]:PORT or spawn:NAME[+DEFECT...]"


@dataclass(frozen=True)
class TargetSpec:
    """What ``--hipaa-target`` named.

    Attributes:
        raw: The text as given.
        host: Host to connect to (``None`` for a spawn spec until it has started).
        port: TCP port (``None`` for a spawn spec until it has started).
        bundled: Name of the bundled target to spawn, or ``None``.
        defects: Named defects to switch on in the spawned target.
    """

    raw: str
    host: str | None = None
    port: int | None = None
    bundled: str | None = None
    defects: tuple[str, ...] = ()

    @property
    def is_spawn(self) -> bool:
        """True for ``spawn:`` specs."""
        return self.bundled is not None

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 literals in brackets), as gRPC wants it."""
        if self.host is None or self.port is None:
            raise ValueError(f"{self.raw} has no address until it is spawned")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def at(self, host: str, port: int) -> TargetSpec:
        """The same spec, now bound to the address a spawned target listens on."""
        return TargetSpec(self.raw, host, port, self.bundled, self.defects)


def parse_target(text: str, *, option: str = "--hipaa-target") -> TargetSpec:
    """Parse ``--hipaa-target``.

    Args:
        text: ``HOST:PORT``, ``[IPV6]:PORT`` or ``spawn:NAME[+DEFECT...]``.
        option: How to name the input in messages.

    Returns:
        The parsed spec.

    Raises:
        TargetSpecError: With one line that names what is wrong and what is accepted.
    """
    raw = text.strip()
    if not raw:
        raise TargetSpecError(f"{option} is empty: {_USAGE}")
    if raw.startswith("spawn:"):
        return _parse_spawn(raw, option)
    if raw.startswith("["):
        host, sep, port_text = raw[1:].partition("]:")
        if not sep or not host:
            raise TargetSpecError(f"{option}={raw!r}: {_USAGE}")
        if ":" not in host:
            raise TargetSpecError(f"{option}={raw!r}: brackets are only for IPv6 addresses")
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or not host:
            raise TargetSpecError(f"{option}={raw!r}: no port; {_USAGE}")
        if ":" in host:
            raise TargetSpecError(
                f"{option}={raw!r}: put IPv6 addresses in brackets, e.g. [::1]:50051"
            )
        if not _HOST_RE.match(host):
            raise TargetSpecError(f"{option}={raw!r}: {host!r} is not a host name or address")
    if not port_text.isdigit():
        raise TargetSpecError(f"{option}={raw!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise TargetSpecError(f"{option}={raw!r}: port {port} is out of range 1-65535")
    return TargetSpec(raw, host=host, port=port)


def _parse_spawn(raw: str, option: str) -> TargetSpec:
    name, *defects = raw[len("spawn:") :].split("+")
    known = ", ".join(sorted(BUNDLED))
    if name not in SPAWNABLE:
        raise TargetSpecError(f"{option}={raw!r}: unknown bundled target {name!r} (known: {known})")
    target = SPAWNABLE[name]
    for d in defects:
        names = ", ".join(x.name for x in target.defects)
        if not d:
            raise TargetSpecError(f"{option}={raw!r}: empty defect name after '+'")
        if d not in {x.name for x in target.defects}:
            raise TargetSpecError(
                f"{option}={raw!r}: unknown defect {d!r} for {name} (known: {names})"
            )
    if len(set(defects)) != len(defects):
        raise TargetSpecError(f"{option}={raw!r}: a defect is named twice")
    return TargetSpec(raw, bundled=name, defects=tuple(defects))
