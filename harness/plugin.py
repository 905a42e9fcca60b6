"""The pytest plugin: a thin adapter from pytest's lifecycle to the harness core.

* ``--hipaa-*`` options in one group; with ``--hipaa-target`` and no test paths, the bundled
  conformance suites are collected.
* ``hipaa_run`` (session): the target, spawned if needed, stopped at the end. A target that
  cannot be used makes every control ERROR with one line that says why.
* ``hipaa_verdict``: runs the registered check of the test's ``hipaa_control`` marker
  during setup, so a harness failure shows as ERROR, a failed oracle as FAILED, and a
  missing prerequisite as SKIPPED with its reason.
* Every test with a ``hipaa_control`` marker gets ``hipaa_control`` / ``hipaa_status``
  user properties (JUnit XML carries them) and a line in the "HIPAA controls" summary.

Heavy imports (grpc, protobuf) happen inside the fixtures, so loading pytest stays fast.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness import __version__
from harness.config import Config, discover_config
from harness.errors import HarnessError, UsageError
from harness.target import TargetSpec, parse_target

if TYPE_CHECKING:
    from harness.attest import Attestation
    from harness.failon import FailOn
    from harness.outcome import Outcome
    from harness.reporting.figures import Trend
    from harness.reporting.model import ControlResult, Reproducer, Results, RunInfo
    from harness.run import Run

PROFILES = (
    "hipaa-strict",
    "mozilla-modern",
    "mozilla-intermediate",
    "mozilla-intermediate-5.7",
    "nist-800-52r2",
)
MARKER = "hipaa_control"


@dataclass
class _State:
    spec: TargetSpec | None
    config: Config
    profile: str
    seed: int
    run: Run | None = None
    fail_on: FailOn | None = None
    failing: list[str] = field(default_factory=list)
    results: _Results = field(default_factory=lambda: _Results())
    report_dir: Path | None = None
    attestations: dict[str, Attestation] | None = None
    started: str = ""
    #: No gRPC target: only the CLOUD controls are judged (``--hipaa-cloud`` alone, or a
    #: bundled cloud estate).
    cloud_only: bool = False


_STATE = pytest.StashKey[_State]()
_OUTCOME = pytest.StashKey["Outcome"]()
#: The control's result as JSON (:meth:`ControlResult.to_json`), redacted: what the teardown
#: report carries to the xdist controller as ``hipaa_result``.
_ROW = pytest.StashKey[dict[str, Any]]()
#: The failing probes' reproducers (probe ID, :class:`Reproducer`), redacted.
_REPRO = pytest.StashKey[tuple[tuple[str, "Reproducer"], ...]]()


def _secrets(run: Run | None) -> tuple[str, ...]:
    """The run's bearer tokens: redacted wherever they appear."""
    if run is None:
        return ()
    out = []
    for principal in run.principals.values():
        if principal.has_token:
            # A token source that fails here fails the probes that use it, with a reason;
            # redaction must not stop the session over it.
            with contextlib.suppress(HarnessError):
                out.append(principal.token())
    return tuple(out)


def _control_result(
    item: pytest.Item, control_id: str, status: str, summary: str, outcome: Outcome | None
) -> ControlResult:
    """The test's result for its control, typed from the outcome, redacted.

    The run's tokens are hashed and its canaries masked (a target may echo canaries
    anywhere: evidence names categories only).
    """
    from harness.outcome import Status
    from harness.reporting.model import ControlResult, catalogued
    from harness.reporting.redact import redact

    tests = (item.nodeid,)
    if outcome is not None:
        result = ControlResult.from_outcome(
            outcome, tests=tests, status=Status(status), summary=summary
        )
    else:
        result = ControlResult.of(catalogued(control_id), Status(status), summary, tests=tests)
    result = replace(result, reproducers=item.stash.get(_REPRO, ()))
    state = item.config.stash.get(_STATE, None)
    run = state.run if state is not None else None
    seed = state.seed if state is not None else None
    return redact(result, _secrets(run), seed=seed)


