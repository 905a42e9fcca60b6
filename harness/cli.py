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
from typing import TYPE_CHECKING, Any

from harness import __version__
from harness.errors import HarnessError, UsageError
from harness.target import parse_target

if TYPE_CHECKING:
    from harness.reporting.model import Results

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


def _print_grpc_target(address: str, config: Path, directory: Path) -> None:
    print(f"  config (CA, client certificate, tokens, descriptors): {config}")
    print(f"  CA bundle:          {directory / 'ca.pem'}")
    print(f"  client certificate: {directory / 'client.pem'} (key {directory / 'client-key.pem'})")
    print(f"  bearer tokens:      {directory / 'tokens'}/<principal>.jwt")
    print(f"  audit log:          {directory / 'audit.jsonl'}")
    print(f"test it:  pytest --hipaa-target={address} --hipaa-config={config}")


def _targets_serve(spec_text: str, workdir: Path | None) -> int:
    import targets.serve as serve
    from targets.catalog import SPAWNABLE

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
    if SPAWNABLE[spec.bundled].cloud is not None:  # a cloud estate: read as an account is
        print(f"  config ([cloud.aws] endpoint_url and scope): {served.config}")
        cloud = SPAWNABLE[spec.bundled].cloud
        print(f"test it:  pytest --hipaa-cloud={cloud} --hipaa-config={served.config}")
    else:
        _print_grpc_target(served.address, served.config, directory)
    print("Ctrl-C stops it.", flush=True)
    try:
        serve.wait_for(stop)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    return EXIT_OK


EXIT_FINDINGS = 1


def _report_verify(directory: Path, public_key: Path | None = None) -> int:
    from harness.reporting.bundle import verify
    from harness.reporting.signing import SIGNATURE, SigningKeyError, check_envelope

    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory")
    try:
        signed = check_envelope(directory, public_key)
    except SigningKeyError as exc:
        raise UsageError(f"--public-key {exc}") from None
    problems = verify(directory) + list(signed.problems)
    for problem in problems:
        print(f"FAIL {problem}")
    for line in signed.said:
        print(line)
    if (directory / SIGNATURE).is_file():
        print(f"{SIGNATURE}: a detached signature of SHA256SUMS (check it with the signer's tool)")
    print(f"{directory}: {'INVALID' if problems else 'verified'} ({len(problems)} problem(s))")
    return EXIT_FINDINGS if problems else EXIT_OK


def _load_results(directory: Path) -> Results:
    import json

    from harness.reporting.model import Results

    path = directory / "results.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: not found (is {directory} an evidence bundle?)") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None
    try:
        return Results.from_json(data)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a results.json I read ({exc})") from None


def _report_diff(old: Path, new: Path) -> int:
    from harness.reporting.diff import diff

    before, after = _load_results(old), _load_results(new)
    changes = diff(before, after)
    for cid in changes.new:
        c = after.control(cid)
        assert c is not None
        severity = c.severity.value if c.severity else ""
        print(f"NEW        {cid} {c.status.value} {severity}: {c.summary[:160]}")
    for cid in changes.fixed:
        was = before.control(cid)
        print(f"FIXED      {cid} (was {was.status.value if was else '?'})")
    for cid in changes.unchanged:
        c = after.control(cid)
        print(f"UNCHANGED  {cid} {c.status.value if c else '?'}")
    counts = (len(changes.new), len(changes.fixed), len(changes.unchanged))
    print("{} new, {} fixed, {} unchanged finding(s)".format(*counts))
    return EXIT_FINDINGS if changes.new else EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    from harness import replay

    if args.cert is not None and args.key is None:
        raise UsageError("--cert needs --key")
    if (args.method is None) == (args.frames is None):
        raise UsageError("give --method (a gRPC call) or --frames (raw HTTP/2), not both")
    method = args.method or "/"
    req = replay.ReplayRequest(
        address=args.address,
        method=method if method.startswith("/") else f"/{method}",
        requests=replay.messages(args.request_b64, args.requests_file),
        metadata=tuple(replay.header(h) for h in args.header),
        plaintext=args.plaintext,
        cacert=args.cacert,
        insecure=args.insecure,
        authority=args.authority,
        cert=args.cert,
        key=args.key,
        timeout_s=args.timeout,
        request_id_key=args.request_id_key,
    )
    if args.frames is not None:
        return _replay_frames(args, req)
    code, summary = replay.replay(req)
    print(f"{req.method}: {summary}")
    return _expected(args.expect, code, replay.code_matches(args.expect or "", code), "status")


def _expected(expect: str | None, got: str, same: bool, what: str) -> int:
    """``--expect``: say whether ``got`` is what the harness got; exit 0 if so (or unasked)."""
    if expect is None:
        return EXIT_OK
    if same:
        print(f"same {what} as the harness got: {got}")
        return EXIT_OK
    print(f"DIFFERENT: the harness got {expect}, this call got {got}")
    return EXIT_FINDINGS


def _replay_frames(args: argparse.Namespace, req: Any) -> int:
    import os

    from harness import replay

    sent = replay.frames_plan(args.frames, os.environ)
    try:
        got, summary = replay.replay_frames(req, sent)
    except OSError as exc:
        print(f"hipaa-grpc: no raw HTTP/2 connection to {req.address}: {exc}", file=sys.stderr)
        return 2
    print(f"{sent.path} (raw HTTP/2): {summary}")
    return _expected(args.expect, got, replay.answer_matches(args.expect or "", got), "answer")


