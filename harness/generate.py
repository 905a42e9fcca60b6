"""Generate the files that repeat the catalogue, the check registry and the defect list.

Four things used to be copied by hand and had to agree: the catalogue rows
(``harness/_catalogue_data.py``, from ``docs/controls.md`` sections 4 and 5), the suite test
stubs (``suites/test_*.py``, one per registered check), and two parts of ``README.md`` (the
defect tables, from ``targets/catalog.py``, and the sentence that counts the controls). The
functions here are pure: they take the sources and return file contents. The command
writes them::

    python -m harness.generate           # write every generated file
    python -m harness.generate --check   # exit 1 listing the stale ones

``tests/test_generated.py`` holds the files on disk to what these functions produce.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from harness.catalogue import Control
    from targets.catalog import BundledTarget, Defect

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE_DOC = "docs/controls.md"
CATALOGUE_DATA = "harness/_catalogue_data.py"
README = "README.md"
SUITES_DIR = "suites"

COMMAND = "python -m harness.generate"

#: Line length the formatter (ruff, pyproject.toml) keeps code to.
_LINE_LENGTH = 100

#: The default severity of a manual-attestation control (§5 has no severity column: an
#: ATTESTATION MISSING finding is high where no automated control relates to it).
_ATTESTATION_SEVERITY = "high"

_SEVERITIES = ("low", "medium", "high", "critical")


# --------------------------------------------------------------------------------------
# The catalogue: docs/controls.md -> harness/_catalogue_data.py


@dataclass(frozen=True)
class Row:
    """One control as ``docs/controls.md`` states it (sections 4 and 5)."""

    id: str
    title: str
    citation: str
    checklist: tuple[str, ...]
    severity: str
    family: str
    automated: bool


_ROW = re.compile(r"^\| ([A-Z]+-\d{3}) \|")
_FAMILY = re.compile(r"^### 4\.\d+ (?P<name>.+?)(?: \([A-Z]+-\d{3}[^)]*\))?$")
_SECTION = re.compile(r"^## (?P<number>\d+)\. ")
_CHECKLIST_ITEM = re.compile(r"\bCL-\d{2}\b")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_COUNTS = re.compile(
    r"There are (?P<automated>\d+) automated controls \(§4\) and (?P<manual>\d+)\s+"
    r"manual-attestation controls \(§5\),\s+(?P<total>\d+)\s+in all\."
)


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row, stripped, with escaped pipes unescaped."""
    inner = line.strip()
    if not (inner.startswith("|") and inner.endswith("|")):
        raise ValueError(f"not a table row: {line[:60]!r}")
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(inner[1:-1])]


def _header_index(header: list[str], name: str, line_no: int) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise ValueError(
            f"{CATALOGUE_DOC}:{line_no}: the table has no {name!r} column (has {header})"
        ) from None


def _severity(cell: str, control_id: str) -> str:
    """The default severity: the cell's first word ("high (production), medium (other)")."""
    first = re.split(r"[\s(,;]", cell.strip(), maxsplit=1)[0].lower()
    if first not in _SEVERITIES:
        raise ValueError(f"{CATALOGUE_DOC}: {control_id} has no severity in {cell!r}")
    return first


