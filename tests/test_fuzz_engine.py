"""The fuzzing engine: strategies, wire mutations, the in-process dispatcher, Atheris runs."""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config import load_config
from harness.engine import (
    GARBAGE_TOKEN,
    NO_CREDENTIALS,
    Case,
    Finding,
    Local,
    structured,
    surface_from,
)
from harness.fuzz import messages
from harness.inprocess import InProcess, load
from harness.spawn import spawn
from harness.target import parse_target
from harness.wire import BOMB_DEPTHS, MUTATIONS, join, mutate, nesting_bomb, recursion_path, split
from targets.reference import schema

REQUESTS = ["SearchPatientsRequest", "GetPatientRequest", "UpdatePatientRequest", "Patient"]


@pytest.fixture(scope="module")
def crash_nested():
    spawned = spawn(parse_target("spawn:reference+crash-nested"))
    yield spawned
    spawned.stop()


@pytest.fixture
def local(crash_nested):
    config = load_config(crash_nested.config_path)
    surface = surface_from(None, config)
    assert not isinstance(surface, str)
    target = load(config.str_("fuzz.inprocess_entrypoint"), config.table("fuzz.inprocess_options"))
    yield surface, Local(surface, InProcess(target), target.public_methods)
    assert target.close is not None
    target.close()


@settings(max_examples=40, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.sampled_from(REQUESTS).flatmap(lambda name: messages(schema.message(name), max_depth=6)))
def test_every_generated_message_round_trips(msg):
    data = msg.SerializeToString()
    assert type(msg).FromString(data).SerializeToString() == data


@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_message_that_serializes(body):
    cls = schema.message("SearchPatientsRequest")
    first = structured(cls, body)
    assert cls.FromString(first.SerializeToString()) == first
    assert structured(cls, body) == first  # deterministic: a reproducer replays


def test_fixed_width_fields_keep_their_offsets_when_text_changes():
    cls = schema.message("SearchPatientsRequest")
    size = (7919).to_bytes(4, "little")
    short = structured(cls, b"\xff" + size + b"\x02\0\0\0\0" + b"\x01Q")
    long = structured(cls, b"\xff" + size + b"\x02\0\0\0\0" + b"\x05QQQQQ")
    assert short.page_size == long.page_size == 7919
    assert short.sort == long.sort == 2


def test_split_and_join_are_inverse_on_a_valid_request():
    msg = schema.message("SearchPatientsRequest")(family_name_prefix="Ab", page_size=3, sort=1)
    msg.filter.any_of.add().family_name_prefix = "x"
    data = msg.SerializeToString()
    fields = split(data)
    assert fields is not None
    assert [n for n, _, _ in fields] == [1, 2, 4, 5]
    assert join(fields) == data


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
def test_every_mutation_changes_the_bytes(kind):
    desc = schema.message("SearchPatientsRequest").DESCRIPTOR
    seed = schema.message("SearchPatientsRequest")(family_name_prefix="Ab", page_size=3)
    data = seed.SerializeToString()
    outs = {mutate(data, kind, random.Random(i), desc) for i in range(5)}
    assert outs - {data}


def test_nesting_bombs_follow_the_recursive_field():
    cls = schema.message("SearchPatientsRequest")
    path = recursion_path(cls.DESCRIPTOR)
    assert [f.name for f in path] == ["filter", "any_of"]
    nine = cls.FromString(nesting_bomb(cls.DESCRIPTOR, 9))
    depth, node = 0, nine.filter
    while node.any_of:
        depth, node = depth + 1, node.any_of[0]
    assert depth == 9
    with pytest.raises(DecodeError):
        cls.FromString(nesting_bomb(cls.DESCRIPTOR, max(BOMB_DEPTHS)))
    assert nesting_bomb(schema.message("GetPatientRequest").DESCRIPTOR, 5) is None


def test_inprocess_dispatch_runs_interceptors_and_handlers(local):
    surface, local = local
    search = surface.method("/hipaagrpc.reference.v1.PatientRecords/SearchPatients")
    caller = search.callers[0]
    fine = local.service.call(search.path, search.seed, surface.metadata(caller), max_responses=99)
    assert fine.code == grpc.StatusCode.OK
    assert fine.reached
    assert fine.responses >= 1
    one = local.service.call(search.path, search.seed, surface.metadata(caller), max_responses=1)
    assert one.code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED)
    assert one.responses == 1
    denied = local.service.call(search.path, search.seed, surface.metadata(NO_CREDENTIALS))
    assert denied.code == grpc.StatusCode.UNAUTHENTICATED
    assert not denied.reached
    assert local.check(Case(search, GARBAGE_TOKEN, search.seed)) is None
    bomb = nesting_bomb(search.cls.DESCRIPTOR, 20)
    finding = local.check(Case(search, caller, bomb))
    assert finding is not None
    assert finding.why == "uncaught RecursionError"
    again = Finding.from_json(json.loads(json.dumps(finding.to_json())))
    assert again == finding
    assert again.key == finding.key


def test_whitebox_atheris_finds_the_crash_and_writes_a_reproducer(crash_nested, tmp_path):
    env = {
        **os.environ,
        "HIPAA_FUZZ_CONFIG": str(crash_nested.config_path),
        "HIPAA_FUZZ_CRASHES": str(tmp_path / "crashes"),
        "HIPAA_FUZZ_KEEP_GOING": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.fuzzers.whitebox",
            "-max_total_time=10",
            "-seed=3",
            str(tmp_path / "corpus"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    files = list((tmp_path / "crashes").glob("*.json"))
    assert files, done.stderr[-2000:]
    doc = json.loads(files[0].read_text())
    assert doc["replay"].startswith("hipaa-grpc fuzz replay ")
    assert any((tmp_path / "corpus").iterdir())


def test_an_entrypoint_that_does_not_import_is_one_config_error():
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot import"):
        load("no_such_module_xyz:target", {})
    with pytest.raises(ConfigError, match="module:function"):
        load("just-a-name", {})


def test_whitebox_runs_one_input_alone_as_a_reproducer(crash_nested, tmp_path):
    # How an out-of-memory candidate is sent again: the kept input as the only argument
    # (no corpus directory to seed).
    kept = tmp_path / "oom-candidate"
    kept.write_bytes(b"\x0a\x01x")
    env = {
        **os.environ,
        "HIPAA_FUZZ_CONFIG": str(crash_nested.config_path),
        "HIPAA_FUZZ_CRASHES": str(tmp_path / "crashes"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "harness.fuzzers.whitebox", "-timeout=10", str(kept)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"Running: {kept}" in done.stderr
    assert kept.read_bytes() == b"\x0a\x01x"


def _nice_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19: nice


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_whitebox_child_lowers_its_priority_as_told(crash_nested, tmp_path):
    # FUZZ-002 runs it beside the probes: it must take only the CPU they leave.
    env = {
        **os.environ,
        "HIPAA_FUZZ_CONFIG": str(crash_nested.config_path),
        "HIPAA_FUZZ_CRASHES": str(tmp_path / "crashes"),
        "HIPAA_FUZZ_NICE": "7",
    }
    before = os.nice(0)
    child = subprocess.Popen(
        [sys.executable, "-m", "harness.fuzzers.whitebox", "-max_total_time=5", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: set[int | None] = set()
    try:
        deadline = time.monotonic() + 30
        while child.poll() is None and time.monotonic() < deadline:
            seen.add(_nice_of(child.pid))
            if min(before + 7, 19) in seen:
                break
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(10)
    assert min(before + 7, 19) in seen, seen
