"""Raw HTTP/2 reproducers: what a raw probe sent is kept, and becomes a ``replay --frames`` line."""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import pytest

from harness.canary import CanarySet
from harness.catalogue import CATALOGUE
from harness.errors import UsageError
from harness.h2client import RAW, H2Client, RawLog, RawSent, Reply, answer, grpc_frame
from harness.outcome import Observation, Outcome, Probe, Status, settle
from harness.replay import SentLog, answer_matches, frames_plan, frames_text
from harness.reproduce import Context, reproduce_raw, reproducers
from harness.transport import Transport

TOKEN = "tok-" + "s3cr3t" * 6
PATH = "/hipaagrpc.reference.v1.PatientRecords/GetPatient"


def context() -> Context:
    return Context(
        address="127.0.0.1:5000",
        transport=Transport.TLS,
        authority="localhost",
        cacert="/keys/ca.pem",
        client=("/keys/client.pem", "/keys/client-key.pem"),
        principal_certs={"clinician": ("/keys/clin.pem", "/keys/clin-key.pem")},
        protoset=None,
        request_id_key="x-request-id",
        tokens={"least-privileged": TOKEN},
        presentations={},
        canaries=CanarySet.for_seed(7),
        rerun="pytest --hipaa-target=127.0.0.1:5000 --hipaa-seed=7 -k test_FUZZ_003",
    )


def raw(*extra: tuple[str, str], body: bytes | None = b"\0\0\0\0\0") -> RawSent:
    headers = ((":method", "POST"), (":path", PATH), ("content-type", "text/plain"), *extra)
    return RawSent(headers, body, settings_first=True, answered="HTTP 200, grpc-status 0")


def words_after(line: str, flag: str) -> str:
    words = shlex.split(line)
    return words[words.index(flag) + 1]


# -- the log ----------------------------------------------------------------------------


def test_the_log_is_bounded_and_notes_the_answer() -> None:
    log = RawLog(max_total=300)
    big = RawSent(((":path", "x" * 200),), b"")
    log.add("one", big)
    log.add("two", big)  # the oldest goes
    assert log.get("one") is None
    assert log.get("two") is not None
    log.add("huge", RawSent(((":path", "x" * (3 * 1024 * 1024)),), b""))  # over one request's
    assert log.get("huge") is None
    log.answered("two", "RST_STREAM code 2", 4.0)
    kept = log.get("two")
    assert kept is not None
    assert (kept.answered, kept.timeout_s) == ("RST_STREAM code 2", 4.0)


def test_answer_classifies_as_the_judges_read() -> None:
    assert answer(Reply(http_status=200, grpc_status=0, closed=True)) == "HTTP 200, grpc-status 0"
    assert answer(Reply(reset_code=7)) == "RST_STREAM code 7"
    assert answer(Reply(goaway_code=11, closed=True)) == "GOAWAY code 11"
    assert answer(Reply(timed_out=True)) == "no answer"
    assert answer(Reply(closed=True)) == "connection closed"
    assert answer_matches("http 200,  grpc-status 0", "HTTP 200, grpc-status 0")
    assert not answer_matches("HTTP 200, grpc-status 0", "HTTP 200, grpc-status 8")


@dataclass
class Peer:
    """The server end of a socket pair, speaking h2."""

    sock: socket.socket
    conn: h2.connection.H2Connection

    def serve_one(self) -> None:
        """Read the client's frames; answer the request HTTP 200 with grpc-status 0."""
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.sock.settimeout(5)
        while True:
            events = self.conn.receive_data(self.sock.recv(65536))
            ended = [e for e in events if isinstance(e, h2.events.StreamEnded)]
            if ended:
                sid = ended[0].stream_id
                self.conn.send_headers(sid, [(":status", "200")])
                self.conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
                self.sock.sendall(self.conn.data_to_send())
                return


def test_a_recorded_request_keeps_its_headers_pacing_and_answer() -> None:
    ours, theirs = socket.socketpair()
    peer = Peer(
        theirs,
        h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, validate_inbound_headers=False)
        ),
    )
    with ours, theirs:
        client = H2Client(ours, "localhost", "https")
        headers = client.headers(PATH, metadata=(("X-Upper", "1"), ("x-request-id", "rid-9")))
        sid = client.request(headers, grpc_frame(b""), record="rid-9", principal="clinician")
        peer.serve_one()
        client.wait(sid, 5)
    kept = RAW.get("rid-9")
    assert kept is not None
    assert kept.headers == tuple(headers)  # the upper-case name as given
    assert kept.body == grpc_frame(b"")
    assert kept.principal == "clinician"
    assert not kept.settings_first
    assert not kept.within
    assert kept.answered == "HTTP 200, grpc-status 0"
    assert kept.path == PATH


