"""The reduced-config reference over real gRPC: operators with opaque tokens and no issuer key.

In that variant the reference issues opaque bearer tokens (random strings it looks up by
their digest, as an introspection endpoint would answer) and writes a config that gives the
principals those tokens and no issuer key, JWKS or fixtures. The AUTHN probes that need no
JWT run against it and hold; those that start from a JWT's header and claims say why they
did not run. The whole row is held by the detection matrix; this is its AUTHN part, quickly.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import open_run
from harness.checks import run_check
from harness.outcome import Status
from harness.plans.tokens import bases, valid_tokens
from harness.run import Run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reduced() -> Iterator[Run]:
    run = open_run("spawn:reference+reduced-config")
    yield run
    run.close()


def probes(run: Run, control_id: str) -> dict[str, tuple[Status, str]]:
    outcome = run_check(control_id, run)
    return {p.id.split("(")[1].rstrip(")"): (p.status, p.reason) for p in outcome.probes}


def test_the_operators_hold_opaque_tokens_the_service_accepts(reduced: Run) -> None:
    for key in ("auth.issuer_private_key", "auth.jwks_file", "auth.jwks_uri", "auth.issuer"):
        assert not reduced.config.get(key), key
    held, _ = valid_tokens(reduced)
    assert held
    assert all(h.opaque for h in held)
    assert all(h.accepted for h in held), [h.control.summary() for h in held]
    found, why = bases(reduced)
    assert found == []
    assert why.startswith("no principal has a JWT bearer token: every token is opaque")


def test_authn_001_runs_every_variant_with_opaque_tokens(reduced: Run) -> None:
    outcome = run_check("AUTHN-001", reduced)
    assert outcome.status is Status.PASS, outcome.summary
    assert {p.id: p.status for p in outcome.probes} == {
        f"AUTHN-001(V{n})": Status.PASS for n in range(1, 10)
    }


def test_authn_003_alters_the_opaque_token_and_names_what_needs_a_jwt(reduced: Run) -> None:
    got = probes(reduced, "AUTHN-003")
    assert got["b"][0] is Status.PASS  # truncated, altered: refused by lookup
    assert got["c"][0] is Status.PASS  # a token of T's shape, never issued: refused
    for ref in ("a", "d"):
        status, reason = got[ref]
        assert status is Status.SKIP
        assert reason.startswith("opaque tokens of admin")
    assert run_check("AUTHN-003", reduced).status is Status.INCONCLUSIVE


@pytest.mark.parametrize("control_id", ["AUTHN-002", "AUTHN-004", "AUTHN-009"])
def test_what_starts_from_a_jwt_is_skip_and_says_opaque(reduced: Run, control_id: str) -> None:
    outcome = run_check(control_id, reduced)
    assert outcome.status is Status.SKIP
    assert "opaque" in outcome.summary
