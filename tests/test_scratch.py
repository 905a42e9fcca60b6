"""The private scratch directory refuses what another user could have planted."""

import os

import pytest

from harness.errors import HarnessError
from harness.scratch import private_dir


@pytest.fixture
def tmp_base(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    return tmp_path


def test_made_private_and_reused(tmp_base):
    path = private_dir()
    assert path.parent == tmp_base
    assert path.stat().st_mode & 0o777 == 0o700
    assert private_dir() == path


def test_a_directory_open_to_others_is_refused(tmp_base):
    path = tmp_base / f"hipaa-grpc-{os.getuid()}"
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    with pytest.raises(HarnessError, match="open to other users"):
        private_dir()


def test_a_symlink_is_refused(tmp_base):
    elsewhere = tmp_base / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_base / f"hipaa-grpc-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(HarnessError, match="not a directory of this user's"):
        private_dir()
