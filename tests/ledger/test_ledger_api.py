"""The ledger from the public API: configure_ledger, what a task leaves in it, late outcomes, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa

import costtrace
import costtrace.spend.ledger
from costtrace import _money
from costtrace.spend import schema
from costtrace.spend.engine import make_engine


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[sa.Engine]:
    costtrace.configure_ledger(ledger_url)
    engine = make_engine(ledger_url)
    yield engine
    costtrace.close_ledger()
    engine.dispose()


def _rows(engine: sa.Engine, table: sa.Table) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table)).mappings())


def test_a_task_with_retries_and_an_escalation_lands_whole(ledger):
    with costtrace.task("extract_refund", feature="billing", customer="acme", region="eu") as t:
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
        t.retry(reason="validation_failed", details="missing field 'amount'")
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
        t.escalate(to_model="gpt-4o", reason="validation_failed")
        costtrace.record_llm_call(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=100)
    assert costtrace.flush_ledger(60)
    (task,) = _rows(ledger, schema.tasks)
    assert task["task_id"] == t.summary.task_id and task["name"] == "extract_refund"
    assert (task["feature"], task["customer"], task["outcome"], task["first_pass"]) == (
        "billing",
        "acme",
        "success",
        False,
    )
    assert _money.from_nano(task["cost_nano_usd"]) == t.summary.cost_usd
    assert _money.from_nano(task["wasted_nano_usd"]) == t.summary.wasted_cost_usd == Decimal("0.00042")
    assert (task["attempts"], task["retries"], task["escalations"], task["llm_calls"]) == (3, 1, 1, 3)
    calls = _rows(ledger, schema.calls)
    assert sorted(c["attempt"] for c in calls) == [1, 2, 3]
    assert sum(c["cost_nano_usd"] for c in calls) == task["cost_nano_usd"]
    assert {c["dimensions"] for c in calls} == {
        '{"costtrace.customer": "acme", "costtrace.dimension.region": "eu", "costtrace.feature": "billing"}'
    }
    events = {e["kind"]: e for e in _rows(ledger, schema.events)}
    assert set(events) == {"retry", "escalation"}
    assert events["retry"]["reason"] == "validation_failed" and events["retry"]["details"] == "missing field 'amount'"
    assert events["retry"]["attempt"] == 1 and _money.from_nano(events["retry"]["amount_nano_usd"]) == Decimal(
        "0.00021"
    )
    assert (events["escalation"]["from_model"], events["escalation"]["to_model"]) == ("gpt-4o-mini", "gpt-4o")


def test_task_rows_of_a_parent_and_its_subtasks_sum_to_the_calls(ledger):
    """The parent's summary counts its subtasks' cost, but its ledger row holds its own calls only:
    summing task rows (as every report does) counts each call once."""
    with costtrace.task("parent") as parent:
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=2000, output_tokens=100)
        with costtrace.task("child"):
            costtrace.record_llm_call(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=100)
            with costtrace.task("grandchild"):
                costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=300, output_tokens=30)
    assert costtrace.flush_ledger(10)
    calls = _rows(ledger, schema.calls)
    tasks = _rows(ledger, schema.tasks)
    call_total = sum(c["cost_nano_usd"] for c in calls)
    assert len(calls) == 3 and len(tasks) == 3
    assert sum(t["cost_nano_usd"] for t in tasks) == call_total
    assert _money.from_nano(call_total) == parent.summary.cost_usd  # the whole, on the parent's summary
    (parent_row,) = [t for t in tasks if t["name"] == "parent"]
    assert _money.from_nano(parent_row["cost_nano_usd"]) == parent.summary.own_cost_usd


def test_invalid_usage_lands_unknown_and_unpriced_never_at_zero(ledger):
    with costtrace.task("t") as t:
        with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
            call.set_usage(None, None)  # type: ignore[arg-type]
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=-1, output_tokens=10)
    assert costtrace.flush_ledger(10)
    calls = _rows(ledger, schema.calls)
    assert [(c["usage_source"], c["priced"], c["cost_nano_usd"]) for c in calls] == [("unknown", False, None)] * 2
    (task,) = _rows(ledger, schema.tasks)
    assert task["unpriced_calls"] == 2 and t.summary.cost_usd is None


def test_a_raising_call_is_a_failed_attempt_event(ledger):
    with costtrace.task("t") as t:
        with pytest.raises(TimeoutError):
            with costtrace.llm_call(provider="openai", model="gpt-4o-mini"):
                raise TimeoutError
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)
    assert costtrace.flush_ledger(60)
    kinds = sorted(e["kind"] for e in _rows(ledger, schema.events))
    assert kinds == ["attempt_failed", "retry"]
    (task,) = _rows(ledger, schema.tasks)
    assert task["unpriced_calls"] == 1 and task["failed_calls"] == 1 and t.summary.cost_complete is False


def test_late_outcome_restates_the_task_and_keeps_the_original(ledger):
    with costtrace.task("resolve_ticket", feature="support") as t:
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)
    assert costtrace.flush_ledger(60)
    costtrace.record_outcome(t.summary.task_id, "escalated_to_human", reason="ticket reopened", rework_cost_usd="37.5")
    assert costtrace.flush_ledger(60)
    (task,) = _rows(ledger, schema.tasks)
    assert (task["outcome"], task["original_outcome"], task["outcome_reason"]) == (
        "escalated_to_human",
        "success",
        "ticket reopened",
    )
    assert _money.from_nano(task["rework_nano_usd"]) == Decimal("37.5")
    time.sleep(0.01)
    costtrace.record_outcome(t.summary.task_id, costtrace.Outcome.SUCCESS, reason="customer confirmed")
    assert costtrace.flush_ledger(60)
    (task,) = _rows(ledger, schema.tasks)
    assert (task["outcome"], task["original_outcome"]) == ("success", "success")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("abc", "solved"), {}, "outcome='solved'"),
        (("", "success"), {}, "task_id"),
        (("abc", "failure"), {"rework_cost_usd": -1}, "rework_cost_usd"),
        (("abc", "failure"), {"rework_cost_usd": "much"}, "rework_cost_usd"),
        (("abc", "failure"), {"rework_cost_usd": float("nan")}, "rework_cost_usd=nan is not finite"),
        (("abc", "failure"), {"rework_cost_usd": 10**30}, "rework_cost_usd=10{30} must be <= 1,000,000,000 USD"),
        (("abc", 7), {}, "outcome=7"),
    ],
)
def test_record_outcome_rejects_bad_arguments(ledger, args, kwargs, message):
    with pytest.raises(costtrace.ConfigError, match=message):
        costtrace.record_outcome(*args, **kwargs)


def test_record_outcome_misuse_is_ignored_logged_once_and_counted_outside_tests(ledger, monkeypatch, caplog):
    """In production a bad argument never raises into the app: the call is ignored, one log line per
    interval, every occurrence counted. (Under pytest it raises: the test above.)"""
    from costtrace import _internal

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("COSTTRACE_RAISE_INTERNAL_ERRORS", raising=False)
    with caplog.at_level("WARNING", logger="costtrace"):
        assert costtrace.record_outcome("abc", "solved") is None
        assert costtrace.record_outcome("abc", "failure", rework_cost_usd=float("nan")) is None
        assert costtrace.record_outcome("abc", "failure", rework_cost_usd=-5) is None
        costtrace.record_outcome("abc", "failure", rework_cost_usd="2.5")  # a good one still lands
    assert costtrace.flush_ledger(10)
    assert _internal.internal_error_counts() == {"misuse.record_outcome": 3}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "ignored a call to record_outcome" in line and "outcome='solved'" in line
    assert "your code is still running fine" in line
    events = _rows(ledger, schema.events)
    assert [(e["kind"], e["outcome"], _money.from_nano(e["amount_nano_usd"])) for e in events] == [
        ("outcome_updated", "failure", Decimal("2.5"))
    ]


def test_record_outcome_without_a_ledger_is_ignored_outside_tests(monkeypatch):
    from costtrace import _internal

    costtrace.close_ledger()
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.delenv("COSTTRACE_RAISE_INTERNAL_ERRORS", raising=False)
    costtrace.record_outcome("abc", "success")
    assert _internal.internal_error_counts() == {"misuse.record_outcome": 1}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "the ledger URL is empty"),
        ("   ", "the ledger URL is empty"),
        ("http://example.invalid/ledger", "'http://example.invalid/ledger' is not a database costtrace supports"),
        ("mysql://u:s3cret@h/db", "'mysql://u:***@h/db' is not a database costtrace supports"),
        ("not a url", "is not a database URL"),
    ],
)
def test_configure_ledger_rejects_a_bad_url_and_never_opens_the_default(tmp_path, monkeypatch, url, message):
    monkeypatch.delenv("COSTTRACE_LEDGER_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with pytest.raises(costtrace.ConfigError) as info:
        costtrace.configure_ledger(url)
    assert message in str(info.value) and "s3cret" not in str(info.value)
    assert "sqlite:///" in str(info.value)  # the fix: the URL forms
    assert list(tmp_path.iterdir()) == []
    assert costtrace.spend.ledger.ledger_engine() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_timeout_s": float("nan")}, "budget_timeout_s=nan"),
        ({"budget_timeout_s": 0}, "budget_timeout_s=0 must be a number of seconds > 0"),
        ({"budget_timeout_s": 1e12}, "budget_timeout_s=1000000000000.0 must be <= 3,600 seconds"),
        ({"outcome_rules_interval_s": 10**10}, "outcome_rules_interval_s=10000000000 must be <= 86,400 seconds"),
        ({"max_queue": 0}, "max_queue=0 must be an int >= 1"),
        ({"max_queue": 10**12}, "max_queue=1000000000000 must be <= 10,000,000"),
        ({"budgets": [{"name": "b"}]}, "budgets= takes costtrace.Budget objects"),
        ({"webhooks": "https://x.example"}, "webhooks= must be a list"),
    ],
)
def test_configure_ledger_checks_its_numbers_before_opening_anything(tmp_path, kwargs, message):
    with pytest.raises(costtrace.ConfigError) as info:
        costtrace.configure_ledger(f"sqlite:///{tmp_path / 'l.db'}", **kwargs)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_add_budget_takes_a_budget(tmp_path):
    costtrace.configure_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        with pytest.raises(costtrace.ConfigError, match=r"add_budget\(\) takes a costtrace.Budget, got 'b'"):
            costtrace.add_budget("b")  # type: ignore[arg-type]
    finally:
        costtrace.close_ledger()


def test_budget_status_works_for_the_longest_window_and_periods(ledger_url):
    budgets = [
        costtrace.Budget("rolling-max", limit_usd=1, period="rolling", window="366d", action="block"),
        costtrace.Budget("total", limit_usd="1000000000", period="total", action="block"),
        costtrace.Budget("month", limit_usd="0", period="month", timezone="Pacific/Kiritimati"),
    ]
    costtrace.configure_ledger(ledger_url, budgets=budgets)
    try:
        with costtrace.task("t", feature="f"):
            costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
        assert costtrace.flush_ledger(10)
        states = {s.budget: s for s in costtrace.budget_status()}
        assert set(states) == {"rolling-max", "total", "month"}
        assert states["rolling-max"].spent_usd == states["total"].spent_usd == Decimal("0.00021")
        with pytest.raises(costtrace.ConfigError, match="no budget named 'nope'"):
            costtrace.budget_status("nope")
    finally:
        costtrace.close_ledger()


def test_ledger_calls_without_a_ledger_say_how_to_set_it_up():
    costtrace.close_ledger()
    with pytest.raises(costtrace.ConfigError, match=r"configure_ledger\(\)"):
        costtrace.record_outcome("abc", "success")
    with pytest.raises(costtrace.ConfigError, match=r"configure_ledger\(\)"):
        costtrace.budget_status()


def test_configure_ledger_errors_hide_the_password(tmp_path):
    with pytest.raises(costtrace.ConfigError, match="not a database URL"):
        costtrace.configure_ledger("not a url")
    started = time.perf_counter()
    with pytest.raises(costtrace.ConfigError) as info:
        costtrace.configure_ledger("postgresql://app:s3cret-pw@127.0.0.1:1/costs")
    assert "s3cret-pw" not in str(info.value) and "app:***@127.0.0.1:1" in str(info.value)
    assert time.perf_counter() - started < 60  # refused at once, 3 s connect timeout at worst: never a hang
    with pytest.raises(costtrace.ConfigError, match="defined twice"):
        costtrace.configure_ledger(
            f"sqlite:///{tmp_path / 'l.db'}",
            budgets=[costtrace.Budget("a", limit_usd=1), costtrace.Budget("a", limit_usd=2)],
        )
    with pytest.raises(costtrace.ConfigError, match="no budget named"):
        costtrace.configure_ledger(f"sqlite:///{tmp_path / 'l.db'}", budgets=[costtrace.Budget("a", limit_usd=1)])
        costtrace.budget_status("b")
    costtrace.close_ledger()


def test_budgets_file_and_add_budget(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_text('[[budget]]\nname = "support"\nlimit_usd = 5\nscope = { feature = "support" }\n')
    costtrace.configure_ledger(f"sqlite:///{tmp_path / 'l.db'}", budgets_file=path)
    try:
        costtrace.add_budget(costtrace.Budget("global", limit_usd=100, period="total"))
        with costtrace.task("t", feature="support"):
            costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
        assert costtrace.flush_ledger(60)
        states = {s.budget: s for s in costtrace.budget_status()}
        assert states["support"].spent_usd == states["global"].spent_usd == Decimal("0.00021")
        assert states["global"].resets_at is None and states["support"].utilisation == Decimal("0.000042")
    finally:
        costtrace.close_ledger()


def test_schema_migrates_once_and_refuses_a_newer_one(ledger_url):
    engine = make_engine(ledger_url)
    try:
        assert schema.migrate(engine) == 0
        assert schema.migrate(engine) == schema.SCHEMA_VERSION
        with engine.begin() as conn:
            conn.execute(schema.schema_version.update().values(version=schema.SCHEMA_VERSION + 1))
        with pytest.raises(costtrace.ConfigError, match="upgrade costtrace"):
            schema.migrate(engine)
    finally:
        engine.dispose()


def test_alerts_fire_from_real_spend_across_the_writer(ledger_url):
    """Spend written by the ledger writer crosses 50% then 100%: each alert is delivered once, to a
    callback and to the ledger."""
    got: list[costtrace.Alert] = []
    unsubscribe = costtrace.on_alert(got.append)
    budget = costtrace.Budget("support", limit_usd="0.00042", period="day", scope={"feature": "support"})
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    try:
        for _ in range(2):  # $0.00021 a call: 50% after the first, 100% after the second
            with costtrace.task("t", feature="support"):
                costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
            assert costtrace.flush_ledger(60)
        for _ in range(3):
            assert costtrace.flush_ledger(60)  # more checks fire nothing new
    finally:
        costtrace.close_ledger()
        unsubscribe()
    assert [(a.kind, a.threshold) for a in got] == [
        ("budget_threshold", Decimal("0.5")),
        ("budget_exhausted", Decimal("1")),
    ]
    assert got[1].spent_usd == Decimal("0.00042") and got[1].limit_usd == Decimal("0.00042")
    engine = make_engine(ledger_url)
    try:
        kinds = [e["kind"] for e in _rows(engine, schema.events)]
    finally:
        engine.dispose()
    assert kinds.count("budget_alert") == 2


def test_outcome_rules_run_periodically_from_configure_ledger(ledger_url):
    got: list[costtrace.Alert] = []
    unsubscribe = costtrace.on_alert(got.append)
    rule = costtrace.OutcomeRule(
        "support-quality", feature="support", window="1h", min_tasks=4, min_first_pass_rate="0.75"
    )
    costtrace.configure_ledger(ledger_url, outcome_rules=[rule], outcome_rules_interval_s=0.1)
    try:
        for i in range(4):
            with costtrace.task("resolve", feature="support") as t:
                costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=10)
                if i % 2:
                    t.retry(reason="validation_failed")
                    costtrace.record_llm_call(
                        provider="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=10
                    )
        assert costtrace.flush_ledger(60)
        deadline = time.monotonic() + 60  # only bounds a hang: the rule runs every 0.1 s
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        costtrace.close_ledger()
        unsubscribe()
    (alert,) = got
    assert alert.kind == "outcome_rule" and alert.metric == "first_pass_rate" and alert.value == Decimal("0.5")


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_configure_opens_the_ledger_and_shutdown_writes_it(tmp_path, via):
    """``configure(ledger_url=...)`` or ``COSTTRACE_LEDGER_URL``; exit without an explicit flush loses nothing."""
    import os
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    arg = f"ledger_url={url!r}" if via == "argument" else ""
    code = (
        "import costtrace\n"
        f"costtrace.configure(otlp=False, metrics=False, {arg})\n"
        "for _ in range(200):\n"
        "    with costtrace.task('t', feature='f'):\n"
        "        costtrace.record_llm_call('openai', 'gpt-4o-mini', 1000, 100)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "COSTTRACE_LEDGER_URL"}
    if via == "environment":
        env["COSTTRACE_LEDGER_URL"] = url
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            calls = conn.execute(sa.select(sa.func.count(), sa.func.sum(schema.calls.c.cost_nano_usd))).one()
            tasks = conn.execute(sa.select(sa.func.count()).select_from(schema.tasks)).scalar()
    finally:
        engine.dispose()
    assert tuple(calls) == (200, 200 * 210_000) and tasks == 200


def test_a_version_1_ledger_is_upgraded_in_place_keeping_its_rows(ledger_url):
    engine = make_engine(ledger_url)
    try:
        schema.migrate(engine)
        with engine.begin() as conn:  # make it a version-1 ledger holding a task
            conn.execute(sa.text("ALTER TABLE costtrace_tasks DROP COLUMN route"))
            conn.execute(sa.text("ALTER TABLE costtrace_tasks DROP COLUMN final_model"))
            for table in ("costtrace_rollup_cells", "costtrace_rollup_periods", "costtrace_rollup_marks"):
                conn.execute(sa.text(f"DROP TABLE {table}"))
            conn.execute(schema.schema_version.update().values(version=1))
        engine.dispose()
        costtrace.configure_ledger(ledger_url)
        with costtrace.task("t") as t:
            costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)
            t.escalate(to_model="gpt-4o")
            costtrace.record_llm_call(provider="openai", model="gpt-4o", input_tokens=10, output_tokens=1)
        assert costtrace.flush_ledger(60)
        costtrace.close_ledger()
        with engine.connect() as conn:
            assert schema.current_version(conn) == schema.SCHEMA_VERSION == 3
            route, final_model = conn.execute(sa.select(schema.tasks.c.route, schema.tasks.c.final_model)).one()
        assert (route, final_model) == ("gpt-4o-mini->gpt-4o", "gpt-4o")
    finally:
        engine.dispose()


def test_a_read_only_engine_never_blocks_the_writers(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    writer = make_engine(url, sqlite_busy_timeout_s=0.2)
    reader = make_engine(url, read_only=True)
    try:
        schema.migrate(writer)
        with reader.connect() as conn:  # a long report holds its read transaction open
            conn.execute(sa.select(sa.func.count()).select_from(schema.tasks)).scalar()
            with writer.begin() as w:  # the writer still gets the lock at once
                w.execute(schema.budget_locks.insert().values(budget_id="b", version=0))
            with pytest.raises(sa.exc.OperationalError, match="readonly"):
                conn.execute(schema.budget_locks.insert().values(budget_id="c", version=0))
    finally:
        reader.dispose()
        writer.dispose()