def parse_controls(doc_text: str) -> tuple[Row, ...]:
    """Every control row of sections 4 (automated) and 5 (manual attestation), in order.

    Section 4's families are its ``### 4.x Name (IDs)`` headings without the ID range;
    section 5's family is the parenthesis of its heading ("manual attestation"), capitalised.
    Of the checklist cell only the ``CL-nn`` items are kept, sorted; the severity is the
    first word of the severity column.

    Raises:
        ValueError: a row or a heading is not in the expected form.
    """
    rows: list[Row] = []
    section = 0
    family = ""
    header: list[str] = []
    for line_no, line in enumerate(doc_text.splitlines(), start=1):
        if m := _SECTION.match(line):
            section = int(m["number"])
            family = ""
            if section == 5:
                paren = re.search(r"\(([^)]+)\)\s*$", line)
                if paren is None:
                    raise ValueError(f"{CATALOGUE_DOC}:{line_no}: no family in {line!r}")
                family = paren[1][:1].upper() + paren[1][1:]
            continue
        if section not in (4, 5):
            continue
        if section == 4 and line.startswith("### "):
            m = _FAMILY.match(line)
            if m is None:
                raise ValueError(f"{CATALOGUE_DOC}:{line_no}: unexpected heading {line!r}")
            family = m["name"]
            continue
        if line.startswith("| ID |"):
            header = _cells(line)
            continue
        if not _ROW.match(line):
            continue
        if not family or not header:
            raise ValueError(f"{CATALOGUE_DOC}:{line_no}: a control row outside a family table")
        cells = _cells(line)
        if len(cells) != len(header):
            raise ValueError(
                f"{CATALOGUE_DOC}:{line_no}: {len(cells)} cells for {len(header)} columns"
            )
        checklist_col = 3
        control_id = cells[0]
        if section == 4:
            severity = _severity(cells[_header_index(header, "Sev", line_no)], control_id)
        else:
            severity = _ATTESTATION_SEVERITY
        rows.append(
            Row(
                id=control_id,
                title=cells[1],
                citation=cells[2],
                checklist=tuple(sorted(set(_CHECKLIST_ITEM.findall(cells[checklist_col])))),
                severity=severity,
                family=family,
                automated=section == 4,
            )
        )
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{CATALOGUE_DOC}: a control ID appears twice")
    return tuple(rows)


def stated_counts(doc_text: str) -> tuple[int, int]:
    """The (automated, manual) counts the catalogue's header sentence states.

    Raises:
        ValueError: the sentence is missing, or its total is not the sum.
    """
    m = _COUNTS.search(doc_text)
    if m is None:
        raise ValueError(f"{CATALOGUE_DOC}: no 'There are N automated controls' sentence")
    automated, manual = int(m["automated"]), int(m["manual"])
    if automated + manual != int(m["total"]):
        raise ValueError(f"{CATALOGUE_DOC}: {automated} + {manual} is not {m['total']}")
    return automated, manual


def _py_str(text: str) -> str:
    """A string literal as ruff format writes it: double quotes unless that needs more escapes."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    body = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    body = "".join(
        c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" if ord(c) < 0x100 else c
        for c in body
    )
    return f"{quote}{body}{quote}"


def _py_tuple(items: Sequence[str], indent: int) -> list[str]:
    """A tuple of strings as an element of a ruff-formatted, exploded outer tuple."""
    pad = " " * indent
    inner = ", ".join(_py_str(i) for i in items) + ("," if len(items) == 1 else "")
    one_line = f"{pad}({inner}),"
    if len(one_line) <= _LINE_LENGTH:
        return [one_line]
    return [f"{pad}(", *(f"{pad}    {_py_str(i)}," for i in items), f"{pad}),"]


_DATA_HEADER = '''\
"""Control catalogue data, extracted from docs/controls.md (sections 4 and 5).

Generated by ``python -m harness.generate``: edit docs/controls.md, then run it.
"""

from __future__ import annotations

# (id, title, HIPAA citation, checklist items, default severity, family, automated)
ROWS: tuple[tuple[str, str, str, tuple[str, ...], str, str, bool], ...] = (
'''


def catalogue_data(doc_text: str) -> str:
    """The source of ``harness/_catalogue_data.py`` for the catalogue ``doc_text``."""
    out = [_DATA_HEADER.rstrip("\n")]
    for row in parse_controls(doc_text):
        out.append("    (")
        out.extend(f"        {_py_str(v)}," for v in (row.id, row.title, row.citation))
        out.extend(_py_tuple(row.checklist, 8))
        out.extend(f"        {_py_str(v)}," for v in (row.severity, row.family))
        out.append(f"        {row.automated},")
        out.append("    ),")
    out.append(")")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------
# The suites: the check registry -> suites/test_*.py


class Registered(Protocol):
    """What :func:`suite_modules` needs of a registered check (:class:`harness.checks.Check`)."""

    @property
    def control(self) -> Control:
        """The catalogued control the check decides."""

    @property
    def fn(self) -> Callable[..., object]:
        """The check function; its name ends the suite test's name."""


