"""The harness's own parsers under Atheris: only our typed errors come out of them."""

import os
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2

from harness.descriptors import MethodCatalogue
from harness.errors import DescriptorError
from harness.fuzzers.selffuzz import TARGETS

#: Seconds of fuzzing per parser in CI; a nightly job can give it hours.
BUDGET_S = 4


@pytest.mark.parametrize("target", TARGETS)
def test_a_parser_survives_atheris(target, tmp_path):
    done = subprocess.run(
        [
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
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done " in done.stderr
    assert not list(tmp_path.glob("crash-*"))
    assert list((tmp_path / "corpus").glob("seed-*"))


def test_an_import_cycle_is_a_descriptor_error_not_a_recursion_error():
    a = descriptor_pb2.FileDescriptorProto(name="a.proto", dependency=["b.proto"])
    b = descriptor_pb2.FileDescriptorProto(name="b.proto", dependency=["a.proto"])
    with pytest.raises(DescriptorError, match="import cycle"):
        MethodCatalogue(descriptor_pb2.FileDescriptorSet(file=[a, b]), "cycle.pb")
