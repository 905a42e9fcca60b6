"""action.yml, the composite GitHub Action: its shape, and that what it runs exists.

No GitHub runner here: the file is read with PyYAML and held to what the Action promises
(README's "GitHub Action"): every input documented and used, the bundle's files named as
the bundle writes them, every ``hipaa-grpc`` command and ``--hipaa-*`` option it runs known
to our command line and plugin.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main
from harness.reporting.bundle import bundle_files
from tests.reporting.factory import finished, refl_failed

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    data = yaml.safe_load(ACTION.read_text())
    assert isinstance(data, dict)
    return data


def _steps(action: dict[str, Any]) -> list[dict[str, Any]]:
    return list(action["runs"]["steps"])


def _uses(action: dict[str, Any], name: str) -> dict[str, Any]:
    (step,) = [s for s in _steps(action) if str(s.get("uses", "")).startswith(name + "@")]
    return step


def _scripts(action: dict[str, Any]) -> str:
    return "\n".join(str(s["run"]) for s in _steps(action) if "run" in s)


def test_a_composite_action_with_documented_inputs_all_used(action):
    assert action["runs"]["using"] == "composite"
    assert action["name"]
    assert action["description"]
    inputs = action["inputs"]
    assert inputs["target"]["required"] is True
    assert all(spec.get("description") for spec in inputs.values())
    text = ACTION.read_text()
    used = set(re.findall(r"inputs\.([a-z][a-z0-9-]*)", text))
    assert used == set(inputs), "an input the steps read is undeclared, or one is never used"
    for step in _steps(action):
        if "run" in step:
            assert step.get("shell") == "bash", f"{step['name']}: composite run steps need a shell"
        assert "${{" not in str(step.get("run", "")), (
            f"{step['name']}: inputs reach scripts through env, never pasted into the script"
        )


def test_it_uploads_the_sarif_keeps_the_bundle_and_adds_the_summary(action):
    names = set(bundle_files(finished(refl_failed()), {}))
    sarif = _uses(action, "github/codeql-action/upload-sarif")
    assert sarif["with"]["sarif_file"] == "${{ inputs.report-dir }}/results.sarif"
    assert "results.sarif" in names
    artefact = _uses(action, "actions/upload-artifact")
    assert artefact["with"]["path"] == "${{ inputs.report-dir }}"
    assert artefact["if"] == "always()"
    scripts = _scripts(action)
    assert '"$HIPAA_REPORT_DIR/summary.md" >> "$GITHUB_STEP_SUMMARY"' in scripts
    assert "summary.md" in names
    assert action["outputs"]["exit-code"]["value"] == "${{ steps.run.outputs.exit-code }}"


def test_every_hipaa_grpc_command_it_runs_exists(action, capsys):
    commands = [
        shlex.split(line.strip())
        for line in _scripts(action).splitlines()
        if line.strip().startswith("hipaa-grpc ")
    ]
    assert commands, "the action verifies the bundle with hipaa-grpc"
    for argv in commands:
        words = [w for w in argv[1:] if not w.startswith(("$", '"$'))]
        with pytest.raises(SystemExit) as exit_:
            main([*words, "--help"])
        assert exit_.value.code == 0, argv
    capsys.readouterr()


def test_every_pytest_option_it_passes_is_ours(action, tmp_path):
    scripts = _scripts(action)
    options = set(re.findall(r"(--hipaa-[a-z-]+)=", scripts))
    assert {"--hipaa-target", "--hipaa-report", "--hipaa-profile", "--hipaa-fail-on"} <= options
    shown = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for option in sorted(options):
        assert option in shown, f"{option} is not an option of the plugin"


def test_readme_documents_every_input(action):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### GitHub Action", 1)[1].split("\n## ", 1)[0]
    for name in action["inputs"]:
        assert f"`{name}`" in section, f"README's GitHub Action section omits `{name}`"