def _reproducers(
    item: pytest.Item, outcome: Outcome, run: Run, state: _State | None
) -> tuple[tuple[str, Reproducer], ...]:
    """A reproducer per FAIL probe of ``outcome``: the commands that send it again."""
    from harness.outcome import Status

    if outcome.status is not Status.FAIL or state is None or state.spec is None:
        return ()
    if state.cloud_only:
        return ()
    from harness.reporting.redact import redact
    from harness.reproduce import Context, reproducers, rerun_line, tokens_of

    explicit = item.config.getoption("hipaa_config")
    configs = [str(explicit)] if explicit else []
    rerun = rerun_line(state.spec.raw, state.seed, state.profile, configs, item.nodeid)
    ctx = Context.of(run, rerun, tokens_of(run), state.seed)
    return redact(reproducers(outcome, run, ctx), _secrets(run), seed=state.seed)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``--hipaa-*`` options."""
    group = parser.getgroup("hipaa", "HIPAA technical safeguards (pytest-hipaa-grpc)")
    group.addoption(
        "--hipaa-target",
        metavar="TARGET",
        help="HOST:PORT, [IPV6]:PORT, or spawn:NAME[+DEFECT...] for a bundled target "
        "(see 'hipaa-grpc targets list'). Without test paths, runs the bundled suites.",
    )
    group.addoption(
        "--hipaa-config",
        metavar="PATH",
        help="hipaa.toml (default: ./hipaa.toml, else [tool.hipaa] in pyproject.toml)",
    )
    group.addoption(
        "--hipaa-profile",
        "--hipaa-tls-profile",
        dest="hipaa_profile",
        choices=PROFILES,
        default="hipaa-strict",
        help="TLS profile the transport controls judge against (default: hipaa-strict)",
    )
    group.addoption(
        "--hipaa-allow-mutations",
        action="store_true",
        help="let controls that write (AUTHZ-003, MIN-004) change sandbox records "
        "(authz.sandbox_ids); same as safety.allow_mutations = true",
    )
    group.addoption(
        "--hipaa-report",
        metavar="DIR",
        help="write the evidence bundle here: report.html, results.json, junit.xml, "
        "results.sarif, summary.md, manifest.json, SHA256SUMS (default: evidence.dir)",
    )
    group.addoption(
        "--hipaa-oscal",
        action="store_true",
        help="also write assessment-results.oscal.json into the bundle: the run as an OSCAL "
        "assessment-results document (controls as observations and findings, HIPAA cited)",
    )
    group.addoption(
        "--hipaa-attestations",
        metavar="FILE",
        help="TOML attestations for the manual controls ATT-001...ATT-009",
    )
    group.addoption(
        "--hipaa-allow-transport-abuse",
        action="store_true",
        help="let LIMIT-002/003 send bursts, concurrent exports and huge pages (bounded by "
        "safety.max_requests); same as safety.allow_transport_abuse = true",
    )
    group.addoption(
        "--hipaa-call-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="deadline of each gRPC call (default 10); after three calls in a row hit it, "
        "the target counts as unresponsive and the remaining controls are INCONCLUSIVE",
    )
    group.addoption(
        "--hipaa-run-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the whole run's time budget (same as safety.max_duration_s, default 300): "
        "controls not started by then are INCONCLUSIVE",
    )
    group.addoption(
        "--hipaa-fuzz-budget",
        type=float,
        metavar="SECONDS",
        help="seconds of white-box Atheris fuzzing in FUZZ-002 (default: fuzz.atheris_seconds; "
        "0 turns it off); it stops at the first finding",
    )
    group.addoption(
        "--hipaa-fail-on",
        default="low,inconclusive,error",
        metavar="LIST",
        help="what fails the run (exit 1): the lowest FAIL severity that does (low, medium, "
        "high, critical), inconclusive, error, or none (default: low,inconclusive,error: "
        "a run is green only when every selected control passed or does not apply)",
    )
    group.addoption(
        "--hipaa-cloud",
        choices=("aws",),
        metavar="PROVIDER",
        help="also read the cloud account around the service, read-only (aws), scoped by "
        "[cloud.aws] in hipaa.toml; without --hipaa-target, a cloud-only run (same as "
        'cloud.provider = "aws")',
    )
    group.addoption(
        "--hipaa-seed",
        type=int,
        metavar="N",
        help="seed for generated inputs and canary nonces (default: random, printed in the header)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Validate the target and config (exit 4 on bad input) and pick the suites."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(id): the HIPAA control (catalogue ID, e.g. 'REFL-001') "
        "this test provides evidence for",
    )
    # sslyze loads its bundled root stores, one of which holds a root with a negative
    # serial; cryptography warns about it on every scan. Not the target's doing.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Parsed a serial number which wasn't positive:"
        "cryptography.utils.CryptographyDeprecationWarning",
    )
    if hasattr(config, "workerinput"):
        seed = int(config.workerinput.get("hipaa_seed", 0))
    else:
        seed = config.getoption("hipaa_seed")
        seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
    target = config.getoption("hipaa_target")
    explicit = config.getoption("hipaa_config")
    try:
        spec = parse_target(target) if target is not None else None
        user_config = _with_flags(
            config, discover_config(Path(explicit) if explicit else None, config.rootpath)
        )
        report = config.getoption("hipaa_report") or user_config.get("evidence.dir")
        if config.getoption("hipaa_oscal"):
            _oscal_usable(report)
        from harness.failon import FailOn

        fail_on = FailOn.parse(config.getoption("hipaa_fail_on"))
        attestations = None
        if config.getoption("hipaa_attestations"):
            from harness.attest import load_attestations

            attestations = load_attestations(Path(config.getoption("hipaa_attestations")))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    state = _State(spec, user_config, config.getoption("hipaa_profile"), seed)
    state.report_dir = Path(report) if report else None
    state.attestations = attestations
    state.fail_on = fail_on
    state.cloud_only = _cloud_only(spec, user_config)
    config.stash[_STATE] = state
    config.pluginmanager.register(state.results, "hipaa-results")
    collect_suites = spec is not None or state.cloud_only
    if collect_suites and config.args_source is not pytest.Config.ArgsSource.ARGS:
        import suites

        config.args[:] = [str(Path(suites.__file__).parent)]
        _hypothesis_caches_out_of_the_tree()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "hipaa-xdist")


#: Hypothesis's own setting for where it keeps its files (``.hypothesis/`` by default).
HYPOTHESIS_STORAGE = "HYPOTHESIS_STORAGE_DIRECTORY"


def _hypothesis_caches_out_of_the_tree() -> None:
    """Hypothesis's caches in the user's cache directory, for a run of the bundled suites.

    FUZZ-001 and AUTHN-001 draw their inputs with Hypothesis, which builds its Unicode
    tables on first use (about 1 s of CPU when the run starts) and keeps them, with the
    constants it reads from local modules' source, in ``.hypothesis/`` of the working
    directory: in a fresh checkout (every CI run) each run built them again, and the
    harness left that directory in the user's tree. They go to
    ``$XDG_CACHE_HOME/pytest-hipaa-grpc/hypothesis`` (``~/.cache`` without it) instead.
    The harness keeps no example database (its settings say ``database=None``). A
    ``HYPOTHESIS_STORAGE_DIRECTORY`` the user set is left as it is, and so is a session
    given test paths of its own, whose Hypothesis tests keep their database where it was.
    """
    import os

    if HYPOTHESIS_STORAGE in os.environ:
        return
    base = os.environ.get("XDG_CACHE_HOME")
    try:
        cache = Path(base) if base else Path.home() / ".cache"
    except RuntimeError:  # no home directory to find: leave Hypothesis's default
        return
    os.environ[HYPOTHESIS_STORAGE] = str(cache / "pytest-hipaa-grpc" / "hypothesis")


def _oscal_usable(report: object) -> None:
    """``--hipaa-oscal`` needs a bundle to write into, and compliance-trestle (Python 3.11+)."""
    import importlib.util

    if not report:
        raise UsageError("--hipaa-oscal writes into the bundle: give --hipaa-report DIR")
    if importlib.util.find_spec("trestle") is None:
        raise UsageError(
            "--hipaa-oscal needs compliance-trestle: pip install 'pytest-hipaa-grpc[oscal]' "
            "(Python 3.11+)"
        )


def _cloud_only(spec: TargetSpec | None, user_config: Config) -> bool:
    """No gRPC target: ``--hipaa-cloud`` without ``--hipaa-target``, or a cloud estate."""
    from targets.catalog import SPAWNABLE

    if spec is not None and spec.bundled is not None:
        return SPAWNABLE[spec.bundled].cloud is not None
    return spec is None and bool(user_config.get("cloud.provider"))


def _with_flags(config: pytest.Config, user_config: Config) -> Config:
    """The config with the command line's ``--hipaa-allow-*`` and budget flags over it."""
    if config.getoption("hipaa_cloud"):
        provider = config.getoption("hipaa_cloud")
        user_config = user_config.overlay(
            Config({"cloud": {"provider": provider}}, ("--hipaa-cloud",))
        )
    if config.getoption("hipaa_allow_transport_abuse"):
        flag = Config(
            {"safety": {"allow_transport_abuse": True}}, ("--hipaa-allow-transport-abuse",)
        )
        user_config = user_config.overlay(flag)
    if config.getoption("hipaa_allow_mutations"):
        user_config = user_config.overlay(
            Config({"safety": {"allow_mutations": True}}, ("--hipaa-allow-mutations",))
        )
    run_budget = config.getoption("hipaa_run_budget")
    if run_budget is not None:
        if run_budget <= 0:
            raise UsageError(f"--hipaa-run-budget must be positive, got {run_budget:g}")
        user_config = user_config.overlay(
            Config({"safety": {"max_duration_s": run_budget}}, ("--hipaa-run-budget",))
        )
    budget = config.getoption("hipaa_fuzz_budget")
    if budget is not None:
        if budget < 0:
            raise UsageError(f"--hipaa-fuzz-budget must not be negative, got {budget:g}")
        user_config = user_config.overlay(
            Config({"fuzz": {"atheris_seconds": budget}}, ("--hipaa-fuzz-budget",))
        )
    return user_config