def _replay_parser(sub: Any) -> None:
    rp = sub.add_parser(
        "replay",
        help="send again what the harness sent for a finding (its reproducer's line)",
        description="Exit 0: sent (and, with --expect, the same status); 1: another status. "
        "With --frames: a raw HTTP/2 request, sent as the probe sent it.",
    )
    rp.add_argument("address", metavar="HOST:PORT")
    rp.add_argument("--method", help="/package.Service/Method")
    rp.add_argument(
        "--frames", help="a raw HTTP/2 request as its reproducer gives it (or @FILE holding it)"
    )
    rp.add_argument("--request-b64", action="append", default=[], help="one request message")
    rp.add_argument("--requests-file", action="append", default=[], type=Path, help="base64 lines")
    rp.add_argument("-H", "--header", action="append", default=[], help="'key: value'")
    tls = rp.add_mutually_exclusive_group()
    tls.add_argument("--plaintext", action="store_true", help="cleartext HTTP/2")
    tls.add_argument("--cacert", type=Path, help="trust anchors (PEM)")
    tls.add_argument("--insecure", action="store_true", help="trust the presented certificate")
    rp.add_argument("--authority", help="server name to verify and send as :authority")
    rp.add_argument("--cert", type=Path, help="client certificate (PEM)")
    rp.add_argument("--key", type=Path, help="client key (PEM)")
    rp.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    rp.add_argument("--request-id-key", default="x-request-id", help="request ID header")
    rp.add_argument("--expect", help="the status the harness got: exit 1 if this one differs")


def _report_merge(bundles: list[Path], output: Path) -> int:
    from harness.reporting.fleet import HTML_FILE, merge, write_fleet

    fleet = merge(bundles)
    write_fleet(output, fleet)
    for refused in fleet.refused:
        print(f"NOT MERGED {refused.bundle}: {'; '.join(refused.problems)}")
    print(
        f"{len(fleet.merged)} bundle(s) merged, {len(fleet.refused)} failed verify: "
        f"{output / HTML_FILE}"
    )
    return EXIT_FINDINGS if fleet.refused else EXIT_OK


def _fuzz_parser(sub: Any) -> None:
    fuzz = sub.add_parser(
        "fuzz",
        help="time-boxed Atheris fuzzing with a kept corpus (or: fuzz replay FILE)",
        description="Exit 0: no finding; 1: findings; 2: the fuzzer could not run; 4: usage.",
    )
    fuzz.add_argument("action", nargs="?", choices=("run", "replay"), default="run")
    fuzz.add_argument("file", nargs="?", type=Path, help="reproducer to replay")
    fuzz.add_argument("--target", help="HOST:PORT or spawn:NAME[+DEFECT...]")
    fuzz.add_argument("--config", type=Path, help="harness config (hipaa.toml)")
    fuzz.add_argument("--mode", choices=("blackbox", "whitebox"), default="blackbox")
    fuzz.add_argument("--budget", default="10m", help="e.g. 90s, 10m, 1h (default 10m)")
    fuzz.add_argument("--corpus", type=Path, default=Path("hipaa-fuzz/corpus"))
    fuzz.add_argument("--crashes", type=Path, default=Path("hipaa-fuzz/crashes"))
    fuzz.add_argument("--seed", type=int, default=0, help="libFuzzer seed (0: random)")


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
    report = sub.add_parser("report", help="evidence bundles").add_subparsers(
        dest="action", required=True
    )
    verify = report.add_parser("verify", help="check SHA256SUMS and self-scan (exit 1 if invalid)")
    verify.add_argument("bundle", type=Path)
    verify.add_argument(
        "--public-key",
        type=Path,
        help="PEM public key (or certificate) the signed statement must verify with",
    )
    differ = report.add_parser("diff", help="new, fixed, unchanged findings (exit 1 if any is new)")
    differ.add_argument("old", type=Path)
    differ.add_argument("new", type=Path)
    merge = report.add_parser(
        "merge",
        help="one page and one results file over many bundles (exit 1 if any fails verify)",
    )
    merge.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    merge.add_argument("-o", "--output", type=Path, required=True, help="directory to write")
    _replay_parser(sub)
    _fuzz_parser(sub)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "fuzz":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "fuzz":
            return _fuzz(args, extra)
        if args.command == "replay":
            return _replay(args)
        if args.command == "report":
            if args.action == "verify":
                return _report_verify(args.bundle, args.public_key)
            if args.action == "merge":
                return _report_merge(args.bundles, args.output)
            return _report_diff(args.old, args.new)
        if args.action == "list":
            return _targets_list()
        return _targets_serve(args.spec, args.workdir)
    except UsageError as exc:
        print(f"hipaa-grpc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HarnessError as exc:
        print(f"hipaa-grpc: {exc}", file=sys.stderr)
        return 2


def _fuzz(args: argparse.Namespace, extra: list[str]) -> int:
    from harness import fuzzcli

    if any(not e.startswith("-") for e in extra):
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
    budget = fuzzcli.parse_budget(args.budget)
    if args.action == "replay":
        if args.file is None:
            raise UsageError("fuzz replay needs a reproducer FILE")
        where = fuzzcli.resolve(args.target, args.config, args.mode)
        try:
            found = fuzzcli.replay(args.file, where, args.mode)
        finally:
            _stop(where)
        if found is None:
            print(f"{args.file}: passes now (fixed)")
            return fuzzcli.EXIT_OK
        print(f"{args.file}: still fails: {found.method} {found.why} ({found.code})")
        return fuzzcli.EXIT_FINDINGS
    where = fuzzcli.resolve(args.target, args.config, args.mode)
    try:
        return fuzzcli.run(where, args.mode, budget, args.corpus, args.crashes, args.seed, extra)
    finally:
        _stop(where)


def _stop(where: Any) -> None:
    if where.stop is not None:
        where.stop.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
