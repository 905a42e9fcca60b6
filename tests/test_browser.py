"""report.html in a real browser: headless Chromium from Debian's packages.

Two real runs share one ``evidence.history_dir``: the compliant reference (every suite),
then reference+reflection (REFL and AUTHZ-001 only), so the second page has a trend with
a new finding. Each page is loaded by Chromium with every network request sent to a local
proxy that records it and refuses it; the test holds that

* it renders: the DOM after load has the grid, the charts and the TLS summary, and the
  screenshot is a real picture (kept: ``$HIPAA_ARTIFACTS``, else pytest's tmp dir; the
  path is printed); the fleet page ``report merge`` makes of both bundles too;
* nothing is fetched: the proxy saw no request, Chromium logged no Content-Security-Policy
  refusal (the page's own CSP blocks fetches; a refusal means the page tried one), and no
  element of the rendered DOM points at a resource (``src``, ``href``, ``url(``...).

Chromium is ``chromium-headless-shell`` or ``chromium`` (``.ci/run`` installs the first
when neither is there). Without it the test skips, except in CI (``CI`` or
``HIPAA_REQUIRE_BROWSER`` set), where it fails: CI must run it.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.cli import main

pytestmark = pytest.mark.slow

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")
#: Attributes that make a browser fetch (or navigate to) something.
FETCHING = ("src", "href", "srcset", "poster", "data", "action", "formaction", "background")


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    why = f"no headless Chromium ({' or '.join(BROWSERS)}); Debian: apt-get install {BROWSERS[0]}"
    if os.environ.get("CI") or os.environ.get("HIPAA_REQUIRE_BROWSER"):
        pytest.fail(f"{why} (CI must run the browser test)", pytrace=False)
    pytest.skip(why)


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that records the first line of every request and refuses it.

    Chromium sends every http, https (CONNECT) and ws request through it.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0]
                    self.seen.append(first.decode("latin-1") or "(empty request)")
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    self.seen.append("(connection)")

    def close(self) -> None:
        self._sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    p = RecordingProxy()
    try:
        yield p
    finally:
        p.close()


def chromium(browser: str, page: Path, proxy: RecordingProxy, profile: Path, *action: str):
    """Run headless Chromium on ``page`` with all traffic through ``proxy``."""
    args = [
        browser,
        "--headless",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        f"--proxy-server=http://127.0.0.1:{proxy.port}",
        "--proxy-bypass-list=<-loopback>",  # even loopback goes through the proxy
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
        *action,
        page.resolve().as_uri(),
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Dom(HTMLParser):
    """The rendered DOM: elements by id, counts by tag and class, every fetching attribute."""

    ids: dict[str, str] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    fetches: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for name, value in attrs:
            value = value or ""
            if name == "id":
                self.ids[value] = tag
            if name == "class":
                for css in value.split():
                    self.classes[f"{tag}.{css}"] = self.classes.get(f"{tag}.{css}", 0) + 1
            if name in FETCHING or name.endswith(":href") or "url(" in value:
                self.fetches.append(f"<{tag} {name}={value!r}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def rendered(browser: str, page: Path, proxy: RecordingProxy, tmp: Path) -> Dom:
    """The DOM after load, with no fetch seen by the proxy or refused by the page's CSP."""
    done = chromium(browser, page, proxy, tmp / "profile-dom", "--dump-dom")
    assert done.returncode == 0, done.stderr[-3000:]
    refused = [line for line in done.stderr.splitlines() if "Content Security Policy" in line]
    assert not refused, refused
    dom = Dom()
    dom.feed(done.stdout)
    assert not dom.fetches, dom.fetches
    return dom


