"""Canary PHI: values from reserved ranges, found in every encoding, never printed.

Every category is planted in every catalogue encoding that applies to it (section 1.10)
and must be found under its own category; near-miss values and the same shapes built
from another run's nonce must not be; low-detectability categories are weak alone and
strong beside another canary; masking hides whatever the scan finds.
"""

import base64
import hashlib
import ipaddress
import json
import struct
import urllib.parse
import zlib
from collections.abc import Callable

import pytest

from harness.canary import CATEGORIES, CanarySet

SEED = 7
C = CanarySet.for_seed(SEED)
OTHER = CanarySet.for_seed(8)  # another run: the same shapes, another nonce
LOW = ("zip", "birth_date", "ipv4")  # low detectability: weak alone

Encoder = Callable[[str], "str | bytes"]

#: Text encodings: every text value.
TEXT: dict[str, Encoder] = {
    "exact": lambda s: s,
    "lower": str.lower,
    "upper": str.upper,
    "json": lambda s: json.dumps({"v": s}),
    "json, slash escaped": lambda s: json.dumps({"v": s}).replace("/", "\\/"),
    "url-encoded": lambda s: urllib.parse.quote(s, safe=""),
    "url-encoded path": lambda s: urllib.parse.quote(s),
    "form-encoded": lambda s: urllib.parse.urlencode({"v": s}),
}


def _b64(prefix: bytes, urlsafe: bool = False) -> Encoder:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return lambda s: encode(prefix + s.encode() + b"!?").decode()


#: Binary-to-text encodings of the value's bytes, at every base64 alignment.
ENCODED: dict[str, Encoder] = {
    "base64 offset 0": _b64(b""),
    "base64 offset 1": _b64(b"x"),
    "base64 offset 2": _b64(b"xy"),
    "base64url offset 0": _b64(b"", urlsafe=True),
    "base64url offset 1": _b64(b"\xfe", urlsafe=True),
    "base64url offset 2": _b64(b"\xfe\xff", urlsafe=True),
    "hex": lambda s: s.encode().hex(),
    "HEX": lambda s: s.encode().hex().upper(),
}


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _raw_b64(prefix: bytes, urlsafe: bool = False) -> Callable[[bytes], str]:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return lambda b: encode(prefix + b + b"!").decode()


#: Biometric template and photo: the bytes, raw or encoded (the value as planted is base64).
BINARY: dict[str, Callable[[bytes], "str | bytes"]] = {
    "raw": lambda b: b"\x00\x01 " + b + b" \xff",
    "base64 offset 0": _raw_b64(b""),
    "base64 offset 1": _raw_b64(b"x"),
    "base64 offset 2": _raw_b64(b"xy"),
    "base64url offset 1": _raw_b64(b"\xfe", urlsafe=True),
    "base64url offset 2": _raw_b64(b"\xfe\xff", urlsafe=True),
    "hex": lambda b: b.hex(),
    "HEX": lambda b: b.hex().upper(),
}


def _cases(c: CanarySet) -> list[tuple[str, str, "str | bytes"]]:
    """(value key, encoding name, planted text) for every key and encoding that applies."""
    cases: list[tuple[str, str, str | bytes]] = []
    for key, value in c.values.items():
        if key in ("biometric", "photo"):
            raw = c.biometric if key == "biometric" else c.photo
            cases += [(key, name, enc(raw)) for name, enc in BINARY.items()]
            cases.append((key, "as planted", value))
            continue
        forms = {"": value}
        if key == "ip":
            forms["expanded "] = ipaddress.IPv6Address(value).exploded
        for label, form in forms.items():
            cases += [(key, label + name, enc(form)) for name, enc in TEXT.items()]
            if key != "zip":  # five digits: too short to tell from chance once encoded
                cases += [(key, label + name, enc(form)) for name, enc in ENCODED.items()]
        if key in ("ssn", "phone", "fax"):
            cases.append((key, "digits only", _digits(value)))
        if key in ("phone", "fax"):
            cases.append((key, "national digits only", _digits(value)[1:]))
    digest = hashlib.sha256(c.photo).digest()
    cases.append(("photo", "sha256", f"photo sha256={digest.hex()}"))
    cases.append(("photo", "SHA256", digest.hex().upper()))
    cases.append(("photo", "sha256 base64", f"sha256-{base64.b64encode(digest).decode()}"))
    cases.append(("photo", "data uri", f"data:image/png;base64,{c.values['photo']}"))
    return cases


def _line(planted: "str | bytes") -> bytes:
    body = planted.encode() if isinstance(planted, str) else planted
    return b"2026-11-22T10:00:00Z INFO update field=" + body + b" outcome=OK"


CASES = _cases(C)
LABELS = {"base64": "base64", "hex": "hex", "HEX": "hex", "digits": "digits only"}


