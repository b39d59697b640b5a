"""``costtrace report`` / ``compare``: latency to a correct answer next to that of failed tasks, in every format.

The ledger holds :data:`tests.ledger.test_analytics.LATENCY_TASKS`, whose nearest-rank figures are
computed by hand there: route gpt-4o-mini succeeds in p50 2 s / p95 8 s (5 timed successes, 1
without a duration) and fails in p50 4 s / p95 6 s (2 timed, 1 without); the escalated route
succeeds in 0.1 s and never fails.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from costtrace.cli import main
from costtrace.spend import schema
from costtrace.spend.engine import make_engine
from costtrace.spend.schema import migrate
from tests.ledger.test_analytics import ESC, LATENCY_TASKS, MINI, insert

KEYS = [
    "latency_success_p50_s", "latency_success_p95_s", "latency_success_tasks", "latency_success_no_duration",
    "latency_failed_p50_s", "latency_failed_p95_s", "latency_failed_tasks", "latency_failed_no_duration",
]  # fmt: skip
MINI_FIGURES = ["2.0", "8.0", 5, 1, "4.0", "6.0", 2, 1]
ESC_FIGURES = ["0.1", "0.1", 1, 0, None, None, 0, 0]


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('latency') / 'ledger.db'}"
    engine = make_engine(url)
    try:
        migrate(engine)
        insert(engine, schema.tasks, LATENCY_TASKS)
    finally:
        engine.dispose()
    return url


def report(capsys: pytest.CaptureFixture[str], ledger: str, *args: str) -> str:
    assert main(["report", "--ledger", ledger, "--by", "route", "--exact", *args]) == 0
    return capsys.readouterr().out


def test_json_holds_the_four_percentiles_and_the_counts_per_route(ledger, capsys):
    rows = {r["route"]: r for r in json.loads(report(capsys, ledger, "--format", "json"))}
    assert [rows[MINI][k] for k in KEYS] == MINI_FIGURES
    assert [rows[ESC][k] for k in KEYS] == ESC_FIGURES
    assert "latency_to_success" not in rows[MINI]  # the table's reading aid is not data


def test_csv_holds_the_same_text_as_json(ledger, capsys):
    lines = list(csv.DictReader(io.StringIO(report(capsys, ledger, "--format", "csv"))))
    rows = {r["route"]: r for r in lines}
    assert [rows[MINI][k] for k in KEYS] == [str(v) for v in MINI_FIGURES]
    assert [rows[ESC][k] for k in KEYS] == ["0.1", "0.1", "1", "0", "", "", "0", "0"]
    header = list(lines[0])
    start = header.index(KEYS[0])  # appended after the older columns, which keep their positions
    assert header[start : start + len(KEYS)] == KEYS and header[start - 1] == "cost_complete"


def test_the_table_shows_one_narrow_column_and_notes_the_tasks_without_duration(ledger, capsys):
    text = report(capsys, ledger)
    header = next(line for line in text.splitlines() if line.startswith("route"))
    assert "p50/p95 to success" in header and "latency_" not in header
    mini = next(line for line in text.splitlines() if line.startswith(f"{MINI} "))
    esc = next(line for line in text.splitlines() if line.startswith(ESC))
    assert "2.00s/8.00s" in mini and "100ms/100ms" in esc
    assert "note: 2 successful or failed task(s) have no recorded duration" in text


def test_the_html_page_has_a_latency_table_in_seconds(ledger, capsys, tmp_path: Path):
    page_path = tmp_path / "r.html"
    assert main(["report", "--ledger", ledger, "--by", "route", "--html", str(page_path), "--exact"]) == 0
    capsys.readouterr()
    page = page_path.read_text(encoding="utf-8")
    latency = page.split("<h2>Latency to a correct answer</h2>", 1)[1].split("</section>", 1)[0]
    for header in ("success p50", "success p95", "failed p50", "failed p95", "successes without duration"):
        assert f">{header}</th>" in latency
    table = latency.split("<table>", 1)[1]
    mini_row = next(r for r in table.split("<tr>") if MINI + "<" in r and "->" not in r)
    cells = [c.split(">", 1)[1] for c in mini_row.split("</td>")[:-1]]
    assert cells == [MINI, "2.00s", "8.00s", "5", "1", "4.00s", "6.00s", "2", "1"]


def test_the_html_latency_chart_draws_the_hand_figures_in_seconds(ledger, capsys, tmp_path: Path):
    page_path = tmp_path / "r.html"
    assert main(["report", "--ledger", ledger, "--by", "route", "--html", str(page_path), "--exact"]) == 0
    capsys.readouterr()
    page = page_path.read_text(encoding="utf-8")
    svg = re.search(r'<svg[^>]*aria-label="Latency to a correct answer and of failed tasks".*?</svg>', page, re.DOTALL)
    assert svg
    chart = ET.fromstring(svg.group(0))
    bars = [(r.get("data-row"), r.get("data-series"), r.get("data-value")) for r in chart.iter("rect")
            if r.get("class") == "bar"]  # fmt: skip
    assert bars == [
        (MINI, "success p50", "2.0"), (MINI, "success p95", "8.0"), (MINI, "failed p50", "4.0"),
        (MINI, "failed p95", "6.0"), (ESC, "success p50", "0.1"), (ESC, "success p95", "0.1"),
    ]  # fmt: skip
    # The escalated route never failed: no bar, "no data" (not 0 s).
    nodata = [(r.get("data-row"), r.get("data-series")) for r in chart.iter("rect") if r.get("class") == "nodata"]
    assert nodata == [(ESC, "failed p50"), (ESC, "failed p95")]
    texts = {"".join(t.itertext()) for t in chart.iter("text")}
    assert "wall time, task start to end (seconds)" in texts and {"0", "2", "4", "6", "8"} <= texts


def test_compare_puts_the_routes_latencies_side_by_side(ledger, capsys):
    assert main(["compare", "--ledger", ledger, "--feature", "lat", "--exact"]) == 0
    text = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    # Both routes cost 0 per success: they keep their order, gpt-4o-mini first.
    assert text.splitlines()[1].split() == [MINI, ESC]
    assert lines["time to success (p50)"].split()[-2:] == ["2.00s", "100ms"]
    assert lines["time to success (p95)"].split()[-2:] == ["8.00s", "100ms"]
    assert lines["time to failure (p95)"].split()[-2:] == ["6.00s", "-"]
