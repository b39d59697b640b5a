"""``costtrace report --html``: a self-contained page, user data escaped, rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from decimal import Decimal
from pathlib import Path

import pytest

from costtrace.cli import html_report, main
from tests.ledger.workload import HOSTILE_FEATURE, build_ledger

WIDTH, HEIGHT = 1280, 2000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML report of the workload's ledger, written by the CLI."""
    folder = tmp_path_factory.mktemp("html")
    url = f"sqlite:///{folder / 'ledger.db'}"
    build_ledger(url)
    out = folder / "report.html"
    assert main(["report", "--ledger", url, "--by", "feature,route", "--html", str(out)]) == 0
    return out


def test_the_page_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<svg" in page and "<style>" in page
    # Nothing to fetch: no scripts, no external stylesheets, images, fonts or links.
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|\bhref=|url\(|@import|https?://", page, re.IGNORECASE)
    for title in ("Cost per successful task over time", "Cost by feature", "Retry tax by feature", "Model comparison"):
        assert title in page


def test_user_data_is_escaped(report):
    page = report.read_text(encoding="utf-8")
    assert HOSTILE_FEATURE not in page
    assert "faq &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page


def test_the_chart_helpers_escape_and_handle_empty_data():
    bars = html_report.bar_chart([html_report.Bar('<b a="1">', (Decimal("0.5"), None))], series=("x<y", "z"))
    assert "<b " not in bars and "&lt;b a=&quot;1&quot;&gt;" in bars and "x&lt;y" in bars and "n/a" in bars
    assert "no data" in html_report.line_chart([])
    none_yet = html_report.line_chart([html_report.Point("2026-05-01", None)])
    assert "undefined" in none_yet
    assert html_report.nice_max(0.0437) == (0.06, 0.02) and html_report.nice_max(0.0096) == (0.01, 0.0025)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _pixels(data: bytes) -> bytes:
    """The decompressed image data (scanlines with their filter bytes) of a PNG."""
    pos, idat = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return zlib.decompress(b"".join(idat))


def _screenshot(chromium: str, page: Path, png: Path, profile: Path) -> bytes:
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return png.read_bytes()


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); it renders the HTML report")
    shot = _screenshot(chromium, report, tmp_path / "report.png", tmp_path / "profile")
    assert _png_size(shot) == (WIDTH, HEIGHT)
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    blank = _screenshot(chromium, blank_page, tmp_path / "blank.png", tmp_path / "profile")
    assert _png_size(blank) == (WIDTH, HEIGHT)
    # Charts, text and cards: many colours and a far larger file than a blank page of the same size.
    assert len(shot) > 10 * len(blank), (len(shot), len(blank))
    assert len(set(_pixels(shot))) > 64
    assert len(set(_pixels(blank))) < 8
