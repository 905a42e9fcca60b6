"""Redaction, in one place: what every text that leaves the process passes first.

:func:`redact` replaces known secrets (the run's bearer tokens) and anything shaped like a
JWT by a short hash, and, given the run's seed, masks its canaries by category
(:meth:`harness.canary.CanarySet.mask`). The plugin applies it to each control's result
before the result leaves the test (xdist, user properties, the terminal); the bundle
applies it again to everything it writes, then self-scans the files (EVID-001).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar, cast

from harness.canary import CanarySet

T = TypeVar("T")

#: Anything shaped like a JWT (JWS compact serialisation).
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
#: Shorter secrets are not replaced: they would match by chance.
MIN_SECRET = 8


def _mark(value: str) -> str:
    return f"<redacted sha256:{hashlib.sha256(value.encode()).hexdigest()[:12]}>"


def known_secrets(secrets: Iterable[str]) -> tuple[str, ...]:
    """The secrets long enough to look for, longest first."""
    return tuple(sorted((s for s in secrets if len(s) >= MIN_SECRET), key=len, reverse=True))


def _text(text: str, secrets: tuple[str, ...], canaries: CanarySet | None) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _mark(secret))
    text = JWT.sub(lambda m: _mark(m.group(0)), text)
    return canaries.mask(text) if canaries is not None else text


def _walk(value: Any, secrets: tuple[str, ...], canaries: CanarySet | None) -> Any:
    if isinstance(value, enum.Enum):  # Status and Severity are str enums: values, not text
        return value
    if isinstance(value, str):
        return _text(value, secrets, canaries)
    if isinstance(value, (list, tuple)):
        return type(value)(_walk(v, secrets, canaries) for v in value)
    if isinstance(value, dict):
        return {k: _walk(v, secrets, canaries) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _walk(getattr(value, f.name), secrets, canaries)
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)
    return value


def redact(value: T, secrets: Iterable[str] = (), *, seed: int | None = None) -> T:
    """``value`` with every known secret and JWT-shaped string replaced by its hash.

    Args:
        value: A string, or JSON-like data (dicts, lists), or a typed result (frozen
            dataclasses such as :class:`~harness.reporting.model.ControlResult`): every
            string in it is redacted (dict keys and enum values are left as they are).
        secrets: Tokens used in the run: never written, wherever they appear.
        seed: The run's seed; its canaries are masked by category (``<canary:mrn>``).
    """
    canaries = CanarySet.for_seed(seed) if seed is not None else None
    found = known_secrets(secrets)
    if not _anything(value, found, canaries):
        return value  # the common case, tested on all the text at once
    return cast(T, _walk(value, found, canaries))


def _strings(value: Any) -> Iterator[str]:
    """Every string :func:`_walk` would redact in ``value``."""
    if isinstance(value, enum.Enum):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if f.init:
                yield from _strings(getattr(value, f.name))


def _anything(value: Any, secrets: tuple[str, ...], canaries: CanarySet | None) -> bool:
    """Whether redaction may change ``value``: a secret, a JWT or a canary in its text.

    The strings are joined by NUL, which no secret, JWT or text needle holds: a match
    across two strings can only send the value to the full walk, never hide one.
    """
    text = "\0".join(_strings(value))
    if any(secret in text for secret in secrets) or JWT.search(text):
        return True
    return canaries is not None and canaries.anywhere(text)