@dataclass(frozen=True)
class Suite:
    """One suite module: the catalogue families whose checks it holds, and its docstring."""

    name: str
    families: tuple[str, ...]
    docstring: str


#: Which suite module holds the tests of which catalogue family (section 4 headings).
SUITES = (
    Suite(
        "surface",
        ("Reflection and admin surface",),
        "Surface: reflection and admin services (45 CFR 164.312(a)(1), 164.308(a)(1)(ii)(B)).",
    ),
    Suite(
        "transport",
        ("Transport: TLS", "Certificates", "Mutual TLS"),
        "Transport: encryption in transit, and authentication of the endpoints.\n\n"
        "45 CFR 164.312(e)(1), (e)(2)(i), (e)(2)(ii) and 164.312(d).\n",
    ),
    Suite(
        "access",
        ("Authentication", "Authorization", "Keys and evidence"),
        "Access control: authentication (164.312(d)) and authorization (164.312(a)(1)).",
    ),
    Suite(
        "audit",
        ("Audit", "Redaction and PHI leakage"),
        "Audit controls and redaction (164.312(b), 164.312(c), 164.502(b)).",
    ),
    Suite(
        "minimize",
        ("Data minimisation", "Resource limits"),
        "Minimum necessary and resource limits (164.502(b), 164.514(d), 164.308(a)(1)(ii)(B)).",
    ),
    Suite(
        "errors",
        ("Errors",),
        "Error hygiene: sanitised, uniform errors (164.312(a)(1), 164.312(d)).",
    ),
    Suite(
        "fuzz",
        ("Fuzzing",),
        "Fuzzing: malformed and extreme inputs (164.308(a)(8), 164.312(c)(1)).",
    ),
    Suite(
        "cloud",
        ("Cloud",),
        "Cloud: the estate around the service, read-only from the provider's account "
        "(--hipaa-cloud).\n\n"
        "45 CFR 164.312(a)(1), (a)(2)(iv), (b), (c)(1), (e)(1) and 164.308(a)(7).\n",
    ),
)

_STUB = """

@pytest.mark.hipaa_control("{control_id}")
def {name}(hipaa_verdict):
    hipaa_verdict.conclude()
"""


def suite_test_name(check: Registered) -> str:
    """``test_<ID with _>_<check function name>``, e.g. ``test_REFL_001_reflection_disabled``."""
    return f"test_{check.control.test_name_fragment}_{check.fn.__name__}"


def suite_modules(
    registry: Mapping[str, Registered], order: Iterable[str] | None = None
) -> dict[str, str]:
    """The source of each ``suites/test_*.py`` (keyed by that path), one test per check.

    Tests are grouped by catalogue family (:data:`SUITES`) and follow ``order``, the
    catalogue's by default. A suite with no registered check has no module.

    Raises:
        ValueError: a check's family has no suite in :data:`SUITES`.
    """
    if order is None:
        from harness.catalogue import CATALOGUE

        order = CATALOGUE
    position = {control_id: i for i, control_id in enumerate(order)}
    suite_of = {family: suite for suite in SUITES for family in suite.families}
    tests: dict[str, list[Registered]] = {suite.name: [] for suite in SUITES}
    for control_id in sorted(registry, key=lambda c: (position.get(c, len(position)), c)):
        check = registry[control_id]
        suite = suite_of.get(check.control.family)
        if suite is None:
            raise ValueError(
                f"{control_id}: no suite for the family {check.control.family!r}; "
                "add it to SUITES in harness/generate.py"
            )
        tests[suite.name].append(check)
    out = {}
    for suite in SUITES:
        if not tests[suite.name]:
            continue
        text = [f'"""{suite.docstring}"""\n', f"\n# Generated by {COMMAND}: do not edit.\n"]
        text.append("\nimport pytest\n")
        for check in tests[suite.name]:
            text.append(_STUB.format(control_id=check.control.id, name=suite_test_name(check)))
        out[f"{SUITES_DIR}/test_{suite.name}.py"] = "".join(text)
    return out


