"""The generated files are current, and the README names every implemented control."""

from pathlib import Path

import pytest

from harness import generate
from harness.checks import registered

ROOT = Path(__file__).resolve().parents[1]
STALE = f"stale: run {generate.COMMAND}"


def _files() -> dict[str, str]:
    return generate.generated_files(ROOT, registered())


@pytest.mark.parametrize("path", sorted(_files()))
def test_generated_file_is_current(path):
    on_disk = (ROOT / path).read_text(encoding="utf-8") if (ROOT / path).is_file() else None
    assert on_disk == _files()[path], f"{STALE} ({path} differs from what it generates)"


def test_no_suite_module_the_generator_does_not_write():
    assert generate.stray_suites(ROOT, _files()) == [], STALE


def test_every_registered_check_has_one_generated_suite_test():
    names = {}
    for source in generate.suite_modules(registered()).values():
        lines = source.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("@pytest.mark.hipaa_control("):
                control_id = line.split('"')[1]
                assert control_id not in names, f"{control_id} has two suite tests"
                names[control_id] = lines[i + 1]
    assert sorted(names) == sorted(registered())
    assert names["REFL-001"] == "def test_REFL_001_reflection_disabled(hipaa_verdict):"


def test_readme_what_is_checked_today_mentions_every_registered_control():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = sorted(set(registered()) - generate.mentioned_controls(readme))
    assert not missing, f"README.md 'What is checked today' does not mention {missing}"


def test_mentioned_controls_expands_ranges_and_lists():
    readme = (
        "## What is checked today\n\n| Controls | What |\n|---|---|\n"
        "| TLS-001...004 | x |\n| AUTHZ-002, 004 | y |\n| ERR-001, ERR-002 | z |\n"
        "| MIN-001…002, LIMIT-003 | w |\n\n## Next\n\n| KEY-001 | not here |\n"
    )
    assert generate.mentioned_controls(readme) == {
        "TLS-001",
        "TLS-002",
        "TLS-003",
        "TLS-004",
        "AUTHZ-002",
        "AUTHZ-004",
        "ERR-001",
        "ERR-002",
        "MIN-001",
        "MIN-002",
        "LIMIT-003",
    }


def test_catalogue_rows_follow_the_document_columns():
    doc = """\
## 4. Automated control catalogue (1 control)

### 4.4 Reflection and admin surface (REFL-001, REFL-002)

| ID | Title | HIPAA | Checklist / basis | Procedure | Pass / fail oracle | Sev | User config |
|---|---|---|---|---|---|---|---|
| REFL-002 | Admin `a\\|b` | S: 164.312(a)(1) | CL-26, CL-10. gRFC A38 | p | o | {severity} | c |

## 5. Controls that cannot be verified from outside (manual attestation)

| ID | Safeguard | HIPAA | Checklist | Why it cannot be verified externally | Evidence to attach |
|---|---|---|---|---|---|
| ATT-001 | BAAs | 164.308(b)(1) | — | w | e |

## 6. Report semantics
""".format(severity="high (production), medium (other)")
    assert generate.parse_controls(doc) == (
        generate.Row(
            "REFL-002",
            "Admin `a|b`",
            "S: 164.312(a)(1)",
            ("CL-10", "CL-26"),
            "high",
            "Reflection and admin surface",
            True,
        ),
        generate.Row("ATT-001", "BAAs", "164.308(b)(1)", (), "high", "Manual attestation", False),
    )


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    for rel in ("docs/controls.md", "README.md", "harness/_catalogue_data.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "suites").mkdir()
    for rel, text in generate.suite_modules(registered()).items():
        (tmp_path / rel).write_text(text, encoding="utf-8")
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "suites" / "test_errors.py").write_text('"""Edited by hand."""\n')
    (tmp_path / "suites" / "test_old.py").write_text('"""Left over."""\n')
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "suites/test_errors.py" in err
    assert "suites/test_old.py" in err
    assert generate.COMMAND in err
    assert generate.main(["--root", str(tmp_path)]) == 0
    assert not (tmp_path / "suites" / "test_old.py").exists()
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0