# -- the --frames text ------------------------------------------------------------------


def test_frames_text_round_trips_and_fills_placeholders() -> None:
    sent = raw(("authorization", "Bearer ${HIPAA_TOKEN_A}"), ("x hipaa probe", "1"))
    back = frames_plan(frames_text(sent), {"HIPAA_TOKEN_A": "T"})
    assert dict(back.headers)["authorization"] == "Bearer T"
    assert dict(back.headers)["x hipaa probe"] == "1"
    assert (back.body, back.settings_first, back.within) == (sent.body, True, False)
    with pytest.raises(UsageError, match=r"\$HIPAA_TOKEN_A is not set"):
        frames_plan(frames_text(sent), {})
    with pytest.raises(UsageError, match="not a frames plan"):
        frames_plan("aGVsbG8=", {})
    # Only the reproducers' own placeholders are filled: any other ${NAME} stays as text.
    other = raw(("x-hipaa-probe", "${AWS_SECRET_ACCESS_KEY}"))
    kept = frames_plan(frames_text(other), {"AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    assert dict(kept.headers)["x-hipaa-probe"] == "${AWS_SECRET_ACCESS_KEY}"


def test_a_compressed_body_gets_no_line() -> None:
    # The canary scan reads the body as sent: a compressed one could hide a canary.
    repro = reproduce_raw("rid-5", raw(("grpc-encoding", "gzip")), context())
    assert not repro.replay
    assert "compressed" in repro.note
    assert reproduce_raw("rid-6", raw(("grpc-encoding", "identity")), context()).replay


def test_frames_text_from_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "frames.txt"
    path.write_text(frames_text(raw(body=None)) + "\n")
    assert frames_plan(f"@{path}", {}).body is None


def test_a_1_mib_header_fits_on_the_line() -> None:
    sent = raw(("x-hipaa-probe", "h" * (1024 * 1024)))
    line = reproduce_raw("rid-1", sent, context()).replay
    assert len(line) < 4096
    back = frames_plan(words_after(line, "--frames"), {})
    assert dict(back.headers)["x-hipaa-probe"] == "h" * (1024 * 1024)


# -- the reproducer ---------------------------------------------------------------------


def test_the_replay_line_carries_no_token_and_expects_the_answer() -> None:
    sent = raw(("Authorization", f"Bearer {TOKEN}"))
    repro = reproduce_raw("rid-2", replace_principal(sent, "clinician"), context())
    assert TOKEN not in repro.replay
    assert repro.fill == ("HIPAA_TOKEN_LEAST_PRIVILEGED",)
    assert words_after(repro.replay, "--expect") == "HTTP 200, grpc-status 0"
    assert words_after(repro.replay, "--cert") == "/keys/clin.pem"  # the principal's own
    assert repro.code == "HTTP 200, grpc-status 0"
    assert repro.method == PATH
    back = frames_plan(
        words_after(repro.replay, "--frames"), {"HIPAA_TOKEN_LEAST_PRIVILEGED": TOKEN}
    )
    assert dict(back.headers)["Authorization"] == f"Bearer {TOKEN}"


def replace_principal(sent: RawSent, principal: str) -> RawSent:
    from dataclasses import replace

    return replace(sent, principal=principal)


def test_a_canary_or_a_token_in_the_body_gets_no_line() -> None:
    canary = CanarySet.for_seed(7).ssn
    repro = reproduce_raw("rid-3", raw(("x-note", canary)), context())
    assert not repro.replay
    assert "canary" in repro.note
    repro = reproduce_raw("rid-4", raw(body=TOKEN.encode()), context())
    assert not repro.replay
    assert "token" in repro.note


def test_a_raw_observation_finds_its_request() -> None:
    RAW.add("rid-raw", raw())
    seen = [Observation("(a)", "HTTP 200", "refused", Status.FAIL, request_id="rid-raw").of("a")]
    outcome = settle(
        Outcome.from_observations(CATALOGUE["FUZZ-003"], seen, passed="ok"),
        (Probe("a", "text/plain"),),
        lambda key: False,
    )

    @dataclass
    class Caller:
        sent: SentLog

    @dataclass
    class Run:
        caller: Caller

    found = dict(reproducers(outcome, Run(Caller(SentLog())), context()))  # type: ignore[arg-type]
    assert "--frames" in found["FUZZ-003(a)"].replay


def test_replay_wants_a_method_or_frames_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    frames = frames_text(raw())
    assert main(["replay", "127.0.0.1:1"]) == 4
    assert main(["replay", "127.0.0.1:1", "--method", PATH, "--frames", frames]) == 4
    assert "--method" in capsys.readouterr().err
