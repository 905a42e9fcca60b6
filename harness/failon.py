"""Which control results fail the run (``--hipaa-fail-on``), so nothing unjudged looks green.

The default, ``low,inconclusive,error``, fails the run on any FAIL, on any control the
harness could not judge, and on any harness error: a run is green only when every selected
control PASSed (or SKIPped as not applicable). A team that gates a pipeline on severe
findings only can say ``high`` (FAILs of high or critical severity), and still be shown
every other finding and every INCONCLUSIVE control in the terminal and the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.catalogue import Severity
from harness.errors import UsageError
from harness.outcome import Status
from harness.reporting.model import ControlResult

DEFAULT = "low,inconclusive,error"
_WORDS = ("inconclusive", "error", "none")


@dataclass(frozen=True)
class FailOn:
    """What fails the run.

    Attributes:
        severity: FAILs of this severity or worse fail the run; ``None``: no FAIL does.
        inconclusive: An INCONCLUSIVE control fails the run.
        error: An ERROR control fails the run.
        text: As given, for messages.
    """

    severity: Severity | None
    inconclusive: bool
    error: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> FailOn:
        """``"high,inconclusive"`` -> FailOn; ``"none"`` fails on nothing.

        Raises:
            UsageError: an unknown word, two severities, or ``none`` with anything else.
        """
        words = [w.strip().lower() for w in text.split(",") if w.strip()]
        known = {s.value for s in Severity} | set(_WORDS)
        unknown = [w for w in words if w not in known]
        if unknown or not words:
            raise UsageError(
                f"--hipaa-fail-on={text!r}: expected a comma-separated list of a severity "
                f"(low, medium, high, critical), inconclusive, error, or none; got {unknown}"
            )
        severities = [Severity(w) for w in words if w not in _WORDS]
        if len(severities) > 1 or ("none" in words and len(words) > 1):
            raise UsageError(
                f"--hipaa-fail-on={text!r}: name one severity (the lowest that fails the "
                "run), or none alone"
            )
        return cls(
            severities[0] if severities else None,
            "inconclusive" in words,
            "error" in words,
            ",".join(words),
        )

    def reasons(self, controls: Iterable[ControlResult]) -> list[str]:
        """Why the run fails under this setting: one line per control that fails it."""
        out = []
        for c in controls:
            if c.status is Status.FAIL and self.severity is not None:
                severity = c.severity or c.default_severity
                if severity >= self.severity:
                    out.append(f"{c.id} FAIL ({severity.value})")
            elif c.status is Status.INCONCLUSIVE and self.inconclusive:
                out.append(f"{c.id} INCONCLUSIVE")
            elif c.status is Status.ERROR and self.error:
                out.append(f"{c.id} ERROR")
        return out
