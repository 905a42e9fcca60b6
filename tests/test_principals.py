"""Token refresh for long runs: re-read near expiry, re-signed when the issuer key is known."""

import json
import time

import jwt
import pytest

from harness.errors import ConfigError
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


# -- where a credential travels (auth.header, auth.scheme) --------------------------------


def _config(tmp_path, text: str):
    from harness.config import load_config

    (tmp_path / "t.tok").write_text("t0k3n\n")
    path = tmp_path / "hipaa.toml"
    path.write_text(text)
    return load_config(path)


def test_credentials_go_where_the_config_says_per_principal_too(tmp_path):
    from harness.principals import BEARER, Presentation, presentation_of

    cfg = _config(
        tmp_path,
        '[auth]\nheader = "token"\nscheme = ""\n'
        '[auth.principals.etcd-user]\ntoken_file = "t.tok"\n'
        '[auth.principals.gateway]\ntoken_file = "t.tok"\nheader = "authorization"\n'
        '[auth.principals.api]\ntoken_file = "t.tok"\n'
        'header = "x-api-key"\nscheme = "ApiKey"\n',
    )
    where = presentation_of(cfg)
    assert where == Presentation("token", "")
    found = principals_from(cfg.table("auth.principals"), "t", presentation=where)
    assert found["etcd-user"].metadata() == (("token", "t0k3n"),)
    assert found["gateway"].metadata() == (("authorization", "t0k3n"),)  # bare: scheme ""
    assert found["api"].metadata() == (("x-api-key", "ApiKey t0k3n"),)
    assert found["api"].present("forged") == (("x-api-key", "ApiKey forged"),)
    # Nothing configured: the catalogue's default, authorization: Bearer <t>.
    plain = principals_from({"p": {"token_file": tmp_path / "t.tok"}}, "t")["p"]
    assert plain.presentation == BEARER
    assert plain.metadata() == (("authorization", "Bearer t0k3n"),)
    assert BEARER.describe() == "authorization: Bearer <token>"


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ('[auth]\nheader = "Token"\n', "auth.header", "not a text metadata key"),
        ('[auth]\nheader = "token-bin"\n', "auth.header", "no -bin"),
        ('[auth]\nheader = "grpc-token"\n', "auth.header", "no grpc- prefix"),
        ('[auth]\nscheme = "Bearer token"\n', "auth.scheme", "not one ASCII word"),
        (
            '[auth.principals.p]\ntoken_file = "t.tok"\nheader = "a b"\n',
            "auth.principals.p.header",
            "not a text metadata key",
        ),
    ],
)
def test_a_malformed_header_or_scheme_is_a_config_error(tmp_path, table, key, problem):
    from harness.errors import ConfigError
    from harness.principals import presentation_of

    cfg = _config(tmp_path, table)
    with pytest.raises(ConfigError) as err:
        principals_from(cfg.table("auth.principals"), "t", presentation=presentation_of(cfg))
    assert err.value.key == key
    assert problem in str(err.value)


def test_authn_001_varies_the_credential_in_the_configured_header():
    """etcd reads ``token: <t>``: every malformed variant goes there, and V7 moves T off it."""
    import random

    from harness.plans.tokens import ambiguous_calls, basic_variants, variant_ref
    from harness.principals import Presentation, Principal

    etcd = Presentation("token", "")
    variants = dict(basic_variants(random.Random(7), "T", etcd))
    by_ref = {variant_ref(label): md for label, md in variants.items()}
    assert by_ref["V1"] == ()  # no token header at all
    assert list(variants)[1] == "V2 an empty credential"
    assert variants["V2 an empty credential"] == (("token", ""),)
    assert variants["V3 'abc'"] == (("token", "abc"),)
    assert variants["V4 Basic credentials"] == (("token", "Basic dXNlcjpwYXNz"),)
    for label in ("V5 three random base64url segments", "V6 12 KiB random token"):
        ((key, value),) = variants[label]
        assert key == "token"
        assert " " not in value
    assert variants["V7 valid token under x-token"] == (("x-token", "T"),)
    assert variants["V7 valid token under token-bin"] == (("token-bin", b"T"),)
    # Nowhere an authorization header the service might also read (etcd does).
    assert not [k for md in variants.values() for k, _ in md if k == "authorization"]
    least = Principal("least-privileged", token_env="X", presentation=etcd)
    admin = Principal("admin", token_env="Y", presentation=etcd)
    least._token, admin._token = "low", "high"
    v8 = ambiguous_calls("/etcdserverpb.KV/Put", b"", least, admin)
    assert v8[0].label == "V8 two token entries (least-privileged then admin)"
    assert v8[0].metadata == (("token", "low"), ("token", "high"))
    assert v8[1].metadata == (("token", "high"), ("token", "low"))


def test_a_run_sends_each_principal_as_it_is_configured(tmp_path):
    """On the wire: the service sees ``token: <t>``, never ``authorization: Bearer <t>``."""
    from concurrent import futures

    import grpc

    from harness.lifecycle import RunOptions
    from harness.plans.calls import bearer
    from harness.run import Run
    from harness.target import parse_target

    seen: list[dict[str, str | bytes]] = []

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(
            {k: v for k, v in context.invocation_metadata() if k in ("token", "authorization")}
        )
        return b""

    handler = grpc.method_handlers_generic_handler(
        "t.S", {"M": grpc.unary_unary_rpc_method_handler(handle)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    cfg = _config(
        tmp_path,
        '[auth]\nheader = "token"\nscheme = ""\n[auth.principals.u]\ntoken_file = "t.tok"\n',
    )
    run = Run.open(parse_target(f"127.0.0.1:{port}"), cfg, RunOptions(seed=1))
    try:
        user = run.principal("u")
        assert user is not None
        run.call("/t.S/M", principal=user)
        run.call("/t.S/M", extra_metadata=bearer("forged", user.presentation))
    finally:
        run.close()
        server.stop(0)
    assert seen == [{"token": "t0k3n"}, {"token": "forged"}]


def test_an_eddsa_issuer_loads_signs_and_is_offered_for_key_confusion(tmp_path):
    """An Ed25519 issuer (kty OKP, alg EdDSA; RFC 8037): its JWKS loaded (it was read as EC
    and refused), its private key signs EdDSA tokens, its public key offered as HMAC secret."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ed-1"}]}))
    (tmp_path / "issuer-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keys = load_issuer_keys(tmp_path / "jwks.json", tmp_path / "issuer-key.pem", "t")
    assert (keys.private_alg, keys.private_kid) == ("EdDSA", "ed-1")
    token = keys.mint({"sub": "u-1"}, {"typ": "at+jwt"})
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert jwt.decode(token, key.public_key(), algorithms=["EdDSA"])["sub"] == "u-1"
    forms = dict(keys.public_key_forms())
    assert json.loads(forms["public key JWK JSON"])["kty"] == "OKP"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "AA"}]}))
    with pytest.raises(ConfigError, match="key type 'oct' is not RSA, EC or OKP"):
        load_issuer_keys(tmp_path / "jwks.json", None, "t")
