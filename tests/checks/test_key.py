"""KEY-001 judged on recorded JWKS documents: no server, no HTTP.

The documents are shaped as other issuers publish them (Keycloak with ``x5c`` and an
encryption key, Auth0, a cloud IdP with several RSA keys): the judge decides by the key
members and the loaded key objects. Fetching (HTTP, discovery, bounds) is in
``tests/test_keys.py``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from harness.catalogue import Severity
from harness.checks import registered
from harness.checks.key import (
    KEY_001_PROBES,
    judge_key,
    judge_keys,
    judge_kids,
    judge_rotation,
    jwks_keys,
    thumbprint,
)
from harness.config import Config
from harness.outcome import CannotObserve, Status
from harness.plans.jwks import Jwks, Reach, resolve_jwks
from tests.checks.recorded import ec_jwk, refs, rsa_jwk, settled

SOURCE = "https://idp.example/jwks"
NOW = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc)


def rotated(keys: list[dict[str, Any]], days_ago: int = 10, limit: int | None = 90):
    seen = {thumbprint(k): NOW - dt.timedelta(days=days_ago) for k in keys}
    return judge_rotation(SOURCE, seen, NOW, limit)


# -- the declared probes are the catalogue's bullets -----------------------------------


def test_key_001_declares_its_five_bullets_all_required():
    probes = registered()["KEY-001"].probes
    assert probes == KEY_001_PROBES
    assert {p.ref: (p.required, p.needs) for p in probes} == {
        "private": (True, ()),
        "strength": (True, ()),
        "kid": (True, ()),
        "alg": (True, ()),
        # "Compare with the previous run's snapshot": cross-run state is what enables it.
        "rotation": (False, ("evidence.history_dir",)),
    }


# -- the judge --------------------------------------------------------------------------

KEYCLOAK = [
    {
        **rsa_jwk(2048, kid="sig-1", alg="RS256"),
        "use": "sig",
        "x5c": ["MIIC...base64..."],
        "x5t": "abc",
        "x5t#S256": "def",
    },
    {**rsa_jwk(2048, kid="enc-1", alg="RSA-OAEP"), "use": "enc"},
]


@pytest.mark.parametrize(
    "keys",
    [
        KEYCLOAK,
        [ec_jwk(kid="a", alg="ES256"), rsa_jwk(3072, kid="b", alg="RS256")],
        [ec_jwk(ec.SECP384R1(), kid="p384", alg="ES384")],
        [rsa_jwk(2048, alg="RS256")],  # one key needs no kid
    ],
    ids=["keycloak", "ec-and-rsa", "p-384", "single-without-kid"],
)
def test_public_strong_distinct_keys_pass_every_probe(keys):
    observations = judge_keys(SOURCE, keys)
    assert all(o.status is Status.PASS for o in observations), observations
    assert set(refs(observations)) == {"private", "strength", "kid", "alg"}
    outcome = settled("KEY-001", [*observations, rotated(keys)], unset=())
    assert outcome.status is Status.PASS, outcome.summary


@pytest.mark.parametrize(
    ("key", "ref", "severity", "why"),
    [
        (ec_jwk(kid="a", alg="ES256", d="AAAA"), "private", Severity.CRITICAL, "members: d"),
        (
            rsa_jwk(2048, private=True, kid="a", alg="RS256"),
            "private",
            Severity.CRITICAL,
            "d, p, q",
        ),
        (
            {"kty": "oct", "k": "c2VjcmV0", "kid": "a", "alg": "HS256"},
            "private",
            Severity.CRITICAL,
            "a symmetric secret: k",
        ),
        (rsa_jwk(1024, kid="a", alg="RS256"), "strength", Severity.MEDIUM, "RSA modulus of 1024"),
        (ec_jwk(ec.SECP256K1(), kid="a", alg="ES256K"), "strength", Severity.MEDIUM, "secp256k1"),
        (
            {"kty": "RSA", "n": "!!", "e": "AQAB", "kid": "a", "alg": "RS256"},
            "strength",
            Severity.MEDIUM,
            "not a usable key",
        ),
        (ec_jwk(kid="a"), "alg", Severity.MEDIUM, "no alg declared"),
    ],
    ids=["ec-d", "rsa-private", "oct", "rsa-1024", "secp256k1", "garbage-modulus", "no-alg"],
)
def test_each_flaw_fails_its_own_probe_with_its_severity(key, ref, severity, why):
    observations = judge_key(SOURCE, 1, key)
    failed = [o for o in observations if o.status is Status.FAIL]
    assert [(o.ref, o.severity) for o in failed] == [(ref, severity)]
    assert why in failed[0].observed
    if "d" in key:
        assert all(key["d"] not in o.observed for o in observations)  # never recorded
    outcome = settled("KEY-001", [*judge_keys(SOURCE, [key]), rotated([key])], unset=())
    assert (outcome.status, outcome.severity) == (Status.FAIL, severity)


def test_repeated_or_missing_kid_fails():
    twice = judge_kids(SOURCE, [ec_jwk(kid="k1"), ec_jwk(kid="k1")])
    assert (twice.status, twice.ref, twice.observed) == (Status.FAIL, "kid", "repeated: k1")
    missing = judge_kids(SOURCE, [ec_jwk(kid="k1"), ec_jwk()])
    assert missing.status is Status.FAIL
    assert "1 key(s) without kid" in missing.observed


@pytest.mark.parametrize(
    "document",
    [{"keys": "nope"}, ["not", "a", "jwks"], {"keys": [1, 2]}, {"keys": []}, None],
    ids=["keys-not-list", "list", "keys-not-objects", "empty", "null"],
)
def test_what_is_not_a_jwks_cannot_be_observed(document):
    with pytest.raises(CannotObserve, match=SOURCE):
        jwks_keys(SOURCE, document)


# -- where the JWKS comes from: one order for KEY-001 and AUTHN-002 ----------------------

#: A port nothing listens on (discard): a URI that would fail if the harness fetched it.
NOWHERE = "http://127.0.0.1:9"


def test_jwks_file_comes_first_and_the_uri_is_not_fetched(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text('{"keys": []}')
    auth = {"jwks_file": path, "jwks_uri": f"{NOWHERE}/jwks.json", "issuer": NOWHERE}
    found = resolve_jwks(Config({"auth": auth}), Reach("records.test"))
    assert found == Jwks("auth.jwks_file jwks.json", {"keys": []})


def test_a_jwks_file_that_cannot_be_read_is_reported_not_replaced_by_the_uri(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text("<html>")
    auth = {"jwks_file": path, "jwks_uri": f"{NOWHERE}/jwks.json"}
    found = resolve_jwks(Config({"auth": auth}), Reach("records.test"))
    assert (found.source, found.document) == ("auth.jwks_file jwks.json", None)
    assert found.problem.startswith("auth.jwks_file jwks.json: not read")


def test_the_uri_then_discovery_under_the_safety_rules():
    # No file: jwks_uri before the issuer's discovery; a foreign host is not fetched.
    reach = Reach("records.test")
    foreign = resolve_jwks(
        Config({"auth": {"jwks_uri": "https://idp.example/jwks", "issuer": NOWHERE}}), reach
    )
    assert foreign.source == "https://idp.example/jwks"
    assert "safety.allow_issuer_fetch" in foreign.problem
    discovered = resolve_jwks(Config({"auth": {"issuer": "https://idp.example"}}), reach)
    assert discovered.source == "https://idp.example"
    assert "openid-configuration: not fetched" in discovered.problem
    assert resolve_jwks(Config({"auth": {"issuer": "urn:idp"}}), reach) == Jwks()
    assert resolve_jwks(Config({}), reach) == Jwks()


# -- rotation ----------------------------------------------------------------------------


def test_rotation_held_to_the_newest_key():
    old, new = ec_jwk(kid="old", alg="ES256"), ec_jwk(kid="new", alg="ES256")
    seen = {thumbprint(old): NOW - dt.timedelta(days=200), thumbprint(new): NOW}
    fresh = judge_rotation(SOURCE, seen, NOW, 90)
    assert (fresh.status, fresh.ref) == (Status.PASS, "rotation")
    stale = rotated([old], days_ago=200)
    assert (stale.status, stale.severity) == (Status.FAIL, Severity.LOW)
    assert "first seen 200 day(s) ago" in stale.observed


def test_rotation_without_a_limit_records_but_does_not_pass():
    keys = [ec_jwk(kid="a", alg="ES256")]
    unjudged = rotated(keys, limit=None)
    assert (unjudged.status, unjudged.expected) == (Status.SKIP, "auth.key_rotation_days")
    outcome = settled("KEY-001", [*judge_keys(SOURCE, keys), unjudged], unset=())
    (rotation,) = (p for p in outcome.probes if p.id == "KEY-001(rotation)")
    assert rotation.status is Status.SKIP
    assert "auth.key_rotation_days" in rotation.reason


def test_a_first_run_shows_nothing_about_rotation():
    key = ec_jwk(kid="a", alg="ES256")
    first = judge_rotation(SOURCE, {thumbprint(key): NOW}, NOW, 90)
    assert (first.status, first.ref) == (Status.SKIP, "rotation")
    assert "first seen in this run" in first.observed


def test_no_history_dir_shows_the_rotation_probe_not_run_and_the_key_that_enables_it():
    keys = [ec_jwk(kid="a", alg="ES256")]
    outcome = settled("KEY-001", judge_keys(SOURCE, keys), unset=("evidence.history_dir",))
    assert outcome.status is Status.PASS  # rotation is optional: hygiene alone passes
    (rotation,) = (p for p in outcome.probes if p.id == "KEY-001(rotation)")
    assert (rotation.status, rotation.enable) == (Status.SKIP, "evidence.history_dir")
    assert not rotation.required


def test_thumbprint_matches_rfc7638_example():
    key = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
            "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
            "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qN"
            "Lyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awap"
            "JzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
