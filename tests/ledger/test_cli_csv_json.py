"""``--format csv`` writes exactly what ``--format json`` writes, cell by cell, for every ledger command.

The ledger is the workload of tests/ledger/test_cli.py plus tasks that make the other kinds of cell
appear: an unpriced call (``cost_complete: false``), a feature named with non-ASCII letters. Each CSV
cell must be the text of the JSON value: a JSON string without its quotes, numbers as JSON writes them,
``true`` / ``false``, ``null`` as an empty cell, a list as its one-line JSON text.

Also ``report --html FILE``: it writes the page and prints what the command prints without it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

import costtrace
from costtrace.cli import main
from tests.ledger.workload import BUDGET, build_ledger

TCO_ARGS = (
    "tco",
    "--cheap-input-price", "1", "--cheap-output-price", "5",
    "--frontier-input-price", "10", "--frontier-output-price", "50",
    "--input-tokens", "40000", "--output-tokens", "8000",
    "--cheap-failure-rate", "45%", "--frontier-failure-rate", "0.08",
    "--frontier-token-multiplier", "1.3", "--hourly-rate", "150", "--hours", "0.5",
)  # fmt: skip


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The workload of test_cli.py, then a feature with an unpriced call and one with a non-ASCII name."""
    url = f"sqlite:///{tmp_path_factory.mktemp('csvjson') / 'ledger.db'}"
    build_ledger(url)
    costtrace.configure_ledger(
        url,
        budgets=[
            costtrace.Budget(BUDGET, limit_usd="0.05", period="day", scope={"feature": "support"}),
            costtrace.Budget("partial-daily", limit_usd="1", period="day", scope={"feature": "partial"}),
        ],
    )
    try:
        for model in ("gpt-4o-mini", "gpt-4o"):
            with costtrace.task("answer", feature="partial", team="ops") as t:
                costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
                costtrace.record_llm_call("openai", "my-private-model-v9", 1000, 100)
                if model == "gpt-4o":
                    t.escalate(to_model="gpt-4o", reason="low_confidence")
                    costtrace.record_llm_call("openai", "gpt-4o", 1000, 100)
        with costtrace.task("résumé", feature="café ☕", customer="Zoë"):
            costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
        assert costtrace.flush_ledger(30)
    finally:
        costtrace.close_ledger()
    return url


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err


