"""Atheris whitebox fuzzer entry point; see :mod:`harness.fuzzers` for its environment."""

from __future__ import annotations

import sys

from harness.fuzzers import run


def main() -> None:
    """Fuzz until libFuzzer's limits (or a finding, unless HIPAA_FUZZ_KEEP_GOING=1)."""
    run("whitebox", sys.argv)


if __name__ == "__main__":
    main()
