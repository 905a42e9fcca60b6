"""The ``hipaa-grpc`` command line.

``hipaa-grpc targets list`` shows the bundled targets and every defect with the controls it
must trip; ``hipaa-grpc targets serve NAME[+DEFECT...]`` runs one in the foreground and
prints how to reach it, so a person can point ``pytest --hipaa-target`` (or any other
client) at it.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import __version__
from harness.errors import UsageError
from harness.target import parse_target

EXIT_OK, EXIT_USAGE = 0, 4


def _targets_list() -> int:
    from targets.catalog import BUNDLED

    for target in BUNDLED.values():
        print(f"{target.name}: {target.summary}")
        print(f"  spawn:{target.name}  (compliant)")
        for d in target.defects:
            print(f"  spawn:{target.name}+{d.name}")
            print(f"      trips {', '.join(d.trips)}: {d.summary}")
    return EXIT_OK


def _targets_serve(spec_text: str, workdir: Path | None) -> int:
    import targets.serve as serve

    text = spec_text if spec_text.startswith("spawn:") else f"spawn:{spec_text}"
    spec = parse_target(text, option="target")
    assert spec.bundled is not None
    own_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="hipaa-target-")) if workdir is None else workdir
    directory.mkdir(parents=True, exist_ok=True)
    served, stop, running = serve.start(spec.bundled, frozenset(spec.defects), directory)
    # Before anything is printed: whoever reads the address may send SIGTERM at once.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print(f"serving {spec.raw} at {served.address}")
    print(f"  config (CA, client certificate, tokens, descriptors): {served.config}")
    print(f"  CA bundle:          {directory / 'ca.pem'}")
    print(f"  client certificate: {directory / 'client.pem'} (key {directory / 'client-key.pem'})")
    print(f"  bearer tokens:      {directory / 'tokens'}/<principal>.jwt")
    print(f"  audit log:          {directory / 'audit.jsonl'}")
    print(f"test it:  pytest --hipaa-target={served.address} --hipaa-config={served.config}")
    print("Ctrl-C stops it.", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()  # type: ignore[attr-defined]
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hipaa-grpc``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="hipaa-grpc", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"hipaa-grpc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    targets = sub.add_parser("targets", help="bundled gRPC targets").add_subparsers(
        dest="action", required=True
    )
    targets.add_parser("list", help="bundled targets, their defects and the controls each trips")
    serve = targets.add_parser("serve", help="run a bundled target in the foreground")
    serve.add_argument("spec", metavar="NAME[+DEFECT...]")
    serve.add_argument(
        "--workdir", type=Path, help="keep keys, tokens and logs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "list":
            return _targets_list()
        return _targets_serve(args.spec, args.workdir)
    except UsageError as exc:
        print(f"hipaa-grpc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
