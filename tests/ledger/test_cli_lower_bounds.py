"""A cost that misses unpriced calls is a lower bound, and every report row showing it says so.

The ledger holds one feature whose calls are all priced, one with an unpriced call among priced ones,
and one whose only call has an unknown usage. Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest

import costtrace
from costtrace.cli import main

MINI = Decimal("0.00021")  # gpt-4o-mini, 1000 in / 100 out at $0.15 / $0.60 per MTok


@pytest.fixture
def ledger(ledger_url: str) -> str:
    budget = costtrace.Budget("partial-daily", limit_usd="1", period="day", scope={"feature": "partial"})
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    try:
        for _ in range(2):
            with costtrace.task("answer", feature="priced"):
                costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
        with costtrace.task("answer", feature="partial"):
            costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
            costtrace.record_llm_call("openai", "my-private-model-v9", 1000, 100)
        with costtrace.task("answer", feature="unknown"):
            costtrace.record_llm_call("openai", "gpt-4o-mini", None, None)  # type: ignore[arg-type]
        assert costtrace.flush_ledger(10)
    finally:
        costtrace.close_ledger()
    return ledger_url


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def rows_by_first_word(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.strip()}


def test_report_table_marks_lower_bounds_on_their_rows(ledger, capsys):
    text = cli(capsys, "report", "--ledger", ledger)
    rows = rows_by_first_word(text.split("\n\n")[0])  # the first table (the context tax follows)
    assert ">=" not in rows["priced"] and "$0.000420" in rows["priced"]
    # The partial feature's figures miss the unpriced call: each cost on its row says ">=".
    assert rows["partial"].count(">=$0.000210") >= 3  # cost/task, cost/success, total
    # A feature whose only call is unknown did not cost $0: it cost at least $0.
    assert ">=$0" in rows["unknown"] and " $0 " not in f" {rows['unknown']} "
    assert any("lower bounds, shown >=" in line for line in text.splitlines())


def test_report_json_and_csv_rows_carry_cost_complete(ledger, capsys):
    data = {r["feature"]: r for r in json.loads(cli(capsys, "report", "--ledger", ledger, "--format", "json"))}
    assert data["priced"]["cost_complete"] is True
    assert (data["partial"]["cost_complete"], data["partial"]["unpriced_calls"]) == (False, 1)
    assert Decimal(data["partial"]["total_cost_usd"]) == MINI  # exact, flagged incomplete on the same row
    assert (data["unknown"]["cost_complete"], data["unknown"]["unpriced_calls"]) == (False, 1)
    out = cli(capsys, "report", "--ledger", ledger, "--format", "csv")
    rows = {r["feature"]: r for r in csv.DictReader(io.StringIO(out))}
    assert (rows["partial"]["cost_complete"], rows["priced"]["cost_complete"]) == ("false", "true")  # as in JSON


def test_html_report_marks_lower_bounds(ledger, capsys, tmp_path):
    page_path = tmp_path / "r.html"
    cli(capsys, "report", "--ledger", ledger, "--html", str(page_path))
    page = page_path.read_text(encoding="utf-8")
    assert "&gt;=$0.000210" in page  # the partial feature's row and its bar
    assert "a lower bound: 1 unpriced call(s)" in page
    assert "2 unpriced call(s) left out" in page  # the total spend KPI
    routes = page.split('aria-label="Routes compared', 1)[1].split("</svg>", 1)[0]
    assert "&gt;=$" in routes and "a lower bound: 1 unpriced call(s)" in routes  # the route chart says so too


def test_compare_tco_and_budgets_mark_lower_bounds(ledger, capsys):
    out = cli(capsys, "compare", "--ledger", ledger, "--feature", "partial")
    (per_success,) = [line for line in out.splitlines() if line.startswith("cost per successful task")]
    assert per_success.split()[-1] == ">=$0.000210"
    out = cli(capsys, "tco", "--ledger", ledger, "--feature", "partial", "--rework-cost", "0")
    (row,) = [line for line in out.splitlines() if line.startswith("partial ")]
    assert ">=$0.000210" in row
    out = cli(capsys, "budgets", "--ledger", ledger)
    (row,) = [line for line in out.splitlines() if line.startswith("partial-daily")]
    assert ">=$0.000210" in row
