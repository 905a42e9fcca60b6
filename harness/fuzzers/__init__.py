"""Atheris entry points, runnable as OSS-Fuzz / ClusterFuzzLite run Python fuzzers.

``python -m harness.fuzzers.blackbox [libFuzzer args]`` and ``python -m
harness.fuzzers.whitebox [libFuzzer args]`` take every libFuzzer flag (corpus
directories, ``-max_total_time``, ``-runs``, ``-seed``...) and read the rest from the
environment, so a fuzzing service can run them unchanged:

* ``HIPAA_FUZZ_CONFIG``: the harness config (required);
* ``HIPAA_FUZZ_TARGET``: ``host:port`` of the service (black-box only);
* ``HIPAA_FUZZ_CRASHES``: a directory for one JSON reproducer per distinct finding;
* ``HIPAA_FUZZ_KEEP_GOING=1``: record findings and go on (the ``hipaa-grpc fuzz``
  command sets it); without it the first finding raises, as OSS-Fuzz expects;
* ``HIPAA_FUZZ_PROGRESS=1``: a progress line on stderr every two seconds;
* ``HIPAA_FUZZ_METHODS``: fuzz only these methods (comma-separated, full paths or names).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from harness.engine import (
    Executor,
    Finding,
    Findings,
    Pacing,
    Surface,
    dumps,
    server_streams,
    surface_from,
)
from harness.errors import HarnessError
from harness.wire import varint

ENV_CONFIG, ENV_TARGET, ENV_CRASHES = "HIPAA_FUZZ_CONFIG", "HIPAA_FUZZ_TARGET", "HIPAA_FUZZ_CRASHES"
ENV_KEEP_GOING, ENV_PROGRESS = "HIPAA_FUZZ_KEEP_GOING", "HIPAA_FUZZ_PROGRESS"
ENV_MODE, ENV_METHODS = "HIPAA_FUZZ_MODE", "HIPAA_FUZZ_METHODS"
#: How much lower a fuzzing process runs than its parent (``os.nice``): FUZZ-002 sets it for
#: the white-box child it runs beside the probes.
ENV_NICE = "HIPAA_FUZZ_NICE"


class FuzzFinding(Exception):
    """Raised on a finding when not keeping going (what a fuzzing service reports)."""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers never see half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def replay_command(path: Path) -> str:
    """The one-line command that sends a reproducer again."""
    config = os.environ.get(ENV_CONFIG, "hipaa.toml")
    target = os.environ.get(ENV_TARGET)
    where = f" --target {target}" if target else ""
    mode = os.environ.get(ENV_MODE, "blackbox")
    return f"hipaa-grpc fuzz replay {path} --mode {mode}{where} --config {config}"


class Driver:
    """Feeds engine inputs to an executor, records findings, shows progress."""

    def __init__(self, surface: Surface, executor: Executor, crashes: Path | None) -> None:
        self.surface = surface
        self.executor = executor
        self.crashes = crashes
        self.keep_going = os.environ.get(ENV_KEEP_GOING) == "1"
        self.progress = os.environ.get(ENV_PROGRESS) == "1"
        self.execs = 0
        self.started = time.monotonic()
        self._shown = self.started
        self.findings = Findings(on_new=self._record)
        if crashes is not None:
            crashes.mkdir(parents=True, exist_ok=True)
            for old in crashes.glob("*.json"):
                self.findings.known[old.stem] = None

    def _record(self, finding: Finding) -> None:
        line = f"[hipaa-fuzz] finding {finding.key}: {finding.method} {finding.why}"
        if self.crashes is not None:
            path = self.crashes / f"{finding.key}.json"
            write_atomic(path, dumps(finding, replay_command(path)))
            line += f" -> {path}"
        print(line, file=sys.stderr, flush=True)

    def one(self, data: bytes) -> None:
        """Atheris' TestOneInput."""
        self.execs += 1
        case = self.surface.decode(data)
        found = self.executor.check(case)
        for note in self.executor.notes:  # not findings: candidates that did not reproduce
            print(f"[hipaa-fuzz] note: {note[:300]}", file=sys.stderr, flush=True)
        self.executor.notes.clear()
        if found is not None:
            found = dataclasses.replace(found, data=data)
            new = self.findings.add(found)
            if new and not self.keep_going:
                raise FuzzFinding(f"{found.method}: {found.why}")
        if self.progress and time.monotonic() - self._shown >= 2:
            self._show()

    def _show(self) -> None:
        self._shown = now = time.monotonic()
        rate = self.execs / max(now - self.started, 1e-9)
        print(
            f"[hipaa-fuzz] {now - self.started:6.0f} s  {self.execs:,} execs ({rate:,.0f}/s)  "
            f"findings {len(self.findings.known)}  ({self.executor.stats()})",
            file=sys.stderr,
            flush=True,
        )


