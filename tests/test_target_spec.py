import pytest

from harness.errors import TargetSpecError
from harness.target import parse_target


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:50051", "127.0.0.1", 50051),
        ("localhost:1", "localhost", 1),
        ("[::1]:65535", "::1", 65535),
        ("records.internal.example:443", "records.internal.example", 443),
    ],
)
def test_host_port(text, host, port):
    spec = parse_target(text)
    assert (spec.host, spec.port, spec.is_spawn) == (host, port, False)
    assert spec.address == (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def test_spawn_with_defects():
    spec = parse_target("spawn:reference+reflection+plaintext")
    assert spec.is_spawn
    assert spec.bundled == "reference"
    assert spec.defects == ("reflection", "plaintext")
    with pytest.raises(ValueError, match="no address"):
        _ = spec.address
    assert spec.at("127.0.0.1", 4000).address == "127.0.0.1:4000"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("nonsense", "no port"),
        ("host:", "port '' is not a number"),
        ("host:abc", "port 'abc' is not a number"),
        ("127.0.0.1:0", "port 0 is out of range 1-65535"),
        ("127.0.0.1:99999", "port 99999 is out of range 1-65535"),
        ("::1:50051", "put IPv6 addresses in brackets"),
        ("[127.0.0.1]:1", "brackets are only for IPv6"),
        ("[::1]50051", "expected HOST:PORT"),
        ("bad_host!:1", "is not a host name or address"),
        (
            "spawn:nope",
            "unknown bundled target 'nope' (known: aws-reference, reference, reference-node)",
        ),
        (
            "spawn:reference+bogus",
            "unknown defect 'bogus' for reference (known: reflection, plaintext, ",
        ),
        ("spawn:reference+", "empty defect name"),
        ("spawn:reference+reflection+reflection", "named twice"),
    ],
)
def test_errors_are_one_line_and_name_the_problem(text, message):
    with pytest.raises(TargetSpecError) as info:
        parse_target(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
