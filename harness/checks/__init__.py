"""The check registry: one function per control, registered with :func:`check`.

A check takes a :class:`~harness.run.Run` and returns an :class:`~harness.outcome.Outcome`.
It never decides how it is reported. Its docstring is the procedure in words; the registry
self-test holds every check to having one.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from harness.catalogue import CATALOGUE, Control
from harness.errors import HarnessError
from harness.outcome import CannotObserve, NotApplicable, Outcome, Probe, Status, settle
from harness.run import Run

CheckFn = Callable[[Run], Outcome]
T = TypeVar("T")

#: Modules that define checks; importing them fills the registry.
CHECK_MODULES = (
    "harness.checks.refl",
    "harness.checks.tls",
    "harness.checks.cert",
    "harness.checks.key",
    "harness.checks.mtls",
    "harness.checks.authn",
    "harness.checks.authz",
    "harness.checks.err",
    "harness.checks.audit",
    "harness.checks.redact",
    "harness.checks.min",
    "harness.checks.limit",
    "harness.checks.fuzz.inputs",
    "harness.checks.fuzz.framing",
    "harness.checks.cloud",
)


@dataclass(frozen=True)
class Check:
    """A registered check."""

    control: Control
    fn: CheckFn
    needs_channel: bool = True
    probes: tuple[Probe, ...] = ()

    @property
    def doc(self) -> str:
        """The check's docstring: its procedure in words."""
        return (self.fn.__doc__ or "").strip()


_REGISTRY: dict[str, Check] = {}


