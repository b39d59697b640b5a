"""``costtrace whatif --self-host-monthly ...``: the self-hosting lever through the real entry point.

The ledger is the workload of tests/ledger/workload.py; its 25 "support" tasks then get end times set by
hand (24 at T0, the last one 30 days later): 25 x 30.4375 / 30 tasks a month. On gpt-4o a task needs
2000 input + 300 output tokens: $0.008 on the API; self-hosted at $0/$0.4 per MTok, 300 x 0.4 / 1e6 =
$0.00012, so with $2000 a month V* = 2000 / 0.00788 = 253,807.1 tasks a month. "billing" keeps the end
times it was recorded with (seconds apart): too short a span to measure a volume.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from costtrace.cli import main
from costtrace.spend import schema
from costtrace.spend.engine import make_engine
from tests.ledger.workload import build_ledger

D = Decimal
T0 = datetime(2026, 3, 1, 12)
VOLUME = D(25) * D("30.4375") / 30
SELF_HOST = ("--self-host-monthly", "2000", "--self-host-per-mtok-out", "0.4")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('selfhost') / 'ledger.db'}"
    build_ledger(url)
    engine = make_engine(url)
    t = schema.tasks.c
    try:
        with engine.begin() as conn:
            last = conn.execute(
                sa.select(t.task_id).where(t.feature == "support").order_by(t.started_at.desc()).limit(1)
            ).scalar_one()
            conn.execute(sa.update(schema.tasks).where(t.feature == "support").values(ended_at=T0))
            conn.execute(sa.update(schema.tasks).where(t.task_id == last).values(ended_at=T0 + timedelta(days=30)))
    finally:
        engine.dispose()
    return url


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def whatif(capsys: pytest.CaptureFixture[str], ledger: str, *args: str) -> str:
    code, out, err = cli(capsys, "whatif", "--ledger", ledger, "--route", "gpt-4o", *args)
    assert code == 0, err
    return out


def test_the_table_prints_the_break_even_and_the_measured_months_costs(ledger, capsys):
    out = whatif(capsys, ledger, "--feature", "support", *SELF_HOST)
    lines = out.splitlines()
    assert (
        "Self-hosting 'gpt-4o': $2,000 a month + $0/$0.4 per MTok input/output; at the measured 25.4 tasks a month"
        in lines
    )
    rows = {line[:26].strip(): line[26:].split() for line in lines if line.startswith(("fixed", "token", "cost "))}
    assert rows["fixed cost a month"] == ["$0", "$2,000"]
    assert rows["token cost per task"] == ["$0.00800", "$0.000120"]
    assert rows["cost a month"] == ["$0.203", "$2,000"]  # 25.36 x $0.008
    (even,) = [line for line in lines if line.startswith("break-even:")]
    assert even.startswith("break-even: 253,808 tasks a month (V* = fixed / (API - self-hosted cost per task) = ")
    assert "measured volume 25.4 tasks a month (0.0% of it): the API costs less today" in even
    assumptions = out[out.index("assumptions:") :]
    assert "self-hosting gpt-4o: $2000 a month fixed (GPUs, ops) + $0/$0.4 per MTok input/output" in assumptions
    assert "tasks per month = 25 tasks / 30 days (from the first task's end, 2026-03-01 12:00:00 UTC" in assumptions


def test_json_holds_the_exact_figures_and_the_assumptions(ledger, capsys):
    data = json.loads(whatif(capsys, ledger, "--feature", "support", *SELF_HOST, "--format", "json"))
    s = data["self_hosting"]
    assert (D(s["monthly_usd"]), D(s["input_per_mtok"]), D(s["output_per_mtok"])) == (D(2000), 0, D("0.4"))
    assert D(s["cost_per_task_usd"]) == D("0.00012") and D(s["api_cost_per_task_usd"]) == D("0.008")
    assert s["verdict"] == "above"
    assert D(s["break_even_tasks_per_month"]) == D(2000) / D("0.00788")
    assert s["volume_measured"] is True and D(s["span_days"]) == 30
    assert (s["first_task_ended_at"], s["last_task_ended_at"]) == (
        "2026-03-01T12:00:00+00:00",
        "2026-03-31T12:00:00+00:00",
    )
    assert D(s["tasks_per_month"]) == VOLUME
    assert D(s["api_monthly_cost_usd"]) == VOLUME * D("0.008")
    assert D(s["monthly_cost_usd"]) == 2000 + VOLUME * D("0.00012")
    success_rate = D(data["projected_successes"]) / 25
    assert D(s["cost_per_success_usd"]) == D(s["monthly_cost_usd"]) / (VOLUME * success_rate)
    assert any(a.startswith("self-hosting gpt-4o:") for a in data["assumptions"])
    assert any(a.startswith("tasks per month = 25 tasks / 30 days") for a in data["assumptions"])


def test_without_the_lever_json_says_null(ledger, capsys):
    assert json.loads(whatif(capsys, ledger, "--feature", "support", "--format", "json"))["self_hosting"] is None


def test_one_per_mtok_flag_sets_input_and_output_alike(ledger, capsys):
    args = ("--feature", "support", "--self-host-monthly", "$2,000", "--self-host-per-mtok", "0.1", "--format", "json")
    s = json.loads(whatif(capsys, ledger, *args))["self_hosting"]
    assert D(s["input_per_mtok"]) == D(s["output_per_mtok"]) == D("0.1")
    assert D(s["cost_per_task_usd"]) == D("0.00023")  # (2000 + 300) x 0.1 / 1e6


def test_a_span_under_a_day_is_flagged_not_extrapolated(ledger, capsys):
    billing = ("--feature", "billing", "--failure-rate", "gpt-4o=0.1", *SELF_HOST)
    out = whatif(capsys, ledger, *billing)
    assert "the monthly volume is not measured (see the note)" in out
    (month,) = [line for line in out.splitlines() if line.startswith("cost a month")]
    assert month.split()[-2:] == ["-", "-"]
    assert "note: the 6 task(s) span " in out and "under a day: too short to measure a monthly volume" in out
    assert "tasks per month: NOT MEASURED: the 6 tasks all ended within" in out
    assert "break-even: " in out  # the break-even needs no volume
    data = json.loads(whatif(capsys, ledger, *billing, "--format", "json"))
    s = data["self_hosting"]
    assert s["volume_measured"] is False
    assert s["tasks_per_month"] is None and s["monthly_cost_usd"] is None and s["cost_per_success_usd"] is None


def test_no_break_even_is_said(ledger, capsys):
    out = whatif(capsys, ledger, "--feature", "support", "--self-host-monthly", "0", "--self-host-per-mtok-in", "10")
    assert "no break-even: self-hosting's token cost per task ($0.0200) is not below the API route's ($0.00800)" in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--self-host-monthly", "-5"), "argument --self-host-monthly: '-5' must be >= 0 USD"),
        (("--self-host-monthly", "nan"), "argument --self-host-monthly: 'nan' is not finite"),
        (("--self-host-monthly", "lots"), "argument --self-host-monthly: 'lots' is not a number"),
        (("--self-host-monthly", "1", "--self-host-per-mtok-out", "-1"), "'-1' must be >= 0"),
        (("--self-host-monthly", "1", "--self-host-per-mtok-in", "inf"), "'inf' is not finite"),
        (("--self-host-per-mtok", "0.1"), "needs --self-host-monthly USD"),
        (("--self-host-per-mtok-in", "0.1"), "needs --self-host-monthly USD"),
        (
            ("--self-host-monthly", "1", "--self-host-per-mtok", "0.1", "--self-host-per-mtok-in", "0.2"),
            "give it alone, or --self-host-per-mtok-in and/or --self-host-per-mtok-out instead",
        ),
    ],
)
def test_bad_self_hosting_flags_are_usage_errors(ledger, capsys, args, says):
    code, out, err = cli(capsys, "whatif", "--ledger", ledger, "--route", "gpt-4o", *args)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert says in line
