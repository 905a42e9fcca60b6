"""Reproducers: what each call sent becomes a grpcurl and a replay line, nothing leaking."""

from __future__ import annotations

import base64
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from harness.canary import CanarySet
from harness.catalogue import CATALOGUE
from harness.descriptors import MethodCatalogue
from harness.errors import UsageError
from harness.outcome import Observation, Outcome, Probe, Status, settle
from harness.replay import DEFAULT, OTHER, Sent, SentLog, code_matches, header, messages
from harness.reproduce import Arg, Context, failure_text, placeholder, reproduce, reproducers
from harness.transport import Transport
from targets.reference.schema import descriptor_set

SEARCH = "/hipaagrpc.reference.v1.PatientRecords/SearchPatients"
TOKEN = "tok-" + "s3cr3t" * 6


@dataclass
class FakeCaller:
    sent: SentLog


@dataclass
class FakeRun:
    """What the builder reads of a run: the descriptors and the sent log."""

    catalogue_: MethodCatalogue | None
    caller: FakeCaller

    def catalogue(self) -> MethodCatalogue | None:
        return self.catalogue_


def catalogue() -> MethodCatalogue:
    return MethodCatalogue(descriptor_set(), "reference")


def context(**changes: Any) -> Context:
    base: dict[str, Any] = {
        "address": "127.0.0.1:5000",
        "transport": Transport.TLS,
        "authority": "localhost",
        "cacert": "/keys/ca.pem",
        "client": ("/keys/client.pem", "/keys/client-key.pem"),
        "principal_certs": {},
        "protoset": "/keys/descriptors.pb",
        "request_id_key": "x-request-id",
        "tokens": {"least-privileged": TOKEN},
        "presentations": {},
        "canaries": CanarySet.for_seed(7),
        "rerun": "pytest --hipaa-target=127.0.0.1:5000 --hipaa-seed=7 -k test_AUTHZ_001",
    }
    base.update(changes)
    return Context(**base)


def search(page_size: int) -> bytes:
    cls = catalogue().message_class(catalogue().method(SEARCH).input_type)
    return cls(page_size=page_size).SerializeToString()


def sent(requests: tuple[bytes, ...] | None, *metadata: tuple[str, str | bytes]) -> Sent:
    return Sent(SEARCH, requests, metadata, "least-privileged", DEFAULT, 5.0, "OK (0)")


def run_with(*entries: tuple[str, Sent], descriptors: bool = True) -> FakeRun:
    log = SentLog()
    for rid, s in entries:
        log.add(rid, s)
    return FakeRun(catalogue() if descriptors else None, FakeCaller(log))


def test_a_token_becomes_its_principals_placeholder_and_the_request_json() -> None:
    s = sent((search(5),), ("authorization", f"Bearer {TOKEN}"))
    repro = reproduce("rid-1", s, run_with(), context())  # type: ignore[arg-type]
    assert repro.fill == ("HIPAA_TOKEN_LEAST_PRIVILEGED",)
    for text in (repro.grpcurl, repro.replay):
        assert TOKEN not in text
        assert '"authorization: Bearer $HIPAA_TOKEN_LEAST_PRIVILEGED"' in text
    words = shlex.split(repro.grpcurl)
    assert words[:3] == ["grpcurl", "-cacert", "/keys/ca.pem"]
    assert words[words.index("-d") + 1] == '{"pageSize": 5}'
    assert words[-2:] == ["127.0.0.1:5000", SEARCH.lstrip("/")]
    assert "x-request-id: rid-1" in words
    replay = shlex.split(repro.replay)
    assert replay[replay.index("--request-b64") + 1] == base64.b64encode(search(5)).decode()
    assert replay[replay.index("--expect") + 1] == "OK (0)"
    assert repro.code == "OK (0)"


def test_bytes_json_cannot_carry_get_the_replay_line_only() -> None:
    unknown_field = search(5) + b"\xf8\x07\x01"  # field 127, varint: not in the descriptor
    repro = reproduce("r", sent((unknown_field,)), run_with(), context())  # type: ignore[arg-type]
    assert repro.grpcurl == ""
    assert "exact bytes" in repro.note
    assert base64.b64encode(unknown_field).decode() in repro.replay
    two = reproduce("r", sent((search(1), search(2))), run_with(), context())  # type: ignore[arg-type]
    assert two.grpcurl == ""
    assert "2 messages" in two.note
    assert two.replay.count("--request-b64") == 2
    garbage = reproduce("r", sent((b"\xff\xff",)), run_with(), context())  # type: ignore[arg-type]
    assert garbage.grpcurl == ""
    assert garbage.replay


def test_no_descriptors_no_grpcurl_line() -> None:
    run = run_with(descriptors=False)
    repro = reproduce("r", sent((search(5),)), run, context())  # type: ignore[arg-type]
    assert repro.grpcurl == ""
    assert "no descriptors" in repro.note


def test_a_forged_token_is_a_placeholder_too() -> None:
    forged = jwt.encode({"sub": "x"}, key="", algorithm="none")
    repro = reproduce(
        "r",
        sent((search(5),), ("authorization", f"Bearer {forged}")),
        run_with(),  # type: ignore[arg-type]
        context(),
    )
    assert forged not in repro.grpcurl + repro.replay
    assert repro.fill == ("HIPAA_FORGED_TOKEN",)
    assert "re-run" in repro.note


