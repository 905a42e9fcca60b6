"""Synthetic canary PHI and a detector that finds it in any encoding.

Every run draws a nonce ``N`` (10 base32 characters, about 50 bits). Each canary embeds
``N`` or digits derived from it, and every value comes from a reserved or never-issued range
(SSN area 9xx, the 555-01xx phone range, example.com, 2001:db8::/32, .example), so it
cannot belong to a real person (catalogue section 1.10).

Detection looks for a handful of needles, each derived from ``N``, in the encodings
section 1.10 lists: exact, case-folded, JSON-escaped and URL-encoded (all identical for
``N``'s alphabet), base64 (standard and URL-safe) at all three alignments, hex, and digits
only for SSN and phone numbers. A hit is reported by category, encoding and location, with
a SHA-256 of the line, never the line itself.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
from dataclasses import dataclass

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

#: Category code -> (Safe Harbor category, strong?). Weak ones count only beside a strong hit.
CATEGORIES = {
    "NM": ("names", True),
    "GE": ("geographic", True),
    "ZP": ("zip", False),
    "DT": ("dates", False),
    "PH": ("phone", True),
    "FX": ("fax", True),
    "EM": ("email", True),
    "SS": ("ssn", True),
    "MR": ("mrn", True),
    "HP": ("health_plan", True),
    "AC": ("account", True),
    "LI": ("license", True),
    "VH": ("vehicle", True),
    "DV": ("device", True),
    "UR": ("url", True),
    "IP": ("ip", True),
    "BI": ("biometric", True),
    "UI": ("other_id", True),
}
_WEAK = {name for name, strong in CATEGORIES.values() if not strong} | {"ssn", "phone"}


def _standalone(blob: bytes, start: int, end: int) -> bool:
    before = blob[start - 1 : start] if start else b""
    after = blob[end : end + 1]
    return not (before.isalnum() or after.isalnum())


def holds_standalone(blob: bytes, value: str) -> bool:
    """Whether ``value`` occurs in ``blob`` with no letter or digit right before or after it.

    A short value such as a five-digit ZIP code occurs by chance inside hex digests and
    UUIDs; as a field of its own it does not.
    """
    needle = value.encode()
    start = blob.find(needle)
    while start != -1:
        if _standalone(blob, start, start + len(needle)):
            return True
        start = blob.find(needle, start + 1)
    return False


@dataclass(frozen=True)
class Hit:
    """One canary found: where, which category, in which encoding, and the line's hash."""

    category: str
    encoding: str
    location: str
    line_sha256: str
    strong: bool

    def describe(self) -> str:
        """Evidence without the value: category, encoding, location, line hash."""
        where = f"{self.category} ({self.encoding}) at {self.location}"
        return f"{where}, line sha256:{self.line_sha256[:16]}"