# --------------------------------------------------------------------------------------
# README.md: the defect tables and the control counts


_MARKED = re.compile(
    r"(?P<open><!-- generated: (?P<name>[^>]+?) -->\n)(?P<body>.*?)(?P<close><!-- /generated -->)",
    re.S,
)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _defect_table(defects: Iterable[Defect]) -> str:
    lines = ["| Defect | What it breaks | Must FAIL |", "|---|---|---|"]
    for d in defects:
        what = d.summary
        if d.fuzz_budget_s is not None:
            what += f" (the detection matrix gives it `--hipaa-fuzz-budget={d.fuzz_budget_s:g}`)"
        trips = ", ".join(d.trips) or "(none)"
        lines.append(f"| `{d.name}` | {_md_cell(what)} | {trips} |")
    return "\n".join(lines) + "\n"


def readme_sections(
    controls: Sequence[Row], bundled: Mapping[str, BundledTarget]
) -> dict[str, str]:
    """The generated parts of ``README.md``, by the name in their marker comment.

    ``defects NAME`` is the table of bundled target NAME's defects that run on the service
    itself, ``defects NAME edge`` the table of those behind the TLS edge; ``catalogue
    counts`` is the sentence with the number of automated and manual controls.
    """
    automated = sum(1 for c in controls if c.automated)
    manual = len(controls) - automated
    sections = {
        "catalogue counts": (
            f"The catalogue ([docs/controls.md](docs/controls.md)) has {automated} automated "
            f"controls and {manual} that\nonly a person can attest.\n"
        )
    }
    for target in bundled.values():
        own = [d for d in target.defects if not d.edge]
        edge = [d for d in target.defects if d.edge]
        if own:
            sections[f"defects {target.name}"] = _defect_table(own)
        if edge:
            sections[f"defects {target.name} edge"] = _defect_table(edge)
    return sections


