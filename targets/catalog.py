"""Which bundled targets exist and which named defects each one can switch on.

This module is imported by the harness to validate ``spawn:`` specs, so it stays free of
heavy imports. Each defect lists the control IDs it must make FAIL: the detection matrix in
``tests/`` holds every defect to exactly that list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Defect:
    """A deliberate break of one control family.

    Attributes:
        name: What goes after ``+`` in a ``spawn:`` spec.
        summary: What the defect does to the service.
        trips: Control IDs that must FAIL when it is on (and no others).
    """

    name: str
    summary: str
    trips: tuple[str, ...]


@dataclass(frozen=True)
class BundledTarget:
    """A service the harness can start by itself with ``--hipaa-target=spawn:NAME``."""

    name: str
    summary: str
    defects: tuple[Defect, ...]

    def defect(self, name: str) -> Defect:
        """The defect called ``name``; raises KeyError if there is none."""
        for d in self.defects:
            if d.name == name:
                return d
        raise KeyError(name)


REFERENCE = BundledTarget(
    name="reference",
    summary=(
        "PatientRecords, a compliant ePHI service: mTLS, JWT bearer auth, per-method RBAC, "
        "hash-chained audit log, redacted logs, sanitized errors, reflection off"
    ),
    defects=(
        Defect(
            "reflection",
            "server reflection v1 and v1alpha registered and open to every caller",
            ("REFL-001",),
        ),
        Defect(
            "plaintext",
            "the main port serves cleartext HTTP/2 (h2c) instead of TLS",
            ("TLS-001",),
        ),
    ),
)

BUNDLED: dict[str, BundledTarget] = {REFERENCE.name: REFERENCE}
