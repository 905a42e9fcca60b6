"""Synthetic canary PHI and a detector that finds it in any encoding.

Every run draws a nonce ``N`` (10 base32 characters, about 50 bits). Each canary embeds
``N`` or digits derived from it, and every value comes from a reserved or never-issued range
(SSN area 9xx, the 555-01xx phone range, example.com, 2001:db8::/32, the RFC 5737 IPv4
ranges, .example), so it cannot belong to a real person (catalogue section 1.10).

Detection searches for needles built from every canary value, in the encodings section 1.10
lists: exact, case-folded, JSON-escaped, URL-encoded, base64 (standard and URL-safe) at all
three alignments, hex, and digits only for SSN, phone and fax. IPv6 is searched in its
canonical compressed and its expanded form. The biometric canary (``BIOCNRY`` || N ||
random bytes) is found raw, in base64 and in hex; the photo (a 1x1 PNG whose ``tEXt`` chunk
holds N) by the SHA-256 of the file and by its ``tEXt`` marker, raw or in base64. ``N`` on
its own, in any of these encodings, is a hit too (named by the canary on its line, else
``other_id``). A hit is reported by category, encoding and location, with a SHA-256 of the
line, never the line itself.

Detectability follows the catalogue. Low (ZIP, dates, IPv4): a weak hit, unless another
canary is on the same line. Short values (SSN, phone, fax, ZIP, dates, IP addresses, the
plate) count only as whole tokens, so a ZIP inside a hex digest or a phone number with one
more digit is no hit. Phone and fax (medium) are found only with their run-specific
extension: the 555-01xx number alone is shared by every run. The ZIP (five digits) is not
searched in base64 or hex: that short a value cannot be told from chance once encoded.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import random
import struct
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

#: Category code -> (Safe Harbor category, strong?). Weak ones count only beside another hit.
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
    "I4": ("ipv4", False),
    "BI": ("biometric", True),
    "PX": ("photo", True),
    "UI": ("other_id", True),
}
_STRONG = dict(CATEGORIES.values())

#: Value keys searched only as whole tokens (no letter or digit right before or after).
_BOUNDED = {"zip", "birth_date", "ssn", "phone", "fax", "ip", "ipv4", "plate"}
#: Value keys also searched as their digits only.
_DIGITS = {"ssn", "phone", "fax"}
#: Values shorter than this are not searched in base64 or hex (too few bits to tell).
_MIN_ENCODED = 7
#: The RFC 5737 documentation ranges, one picked per run.
_IPV4_NETS = ("192.0.2", "198.51.100", "203.0.113")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_PHOTO_KEYWORD = b"Canary"


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


@dataclass(frozen=True)
class _Needle:
    """What a needle means. Category '*' is the bare nonce, named by the canary on its line."""

    encoding: str
    category: str
    original: bytes  # as built, before case folding
    bounded: bool
    gated: bool  # holds N in some form: searched only once a bare-nonce needle is found


@dataclass(frozen=True)
class _Span:
    """One canary occurrence in a blob: [start, end), its encoding and category."""

    start: int
    end: int
    encoding: str
    category: str


#: The needles of the last few nonces seen (every redaction builds the run's CanarySet).
_NEEDLES: dict[str, dict[tuple[bool, bytes], _Needle]] = {}


def _positions(hay: bytes, needle: bytes) -> Iterator[int]:
    at = hay.find(needle)
    while at != -1:
        yield at
        at = hay.find(needle, at + 1)


def _b64_window(raw: bytes, offset: int) -> bytes:
    """The base64 characters that hold only ``raw``'s bits, ``offset`` bytes (mod 3) in.

    The characters at either end also hold bits of the bytes around ``raw``, so they are
    left out.
    """
    encoded = base64.b64encode(b"\0" * offset + raw)
    first = -(-8 * offset // 6)  # the first character all of whose 6 bits lie in raw
    last = 8 * (offset + len(raw)) // 6
    return encoded[first:last]


def _text_forms(value: str) -> list[tuple[str, str]]:
    """(encoding, form) of a text value: exact, JSON-escaped and URL-encoded."""
    escaped = json.dumps(value)[1:-1]
    return [
        ("exact", value),
        ("JSON-escaped", escaped),
        ("JSON-escaped", escaped.replace("/", "\\/")),
        ("URL-encoded", urllib.parse.quote(value, safe="")),
        ("URL-encoded", urllib.parse.quote(value, safe="/")),
        ("URL-encoded", urllib.parse.quote_plus(value, safe="")),
    ]


def _encoded_forms(raw: bytes) -> list[tuple[str, bytes, bool]]:
    """(encoding, needle, case-insensitive?): hex, base64 and base64url at three offsets."""
    forms = [("hex", raw.hex().encode(), True)]
    for k in range(3):
        window = _b64_window(raw, k)
        forms.append((f"base64 (offset {k})", window, False))
        forms.append((f"base64url (offset {k})", window.translate(_URLSAFE), False))
    return forms


def _png(nonce: str) -> bytes:
    """A 1x1 grey PNG whose ``tEXt`` chunk (keyword ``Canary``) holds the nonce."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"tEXt", _PHOTO_KEYWORD + b"\0" + nonce.encode()),
            chunk(b"IDAT", zlib.compress(b"\0\0")),  # filter byte and one grey pixel
            chunk(b"IEND", b""),
        )
    )


