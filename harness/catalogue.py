"""The control catalogue in code: the single source of truth for IDs, titles and citations.

Everything that names a control (checks, pytest markers, findings, reports) looks it up
here. The rows come from ``docs/controls.md``; :mod:`harness._catalogue_data` holds them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from harness._catalogue_data import ROWS


class Severity(str, enum.Enum):
    """How bad a finding is, ordered from ``low`` to ``critical``."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Position in the order low < medium < high < critical."""
        return _SEVERITY_ORDER.index(self)

    # str already defines the comparisons, so functools.total_ordering would not apply.
    def __lt__(self, other: object) -> bool:
        return self.rank < _rank(other)

    def __le__(self, other: object) -> bool:
        return self.rank <= _rank(other)

    def __gt__(self, other: object) -> bool:
        return self.rank > _rank(other)

    def __ge__(self, other: object) -> bool:
        return self.rank >= _rank(other)


def _rank(other: object) -> int:
    if not isinstance(other, Severity):
        raise TypeError(f"cannot order Severity against {type(other).__name__}")
    return other.rank


_SEVERITY_ORDER = (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)


@dataclass(frozen=True)
class Control:
    """One catalogued control.

    Attributes:
        id: Stable control ID, for example ``REFL-001``.
        title: Short title from the catalogue.
        citation: HIPAA citation with its D:/S: mapping tags, as the catalogue writes it.
        checklist: Checklist items (``CL-nn``) the control covers.
        severity: Default severity of a finding.
        family: Catalogue section, for example ``Reflection and admin surface``.
        automated: False for the manual-attestation controls (``ATT-*``).
    """

    id: str
    title: str
    citation: str
    checklist: tuple[str, ...]
    severity: Severity
    family: str
    automated: bool

    @property
    def test_name_fragment(self) -> str:
        """The ID as it appears in test function names: ``REFL-001`` -> ``REFL_001``."""
        return self.id.replace("-", "_")


class Catalogue(Mapping[str, Control]):
    """Read-only mapping from control ID to :class:`Control`."""

    def __init__(self, controls: tuple[Control, ...]) -> None:
        self._by_id = {c.id: c for c in controls}
        if len(self._by_id) != len(controls):
            raise ValueError("duplicate control ID in the catalogue")

    def __getitem__(self, control_id: str) -> Control:
        try:
            return self._by_id[control_id]
        except KeyError:
            raise KeyError(f"unknown control ID {control_id!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def automated(self) -> tuple[Control, ...]:
        """Controls the harness tests itself (section 4 of the catalogue)."""
        return tuple(c for c in self._by_id.values() if c.automated)

    def attestations(self) -> tuple[Control, ...]:
        """Controls that only a person can attest (section 5 of the catalogue)."""
        return tuple(c for c in self._by_id.values() if not c.automated)


CATALOGUE = Catalogue(
    tuple(
        Control(
            id=row[0],
            title=row[1],
            citation=row[2],
            checklist=row[3],
            severity=Severity(row[4]),
            family=row[5],
            automated=row[6],
        )
        for row in ROWS
    )
)