class _XdistHooks:
    """Registered only when pytest-xdist is installed: hand the seed to every worker."""

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["hipaa_seed"] = node.config.stash[_STATE].seed


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What is needed to reproduce the run: target, profile, seed, config files."""
    state = config.stash.get(_STATE, None)
    if state is None or (state.spec is None and not state.cloud_only):
        return [f"hipaa-grpc {__version__}: no --hipaa-target (plugin idle)"]
    sources = ", ".join(state.config.sources) or "none"
    target = state.spec.raw if state.spec else f"none (cloud {state.config.get('cloud.provider')})"
    return [
        f"hipaa-grpc {__version__}: target={target} profile={state.profile} "
        f"seed={state.seed} config={sources}"
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests of controls whose work starts late in the background last.

    AUTHN-005 (e) and AUTHN-009 wait for tokens to expire; run after the others, their
    verdicts are ready when their turn comes. Only the order of execution changes: reports
    list controls in catalogue order.
    """
    if config.stash[_STATE].spec is None or hasattr(config, "workerinput"):
        return  # a cloud-only run has no background work
    _import_checks()
    from harness.checks import judged_last

    last = judged_last()
    items.sort(key=lambda item: _control_of(item) in last)  # stable: the rest keep order


def _import_checks() -> None:
    """Import the check modules (and Hypothesis, Atheris, sslyze with them) as plain Python.

    pytest rewrites the asserts of every module of a distribution that has a pytest
    plugin, ours and Hypothesis' included; with no bytecode cache (PYTHONDONTWRITEBYTECODE)
    that recompiles hundreds of modules on every run, about a second. None of them holds
    a test, so they are imported with the rewriting hook set aside.

    Then what is alive (modules, classes, the collected tests) is moved out of the garbage
    collector's sight (``gc.freeze``): a run allocates many short-lived objects, and every
    full collection walked all of these again (0.1 to 0.3 s each, a second in a run).
    """
    import gc

    from harness.checks import registered

    hooks = [h for h in sys.meta_path if type(h).__name__ == "AssertionRewritingHook"]
    for hook in hooks:
        sys.meta_path.remove(hook)
    try:
        registered()
    finally:
        sys.meta_path[0:0] = hooks
    gc.freeze()