@pytest.mark.parametrize(
    ("key", "encoding", "planted"), CASES, ids=[f"{k}-{e}" for k, e, _ in CASES]
)
def test_every_category_is_found_in_every_encoding(key, encoding, planted):
    hits = C.scan(b"clean line\n" + _line(planted) + b"\nclean line", "app.log")
    assert {h.category for h in hits} == {C.category_of[key]}, (key, encoding)
    raw_newlines = _line(planted).count(b"\n")  # a raw PNG holds newline bytes
    assert len({h.location for h in hits}) == 1
    assert raw_newlines or {h.location for h in hits} == {"app.log:2"}
    assert all(h.strong is (key not in LOW) for h in hits)  # alone on its line
    for prefix, label in LABELS.items():
        if encoding.removeprefix("expanded ").startswith(prefix):
            assert any(label in h.encoding for h in hits), [h.encoding for h in hits]
    if encoding in ("lower", "upper") and planted != C.values[key]:
        assert [h.encoding for h in hits] == ["case-folded"]


@pytest.mark.parametrize(
    ("key", "encoding", "planted"), CASES, ids=[f"{k}-{e}" for k, e, _ in CASES]
)
def test_masking_hides_every_category_in_every_encoding(key, encoding, planted):
    text = _line(planted).decode("latin-1")
    masked = C.mask(text)
    assert f"<canary:{C.category_of[key]}>" in masked
    assert C.scan(masked.encode("utf-8"), "bundle") == []
    shown = planted if isinstance(planted, str) else planted.decode("latin-1")
    assert shown not in masked


def test_the_issue_phone_fax_and_ip_are_found_as_sent():
    """Known defect, now closed: phone, fax and IPv6 canaries logged as sent were no hit."""
    c = CanarySet.for_seed(1)
    for key in ("phone", "fax", "ip", "ipv4", "plate", "biometric", "photo"):
        assert [h.category for h in c.scan(f"v={c.values[key]}", "log")] == [c.category_of[key]]


def test_another_runs_canaries_are_no_hits():
    assert not set(OTHER.values.values()) & set(C.values.values())
    cases = _cases(OTHER)
    log = b"\n".join(_line(planted) for _, _, planted in cases)
    assert C.scan(log, "other.log") == []
    assert OTHER.scan(log, "other.log")  # ...while that run finds them
    text = log.decode("latin-1")
    assert C.mask(text) == text


def _near_misses(c: CanarySet) -> list[str]:
    v = c.values
    other_nonce = c.nonce[:-1] + ("A" if c.nonce[-1] != "A" else "B")
    base_phone = v["phone"].split(" x")[0]
    return [
        base_phone,  # the 555-01xx number alone belongs to no run
        "+12025550100",
        v["phone"] + "0",  # one more extension digit
        v["phone"][:-1] + str((int(v["phone"][-1]) + 1) % 10),
        _digits(v["fax"]) + "1",
        v["ssn"][:-1] + str((int(v["ssn"][-1]) + 1) % 10),
        "1" + _digits(v["ssn"]) + "2",
        "sha256:ab" + v["zip"] + "cd",
        "0x" + v["zip"] + "9",
        v["ipv4"] + "0",
        v["ipv4"].rsplit(".", 1)[0] + ".255",
        v["ip"] + "2",
        "X" + v["plate"] + "Y",
        v["birth_date"][:-1] + str((int(v["birth_date"][-1]) + 1) % 10),
        f"MRN-MR-{other_nonce}",
        f"Cnry{other_nonce}",
        f"BIOCNRY{other_nonce}",
        base64.b64encode(f"HPB-HP-{other_nonce}".encode()).decode(),
        f"HPB-HP-{other_nonce}".encode().hex(),
        c.nonce[:9],
    ]


@pytest.mark.parametrize("text", _near_misses(C))
def test_near_misses_are_no_hits(text):
    assert C.scan(f"INFO value={text} end", "log") == []


@pytest.mark.parametrize("key", LOW)
def test_low_detectability_is_weak_alone_and_strong_beside_another_canary(key):
    low = C.values[key]
    alone = C.scan(f"INFO value={low}", "x")
    assert [(h.category, h.strong) for h in alone] == [(C.category_of[key], False)]
    beside_strong = C.scan(f"INFO mrn={C.values['mrn']} value={low}", "x")
    assert {h.category for h in beside_strong} == {"mrn", C.category_of[key]}
    assert all(h.strong for h in beside_strong)
    other_low = next(k for k in LOW if k != key)
    beside_weak = C.scan(f"INFO {other_low}={C.values[other_low]} value={low}", "x")
    assert len(beside_weak) == 2
    assert all(h.strong for h in beside_weak)
    apart = C.scan(f"INFO mrn={C.values['mrn']}\nINFO value={low}", "x")
    assert [(h.location, h.strong) for h in apart] == [("x:1", True), ("x:2", False)]