def wire_mutator(surface: Surface, share: float = 0.5) -> Callable[[bytes, int, int], bytes]:
    """LibFuzzer's mutator, and for ``share`` of the inputs a wire-level mutation."""
    import random

    import atheris

    from harness.wire import MUTATIONS, mutate

    kinds = sorted(MUTATIONS)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if len(data) < 3 or rng.random() >= share:
            return bytes(atheris.Mutate(data, max_size))
        case = surface.decode(data)
        desc: Any = case.method.cls.DESCRIPTOR
        damaged = mutate(case.payload, rng.choice(kinds), rng, desc)
        head = bytes([data[0], data[1], data[2] & 0xFE])
        return (head + damaged)[:max_size]

    return mutator


def _fail(message: str) -> NoReturn:
    print(f"hipaa-grpc fuzz: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(mode: str, argv: list[str]) -> None:
    """Set up ``mode`` ("blackbox" or "whitebox") from the environment and fuzz forever."""
    nice = os.environ.get(ENV_NICE, "")
    if nice.isdigit() and hasattr(os, "nice"):
        os.nice(int(nice))  # before the imports: instrumenting them is work too
    import atheris

    config_path = os.environ.get(ENV_CONFIG)
    if not config_path:
        _fail(f"set {ENV_CONFIG} to the harness config file")
    crashes = os.environ.get(ENV_CRASHES)
    assert config_path is not None
    try:
        if mode == "blackbox":
            target = os.environ.get(ENV_TARGET)
            if not target:
                _fail(f"set {ENV_TARGET} to the service's host:port")
            surface, executor = blackbox(config_path, target, instrument=True)
            mutator: Any = wire_mutator(surface)
        else:
            surface, executor = whitebox(config_path, instrument=True)
            # Mostly coverage-guided; a few nesting bombs and the like beside.
            mutator = wire_mutator(surface, share=0.1)
    except HarnessError as exc:
        _fail(str(exc))
    os.environ[ENV_MODE] = mode
    driver = Driver(surface, executor, Path(crashes) if crashes else None)
    seed_dir(surface, argv)
    args = list(argv)
    if mode == "whitebox" and not any(a.startswith("-dict=") for a in argv):
        words = code_dictionary(getattr(executor, "modules", set()))
        if words:
            args.append(f"-dict={_shared_dictionary(words)}")
    atheris.Setup(memory_flags(args), driver.one, custom_mutator=mutator)
    atheris.Fuzz()


#: How much a fuzzing process may grow beyond the memory it started with (libFuzzer's
#: default -rss_limit_mb).
RSS_HEADROOM_MB = 2048


def memory_flags(argv: list[str]) -> list[str]:
    """``argv`` with libFuzzer's RSS limit counted from where this process started.

    libFuzzer compares the peak RSS ``getrusage`` reports with ``-rss_limit_mb`` (2048 by
    default), and Linux carries that peak over ``execve`` from the process that started
    this one: started by a test runner or a pytest session grown to 2.1 GB, every run
    stopped "out-of-memory" before its first input (seen in CI). A limit the caller gives
    is kept.
    """
    if any(a.startswith("-rss_limit_mb=") for a in argv):
        return argv
    import resource

    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return [*argv, f"-rss_limit_mb={inherited_mb + RSS_HEADROOM_MB}"]


def _shared_dictionary(words: list[bytes]) -> Path:
    """Write the dictionary to a temp file named by its content, and return its path.

    libFuzzer ends the process without Python's clean-up, so a fresh temporary file per
    run was left behind every time (278 after a day of test runs here); one file per
    distinct dictionary is reused instead, each writer staging its own copy, in a
    directory only this user can enter.
    """
    import hashlib

    from harness.scratch import private_dir

    text = dictionary_text(words)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = private_dir() / f"dict-{digest}.dict"
    if not path.exists():
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        staged.write_text(text)
        os.replace(staged, path)
    return path


def seed_dir(surface: Surface, argv: list[str]) -> None:
    """Seed the first corpus directory.

    One valid input per method when it is empty, and every input of ``fuzz.seed_corpus``
    it lacks (named by content hash, as :func:`harness.fuzzcli.prune` names them).
    """
    import hashlib

    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if not dirs:
        return
    corpus = Path(dirs[0])
    if corpus.is_file():  # one input run again alone (a reproducer), no corpus to seed
        return
    corpus.mkdir(parents=True, exist_ok=True)
    for data in surface.seeds(valid=not any(corpus.iterdir())):
        path = corpus / hashlib.sha1(data).hexdigest()
        if not path.exists():
            path.write_bytes(data)


def blackbox(config_path: str, target: str, *, instrument: bool) -> tuple[Surface, Executor]:
    """Surface and executor for fuzzing ``target`` over gRPC.

    Raises:
        HarnessError: the config does not load, or the target cannot be reached.
    """
    from harness import engine
    from harness.config import load_config
    from harness.engine import Remote
    from harness.run import Run, RunOptions
    from harness.target import parse_target

    spec = parse_target(target, option="--target")
    run_ = Run.open(spec, load_config(Path(config_path)), RunOptions())
    problem = run_.channel_problem()
    if problem:
        raise HarnessError(f"target {target}: {problem}")
    surface = surface_from(run_)
    if isinstance(surface, str):
        raise HarnessError(surface)
    surface = only_methods(surface)
    if instrument:
        import atheris

        # Coverage here is the harness's own: the oracle's branches tell status codes apart.
        engine.judge = atheris.instrument_func(engine.judge)
    key = str(run_.config.get("audit.request_id_key", "x-request-id"))
    # One input at a time, so never more in flight than the server allows, unless it
    # advertises none at all (then the gate's back-off is what paces it).
    # The fuzzing budget bounds it, with libFuzzer's per-input timeout: no call budget.
    pacing = Pacing.under(server_streams(run_), default=1, spare=sys.maxsize)
    remote = Remote(surface, run_.channel(), key, pacing, run_.liveness)
    remote.new_channel, remote.gone = run_.new_channel, run_.target.gone
    return surface, remote


def only_methods(surface: Surface) -> Surface:
    """``surface`` narrowed to the methods ``HIPAA_FUZZ_METHODS`` names (comma-separated).

    Raises:
        HarnessError: a named method is not among the fuzzable ones.
    """
    names = [n.strip() for n in os.environ.get(ENV_METHODS, "").split(",") if n.strip()]
    if not names:
        return surface
    chosen = [m for m in surface.methods if m.path in names or m.path.rsplit("/", 1)[-1] in names]
    if len(chosen) < len(names):
        known = ", ".join(m.path for m in surface.methods)
        raise HarnessError(f"{ENV_METHODS}: not all of {names} are fuzzable methods ({known})")
    return dataclasses.replace(surface, methods=chosen)


def whitebox(config_path: str, *, instrument: bool) -> tuple[Surface, Executor]:
    """Surface and executor for fuzzing ``fuzz.inprocess_entrypoint`` in-process.

    Raises:
        HarnessError: the config does not load or names no usable entry point.
    """
    from harness.config import load_config
    from harness.engine import Local
    from harness.inprocess import InProcess, load

    config = load_config(Path(config_path))
    entry = config.str_("fuzz.inprocess_entrypoint")
    if not entry:
        raise HarnessError(f"{config_path}: white-box fuzzing needs fuzz.inprocess_entrypoint")
    surface = surface_from(None, config)
    if isinstance(surface, str):
        raise HarnessError(surface)
    surface = only_methods(surface)
    options = config.table("fuzz.inprocess_options")
    if instrument:
        import atheris

        # Comparisons with str.startswith/endswith feed libFuzzer's dictionary.
        atheris.enabled_hooks.add("str")
        with atheris.instrument_imports(include=[entry.partition(":")[0].split(".")[0]]):
            target = load(entry, options, Path(config_path).parent)
    else:
        target = load(entry, options, Path(config_path).parent)
    executor = Local(surface, InProcess(target), target.public_methods)
    executor.modules = service_modules(target)
    return surface, executor


def service_modules(target: Any) -> set[str]:
    """The modules holding the service's interceptors and handler behaviours."""
    modules = {type(i).__module__ for i in target.interceptors}
    for generic in target.handlers:
        for handler in getattr(generic, "_method_handlers", {}).values():
            for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
                behavior = getattr(handler, kind, None)
                if behavior is not None:
                    modules.add(getattr(behavior, "__module__", "") or "")
    return {m for m in modules if m and not m.startswith(("grpc", "harness"))}


def code_dictionary(modules: set[str]) -> list[bytes]:
    """Constants in the code of ``modules``, as libFuzzer dictionary entries (white-box only).

    The integers, as 4-byte little-endian words (how :func:`harness.engine.structured`
    reads numbers) and as varints (how raw requests carry them): what AFL-style
    auto-dictionaries do, so that a condition on a number is one dictionary insertion away
    instead of a search through 2**32 values. Strings need no entry: Atheris traces string
    comparisons and ``startswith``/``endswith`` itself. Few entries keep each one likely.
    """
    import types

    seen: set[bytes] = set()

    def walk(code: types.CodeType) -> None:
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(const)
            elif isinstance(const, bool):
                continue
            elif isinstance(const, int) and 16 < abs(const) < 2**31:
                seen.add(const.to_bytes(4, "little", signed=True))
                seen.add(varint(const))  # as raw requests carry it

    # Compiled afresh from the source: the loaded code is instrumented, and Atheris'
    # instrumentation adds integer constants of its own.
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None or not origin.endswith(".py"):
            continue
        try:
            walk(compile(Path(origin).read_text(), origin, "exec"))
        except (OSError, SyntaxError, ValueError):
            continue
    return sorted(seen)


def dictionary_text(entries: list[bytes]) -> str:
    """The text of a libFuzzer ``-dict`` file holding ``entries``."""
    lines = ['"' + "".join(f"\\x{b:02x}" for b in e) + '"' for e in entries]
    return "\n".join(lines) + "\n"


__all__ = ["Driver", "FuzzFinding", "run", "write_atomic"]
