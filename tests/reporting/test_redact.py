"""One redaction for everything that leaves the process: tokens, JWTs, canaries."""

from __future__ import annotations

from dataclasses import replace

from harness.canary import CanarySet
from harness.catalogue import Severity
from harness.outcome import Status
from harness.reporting.redact import redact

from .factory import refl_failed

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
SECRET = "opaque-secret-123"


def test_a_jwt_is_hashed_wherever_it_is() -> None:
    said = redact(f"server said: bad token {JWT}")
    assert JWT not in said
    assert "<redacted sha256:" in said
    assert redact({"a": [f"x {JWT}", 3, None]}) == {
        "a": [said.replace("server said: bad token", "x"), 3, None]
    }


def test_a_known_secret_is_hashed_and_a_short_one_left_alone() -> None:
    assert SECRET not in redact(f"x {SECRET} y", [SECRET])
    assert redact("x short y", ["short"]) == "x short y"


def test_canaries_of_the_runs_seed_are_masked_by_category() -> None:
    canaries = CanarySet.for_seed(7)
    mrn = canaries.value("mrn")
    said = redact(f"echoed {mrn} and {canaries.nonce.lower()}", seed=7)
    assert mrn not in said
    assert canaries.nonce.lower() not in said
    assert "<canary:mrn>" in said
    assert redact(f"echoed {mrn}") == f"echoed {mrn}"  # no seed: no canary masking


def test_a_typed_result_is_redacted_in_every_text_and_keeps_its_enums() -> None:
    mrn = CanarySet.for_seed(7).value("mrn")
    result = refl_failed()
    leaky = replace(
        result,
        summary=f"token {JWT}",
        observations=(replace(result.observations[0], observed=f"{SECRET} and {mrn}"),),
    )
    clean = redact(leaky, [SECRET], seed=7)
    assert JWT not in clean.summary
    observed = clean.observations[0].observed
    assert SECRET not in observed
    assert mrn not in observed
    assert clean.status is Status.FAIL
    assert clean.observations[0].severity is Severity.HIGH
    assert clean.probes == result.probes
    assert leaky.summary == f"token {JWT}"  # the original is left as it was


def test_clean_text_is_returned_as_it_is_and_any_one_string_sends_all_to_the_walk() -> None:
    result = refl_failed()
    assert redact(result, [SECRET], seed=7) is result  # nothing to mask: no copy made
    canaries = CanarySet.for_seed(7)
    for leak in (JWT, SECRET, canaries.value("mrn"), canaries.nonce.lower()):
        deep = replace(result.observations[-1], expected=f"x{leak}y")
        leaky = replace(result, observations=(*result.observations[:-1], deep))
        clean = redact(leaky, [SECRET], seed=7)
        assert leak not in clean.observations[-1].expected
        assert clean.summary == result.summary
    # Joined for the quick test, two strings never make a canary of their halves.
    mrn = canaries.value("mrn")
    halves = [mrn[:-5], mrn[-5:]]  # the nonce cut in two
    assert redact(halves, seed=7) == halves
    assert not canaries.anywhere("\0".join(halves))