def test_a_canary_or_a_secret_in_the_request_leaves_only_the_rerun() -> None:
    canaries = CanarySet.for_seed(7)
    cls = catalogue().message_class(catalogue().method(SEARCH).input_type)
    field = next(f.name for f in cls.DESCRIPTOR.fields if f.type == f.TYPE_STRING)
    body = cls(**{field: canaries.ssn}).SerializeToString()
    repro = reproduce("r", sent((body,)), run_with(), context())  # type: ignore[arg-type]
    assert (repro.grpcurl, repro.replay) == ("", "")
    assert "canary" in repro.note
    assert repro.command == repro.rerun
    secret = cls(**{field: TOKEN}).SerializeToString()
    repro = reproduce("r", sent((secret,)), run_with(), context())  # type: ignore[arg-type]
    assert (repro.grpcurl, repro.replay) == ("", "")


def test_plaintext_and_a_channel_of_its_own() -> None:
    s = Sent(SEARCH, (search(5),), (), None, OTHER, 5.0, "UNAVAILABLE (14)")
    ctx = context(transport=Transport.H2C)
    repro = reproduce("r", s, run_with(), ctx)  # type: ignore[arg-type]
    assert "-plaintext" in shlex.split(repro.grpcurl)
    assert "--plaintext" in shlex.split(repro.replay)
    assert "-cacert" not in repro.grpcurl
    tls = reproduce("r", s, run_with(), context(cacert=None))  # type: ignore[arg-type]
    assert "-insecure" in shlex.split(tls.grpcurl)
    assert "channel of its own" in tls.note


def test_every_fail_probe_gets_one_and_the_terminal_shows_it() -> None:
    control = CATALOGUE["AUTHZ-001"]
    seen = [
        Observation("a", "OK (0)", "PERMISSION_DENIED", Status.FAIL, request_id="rid-1").of(
            "denied"
        ),
        Observation("b", "OK (0)", "PERMISSION_DENIED", Status.FAIL, request_id="gone").of(
            "no-roles"
        ),
    ]
    declared = (Probe("denied", "denied"), Probe("no-roles", "no roles"))
    outcome = settle(
        Outcome.from_observations(control, seen, passed="ok"), declared, lambda key: False
    )
    run = run_with(("rid-1", sent((search(5),), ("authorization", f"Bearer {TOKEN}"))))
    found = dict(reproducers(outcome, run, context()))  # type: ignore[arg-type]
    assert set(found) == {"AUTHZ-001(denied)", "AUTHZ-001(no-roles)"}
    assert found["AUTHZ-001(denied)"].grpcurl
    assert found["AUTHZ-001(no-roles)"].command == context().rerun
    text = failure_text(outcome, list(found.items()))
    assert "Reproduce AUTHZ-001(denied) (the harness got OK (0)):" in text
    assert "set first: $HIPAA_TOKEN_LEAST_PRIVILEGED" in text
    assert TOKEN not in text


def test_shell_words_and_placeholders() -> None:
    assert placeholder("least-privileged") == "HIPAA_TOKEN_LEAST_PRIVILEGED"
    word = Arg('a "$x" `y` $HIPAA_TOKEN_A', ("HIPAA_TOKEN_A",)).shell()
    assert word == '"a \\"\\$x\\" \\`y\\` $HIPAA_TOKEN_A"'
    shell = subprocess.run(
        ["sh", "-c", f"printf %s {word}"],
        env={"HIPAA_TOKEN_A": "T", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == 'a "$x" `y` T'


def test_the_sent_log_is_bounded() -> None:
    log = SentLog(max_total=10)
    log.add("a", sent((b"x" * 8,)))
    log.add("b", sent((b"y" * 8,)))
    assert log.get("a") is None
    assert log.get("b") is not None
    log.add("big", sent((b"z" * (70 * 1024),)))
    big = log.get("big")
    assert big is not None
    assert big.requests is None


def test_replay_flags() -> None:
    assert header("Authorization: Bearer x") == ("authorization", "Bearer x")
    assert header("trace-bin: AAE=") == ("trace-bin", b"\x00\x01")
    with pytest.raises(UsageError):
        header("no colon")
    assert messages(["EAU="], []) == (b"\x10\x05",)
    assert messages([], []) == (b"",)
    with pytest.raises(UsageError):
        messages(["%%"], [])
    assert code_matches("OK (0)", "OK (0)")
    assert code_matches("permission_denied", "PERMISSION_DENIED (7)")
    assert code_matches("7", "PERMISSION_DENIED (7)")
    assert not code_matches("OK (0)", "PERMISSION_DENIED (7)")


def test_replay_usage_errors_exit_4(capsys) -> None:
    from harness.cli import main

    base = ["replay", "127.0.0.1:1", "--method", SEARCH, "--plaintext"]
    assert main([*base, "--request-b64", "%%"]) == 4
    assert "--request-b64: not base64" in capsys.readouterr().err
    assert main([*base, "-H", "no colon"]) == 4
    assert main(["replay", "127.0.0.1:1", "--method", SEARCH, "--cert", "c.pem"]) == 4
    assert "--cert needs --key" in capsys.readouterr().err
