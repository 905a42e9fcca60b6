"""The plugin as a user meets it: options, bad input, statuses, reports, xdist."""

import time
import xml.etree.ElementTree as ET

import pytest

from conftest import closed_port
from harness.checks import registered


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hipaa-target=nonsense"], "--hipaa-target='nonsense': no port"),
        (["--hipaa-target=127.0.0.1:70000"], "port 70000 is out of range 1-65535"),
        (["--hipaa-target=spawn:reference+bogus"], "unknown defect 'bogus' for reference"),
        (
            ["--hipaa-target=127.0.0.1:1", "--hipaa-config=missing.toml"],
            "missing.toml: file not found",
        ),
        (["--hipaa-target=127.0.0.1:1", "--hipaa-run-budget=0"], "must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_4(pytester, args, message):
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, result.stderr.str()
    assert message in errors[0]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_bad_toml_and_unknown_key_are_usage_errors(pytester):
    pytester.makefile(".toml", hipaa="[tls\n")
    result = pytester.runpytest_subprocess("--hipaa-target=127.0.0.1:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "hipaa.toml: not valid TOML" in result.stderr.str()
    pytester.makefile(".toml", hipaa="[tls]\nservername = 'x'\n")
    result = pytester.runpytest_subprocess("--hipaa-target=127.0.0.1:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "tls.servername: unknown key (did you mean tls.server_name?)" in result.stderr.str()


def test_unreachable_target_makes_every_control_error_quickly(pytester):
    port = closed_port()
    start = time.monotonic()
    result = pytester.runpytest_subprocess(f"--hipaa-target=127.0.0.1:{port}", "-rE")
    elapsed = time.monotonic() - start
    assert elapsed < 30
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 2
    assert "passed" not in outcomes
    assert "failed" not in outcomes
    assert f"127.0.0.1:{port} is unreachable: connection refused" in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_no_target_leaves_the_plugin_idle(pytester):
    pytester.makepyfile(
        """
        def test_plain():
            assert 1 + 1 == 2

        def test_needs_target(hipaa_run):
            pass
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["*hipaa-grpc * no --hipaa-target (plugin idle)*", "*no --hipaa-target given*"]
    )


@pytest.mark.slow
def test_header_selection_and_control_ids_in_node_ids(pytester):
    result = pytester.runpytest(
        "--hipaa-target=spawn:reference", "--hipaa-seed=42", "-k", "REFL_001", "-v"
    )
    result.assert_outcomes(passed=1, deselected=len(registered()) - 1)
    result.stdout.fnmatch_lines(
        [
            "*hipaa-grpc * target=spawn:reference profile=hipaa-strict seed=42 config=none*",
            "*test_REFL_001_reflection_disabled PASSED*",
            "*HIPAA controls*",
            "REFL-001 *PASS*",
        ]
    )


@pytest.mark.slow
def test_failed_control_in_short_summary(pytester):
    result = pytester.runpytest(
        "--hipaa-target=spawn:reference+reflection", "-rf", "-k", "REFL_001"
    )
    result.assert_outcomes(failed=1, deselected=len(registered()) - 1)
    out = result.stdout.str()
    assert "FAILED" in out
    assert "test_REFL_001_reflection_disabled" in out
    assert "REFL-001 FAIL (high)" in out
    assert "HIPAA: S: 164.312(a)(1), 164.308(a)(1)(ii)(B)" in out
    assert "services disclosed: " in out
    assert "hipaagrpc.reference.v1.PatientRecords" in out


@pytest.mark.slow
def test_user_tests_with_marker_and_junit_properties(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.hipaa_control("AUTHZ-001")
        def test_billing_cannot_search(hipaa_run):
            path = "/hipaagrpc.reference.v1.PatientRecords/SearchPatients"
            result = hipaa_run.call(path, principal=hipaa_run.principal("billing"))
            assert result.code.name == "PERMISSION_DENIED"
            assert not result.responses

        @pytest.mark.hipaa_control("AUTHZ-001")
        def test_deliberately_wrong(hipaa_run):
            path = "/hipaagrpc.reference.v1.PatientRecords/SearchPatients"
            result = hipaa_run.call(path, principal=hipaa_run.principal("billing"))
            assert result.code.name == "OK"

        @pytest.mark.hipaa_control("EVID-001")
        def test_verdict_needs_a_registered_check(hipaa_verdict):
            pass
        """
    )
    result = pytester.runpytest(
        "--hipaa-target=spawn:reference",
        "--junitxml=out.xml",
        "test_user_tests_with_marker_and_junit_properties.py",
    )
    result.assert_outcomes(passed=1, failed=1, errors=1)
    assert (
        "hipaa_verdict needs @pytest.mark.hipaa_control('ID') naming a control"
        in result.stdout.str()
    )
    tree = ET.parse(pytester.path / "out.xml")
    props = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in tree.iter("testcase")
    }
    assert props["test_billing_cannot_search"]["hipaa_control"] == "AUTHZ-001"
    assert props["test_billing_cannot_search"]["hipaa_status"] == "PASS"
    assert props["test_deliberately_wrong"]["hipaa_status"] == "FAIL"
    assert props["test_verdict_needs_a_registered_check"]["hipaa_status"] == "ERROR"


@pytest.mark.slow
def test_xdist_runs_the_suites_on_two_workers(pytester):
    pytest.importorskip("xdist")
    result = pytester.runpytest_subprocess(
        "--hipaa-target=spawn:reference+reflection", "-n", "2", "-p", "xdist"
    )
    cloud = [c for c in registered() if c.startswith("CLOUD-")]  # SKIP: no --hipaa-cloud
    result.assert_outcomes(passed=len(registered()) - len(cloud) - 1, failed=1, skipped=len(cloud))
    result.stdout.fnmatch_lines(["*REFL-001 *FAIL (high)*", "*TLS-001 *PASS*"])


def test_a_spent_run_budget_leaves_the_rest_inconclusive_with_the_reason(pytester):
    result = pytester.runpytest_subprocess(
        "--hipaa-target=spawn:reference", "--hipaa-run-budget=0.001", "-k", "REFL or TLS_001"
    )
    out = result.stdout.str()
    assert "Traceback" not in out
    assert out.count("time budget (safety.max_duration_s, 0.001 s) was spent") >= 3
    # INCONCLUSIVE controls are skips, but by default they fail the run: nothing unjudged
    # looks green.
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INCONCLUSIVE" in out
    assert "run fails (--hipaa-fail-on=low,inconclusive,error)" in out


@pytest.mark.slow
def test_fail_on_sets_the_exit_status_and_findings_stay_visible(pytester):
    args = ("--hipaa-target=spawn:reference+reflection", "-k", "REFL_001")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*REFL-001 *FAIL (high)*", "*run fails*REFL-001 FAIL (high)*"])
    lenient = pytester.runpytest_subprocess(*args, "--hipaa-fail-on=critical")
    assert lenient.ret == pytest.ExitCode.OK
    lenient.stdout.fnmatch_lines(
        ["*REFL-001 *FAIL (high)*", "*run passes (--hipaa-fail-on=critical)*"]
    )
    lenient.assert_outcomes(failed=1, deselected=len(registered()) - 1)


def test_a_bad_fail_on_is_a_usage_error(pytester):
    result = pytester.runpytest_subprocess("--hipaa-target=127.0.0.1:1", "--hipaa-fail-on=often")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hipaa-fail-on='often'*"])


@pytest.mark.slow
def test_nothing_printed_carries_a_canary_or_a_token(pytester):
    """A PHI-echoing, token-logging service: CI logs (failure text, skip reasons, the
    terminal, JUnit properties) show categories and hashes, never the values."""
    from harness.canary import CanarySet, holds_standalone

    result = pytester.runpytest_subprocess(
        "--hipaa-target=spawn:reference+phi-in-error+phi-in-trailers+verbose-errors+token-in-logs",
        "--hipaa-seed=7",
        "-rA",
        "-v",
        "--junitxml=out.xml",
        "-k",
        "REDACT or ERR or AUTHN_001",
    )
    printed = (result.stdout.str() + result.stderr.str()).encode()
    printed += (pytester.path / "out.xml").read_bytes()
    assert b"FAIL" in printed  # the defects were seen
    leaked = [c for c in CanarySet.for_seed(7).manifest() if holds_standalone(printed, c)]
    assert leaked == []
    assert b"eyJ" not in printed


@pytest.mark.parametrize("chosen", [False, True], ids=["default", "user-set"])
def test_a_run_of_the_suites_keeps_hypothesis_files_out_of_the_working_tree(
    pytester, monkeypatch, tmp_path, chosen
):
    # FUZZ-001 draws with Hypothesis, which keeps its Unicode tables in .hypothesis/ of the
    # working directory: a fresh checkout built them on every run, in the user's tree.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    if chosen:
        monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(tmp_path / "mine"))
    result = pytester.runpytest_subprocess("--hipaa-target=spawn:reference", "-k", "FUZZ_001")
    result.assert_outcomes(passed=1, deselected=len(registered()) - 1)
    assert not (pytester.path / ".hypothesis").exists()
    kept = tmp_path / "mine" if chosen else tmp_path / "xdg" / "pytest-hipaa-grpc" / "hypothesis"
    assert (kept / "unicode_data").is_dir()
