"""Token refresh for long runs: re-read near expiry, re-signed when the issuer key is known."""

import json
import time

import jwt

from harness.principals import principals_from
from harness.tokens import load_issuer_keys, renewer
from targets.pki import Principal as Identity
from targets.pki import TokenIssuer

NURSE = Identity("nurse", "nurse-1", ("nurse",))


def _issuer(tmp_path):
    issuer = TokenIssuer("https://issuer.test", "api", ttl_s=600)
    issuer.write(tmp_path)
    return issuer


def _claims(issuer, token):
    return jwt.decode(token, issuer.public_key, algorithms=["ES256"], audience="api")


def test_an_expiring_token_is_renewed_with_its_claims_and_lifetime(tmp_path):
    issuer = _issuer(tmp_path)
    old = issuer.mint(NURSE, exp_in=5, iat=int(time.time()) - 595)
    (tmp_path / "t.jwt").write_text(old)
    keys = renewer(
        lambda: load_issuer_keys(tmp_path / "jwks.json", tmp_path / "issuer-key.pem", "t")
    )
    p = principals_from({"n": {"token_file": tmp_path / "t.jwt"}}, "t", refresh=True, renew=keys)[
        "n"
    ]
    fresh = p.token()
    assert fresh == old  # read once: not yet refreshed
    p._read_at -= 60  # the re-read interval has passed
    renewed = p.token()
    assert renewed != old
    claims, before = _claims(issuer, renewed), jwt.decode(old, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600  # the original lifetime, from now
    assert claims["exp"] > time.time() + 500
    assert {k: v for k, v in claims.items() if k not in {"iat", "nbf", "exp", "jti"}} == {
        k: v for k, v in before.items() if k not in {"iat", "nbf", "exp", "jti"}
    }
    assert jwt.get_unverified_header(renewed)["kid"] == issuer.kid
    assert p.token() == renewed  # kept until it nears expiry in turn


def test_a_rotated_source_wins_over_renewal(tmp_path):
    issuer = _issuer(tmp_path)
    (tmp_path / "t.jwt").write_text(issuer.mint(NURSE, exp_in=5))
    p = principals_from(
        {"n": {"token_file": tmp_path / "t.jwt"}}, "t", refresh=True, renew=lambda _: "renewed"
    )["n"]
    p.token()
    rotated = issuer.mint(NURSE)
    (tmp_path / "t.jwt").write_text(rotated)
    p._read_at -= 60
    assert p.token() == rotated


def test_fixtures_never_refresh(tmp_path):
    issuer = _issuer(tmp_path)
    expired = issuer.mint(NURSE, exp_in=-60)
    (tmp_path / "t.jwt").write_text(expired)
    p = principals_from({"n": {"token_file": tmp_path / "t.jwt"}}, "t", renew=lambda _: "x")["n"]
    p.token()
    p._read_at -= 60
    assert p.token() == expired


def test_a_jwks_copy_with_private_members_still_names_the_issuer_key(tmp_path):
    """The operators' copy of a JWKS that (wrongly) publishes ``d`` is loaded as public keys.

    KEY-001 fails it for the private member; the keys still match the issuer's private key,
    so minting keeps the published ``kid``.
    """
    issuer = _issuer(tmp_path)
    (tmp_path / "jwks.json").write_text(json.dumps(issuer.jwks(private=True)))
    keys = load_issuer_keys(tmp_path / "jwks.json", tmp_path / "issuer-key.pem", "t")
    ((kid, alg, key),) = keys.public_keys
    assert (kid, alg, keys.private_kid) == (issuer.kid, "ES256", issuer.kid)
    assert key.public_numbers() == issuer.public_key.public_numbers()
    token = keys.mint({"sub": "u", "aud": "api", "exp": int(time.time()) + 60}, {})
    assert _claims(issuer, token)["sub"] == "u"
