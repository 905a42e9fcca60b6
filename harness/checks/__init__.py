"""The check registry: one function per control, registered with :func:`check`.

A check takes a :class:`~harness.run.Run` and returns an :class:`~harness.outcome.Outcome`.
It never decides how it is reported. Its docstring is the procedure in words; the registry
self-test holds every check to having one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from harness.catalogue import CATALOGUE, Control
from harness.errors import HarnessError
from harness.outcome import Outcome, Status
from harness.run import Run

CheckFn = Callable[[Run], Outcome]

#: Modules that define checks; importing them fills the registry.
CHECK_MODULES = (
    "harness.checks.surface",
    "harness.checks.transport",
    "harness.checks.certs",
    "harness.checks.mtls",
    "harness.checks.access",
    "harness.checks.authz",
    "harness.checks.errors",
    "harness.checks.audit",
    "harness.checks.minimize",
    "harness.checks.fuzz",
    "harness.checks.framing",
)


@dataclass(frozen=True)
class Check:
    """A registered check."""

    control: Control
    fn: CheckFn
    needs_channel: bool = True

    @property
    def doc(self) -> str:
        """The check's docstring: its procedure in words."""
        return (self.fn.__doc__ or "").strip()


_REGISTRY: dict[str, Check] = {}


def check(control_id: str, *, needs_channel: bool = True) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as the check for ``control_id``.

    ``needs_channel=False`` marks checks that probe below gRPC (TLS, certificates): they
    still run when the harness's gRPC client cannot connect.

    Raises:
        KeyError: the ID is not in the catalogue.
        ValueError: the control already has a check, or the function has no docstring.
    """
    control = CATALOGUE[control_id]

    def register(fn: CheckFn) -> CheckFn:
        existing = _REGISTRY.get(control_id)
        # A module imported again (pytester restores sys.modules) re-registers itself.
        if existing is not None and _origin(existing.fn) != _origin(fn):
            raise ValueError(f"{control_id} already has a check: {existing.fn.__qualname__}")
        if not (fn.__doc__ or "").strip():
            raise ValueError(f"the check for {control_id} needs a docstring")
        _REGISTRY[control_id] = Check(control, fn, needs_channel)
        return fn

    return register


def _origin(fn: CheckFn) -> tuple[str, str]:
    return fn.__module__, fn.__qualname__


def registered() -> Mapping[str, Check]:
    """Every registered check, by control ID."""
    for module in CHECK_MODULES:
        importlib.import_module(module)
    return MappingProxyType(_REGISTRY)


def run_check(control_id: str, run: Run) -> Outcome:
    """Run the check for ``control_id``; a harness failure becomes ERROR, never PASS or FAIL."""
    entry = registered()[control_id]
    if run.unresponsive:
        return Outcome.inconclusive(entry.control, run.unresponsive)
    try:
        if entry.needs_channel and (problem := run.channel_problem()):
            return Outcome.inconclusive(entry.control, problem)
        outcome = entry.fn(run)
    except HarnessError as exc:
        return Outcome.error(entry.control, str(exc))
    except Exception as exc:  # the one broad boundary: a bug in a check is an ERROR
        reason = f"harness error in {control_id}: {type(exc).__name__}: {exc}"
        return Outcome.error(entry.control, reason)
    if run.unresponsive and outcome.status in (Status.PASS, Status.FAIL, Status.WARN):
        # Probes after the target hung were never sent: the verdict cannot stand.
        return Outcome.inconclusive(entry.control, run.unresponsive, outcome.observations)
    return outcome