@pytest.fixture(scope="session")
def hipaa_run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """The run against ``--hipaa-target``: spawned if needed, stopped at session end."""
    from harness.run import Run, RunOptions

    state = request.config.stash[_STATE]
    if state.spec is None and not state.cloud_only:
        pytest.skip("no --hipaa-target given")
    timeout = float(request.config.getoption("hipaa_call_timeout"))
    options = RunOptions(seed=state.seed, profile=state.profile, call_timeout_s=timeout)
    try:
        if state.cloud_only:
            from harness.cloud.session import open_cloud_run

            run = open_cloud_run(state.spec, state.config, options)
        else:
            assert state.spec is not None
            run = Run.open(state.spec, state.config, options)
    except HarnessError as exc:
        problem = f"target {state.spec.raw if state.spec else 'cloud'}: {exc}"
    else:
        problem = ""
    if problem:  # raised outside the except block, so no exception chain is printed
        from harness.reporting.redact import redact

        pytest.fail(redact(problem, seed=state.seed), pytrace=False)
    state.run = run
    _import_checks()
    if not hasattr(request.config, "workerinput") and not state.cloud_only:  # a share only
        from harness.checks import start_warmups

        selected = (_control_of(item) for item in request.session.items)
        start_warmups(run, [c for c in selected if c is not None])
    try:
        yield run
    finally:
        run.close()


