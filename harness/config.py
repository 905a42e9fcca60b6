"""Loading ``hipaa.toml`` (or ``[tool.hipaa]`` in pyproject.toml) with exact errors.

Every key of section 3 of the catalogue is declared here with its type and default, so a
typo (``tls.ca_bundel``) or a wrong type is reported with the file, the dotted key and what
was expected, before anything is sent to the target. Paths are resolved against the
directory of the file that names them.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

Checker = Callable[[Any, "_Where"], Any]


@dataclass(frozen=True)
class _Where:
    source: str
    key: str
    base: Path

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key, problem)


def _describe(value: object) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "table" if isinstance(value, dict) else type(value).__name__
    )
    text = repr(value)
    return f"{text[:40]}... ({kind})" if len(text) > 40 else f"{text} ({kind})"


def _str(value: Any, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.fail(f"expected a string, got {_describe(value)}")
    return value


def _id(value: Any, where: _Where) -> str:
    """A record ID: a string, or an integer (kept as its digits: ``42`` -> ``"42"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise where.fail(f"expected a string or an integer ID, got {_describe(value)}")
    return value


def _bool(value: Any, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.fail(f"expected true or false, got {_describe(value)}")
    return value


def _int(value: Any, where: _Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.fail(f"expected an integer, got {_describe(value)}")
    return value


def _num(value: Any, where: _Where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.fail(f"expected a number, got {_describe(value)}")
    return float(value)


def _port(value: Any, where: _Where) -> int:
    port = _int(value, where)
    if not 1 <= port <= 65535:
        raise where.fail(f"expected a port number 1-65535, got {port}")
    return port


def _path(value: Any, where: _Where) -> Path:
    text = _str(value, where)
    path = (where.base / text).expanduser() if not Path(text).is_absolute() else Path(text)
    if not path.exists():
        raise where.fail(f"file not found: {path}")
    return path


def _dir(value: Any, where: _Where) -> Path:
    path = _path(value, where)
    if not path.is_dir():
        raise where.fail(f"not a directory: {path}")
    try:
        next(path.iterdir(), None)
    except OSError as exc:
        raise where.fail(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _any(value: Any, where: _Where) -> Any:
    return value


def _list(item: Checker) -> Checker:
    def check(value: Any, where: _Where) -> list[Any]:
        if not isinstance(value, list):
            raise where.fail(f"expected an array, got {_describe(value)}")
        return [
            item(v, _Where(where.source, f"{where.key}[{i}]", where.base))
            for i, v in enumerate(value)
        ]

    return check


def _choice(*options: str) -> Checker:
    def check(value: Any, where: _Where) -> str:
        text = _str(value, where)
        if text not in options:
            raise where.fail(f"expected one of {', '.join(options)}, got {text!r}")
        return text

    return check


def _source(value: Any, where: _Where) -> Path | list[str]:
    """A file or glob (resolved, may not exist yet) or a read-only command (an array)."""
    if isinstance(value, list):
        return [
            _str(v, _Where(where.source, f"{where.key}[{i}]", where.base))
            for i, v in enumerate(value)
        ]
    text = _str(value, where)
    return Path(text) if Path(text).is_absolute() else where.base / text


def _json_or_table(value: Any, where: _Where) -> str | dict[str, Any]:
    if isinstance(value, (str, dict)):
        return value
    raise where.fail(f"expected a JSON string or a table, got {_describe(value)}")


def _map(item: Checker) -> Checker:
    """A table whose keys the user chooses (method names, principal names...)."""

    def check(value: Any, where: _Where) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise where.fail(f"expected a table, got {_describe(value)}")
        return {
            k: item(v, _Where(where.source, f"{where.key}.{k}", where.base))
            for k, v in value.items()
        }

    return check


def _table(schema: Mapping[str, Any]) -> Checker:
    def check(value: Any, where: _Where) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise where.fail(f"expected a table, got {_describe(value)}")
        return _validate(value, schema, where)

    return check


_KEYPAIR = {"cert": _path, "key": _path}

_PRINCIPAL = {
    "token_file": _path,
    "token_env": _str,
    "token_cmd": _list(_str),
    "client_cert": _path,
    "client_key": _path,
    "header": _str,
    "scheme": _str,
}

_HASH_CHAIN = {
    "algorithm": _choice("sha256", "sha384", "sha512"),
    # json-sorted-compact: the name sorted-compact had before the catalogue named it
    "canonicalization": _choice("jcs", "sorted-compact", "json-sorted-compact", "raw-line"),
    "link": _choice("concat", "prev-in-record"),
    "genesis": _str,
    "prev_field": _str,
    "hash_field": _str,
    "seq_field": _str,
}


def _hash_chain(value: Any, where: _Where) -> dict[str, Any]:
    """``audit.hash_chain``: its keys, and a combination of them that can be verified."""
    table: dict[str, Any] = _table(_HASH_CHAIN)(value, where)
    hash_field, prev_field = table.get("hash_field", "hash"), table.get("prev_field", "prev_hash")
    if table.get("link", "concat") == "concat" and not hash_field:
        raise where.fail('link = "concat" needs the hash_field each record keeps its hash in')
    if table.get("link") == "prev-in-record" and not prev_field:
        raise where.fail('link = "prev-in-record" needs the prev_field that holds the hash')
    if table.get("canonicalization") == "raw-line" and hash_field:
        raise where.fail(
            'canonicalization = "raw-line" hashes the line as written, which cannot leave its '
            'own hash out: set hash_field = "" (the next record\'s prev_field holds it)'
        )
    return table


# Section 3 of the catalogue, with the types the harness reads. Keys it does not act on yet
# are declared too, and refused by name (UNSUPPORTED) rather than as unknown keys.
SCHEMA: dict[str, Any] = {
    "environment": _choice("production", "non-production"),
    "refl": {"allowed_roles": _list(_str)},
    "admin": {"allowlist": _list(_str), "port": _port},
    "tls": {
        "server_name": _str,
        "ca_bundle": _path,
        "expected_sans": _list(_str),
        "allow_wildcard": _bool,
        "require_ocsp": _bool,
        "min_days_to_expiry": _int,
        "extra_ports": _list(_port),
        "allow_ccm": _bool,
        "fips_required": _bool,
    },
    "mtls": {
        "required": _bool,
        "client_cert": _path,
        "client_key": _path,
        "s2s_methods": _list(_str),
        "fixtures": _table(
            {
                "expired": _table(_KEYPAIR),
                "wrong_eku": _table(_KEYPAIR),
                "revoked": _table(_KEYPAIR),
            }
        ),
    },
    "schema": {
        "descriptor_set": _path,
        "proto_files": _list(_path),
        "proto_paths": _list(_path),
        "request_templates": _map(_json_or_table),
        "public_methods": _list(_str),
        "write_methods": _list(_str),
        "read_methods": _list(_str),
        "liveness_method": _str,
        "record_types": _list(_str),
    },
    "auth": {
        "principals": _map(_table(_PRINCIPAL)),
        "rbac_matrix": _map(_list(_str)),
        "issuer": _str,
        "jwks_uri": _str,
        "jwks_file": _path,
        "issuer_private_key": _path,
        "audience": _str,
        "require_typ": _str,
        "header": _str,
        "scheme": _str,
        "fixtures": _map(_table(_PRINCIPAL)),
        "max_token_ttl_s": _int,
        "max_privileged_ttl_s": _int,
        "clock_skew_s": _int,
        "max_wait_s": _int,
        "privileged_methods": _list(_str),
        "required_amr": _list(_str),
        "required_acr": _str,
        "step_up_code": _int,
        "stream_methods": _list(_str),
        "stream_templates": _map(_json_or_table),
        "stream_grace_s": _int,
        "stream_event_cmd": _list(_str),
        "canary_callback_url": _str,
        "revoke_cmd": _list(_str),
        "revocation_sla_s": _int,
        "key_rotation_days": _int,
    },
    "authz": {
        "own_ids": _map(_list(_id)),
        "foreign_ids": _map(_list(_id)),
        "existence_hiding": _bool,
        "sensitive_fields": _list(_str),
        "sandbox_ids": _list(_id),
        "stream_methods": _list(_str),
        "emergency_methods": _list(_str),
        "per_message_errors": _bool,
    },
    "audit": {
        "source": _source,
        "format": _choice("jsonl", "fhir", "ocsf", "otlp"),
        "field_map": _map(_str),
        "outcome_map": _map(_any),
        "timestamp_format": _choice(
            "auto", "rfc3339", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns"
        ),
        "action_map": _map(_str),
        "request_id_key": _str,
        "correlation": _choice("request_id", "tuple"),
        "phi_methods": _list(_str),
        "delivery_timeout_s": _num,
        "logged_fields": _list(_str),
        "hash_chain": _hash_chain,
        "mgmt_methods": _list(_str),
        "storage_probe_cmd": _list(_str),
        "min_retention_days": _int,
        "alert_type": _str,
        "alert_source": _source,
        "alert_timeout_s": _num,
        "failure_burst": _int,
        "max_events_per_call": _int,
        "allowed_identifiers": _list(_str),
    },
    "clock": {"ntp_server": _str, "tolerance_ms": _int},
    "logs": {"sinks": _list(_source), "allowed_phi_sinks": _list(_str)},
    "phi": {"methods": _list(_str), "field_paths": _map(_list(_str))},
    "min": {
        "mask_methods": _map(_str),
        "always_returned": _list(_str),
        "role_field_allowlist": _map(_list(_str)),
        "unknown_path_policy": _choice("reject", "omit"),
        "token_patterns": _map(_str),
        "detokenize_method": _str,
        "cache_ttl_s": _num,
        "privileged_principals": _list(_str),
    },
    "limits": {
        "max_recv_bytes": _int,
        "size_probe_method": _str,
        "rate": _map(_num),
        "bulk_methods": _list(_str),
        "max_export_records": _int,
        "max_concurrent_exports": _int,
        "max_concurrent_streams": _int,
        "max_page_size": _int,
        "page_size_field": _str,
        "max_response_bytes": _int,
        "max_idle_s": _num,
    },
    "errors": {"internal_domains": _list(_str), "allowed_messages": _list(_str)},
    "fuzz": {
        "examples_per_method": _int,
        "latency_budget_ms": _num,
        "atheris_seconds": _num,
        "seed_corpus": _dir,
        "inprocess_entrypoint": _str,
        "inprocess_options": _map(_any),
        "h2_burst": _int,
    },
    "safety": {
        "allow_mutations": _bool,
        "allow_transport_abuse": _bool,
        "allow_issuer_fetch": _bool,
        "max_requests": _int,
        "max_duration_s": _num,
    },
    "evidence": {
        "dir": _str,
        "history_dir": _str,
        "secret_store": _str,
        "signing_cmd": _list(_str),
        "signing_key": _path,
    },
    "cloud": {
        "provider": _choice("aws"),
        "aws": {
            "regions": _list(_str),
            "profile": _str,
            "role_arn": _str,
            "endpoint_url": _str,
            "phi_tag": _str,
            "resources": _list(_str),
            "audit_buckets": _list(_str),
            "vpc_endpoints": _list(_str),
        },
    },
}

#: Catalogue keys the harness does not act on yet, with the control each would feed. A
#: config that sets one is refused: a user who writes it would believe it acts.
UNSUPPORTED: dict[str, str] = {
    "auth.stream_event_cmd": "AUTHN-009 (events triggered on server streams)",
    "auth.canary_callback_url": "AUTHN-004 (a callback that records jku/x5u fetches)",
    "auth.revoke_cmd": "MIN-004 (4) (a revoked grant polled like an update)",
    "auth.revocation_sla_s": "MIN-004 (4)",
    "evidence.secret_store": "AUTHN-005 (b) (replaying the previous run's token)",
}

DEFAULTS: dict[str, Any] = {
    "environment": "production",
    "audit.request_id_key": "x-request-id",
    "limits.max_recv_bytes": 4 * 1024 * 1024,
    "safety.allow_mutations": False,
    "safety.allow_transport_abuse": False,
    "safety.max_requests": 10_000,
    "safety.max_duration_s": 300.0,
    "fuzz.h2_burst": 500,
    "tls.extra_ports": [],
    "refl.allowed_roles": [],
    "schema.public_methods": [],
}


def _all_keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in schema.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys += _all_keys(v, f"{prefix}{k}.")
    return keys


def _validate(data: Mapping[str, Any], schema: Mapping[str, Any], where: _Where) -> dict[str, Any]:
    out: dict[str, Any] = {}
    prefix = f"{where.key}." if where.key else ""
    for key, value in data.items():
        dotted = prefix + key
        sub = _Where(where.source, dotted, where.base)
        spec = schema.get(key)
        if spec is None:
            known = _all_keys(SCHEMA)
            close = difflib.get_close_matches(dotted, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise sub.fail(f"unknown key{hint}")
        if dotted in UNSUPPORTED:
            raise sub.fail(
                f"not supported yet (it would feed {UNSUPPORTED[dotted]}): remove it, or the "
                "run would look as if it acted on it"
            )
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise sub.fail(f"expected a table [{dotted}], got {_describe(value)}")
            out[key] = _validate(value, spec, sub)
        else:
            out[key] = spec(value, sub)
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


class Config:
    """A validated configuration: typed look-ups by dotted key, with defaults."""

    def __init__(
        self, data: Mapping[str, Any] | None = None, sources: tuple[str, ...] = ()
    ) -> None:
        self._data: dict[str, Any] = dict(data or {})
        self.sources = sources

    def overlay(self, other: Config) -> Config:
        """This config with ``other``'s keys on top (``other`` wins)."""
        return Config(_merge(self._data, other._data), self.sources + other.sources)

    def get(self, dotted: str, default: Any = None) -> Any:
        """The value at ``dotted`` (``tls.ca_bundle``), the built-in default, or ``default``."""
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return DEFAULTS.get(dotted, default)
            node = node[part]
        return node

    def has(self, dotted: str) -> bool:
        """True if the user (or the spawned target) set ``dotted``."""
        sentinel = object()
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node.get(part, sentinel)
        return node is not sentinel

    def str_(self, dotted: str) -> str | None:
        """A string setting, or ``None``."""
        value = self.get(dotted)
        return value if isinstance(value, str) else None

    def path(self, dotted: str) -> Path | None:
        """A file setting (already resolved and checked to exist), or ``None``."""
        value = self.get(dotted)
        return value if isinstance(value, Path) else None

    def str_list(self, dotted: str) -> list[str]:
        """A list-of-strings setting, empty when unset."""
        value = self.get(dotted, [])
        return [v for v in value if isinstance(v, str)]

    def table(self, dotted: str) -> dict[str, Any]:
        """A table setting, empty when unset."""
        value = self.get(dotted, {})
        return dict(value) if isinstance(value, dict) else {}


def load_config(path: Path) -> Config:
    """Load and validate one config file.

    A ``pyproject.toml`` contributes its ``[tool.hipaa]`` table; any other file is read
    whole.

    Raises:
        ConfigError: The file is missing or unreadable, is not TOML, or has a wrong key or
            value. The message names the file, the key and what was expected.
    """
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, None, "file not found") from None
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read: {exc}") from None
    return parse_config(raw, source, path.resolve().parent, pyproject=path.name == "pyproject.toml")


def parse_config(raw: bytes, source: str, base: Path, *, pyproject: bool = False) -> Config:
    """Validate a config file's bytes; relative paths resolve against ``base``.

    Raises:
        ConfigError: not UTF-8, not TOML, or a wrong key or value (never anything else).
    """
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, None, f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"not valid TOML: {exc}") from None
    if pyproject:
        tool = data.get("tool", {})
        data = tool.get("hipaa", {}) if isinstance(tool, dict) else {}
        source = f"{source} [tool.hipaa]"
    return Config(_validate(data, SCHEMA, _Where(source, "", base)), (source,))


def discover_config(explicit: Path | None, rootdir: Path) -> Config:
    """The config to use: ``--hipaa-config``, else ``hipaa.toml``, else ``[tool.hipaa]``.

    Args:
        explicit: The path given with ``--hipaa-config``, if any.
        rootdir: Where to look for ``hipaa.toml`` and ``pyproject.toml``.

    Returns:
        The loaded config, or an empty one when there is none.
    """
    if explicit is not None:
        return load_config(explicit)
    candidate = rootdir / "hipaa.toml"
    if candidate.is_file():
        return load_config(candidate)
    pyproject = rootdir / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return Config()  # not ours to judge; pytest reads it too and will say
        if "hipaa" in data.get("tool", {}):
            return load_config(pyproject)
    return Config()