class CanarySet:
    """The run's canaries, by Safe Harbor category."""

    def __init__(self, nonce: str) -> None:
        if len(nonce) != 10 or any(c not in _B32 for c in nonce):
            raise ValueError("a canary nonce is 10 base32 characters")
        self.nonce = nonce
        n, low = nonce, nonce.lower()
        digits = "".join(str(_B32.index(c) % 10) for c in n)
        self.ssn = (
            f"9{digits[0:2]}-{int(digits[2:4]) % 99 + 1:02d}-{int(digits[4:8]) % 9999 + 1:04d}"
        )
        self.values: dict[str, str] = {
            "given_name": f"Cnry{n}",
            "family_name": f"Hipaa{n}",
            "street": f"{n} Canary Ln",
            "city": f"Canaryton{n}",
            "zip": f"00{digits[0:3]}",
            "birth_date": f"1901-{int(digits[0]) % 9 + 1:02d}-{int(digits[1:3]) % 28 + 1:02d}",
            "phone": f"+1-202-555-01{digits[8:10]} x{digits}",
            "fax": f"+1-202-555-01{digits[7:9]} x{digits}",
            "email": f"cnry.{low}@example.com",
            "ssn": self.ssn,
            "mrn": f"MRN-MR-{n}",
            "health_plan": f"HPB-HP-{n}",
            "account": f"ACCT-AC-{n}",
            "license": f"LIC-LI-{n}",
            "vehicle": f"CNRY{n}XXX",
            "device": f"DEV-DV-{n}",
            "url": f"https://{low}.canary.example/p/{n}",
            "ip": f"2001:db8:{n.encode().hex()[:4]}::1",
            "other_id": f"UID-UI-{n}",
        }
        self.category_of = {key: key for key in self.values}
        self.category_of.update(
            given_name="names", family_name="names", street="geographic", city="geographic",
            birth_date="dates",
        )  # fmt: skip
        self._needles = self._build_needles(digits)

    @classmethod
    def for_seed(cls, seed: int) -> CanarySet:
        """The canaries of a run with this seed (reproducible from the report header)."""
        rng = random.Random(f"hipaa-canary-{seed}")
        return cls("".join(rng.choice(_B32) for _ in range(10)))

    def value(self, category_or_field: str) -> str:
        """The canary for a Safe Harbor category name or one of the value keys above."""
        if category_or_field in self.values:
            return self.values[category_or_field]
        for key, cat in self.category_of.items():
            if cat == category_or_field:
                return self.values[key]
        raise KeyError(category_or_field)

    def manifest(self) -> list[str]:
        """Every canary value (what ``canaries.json`` lists)."""
        return sorted(set(self.values.values()))

    def _build_needles(self, digits: str) -> dict[bytes, tuple[str, str]]:
        """Needle bytes -> (encoding, category). Category '*' means: any strong canary."""
        needles: dict[bytes, tuple[str, str]] = {}
        for form, label in ((self.nonce, "exact"), (self.nonce.lower(), "case-folded")):
            raw = form.encode()
            needles[raw] = (label, "*")
            needles[raw.hex().encode()] = ("hex", "*")
            needles[raw.hex().upper().encode()] = ("hex", "*")
            for k in range(3):
                enc = base64.b64encode(b"\0" * k + raw)
                lead = 4 if k else 0
                tail = len(enc) - 4 if (k + len(raw)) % 3 else len(enc)
                stable = enc[lead:tail]
                needles[stable] = (f"base64 (offset {k})", "*")
                needles.setdefault(
                    stable.replace(b"+", b"-").replace(b"/", b"_"), (f"base64url (offset {k})", "*")
                )
        ssn_digits = self.ssn.replace("-", "")
        needles[self.ssn.encode()] = ("exact", "ssn")
        needles[ssn_digits.encode()] = ("digits only", "ssn")
        needles[f"20255501{digits[8:10]}".encode()] = ("digits only", "phone")
        needles[self.values["birth_date"].encode()] = ("exact", "dates")
        needles[self.values["zip"].encode()] = ("exact", "zip")
        return needles

    def _category(self, line: bytes, needle_category: str) -> str:
        if needle_category != "*":
            return needle_category
        text = line.decode("utf-8", "replace").lower()
        for key, value in self.values.items():
            if self.nonce.lower() in value.lower() and value.lower() in text:
                return self.category_of[key]
        return "other_id"  # the nonce in a form that names no single category

    def scan(self, data: bytes | str, source: str) -> list[Hit]:
        """Every canary occurrence in ``data``, one hit per (line, category, encoding)."""
        blob = data.encode() if isinstance(data, str) else data
        hits: list[Hit] = []
        seen: set[tuple[int, str, str]] = set()
        for at, needle in self._occurrences(blob):
            encoding, cat = self._needles[needle]
            if cat in _WEAK and not _standalone(blob, at, at + len(needle)):
                continue  # low-entropy needles count only as whole tokens (not inside a hash)
            start = blob.rfind(b"\n", 0, at) + 1
            end = blob.find(b"\n", at + len(needle))
            line = blob[start : end if end != -1 else len(blob)]
            line_no = blob.count(b"\n", 0, start) + 1
            category = self._category(line, cat)
            key = (line_no, category, encoding)
            if key in seen:
                continue
            seen.add(key)
            strong = next((s for (n, s) in CATEGORIES.values() if n == category), True)
            hits.append(
                Hit(
                    category,
                    encoding,
                    f"{source}:{line_no}",
                    hashlib.sha256(line).hexdigest(),
                    strong,
                )
            )
        # A weak category (zip, dates) counts as strong only beside a strong hit on its line.
        strong_lines = {h.location for h in hits if h.strong}
        return [
            h
            if h.strong or h.location not in strong_lines
            else Hit(h.category, h.encoding, h.location, h.line_sha256, True)
            for h in hits
        ]

    def _occurrences(self, blob: bytes) -> list[tuple[int, bytes]]:
        """(offset, needle) of every needle, in order.

        One bytes.find pass per needle is about twice as fast as a regex alternation.
        """
        found = []
        for needle in self._needles:
            at = blob.find(needle)
            while at != -1:
                found.append((at, needle))
                at = blob.find(needle, at + 1)
        return sorted(found)

    def mask(self, text: str) -> str:
        """``text`` with every canary value and nonce form replaced by a category marker."""
        for key, value in sorted(self.values.items(), key=lambda kv: len(kv[1]), reverse=True):
            if len(value) >= 8:
                text = text.replace(value, f"<canary:{self.category_of[key]}>")
        return re.sub(re.escape(self.nonce), "<canary>", text, flags=re.I)
