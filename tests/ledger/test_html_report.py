"""``costtrace report --html``: a self-contained page, user data escaped, rendered by headless Chromium.

The charts are checked on the HTML itself (each ``<svg>`` is well-formed XML: bars carry ``data-row``,
``data-series`` and ``data-value``), then in Chromium: a screenshot, and a copy of the page with a
script that measures every chart's and bar's bounding box (the report itself has no script).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from decimal import Decimal
from pathlib import Path

import pytest

from costtrace.analysis.stats import Filters, scope_stats
from costtrace.cli import html_report, main
from costtrace.spend.engine import make_engine
from tests.ledger.workload import HOSTILE_FEATURE, build_ledger

WIDTH, HEIGHT = 1280, 3200
AXIS_TITLES = {
    "Cost per successful task over time": "USD per successful task",
    "Routes compared: cost per successful task and first-pass rate": "USD per successful task",
    "Cost by feature": "USD, total spend",
    "Retry tax by feature": "% of spend",
    "Model comparison": "USD per million tokens",
    "Latency to a correct answer and of failed tasks": "wall time, task start to end (",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of the workload's ledger (SQLite)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('html') / 'ledger.db'}"
    build_ledger(url)
    return url


def _write_report(ledger: str, folder: Path, by: str) -> Path:
    out = folder / f"report-{by.replace(',', '-')}.html"
    assert main(["report", "--ledger", ledger, "--by", by, "--html", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def report(ledger: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML report of the workload's ledger by feature and route, written by the CLI."""
    return _write_report(ledger, tmp_path_factory.mktemp("page"), "feature,route")


def _charts(page: str) -> dict[str, ET.Element]:
    """Every chart of the page by its title (each ``<svg>`` parsed as XML: it must be well-formed)."""
    charts = {}
    for svg in re.findall(r"<svg\b.*?</svg>", page, re.DOTALL):
        root = ET.fromstring(svg)
        charts[root.get("aria-label")] = root
    return charts


def _bars(chart: ET.Element) -> list[tuple[str, str, Decimal]]:
    """(row, series, value) of each drawn bar, top to bottom."""
    return [
        (r.get("data-row"), r.get("data-series"), Decimal(r.get("data-value")))
        for r in chart.iter("rect")
        if r.get("class") == "bar"
    ]


def _texts(chart: ET.Element, cls: str) -> list[str]:
    return ["".join(t.itertext()) for t in chart.iter("text") if cls in (t.get("class") or "").split()]


def _route_stats(ledger: str) -> dict[tuple[str | None, str | None], object]:
    engine = make_engine(ledger)
    try:
        stats = scope_stats(engine, by=("feature", "route"), filters=Filters())
    finally:
        engine.dispose()
    return {(s.key["feature"], s.key["route"]): s for s in stats}