def canonical(value: Any) -> str:
    """The text of a parsed JSON value, as its CSV cell must hold it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)  # true/false, numbers, lists and objects


def _rows(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [value]


def _tco_routes(value: Any) -> list[dict[str, Any]]:
    return [row for feature in value for row in feature["routes"]]


# (command arguments, with or without --ledger, the JSON rows the CSV lines stand for)
CASES: list[tuple[tuple[str, ...], bool, Callable[[Any], list[dict[str, Any]]]]] = [
    (("report",), True, _rows),
    (("report", "--by", "feature,route"), True, _rows),
    (("report", "--by", "task,team,customer"), True, _rows),
    (("report", "--by", "hour,day,week,month"), True, _rows),
    (("report", "--feature", "partial"), True, _rows),
    (("compare", "--feature", "support", "--rework-cost", "2"), True, lambda v: v["routes"]),
    (("compare", "--feature", "partial"), True, lambda v: v["routes"]),
    (("whatif", "--route", "gpt-4o-mini->gpt-4o"), True, _rows),
    (("whatif", "--route", "gpt-4o", "--feature", "partial", "--rework-cost", "1.5"), True, _rows),
    (("whatif", "--route", "gpt-4.1-mini", "--failure-rate", "gpt-4.1-mini=20%"), True, _rows),
    (("whatif", "--route", "gpt-4o", "--batch", "--price-change", "gpt-4o=+20%"), True, _rows),
    (("whatif", "--route", "gpt-4o", "--self-host-monthly", "2000", "--self-host-per-mtok", "0.2"), True, _rows),
    (("tco", "--feature", "support", "--rework-cost", "2"), True, _tco_routes),
    (("tco", "--feature", "partial"), True, _tco_routes),
    (("tco", "--example"), False, lambda v: v["models"]),
    (TCO_ARGS, False, lambda v: v["models"]),
    (("budgets",), True, _rows),
]


@pytest.mark.parametrize(("args", "needs_ledger", "json_rows"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_every_csv_cell_is_the_text_of_its_json_value(ledger, capsys, args, needs_ledger, json_rows):
    full = (*args, "--ledger", ledger) if needs_ledger else args
    rows = json_rows(json.loads(run(capsys, *full, "--format", "json")[0]))
    lines = list(csv.reader(io.StringIO(run(capsys, *full, "--format", "csv")[0])))
    header, cells = lines[0], lines[1:]
    assert rows and len(cells) == len(rows)
    assert len(set(header)) == len(header)
    for row, line in zip(rows, cells, strict=True):
        assert set(header) == set(row), "CSV columns and JSON keys differ"
        assert {k: v for k, v in zip(header, line, strict=True)} == {k: canonical(row[k]) for k in header}


def test_the_cases_cover_every_kind_of_cell(ledger, capsys):
    """Booleans both ways, null, numbers, decimals, datetimes, lists and non-ASCII text all occur above."""
    seen: set[str] = set()
    for args, needs_ledger, json_rows in CASES:
        full = (*args, "--ledger", ledger) if needs_ledger else args
        for row in json_rows(json.loads(run(capsys, *full, "--format", "json")[0])):
            for value in row.values():
                if value is True or value is False:
                    seen.add(str(value))
                elif isinstance(value, str) and not value.isascii():
                    seen.add("non-ascii")
                elif isinstance(value, str) and value[:1].isdigit() and "T" in value and ":" in value:
                    seen.add("datetime")
                elif isinstance(value, str) and value.replace(".", "", 1).isdigit():
                    seen.add("decimal")
                else:
                    seen.add(type(value).__name__)
    assert {"True", "False", "NoneType", "int", "decimal", "datetime", "list", "non-ascii"} <= seen


def test_csv_booleans_are_lowercase_as_in_json(ledger, capsys):
    out, _ = run(capsys, "report", "--ledger", ledger, "--format", "csv")
    rows = {r["feature"]: r for r in csv.DictReader(io.StringIO(out))}
    assert (rows["support"]["cost_complete"], rows["partial"]["cost_complete"]) == ("true", "false")
    out, _ = run(capsys, "whatif", "--ledger", ledger, "--route", "gpt-4o", "--feature", "partial", "--format", "csv")
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["recorded_cost_complete"] == "false"


def test_whatif_and_tco_csv_keep_their_first_columns_in_place(ledger, capsys):
    """Columns CSV lacked before are appended: a script reading columns by position still works."""
    out, _ = run(capsys, "whatif", "--ledger", ledger, "--route", "gpt-4o", "--format", "csv")
    assert out.splitlines()[0].startswith(
        "feature,route,tasks,recorded_cost_usd,projected_cost_usd,projected_successes,"
        "projected_cost_per_success_usd,assumptions,"
    )
    out, _ = run(capsys, "tco", "--example", "--format", "csv")
    assert out.splitlines()[0] == (
        "model,token_cost_usd,failure_rate,rework_cost_usd,expected_rework_usd,tco_per_task_usd,attempt_cost_usd"
    )


# --- report --html ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_report_html_writes_the_page_and_prints_the_same_output(ledger, capsys, tmp_path, fmt):
    args = ("report", "--ledger", ledger, "--by", "feature,route", "--format", fmt)
    without, err = run(capsys, *args)
    assert err == ""
    page = tmp_path / "out.html"
    with_html, err = run(capsys, *args, "--html", str(page))
    assert with_html == without and with_html.strip()
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    (line,) = err.splitlines()  # one line, on stderr: stdout stays the table, JSON or CSV
    assert line.startswith(f"costtrace report: wrote {page} (37 tasks, ") and line.endswith(" day(s))")


def test_report_html_to_an_unwritable_file_prints_nothing_and_exits_2(ledger, capsys, tmp_path):
    page = tmp_path / "no-such-folder" / "out.html"
    code = main(["report", "--ledger", ledger, "--html", str(page)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert f"--html {str(page)!r}: cannot write the report" in captured.err
    assert not page.exists()


def test_report_help_says_html_still_prints(capsys):
    assert main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--html FILE also writes a self-contained page with charts to FILE" in text
    assert "the table (or --format json|csv) is printed as without it" in text