def test_values_come_from_reserved_ranges():
    v = C.values
    assert v["ssn"].startswith("9")  # SSN area 900-999 is never issued
    assert v["phone"].startswith("+1-202-555-01")
    assert v["fax"].startswith("+1-202-555-01")
    assert v["phone"] != v["fax"]
    assert v["email"].endswith("@example.com")
    ip = ipaddress.IPv6Address(v["ip"])
    assert ip in ipaddress.IPv6Network("2001:db8::/32")
    assert v["ip"] == ip.compressed
    assert v["ip"].endswith("::1")
    ipv4 = ipaddress.IPv4Address(v["ipv4"])
    nets = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")  # RFC 5737
    assert any(ipv4 in ipaddress.IPv4Network(n) for n in nets)
    assert ".canary.example/" in v["url"]
    assert len(v["vehicle"]) == 17
    assert v["plate"] == "C" + C.nonce[:6]
    assert C.biometric.startswith(b"BIOCNRY" + C.nonce.encode())
    assert base64.b64decode(v["biometric"]) == C.biometric
    assert CanarySet.for_seed(SEED).nonce == C.nonce
    assert CanarySet.for_seed(SEED).values == C.values
    assert OTHER.nonce != C.nonce


def test_the_photo_is_a_1x1_png_whose_text_chunk_holds_the_nonce():
    png = base64.b64decode(C.values["photo"])
    assert png == C.photo
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    chunks, at = {}, 8
    while at < len(png):
        (size,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + size]
        (crc,) = struct.unpack(">I", png[at + 8 + size : at + 12 + size])
        assert crc == zlib.crc32(kind + data)
        chunks[kind] = data
        at += 12 + size
    assert list(chunks) == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]
    assert struct.unpack(">II", chunks[b"IHDR"][:8]) == (1, 1)
    assert chunks[b"tEXt"] == b"Canary\x00" + C.nonce.encode()


def test_every_category_has_a_canary_and_a_name():
    names = {name for name, _ in CATEGORIES.values()}
    assert set(C.category_of.values()) == names
    for key in ("plate", "ipv4", "biometric", "photo"):
        assert C.value(key) == C.values[key]
    assert C.value("vehicle") == C.values["vehicle"]
    assert C.value("ip") == C.values["ip"]
    assert C.value("names") == C.values["given_name"]
    assert set(C.manifest()) == set(C.values.values())


def test_a_value_holding_a_longer_one_is_named_once():
    hits = C.scan(f"vin={C.values['vehicle'].lower()}", "x")  # holds the given name, folded
    assert [(h.category, h.encoding) for h in hits] == [("vehicle", "case-folded")]


def test_the_bare_nonce_is_a_hit_named_by_its_line():
    hits = C.scan(f'bad birth_date "not-a-date-{C.nonce}"', "x")
    assert [(h.category, h.encoding) for h in hits] == [("other_id", "exact")]
    line = f"name={C.values['given_name']} again={base64.b64encode(C.nonce.encode()).decode()}"
    assert {h.category for h in C.scan(line, "x")} == {"names"}


def test_hits_never_carry_the_line():
    hit = C.scan("2nd line\nname " + C.values["given_name"], "app.log")[0]
    assert hit.location == "app.log:2"
    assert C.values["given_name"] not in hit.describe()
    assert C.nonce not in hit.describe()


def test_mask_replaces_values_with_categories():
    text = f"bad date for {C.values['given_name']} ({C.values['ssn']})"
    masked = C.mask(text)
    assert masked == "bad date for <canary:names> (<canary:ssn>)"
    assert C.scan(masked, "x") == []
    assert C.mask(f"not-a-date-{C.nonce.lower()}") == "not-a-date-<canary>"
    assert C.mask("ünïcode ✓ text") == "ünïcode ✓ text"
    assert C.mask(f"İ {C.values['phone']} ✓") == "İ <canary:phone> ✓"


def test_clean_text_has_no_hits():
    assert C.scan(b"2026-11-22 INFO rpc method=/a.B/C outcome=OK " * 1000, "x") == []


def test_field_map_reaches_nested_fields():
    from harness.audit import field
    from harness.config import Config

    class _Run:
        config = Config({"audit": {"field_map": {"identity": "actor.id", "method": "rpc"}}})

    event = {"actor": {"id": "u-1"}, "rpc": "/a.B/C"}
    assert field(_Run(), event, "identity") == "u-1"  # type: ignore[arg-type]
    assert field(_Run(), event, "method") == "/a.B/C"  # type: ignore[arg-type]
    assert field(_Run(), event, "source") is None  # type: ignore[arg-type]


def test_fuzz_strategies_round_trip_and_go_deep():
    from hypothesis import HealthCheck, given, settings

    from harness.fuzz import messages
    from targets.reference import schema

    request = schema.message("SearchPatientsRequest")
    depths = []

    def depth(f, d=1):
        return max([d, *(depth(x, d + 1) for x in f.any_of)])

    @settings(
        max_examples=60, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(messages(request))
    def check(msg):
        assert (
            request.FromString(msg.SerializeToString()).SerializeToString()
            == msg.SerializeToString()
        )
        depths.append(depth(msg.filter) if msg.HasField("filter") else 0)

    check()
    assert max(depths) > 8  # deep nesting is generated, not left to chance