def screenshot(browser: str, page: Path, proxy: RecordingProxy, tmp: Path, name: str) -> Path:
    """A full-width screenshot, kept where CI collects artefacts; its path is printed."""
    where = Path(os.environ.get("HIPAA_ARTIFACTS") or tmp)
    where.mkdir(parents=True, exist_ok=True)
    shot = where / name
    done = chromium(
        browser,
        page,
        proxy,
        tmp / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,4200",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"screenshot of {page}: {shot}", file=sys.stderr)
    return shot


def png_colours(path: Path) -> tuple[int, int, int]:
    """Width, height, and how many distinct byte values its pixel stream holds."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", blob[16:24])
    pos, data = 8, b""
    while pos < len(blob):
        (size,) = struct.unpack(">I", blob[pos : pos + 4])
        kind = blob[pos + 4 : pos + 8]
        if kind == b"IDAT":
            data += blob[pos + 8 : pos + 8 + size]
        pos += 12 + size
    return width, height, len(set(zlib.decompress(data)))


def run_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--hipaa-seed=7", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def two_runs(root: Path) -> tuple[Path, Path]:
    """Two real runs' report.html, sharing one evidence.history_dir."""
    (root / "hipaa.toml").write_text(f'[evidence]\nhistory_dir = "{root / "history"}"\n')
    first = run_pytest(root, "--hipaa-target=spawn:reference", "--hipaa-report=first")
    assert first.returncode == 0, first.stdout[-3000:]
    second = run_pytest(
        root,
        "--hipaa-target=spawn:reference+reflection",
        "--hipaa-report=second",
        "-k",
        "REFL or AUTHZ_001",
    )
    assert second.returncode == 1, second.stdout[-3000:]
    return root / "first" / "report.html", root / "second" / "report.html"


def test_the_reports_render_with_their_pictures_and_fetch_nothing(proxy, tmp_path):
    """One test for both pages, so that pytest-xdist does not make the two runs twice."""
    browser = _browser()
    first, second = two_runs(tmp_path)
    _check_first(browser, first, proxy, tmp_path)
    _check_second(browser, second, proxy, tmp_path)
    _check_fleet(browser, [first.parent, second.parent], proxy, tmp_path)
    assert proxy.seen == []


def _check_first(browser: str, page: Path, proxy: RecordingProxy, tmp: Path) -> None:
    """The compliant reference: the grid, the TLS summary, coverage, a one-run trend."""
    dom = rendered(browser, page, proxy, tmp)
    assert dom.ids["rbac-grid"] == "table"
    assert dom.classes["td.cell"] >= 8 * 7  # 8 protected methods x 7 principals
    assert "td.mismatch" not in dom.classes  # the reference does what its matrix says
    assert dom.ids["tls-summary"] == "h2"
    assert dom.ids["cert-life"] == "div"
    assert dom.classes["span.pill"] >= 6  # six protocol versions, and groups
    assert dom.classes["table.coverage"] == 1
    assert dom.classes["svg.hbar"] >= 10  # a bar per family, suites, the certificate
    assert dom.ids["trend-findings"] == "svg"  # the history holds this run
    assert "this is the first run recorded" in "".join(dom.text)
    shot = screenshot(browser, page, proxy, tmp, "report-reference.png")
    width, height, colours = png_colours(shot)
    assert (width, height) == (1280, 4200)
    assert colours > 32, "the screenshot is (nearly) blank"


def _check_second(browser: str, page: Path, proxy: RecordingProxy, tmp: Path) -> None:
    """reference+reflection after it: two runs in the trend, REFL-001 a new finding."""
    dom = rendered(browser, page, proxy, tmp)
    assert dom.ids["trend-findings"] == "svg"
    assert dom.ids["trend-controls"] == "svg"
    assert dom.classes["svg.chart"] == 2
    text = "".join(dom.text)
    assert "2 run(s) in evidence.history_dir" in text
    assert "1 new finding(s)" in text
    assert "REFL-001" in text
    shot = screenshot(browser, page, proxy, tmp, "report-trend.png")
    assert png_colours(shot)[2] > 32, "the screenshot is (nearly) blank"


def _check_fleet(browser: str, bundles: list[Path], proxy: RecordingProxy, tmp: Path) -> None:
    """``report merge`` over both bundles: the heat map renders, REFL-001 in the second row."""
    assert main(["report", "merge", *map(str, bundles), "-o", str(tmp / "fleet")]) == 0
    dom = rendered(browser, tmp / "fleet" / "index.html", proxy, tmp)
    assert dom.ids["heat-map"] == "table"
    assert dom.classes["td.h-high"] >= 1  # REFL-001 (high) under 164.312(a) and 164.308(a)
    assert "REFL-001" in "".join(dom.text)
    shot = screenshot(browser, tmp / "fleet" / "index.html", proxy, tmp, "fleet.png")
    assert png_colours(shot)[2] > 32, "the screenshot is (nearly) blank"


def test_the_fetch_detector_sees_a_fetch(proxy, tmp_path):
    """The method can fail: a page that loads an image is caught by the proxy and the DOM."""
    browser = _browser()
    page = tmp_path / "fetching.html"
    page.write_text("<html><body><img src='http://images.example/x.png'>hi</body></html>")
    done = chromium(browser, page, proxy, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-3000:]
    assert any("images.example" in line for line in proxy.seen), proxy.seen
    dom = Dom()
    dom.feed(done.stdout)
    assert dom.fetches


def test_ci_without_chromium_fails_rather_than_skips(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("HIPAA_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser test"):
        _browser()
    monkeypatch.delenv("HIPAA_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium-headless-shell"):
        _browser()