class CanarySet:
    """The run's canaries, by Safe Harbor category."""

    def __init__(self, nonce: str) -> None:
        if len(nonce) != 10 or any(c not in _B32 for c in nonce):
            raise ValueError("a canary nonce is 10 base32 characters")
        self.nonce = nonce
        digits = "".join(str(_B32.index(c) % 10) for c in nonce)
        self.ssn = (
            f"9{digits[0:2]}-{int(digits[2:4]) % 99 + 1:02d}-{int(digits[4:8]) % 9999 + 1:04d}"
        )
        tail = random.Random(f"hipaa-canary-bio-{nonce}").randbytes(16)
        #: The biometric template: ``BIOCNRY`` || N || 16 random bytes.
        self.biometric = b"BIOCNRY" + nonce.encode() + tail
        #: The full-face photograph: a 1x1 PNG with a ``tEXt`` chunk holding N.
        self.photo = _png(nonce)
        self.values: dict[str, str] = self._text_values(digits)
        self.values["biometric"] = base64.b64encode(self.biometric).decode()
        self.values["photo"] = base64.b64encode(self.photo).decode()
        self.values["other_id"] = f"UID-UI-{nonce}"
        self.category_of = {key: key for key in self.values}
        self.category_of.update(
            given_name="names", family_name="names", street="geographic", city="geographic",
            birth_date="dates", plate="vehicle",
        )  # fmt: skip
        #: (case-insensitive?, needle) -> what it means; a case-insensitive needle is lower
        #: case and is searched in the lower-cased blob.
        self._needles: dict[tuple[bool, bytes], _Needle] = _NEEDLES.get(nonce, {})
        if not self._needles:
            self._build_needles()
            if len(_NEEDLES) >= 16:
                _NEEDLES.clear()
            _NEEDLES[nonce] = self._needles

    def _text_values(self, digits: str) -> dict[str, str]:
        """The text canaries, by value key (biometric, photo and other_id come after)."""
        n, low = self.nonce, self.nonce.lower()
        number = 0
        for c in n:
            number = number * 32 + _B32.index(c)
        phone_nn = int(digits[8:10])
        ipv6 = (0x20010DB8 << 96) | ((number >> 2) << 48) | 1  # 48 bits of N, then ::1
        return {
            "given_name": f"Cnry{n}",
            "family_name": f"Hipaa{n}",
            "street": f"{n} Canary Ln",
            "city": f"Canaryton{n}",
            "zip": f"00{digits[0:3]}",
            "birth_date": f"1901-{int(digits[0]) % 9 + 1:02d}-{int(digits[1:3]) % 28 + 1:02d}",
            "phone": f"+1-202-555-01{phone_nn:02d} x{digits}",
            "fax": f"+1-202-555-01{(phone_nn + 50) % 100:02d} x{digits}",
            "email": f"cnry.{low}@example.com",
            "ssn": self.ssn,
            "mrn": f"MRN-MR-{n}",
            "health_plan": f"HPB-HP-{n}",
            "account": f"ACCT-AC-{n}",
            "license": f"LIC-LI-{n}",
            "vehicle": f"CNRY{n}XXX",
            "plate": f"C{n[0:6]}",
            "device": f"DEV-DV-{n}",
            "url": f"https://{low}.canary.example/p/{n}",
            "ip": ipaddress.IPv6Address(ipv6).compressed,
            "ipv4": f"{_IPV4_NETS[number % 3]}.{number // 3 % 254 + 1}",
        }

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

    # -- needles ------------------------------------------------------------------------

    def _add(
        self,
        encoding: str,
        needle: bytes,
        category: str,
        *,
        folded: bool,
        bounded: bool = False,
        gated: bool = False,
    ) -> None:
        """One needle (the first meaning given to a needle stands)."""
        key = (folded, needle.lower() if folded else needle)
        if key not in self._needles:
            self._needles[key] = _Needle(encoding, category, needle, bounded, gated)

    def _build_needles(self) -> None:
        """Every value in every encoding that applies to it, then the bare nonce."""
        for key, value in self.values.items():
            if key not in ("biometric", "photo"):
                self._value_needles(key, value)
        self._binary_needles()
        for form in (self.nonce, self.nonce.lower()):
            self._add("exact", form.encode(), "*", folded=True)
            for encoding, needle, folded in _encoded_forms(form.encode()):
                self._add(encoding, needle, "*", folded=folded)

    def _value_needles(self, key: str, value: str) -> None:
        """A text value: text forms (case-insensitive), encoded forms, digits only."""
        category, bounded = self.category_of[key], key in _BOUNDED
        # Every form of a value holding N holds a bare-nonce needle too (hex and base64 of
        # N in its case, at the matching offset), so it is searched only after one is found.
        gated = self.nonce.lower() in value.lower()
        forms = [value]
        if key == "ip":
            forms.append(ipaddress.IPv6Address(value).exploded)
        for form in forms:
            for encoding, text in _text_forms(form):
                self._add(
                    encoding, text.encode(), category, folded=True, bounded=bounded, gated=gated
                )
            if len(form) >= _MIN_ENCODED:
                for encoding, needle, folded in _encoded_forms(form.encode()):
                    self._add(encoding, needle, category, folded=folded, gated=gated)
        if key in _DIGITS:
            only = "".join(ch for ch in value if ch.isdigit())
            for digits in (only, only[1:]) if value.startswith("+1") else (only,):
                self._add("digits only", digits.encode(), category, folded=True, bounded=True)

    def _binary_needles(self) -> None:
        """Biometric (raw, base64, hex) and photo (SHA-256 of the file, its tEXt marker)."""
        markers = (
            (b"BIOCNRY" + self.nonce.encode(), "biometric"),
            (b"tEXt" + _PHOTO_KEYWORD + b"\0" + self.nonce.encode(), "photo"),
        )
        for marker, category in markers:
            self._add("raw", marker, category, folded=False, gated=True)
            for encoding, needle, folded in _encoded_forms(marker):
                self._add(encoding, needle, category, folded=folded, gated=True)
        digest = hashlib.sha256(self.photo).digest()
        self._add("sha256", digest.hex().encode(), "photo", folded=True)
        b64 = base64.b64encode(digest).rstrip(b"=")
        self._add("sha256 (base64)", b64, "photo", folded=False)
        self._add("sha256 (base64url)", b64.translate(_URLSAFE), "photo", folded=False)

    # -- searching ----------------------------------------------------------------------

    def _spans(self, blob: bytes) -> list[_Span]:
        """Every canary occurrence in ``blob``, in order; one inside a longer one is dropped.

        One bytes.find pass per needle is about twice as fast as a regex alternation. The
        needles of values holding N are searched only when N itself is found in some form.
        """
        hays = {False: blob, True: blob.lower()}
        found = self._find(hays, gated=False)
        if any(spec.category == "*" for _, _, spec in found):
            found += self._find(hays, gated=True)
        found.sort(key=lambda f: (f[0], -f[1]))
        spans: list[_Span] = []
        reach = 0
        for at, size, spec in found:
            end = at + size
            if end <= reach or (spec.bounded and not _standalone(blob, at, end)):
                continue  # inside a canary already found, or not a token of its own
            reach = end
            encoding = spec.encoding
            if encoding == "exact" and blob[at:end] != spec.original:
                encoding = "case-folded"
            spans.append(_Span(at, end, encoding, spec.category))
        return spans

    def anywhere(self, data: bytes | str) -> bool:
        """Whether any canary may occur in ``data``: False means :meth:`mask` changes nothing.

        One containment test per ungated needle, no offsets: the needles of values holding
        N are only searched once an ungated one is found, so none found means no span.
        """
        blob = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        hays = {False: blob, True: blob.lower()}
        return any(
            needle in hays[folded]
            for (folded, needle), spec in self._needles.items()
            if not spec.gated
        )

    def _find(self, hays: dict[bool, bytes], *, gated: bool) -> list[tuple[int, int, _Needle]]:
        """(offset, length, needle) of every occurrence of the gated or ungated needles."""
        return [
            (at, len(needle), spec)
            for (folded, needle), spec in self._needles.items()
            if spec.gated is gated
            for at in _positions(hays[folded], needle)
        ]

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
        for span in self._spans(blob):
            start = blob.rfind(b"\n", 0, span.start) + 1
            end = blob.find(b"\n", span.end)
            line = blob[start : end if end != -1 else len(blob)]
            line_no = blob.count(b"\n", 0, start) + 1
            category = self._category(line, span.category)
            key = (line_no, category, span.encoding)
            if key in seen:
                continue
            seen.add(key)
            line_hash = hashlib.sha256(line).hexdigest()
            strong = _STRONG.get(category, True)
            hits.append(Hit(category, span.encoding, f"{source}:{line_no}", line_hash, strong))
        return _promote(hits)

    def mask(self, text: str) -> str:
        """``text`` with every canary, in every encoding scanned, replaced by its category.

        A value becomes ``<canary:category>``; the bare nonce becomes ``<canary>``. Of a
        base64 form, the one or two characters at either end that also encode the bytes
        around it stay.
        """
        blob = text.encode("utf-8", "surrogatepass")
        out = bytearray()
        last = 0
        for span in self._spans(blob):
            if span.start >= last:
                out += blob[last : span.start]
                label = "canary" if span.category == "*" else f"canary:{span.category}"
                out += f"<{label}>".encode()
            last = max(last, span.end)
        if not last:
            return text
        out += blob[last:]
        return out.decode("utf-8", "surrogatepass")


def _promote(hits: list[Hit]) -> list[Hit]:
    """A weak hit counts as strong when another canary is found on its line."""
    categories: dict[str, set[str]] = {}
    strong_lines = set()
    for h in hits:
        categories.setdefault(h.location, set()).add(h.category)
        if h.strong:
            strong_lines.add(h.location)
    return [
        h
        if h.strong or (h.location not in strong_lines and len(categories[h.location]) < 2)
        else Hit(h.category, h.encoding, h.location, h.line_sha256, True)
        for h in hits
    ]
