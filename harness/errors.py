"""Typed errors of the harness.

Every failure the user can cause or meet (bad target spec, broken config, unreachable
target) is one of these, with a message that fits on one line and names the problem.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class UsageError(HarnessError):
    """The user's input is wrong: target spec, option or config. pytest exits with 4."""


class TargetSpecError(UsageError):
    """``--hipaa-target`` cannot be parsed or names something that does not exist."""


class ConfigError(UsageError):
    """The config file is missing, not TOML, or holds a wrong key or value.

    The message names the file, the dotted key and what was expected.
    """

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


class TargetError(HarnessError):
    """The target cannot be used: unreachable, not speaking TLS or gRPC, or failed to start."""


class DescriptorError(HarnessError):
    """Service descriptors could not be loaded (bad FileDescriptorSet, .proto compile error)."""
