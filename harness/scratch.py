"""A private scratch directory for files that must outlive a process that cannot clean up.

libFuzzer ends its process without Python's clean-up, so the white-box dictionary and the
self-fuzz corpora are kept by name and reused rather than made afresh per run. Named files
in the shared temp directory could be planted or read by another local user; they live in a
directory only this user can enter, which is checked every time, not trusted.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from harness.errors import HarnessError


def private_dir() -> Path:
    """``<tmp>/hipaa-grpc-<uid>``, mode 0700, owned by this user (made if missing).

    Raises:
        HarnessError: the path exists but is a symlink, not a directory, another user's, or
            open to others.
    """
    path = Path(tempfile.gettempdir()) / f"hipaa-grpc-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise HarnessError(f"{path} is not a directory of this user's: refusing to use it")
    if info.st_mode & 0o077:
        raise HarnessError(f"{path} is open to other users (mode {info.st_mode & 0o777:o})")
    return path
