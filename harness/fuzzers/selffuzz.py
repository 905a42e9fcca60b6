"""Atheris fuzzers for the harness's own parsers.

Whatever a hostile target or a broken file feeds them must end in one of our typed
errors, never in any other exception.

``python -m harness.fuzzers.selffuzz TARGET [libFuzzer flags]``, TARGET one of:

- ``config``: a config file's bytes (:func:`harness.config.parse_config`);
- ``audit``: an audit source's bytes (:func:`harness.audit.parse_events`);
- ``descriptors``: a FileDescriptorSet (:func:`harness.descriptors.catalogue_from_bytes`),
  then every method's request built and fuzzed by the engine's decoder;
- ``reflection``: a ServerReflectionResponse, read the way the harness reads one when it
  fetches descriptors and when it judges REFL-001.

With no corpus directory given, each starts from valid seeds (:func:`seeds`).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import atheris

from harness.fuzzers import memory_flags

if TYPE_CHECKING:
    from harness.descriptors import MethodCatalogue

TARGETS = ("config", "audit", "descriptors", "reflection")

#: The modules each target's parsers live in, imported before the run to be instrumented.
_MODULES = {
    "config": ("harness.config", "tomllib"),
    "audit": ("harness.audit",),
    "descriptors": ("harness.descriptors", "harness.engine"),
    "reflection": ("harness.checks.refl", "harness.descriptors", "harness.engine"),
}
#: Whose code gives libFuzzer its coverage.
_COVERED = ("harness", "tomllib", "tomli")


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from."""
    from grpc_reflection.v1alpha import reflection_pb2 as rpb

    from targets.reference import schema

    fds = schema.descriptor_set()
    if target == "config":
        return [
            b'[schema]\ndescriptor_set = "d.pb"\n[auth.principals.admin]\ntoken_file = "t"\n'
            b"[limits.rate]\nrps = 5\n[fuzz]\nexamples_per_method = 3\n",
            b'environment = "production"\n[tls]\nserver_name = "x"\nextra_ports = [1, 2]\n',
        ]
    if target == "audit":
        return [
            b'{"request_id": "a", "actor": {"sub": "u"}, "outcome": "OK"}\n{"x": [1, 2]}\n',
            b'not json\n["list"]\n{"ts": "2026-01-01T00:00:00Z"}\n',
        ]
    if target == "descriptors":
        return [fds.SerializeToString()]
    blobs = [f.SerializeToString() for f in fds.file]
    return [
        rpb.ServerReflectionResponse(
            file_descriptor_response=rpb.FileDescriptorResponse(file_descriptor_proto=blobs)
        ).SerializeToString(),
        rpb.ServerReflectionResponse(
            list_services_response=rpb.ListServiceResponse(
                service=[rpb.ServiceResponse(name="a.B")]
            )
        ).SerializeToString(),
    ]


def _one_input(target: str) -> Callable[[bytes], None]:
    for name in _MODULES[target]:
        with contextlib.suppress(ModuleNotFoundError):  # tomllib before Python 3.11
            importlib.import_module(name)
    _instrument_loaded(_COVERED)
    return {
        "config": _config,
        "audit": _audit,
        "descriptors": _descriptors,
        "reflection": _reflection,
    }[target]


def _instrument_loaded(packages: tuple[str, ...]) -> None:
    """Give libFuzzer coverage of every function already loaded from ``packages``.

    ``atheris.instrument_imports`` would see only modules imported inside it, and the
    parsers are loaded before: ``python -m harness.fuzzers.selffuzz`` imports the
    ``harness.fuzzers`` package, which imports the engine, the config and the descriptors.
    Without this the run was blind (libFuzzer: "no interesting inputs were found").
    """
    patched: dict[types.CodeType, types.CodeType] = {}  # functions may share code (closures)
    for obj in gc.get_objects():
        if not isinstance(obj, types.FunctionType):
            continue
        if str(obj.__module__).split(".")[0] not in packages:
            continue
        code = obj.__code__
        if code in patched:
            obj.__code__ = patched[code]
        else:
            patched[code] = atheris.instrument_func(obj).__code__


def _config(data: bytes) -> None:
    from harness.config import parse_config
    from harness.errors import ConfigError

    base = Path(tempfile.gettempdir())
    with contextlib.suppress(ConfigError):
        parse_config(data, "fuzz.toml", base)
    with contextlib.suppress(ConfigError):
        parse_config(data, "pyproject.toml", base, pyproject=True)


def _audit(data: bytes) -> None:
    from harness.audit import parse_events

    events = parse_events([("fuzz", data)])
    assert all(isinstance(e, dict) for e in events.events)


def _exercise(catalogue: MethodCatalogue, data: bytes) -> None:
    from harness.engine import surface_of

    methods = [(m.path, b"", ("x",)) for m in catalogue.methods]
    surface = surface_of(catalogue, methods, {"x": lambda: ()})
    for m in surface.methods:
        m.cls.FromString(m.cls().SerializeToString())
    if surface.methods:
        surface.decode(data)


def _descriptors(data: bytes) -> None:
    from harness.descriptors import catalogue_from_bytes
    from harness.errors import DescriptorError

    try:
        catalogue = catalogue_from_bytes(data, "fuzz.pb")
    except DescriptorError:
        return
    _exercise(catalogue, data)


def _reflection(data: bytes) -> None:
    from google.protobuf import descriptor_pb2
    from google.protobuf.message import DecodeError
    from grpc_reflection.v1alpha import reflection_pb2 as rpb

    from harness.checks.refl import revealed
    from harness.descriptors import MethodCatalogue
    from harness.errors import DescriptorError

    revealed([data])
    try:
        response = rpb.ServerReflectionResponse.FromString(data)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(blob)
            for blob in response.file_descriptor_response.file_descriptor_proto
        ]
    except DecodeError:
        return
    if not files:
        return
    try:
        catalogue = MethodCatalogue(descriptor_pb2.FileDescriptorSet(file=files), "reflection")
    except DescriptorError:
        return
    _exercise(catalogue, data)


def main(argv: list[str] | None = None) -> None:
    """Run the fuzzer for ``argv[1]`` with the rest of ``argv`` as libFuzzer flags."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m harness.fuzzers.selffuzz {{{','.join(TARGETS)}}} [flags]")
    target, flags = argv[1], [argv[0], *argv[2:]]
    corpora = [f for f in flags[1:] if not f.startswith("-")]
    if not corpora:
        # One corpus per parser in this user's private scratch directory, kept between
        # runs: libFuzzer ends the process without Python's clean-up, so a fresh directory
        # per run would stay.
        from harness.scratch import private_dir

        corpora = [str(private_dir() / f"selffuzz-{target}")]
        flags.append(corpora[0])
    corpus = Path(corpora[0])
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):  # start from valid seeds
        for i, blob in enumerate(seeds(target)):
            (corpus / f"seed-{i}").write_bytes(blob)
    atheris.Setup(memory_flags(flags), _one_input(target))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
