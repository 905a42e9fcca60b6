"""The control's status follows from its declared probes (catalogue section 6)."""

from harness.catalogue import CATALOGUE, Severity
from harness.outcome import Observation, Outcome, Probe, Status, filed, settle

CONTROL = CATALOGUE["AUTHN-005"]
DECLARED = (
    Probe("a", "token lifetimes"),
    Probe("b", "expired token", needs=("auth.fixtures.expired", "auth.issuer_private_key")),
    Probe("e", "wait mode", required=False, needs=("auth.max_wait_s",)),
)


def obs(ref: str, status: Status, rid: str | None = None, **kw: object) -> Observation:
    return Observation(f"probe {ref}", "seen", "wanted", status, request_id=rid).of(ref)


def nothing_configured(key: str) -> bool:
    return False


def everything_configured(key: str) -> bool:
    return True


def settled(*observations: Observation, configured=nothing_configured) -> Outcome:
    outcome = Outcome.from_observations(CONTROL, observations, passed="all held")
    return settle(outcome, DECLARED, configured)


def test_pass_needs_every_required_probe():
    out = settled(obs("a", Status.PASS, "r1"), obs("b", Status.PASS, "r2"))
    assert out.status is Status.PASS
    assert out.summary == "all held"
    by_id = {p.id: p for p in out.probes}
    assert by_id["AUTHN-005(a)"].request_ids == ("r1",)
    assert by_id["AUTHN-005(e)"].status is Status.SKIP
    assert by_id["AUTHN-005(e)"].enable == "auth.max_wait_s"
    assert not by_id["AUTHN-005(e)"].required


def test_a_required_probe_that_did_not_run_makes_it_inconclusive_and_says_what_enables_it():
    out = settled(obs("a", Status.PASS))
    assert out.status is Status.INCONCLUSIVE
    assert "AUTHN-005(b)" in out.summary
    assert "auth.fixtures.expired or auth.issuer_private_key" in out.summary
    (b,) = (p for p in out.probes if p.id == "AUTHN-005(b)")
    assert b.status is Status.SKIP
    assert b.enable == "auth.fixtures.expired or auth.issuer_private_key"


def test_a_skip_observation_is_not_a_pass():
    skipped = Observation("expired fixture", "", "auth.fixtures.expired", Status.SKIP).of("b")
    out = settled(obs("a", Status.PASS), skipped)
    assert out.status is Status.INCONCLUSIVE
    (b,) = (p for p in out.probes if p.id == "AUTHN-005(b)")
    assert b.reason == "expired fixture: needs auth.fixtures.expired"


def test_configured_but_not_run_says_not_run_without_a_key():
    out = settled(obs("a", Status.PASS), configured=everything_configured)
    (b,) = (p for p in out.probes if p.id == "AUTHN-005(b)")
    assert (b.reason, b.enable) == ("not run", "")
    assert out.status is Status.INCONCLUSIVE


def test_nothing_ran_is_skip():
    skipped = [Observation("x", "", "auth.fixtures.expired", Status.SKIP).of("b")]
    outcome = Outcome(CONTROL, Status.PASS, "all held", tuple(skipped))
    out = settle(outcome, (Probe("b", "expired token"),), nothing_configured)
    assert out.status is Status.SKIP


def test_a_fail_anywhere_fails_with_its_severity():
    bad = Observation("expired", "OK", "16", Status.FAIL, Severity.CRITICAL).of("b")
    out = settled(obs("a", Status.PASS), bad)
    assert out.status is Status.FAIL
    assert out.severity is Severity.CRITICAL


def test_optional_probe_may_be_missing_and_may_still_fail():
    assert settled(obs("a", Status.PASS), obs("b", Status.PASS)).status is Status.PASS
    late = Observation("late", "OK", "16", Status.FAIL).of("e")
    out = settled(obs("a", Status.PASS), obs("b", Status.PASS), late)
    assert out.status is Status.FAIL


def test_a_check_decided_outcome_keeps_its_status_and_names_the_probes():
    outcome = Outcome.skip(CONTROL, "no principals configured")
    out = settle(outcome, DECLARED, nothing_configured)
    assert out.status is Status.SKIP
    assert {p.reason for p in out.probes if p.id != "AUTHN-005(e)"} == {
        "no principals configured",
        "needs auth.fixtures.expired or auth.issuer_private_key",
    }


def test_a_check_that_declares_nothing_is_one_whole_probe():
    outcome = Outcome.from_observations(
        CONTROL, [Observation("x", "y", "z", Status.PASS, request_id="r")], passed="ok"
    )
    out = settle(outcome, (), nothing_configured)
    assert out.status is Status.PASS
    assert [(p.id, p.request_ids) for p in out.probes] == [("AUTHN-005", ("r",))]


def test_filed_tags_every_observation():
    got = filed("c", [Observation("x", "y", "z", Status.PASS)])
    assert [o.ref for o in got] == ["c"]


def test_a_required_probe_that_does_not_apply_is_not_a_gap():
    from harness.outcome import not_applicable

    na = not_applicable("b", "expired fixture", "the service issues no expiring tokens")
    out = settled(obs("a", Status.PASS), na)
    assert out.status is Status.PASS
    (b,) = (p for p in out.probes if p.id == "AUTHN-005(b)")
    assert not b.applies
    assert b.reason == "not applicable: the service issues no expiring tokens"


def test_a_key_declared_empty_means_there_are_none():
    outcome = Outcome.from_observations(CONTROL, [obs("a", Status.PASS)], passed="ok")
    declared = (Probe("a", "lifetimes"), Probe("b", "bulk exports", needs=("limits.bulk_methods",)))
    out = settle(outcome, declared, nothing_configured, lambda key: key == "limits.bulk_methods")
    assert out.status is Status.PASS
    assert out.probes[1].reason == "not applicable: limits.bulk_methods declared empty"
    unset = settle(outcome, declared, nothing_configured)
    assert unset.status is Status.INCONCLUSIVE


def test_a_control_none_of_whose_probes_applies_is_skip():
    from harness.outcome import not_applicable

    outcome = Outcome(CONTROL, Status.PASS, "ok", (not_applicable("a", "x", "no streams"),))
    out = settle(outcome, (Probe("a", "streams"),), nothing_configured)
    assert out.status is Status.SKIP
    assert "no streams" in out.summary


def test_a_pass_with_no_observation_is_not_a_pass():
    out = settle(
        Outcome(CONTROL, Status.PASS, "ok"), (Probe("a", "lifetimes"),), nothing_configured
    )
    assert out.status is Status.SKIP


def test_a_warn_filed_nowhere_still_warns():
    warned = Observation("x", "y", "z", Status.WARN)  # not filed under a declared probe
    outcome = Outcome.from_observations(CONTROL, [obs("a", Status.PASS), warned], passed="ok")
    out = settle(outcome, (Probe("a", "lifetimes"),), nothing_configured)
    assert out.status is Status.WARN


def test_a_fail_outranks_an_error():
    errored = Observation("x", "y", "z", Status.ERROR).of("a")
    failed = Observation("x", "y", "z", Status.FAIL).of("a")
    assert Outcome.from_observations(CONTROL, [errored, failed], passed="ok").status is Status.FAIL


def test_not_applicable_only_when_every_enabling_key_is_declared_empty():
    outcome = Outcome.from_observations(CONTROL, [obs("a", Status.PASS)], passed="ok")
    declared = (Probe("a", "x"), Probe("b", "exports", needs=("limits.bulk_methods", "k2")))
    out = settle(outcome, declared, nothing_configured, lambda key: key == "limits.bulk_methods")
    assert out.status is Status.INCONCLUSIVE
