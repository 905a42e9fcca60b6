"""Canary PHI: values from reserved ranges, found in every encoding, never printed."""

import base64
import json
import urllib.parse

import pytest

from harness.canary import CanarySet


@pytest.fixture(scope="module")
def canaries():
    return CanarySet.for_seed(7)


def test_values_come_from_reserved_ranges(canaries):
    v = canaries.values
    assert v["ssn"].startswith("9")  # SSN area 900-999 is never issued
    assert "-555-01" in v["phone"]
    assert v["email"].endswith("@example.com")
    assert v["ip"].startswith("2001:db8:")
    assert ".canary.example/" in v["url"]
    assert len(v["vehicle"]) == 17
    assert CanarySet.for_seed(7).nonce == canaries.nonce
    assert CanarySet.for_seed(8).nonce != canaries.nonce


@pytest.mark.parametrize(
    ("encode", "encoding"),
    [
        (lambda s: s, "exact"),
        (lambda s: s.lower(), "case-folded"),
        (lambda s: json.dumps({"v": s}), "exact"),
        (lambda s: urllib.parse.quote(s, safe=""), "exact"),
        (lambda s: base64.b64encode(s.encode()).decode(), "base64"),
        (lambda s: base64.b64encode(b"x" + s.encode()).decode(), "base64"),
        (lambda s: base64.urlsafe_b64encode(b"xy" + s.encode()).decode(), "base64"),
        (lambda s: s.encode().hex(), "hex"),
        (lambda s: s.encode().hex().upper(), "hex"),
    ],
)
def test_every_encoding_is_found(canaries, encode, encoding):
    for key in ("given_name", "mrn", "email", "url"):
        hits = canaries.scan("prefix " + encode(canaries.values[key]) + " suffix", "log")
        assert hits, (key, encoding)
        assert any(h.encoding.startswith(encoding) or encoding == "exact" for h in hits)
        assert all(h.location == "log:1" for h in hits)


def test_digits_only_and_weak_categories(canaries):
    ssn = canaries.values["ssn"]
    assert [h.category for h in canaries.scan("id " + ssn.replace("-", ""), "x")] == ["ssn"]
    zip_code = canaries.values["zip"]
    assert canaries.scan(f"hash=ab{zip_code}cd", "x") == []  # not inside another token
    weak = canaries.scan(f"zip {zip_code}", "x")
    assert [(h.category, h.strong) for h in weak] == [("zip", False)]
    both = canaries.scan(f"{canaries.values['city']} {zip_code}", "x")
    assert all(h.strong for h in both)


def test_hits_never_carry_the_line(canaries):
    hit = canaries.scan("2nd line\nname " + canaries.values["given_name"], "app.log")[0]
    assert hit.location == "app.log:2"
    assert canaries.values["given_name"] not in hit.describe()
    assert canaries.nonce not in hit.describe()


def test_mask_replaces_values_with_categories(canaries):
    text = f"bad date for {canaries.values['given_name']} ({canaries.values['ssn']})"
    masked = canaries.mask(text)
    assert masked == "bad date for <canary:names> (<canary:ssn>)"
    assert canaries.scan(masked, "x") == []


def test_clean_text_has_no_hits(canaries):
    assert canaries.scan(b"2026-11-22 INFO rpc method=/a.B/C outcome=OK " * 1000, "x") == []


def test_field_map_reaches_nested_fields():
    from harness.audit import field
    from harness.config import Config

    class _Run:
        config = Config({"audit": {"field_map": {"identity": "actor.id", "method": "rpc"}}})

    event = {"actor": {"id": "u-1"}, "rpc": "/a.B/C"}
    assert field(_Run(), event, "identity") == "u-1"  # type: ignore[arg-type]
    assert field(_Run(), event, "method") == "/a.B/C"  # type: ignore[arg-type]
    assert field(_Run(), event, "source") is None  # type: ignore[arg-type]


def test_fuzz_strategies_round_trip_and_go_deep():
    from hypothesis import HealthCheck, given, settings

    from harness.fuzz import messages
    from targets.reference import schema

    request = schema.message("SearchPatientsRequest")
    depths = []

    def depth(f, d=1):
        return max([d, *(depth(x, d + 1) for x in f.any_of)])

    @settings(
        max_examples=60, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(messages(request))
    def check(msg):
        assert (
            request.FromString(msg.SerializeToString()).SerializeToString()
            == msg.SerializeToString()
        )
        depths.append(depth(msg.filter) if msg.HasField("filter") else 0)

    check()
    assert max(depths) > 8  # deep nesting is generated, not left to chance