@dataclass(frozen=True)
class Verdict:
    """The outcome of a registered check, ready to be turned into a pytest outcome."""

    outcome: Outcome
    reproducers: tuple[tuple[str, Reproducer], ...] = ()

    def conclude(self) -> None:
        """Pass, fail, or skip the test as the outcome says."""
        from harness.outcome import Status

        status = self.outcome.status
        if status is Status.FAIL:
            from harness.reproduce import failure_text

            pytest.fail(failure_text(self.outcome, self.reproducers), pytrace=False)
        if status is Status.SKIP:
            pytest.skip(f"{self.outcome.control.id}: {self.outcome.summary}")
        if status is Status.INCONCLUSIVE:
            pytest.skip(f"{self.outcome.control.id} INCONCLUSIVE: {self.outcome.summary}")


@pytest.fixture
def hipaa_verdict(request: pytest.FixtureRequest, hipaa_run: Run) -> Verdict:
    """Run the check registered for this test's ``hipaa_control`` marker."""
    from harness.checks import registered
    from harness.outcome import Status

    control_id = _control_of(request.node)
    if control_id is None or control_id not in registered():
        pytest.fail(
            f"hipaa_verdict needs @pytest.mark.{MARKER}('ID') "
            "naming a control with a registered check; "
            f"got {control_id!r}",
            pytrace=False,
        )
    from harness.reporting.redact import redact

    state = request.config.stash.get(_STATE, None)
    seed = state.seed if state is not None else None
    # Redacted before anything prints it: failure text, skip reasons, the terminal, JUnit.
    outcome = redact(_judge(control_id, hipaa_run, state), _secrets(hipaa_run), seed=seed)
    request.node.stash[_OUTCOME] = outcome
    if outcome.status is Status.ERROR:
        pytest.fail(outcome.render(), pytrace=False)
    found = _reproducers(request.node, outcome, hipaa_run, state)
    request.node.stash[_REPRO] = found
    return Verdict(outcome, found)


