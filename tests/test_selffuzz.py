"""The harness's own parsers under Atheris: only our typed errors come out of them."""

import os
import re
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2

from harness.descriptors import MethodCatalogue
from harness.errors import DescriptorError
from harness.fuzzers.selffuzz import TARGETS

#: Seconds of fuzzing per parser in CI; a nightly job can give it hours.
BUDGET_S = 4


def _selffuzz(target, tmp_path, launcher=()):
    return subprocess.run(
        [
            *launcher,
            sys.executable,
            "-m",
            "harness.fuzzers.selffuzz",
            target,
            f"-max_total_time={BUDGET_S}",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "corpus"),  # created and seeded with valid inputs
        ],
        env={**os.environ, "GRPC_VERBOSITY": "NONE"},
        capture_output=True,
        text=True,
        timeout=BUDGET_S + 60,
    )


@pytest.mark.parametrize("target", TARGETS)
def test_a_parser_survives_atheris(target, tmp_path):
    done = _selffuzz(target, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done " in done.stderr
    # Guided by coverage of our code, not blind: libFuzzer counts covered edges.
    assert re.search(r"DONE +cov: [1-9]", done.stderr), done.stderr[-3000:]
    assert not list(tmp_path.glob("crash-*"))
    assert list((tmp_path / "corpus").glob("seed-*"))


#: Touches 2.2 GB, then becomes the command it is given: the peak RSS Linux carries over
#: execve, as from a pytest worker grown that large (CI: every self-fuzz run stopped
#: "out-of-memory" before its first input).
_GROWN_PARENT = (
    "import os, sys; b = bytearray(2200 << 20); b[::4096] = b'\\1' * len(b[::4096]); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def test_a_fuzzer_started_by_a_large_process_is_not_out_of_memory(tmp_path):
    done = _selffuzz("config", tmp_path, launcher=(sys.executable, "-c", _GROWN_PARENT))
    assert "rss: 2" in done.stderr  # the inherited peak is what libFuzzer reads
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done " in done.stderr


def test_an_import_cycle_is_a_descriptor_error_not_a_recursion_error():
    a = descriptor_pb2.FileDescriptorProto(name="a.proto", dependency=["b.proto"])
    b = descriptor_pb2.FileDescriptorProto(name="b.proto", dependency=["a.proto"])
    with pytest.raises(DescriptorError, match="import cycle"):
        MethodCatalogue(descriptor_pb2.FileDescriptorSet(file=[a, b]), "cycle.pb")