def check(
    control_id: str, *, probes: Iterable[Probe] = (), needs_channel: bool = True
) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as the check for ``control_id``.

    ``probes`` declares the lettered probes of the control's catalogue row: the check files
    each observation under one (:meth:`Observation.of`), and the control's status follows
    from them (:func:`harness.outcome.settle`). ``needs_channel=False`` marks checks that
    probe below gRPC (TLS, certificates): they still run when the harness's gRPC client
    cannot connect.

    Raises:
        KeyError: the ID is not in the catalogue.
        ValueError: the control already has a check, the function has no docstring, or two
            probes share a letter.
    """
    control = CATALOGUE[control_id]
    declared = tuple(probes)
    refs = [p.ref for p in declared]
    if len(set(refs)) != len(refs) or "" in refs:
        raise ValueError(f"{control_id}: every probe needs its own non-empty letter: {refs}")

    def register(fn: CheckFn) -> CheckFn:
        existing = _REGISTRY.get(control_id)
        # A module imported again (pytester restores sys.modules) re-registers itself.
        if existing is not None and _origin(existing.fn) != _origin(fn):
            raise ValueError(f"{control_id} already has a check: {existing.fn.__qualname__}")
        if not (fn.__doc__ or "").strip():
            raise ValueError(f"the check for {control_id} needs a docstring")
        _REGISTRY[control_id] = Check(control, fn, needs_channel, declared)
        return fn

    return register


def _origin(fn: CheckFn) -> tuple[str, str]:
    return fn.__module__, fn.__qualname__


def registered() -> Mapping[str, Check]:
    """Every registered check, by control ID."""
    for module in CHECK_MODULES:
        importlib.import_module(module)
    return MappingProxyType(_REGISTRY)


#: Work that may start as soon as the run opens, by control ID (see :func:`warmup`).
_WARMUPS: dict[str, Callable[[Run], object]] = {}
#: Warm-ups that wait until the others are done (they are sensitive to load).
_LATE: set[Callable[[Run], object]] = set()
#: Warm-ups whose work runs in a child process: late ones need not wait for them.
_CHILD: set[Callable[[Run], object]] = set()
#: Warm-ups that are mostly a wait (for a token to expire): their tests are run last.
_WAITS: set[Callable[[Run], object]] = set()


def warmup(
    *control_ids: str, late: bool = False, child_process: bool = False, waits: bool = False
) -> Callable[[Callable[[Run], T]], Callable[[Run], T]]:
    """Let the decorated function start in the background when the run opens.

    Only for work that cannot disturb other probes or be disturbed by them: a subprocess
    that never talks to the target, a handshake scan that makes no gRPC call, input
    generation, or a wait. The function must keep its result with :meth:`Run.memo`, so
    that the check, when its turn comes, waits for it instead of starting it again. It
    starts when any of ``control_ids`` is selected; ``late`` ones once the others in this
    process finish (``child_process`` ones, which load another core, and ``waits`` ones,
    which load none, are not waited for).
    ``late`` and ``waits`` ones take seconds of waiting: their controls' tests run last.
    """

    def register(fn: Callable[[Run], T]) -> Callable[[Run], T]:
        for control_id in control_ids:
            _WARMUPS[control_id] = fn
        if late:
            _LATE.add(fn)
        if child_process:
            _CHILD.add(fn)
        if waits:
            _WAITS.add(fn)
        return fn

    return register


def judged_last() -> frozenset[str]:
    """Controls whose background work is mostly waiting: their tests are best run last."""
    registered()
    return frozenset(c for c, fn in _WARMUPS.items() if fn in _LATE or fn in _WAITS)


def start_warmups(run: Run, control_ids: Iterable[str]) -> None:
    """Start the warm-ups of the selected controls, each once, in daemon threads.

    A warm-up that fails leaves nothing in the memo: the check then does the work itself
    and reports the failure as usual.
    """
    registered()
    chosen: list[Callable[[Run], object]] = []
    for control_id in control_ids:
        fn = _WARMUPS.get(control_id)
        if fn is not None and fn not in chosen:
            chosen.append(fn)

    def work(fn: Callable[[Run], object]) -> None:
        with contextlib.suppress(Exception):
            fn(run)

    early = [
        (fn, threading.Thread(target=work, args=(fn,), daemon=True))
        for fn in chosen
        if fn not in _LATE
    ]
    for _, thread in early:
        thread.start()
        run.target.background(thread)
    late = [fn for fn in chosen if fn in _LATE]
    if late:

        def then() -> None:
            for fn, thread in early:
                if fn not in _CHILD and fn not in _WAITS:  # a wait does not load the host
                    thread.join()
            for fn in late:
                work(fn)

        late_thread = threading.Thread(target=then, name="hipaa-warmup-late", daemon=True)
        late_thread.start()
        run.target.background(late_thread)


def run_check(control_id: str, run: Run) -> Outcome:
    """Run the check for ``control_id``; a harness failure becomes ERROR, never PASS or FAIL.

    The outcome carries every declared probe, and its status is derived from them.
    """
    entry = registered()[control_id]

    def configured(key: str) -> bool:
        return bool(run.config.get(key))

    def empty(key: str) -> bool:  # a list or table declared empty: "there are none"
        value = run.config.get(key)
        return run.config.has(key) and isinstance(value, (list, dict)) and not value

    outcome = _outcome(entry, run)
    return settle(outcome, entry.probes, configured, empty)


def _outcome(entry: Check, run: Run) -> Outcome:
    control = entry.control
    if run.unresponsive:
        return Outcome.inconclusive(control, run.unresponsive)
    budget = float(run.config.get("safety.max_duration_s"))
    if time.monotonic() - run.opened > budget:
        return Outcome.inconclusive(
            control,
            f"not run: the run's time budget (safety.max_duration_s, {budget:g} s) was spent",
        )
    try:
        if entry.needs_channel and (problem := run.channel_problem()):
            return Outcome.inconclusive(control, problem)
        outcome = entry.fn(run)
    except NotApplicable as exc:
        return Outcome.skip(control, str(exc))
    except CannotObserve as exc:
        return Outcome.inconclusive(control, str(exc))
    except HarnessError as exc:
        return Outcome.error(control, str(exc))
    except Exception as exc:  # the one broad boundary: a bug in a check is an ERROR
        reason = f"harness error in {control.id}: {type(exc).__name__}: {exc}"
        return Outcome.error(control, reason)
    judged = outcome.status in (Status.PASS, Status.FAIL, Status.WARN)
    if judged and run.spec.host is not None:
        run.still_there()  # a verdict from a target that died meanwhile cannot stand
    if run.unresponsive and judged:
        # Probes after the target hung were never sent: the verdict cannot stand.
        return Outcome.inconclusive(control, run.unresponsive, outcome.observations)
    return outcome