def _judge(control_id: str, run: Run, state: _State | None) -> Outcome:
    """The control's outcome; SKIP for a gRPC control on a cloud-only run."""
    from harness.checks import registered, run_check
    from harness.cloud.session import NO_GRPC_TARGET, judged_here
    from harness.outcome import Outcome, settle

    if judged_here(control_id, state is not None and state.cloud_only):
        return run_check(control_id, run)
    entry = registered()[control_id]
    return settle(Outcome.skip(entry.control, NO_GRPC_TARGET), entry.probes, lambda key: False)


def _control_of(item: pytest.Item | Any) -> str | None:
    marker = item.get_closest_marker(MARKER) if hasattr(item, "get_closest_marker") else None
    if marker is None or not marker.args:
        return None
    return str(marker.args[0])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the control's status to the report of the phase that decided it."""
    report = yield
    control_id = _control_of(item)
    if control_id is None:
        return report
    if report.when == "teardown":
        row = item.stash.get(_ROW, None)
        report.hipaa_result = row  # type: ignore[attr-defined]
        report.hipaa_run = _endpoint(item.config) if row else None  # type: ignore[attr-defined]
        return report
    decided = (report.when == "setup" and not report.passed) or report.when == "call"
    if not decided:
        return report
    outcome = item.stash.get(_OUTCOME, None)
    if report.when == "setup" and report.failed:
        status, summary = "ERROR", str(report.longrepr).splitlines()[-1] if report.longrepr else ""
    elif outcome is not None:
        status, summary = outcome.status.value, outcome.summary
    else:
        status = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[report.outcome]
        summary = ""
    if outcome is not None and report.when == "setup" and report.failed:
        summary = outcome.summary
    result = _control_result(item, control_id, status, summary, outcome)
    item.stash[_ROW] = result.to_json()
    # On the item, so the teardown report (which JUnit XML and xdist carry) has them.
    item.user_properties += [
        ("hipaa_control", control_id),
        ("hipaa_status", result.status.value),
        ("hipaa_severity", result.severity.value if result.severity else ""),
        ("hipaa_summary", result.summary),
    ]
    return report


def _endpoint(config: pytest.Config) -> dict[str, Any] | None:
    """Where this process reached the target (:meth:`RunInfo.to_json`), for the controller."""
    from harness.reporting.model import RunInfo

    state = config.stash.get(_STATE, None)
    if state is None or state.run is None:
        return None
    from harness.reporting.redact import redact

    run = state.run
    address = run.spec.address if run.spec.host is not None else ""
    endpoint = RunInfo(address=address, transport=run.detected.note)
    return redact(endpoint, _secrets(run), seed=state.seed).to_json()


class _Results:
    """Per-session collector of control results; it sees xdist workers' reports too."""

    def __init__(self) -> None:
        self.failed: set[str] = set()  # node IDs of every test that failed or errored
        self.controls: list[ControlResult] = []
        self.endpoint: RunInfo | None = None
        self.bundle: Path | None = None

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.add(report.nodeid)
        row = getattr(report, "hipaa_result", None)
        if report.when != "teardown" or not isinstance(row, dict):
            return
        from harness.reporting.model import ControlResult, RunInfo

        self.controls.append(ControlResult.from_json(row))
        endpoint = getattr(report, "hipaa_run", None)
        if self.endpoint is None and isinstance(endpoint, dict):
            self.endpoint = RunInfo.from_json(endpoint)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """One line per control: status, severity, title, and why; then the probe coverage."""
    from harness.reporting.results import probe_coverage

    state = config.stash.get(_STATE, None)
    if state is None or not state.results.controls:
        return
    terminalreporter.section("HIPAA controls")
    if state.results.bundle is not None:
        terminalreporter.write_line(
            f"evidence bundle: {state.results.bundle.resolve()}/report.html"
        )
    if state.run is not None:
        run = state.run
        at = f" at {run.spec.address}" if run.spec.host is not None else ""
        terminalreporter.write_line(f"target {run.spec.raw}{at}: {run.detected.note}")
        if run.unresponsive:
            terminalreporter.write_line(f"run cut short: {run.unresponsive}", red=True)
    _control_lines(terminalreporter, state.results.controls)
    coverage = probe_coverage(state.results.controls)
    terminalreporter.write_line(coverage.line(), yellow=bool(coverage.required_not_run))
    _exit_line(terminalreporter, state)