def test_the_page_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<svg" in page and "<style>" in page
    # Nothing to fetch: no scripts, no external stylesheets, images, fonts or links.
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|\bhref=|url\(|@import|https?://", page, re.IGNORECASE)
    for title in ("Cost per successful task over time", "Cost by feature", "Retry tax by feature", "Model comparison"):
        assert title in page


def test_every_chart_has_a_title_a_text_alternative_and_axes_with_units(report):
    charts = _charts(report.read_text(encoding="utf-8"))
    assert set(charts) == set(AXIS_TITLES)
    for title, chart in charts.items():
        assert chart.get("role") == "img"
        assert chart.find("title").text == title
        assert chart.find("desc").text  # the values as text, for screen readers and text browsers
        axis_titles = _texts(chart, "axistitle")
        assert any(t.startswith(AXIS_TITLES[title]) for t in axis_titles), (title, axis_titles)
    for title in AXIS_TITLES.keys() - {"Cost per successful task over time"}:  # the bar charts: ticks on 0..top
        ticks = _texts(charts[title], "tick")
        assert len(ticks) >= 3 and ticks[0] in ("$0", "0%", "0"), (title, ticks)
    assert _texts(charts["Routes compared: cost per successful task and first-pass rate"], "tick")[-5:] == [
        "0%", "25%", "50%", "75%", "100%",
    ]  # fmt: skip
    latency_axis = _texts(charts["Latency to a correct answer and of failed tasks"], "axistitle")
    assert latency_axis[0] in ("wall time, task start to end (milliseconds)", "wall time, task start to end (seconds)")


def test_the_route_chart_has_each_feature_s_routes_cheapest_per_success_first(report, ledger):
    chart = _charts(report.read_text(encoding="utf-8"))["Routes compared: cost per successful task and first-pass rate"]
    stats = _route_stats(ledger)
    bars = _bars(chart)
    cost = [(row, v) for row, series, v in bars if series == "USD per successful task"]
    first_pass = [(row, v) for row, series, v in bars if series == "first-pass rate (% of tasks)"]
    support = ["support: gpt-4o-mini", "support: gpt-4o", "support: gpt-4o-mini->gpt-4o"]  # by cost per success
    assert [row for row, _ in cost] == [row for row, _ in first_pass]
    assert [row for row, _ in cost if row.startswith("support:")] == support
    assert len(cost) == len(stats) == 5
    for row, value in cost:
        feature, route = row.split(": ", 1)
        assert value == stats[(feature, route)].cost_per_successful_task_usd
    # By hand from the workload: on mini, tasks 0, 3, 6, 9 are retried and 0, 4, 8 fail, so 6 of 12 pass
    # first time and 9 succeed; gpt-4o 5 of 5; the cascade escalates every task.
    assert dict(first_pass)["support: gpt-4o-mini"] == Decimal("0.5")
    assert dict(first_pass)["support: gpt-4o"] == 1 and dict(first_pass)["support: gpt-4o-mini->gpt-4o"] == 0
    assert dict(cost)["support: gpt-4o-mini"] == stats[("support", "gpt-4o-mini")].total_cost_usd / 9
    marks = _texts(chart, "best")
    assert len(marks) == 2 and marks[0].endswith("cheapest") and marks[1].startswith("100.0%")
    groups = _texts(chart, "group")
    assert groups == sorted(groups) and "support" in groups and HOSTILE_FEATURE in groups  # as text, escaped


def test_the_route_chart_is_there_when_the_report_is_not_by_route(report, ledger, tmp_path):
    by_feature = _write_report(ledger, tmp_path, "feature").read_text(encoding="utf-8")
    title = "Routes compared: cost per successful task and first-pass rate"
    assert _bars(_charts(by_feature)[title]) == _bars(_charts(report.read_text(encoding="utf-8"))[title])


def test_the_latency_chart_has_p50_p95_of_successes_and_failures_per_group(report, ledger):
    chart = _charts(report.read_text(encoding="utf-8"))["Latency to a correct answer and of failed tasks"]
    stats = _route_stats(ledger)
    drawn = {(row, series): v for row, series, v in _bars(chart)}
    series = {"success p50": ("latency_success_s", "p50"), "success p95": ("latency_success_s", "p95"),
              "failed p50": ("latency_failed_s", "p50"), "failed p95": ("latency_failed_s", "p95")}  # fmt: skip
    missing = [(r.get("data-row"), r.get("data-series")) for r in chart.iter("rect") if r.get("class") == "nodata"]
    for (feature, route), s in stats.items():
        row = f"{feature} \u00b7 {route}"
        for name, (field, p) in series.items():
            value = getattr(getattr(s, field), p)
            if value is None:  # no timed task of the kind: no bar, a "no data" track
                assert (row, name) in missing and (row, name) not in drawn
            else:
                assert drawn[(row, name)] == value
    # Only support on gpt-4o-mini and the cascade have failed tasks: the other three groups have no data.
    assert len(missing) == 6
    assert sorted(set(_texts(chart, "nodata"))) == ["no data (failed p50)", "no data (failed p95)"]


def test_unknown_values_are_no_data_never_a_zero_bar():
    routes = [
        html_report.RouteFigures("cheap", "support", 10, Decimal("0.002"), Decimal("0.7")),
        html_report.RouteFigures("never-works", "support", 4, None, None),
        html_report.RouteFigures("free", "support", 3, Decimal(0), Decimal(0)),
    ]
    chart = ET.fromstring(html_report.route_chart(routes))
    bars = _bars(chart)
    assert [row for row, _, _ in bars] == ["support: free", "support: cheap"] * 2  # cost, then first pass
    assert all(row != "support: never-works" for row, _, _ in bars)
    # A real zero is a zero (value printed, no bar length); an unknown is a dashed track saying so.
    assert ("support: free", "USD per successful task", Decimal(0)) in bars
    nodata = [r for r in chart.iter("rect") if r.get("class") == "nodata"]
    assert [r.get("data-row") for r in nodata] == ["support: never-works"] * 2
    assert "no data: no successful task" in _texts(chart, "nodata") and "no data" in _texts(chart, "nodata")
    assert "never-works: USD per successful task no data: no successful task" in chart.find("desc").text
    latency = ET.fromstring(html_report.latency_chart([html_report.Bar("untimed", (None, None, None, None))]))
    assert _bars(latency) == [] and _texts(latency, "nodata") == [f"no data ({s})" for s in html_report.LATENCY_SERIES]
    assert _texts(latency, "axistitle") == ["wall time, task start to end (seconds)"]


def test_the_latency_axis_is_in_seconds_from_a_second_up():
    bars = [html_report.Bar("slow", (Decimal("1.5"), Decimal("12.25"), None, Decimal("30")))]
    chart = ET.fromstring(html_report.latency_chart(bars))
    assert _texts(chart, "axistitle") == ["wall time, task start to end (seconds)"]
    assert _texts(chart, "tick") == ["0", "10", "20", "30"]
    assert [v for _, _, v in _bars(chart)] == [Decimal("1.5"), Decimal("12.25"), Decimal("30")]
    assert _texts(chart, "value") == ["1.50s", "12.2s", "30.0s"]


def test_user_data_is_escaped(report):
    page = report.read_text(encoding="utf-8")
    assert HOSTILE_FEATURE not in page
    assert "faq &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page


def test_the_chart_helpers_escape_and_handle_empty_data():
    bars = html_report.bar_chart(
        [html_report.Bar('<b a="1">', (Decimal("0.5"), None))], series=("x<y", "z"), axis="USD & <more>"
    )
    assert "<b " not in bars and "&lt;b a=&quot;1&quot;&gt;" in bars and "x&lt;y" in bars and "no data" in bars
    assert "USD &amp; &lt;more&gt;" in bars and ET.fromstring(bars).get("aria-label") == "USD & <more>"
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


def _colour_count(data: bytes, rgb: tuple[int, int, int]) -> int:
    """How many pixels of an 8-bit RGB or RGBA PNG (not interlaced) are exactly the colour ``rgb``."""
    width, height = _png_size(data)
    depth, colour_type, interlace = data[24], data[25], data[28]
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    bpp = 3 if colour_type == 2 else 4
    raw, stride = _pixels(data), width * bpp
    previous, count = bytearray(stride), 0
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):  # undo the scanline's filter (PNG spec, section 9)
            a = line[i - bpp] if i >= bpp else 0
            b, c = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        target = bytes(rgb)
        count += sum(1 for x in range(0, stride, bpp) if line[x : x + 3] == target)
        previous = line
    return count


_CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--window-size={WIDTH},{HEIGHT}",
]


def _screenshot(chromium: str, page: Path, png: Path, profile: Path) -> bytes:
    cmd = [chromium, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return png.read_bytes()


# Test-only: measures what Chromium laid out and writes it into the page as JSON, read back by --dump-dom.
_MEASURE = """<script>
addEventListener("load", () => {
  const box = (e) => { const b = e.getBoundingClientRect(); return [b.width, b.height]; };
  const charts = [...document.querySelectorAll("svg.chart")].map((svg) => ({
    title: svg.getAttribute("aria-label"),
    box: box(svg),
    bars: [...svg.querySelectorAll("rect.bar")].map((r) => [r.getAttribute("data-value"), ...box(r)]),
    nodata: [...svg.querySelectorAll("rect.nodata")].map(box),
    axes: [...svg.querySelectorAll("text.axistitle")].map((t) => [t.textContent, ...box(t)]),
    ticks: [...svg.querySelectorAll("text.tick")].map(box),
  }));
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify(charts);
  document.body.appendChild(out);
});
</script>"""


def _measure(chromium: str, report: Path, folder: Path) -> list[dict]:
    page = report.read_text(encoding="utf-8")
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)  # let the test script run
    probe = folder / "measure.html"
    probe.write_text(page.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    cmd = [chromium, *_CHROMIUM_FLAGS, f"--user-data-dir={folder / 'profile'}", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="measured">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert found, f"chromium ran no measure (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def _chromium() -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); it renders the HTML report")
    return chromium


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    chromium = _chromium()
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
    # The first-pass bars (green) of five routes (50%, 100%, 100%, 50%, 100%, 0% of ~260 px, 16 px high)
    # and the latency chart's p50 of successes (one bar per group, at least 2 px wide): painted.
    assert _colour_count(shot, (0x10, 0xB9, 0x81)) > 4 * 100 * 16
    assert _colour_count(shot, (0x4F, 0x46, 0xE5)) > 0


def test_every_chart_is_laid_out_with_its_bars_and_axes(report, tmp_path):
    measured = {c["title"]: c for c in _measure(_chromium(), report, tmp_path)}
    assert set(measured) == set(AXIS_TITLES)
    for title, chart in measured.items():
        width, height = chart["box"]
        assert width > 300 and height > 100, (title, chart["box"])
        # Axis titles: a line of text, across or (the line chart's y axis) turned upright.
        assert chart["axes"] and all(max(w, h) > 20 and min(w, h) > 5 for _, w, h in chart["axes"]), title
        assert all(w > 0 and h > 0 for w, h in chart["ticks"]), title
        for value, w, h in chart["bars"]:
            assert h > 5 and (w >= 1 if Decimal(value) > 0 else w == 0), (title, value, w, h)
        assert all(w > 100 and h > 5 for w, h in chart["nodata"]), (title, chart["nodata"])
    assert len(measured["Routes compared: cost per successful task and first-pass rate"]["bars"]) == 10
    latency = measured["Latency to a correct answer and of failed tasks"]
    assert len(latency["bars"]) + len(latency["nodata"]) == 5 * 4
