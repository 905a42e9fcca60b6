"""``summary.md``: for a CI job summary (``cat summary.md >> $GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

from harness.outcome import Status
from harness.reporting.model import DISCLAIMER, Results
from harness.reporting.results import probe_coverage

_QUIET = (Status.PASS, Status.SKIP, Status.ATTESTED)


def render_summary(results: Results) -> str:
    """Totals, one row per control that is neither PASS, SKIP nor ATTESTED, EVID-001."""
    totals = sorted((s.value, n) for s, n in results.totals.items())
    lines = [
        f"## HIPAA technical safeguards: {results.run.target}",
        "",
        "> " + DISCLAIMER,
        "",
        " | ".join(f"**{k}** {v}" for k, v in totals),
        "",
        "| Control | Status | Severity | Finding |",
        "|---|---|---|---|",
    ]
    for c in results.controls:
        if c.status in _QUIET:
            continue
        summary = c.summary.replace("|", "\\|").replace("\n", " ")[:240]
        severity = c.severity.value if c.severity else ""
        lines.append(f"| {c.id} {c.title} | {c.status.value} | {severity} | {summary} |")
    lines += _reproducers(results)
    passed = [c.id for c in results.controls if c.status is Status.PASS]
    coverage = results.probe_coverage or probe_coverage(results.controls)
    evidence = results.evidence.status.value if results.evidence else None
    lines += [
        "",
        f"Passed: {', '.join(passed) or 'none'}",
        "",
        coverage.line(),
        "",
        f"Evidence integrity (EVID-001): {evidence}",
    ]
    return "\n".join(lines) + "\n"


def _reproducers(results: Results) -> list[str]:
    """``### Reproducers``: per failing probe, the placeholders to set and the commands."""
    found = [(probe_id, r) for c in results.controls for probe_id, r in c.reproducers]
    if not found:
        return []
    lines = ["", "### Reproducers", ""]
    for probe_id, repro in found:
        said = f" (the harness got `{repro.code}`)" if repro.code else ""
        lines.append(f"**{probe_id}**{said}")
        if repro.fill:
            lines.append("Set first: " + ", ".join(f"`${name}`" for name in repro.fill))
        commands = [c for c in (repro.grpcurl, repro.replay) if c] or [repro.rerun]
        lines += ["", "```sh", *commands, "```"]
        if repro.note:
            lines.append(f"Note: {repro.note}")
        lines.append("")
    return lines
