"""The ledger commands of ``costtrace`` (report, compare, whatif, tco, budgets) through the real entry point.

The ledger is recorded through the public API (tests/ledger/workload.py); expected figures are worked
out by hand from the workload and genai-prices' list prices (gpt-4o-mini $0.15/$0.60, gpt-4o $2.50/$10
per MTok): a 2000-in / 300-out call costs $0.00048 on gpt-4o-mini and $0.008 on gpt-4o.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from costtrace.cli import main, output
from costtrace.spend import schema
from costtrace.spend.engine import make_engine
from tests.ledger.workload import BUDGET, HOSTILE_FEATURE, build_ledger

REPO = Path(__file__).resolve().parents[2]

# support: 12 tasks on gpt-4o-mini (16 calls), 8 cascades (8 mini + 8 gpt-4o calls), 5 on gpt-4o.
SUPPORT_TOTAL = 16 * Decimal("0.00048") + 8 * Decimal("0.00848") + 5 * Decimal("0.008")
SUPPORT_SUCCESSES = 9 + 7 + 5


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a SQLite ledger holding the workload (built once for the module)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'ledger.db'}"
    build_ledger(url)
    return url


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m costtrace ARGS`` in a subprocess, as a user runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "costtrace", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- report ------------------------------------------------------------------------------------------


def test_report_prints_a_table_per_feature_through_python_m(ledger):
    proc = run_cli("report", "--ledger", ledger)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n\n")[0].splitlines()  # the first table (the context tax follows)
    assert lines[0].startswith("Cost per successful task by feature (all time, ledger ")
    header = lines[1].split()
    assert header[:4] == ["feature", "tasks", "success", "1st"] and "cost/success" in header
    (support,) = [line for line in lines if line.startswith("support ")]
    assert " 25 " in support and "84.0%" in support
    assert output.usd(SUPPORT_TOTAL / SUPPORT_SUCCESSES) == "$0.00550" and "$0.00550" in support
    assert "$0.116" in support  # the total, $0.11552, rounded for display only
    assert any(line.startswith("billing ") for line in lines)


def test_report_json_holds_exact_values(ledger, capsys):
    code, out, err = cli(capsys, "report", "--ledger", ledger, "--format", "json")
    assert code == 0, err
    rows = {r["feature"]: r for r in json.loads(out)}
    assert set(rows) == {"billing", "support", HOSTILE_FEATURE}
    support = rows["support"]
    assert (support["tasks"], support["successes"]) == (25, SUPPORT_SUCCESSES)
    assert Decimal(support["total_cost_usd"]) == SUPPORT_TOTAL
    assert Decimal(support["cost_per_successful_task_usd"]) == SUPPORT_TOTAL / SUPPORT_SUCCESSES
    assert Decimal(support["success_rate"]) == Decimal("0.84")
    assert support["unpriced_calls"] == 0 and support["cost_complete"] is True
    billing = rows["billing"]  # 6 tasks, 3 retried: 9 calls of 5000 in / 800 out on gpt-4o-mini
    assert Decimal(billing["total_cost_usd"]) == 9 * Decimal("0.00123")
    assert Decimal(billing["wasted_cost_usd"]) == 3 * Decimal("0.00123")
    assert Decimal(billing["retry_tax"]) == Decimal(1) / 3
    assert billing["escalation_premium_usd"] is None


def test_report_csv_by_feature_and_route(ledger, capsys):
    code, out, err = cli(capsys, "report", "--ledger", ledger, "--by", "feature,route", "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["feature"], r["route"]) for r in rows if r["feature"] == "support"] == [
        ("support", "gpt-4o"),
        ("support", "gpt-4o-mini"),
        ("support", "gpt-4o-mini->gpt-4o"),
    ]
    cascade = next(r for r in rows if r["route"] == "gpt-4o-mini->gpt-4o")
    assert (cascade["tasks"], cascade["successes"], cascade["escalation_rate"]) == ("8", "7", "1")
    assert Decimal(cascade["total_cost_usd"]) == 8 * Decimal("0.00848")
    assert cascade["escalation_premium_usd"] == ""  # None is an empty cell


def test_report_filters_by_feature_and_window(ledger, capsys):
    code, out, err = cli(
        capsys, "report", "--ledger", ledger, "--feature", "billing", "--since", "1d", "--format", "json"
    )
    assert code == 0, err
    assert [r["feature"] for r in json.loads(out)] == ["billing"]


def test_report_reads_the_default_ledger_from_the_environment(ledger, capsys, monkeypatch):
    monkeypatch.setenv("COSTTRACE_LEDGER_URL", ledger)
    code, out, _ = cli(capsys, "report", "--by", "team", "--format", "json")
    assert code == 0
    assert {r["team"] for r in json.loads(out)} == {"cx", "finance", None}


# --- errors ------------------------------------------------------------------------------------------


def test_a_bad_group_key_is_exit_2_with_the_allowed_keys(ledger):
    proc = run_cli("report", "--ledger", ledger, "--by", "feature,modle")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "costtrace report: error: --by 'modle' is not a grouping; use one or more of feature, task, route, "
        "final_model, team, customer, hour, day, week, month, comma-separated"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "7x"], "--since '7x': "),
        (["--until", "yesterday"], "--until 'yesterday': "),
        (["--since", "1d", "--until", "2d"], "is not before --until"),
        (["--by", "feature,feature"], "repeats a key"),
        (["--by", ""], "is empty"),
    ],
)
def test_bad_filters_are_exit_2_with_one_line(ledger, capsys, args, message):
    code, out, err = cli(capsys, "report", "--ledger", ledger, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_a_missing_ledger_is_an_error_and_is_not_created(tmp_path, capsys):
    path = tmp_path / "nowhere" / "ledger.db"
    code, out, err = cli(capsys, "report", "--ledger", f"sqlite:///{path}")
    assert code == 2 and out == ""
    assert err.strip() == (
        f"costtrace report: error: no ledger at {path}; run your app with costtrace.configure_ledger() "
        "or `costtrace demo` first"
    )
    assert not path.parent.exists()


def test_the_missing_default_ledger_is_named(tmp_path, monkeypatch):
    proc = run_cli("budgets", env={"COSTTRACE_LEDGER_URL": "", "XDG_DATA_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert f"no ledger at {tmp_path / 'costtrace' / 'ledger.db'};" in proc.stderr
    assert not (tmp_path / "costtrace").exists()


def test_an_empty_ledger_says_it_has_no_tasks_yet(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    schema.migrate(engine)
    engine.dispose()
    code, _, err = cli(capsys, "report", "--ledger", url)
    assert code == 2
    assert f"the ledger at {tmp_path / 'empty.db'} has no tasks yet; run your app" in err
    code, _, err = cli(capsys, "report", "--ledger", url, "--since", "7d")
    assert code == 2 and "has no tasks yet (in the window since " in err


def test_a_file_that_is_not_a_ledger_is_an_error(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    conn.close()
    before = path.read_bytes()
    code, _, err = cli(capsys, "budgets", "--ledger", f"sqlite:///{path}")
    assert code == 2 and f"no ledger at {path} (no costtrace tables there)" in err
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "command", ["report", "budgets", "compare --feature f", "whatif --route gpt-4o", "tco --feature f"]
)
def test_a_report_on_an_empty_file_is_an_error_and_never_writes_to_it(tmp_path, capsys, command):
    path = tmp_path / "zero.db"
    path.write_bytes(b"")
    code, out, err = cli(capsys, *command.split(), "--ledger", f"sqlite:///{path}")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"costtrace {command.split()[0]}: error: no ledger at {path} (the file is empty); run your app with "
        "costtrace.configure_ledger() or `costtrace demo` first"
    ]
    assert path.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero.db"]


def test_a_report_never_writes_to_the_ledger_file(tmp_path, capsys):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    build_ledger(url)
    conn = sqlite3.connect(tmp_path / "ledger.db")  # out of WAL mode: a report must not switch it back
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    before = (tmp_path / "ledger.db").read_bytes()
    for command in (["report"], ["budgets"], ["report", "--since", "7d"]):
        code, _, err = cli(capsys, *command, "--ledger", url)
        assert code == 0, err
    assert (tmp_path / "ledger.db").read_bytes() == before


def test_a_stored_budget_an_older_costtrace_accepted_is_a_one_line_error(ledger_url, capsys):
    import sqlalchemy as sa

    build_ledger(ledger_url)
    engine = make_engine(ledger_url)
    with engine.begin() as conn:  # as an unchecked older costtrace could have stored it
        definition = conn.execute(sa.select(schema.budgets.c.definition).where(schema.budgets.c.budget_id == BUDGET))
        data = json.loads(definition.scalar_one())
        data.update(period="rolling", window_s=1e20)  # too large even for a timedelta
        conn.execute(
            schema.budgets.update().where(schema.budgets.c.budget_id == BUDGET).values(definition=json.dumps(data))
        )
    engine.dispose()
    code, out, err = cli(capsys, "budgets", "--ledger", ledger_url)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert "holds a budget definition this costtrace refuses" in line and "is too long" in line


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.invalid/ledger", "'http://example.invalid/ledger' is not a database costtrace supports"),
        ("mysql://app:s3cret@db/costs", "'mysql://app:***@db/costs' is not a database costtrace supports"),
        ("sqlite://", "is an in-memory database"),
    ],
)
def test_a_ledger_url_costtrace_cannot_read_is_one_line_exit_2(capsys, url, message):
    code, out, err = cli(capsys, "report", "--ledger", url)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert message in line and "s3cret" not in line


@pytest.mark.parametrize("version_offset", [1, 97])
def test_a_ledger_newer_than_this_costtrace_is_refused(ledger_url, capsys, version_offset):
    engine = make_engine(ledger_url)
    schema.migrate(engine)
    newer = schema.SCHEMA_VERSION + version_offset
    with engine.begin() as conn:
        conn.execute(schema.schema_version.update().values(version=newer))
    engine.dispose()
    for command in (["report"], ["budgets"]):
        code, out, err = cli(capsys, *command, "--ledger", ledger_url)
        assert code == 2 and out == ""
        (line,) = err.strip().splitlines()
        assert f"has schema version {newer}, newer than this costtrace understands ({schema.SCHEMA_VERSION})" in line
        assert "upgrade costtrace" in line


def test_a_ledger_older_than_this_costtrace_is_refused_not_migrated(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    schema.migrate(engine)
    with engine.begin() as conn:
        conn.execute(schema.schema_version.update().values(version=1))
    engine.dispose()
    code, _, err = cli(capsys, "report", "--ledger", url)
    assert code == 2 and "has schema version 1, older than this costtrace's" in err
    engine = make_engine(url)
    with engine.connect() as conn:
        assert schema.current_version(conn) == 1
    engine.dispose()


@pytest.mark.parametrize(
    "args",
    [
        ["report", "--since", "9999999999d"],
        ["report", "--since", "99999999999999999999999999w"],
        ["report", "--until", "9999-12-31T23:59:59-14:00"],
        ["report", "--since", "0001-01-01T00:00:00+14:00"],
        ["compare", "--feature", "support", "--since", "9999999999d"],
        ["whatif", "--route", "gpt-4o", "--since", "9999999999d"],
        ["tco", "--feature", "support", "--until", "9999999999m"],
    ],
)
def test_out_of_range_times_are_one_line_exit_2(ledger, capsys, args):
    code, out, err = cli(capsys, *args, "--ledger", ledger)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"costtrace {args[0]}: error: --")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "--feature", "support", "--rework-cost", "1e30"], "must be <= 1,000,000,000 USD"),
        (["compare", "--feature", "support", "--rework-cost", "nan"], "is not finite"),
        (["compare", "--feature", "support", "--min-tasks", "0"], "must be an int >= 1"),
        (["whatif", "--route", "gpt-4o", "--rework-cost", "-1"], "must be >= 0"),
        (["whatif", "--route", "gpt-4o", "--failure-rate", "gpt-4o=2"], "must be between 0 and 1"),
        (["whatif", "--route", "gpt-4o", "--failure-rate", "0.1"], "expected MODEL=RATE"),
        ([*("tco", "--example", "--hourly-rate", "1", "--hours", "1e999999")], "must be <= 1,000,000"),
        ([*("tco", "--example", "--cheap-input-price", "1e400")], "must be <= 100,000"),
        ([*("tco", "--example", "--input-tokens", "10" * 30)], "must be <= 100,000,000"),
        ([*("tco", "--example", "--frontier-token-multiplier", "0")], "must be > 0"),
    ],
)
def test_out_of_range_amounts_are_usage_errors(ledger, capsys, args, message):
    code, out, err = cli(capsys, *args, "--ledger", ledger)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"costtrace {args[0]}: error: argument --") and message in line
    assert line.endswith(f"; see costtrace {args[0]} --help")


def test_an_empty_window_and_an_unknown_feature_are_explained(ledger, capsys):
    code, _, err = cli(capsys, "report", "--ledger", ledger, "--until", "2000-01-01")
    assert code == 2 and "has no tasks in the window before 2000-01-01 00:00 UTC (34 in all)" in err
    code, _, err = cli(capsys, "report", "--ledger", ledger, "--feature", "suport")
    assert code == 2
    assert "match --feature 'suport'" in err and "features in the ledger: 'billing'" in err and "'support'" in err


def test_an_interrupted_read_is_exit_130(ledger, capsys, monkeypatch):
    from costtrace.analysis import stats as analytics

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(analytics, "scope_stats", interrupted)
    code, _, err = cli(capsys, "report", "--ledger", ledger)
    assert code == 130 and err.strip() == "costtrace report: interrupted"


# --- compare, whatif, tco ----------------------------------------------------------------------------


def test_compare_puts_a_features_routes_side_by_side_with_the_advice(ledger, capsys):
    code, out, err = cli(capsys, "compare", "--ledger", ledger, "--feature", "support")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini->gpt-4o"]  # by cost per success
    (per_success,) = [line for line in lines if line.startswith("cost per successful task")]
    assert per_success.split()[-3:] == ["$0.000853", "$0.00800", "$0.00969"]
    assert "advice: use gpt-4o-mini (lowest cost per successful task)" in out
    assert "warning: gpt-4o: only 5 tasks (< 30)" in out


def test_compare_needs_a_feature(ledger, capsys):
    code, _, err = cli(capsys, "compare", "--ledger", ledger)
    assert code == 2 and "--feature" in err


def test_compare_json_with_rework_cost_ranks_by_tco(ledger, capsys):
    code, out, _ = cli(
        capsys, "compare", "--ledger", ledger, "--feature", "support", "--rework-cost", "2", "--format", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["routes"][0]["route"] == "gpt-4o-mini"
    (advice,) = data["advice"]
    assert (advice["metric"], advice["best_route"]) == ("tco", "gpt-4o")


def test_compare_without_rework_cost_prints_the_break_even_rework_costs(ledger, capsys):
    code, out, err = cli(capsys, "compare", "--ledger", ledger, "--feature", "support")
    assert code == 0, err
    lines = out.splitlines()
    (head,) = [i for i, line in enumerate(lines) if line.startswith("no rework cost given: ")]
    assert "against gpt-4o-mini, each other route's TCO per task (C + P(fail) x L) breaks even" in lines[head]
    # by hand from the table: C = $0.00064 (gpt-4o-mini, 9/12), $0.008 (gpt-4o, 5/5), $0.00848 (cascade, 7/8)
    assert lines[head + 1].startswith(
        "  gpt-4o beats gpt-4o-mini if an unresolved task costs you more than L* = $0.0294 to fix (it costs "
        "$0.00736 more per task, fails 25.0 pp less often; failure rate 0.0% (95% CI 0.0%-43.4%, 5 tasks) vs 25.0% "
        "(95% CI 8.9%-53.2%, 12 tasks))"
    )  # 0.00736 / 0.25 = 0.02944
    assert "more than L* = $0.0627 to fix" in lines[head + 2]  # 0.00784 / 0.125 = 0.06272
    assert lines[head + 3].startswith("warning: ")


def test_compare_break_even_agrees_with_the_routes_figures(ledger, capsys):
    code, out, _ = cli(capsys, "compare", "--ledger", ledger, "--feature", "support", "--format", "json")
    assert code == 0
    data = json.loads(out)
    routes = {r["route"]: r for r in data["routes"]}
    (advice,) = data["advice"]
    assert advice["notes"][0].startswith("no rework cost given")
    best = routes[advice["best_route"]]
    for b in advice["break_evens"]:
        r = routes[b["route"]]
        assert b["versus"] == advice["best_route"]
        dc = Decimal(r["cost_per_task_mean_usd"]) - Decimal(best["cost_per_task_mean_usd"])
        dp = Decimal(r["success_rate"]) - Decimal(best["success_rate"])
        assert (Decimal(b["delta_cost_usd"]), Decimal(b["failure_rate_delta"])) == (dc, dp)
        if b["wins"] in ("above", "below"):
            assert Decimal(b["break_even_rework_usd"]) == dc / dp
        for key in ("failure_rate_low", "failure_rate_high", "versus_failure_rate_low", "versus_failure_rate_high"):
            assert 0 <= Decimal(b[key]) <= 1


def test_compare_csv_carries_each_routes_break_even(ledger, capsys):
    code, out, _ = cli(capsys, "compare", "--ledger", ledger, "--feature", "support", "--format", "csv")
    assert code == 0
    rows = {r["route"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["gpt-4o-mini"]["break_even_versus"] == ""  # the best route itself
    others = [r for route, r in rows.items() if route != "gpt-4o-mini"]
    assert others and all(r["break_even_versus"] == "gpt-4o-mini" and r["break_even_bound"] for r in others)


def test_compare_with_rework_cost_prints_no_break_even_note(ledger, capsys):
    code, out, _ = cli(capsys, "compare", "--ledger", ledger, "--feature", "support", "--rework-cost", "2")
    assert code == 0
    assert "advice: use gpt-4o (lowest TCO per task)" in out
    assert "no rework cost given" not in out and "L* =" not in out


def test_whatif_projects_a_route_and_prints_its_assumptions(ledger, capsys):
    code, out, err = cli(capsys, "whatif", "--ledger", ledger, "--feature", "support", "--route", "gpt-4o")
    assert code == 0, err
    assert "What if the 25 recorded task(s) of feature 'support' had run on 'gpt-4o'" in out
    (total,) = [line for line in out.splitlines() if line.startswith("total cost")]
    assert total.split()[-2:] == ["$0.116", "$0.200"]  # 25 tasks x one $0.008 attempt
    assert "assumptions:" in out and "gpt-4o: failure rate" in out


def test_whatif_json_is_exact(ledger, capsys):
    code, out, _ = cli(
        capsys,
        "whatif",
        "--ledger",
        ledger,
        "--feature",
        "support",
        "--route",
        "gpt-4o-mini->gpt-4o",
        "--format",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["route"] == "gpt-4o-mini->gpt-4o" and data["tasks"] == 25
    assert Decimal(data["recorded_cost_usd"]) == SUPPORT_TOTAL and data["recorded_successes"] == SUPPORT_SUCCESSES
    assert data["assumptions"]


def test_whatif_on_a_model_without_attempts_names_the_failure_rate_flag(ledger, capsys):
    args = ("whatif", "--ledger", ledger, "--feature", "support", "--route", "gpt-4.1-mini")
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert "'gpt-4.1-mini' has no recorded attempt" in line
    assert "--failure-rate gpt-4.1-mini=0.1" in line and "failure_rates" not in line
    code, out, err = cli(capsys, *args, "--failure-rate", "gpt-4.1-mini=20%", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert Decimal(data["projected_successes"]) == 25 * Decimal("0.8")
    assert any("gpt-4.1-mini: failure rate 20" in a and "given (no recorded attempt)" in a for a in data["assumptions"])


def test_whatif_rejects_a_malformed_route(ledger, capsys):
    code, _, err = cli(capsys, "whatif", "--ledger", ledger, "--route", "gpt-4o->")
    assert code == 2 and "--route 'gpt-4o->' is not a route" in err


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("gpt-4o=0.2", "is not MODEL=PERCENT"),
        ("gpt-4o=20", "is not MODEL=PERCENT"),
        ("=20%", "is not MODEL=PERCENT"),
        ("gpt-4o=abc%", "'abc%' is not a percentage"),
        ("gpt-4o=nan%", "'nan%' is not a percentage"),
        ("gpt-4o=-101%", "cannot fall by more than 100%"),
        ("gpt-4.1=+20%", "not a model of --route 'gpt-4o'"),
    ],
)
def test_whatif_rejects_a_bad_price_change_with_the_fix(ledger, capsys, change, says):
    args = ("whatif", "--ledger", ledger, "--feature", "support", "--route", "gpt-4o", "--price-change", change)
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert says in line and ("MODEL=+20%" in line or "change the price of a model the route uses" in line)


def test_whatif_rejects_the_same_model_changed_twice(ledger, capsys):
    args = (
        "whatif",
        "--ledger",
        ledger,
        "--route",
        "gpt-4o",
        "--price-change",
        "gpt-4o=+1%",
        "--price-change",
        "gpt-4o=+2%",
    )
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == "" and "gives 'gpt-4o' twice" in err


TCO_ARGS = (
    "tco",
    "--cheap-input-price", "1", "--cheap-output-price", "5",
    "--frontier-input-price", "10", "--frontier-output-price", "50",
    "--input-tokens", "40000", "--output-tokens", "8000",
    "--cheap-failure-rate", "45%", "--frontier-failure-rate", "0.08",
    "--frontier-token-multiplier", "1.3",
)  # fmt: skip


def test_tco_calculator_with_hourly_rework(capsys):
    code, out, err = cli(capsys, *TCO_ARGS, "--hourly-rate", "150", "--hours", "0.5")
    assert code == 0, err
    cheap = next(line for line in out.splitlines() if line.startswith("cheap "))
    frontier = next(line for line in out.splitlines() if line.startswith("frontier "))
    assert cheap.split()[-1] == "$33.83" and frontier.split()[-1] == "$7.04"
    assert "cheaper per finished task: the frontier model ($7.04 vs $33.83, 4.8x less)" in out
    assert "more than 1.28 percentage points less often" in out  # dC $0.96 / L $75
    assert "assumptions:" in out


def test_tco_calculator_json(capsys):
    code, out, _ = cli(capsys, *TCO_ARGS, "--rework-cost", "75", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert [Decimal(m["tco_per_task_usd"]) for m in data["models"]] == [Decimal("33.83"), Decimal("7.04")]
    assert Decimal(data["break_even"]["break_even_failure_rate_delta"]) == Decimal("0.0128")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--hourly-rate", "150"), "--hourly-rate and --hours go together"),
        (("--rework-cost", "75", "--hours", "1"), "either --rework-cost or --hourly-rate"),
        ((), "tco needs the cost of a failure"),
    ],
)
def test_tco_rework_cost_errors(capsys, extra, message):
    code, _, err = cli(capsys, *TCO_ARGS, *extra)
    assert code == 2 and message in err


def test_tco_without_figures_says_which_flags_are_missing(capsys):
    code, _, err = cli(capsys, "tco", "--input-tokens", "10")
    assert code == 2 and "tco needs --cheap-input-price" in err and "--input-tokens" not in err


def test_tco_bad_rate_is_a_usage_error(capsys):
    code, _, err = cli(capsys, *TCO_ARGS[:-4], "--frontier-failure-rate", "1.5", "--rework-cost", "1")
    assert code == 2 and "must be between 0 and 1" in err


def test_tco_measured_per_route_of_a_feature(ledger, capsys):
    code, out, err = cli(capsys, "tco", "--ledger", ledger, "--feature", "support", "--rework-cost", "2")
    assert code == 0, err
    assert "support: lowest TCO per task: gpt-4o" in out
    code, out, _ = cli(
        capsys, "tco", "--ledger", ledger, "--feature", "support", "--rework-cost", "2", "--format", "json"
    )
    (feature,) = json.loads(out)
    assert feature["best"] == "gpt-4o" and feature["baseline"] == "gpt-4o-mini"


# --- budgets -----------------------------------------------------------------------------------------


def test_budgets_table(ledger, capsys):
    code, out, err = cli(capsys, "budgets", "--ledger", ledger)
    assert code == 0, err
    (line,) = [x for x in out.splitlines() if x.startswith(BUDGET)]
    assert line.split()[:7] == [BUDGET, "feature=support", "day", "alert", "$0.116", "$0", "$0.0500"]
    assert "231.0%" in line and "UTC" in line


def test_budgets_json(ledger, capsys):
    code, out, _ = cli(capsys, "budgets", "--ledger", ledger, "--format", "json")
    assert code == 0
    rows = {r["budget"]: r for r in json.loads(out)}
    b = rows[BUDGET]
    assert Decimal(b["spent_usd"]) == SUPPORT_TOTAL and Decimal(b["limit_usd"]) == Decimal("0.05")
    assert Decimal(b["utilisation"]) == SUPPORT_TOTAL / Decimal("0.05")
    assert b["resets_at"].endswith("T00:00:00+00:00") and b["unpriced_calls"] == 0
    assert rows["everything-monthly"]["scope"] == "all calls"


def test_budgets_when_none_are_defined(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    engine = make_engine(url)
    schema.migrate(engine)
    engine.dispose()
    code, out, err = cli(capsys, "budgets", "--ledger", url)
    assert code == 0 and out == "" and "no budgets are stored in the ledger" in err
    code, out, _ = cli(capsys, "budgets", "--ledger", url, "--format", "json")
    assert code == 0 and json.loads(out) == []


# --- both databases ----------------------------------------------------------------------------------


def test_report_and_budgets_on_each_database(ledger_url, capsys):
    build_ledger(ledger_url)
    code, out, err = cli(capsys, "report", "--ledger", ledger_url, "--by", "feature,day", "--format", "json")
    assert code == 0, err
    support = next(r for r in json.loads(out) if r["feature"] == "support")
    assert Decimal(support["total_cost_usd"]) == SUPPORT_TOTAL and len(support["day"]) == 10
    code, out, err = cli(capsys, "budgets", "--ledger", ledger_url, "--format", "csv")
    assert code == 0, err
    assert {r["budget"] for r in csv.DictReader(io.StringIO(out))} == {BUDGET, "everything-monthly"}


# --- output helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("1234.5", "$1,235"),
        ("12.345", "$12.35"),
        ("0.5", "$0.500"),
        ("0.0123456", "$0.0123"),
        ("0", "$0"),
        ("-2", "-$2.00"),
    ],
)
def test_money_is_rounded_for_display_only(value, shown):
    assert output.usd(Decimal(value)) == shown
    assert output.usd(None) == "-" and output.pct(None) == "-"


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_progress_bar_is_drawn_on_a_terminal_only():
    quiet = _Stream(tty=False)
    bar = output.Progress("reading", quiet)
    bar(0, 4)
    bar(4, 4)
    bar.close()
    assert quiet.getvalue() == ""
    tty = _Stream(tty=True)
    bar = output.Progress("reading", tty)
    bar(4, 4)
    assert "reading [" in tty.getvalue() and "100% (4/4)" in tty.getvalue()
    bar.close()
    assert tty.getvalue().endswith("\r\x1b[K")