def splice(text: str, sections: Mapping[str, str]) -> str:
    """``text`` with each generated section's body replaced by ``sections[NAME]``.

    A section runs from ``<!-- generated: NAME -->`` to ``<!-- /generated -->``; its new
    body has a blank line on each side.

    Raises:
        ValueError: a section has no marker, or a marker names no section.
    """
    found: set[str] = set()

    def replace(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in sections:
            raise ValueError(f"{README}: no generator for the marker 'generated: {name}'")
        found.add(name)
        return f"{m['open']}\n{sections[name]}\n{m['close']}"

    out = _MARKED.sub(replace, text)
    missing = sorted(set(sections) - found)
    if missing:
        raise ValueError(
            f"{README}: no '<!-- generated: NAME -->' ... '<!-- /generated -->' markers for "
            + ", ".join(missing)
        )
    return out


_ID_RANGE = re.compile(
    r"^(?P<prefix>[A-Z]+)-(?P<start>\d{3})\s*(?:\.\.\.|…)\s*(?:[A-Z]+-)?(?P<end>\d{3})$"
)
_ID = re.compile(r"^(?:(?P<prefix>[A-Z]+)-)?(?P<number>\d{3})$")


def mentioned_controls(readme_text: str, heading: str = "## What is checked today") -> set[str]:
    """Control IDs named in the first column of the table under ``heading``.

    ``TLS-001...006`` stands for TLS-001 to TLS-006, and ``AUTHZ-002, 004`` for AUTHZ-002
    and AUTHZ-004.
    """
    found = re.search(rf"^{re.escape(heading)}$", readme_text, flags=re.M)
    if found is None:
        return set()
    end = readme_text.find("\n## ", found.end())
    section = readme_text[found.end() : end if end >= 0 else len(readme_text)]
    ids: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        prefix = ""
        for part in _cells(line)[0].split(","):
            part = part.strip()
            if m := _ID_RANGE.match(part):
                prefix = m["prefix"]
                ids.update(f"{prefix}-{n:03d}" for n in range(int(m["start"]), int(m["end"]) + 1))
            elif (m := _ID.match(part)) and (m["prefix"] or prefix):
                prefix = m["prefix"] or prefix
                ids.add(f"{prefix}-{m['number']}")
    return ids


# --------------------------------------------------------------------------------------
# All of it, and the command


def generated_files(root: Path, registry: Mapping[str, Registered]) -> dict[str, str]:
    """Every generated file's path (relative to ``root``, POSIX) and its expected content."""
    from targets.catalog import BUNDLED

    doc = (root / CATALOGUE_DOC).read_text(encoding="utf-8")
    readme = (root / README).read_text(encoding="utf-8")
    files = {CATALOGUE_DATA: catalogue_data(doc)}
    files.update(suite_modules(registry, [r.id for r in parse_controls(doc)]))
    files[README] = splice(readme, readme_sections(parse_controls(doc), BUNDLED))
    return files


def stray_suites(root: Path, files: Mapping[str, str]) -> list[str]:
    """Suite modules on disk that the generator does not produce (a family moved away)."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in (root / SUITES_DIR).glob("test_*.py")
        if p.relative_to(root).as_posix() not in files
    )


def stale_files(root: Path, files: Mapping[str, str]) -> list[str]:
    """The generated files whose content on disk differs (or that are missing), and strays."""
    stale = []
    for rel, text in files.items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(rel)
    return stale + stray_suites(root, files)


def _registry() -> Mapping[str, Registered]:
    from harness.checks import registered

    return registered()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.generate [--check] [--root DIR]``: write or check every file."""
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Write the files generated from docs/controls.md, the check registry "
        "and targets/catalog.py (or, with --check, list the stale ones).",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the repository (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    try:
        data = catalogue_data((root / CATALOGUE_DOC).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 2
    data_path = root / CATALOGUE_DATA
    data_stale = not data_path.is_file() or data_path.read_text(encoding="utf-8") != data
    if data_stale and not args.check:
        # Before the registry is imported: a check for a new control needs its row.
        data_path.write_text(data, encoding="utf-8")
        print(f"wrote {CATALOGUE_DATA}")
    try:
        files = generated_files(root, _registry())
    except (KeyError, ValueError) as exc:
        if data_stale and args.check:
            print(f"stale: {CATALOGUE_DATA}\n(then: {exc})\nrun {COMMAND}", file=sys.stderr)
            return 1
        print(f"{COMMAND}: {exc}", file=sys.stderr)
        return 2
    stale = stale_files(root, files)
    if args.check:
        if stale:
            print("stale: " + ", ".join(stale) + f"\nrun {COMMAND}", file=sys.stderr)
            return 1
        print("every generated file is current")
        return 0
    strays = set(stray_suites(root, files))
    for rel in stale:
        if rel in strays:
            (root / rel).unlink()
            print(f"removed {rel} (no registered check belongs in it)")
        else:
            (root / rel).write_text(files[rel], encoding="utf-8")
            print(f"wrote {rel}")
    unmentioned = sorted(set(_registry()) - mentioned_controls(files[README]))
    if unmentioned:
        print(
            f"note: {README} 'What is checked today' does not mention "
            + ", ".join(unmentioned)
            + " (tests/test_generated.py requires it)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