#: How each status is shown: unjudged controls as prominently as findings.
_MARKUP = {
    "FAIL": {"red": True, "bold": True},
    "ERROR": {"red": True, "bold": True},
    "INCONCLUSIVE": {"yellow": True, "bold": True},
    "WARN": {"yellow": True},
    "SKIP": {"yellow": True},
}


def _control_lines(terminalreporter: Any, controls: list[ControlResult]) -> None:
    rows = sorted(
        (c.id, c.status.value, c.severity.value if c.severity else "", c.summary, c.title)
        for c in controls
    )
    for control_id, status, severity, summary, title in rows:
        sev = f" ({severity})" if severity else ""
        markup = _MARKUP.get(status, {})
        terminalreporter.write_line(f"{control_id:<10} {status + sev:<22} {title}", **markup)
        if status != "PASS" and summary:
            terminalreporter.write_line(f"{'':<10} {summary}")
    counts: dict[str, int] = {}
    for c in controls:
        counts[c.status.value] = counts.get(c.status.value, 0) + 1
    said = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    unjudged = counts.get("INCONCLUSIVE", 0) + counts.get("ERROR", 0)
    terminalreporter.write_line(f"{len(controls)} controls: {said}", yellow=bool(unjudged))


def _exit_line(terminalreporter: Any, state: _State) -> None:
    if state.fail_on is None:
        if state.failing:  # not by the controls: the evidence bundle itself
            terminalreporter.write_line(f"run fails: {'; '.join(state.failing)}", red=True)
        return
    setting = f"--hipaa-fail-on={state.fail_on.text}"
    if state.failing:
        shown = "; ".join(state.failing[:8]) + (" ..." if len(state.failing) > 8 else "")
        terminalreporter.write_line(f"run fails ({setting}): {shown}", red=True, bold=True)
    else:
        terminalreporter.write_line(f"run passes ({setting})", green=True)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Note the start time for the evidence bundle."""
    from harness.reporting.results import now_utc

    state = session.config.stash.get(_STATE, None)
    if state is not None:
        state.started = now_utc()
        _open_early(session.config, state)


def _open_early(config: pytest.Config, state: _State) -> None:
    """Start opening the run (spawning the target) while the tests are collected.

    ``hipaa_run`` takes it (:meth:`Run.open_early`); not on the xdist controller, which
    runs no test, nor for ``--collect-only``.
    """
    if state.spec is None or state.cloud_only or config.option.collectonly:
        return
    if config.pluginmanager.hasplugin("dsession"):
        return
    from harness.run import Run, RunOptions

    timeout = float(config.getoption("hipaa_call_timeout"))
    options = RunOptions(seed=state.seed, profile=state.profile, call_timeout_s=timeout)
    Run.open_early(state.spec, state.config, options)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close a run opened early that no test took, and let go of the session's run.

    The run (its journal, and what every call sent, LIMIT-001's 32 MiB request among
    them) is closed by now; a config that outlives the session (pytester's in-process
    runs keep theirs) no longer keeps it.
    """
    state = config.stash.get(_STATE, None)
    if state is not None:
        from harness.run import discard_early

        discard_early()
        state.run = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the evidence bundle (on the xdist controller, with every worker's results)."""
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None or hasattr(config, "workerinput"):
        return
    _decide_exit(session, state)
    if state.report_dir is None:
        return
    from harness.canary import CanarySet
    from harness.checks import registered
    from harness.reporting.bundle import bundle_files, write_bundle
    from harness.reporting.results import build_results

    secrets = _secrets(state.run)
    results = build_results(
        state.results.controls,
        _run_info(state, int(exitstatus)),
        _attestations(state),
        registered=registered(),
        secrets=secrets,
        seed=state.seed,
    )
    canaries = CanarySet.for_seed(state.seed).manifest()
    past = _past_runs(state)
    oscal = bool(config.getoption("hipaa_oscal"))
    files = bundle_files(
        results, state.config._data, secrets=secrets, canaries=canaries, past=past, oscal=oscal
    )
    _sign(session, state, files, results)
    write_bundle(state.report_dir, files)
    state.results.bundle = state.report_dir
    _record_run(session, state, files)


def _past_runs(state: _State) -> Trend | None:
    """The runs ``evidence.history_dir`` recorded (``None`` when it is not set)."""
    directory = state.config.get("evidence.history_dir")
    if not directory:
        return None
    from harness.history import HistoryError, runs
    from harness.reporting.figures import Trend

    try:
        return Trend(runs(Path(str(directory))))
    except HistoryError as exc:
        return Trend((), str(exc))


def _record_run(session: pytest.Session, state: _State, files: dict[str, bytes]) -> None:
    """Add this run to ``evidence.history_dir``'s run records; a failure fails the run."""
    directory = state.config.get("evidence.history_dir")
    if not directory:
        return
    import json

    from harness.history import HistoryError, record_run
    from harness.reporting.figures import record_of

    try:
        record_run(Path(str(directory)), record_of(json.loads(files["results.json"])))
    except HistoryError as exc:
        state.failing.append(f"run not recorded in evidence.history_dir: {exc}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _sign(
    session: pytest.Session, state: _State, files: dict[str, bytes], results: Results
) -> None:
    """Sign the bundle's statement (evidence.signing_key / signing_cmd); a failure fails the run."""
    command = state.config.str_list("evidence.signing_cmd")
    key = state.config.path("evidence.signing_key")
    if not command and key is None:
        return
    from harness.reporting.redact import redact
    from harness.reporting.signing import sign_bundle

    for error in sign_bundle(files, results, key_path=key, command=command):
        said = redact(error, _secrets(state.run), seed=state.seed)  # the signer's own words
        state.failing.append(f"bundle not signed: {said}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _decide_exit(session: pytest.Session, state: _State) -> None:
    """The run's exit status from its controls, as ``--hipaa-fail-on`` says.

    Only when every failed test was a control's: a failure elsewhere keeps pytest's status.
    A run cut short (the target went away) always fails: its skips must not look green.
    """
    if state.fail_on is None or not state.results.controls:
        return
    if session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return
    ours = {t for c in state.results.controls for t in c.tests}
    if state.results.failed - ours:
        return
    state.failing = state.fail_on.reasons(state.results.controls)
    if state.run is not None and state.run.unresponsive:
        state.failing.append(f"run cut short: {state.run.unresponsive}")
    failed = bool(state.failing)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED if failed else pytest.ExitCode.OK


def _run_info(state: _State, exitstatus: int) -> RunInfo:
    """The run as the bundle reports it; the address as a worker reached the target."""
    from harness.reporting.model import RunInfo
    from harness.reporting.results import now_utc, operator

    endpoint = state.results.endpoint or RunInfo()
    return RunInfo(
        target=state.spec.raw if state.spec else "",
        address=endpoint.address or "",
        transport=endpoint.transport or "",
        profile=state.profile,
        seed=state.seed,
        started=state.started,
        finished=now_utc(),
        operator=operator(),
        pytest_exit_status=exitstatus,
    )


def _attestations(state: _State) -> list[ControlResult] | None:
    """The ATT controls' results, or ``None`` when no attestation file was given."""
    if state.attestations is None:
        return None
    import datetime as dt

    from harness.attest import attestation_results

    return attestation_results(state.attestations, dt.date.today())
