"""``fuzz.seed_corpus``: its layouts, its config errors, and where the seeds go."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import UNSUPPORTED, load_config
from harness.engine import (
    MAX_SEED_BYTES,
    NO_CREDENTIALS,
    Case,
    FuzzMethod,
    Surface,
    load_seeds,
)
from harness.errors import ConfigError
from harness.fuzzers import seed_dir
from harness.plans.fuzzcases import parsed_seeds
from targets.reference import schema

GET = f"/{schema.SERVICE}/GetPatient"
SEARCH = f"/{schema.SERVICE}/SearchPatients"


@pytest.fixture
def surface() -> Surface:
    get = FuzzMethod(GET, schema.message("GetPatientRequest"), b"", ("clinician",), False)
    search = FuzzMethod(SEARCH, schema.message("SearchPatientsRequest"), b"", ("billing",), True)
    return Surface([get, search], {"clinician": lambda: (), "billing": lambda: ()})


def request(name: str, **fields: object) -> bytes:
    return schema.message(name)(**fields).SerializeToString()


def test_method_directories_hold_serialised_requests(surface, tmp_path):
    (tmp_path / "GetPatient").mkdir()
    (tmp_path / "GetPatient" / "one.bin").write_bytes(
        request("GetPatientRequest", patient_id="p-7")
    )
    full = f"{schema.SERVICE}.SearchPatients"  # the method with its service
    (tmp_path / full).mkdir()
    (tmp_path / full / "a").write_bytes(request("SearchPatientsRequest", page_size=7919))
    (tmp_path / "NoSuchMethod").mkdir()  # names no fuzzed method: passed over
    (tmp_path / "NoSuchMethod" / "x").write_bytes(b"\x01")
    (tmp_path / "GetPatient" / ".hidden").write_bytes(b"\x01")
    (tmp_path / "GetPatient" / "huge").write_bytes(b"\0" * (MAX_SEED_BYTES + 1))
    seeds = load_seeds(tmp_path, surface)
    assert [(c.method.path, c.caller) for c in seeds] == [(GET, "clinician"), (SEARCH, "billing")]
    assert surface.methods[0].cls.FromString(seeds[0].payload).patient_id == "p-7"
    surface.corpus = tuple(seeds)
    assert surface.seeded(surface.methods[1]) == [seeds[1].payload]


def test_top_level_files_are_engine_inputs_as_the_nightly_corpus_keeps_them(surface, tmp_path):
    case = Case(surface.methods[1], NO_CREDENTIALS, request("SearchPatientsRequest", sort=2))
    (tmp_path / "0a1b").write_bytes(surface.encode(case))
    assert load_seeds(tmp_path, surface) == [case]
    # and what the fuzzers write into their corpus from a seed corpus decodes the same
    surface.corpus = (case,)
    corpus = tmp_path / "corpus"
    (corpus / "already-here").parent.mkdir()
    (corpus / "already-here").write_bytes(b"\0\0\0")
    seed_dir(surface, ["fuzzer", "-max_total_time=1", str(corpus)])
    written = sorted(p.read_bytes() for p in corpus.iterdir())
    assert surface.encode(case) in written
    assert len(written) == 2  # a corpus that is not empty gets no valid inputs again
    seed_dir(surface, ["fuzzer", str(corpus)])
    assert len(list(corpus.iterdir())) == 2  # named by content: nothing twice


def test_fuzz_001_takes_the_seeds_that_parse_as_the_methods_request(surface):
    good = request("GetPatientRequest", patient_id="p-1")
    msgs = parsed_seeds(surface.methods[0], [good, b"\xff\xff\xff"])
    assert [m.patient_id for m in msgs] == ["p-1"]


def test_seed_corpus_is_a_supported_key(tmp_path):
    assert "fuzz.seed_corpus" not in UNSUPPORTED
    (tmp_path / "seeds").mkdir()
    (tmp_path / "hipaa.toml").write_text('[fuzz]\nseed_corpus = "seeds"\n')
    assert load_config(tmp_path / "hipaa.toml").path("fuzz.seed_corpus") == tmp_path / "seeds"


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: None, "fuzz.seed_corpus: file not found"),
        (lambda d: d.write_bytes(b""), "fuzz.seed_corpus: not a directory"),
    ],
)
def test_a_seed_corpus_that_is_not_a_readable_directory_is_one_config_error(
    tmp_path, make, problem
):
    make(tmp_path / "seeds")
    (tmp_path / "hipaa.toml").write_text('[fuzz]\nseed_corpus = "seeds"\n')
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(tmp_path / "hipaa.toml")
    assert "\n" not in str(caught.value)


def test_an_unreadable_seed_corpus_is_one_config_error(tmp_path, monkeypatch):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "hipaa.toml").write_text('[fuzz]\nseed_corpus = "seeds"\n')

    def denied(self: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)  # root reads anything: deny it here
    with pytest.raises(ConfigError, match=r"fuzz\.seed_corpus: cannot read .*Permission denied"):
        load_config(tmp_path / "hipaa.toml")


def test_the_fuzz_command_refuses_a_missing_seed_corpus_in_one_line(tmp_path):
    (tmp_path / "hipaa.toml").write_text('[fuzz]\nseed_corpus = "nowhere"\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "fuzz",
            "--target",
            "127.0.0.1:1",
            "--config",
            str(tmp_path / "hipaa.toml"),
            "--budget",
            "1s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "GRPC_VERBOSITY": "NONE"},
    )
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1
    assert "fuzz.seed_corpus: file not found" in done.stderr
