from pathlib import Path

import pytest

from harness.config import UNSUPPORTED, Config, discover_config, load_config
from harness.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "hipaa.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_config_resolves_paths_against_its_own_directory(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("x")
    cfg = load_config(
        write(
            tmp_path,
            """
environment = "non-production"
[tls]
server_name = "records.example"
ca_bundle = "certs/ca.pem"
extra_ports = [8443]
[auth.principals.admin]
token_env = "ADMIN_TOKEN"
[schema.request_templates]
"/a.B/C" = '{"id": "1"}'
""",
        )
    )
    assert cfg.get("environment") == "non-production"
    assert cfg.path("tls.ca_bundle") == tmp_path / "certs" / "ca.pem"
    assert cfg.get("tls.extra_ports") == [8443]
    assert cfg.table("auth.principals") == {"admin": {"token_env": "ADMIN_TOKEN"}}
    assert cfg.table("schema.request_templates") == {"/a.B/C": '{"id": "1"}'}


def test_defaults_apply_when_keys_are_absent():
    cfg = Config()
    assert cfg.get("environment") == "production"
    assert cfg.get("audit.request_id_key") == "x-request-id"
    assert cfg.get("limits.max_recv_bytes") == 4 * 1024 * 1024
    assert not cfg.has("tls.ca_bundle")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tls]\nca_bundel = 'x'\n", "tls.ca_bundel: unknown key (did you mean tls.ca_bundle?)"),
        ("[tls]\nextra_ports = [0]\n", "tls.extra_ports[0]: expected a port number 1-65535, got 0"),
        (
            "[tls]\nallow_wildcard = 'yes'\n",
            "tls.allow_wildcard: expected true or false, got 'yes' (string)",
        ),
        (
            "environment = 'prod'\n",
            "environment: expected one of production, non-production, got 'prod'",
        ),
        ("tls = 5\n", "tls: expected a table [tls], got 5 (integer)"),
        ("[tls]\nca_bundle = 'missing.pem'\n", "tls.ca_bundle: file not found"),
        (
            "[auth.principals]\nadmin = 'tok'\n",
            "auth.principals.admin: expected a table, got 'tok' (string)",
        ),
        ("[auth.principals.admin]\ntoken = 'x'\n", "auth.principals.admin.token: unknown key"),
        ("[tls\n", "not valid TOML"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_pyproject_tool_hipaa_table(tmp_path):
    write(
        tmp_path,
        "[project]\nname='x'\n[tool.hipaa]\nenvironment='non-production'\n",
        "pyproject.toml",
    )
    cfg = discover_config(None, tmp_path)
    assert cfg.get("environment") == "non-production"
    assert cfg.sources[0].endswith("pyproject.toml [tool.hipaa]")


def test_pyproject_errors_name_the_table(tmp_path):
    write(tmp_path, "[tool.hipaa]\nenvironmnt='x'\n", "pyproject.toml")
    with pytest.raises(
        ConfigError, match=r"pyproject.toml \[tool.hipaa\]: environmnt: unknown key"
    ):
        discover_config(None, tmp_path)


def test_discovery_prefers_explicit_then_hipaa_toml(tmp_path):
    write(tmp_path, "[tool.hipaa]\nenvironment='production'\n", "pyproject.toml")
    write(tmp_path, "environment='non-production'\n")
    assert discover_config(None, tmp_path).get("environment") == "non-production"
    other = write(tmp_path, "environment='production'\n", "other.toml")
    assert discover_config(other, tmp_path).get("environment") == "production"
    assert discover_config(None, tmp_path / "nowhere").sources == ()


def test_overlay_user_config_wins(tmp_path):
    base = load_config(write(tmp_path, "[tls]\nserver_name='a'\nextra_ports=[1]\n", "a.toml"))
    top = load_config(write(tmp_path, "[tls]\nserver_name='b'\n", "b.toml"))
    merged = base.overlay(top)
    assert merged.get("tls.server_name") == "b"
    assert merged.get("tls.extra_ports") == [1]


@pytest.mark.parametrize(
    ("principal", "message"),
    [
        ("client_cert = 'c.pem'\n", "client_cert and client_key go together"),
        ("token_env = 'A'\ntoken_file = 'c.pem'\n", "give one token source"),
        ("", "needs a token source or a client_cert"),
    ],
)
def test_principal_errors(tmp_path, principal, message):
    from harness.principals import principals_from

    (tmp_path / "c.pem").write_text("x")
    cfg = load_config(write(tmp_path, f"[auth.principals.svc]\n{principal}"))
    with pytest.raises(ConfigError, match=message):
        principals_from(cfg.table("auth.principals"), "hipaa.toml")


@pytest.mark.parametrize("key", sorted(UNSUPPORTED))
def test_keys_not_acted_on_yet_are_refused_naming_the_control(tmp_path, key):
    section, _, name = key.rpartition(".")
    value = 1 if name.endswith(("_s", "port", "bytes")) else '"x"'
    if name.endswith("_cmd"):
        value = '["true"]'
    path = tmp_path / "hipaa.toml"
    path.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError, match="not supported yet") as info:
        load_config(path)
    assert key in str(info.value)
    assert UNSUPPORTED[key].split(" ")[0] in str(info.value)
